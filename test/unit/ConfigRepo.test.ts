/**
 * Provider records in a real (in-memory) SQLite database: what the file says is stored and read
 * back as it was, and a row that does not say (written before a column existed, or by hand) reads
 * as the default.
 */
import { describe, expect, layer } from "@effect/vitest"
import { SqlClient } from "@effect/sql"
import { Effect, Layer } from "effect"
import { ConfigRepo } from "../../src/persistence/ConfigRepo.js"
import * as Sql from "../../src/persistence/Sql.js"
import { providerSpec } from "./helpers.js"

describe("ConfigRepo", () => {
  layer(ConfigRepo.Default.pipe(Layer.provideMerge(Sql.layer(":memory:"))))("provider records", (it) => {
    it.effect("keeps a provider's max_connections, and reads a row without one as 256", () =>
      Effect.gen(function* () {
        const repo = yield* ConfigRepo
        const sql = yield* SqlClient.SqlClient
        yield* repo.replaceFileRecords([providerSpec("llama", { maxConnections: 4 }), providerSpec("hosted")], [])
        yield* sql`INSERT INTO providers (id, source, endpoint, provider_type, models, priority, timeouts, updated_at)
          VALUES ('manual', 'api', 'http://127.0.0.1:9/v1', 'openai_compat', NULL, 100, '{"connectMs":5000,"firstByteMs":60000,"totalMs":600000}', 0)`
        const stored = yield* repo.listProviders
        expect(stored.map((p) => [p.id, p.maxConnections])).toEqual([["hosted", 256], ["llama", 4], ["manual", 256]])
      }))

    it.effect("reads a row edited by hand to no count of connections (0, negative, fractional) as 256", () =>
      Effect.gen(function* () {
        const repo = yield* ConfigRepo
        const sql = yield* SqlClient.SqlClient
        for (const [id, value] of [["zero", 0], ["negative", -3], ["half", 2.5]] as const) {
          yield* sql`INSERT INTO providers (id, source, endpoint, provider_type, models, priority, timeouts, updated_at, max_connections)
            VALUES (${id}, 'api', 'http://127.0.0.1:9/v1', 'openai_compat', NULL, 100, '{"connectMs":5000,"firstByteMs":60000,"totalMs":600000}', 0, ${value})`
        }
        const stored = yield* repo.listProviders
        expect(stored.filter((p) => ["zero", "negative", "half"].includes(p.id)).map((p) => p.maxConnections)).toEqual([256, 256, 256])
      }))
  })
})
