import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

/**
 * Per-provider connection caps (`max_connections`). Rows written before have none: they read as the
 * default.
 */
export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE providers ADD COLUMN max_connections INTEGER`
})
