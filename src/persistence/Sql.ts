/**
 * The SQLite database: one file, migrated at start-up. `@effect/sql-sqlite-node` keeps one
 * connection behind a semaphore, so nothing here holds a transaction across an upstream call.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { SqlClient } from "@effect/sql"
import { SqliteClient, SqliteMigrator } from "@effect/sql-sqlite-node"
import { Cause, Effect, Layer } from "effect"
import { mkdirSync } from "node:fs"
import { dirname } from "node:path"
import { StartupError } from "../config/Settings.js"
import init from "./migrations/0001_init.js"
import hedging from "./migrations/0002_hedging.js"
import capabilities from "./migrations/0003_capabilities.js"
import routing from "./migrations/0004_routing.js"
import maxConnections from "./migrations/0005_max_connections.js"

/** Keys must match `^\d+_.+$`: the migrator silently skips any other. */
export const migrations = {
  "0001_init": init,
  "0002_hedging": hedging,
  "0003_capabilities": capabilities,
  "0004_routing": routing,
  "0005_max_connections": maxConnections
} as const

/** A migrated database at `filename` (`:memory:` works for tests); the parent directory is created. */
export const layer = (filename: string) =>
  Layer.effectDiscard(Effect.flatMap(SqlClient.SqlClient, (sql) => sql`PRAGMA synchronous = NORMAL`)).pipe(
    // WAL with synchronous=NORMAL: durable across process crashes, without an fsync per commit.
    Layer.provideMerge(SqliteMigrator.layer({ loader: SqliteMigrator.fromRecord(migrations) }).pipe(
    Layer.provide(NodeContext.layer))),
    Layer.provideMerge(Layer.unwrapEffect(Effect.try({
      try: () => {
        if (filename !== ":memory:") mkdirSync(dirname(filename), { recursive: true })
        return SqliteClient.layer({ filename })
      },
      catch: (e) => new StartupError({ message: `Cannot create the database directory for ${filename}: ${(e as Error).message}` })
    }))),
    // The driver throws while the layer is built (a file that is not a database, a directory, no
    // permission): a defect, not a failure, so causes of both kinds become the one start-up error.
    Layer.catchAllCause((cause) => {
      const e = Cause.squash(cause)
      return Layer.fail(
        e instanceof StartupError ? e : new StartupError({ message: `Cannot open or migrate the database ${filename}: ${messageOf(e)}` })
      )
    })
  )

const messageOf = (e: unknown): string => {
  const m = e instanceof Error ? e.message : String(e)
  // The migrator wraps what the driver said; its own words are the useful part.
  return (e as { cause?: unknown })?.cause instanceof Error ? `${m} (${(e as { cause: Error }).cause.message})` : m
}
