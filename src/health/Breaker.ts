/**
 * A circuit breaker as a pure state machine: closed → open after N consecutive failures or an error
 * rate over a sliding window; open → half-open after a cooldown that grows on repeated trips;
 * half-open lets exactly one probe through, whose result closes or re-opens it. Time comes in as
 * an argument, so the whole cycle is tested without a clock.
 */

export interface BreakerConfig {
  /** Consecutive failures that open the circuit. */
  readonly consecutiveFailures: number
  /** Results kept in the sliding window. */
  readonly windowSize: number
  /** Failure share of the window that opens the circuit, once the window holds `minimumRequests`. */
  readonly errorRate: number
  readonly minimumRequests: number
  /** First cooldown; each trip without a successful probe in between multiplies it. */
  readonly cooldownMs: number
  readonly cooldownMultiplier: number
  readonly maxCooldownMs: number
}

export const defaultBreakerConfig: BreakerConfig = {
  consecutiveFailures: 5,
  windowSize: 20,
  errorRate: 0.5,
  minimumRequests: 10,
  cooldownMs: 30_000,
  cooldownMultiplier: 2,
  maxCooldownMs: 600_000
}

export type BreakerState =
  | {
    readonly _tag: "Closed"
    readonly consecutive: number
    /** Most recent results, newest last: `true` for a failure. */
    readonly window: ReadonlyArray<boolean>
    /** Trips since the last time a probe succeeded: sets the next cooldown. */
    readonly trips: number
  }
  | { readonly _tag: "Open"; readonly until: number; readonly trips: number; readonly reason: string }
  | { readonly _tag: "HalfOpen"; readonly trips: number; readonly probing: boolean; readonly reason: string }

export const closed: BreakerState = { _tag: "Closed", consecutive: 0, window: [], trips: 0 }

const cooldown = (config: BreakerConfig, trips: number) =>
  Math.min(config.maxCooldownMs, config.cooldownMs * config.cooldownMultiplier ** Math.max(0, trips - 1))

/** Opens the circuit now, for the cooldown that `trips` earns (or `forMs` when given). */
export const trip = (state: BreakerState, now: number, config: BreakerConfig, reason: string, forMs?: number): BreakerState => {
  const trips = state.trips + 1
  return { _tag: "Open", until: now + (forMs ?? cooldown(config, trips)), trips, reason }
}

/**
 * Whether a request may go through now, and the state after asking. An open circuit whose cooldown
 * has passed turns half-open and admits this one request as its probe; others wait for its result.
 */
export const admit = (state: BreakerState, now: number): { readonly allowed: boolean; readonly probe: boolean; readonly state: BreakerState } => {
  switch (state._tag) {
    case "Closed":
      return { allowed: true, probe: false, state }
    case "Open":
      if (now < state.until) return { allowed: false, probe: false, state }
      return { allowed: true, probe: true, state: { _tag: "HalfOpen", trips: state.trips, probing: true, reason: state.reason } }
    case "HalfOpen":
      if (state.probing) return { allowed: false, probe: false, state }
      return { allowed: true, probe: true, state: { ...state, probing: true } }
  }
}

export const onSuccess = (state: BreakerState, config: BreakerConfig): BreakerState => {
  switch (state._tag) {
    case "Closed":
      // A full window of successes stays what it is: no copy on the common path.
      return state.consecutive === 0 && state.window.length >= config.windowSize && !state.window.includes(true)
        ? state
        : { ...state, consecutive: 0, window: push(state.window, false, config.windowSize) }
    // A probe that succeeds closes the circuit and forgives past trips.
    case "HalfOpen":
      return closed
    // A late answer to a request admitted before the trip: the cooldown and probe still decide.
    case "Open":
      return state
  }
}

export const onFailure = (state: BreakerState, now: number, config: BreakerConfig, reason: string): BreakerState => {
  switch (state._tag) {
    case "Closed": {
      const consecutive = state.consecutive + 1
      const window = push(state.window, true, config.windowSize)
      const failures = window.reduce((n, f) => n + (f ? 1 : 0), 0)
      const overRate = window.length >= config.minimumRequests && failures / window.length >= config.errorRate
      if (consecutive >= config.consecutiveFailures || overRate) return trip(state, now, config, reason)
      return { ...state, consecutive, window }
    }
    // A failed probe re-opens it, for longer.
    case "HalfOpen":
      return trip(state, now, config, reason)
    case "Open":
      return state
  }
}

/** A probe that ended without a verdict (the client left): let the next request probe instead. */
export const onAbandoned = (state: BreakerState): BreakerState =>
  state._tag === "HalfOpen" ? { ...state, probing: false } : state

const push = (window: ReadonlyArray<boolean>, failed: boolean, size: number): ReadonlyArray<boolean> => {
  const next = window.length >= size ? window.slice(window.length - size + 1) : [...window]
  next.push(failed)
  return next
}
