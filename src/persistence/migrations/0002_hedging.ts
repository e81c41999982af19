import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

/** Hedging: start the next candidate when one is slow to its first byte, per provider or alias. */
export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE providers ADD COLUMN hedge_after_ms INTEGER`
  yield* sql`ALTER TABLE aliases ADD COLUMN hedge_after_ms INTEGER`
})
