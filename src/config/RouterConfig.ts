/**
 * The configuration in force: settings (flags, environment, file) and the provider and alias records
 * (file and database). On start the file's records are written to the database; records created at
 * runtime through the config API live only there and survive restarts.
 */
import { Context, Effect, Layer, type Stream, SubscriptionRef } from "effect"
import type { ConfigState, ProviderSpec } from "../domain/Provider.js"
import { ConfigRepo } from "../persistence/ConfigRepo.js"
import { defaultRouting } from "../domain/Routing.js"
import { aliasSpecs, aliasTargetError, checkAliasTargets, type LoadedFile, providerSpecs, routingOf } from "./ConfigFile.js"
import { Settings, type SettingsShape } from "./Settings.js"

export interface RouterConfigService {
  readonly settings: SettingsShape
  /** The providers and aliases in force now. */
  readonly current: Effect.Effect<ConfigState>
  /** The current state, then every later one. */
  readonly changes: Stream.Stream<ConfigState>
  /** Re-reads the database, after the config API changed it. */
  readonly reload: Effect.Effect<void>
}

export class RouterConfig extends Context.Tag("sanctum/RouterConfig")<RouterConfig, RouterConfigService>() {}

/** Writes the file's records to the database and serves the merged result. */
export const layer = (loaded: LoadedFile) =>
  Layer.scoped(
    RouterConfig,
    Effect.gen(function* () {
      const settings = yield* Settings
      const repo = yield* ConfigRepo
      const fileProviders = providerSpecs(loaded.file)
      const keys = new Map(fileProviders.map((p) => [p.id, p.apiKey]))
      const known = new Set([...fileProviders.map((p) => p.id), ...(yield* repo.listProviders).filter((p) => p.source === "api").map((p) => p.id)])
      const problem = checkAliasTargets(loaded.file, known)
      if (problem !== null) return yield* aliasTargetError(loaded.path ?? "configuration", problem)
      yield* repo.replaceFileRecords(fileProviders, aliasSpecs(loaded.file))

      const read = Effect.gen(function* () {
        const stored = yield* repo.listProviders
        const providers = stored.map(({ apiKeyFingerprint: _, ...p }): ProviderSpec => ({
          ...p,
          // Keys are not stored: file providers get theirs from the file read at this start.
          apiKey: p.source === "file" ? keys.get(p.id) ?? null : null
        }))
        return { providers, aliases: yield* repo.listAliases, routing: routingOf(loaded.file) ?? defaultRouting } satisfies ConfigState
      })

      const ref = yield* SubscriptionRef.make(yield* read)
      return RouterConfig.of({
        settings,
        current: SubscriptionRef.get(ref),
        changes: ref.changes,
        reload: Effect.flatMap(read, (s) => SubscriptionRef.set(ref, s))
      })
    })
  )
