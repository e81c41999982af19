/**
 * Provider and alias records, the routing config and session pins in SQLite. The config file is
 * declarative: on every start its records replace the file-sourced rows, while API-sourced rows are kept.
 */
import { SqlClient } from "@effect/sql"
import { Effect, Redacted, Schema } from "effect"
import { createHash } from "node:crypto"
import type { AliasSpec, ProviderSpec } from "../domain/Provider.js"
import { defaultMaxConnections, defaultTimeouts, ProviderType, RecordSource } from "../domain/Provider.js"
import { type RoutingConfig, routingFromJson, routingToJson, strategies } from "../domain/Routing.js"

const Maybe = <A, I>(s: Schema.Schema<A, I>) => Schema.optionalWith(Schema.NullOr(s), { exact: true })
/** A stored per-model override: the `ModelInfo` fields the config set. */
const ModelOverride = Schema.Struct({
  contextWindow: Maybe(Schema.Number),
  maxOutputTokens: Maybe(Schema.Number),
  tools: Maybe(Schema.Boolean),
  vision: Maybe(Schema.Boolean),
  jsonSchema: Maybe(Schema.Boolean),
  reasoning: Maybe(Schema.Boolean),
  embeddings: Maybe(Schema.Boolean),
  pricing: Maybe(Schema.Struct({ inputPer1M: Schema.Number, outputPer1M: Schema.Number }))
})

const ProviderRow = Schema.Struct({
  id: Schema.String,
  source: RecordSource,
  endpoint: Schema.String,
  provider_type: ProviderType,
  models: Schema.NullOr(Schema.parseJson(Schema.Array(Schema.String))),
  priority: Schema.Number,
  supports_tools: Schema.NullOr(Schema.Number),
  supports_streaming: Schema.NullOr(Schema.Number),
  supports_multimodal: Schema.NullOr(Schema.Number),
  // Rows written before the idle timeout existed lack it: they get the default.
  timeouts: Schema.parseJson(Schema.Struct({
    connectMs: Schema.Number,
    firstByteMs: Schema.Number,
    idleMs: Schema.optionalWith(Schema.Number, { default: () => defaultTimeouts.idleMs }),
    totalMs: Schema.Number
  })),
  api_key_fingerprint: Schema.NullOr(Schema.String),
  hedge_after_ms: Schema.NullOr(Schema.Number),
  weight: Schema.NullOr(Schema.Number),
  model_overrides: Schema.NullOr(Schema.parseJson(Schema.Record({ key: Schema.String, value: ModelOverride }))),
  // NULL in rows written before the cap existed (or by hand): the default.
  max_connections: Schema.NullOr(Schema.Number)
})

const AliasRow = Schema.Struct({
  name: Schema.String,
  source: RecordSource,
  targets: Schema.parseJson(Schema.Array(Schema.String)),
  hedge_after_ms: Schema.NullOr(Schema.Number),
  strategy: Schema.NullOr(Schema.Literal("priority", "cost", "latency", "weighted"))
})

/**
 * The stored routing config, in the admin API's wire form. Every field is optional so a row written
 * before a field existed still loads, with that field at its default.
 */
const RoutingBody = Schema.Struct({
  strategy: Schema.optionalWith(Schema.Literal(...strategies), { exact: true }),
  cost_optimization: Schema.optionalWith(Schema.Boolean, { exact: true }),
  provider_order: Schema.optionalWith(Schema.Array(Schema.String), { exact: true }),
  failover: Schema.optionalWith(
    Schema.Array(Schema.Struct({ provider_id: Schema.String, condition: Schema.Literal("credit_threshold", "health"), value: Schema.Number })),
    { exact: true }
  )
})

const RoutingRow = Schema.Struct({
  body: Schema.parseJson(RoutingBody),
  source: RecordSource,
  updated_at: Schema.Number
})

const PinRow = Schema.Struct({ session_key: Schema.String, provider_id: Schema.String })

/** The routing config as stored, with where it came from. */
export interface StoredRouting {
  readonly routing: RoutingConfig
  readonly source: RecordSource
  readonly updatedAt: number
}

/** A session pinned to a provider through `/admin/override`. */
export interface SessionPin {
  readonly sessionKey: string
  readonly providerId: string
}

/** A short, non-reversible tag for a key, so records and status can say which key is configured. */
export const fingerprint = (key: Redacted.Redacted<string> | null): string | null =>
  key === null ? null : `sha256:${createHash("sha256").update(Redacted.value(key)).digest("hex").slice(0, 12)}`

const flag = (b: boolean | null) => (b === null ? null : b ? 1 : 0)
const unflag = (n: number | null) => (n === null ? null : n !== 0)

/** A provider as stored: everything but the key itself. */
export interface StoredProvider extends Omit<ProviderSpec, "apiKey"> {
  readonly apiKeyFingerprint: string | null
}

export class ConfigRepo extends Effect.Service<ConfigRepo>()("sanctum/ConfigRepo", {
  effect: Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const decodeProviders = Schema.decodeUnknown(Schema.Array(ProviderRow))
    const decodeAliases = Schema.decodeUnknown(Schema.Array(AliasRow))

    const listProviders = Effect.gen(function* () {
      const rows = yield* decodeProviders(yield* sql`SELECT * FROM providers ORDER BY id`)
      return rows.map((r): StoredProvider => ({
        id: r.id,
        source: r.source,
        endpoint: r.endpoint,
        type: r.provider_type,
        models: r.models,
        priority: r.priority,
        supportsTools: unflag(r.supports_tools),
        supportsStreaming: unflag(r.supports_streaming),
        supportsMultimodal: unflag(r.supports_multimodal),
        timeouts: r.timeouts,
        hedgeAfterMs: r.hedge_after_ms,
        weight: r.weight ?? 1,
        modelOverrides: r.model_overrides ?? {},
        // Only the file and (later) the config API write it, both validated; a row edited by hand to
        // something that is no count of connections gets the default rather than a pool that never sends.
        maxConnections: Number.isSafeInteger(r.max_connections) && r.max_connections! >= 1 ? r.max_connections! : defaultMaxConnections,
        apiKeyFingerprint: r.api_key_fingerprint
      }))
    }).pipe(Effect.orDie)

    const listAliases = Effect.gen(function* () {
      const rows = yield* decodeAliases(yield* sql`SELECT * FROM aliases ORDER BY name`)
      return rows.map((r): AliasSpec => ({ name: r.name, targets: r.targets, hedgeAfterMs: r.hedge_after_ms, strategy: r.strategy, source: r.source }))
    }).pipe(Effect.orDie)

    /** Writes the file's records as the file says and drops file records the file no longer has. */
    const replaceFileRecords = (providers: ReadonlyArray<ProviderSpec>, aliases: ReadonlyArray<AliasSpec>) =>
      Effect.gen(function* () {
        const now = Date.now()
        const ids = providers.map((p) => p.id)
        const names = aliases.map((a) => a.name)
        yield* ids.length === 0
          ? sql`DELETE FROM providers WHERE source = 'file'`
          : sql`DELETE FROM providers WHERE source = 'file' AND id NOT IN ${sql.in(ids)}`
        yield* names.length === 0
          ? sql`DELETE FROM aliases WHERE source = 'file'`
          : sql`DELETE FROM aliases WHERE source = 'file' AND name NOT IN ${sql.in(names)}`
        for (const p of providers) {
          const row = {
            id: p.id,
            source: "file",
            endpoint: p.endpoint,
            provider_type: p.type,
            models: p.models === null ? null : JSON.stringify(p.models),
            priority: p.priority,
            supports_tools: flag(p.supportsTools),
            supports_streaming: flag(p.supportsStreaming),
            supports_multimodal: flag(p.supportsMultimodal),
            timeouts: JSON.stringify(p.timeouts),
            api_key_fingerprint: fingerprint(p.apiKey),
            hedge_after_ms: p.hedgeAfterMs,
            weight: p.weight,
            model_overrides: JSON.stringify(p.modelOverrides),
            max_connections: p.maxConnections,
            updated_at: now
          }
          yield* sql`INSERT OR REPLACE INTO providers ${sql.insert(row)}`
        }
        for (const a of aliases) {
          yield* sql`INSERT OR REPLACE INTO aliases ${
            sql.insert({ name: a.name, source: "file", targets: JSON.stringify(a.targets), hedge_after_ms: a.hedgeAfterMs, strategy: a.strategy, updated_at: now })
          }`
        }
      }).pipe(sql.withTransaction, Effect.orDie)

    const decodeRouting = Schema.decodeUnknown(Schema.Array(RoutingRow))
    const decodePins = Schema.decodeUnknown(Schema.Array(PinRow))

    /** The stored routing config, or `null` when none was ever written. */
    const getRouting = Effect.gen(function* () {
      const [row] = yield* decodeRouting(yield* sql`SELECT body, source, updated_at FROM routing_config WHERE id = 1`)
      return row === undefined ? null : { routing: routingFromJson(row.body), source: row.source, updatedAt: row.updated_at } satisfies StoredRouting
    }).pipe(Effect.orDie)

    const putRouting = (routing: RoutingConfig, source: RecordSource) =>
      sql`INSERT OR REPLACE INTO routing_config ${
        sql.insert({ id: 1, body: JSON.stringify(routingToJson(routing)), source, updated_at: Date.now() })
      }`.pipe(Effect.asVoid, Effect.orDie)

    const deleteRouting = sql`DELETE FROM routing_config`.pipe(Effect.asVoid, Effect.orDie)

    const listSessionPins = Effect.gen(function* () {
      const rows = yield* decodePins(yield* sql`SELECT session_key, provider_id FROM session_overrides ORDER BY session_key`)
      return rows.map((r): SessionPin => ({ sessionKey: r.session_key, providerId: r.provider_id }))
    }).pipe(Effect.orDie)

    /** Pins a session to a provider, or removes its pin (`null`). */
    const setSessionPin = (sessionKey: string, providerId: string | null) =>
      (providerId === null
        ? sql`DELETE FROM session_overrides WHERE session_key = ${sessionKey}`
        : sql`INSERT OR REPLACE INTO session_overrides ${
          sql.insert({ session_key: sessionKey, provider_id: providerId, created_at: Date.now() })
        }`).pipe(Effect.asVoid, Effect.orDie)

    return {
      listProviders,
      listAliases,
      replaceFileRecords,
      getRouting,
      putRouting,
      deleteRouting,
      listSessionPins,
      setSessionPin
    } as const
  })
}) {}
