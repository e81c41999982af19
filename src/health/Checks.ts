/**
 * Active health checks: every `monitoring.health_check_interval`, each provider's
 * `GET {endpoint}/models` (200, 404 and 405 count as healthy: some servers have no model list), a
 * bounded number at a time, each within `health_check_timeout`. Results feed the breakers in
 * `Health`, so a local server that comes back is used again without a restart.
 */
import { Clock, Duration, Effect, Layer, Schedule } from "effect"
import { Resilience } from "../config/Resilience.js"
import type { ProviderSpec } from "../domain/Provider.js"
import { Providers } from "../providers/Providers.js"
import { Upstream } from "../providers/Upstream.js"
import { classifyRefusal, classifyTransport } from "../router/Classify.js"
import { type CheckResult, Health } from "./Health.js"

const healthyStatuses = new Set([200, 404, 405])

export const layer = Layer.scopedDiscard(
  Effect.gen(function* () {
    const health = yield* Health
    const providers = yield* Providers
    const upstream = yield* Upstream
    const settings = yield* Resilience

    const check = (p: ProviderSpec) =>
      Effect.suspend(() => {
        // A check shares the provider's connections with requests. One that timed out still waiting
        // for a free connection never reached the provider, and says nothing of it: a server with
        // a few slots (`max_connections`) busy with long answers is busy, not down.
        let waiting = false
        return upstream.request({
          provider: p,
          method: "GET",
          path: "/models",
          onRequestWaiting: () => (waiting = true),
          onRequestSent: () => (waiting = false)
        }).pipe(
          Effect.map((r): CheckResult | null =>
            healthyStatuses.has(r.status)
              ? { _tag: "Healthy" }
              : { _tag: "Unhealthy", classified: classifyRefusal(r.status, "", undefined), detail: `GET /models answered HTTP ${r.status}` }
          ),
          Effect.timeoutTo({
            duration: Duration.millis(settings.healthCheckTimeoutMs),
            onTimeout: (): CheckResult | null =>
              waiting ? null : {
                _tag: "Unhealthy",
                classified: { class: "transient", outcome: "timeout" },
                detail: `no answer within ${settings.healthCheckTimeoutMs} ms`
              },
            onSuccess: (result) => result
          }),
          // A check the router could not even open (out of file descriptors) never reached the provider either.
          Effect.catchAll((e) => Effect.succeed<CheckResult | null>(e.reason === "local" ? null : { _tag: "Unhealthy", classified: classifyTransport(e), detail: e.detail })),
          Effect.flatMap((result) =>
            result === null ? Effect.void : Effect.map(Clock.currentTimeMillis, (now) => health.reportCheck(p.id, result, now))
          )
        )
      })

    const round = Effect.suspend(() =>
      Effect.forEach([...providers.index().providers.values()], check, {
        concurrency: settings.healthCheckConcurrency,
        discard: true
      })
    )

    yield* round.pipe(
      Effect.repeat(Schedule.spaced(Duration.millis(settings.healthCheckIntervalMs))),
      Effect.catchAllCause((cause) => Effect.logWarning("health checks stopped", cause)),
      Effect.forkScoped
    )
  })
)
