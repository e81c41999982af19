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
 * (idle), the whole answer (total), and the request's own deadline. The timer is armed for the
 * nearest one and, when it fires, checks which one really passed and re-arms for the next: a fast
 * answer costs one timer, and a stream pays for a timer per idle period, not per chunk.
 */
export interface Deadlines {
  /**
   * The request waits for a connection (all of the provider's are busy, or a new one is being
   * made): until `sent`, only the wait's own limit (`queueMs`) and the request's deadline apply.
   */
  readonly waiting: () => void
  /**
   * The request went out on a connection: the provider's first-byte and total limits count from
   * now. A wait for a connection before it is the router's, not the provider's. The request's own
   * deadline does not move.
   */
  readonly sent: () => void
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

/**
 * Which deadline passed: one of the provider's limits, the wait for a connection (`queued`), or
 * the request's own (`deadline`).
 */
export type Expiry = "first_byte" | "idle" | "total" | "queued" | "deadline"

export interface Limits {
  readonly firstByteMs: number
  /** `null`: silence after the first byte is bounded by the total only. */
  readonly idleMs: number | null
  readonly totalMs: number
  /** How long the request may wait for a connection (see `waiting`). Default: `firstByteMs`. */
  readonly queueMs?: number | undefined
  /** When the request's own deadline passes, on `now`'s clock; it cuts every limit short. Default: never. */
  readonly deadlineAt?: number | undefined
}

export const deadlines = (
  schedule: Schedule,
  now: () => number,
  limits: Limits,
  expire: (which: Expiry) => void
): Deadlines => {
  // When the provider's limits (or the wait for a connection) started counting: now, or when the
  // request went out (`sent`).
  let base = now()
  const deadlineAt = limits.deadlineAt ?? Number.POSITIVE_INFINITY
  const queueMs = limits.queueMs ?? limits.firstByteMs
  let waits = false
  let gotFirstByte = false
  let lastTouch = base
  let cancelTimer: () => void = () => {}
  // When the armed timer fires.
  let armedFor = Number.POSITIVE_INFINITY
  let done = false
  let held = false
  /** The earliest moment after `t` (now) a deadline may pass, as things stand. */
  const due = (t: number) => {
    if (waits) return Math.min(base + queueMs, deadlineAt)
    let at = Math.min(base + limits.totalMs, deadlineAt)
    if (!gotFirstByte) {
      at = Math.min(at, base + limits.firstByteMs)
      // The idle deadline starts with the first byte, so it may pass as early as one idle period
      // after the request went out. Armed no later than that, the timer need not be re-armed
      // when the first byte comes (one setTimeout more per answer otherwise); firing before the
      // first byte, it only re-arms.
      if (limits.idleMs !== null && base + limits.idleMs > t) at = Math.min(at, base + limits.idleMs)
    } else if (limits.idleMs !== null && !held) at = Math.min(at, lastTouch + limits.idleMs)
    return at
  }
  const arm = (at: number, t: number) => {
    armedFor = at
    cancelTimer = schedule(Math.max(0, at - t), fire)
  }
  function fire() {
    const t = now()
    if (waits) {
      if (t >= base + queueMs) return finish("queued")
      if (t >= deadlineAt) return finish("deadline")
      return arm(due(t), t)
    }
    // The provider's limits first: one that passes together with the request's deadline is its own.
    if (t >= base + limits.totalMs) return finish("total")
    if (!gotFirstByte && t >= base + limits.firstByteMs) return finish("first_byte")
    if (t >= deadlineAt) return finish("deadline")
    if (gotFirstByte && limits.idleMs !== null && !held && t - lastTouch >= limits.idleMs) return finish("idle")
    // Nothing passed yet (the limits moved on since the timer was armed): wait for the next one.
    arm(due(t), t)
  }
  const finish = (which: Expiry) => {
    done = true
    expire(which)
  }
  /** Re-arms when a deadline now comes before the armed timer (idle watching began or resumed). */
  const sooner = (t: number) => {
    if (done) return
    const at = due(t)
    if (at < armedFor) {
      cancelTimer()
      arm(at, t)
    }
  }
  arm(due(base), base)
  return {
    waiting: () => {
      if (gotFirstByte || done) return
      waits = true
      sooner(now())
    },
    sent: () => {
      if (gotFirstByte || done) return
      const t = now()
      if (t > base) base = lastTouch = t
      // Without a wait the limits only moved later: the armed timer, if early, re-arms when it
      // fires. After a wait it may be armed for the request's deadline only.
      if (waits) {
        waits = false
        sooner(t)
      }
    },
    firstByte: () => {
      if (gotFirstByte) return
      gotFirstByte = true
      // An answer means the request went out, whether or not `sent` said so.
      waits = false
      lastTouch = now()
      sooner(lastTouch)
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
      sooner(lastTouch)
    },
    cancel: () => {
      if (!done) {
        done = true
        cancelTimer()
      }
    }
  }
}
