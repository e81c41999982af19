/**
 * Callbacks after a delay on an Effect `Clock`, for the request path's timeouts.
 *
 * `Effect.timeoutFail` races two forked fibers and measured ~35 µs per use here; a request needs
 * two or three of them. The workflow instead arms timers that abort the upstream call (which any
 * timeout must do anyway), so the pending read fails at once and is reported as a timeout. On the
 * live clock a timer is a plain `setTimeout` (what the live clock's `sleep` uses too); on any other
 * clock (`TestClock`) it is a fiber sleeping on that clock, so tests drive timeouts with
 * `TestClock.adjust` like any other delay.
 */
import { Clock, Context, DefaultServices, Duration, Effect, FiberId } from "effect"

/** Runs `task` after `ms` unless the returned function (cancel) was called first. */
export type Schedule = (ms: number, task: () => void) => () => void

const liveClock = Context.get(DefaultServices.liveServices, Clock.Clock)

/** Longer delays than `setTimeout` accepts mean "never". */
const maxTimerMs = 2 ** 31 - 1

export const scheduler = (clock: Clock.Clock): Schedule => {
  if (clock === liveClock) {
    return (ms, task) => {
      if (ms > maxTimerMs) return () => {}
      const handle = setTimeout(task, ms)
      return () => clearTimeout(handle)
    }
  }
  return (ms, task) => {
    const fiber = Effect.runFork(Effect.andThen(clock.sleep(Duration.millis(ms)), Effect.sync(task)))
    return () => fiber.unsafeInterruptAsFork(FiberId.none)
  }
}

/**
 * An attempt's deadlines on one timer: the first byte, silence between chunks once bytes flow
 * (idle), and the whole answer (total). The timer is armed for the nearest deadline and, when it
 * fires, checks which one really passed and re-arms for the next: a fast answer costs one timer,
 * and a stream pays for a timer per idle period, not per chunk.
 */
export interface Deadlines {
  /** The first byte has arrived: the first-byte deadline no longer applies, idle does. */
  readonly firstByte: () => void
  /** Bytes arrived: the idle deadline starts again. */
  readonly touch: () => void
  /**
   * The router stopped reading (its client is behind): silence from now on is the client's, not
   * the upstream's, so the idle deadline waits for `release`. The total deadline still holds.
   */
  readonly hold: () => void
  /** Reading again: the idle deadline starts again. */
  readonly release: () => void
  readonly cancel: () => void
}

export type Expiry = "first_byte" | "idle" | "total"

export const deadlines = (
  schedule: Schedule,
  now: () => number,
  /** `idleMs` null: silence after the first byte is bounded by the total only (whole answers). */
  limits: { readonly firstByteMs: number; readonly idleMs: number | null; readonly totalMs: number },
  expire: (which: Expiry) => void
): Deadlines => {
  const start = now()
  const totalAt = start + limits.totalMs
  let gotFirstByte = false
  let lastTouch = start
  let cancelTimer: () => void = () => {}
  let done = false
  let held = false
  const arm = (ms: number) => {
    cancelTimer = schedule(Math.max(0, ms), fire)
  }
  function fire() {
    const t = now()
    if (t >= totalAt) return finish("total")
    if (!gotFirstByte) return finish("first_byte")
    if (limits.idleMs === null || held) return arm(totalAt - t)
    const silent = t - lastTouch
    if (silent >= limits.idleMs) return finish("idle")
    arm(Math.min(limits.idleMs - silent, totalAt - t))
  }
  const finish = (which: Expiry) => {
    done = true
    expire(which)
  }
  arm(Math.min(limits.firstByteMs, limits.totalMs))
  return {
    firstByte: () => {
      if (gotFirstByte) return
      gotFirstByte = true
      lastTouch = now()
      // Watching for silence from now on: re-arm for the idle deadline if it comes first.
      if (limits.idleMs !== null && limits.idleMs < limits.firstByteMs && !done) {
        cancelTimer()
        arm(Math.min(limits.idleMs, totalAt - lastTouch))
      }
    },
    touch: () => {
      lastTouch = now()
    },
    hold: () => {
      held = true
    },
    release: () => {
      if (!held) return
      held = false
      lastTouch = now()
      // The timer may be armed for the total deadline only (it fired while held): watch for
      // silence again.
      if (limits.idleMs !== null && !done) {
        cancelTimer()
        arm(Math.min(limits.idleMs, totalAt - lastTouch))
      }
    },
    cancel: () => {
      if (!done) {
        done = true
        cancelTimer()
      }
    }
  }
}
