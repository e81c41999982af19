/**
 * Busy polling: the window grows while events come soon after one another, drops to nothing after
 * a long gap, never passes its maximum, and the loop stops polling once the window has run out.
 * Driven by a hand-turned clock, so nothing here depends on how fast the machine is.
 */
import { describe, expect, it } from "vitest"
import * as BusyPoll from "../../src/http/BusyPoll.js"

describe("BusyPoll.nextWindowUs", () => {
  it("starts at 50 µs after a gap the window missed, and doubles up to the maximum", () => {
    const windows: Array<number> = []
    let w = 0
    for (let i = 0; i < 6; i++) windows.push(w = BusyPoll.nextWindowUs(w, 450, 500))
    expect(windows).toEqual([50, 100, 200, 400, 500, 500])
  })

  it("keeps a window that caught its event", () => {
    expect(BusyPoll.nextWindowUs(200, 150, 500)).toBe(200)
    expect(BusyPoll.nextWindowUs(200, 200, 500)).toBe(200)
  })

  it("drops to 0 after a gap longer than the maximum: slow traffic is not polled for", () => {
    expect(BusyPoll.nextWindowUs(500, 501, 500)).toBe(0)
    expect(BusyPoll.nextWindowUs(500, 30_000, 500)).toBe(0)
    expect(BusyPoll.nextWindowUs(0, Number.POSITIVE_INFINITY, 500)).toBe(0)
  })

  it("never polls with a maximum of 0", () => {
    for (const gap of [0, 1, 50, 1000]) expect(BusyPoll.nextWindowUs(0, gap, 0)).toBe(0)
  })
})

/** A clock turned by hand, and the tasks queued for after the next poll. */
const handClock = () => {
  let nowMs = 1_000
  const queued: Array<() => void> = []
  const clock: BusyPoll.Clock = { now: () => nowMs, afterPoll: (task) => void queued.push(task) }
  return {
    clock,
    queued,
    advanceUs: (us: number) => void (nowMs += us / 1000),
    /** One turn of the loop: runs what was queued for it. */
    turn: () => {
      for (const task of queued.splice(0)) task()
    }
  }
}

describe("BusyPoll.make", () => {
  it("does not poll after the first event, nor after events far apart", () => {
    const h = handClock()
    const poll = BusyPoll.make(500, h.clock)
    poll.touch()
    expect(poll.polling()).toBe(false)
    h.advanceUs(20_000)
    poll.touch()
    expect(poll.polling()).toBe(false)
    expect(h.queued).toHaveLength(0)
  })

  it("polls once events come close together, and stops by itself when the window runs out", () => {
    const h = handClock()
    const poll = BusyPoll.make(500, h.clock)
    poll.touch()
    for (let i = 0; i < 5; i++) {
      h.advanceUs(300)
      poll.touch()
    }
    // 50, 100, 200, 400: the first window that catches a 300 µs gap, kept from then on.
    expect(poll.windowUs()).toBe(400)
    expect(poll.polling()).toBe(true)
    // One chain of turns, however many events came while it ran.
    expect(h.queued).toHaveLength(1)
    let turns = 0
    while (h.queued.length > 0) {
      h.advanceUs(100)
      h.turn()
      turns++
    }
    expect(poll.polling()).toBe(false)
    // 400 µs of window at 100 µs a turn: it stops on the turn that finds the window over.
    expect(turns).toBe(4)
  })

  it("an event while polling extends the window from that event", () => {
    const h = handClock()
    const poll = BusyPoll.make(500, h.clock)
    poll.touch()
    h.advanceUs(300)
    poll.touch()
    h.advanceUs(40)
    poll.touch()
    expect(poll.windowUs()).toBe(50)
    // 40 µs of turns: still inside the window opened by the last event.
    h.advanceUs(40)
    h.turn()
    expect(poll.polling()).toBe(true)
    // 60 µs after the last event: missed by 50, so the window doubles, from this event.
    h.advanceUs(20)
    poll.touch()
    expect(poll.windowUs()).toBe(100)
    h.advanceUs(90)
    h.turn()
    expect(poll.polling()).toBe(true)
    h.advanceUs(10)
    h.turn()
    expect(poll.polling()).toBe(false)
    expect(h.queued).toHaveLength(0)
  })

  it("never polls with a maximum of 0 (ROUTER_BUSY_POLL_US=0)", () => {
    const h = handClock()
    const poll = BusyPoll.make(0, h.clock)
    for (let i = 0; i < 10; i++) {
      poll.touch()
      h.advanceUs(10)
    }
    expect(poll.polling()).toBe(false)
    expect(h.queued).toHaveLength(0)
  })
})
