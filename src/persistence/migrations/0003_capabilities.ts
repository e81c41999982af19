import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

/** Per-model capabilities and prices, weights for the weighted strategy, and alias strategies. */
export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE providers ADD COLUMN weight REAL`
  yield* sql`ALTER TABLE providers ADD COLUMN model_overrides TEXT`
  yield* sql`ALTER TABLE aliases ADD COLUMN strategy TEXT`
})
