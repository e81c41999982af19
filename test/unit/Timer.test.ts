import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { deadlines, type Expiry, type Limits, type Schedule, scheduler } from "../../src/router/Timer.js"

/** Deadlines on the test clock, recording what expired. */
const watch = (limits: Limits) =>
  Effect.map(Effect.clock, (clock) => {
    const fired: Array<Expiry> = []
    const d = deadlines(scheduler(clock), () => clock.unsafeCurrentTimeMillis(), limits, (w) => fired.push(w))
    return { d, fired }
  })

/** Nothing has expired until 1 ms before `ms` from now; at `ms`, `which` has, and only it. */
const expiresIn = (fired: ReadonlyArray<Expiry>, ms: number, which: Expiry) =>
  Effect.gen(function* () {
    yield* TestClock.adjust(ms - 1)
    expect(fired).toEqual([])
    yield* TestClock.adjust(1)
    expect(fired).toEqual([which])
  })

describe("deadlines (one timer for first byte, idle and total)", () => {
  it.effect("expires on the first byte when none came", () =>
    Effect.gen(function* () {
      const { fired } = yield* watch({ firstByteMs: 100, idleMs: null, totalMs: 1000 })
      yield* expiresIn(fired, 100, "first_byte")
      yield* TestClock.adjust("1 hour")
      expect(fired).toEqual(["first_byte"])
    }))

  it.effect("after the first byte, without idle watching, expires at the total and not before", () =>
    Effect.gen(function* () {
      const { d, fired } = yield* watch({ firstByteMs: 100, idleMs: null, totalMs: 1000 })
      yield* TestClock.adjust("50 millis")
      d.firstByte()
      yield* expiresIn(fired, 950, "total")
    }))

  it.effect("cancel stops every deadline, before or after the first byte", () =>
    Effect.gen(function* () {
      const early = yield* watch({ firstByteMs: 100, idleMs: 50, totalMs: 1000 })
      early.d.cancel()
      const late = yield* watch({ firstByteMs: 100, idleMs: 50, totalMs: 1000 })
      late.d.firstByte()
      yield* TestClock.adjust("20 millis")
      late.d.cancel()
      yield* TestClock.adjust("1 hour")
      expect([...early.fired, ...late.fired]).toEqual([])
    }))

  it.effect("while held (the client is behind), silence is not idle; released, idle counts again", () =>
    Effect.gen(function* () {
      const { d, fired } = yield* watch({ firstByteMs: 1000, idleMs: 200, totalMs: 10_000 })
      d.firstByte()
      yield* TestClock.adjust("100 millis")
      d.hold()
      // Far past the idle limit, twice over, while held.
      yield* TestClock.adjust("2000 millis")
      expect(fired).toEqual([])
      d.release()
      yield* expiresIn(fired, 200, "idle")
    }))

  it.effect("held, the total deadline still holds", () =>
    Effect.gen(function* () {
      const { d, fired } = yield* watch({ firstByteMs: 1000, idleMs: 200, totalMs: 3000 })
      d.firstByte()
      d.hold()
      yield* expiresIn(fired, 3000, "total")
    }))

  it.effect("a total shorter than the first-byte limit wins", () =>
    Effect.gen(function* () {
      const { fired } = yield* watch({ firstByteMs: 5000, idleMs: null, totalMs: 300 })
      yield* TestClock.adjust("300 millis")
      expect(fired).toEqual(["total"])
    }))

  it.effect("after the first byte, silence longer than idle expires, counted from the last touch", () =>
    Effect.gen(function* () {
      const { d, fired } = yield* watch({ firstByteMs: 1000, idleMs: 200, totalMs: 10_000 })
      yield* TestClock.adjust("10 millis")
      d.firstByte()
      yield* TestClock.adjust("150 millis")
      d.touch()
      yield* TestClock.adjust("150 millis")
      d.touch()
      yield* expiresIn(fired, 200, "idle")
    }))

  it.effect("a steady trickle is never idle, and the total still applies", () =>
    Effect.gen(function* () {
      const { d, fired } = yield* watch({ firstByteMs: 1000, idleMs: 200, totalMs: 2000 })
      d.firstByte()
      for (let i = 0; i < 19; i++) {
        yield* TestClock.adjust("100 millis")
        d.touch()
      }
      expect(fired).toEqual([])
      yield* TestClock.adjust("100 millis")
      expect(fired).toEqual(["total"])
    }))

  it.effect("sent: the first-byte and total limits count from when the request went out", () =>
    Effect.gen(function* () {
      const first = yield* watch({ firstByteMs: 100, idleMs: null, totalMs: 1000 })
      const total = yield* watch({ firstByteMs: 5000, idleMs: null, totalMs: 300 })
      // Both waited 80 ms for a connection.
      yield* TestClock.adjust("80 millis")
      first.d.sent()
      total.d.sent()
      // The timers armed at the start fire here and find nothing has passed yet.
      yield* expiresIn(first.fired, 100, "first_byte")
      yield* expiresIn(total.fired, 200, "total")
    }))

  it.effect("sent after the first byte, or twice, changes nothing", () =>
    Effect.gen(function* () {
      const { d, fired } = yield* watch({ firstByteMs: 100, idleMs: null, totalMs: 1000 })
      d.sent()
      yield* TestClock.adjust("50 millis")
      d.firstByte()
      yield* TestClock.adjust("100 millis")
      d.sent()
      yield* expiresIn(fired, 850, "total")
    }))

  it.effect("the request's deadline cuts every limit short, and does not move when the request goes out", () =>
    Effect.gen(function* () {
      const { d, fired } = yield* watch({ firstByteMs: 100, idleMs: null, totalMs: 1000, deadlineAt: 150 })
      yield* TestClock.adjust("90 millis")
      d.sent()
      yield* expiresIn(fired, 60, "deadline")
    }))

  it.effect("a provider limit that passes together with the request's deadline is the provider's", () =>
    Effect.gen(function* () {
      const first = yield* watch({ firstByteMs: 100, idleMs: null, totalMs: 1000, deadlineAt: 100 })
      const total = yield* watch({ firstByteMs: 1000, idleMs: 50, totalMs: 300, deadlineAt: 300 })
      total.d.firstByte()
      for (let i = 0; i < 6; i++) {
        yield* TestClock.adjust("49 millis")
        total.d.touch()
      }
      yield* TestClock.adjust("6 millis")
      expect(first.fired).toEqual(["first_byte"])
      expect(total.fired).toEqual(["total"])
    }))

  it.effect("a stream's idle deadline stops at the request's deadline", () =>
    Effect.gen(function* () {
      const { d, fired } = yield* watch({ firstByteMs: 1000, idleMs: 200, totalMs: 10_000, deadlineAt: 250 })
      d.firstByte()
      yield* TestClock.adjust("100 millis")
      d.touch()
      yield* expiresIn(fired, 150, "deadline")
    }))

  it.effect("while the request waits for a connection, the provider's limits do not run; from sent they do", () =>
    Effect.gen(function* () {
      const { d, fired } = yield* watch({ firstByteMs: 100, idleMs: null, totalMs: 1000, queueMs: Number.POSITIVE_INFINITY })
      d.waiting()
      yield* TestClock.adjust("500 millis")
      expect(fired).toEqual([])
      d.sent()
      yield* expiresIn(fired, 100, "first_byte")
    }))

  it.effect("a wait longer than queueMs expires as queued", () =>
    Effect.gen(function* () {
      const { d, fired } = yield* watch({ firstByteMs: 100, idleMs: null, totalMs: 1000, queueMs: 300 })
      d.waiting()
      yield* expiresIn(fired, 300, "queued")
    }))

  it.effect("waiting, the request's deadline still holds", () =>
    Effect.gen(function* () {
      const { d, fired } = yield* watch({ firstByteMs: 100, idleMs: null, totalMs: 1000, queueMs: Number.POSITIVE_INFINITY, deadlineAt: 300 })
      d.waiting()
      yield* expiresIn(fired, 300, "deadline")
    }))

  it.effect("sent after a long wait arms the timer for the first byte again", () =>
    Effect.gen(function* () {
      // While waiting, the timer is armed for the request's deadline only.
      const { d, fired } = yield* watch({ firstByteMs: 100, idleMs: null, totalMs: 1000, queueMs: Number.POSITIVE_INFINITY, deadlineAt: 10_000 })
      d.waiting()
      yield* TestClock.adjust("150 millis")
      d.sent()
      yield* expiresIn(fired, 100, "first_byte")
    }))

  it.effect("with idle watching, an answer that begins and ends within idle arms one timer, not one more at its first byte", () =>
    Effect.gen(function* () {
      const clock = yield* Effect.clock
      const schedule = scheduler(clock)
      let armed = 0
      const counting: Schedule = (ms, task) => {
        armed++
        return schedule(ms, task)
      }
      const fired: Array<Expiry> = []
      const d = deadlines(counting, () => clock.unsafeCurrentTimeMillis(), { firstByteMs: 1000, idleMs: 200, totalMs: 10_000 }, (w) => fired.push(w))
      yield* TestClock.adjust("50 millis")
      d.firstByte()
      yield* TestClock.adjust("100 millis")
      d.touch()
      d.cancel()
      expect(armed).toBe(1)
      yield* TestClock.adjust("1 hour")
      expect(fired).toEqual([])
    }))

  it.effect("with idle watching, the first-byte limit still holds, and a first byte later than idle starts idle from it", () =>
    Effect.gen(function* () {
      const none = yield* watch({ firstByteMs: 1000, idleMs: 200, totalMs: 10_000 })
      yield* expiresIn(none.fired, 1000, "first_byte")
      const late = yield* watch({ firstByteMs: 1000, idleMs: 200, totalMs: 10_000 })
      yield* TestClock.adjust("700 millis")
      late.d.firstByte()
      yield* expiresIn(late.fired, 200, "idle")
    }))

  it.effect("a first byte ends the wait even when sent was never called", () =>
    Effect.gen(function* () {
      const { d, fired } = yield* watch({ firstByteMs: 100, idleMs: null, totalMs: 1000, queueMs: 200 })
      d.waiting()
      yield* TestClock.adjust("50 millis")
      d.firstByte()
      yield* expiresIn(fired, 950, "total")
    }))
})
