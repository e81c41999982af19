/**
 * The configuration in force: settings (flags, environment, file), the provider and alias records
 * (file and database) and the routing config. On start the file's records are written to the
 * database; records created at runtime through the config API live only there and survive restarts.
 */
import { Context, Effect, Layer, type Stream, SubscriptionRef } from "effect"
import { InvalidRequest } from "../domain/Errors.js"
import type { ConfigState, ProviderSpec } from "../domain/Provider.js"
import { defaultRouting, type RoutingConfig, unknownProviders } from "../domain/Routing.js"
import { ConfigRepo } from "../persistence/ConfigRepo.js"
import { aliasSpecs, aliasTargetError, checkAliasTargets, ConfigFileError, type LoadedFile, providerSpecs, routingOf } from "./ConfigFile.js"
import { Settings, type SettingsShape } from "./Settings.js"

export interface RouterConfigService {
  readonly settings: SettingsShape
  /** The providers, aliases and routing config in force now. */
  readonly current: Effect.Effect<ConfigState>
  /** The current state, then every later one. */
  readonly changes: Stream.Stream<ConfigState>
  /** Re-reads the database, after the config API changed it. */
  readonly reload: Effect.Effect<void>
  /**
   * Replaces the routing config: checked against the configured providers, stored (source `api`)
   * and published, so the next request is routed by it. An unknown provider id fails with an
   * `InvalidRequest` naming it, and nothing changes.
   */
  readonly setRouting: (routing: RoutingConfig) => Effect.Effect<void, InvalidRequest>
  /**
   * Like `setRouting`, with the new config computed from the one in force, atomically: two
   * concurrent partial updates cannot lose each other's change. Returns the config now in force.
   */
  readonly updateRouting: (f: (current: RoutingConfig) => RoutingConfig) => Effect.Effect<RoutingConfig, InvalidRequest>
}

export class RouterConfig extends Context.Tag("sanctum/RouterConfig")<RouterConfig, RouterConfigService>() {}

/** Where a routing config names each provider, as wire-form paths (`provider_order[1]`). */
const providerRefs = (r: RoutingConfig): ReadonlyArray<readonly [path: string, id: string]> => [
  ...r.providerOrder.map((id, i) => [`provider_order[${i}]`, id] as const),
  ...r.failover.map((f, i) => [`failover[${i}].provider_id`, f.providerId] as const)
]

/** The routing config's references to providers that are not configured, or `null` when there are none. */
export const unknownRoutingProviders = (
  r: RoutingConfig,
  known: ReadonlySet<string>
): ReadonlyArray<readonly [path: string, id: string]> | null => {
  const missing = providerRefs(r).filter(([, id]) => !known.has(id))
  return missing.length === 0 ? null : missing
}

/** The 400 for a routing config that names providers the router does not have. */
export const unknownProvidersError = (
  missing: ReadonlyArray<readonly [path: string, id: string]>,
  known: ReadonlySet<string>
): InvalidRequest => {
  const named = missing.map(([path, id]) => `'${id}' (${path})`).join(", ")
  const configured = known.size === 0 ? "none are configured" : `configured: ${[...known].sort().join(", ")}`
  return new InvalidRequest({
    message: `Unknown provider${missing.length > 1 ? "s" : ""} ${named}; ${configured}`,
    param: missing[0]![0],
    code: "invalid_value"
  })
}

/** Writes the file's records to the database and serves the merged result. */
export const layer = (loaded: LoadedFile) =>
  Layer.scoped(
    RouterConfig,
    Effect.gen(function* () {
      const settings = yield* Settings
      const repo = yield* ConfigRepo
      const source = loaded.path ?? "configuration"
      const fileProviders = providerSpecs(loaded.file)
      const keys = new Map(fileProviders.map((p) => [p.id, p.apiKey]))
      const known = new Set([...fileProviders.map((p) => p.id), ...(yield* repo.listProviders).filter((p) => p.source === "api").map((p) => p.id)])
      const problem = checkAliasTargets(loaded.file, known)
      if (problem !== null) return yield* aliasTargetError(source, problem)
      // The file's routing section wins at start, like its providers; a provider id it names must
      // exist, since a typo would otherwise silently leave the order as it was.
      const fileRouting = routingOf(loaded.file)
      const unknown = fileRouting === null ? null : unknownRoutingProviders(fileRouting, known)
      if (unknown !== null) {
        const lines = unknown.map(([path, id]) => `  routing.${path}: unknown provider '${id}'`).join("\n")
        return yield* new ConfigFileError({ path: source, message: `${source} is not a valid configuration:\n${lines}` })
      }
      yield* repo.replaceFileRecords(fileProviders, aliasSpecs(loaded.file))
      if (fileRouting !== null) yield* repo.putRouting(fileRouting, "file")
      else if ((yield* repo.getRouting)?.source === "file") {
        // The file had a routing section at an earlier start and no longer has: like a provider
        // removed from the file, it goes. A config set through the API is kept.
        yield* repo.deleteRouting
      }

      const read = Effect.gen(function* () {
        const stored = yield* repo.listProviders
        const providers = stored.map(({ apiKeyFingerprint: _, ...p }): ProviderSpec => ({
          ...p,
          // Keys are not stored: file providers get theirs from the file read at this start.
          apiKey: p.source === "file" ? keys.get(p.id) ?? null : null
        }))
        const routing = (yield* repo.getRouting)?.routing ?? defaultRouting
        return { providers, aliases: yield* repo.listAliases, routing } satisfies ConfigState
      })

      const initial = yield* read
      // A config set through the API may name a provider since removed from the file: it stays
      // (the provider may come back), and the policy skips ids it does not know.
      const stale = unknownProviders(initial.routing, new Set(initial.providers.map((p) => p.id)))
      if (stale !== null) {
        yield* Effect.logWarning(`the stored routing config names providers that are not configured: ${stale.join(", ")}`)
      }

      const ref = yield* SubscriptionRef.make(initial)
      // One writer at a time, so a reload cannot publish a routing config read before an update.
      const lock = yield* Effect.makeSemaphore(1)
      const exclusive = <A, E>(effect: Effect.Effect<A, E>) => lock.withPermits(1)(Effect.uninterruptible(effect))

      const updateRouting = (f: (current: RoutingConfig) => RoutingConfig) =>
        exclusive(Effect.gen(function* () {
          const state = yield* SubscriptionRef.get(ref)
          const next = f(state.routing)
          const ids = new Set(state.providers.map((p) => p.id))
          // Only an id the change brings in is refused: one the stored config already named (a
          // provider since removed from the file, kept by design) must not block every later
          // change, such as a PATCH of the strategy alone.
          const stale = new Set(providerRefs(state.routing).map(([, id]) => id).filter((id) => !ids.has(id)))
          const missing = unknownRoutingProviders(next, new Set([...ids, ...stale]))
          if (missing !== null) return yield* unknownProvidersError(missing, ids)
          yield* repo.putRouting(next, "api")
          yield* SubscriptionRef.set(ref, { ...state, routing: next })
          return next
        }))

      return RouterConfig.of({
        settings,
        current: SubscriptionRef.get(ref),
        changes: ref.changes,
        reload: exclusive(Effect.flatMap(read, (s) => SubscriptionRef.set(ref, s))),
        setRouting: (routing) => Effect.asVoid(updateRouting(() => routing)),
        updateRouting
      })
    })
  )
