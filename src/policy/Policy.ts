/**
 * The routing policy: given what a request resolved to and what it needs, the candidates in the
 * order they are tried and why the others were dropped. The decision itself is the pure
 * `Rank.decide`; this service only takes the snapshot it needs (health, credits, the session's
 * pin) synchronously, on the request path.
 */
import { Context, Effect, Layer, Option } from "effect"
import * as CreditsModule from "../credits/Credits.js"
import { Credits } from "../credits/Credits.js"
import type { RoutingConfig, Strategy } from "../domain/Routing.js"
import { Health } from "../health/Health.js"
import type { Resolution } from "../providers/Providers.js"
import { calm, type Conditions, type Decision, decide, type Needs, type ProviderPrefs } from "./Rank.js"
import { Sessions } from "./Sessions.js"

export interface Ask {
  readonly resolution: Resolution
  readonly needs: Needs
  readonly routing: RoutingConfig
  readonly aliasStrategy?: Strategy | null | undefined
  readonly prefs?: ProviderPrefs | null | undefined
  readonly sessionKey?: string | null | undefined
  /** The body's `user` field and the request's id, for the `weighted` strategy (see `Rank.weightedKey`). */
  readonly user?: unknown
  readonly requestId?: string | null | undefined
}

export interface PolicyService {
  readonly decide: (ask: Ask, now: number) => Decision
  /** The session's pinned provider, if any. */
  readonly pinOf: (sessionKey: string | null) => string | null
}

export class Policy extends Context.Tag("sanctum/Policy")<Policy, PolicyService>() {}

/** Where a session's pin comes from; the daemon's is the persisted `Sessions` registry. */
export class Pins extends Context.Tag("sanctum/Pins")<Pins, { readonly pinOf: (sessionKey: string | null) => string | null }>() {}

export const make = (conditionsAt: (now: number) => Conditions, pinOf: (sessionKey: string | null) => string | null): PolicyService => ({
  pinOf,
  decide: (ask, now) =>
    decide({
      kind: ask.resolution.kind,
      candidates: ask.resolution.candidates,
      needs: ask.needs,
      routing: ask.routing,
      aliasStrategy: ask.aliasStrategy,
      prefs: ask.prefs,
      pin: pinOf(ask.sessionKey ?? null),
      sessionKey: ask.sessionKey,
      user: ask.user,
      requestId: ask.requestId,
      conditions: conditionsAt(now)
    })
})

/**
 * The policy over `Health`, with `Credits` and session pins when they are provided: `Pins`, else
 * the `Sessions` registry.
 */
export const layer = Layer.effect(
  Policy,
  Effect.gen(function* () {
    const health = yield* Health
    // Without a `Credits` service, credits are what `Health` learned from 402s.
    const credits = Option.getOrElse(yield* Effect.serviceOption(Credits), () => CreditsModule.make(health))
    // The daemon gives `Pins`; a library app gives the `Sessions` registry (`Sessions.layerMemory`).
    const pins = Option.getOrNull(yield* Effect.serviceOption(Pins)) ?? Option.getOrNull(yield* Effect.serviceOption(Sessions))
    // One snapshot object for every request (no allocation on the hot path): `at` is set just
    // before each decision, which runs synchronously to its end.
    let at = 0
    const conditions: Conditions = {
      unavailable: (c) => health.peek(c, at),
      stats: (id) => health.stats(id, at),
      credits: (id) => credits.peek(id, at)
    }
    return Policy.of(make(
      (now) => {
        at = now
        return conditions
      },
      pins === null ? () => null : pins.pinOf
    ))
  })
)

/** A policy that sees every provider as healthy and no pins: for tests of ordering alone. */
export const layerCalm = Layer.succeed(Policy, Policy.of(make(() => calm, () => null)))
