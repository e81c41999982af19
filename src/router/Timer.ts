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
 * An attempt's two deadlines on one timer: armed for the first byte; when it fires after the first
 * byte has come, it re-arms for the rest of the total. A fast answer costs one timer, not two.
 */
export interface Deadlines {
  /** The first byte has arrived: the first-byte deadline no longer applies. */
  readonly firstByte: () => void
  readonly cancel: () => void
}

export const deadlines = (
  schedule: Schedule,
  firstByteMs: number,
  totalMs: number,
  expire: (which: "first_byte" | "total") => void
): Deadlines => {
  let gotFirstByte = false
  let cancelTimer: () => void
  const onTotal = () => expire("total")
  const onFirst = () => {
    if (gotFirstByte) cancelTimer = schedule(totalMs - firstByteMs, onTotal)
    else expire("first_byte")
  }
  cancelTimer = firstByteMs < totalMs ? schedule(firstByteMs, onFirst) : schedule(totalMs, onTotal)
  return {
    firstByte: () => {
      gotFirstByte = true
    },
    cancel: () => cancelTimer()
  }
}
