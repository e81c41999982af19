/**
 * What the router knows about each provider's health: its circuit breaker, the models it asked us
 * to leave alone for a while (429), whether it is out of credits, and passive statistics (EWMA of
 * time to first byte and of total latency, success rate). All synchronous over in-memory state, so
 * the workflow asks and reports on its hot path without an Effect step.
 */
import { Context, Effect, Layer, Redacted, Runtime } from "effect"
import { Resilience, type ResilienceSettings } from "../config/Resilience.js"
import { type Candidate, withoutKey } from "../domain/Provider.js"
import type { ProviderStats, Unavailable } from "../policy/Rank.js"
import type { Classified } from "../router/Classify.js"
import * as Breaker from "./Breaker.js"

/** How an attempt ended, as far as the provider's health is concerned. */
export type Verdict =
  | { readonly _tag: "Ok"; readonly ttfbMs: number; readonly totalMs: number }
  | { readonly _tag: "Failed"; readonly classified: Classified; readonly detail: string }
  /** The client left: says nothing about the provider. */
  | { readonly _tag: "Abandoned" }

export type Admission =
  | { readonly ok: true; readonly probe: boolean }
  | { readonly ok: false; readonly outcome: "circuit_open" | "misconfigured" | "rate_limited" | "out_of_credits"; readonly reason: string }

/** The result of an active health check (`GET {endpoint}/models`). */
export type CheckResult =
  | { readonly _tag: "Healthy" }
  | { readonly _tag: "Unhealthy"; readonly classified: Classified; readonly detail: string }

export interface ProviderStatus {
  readonly id: string
  /** `healthy`, `circuit_open`, `half_open`, `misconfigured` or `out_of_credits`. */
  readonly state: string
  readonly circuit: {
    readonly state: "closed" | "open" | "half_open"
    readonly open_until: string | null
    readonly trips: number
    readonly reason: string | null
    readonly consecutive_failures: number
  }
  readonly rate_limited: ReadonlyArray<{ readonly model: string; readonly until: string }>
  /** Models whose own breaker is not closed (failures about one model, not the provider). */
  readonly model_circuits: ReadonlyArray<{ readonly model: string; readonly state: "open" | "half_open" | "closed"; readonly open_until: string | null; readonly reason: string | null }>
  readonly out_of_credits_until: string | null
  readonly stats: {
    readonly requests: number
    readonly successes: number
    readonly failures: number
    readonly success_rate: number | null
    /** Over the last 50 requests of the last five minutes, as `health` failover rules see it (`null` below three). */
    readonly recent_success_rate: number | null
    readonly ewma_ttfb_ms: number | null
    readonly ewma_total_ms: number | null
    readonly last_error: string | null
    readonly last_error_at: string | null
  }
  readonly last_check: { readonly at: string; readonly healthy: boolean; readonly detail: string | null } | null
}

/**
 * A provider (or one of its models) taken out of service or back in it: what operators are told,
 * once per change of state, never per request.
 */
export type Transition =
  | {
    readonly _tag: "Out"
    readonly provider: string
    /** Set when only this model's circuit opened. */
    readonly model: string | null
    readonly outcome: "misconfigured" | "out_of_credits" | "circuit_open"
    /** The failure that did it (the upstream's message, provider key blanked). */
    readonly detail: string
    readonly until: number
    /** A half-open circuit's probe failed: it was out already, and is again for longer. */
    readonly again: boolean
  }
  | {
    readonly _tag: "Back"
    readonly provider: string
    readonly model: string | null
    /** What it had been. */
    readonly outcome: "misconfigured" | "out_of_credits" | "circuit_open"
    /** What brought it back. */
    readonly via: "request" | "health_check"
  }

export interface HealthService {
  /** May this candidate be tried now? Admitting the probe of a half-open circuit reserves it. */
  readonly admit: (candidate: Candidate, now: number) => Admission
  /**
   * Why this candidate would not be admitted now, changing nothing (no probe reserved): what the
   * policy and `/admin/explain` read. Credit exhaustion is left to `outOfCreditsUntil`.
   */
  readonly peek: (candidate: Candidate, now: number) => Unavailable | null
  /**
   * A provider's latency average and its success rate over its recent requests (see
   * `recentWindowMs`): what the policy's `latency` strategy and `health` failover rules read.
   */
  readonly stats: (providerId: string, now: number) => ProviderStats
  /** When a provider that said it is out of credits may be tried again, or `null`. */
  readonly outOfCreditsUntil: (providerId: string, now: number) => number | null
  /** How an attempt ended; `probe` when it was admitted as a half-open probe. */
  readonly report: (candidate: Candidate, verdict: Verdict, probe: boolean, now: number) => void
  readonly reportCheck: (providerId: string, result: CheckResult, now: number) => void
  readonly status: (providerIds: ReadonlyArray<string>, now: number) => ReadonlyArray<ProviderStatus>
}

export class Health extends Context.Tag("sanctum/Health")<Health, HealthService>() {}

interface Entry {
  breaker: Breaker.BreakerState
  /** Breakers of single models, for failures that are about one model (see `modelSpecific`). */
  readonly models: Map<string, Breaker.BreakerState>
  readonly rateLimits: Map<string, number>
  creditsUntil: number
  requests: number
  successes: number
  failures: number
  ewmaTtfbMs: number | null
  ewmaTotalMs: number | null
  /** When the latest answer came (the latency averages' freshness). */
  lastOkAt: number
  /** Outcomes of the latest requests, oldest first: when each ended, and whether it succeeded. */
  readonly recent: Array<readonly [at: number, ok: boolean]>
  lastError: string | null
  lastErrorAt: number | null
  lastCheck: { at: number; healthy: boolean; detail: string | null } | null
}

/** Weight of the newest sample in the moving averages. */
const alpha = 0.2
const ewma = (prev: number | null, sample: number) => (prev === null ? sample : prev + alpha * (sample - prev))
const iso = (ms: number) => new Date(ms).toISOString()

/**
 * What the policy reads is recent: a success rate counts only the last `recentKept` requests of the
 * last five minutes (a busy provider's last few seconds, a quiet one's whole window), and only once
 * there are at least three of them; a latency average counts only while an answer
 * came in that window. Old results expire, so a provider a `health` rule or the `latency`
 * strategy put aside comes back by itself instead of never being tried again.
 */
export const recentWindowMs = 5 * 60_000
export const recentMinimum = 3
const recentKept = 50

const note = (e: { readonly recent: Array<readonly [number, boolean]> }, now: number, ok: boolean) => {
  if (e.recent.length >= recentKept) e.recent.shift()
  e.recent.push([now, ok])
}

export { withoutKey }

/** What an open (or half-open) breaker's reason says it is: a provider misconfigured, or a circuit open. */
const outcomeOfReason = (reason: string): "misconfigured" | "circuit_open" => (reason.startsWith("misconfigured") ? "misconfigured" : "circuit_open")

/**
 * The health registry. `onTransition` hears each change in or out of service; it is called only on
 * those rare branches, so the hot path pays a tag comparison at most.
 */
export const make = (settings: ResilienceSettings, onTransition: (t: Transition) => void = () => {}): HealthService => {
  const entries = new Map<string, Entry>()

  /** Tells of a breaker that opened (from any other state) or closed (from any other state). */
  const changed = (
    provider: string,
    model: string | null,
    before: Breaker.BreakerState,
    after: Breaker.BreakerState,
    key: Redacted.Redacted<string> | null,
    via: "request" | "health_check"
  ) => {
    if (after._tag === "Open" && before._tag !== "Open") {
      const detail = withoutKey(after.reason.replace(/^misconfigured: /, ""), key)
      onTransition({ _tag: "Out", provider, model, outcome: outcomeOfReason(after.reason), detail, until: after.until, again: before._tag === "HalfOpen" })
    } else if (after._tag === "Closed" && before._tag !== "Closed") {
      onTransition({ _tag: "Back", provider, model, outcome: outcomeOfReason(before.reason), via })
    }
  }
  const entryOf = (id: string): Entry => {
    let e = entries.get(id)
    if (e === undefined) {
      e = {
        breaker: Breaker.closed,
        models: new Map(),
        rateLimits: new Map(),
        creditsUntil: 0,
        requests: 0,
        successes: 0,
        failures: 0,
        ewmaTtfbMs: null,
        ewmaTotalMs: null,
        lastOkAt: 0,
        recent: [],
        lastError: null,
        lastErrorAt: null,
        lastCheck: null
      }
      entries.set(id, e)
    }
    return e
  }

  const admit = (c: Candidate, now: number): Admission => {
    const e = entries.get(c.provider.id)
    if (e === undefined) return { ok: true, probe: false }
    if (e.creditsUntil > now) return { ok: false, outcome: "out_of_credits", reason: `out of credits until ${iso(e.creditsUntil)}` }
    const limited = e.rateLimits.get(c.upstreamModel)
    if (limited !== undefined) {
      if (limited > now) return { ok: false, outcome: "rate_limited", reason: `rate limited until ${iso(limited)}` }
      e.rateLimits.delete(c.upstreamModel)
    }
    const admission = Breaker.admit(e.breaker, now)
    e.breaker = admission.state
    if (!admission.allowed) {
      const reason = e.breaker._tag === "Open" ? `circuit open until ${iso(e.breaker.until)}` : "circuit half-open, probe under way"
      return { ok: false, outcome: e.breaker._tag !== "Closed" ? outcomeOfReason(e.breaker.reason) : "circuit_open", reason }
    }
    if (admission.probe) return { ok: true, probe: true }
    const model = e.models.get(c.upstreamModel)
    if (model === undefined) return { ok: true, probe: false }
    const forModel = Breaker.admit(model, now)
    e.models.set(c.upstreamModel, forModel.state)
    if (forModel.allowed) return { ok: true, probe: forModel.probe }
    const state = forModel.state
    const reason = state._tag === "Open"
      ? `circuit open for ${c.upstreamModel} until ${iso(state.until)}`
      : `circuit half-open for ${c.upstreamModel}, probe under way`
    return { ok: false, outcome: "circuit_open", reason }
  }

  const blocked = (b: Breaker.BreakerState, now: number): string | null =>
    b._tag === "Open" ? (b.until > now ? `circuit open until ${iso(b.until)}` : null) : b._tag === "HalfOpen" && b.probing ? "circuit half-open, probe under way" : null

  const openUntil = (b: Breaker.BreakerState): number | undefined => (b._tag === "Open" ? b.until : undefined)

  const peek = (c: Candidate, now: number): Unavailable | null => {
    const e = entries.get(c.provider.id)
    if (e === undefined) return null
    const limited = e.rateLimits.get(c.upstreamModel)
    if (limited !== undefined && limited > now) return { outcome: "rate_limited", reason: `rate limited until ${iso(limited)}`, until: limited }
    const provider = blocked(e.breaker, now)
    if (provider !== null) {
      const b = e.breaker as { readonly reason: string }
      return { outcome: outcomeOfReason(b.reason), reason: provider, until: openUntil(e.breaker) }
    }
    const m = e.models.get(c.upstreamModel)
    if (m === undefined || blocked(m, now) === null) return null
    return {
      outcome: "circuit_open",
      reason: m._tag === "Open" ? `circuit open for ${c.upstreamModel} until ${iso(m.until)}` : `circuit half-open for ${c.upstreamModel}, probe under way`,
      until: openUntil(m)
    }
  }

  const stats = (id: string, now: number): ProviderStats => {
    const e = entries.get(id)
    if (e === undefined) return { ewmaTtfbMs: null, successRate: null }
    let n = 0
    let ok = 0
    for (const [at, success] of e.recent) {
      if (at <= now - recentWindowMs) continue
      n++
      if (success) ok++
    }
    // A latency average nobody refreshed for the window is not news any more: the provider goes back
    // to its place in the priority order and is measured again, rather than staying last forever.
    const fresh = e.lastOkAt > now - recentWindowMs
    return { ewmaTtfbMs: fresh ? e.ewmaTtfbMs : null, successRate: n < recentMinimum ? null : ok / n }
  }

  const outOfCreditsUntil = (id: string, now: number): number | null => {
    const until = entries.get(id)?.creditsUntil ?? 0
    return until > now ? until : null
  }

  /** Which breaker a probe was admitted by: the provider's when it is half-open, else the model's. */
  const probing = (e: Entry, model: string): "provider" | "model" => (e.breaker._tag === "HalfOpen" && e.breaker.probing ? "provider" : e.models.has(model) ? "model" : "provider")

  /** The probe ended without a verdict about health: free its slot. */
  const release = (e: Entry, model: string, probe: boolean) => {
    if (!probe) return
    if (probing(e, model) === "provider") e.breaker = Breaker.onAbandoned(e.breaker)
    else e.models.set(model, Breaker.onAbandoned(e.models.get(model)!))
  }

  const succeeded = (e: Entry, c: Candidate) => {
    const model = c.upstreamModel
    const before = e.breaker
    e.breaker = Breaker.onSuccess(before, settings.breaker)
    if (before._tag !== "Closed") changed(c.provider.id, null, before, e.breaker, c.provider.apiKey, "request")
    const m = e.models.get(model)
    if (m !== undefined) {
      const next = Breaker.onSuccess(m, settings.breaker)
      if (m._tag !== "Closed") changed(c.provider.id, model, m, next, c.provider.apiKey, "request")
      // A model whose breaker is back to a clean closed state needs no entry of its own.
      if (next === Breaker.closed) e.models.delete(model)
      else e.models.set(model, next)
    }
  }

  const failed = (e: Entry, detail: string, now: number) => {
    e.failures++
    e.lastError = detail
    e.lastErrorAt = now
  }

  const report = (c: Candidate, verdict: Verdict, probe: boolean, now: number) => {
    const e = entryOf(c.provider.id)
    const model = c.upstreamModel
    switch (verdict._tag) {
      case "Abandoned":
        release(e, model, probe)
        return
      case "Ok":
        e.requests++
        e.successes++
        e.lastOkAt = now
        note(e, now, true)
        e.ewmaTtfbMs = ewma(e.ewmaTtfbMs, verdict.ttfbMs)
        e.ewmaTotalMs = ewma(e.ewmaTotalMs, verdict.totalMs)
        // Credits run out for a while, then come back on their own: a success tells.
        if (e.creditsUntil !== 0 && e.creditsUntil <= now) {
          e.creditsUntil = 0
          onTransition({ _tag: "Back", provider: c.provider.id, model: null, outcome: "out_of_credits", via: "request" })
        }
        succeeded(e, c)
        return
      case "Failed": {
        e.requests++
        const { classified, detail } = verdict
        switch (classified.class) {
          // The provider answered, and rightly: it is healthy.
          case "client_error":
          case "context_too_long":
            e.successes++
            note(e, now, true)
            succeeded(e, c)
            return
          case "auth": {
            failed(e, detail, now)
            note(e, now, false)
            const before = e.breaker
            e.breaker = Breaker.trip(before, now, settings.breaker, `misconfigured: ${detail}`, settings.misconfiguredCooldownMs)
            changed(c.provider.id, null, before, e.breaker, c.provider.apiKey, "request")
            return
          }
          case "credits": {
            failed(e, detail, now)
            const wasOut = e.creditsUntil > now
            e.creditsUntil = now + settings.outOfCreditsCooldownMs
            if (!wasOut) {
              onTransition({ _tag: "Out", provider: c.provider.id, model: null, outcome: "out_of_credits", detail: withoutKey(detail, c.provider.apiKey), until: e.creditsUntil, again: false })
            }
            release(e, model, probe)
            return
          }
          // Not a health failure and not counted by the breaker: the provider is up, just busy.
          case "rate_limited":
            failed(e, detail, now)
            e.rateLimits.set(model, now + (classified.retryAfterMs ?? settings.defaultRetryAfterMs))
            release(e, model, probe)
            return
          case "transient":
          case "stalled":
            failed(e, detail, now)
            // Rate limits and credits have their own gates; only these count against health.
            note(e, now, false)
            if (classified.modelSpecific === true) {
              const before = e.models.get(model) ?? Breaker.closed
              const after = Breaker.onFailure(before, now, settings.breaker, detail)
              e.models.set(model, after)
              changed(c.provider.id, model, before, after, c.provider.apiKey, "request")
            } else {
              const before = e.breaker
              e.breaker = Breaker.onFailure(before, now, settings.breaker, detail)
              changed(c.provider.id, null, before, e.breaker, c.provider.apiKey, "request")
            }
            return
        }
      }
    }
  }

  const reportCheck = (providerId: string, result: CheckResult, now: number) => {
    const e = entryOf(providerId)
    if (result._tag === "Healthy") {
      e.lastCheck = { at: now, healthy: true, detail: null }
      // A backend that answers again is used again at once, without a restart. Rate limits and
      // credit exhaustion are not lifted: the provider said how long to wait.
      if (e.breaker._tag !== "Closed") {
        const before = e.breaker
        e.breaker = Breaker.closed
        changed(providerId, null, before, e.breaker, null, "health_check")
      }
      return
    }
    e.lastCheck = { at: now, healthy: false, detail: result.detail }
    // Not a request: the statistics of requests stay as they are, only the last error is noted.
    e.lastError = `health check: ${result.detail}`
    e.lastErrorAt = now
    // A 429 or a 402 says the provider is up but busy or unpaid, not down: as for requests, it
    // does not count toward the breaker (rate limits and credits have their own gates).
    if (result.classified.class === "rate_limited" || result.classified.class === "credits") return
    const before = e.breaker
    e.breaker = result.classified.class === "auth"
      ? Breaker.trip(before, now, settings.breaker, `misconfigured: ${result.detail}`, settings.misconfiguredCooldownMs)
      : Breaker.onFailure(before, now, settings.breaker, `health check: ${result.detail}`)
    // A check's detail is its status or a transport error, never a body: no key to blank.
    changed(providerId, null, before, e.breaker, null, "health_check")
  }

  const status = (ids: ReadonlyArray<string>, now: number): ReadonlyArray<ProviderStatus> =>
    ids.map((id) => {
      const e = entries.get(id) ?? entryOf(id)
      const b = e.breaker
      const open = b._tag === "Open" && b.until > now
      const misconfigured = b._tag !== "Closed" && outcomeOfReason(b.reason) === "misconfigured"
      const state = e.creditsUntil > now
        ? "out_of_credits"
        : misconfigured && (open || b._tag === "HalfOpen")
        ? "misconfigured"
        : open
        ? "circuit_open"
        : b._tag === "Closed"
        ? "healthy"
        : "half_open"
      return {
        id,
        state,
        circuit: {
          state: b._tag === "Closed" ? "closed" : open ? "open" : "half_open",
          open_until: b._tag === "Open" ? iso(b.until) : null,
          trips: b.trips,
          reason: b._tag === "Closed" ? null : b.reason,
          consecutive_failures: b._tag === "Closed" ? b.consecutive : 0
        },
        rate_limited: [...e.rateLimits].filter(([, until]) => until > now).map(([model, until]) => ({ model, until: iso(until) })),
        model_circuits: [...e.models].filter(([, m]) => m._tag !== "Closed").map(([model, m]) => ({
          model,
          state: m._tag === "Open" && m.until > now ? "open" : m._tag === "Closed" ? "closed" : "half_open",
          open_until: m._tag === "Open" ? iso(m.until) : null,
          reason: m._tag === "Closed" ? null : m.reason
        })),
        out_of_credits_until: e.creditsUntil > now ? iso(e.creditsUntil) : null,
        stats: {
          requests: e.requests,
          successes: e.successes,
          failures: e.failures,
          success_rate: e.requests === 0 ? null : e.successes / e.requests,
          recent_success_rate: stats(id, now).successRate,
          ewma_ttfb_ms: e.ewmaTtfbMs === null ? null : Math.round(e.ewmaTtfbMs),
          ewma_total_ms: e.ewmaTotalMs === null ? null : Math.round(e.ewmaTotalMs),
          last_error: e.lastError,
          last_error_at: e.lastErrorAt === null ? null : iso(e.lastErrorAt)
        },
        last_check: e.lastCheck === null ? null : { at: iso(e.lastCheck.at), healthy: e.lastCheck.healthy, detail: e.lastCheck.detail }
      }
    })

  return { admit, peek, stats, outOfCreditsUntil, report, reportCheck, status }
}

/** The log line of a transition: a warning when a provider goes out of service, info when it is back. */
export const logTransition = (t: Transition): Effect.Effect<void> => {
  const who = t.model === null ? `provider ${t.provider}` : `provider ${t.provider}, model ${t.model},`
  return t._tag === "Out"
    ? Effect.logWarning(`${who} ${t.again ? "still out of service (probe failed)" : "taken out of service"}: ${t.outcome} until ${iso(t.until)}: ${t.detail}`).pipe(
      Effect.annotateLogs({ provider: t.provider, ...(t.model === null ? {} : { model: t.model }), outcome: t.outcome, until: iso(t.until) })
    )
    : Effect.logInfo(`${who} back in service after ${t.outcome} (${t.via === "request" ? "a request succeeded" : "a health check succeeded"})`).pipe(
      Effect.annotateLogs({ provider: t.provider, ...(t.model === null ? {} : { model: t.model }), outcome: t.outcome })
    )
}

/**
 * The in-memory health registry, with the configured resilience settings. Transitions are logged
 * with the logger the layer was built with, synchronously where they happen: they are rare, and a
 * line written at once keeps its order among the others.
 */
export const layer = Layer.effect(
  Health,
  Effect.gen(function* () {
    const settings = yield* Resilience
    const log = Runtime.runSync(yield* Effect.runtime<never>())
    return Health.of(make(settings, (t) => log(logTransition(t))))
  })
)
