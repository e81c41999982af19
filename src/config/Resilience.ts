/**
 * How the router treats failing backends, resolved from the config file's `resilience` and
 * `monitoring` sections with defaults. Read by the workflow (retries, deadline) and by `Health`
 * (breakers, cooldowns, checks).
 */
import { Context, Effect, Layer, Option } from "effect"
import { type BreakerConfig, defaultBreakerConfig } from "../health/Breaker.js"
import type { ConfigFile } from "./ConfigFile.js"

export interface ResilienceSettings {
  readonly breaker: BreakerConfig
  /** A 429/408 without Retry-After leaves the provider (for that model) alone this long. */
  readonly defaultRetryAfterMs: number
  /** A 401/403 opens the provider's circuit this long: its key or endpoint needs fixing. */
  readonly misconfiguredCooldownMs: number
  readonly outOfCreditsCooldownMs: number
  /**
   * Retries on the same provider after a transient failure, before failing over. 0 by default:
   * with other candidates left, failing over at once is faster than waiting out a backoff.
   */
  readonly retries: number
  /** First retry delay; each retry doubles it, with jitter. */
  readonly retryBackoffMs: number
  /** The end-to-end deadline of a request; `x-router-timeout-ms` may lower it. */
  readonly requestTimeoutMs: number
  readonly healthCheckIntervalMs: number
  readonly healthCheckTimeoutMs: number
  readonly healthCheckConcurrency: number
}

export const defaults: ResilienceSettings = {
  breaker: defaultBreakerConfig,
  defaultRetryAfterMs: 30_000,
  misconfiguredCooldownMs: 600_000,
  outOfCreditsCooldownMs: 3_600_000,
  retries: 0,
  retryBackoffMs: 250,
  requestTimeoutMs: 900_000,
  healthCheckIntervalMs: 60_000,
  healthCheckTimeoutMs: 10_000,
  healthCheckConcurrency: 4
}

const ms = (seconds: number | undefined, fallback: number) => (seconds === undefined ? fallback : Math.round(seconds * 1000))

export const fromFile = (file: ConfigFile): ResilienceSettings => {
  const r = file.resilience ?? {}
  const m = file.monitoring ?? {}
  const b = r.circuit_breaker ?? {}
  return {
    breaker: {
      consecutiveFailures: b.failure_threshold ?? defaults.breaker.consecutiveFailures,
      windowSize: b.window ?? defaults.breaker.windowSize,
      errorRate: b.error_rate ?? defaults.breaker.errorRate,
      minimumRequests: b.min_requests ?? defaults.breaker.minimumRequests,
      cooldownMs: ms(b.cooldown, defaults.breaker.cooldownMs),
      cooldownMultiplier: defaults.breaker.cooldownMultiplier,
      maxCooldownMs: ms(b.max_cooldown, defaults.breaker.maxCooldownMs)
    },
    defaultRetryAfterMs: ms(r.default_retry_after, defaults.defaultRetryAfterMs),
    misconfiguredCooldownMs: ms(r.misconfigured_cooldown, defaults.misconfiguredCooldownMs),
    outOfCreditsCooldownMs: ms(r.out_of_credits_cooldown, defaults.outOfCreditsCooldownMs),
    retries: r.retries ?? defaults.retries,
    retryBackoffMs: ms(r.retry_backoff, defaults.retryBackoffMs),
    requestTimeoutMs: ms(r.request_timeout, defaults.requestTimeoutMs),
    healthCheckIntervalMs: ms(m.health_check_interval, defaults.healthCheckIntervalMs),
    healthCheckTimeoutMs: ms(m.health_check_timeout, defaults.healthCheckTimeoutMs),
    healthCheckConcurrency: m.health_check_concurrency ?? defaults.healthCheckConcurrency
  }
}

export class Resilience extends Context.Tag("sanctum/Resilience")<Resilience, ResilienceSettings>() {}

export const layer = (settings: ResilienceSettings = defaults) => Layer.succeed(Resilience, settings)

/**
 * The settings already given to the Layer being built (by `Providers.layerStatic`, or an app's own
 * `layer(...)`), else the defaults. `Router.layer` uses it so that a library user's `resilience`
 * section takes effect without a Layer of its own, and an app that gives none still gets one.
 */
export const layerGivenOrDefaults = Layer.effect(
  Resilience,
  Effect.map(Effect.serviceOption(Resilience), Option.getOrElse(() => defaults))
)
