import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

/**
 * The routing config (one row, JSON in the admin API's wire form), session pins set through
 * `/admin/override`, and the routing decision kept with each request's record.
 */
export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE routing_config (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    body TEXT NOT NULL,
    source TEXT NOT NULL,
    updated_at INTEGER NOT NULL
  )`
  yield* sql`CREATE TABLE session_overrides (
    session_key TEXT PRIMARY KEY,
    provider_id TEXT NOT NULL,
    created_at INTEGER NOT NULL
  )`
  yield* sql`ALTER TABLE requests ADD COLUMN decision TEXT`
})
