/**
 * Busy polling: after a request arrives or ends, the event loop keeps polling for I/O, without
 * sleeping, for a short window, so that an event coming soon after (the upstream's answer, the
 * client's next request) is taken by a CPU that is still awake.
 *
 * Why: on the virtual machines this was measured on, code that runs right after the process slept
 * runs several times slower than the same code on a CPU that stayed busy. Parsing the benchmark's
 * 140-byte body took ~6 µs after a sleep and ~1 µs awake; sweeping 4 MiB of memory between two
 * parses cost only ~0.7 µs, so it is the sleep (the virtual CPU halting), not evicted data. At
 * concurrency 1 the router slept twice per request, and its request path ran at that speed
 * throughout: ~75 µs above a bare proxy, where with polling it runs at or below one.
 *
 * The window adapts as KVM's halt polling does, so traffic that gains little costs little: it
 * doubles (from 50 µs up to the configured maximum) while the gaps between events are longer than
 * it but within the maximum, and drops to 0 after a gap past the maximum. Any real model backend
 * answers in milliseconds or more, past any sensible maximum, so each answer resets the window: in
 * front of one the router polls 50 µs at most per request (one that came soon after the last one
 * ended), and an idle router never polls.
 *
 * It is written on `setImmediate` rather than as an Effect loop: a pending immediate is what makes
 * libuv poll without blocking, and each turn must cost next to nothing.
 */

/** The first window after a gap the current one missed, in µs. */
export const firstWindowUs = 50

/**
 * The polling window after an event that came `gapUs` after the one before, given the window that
 * was polled (`windowUs`) and the most allowed (`maxUs`, 0 to never poll).
 */
export const nextWindowUs = (windowUs: number, gapUs: number, maxUs: number): number => {
  // No gain from polling for gaps this long: the next one would very likely be as long.
  if (gapUs > maxUs) return 0
  // Caught, or the window is at its most: keep it.
  if (gapUs <= windowUs) return windowUs
  // Missed, though a longer window would have caught it.
  return Math.min(maxUs, Math.max(firstWindowUs, windowUs * 2))
}

export interface BusyPoll {
  /** Tells of an event (a request arriving or ending): the loop polls for the window after it. */
  readonly touch: () => void
  /** The current window, in µs. */
  readonly windowUs: () => number
  /** Whether the loop is being kept polling now. */
  readonly polling: () => boolean
}

export interface Clock {
  /** Milliseconds, fractional, from any fixed origin (`performance.now`). */
  readonly now: () => number
  /** Runs `task` after the loop's next poll for I/O (`setImmediate`). */
  readonly afterPoll: (task: () => void) => void
}

const nodeClock: Clock = { now: () => performance.now(), afterPoll: (task) => void setImmediate(task) }

/** A poller allowing windows up to `maxUs` (0 turns polling off). */
export const make = (maxUs: number, clock: Clock = nodeClock): BusyPoll => {
  let windowUs = 0
  let lastEventAt = Number.NEGATIVE_INFINITY
  let pollUntil = 0
  let polling = false
  const turn = () => {
    if (clock.now() < pollUntil) clock.afterPoll(turn)
    else polling = false
  }
  const touch = () => {
    const now = clock.now()
    windowUs = nextWindowUs(windowUs, (now - lastEventAt) * 1000, maxUs)
    lastEventAt = now
    if (windowUs === 0) return
    pollUntil = now + windowUs / 1000
    if (!polling) {
      polling = true
      clock.afterPoll(turn)
    }
  }
  return { touch, windowUs: () => windowUs, polling: () => polling }
}
