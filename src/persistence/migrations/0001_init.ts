import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

/**
 * Providers and aliases (file- or API-sourced) and the request records. Provider API keys are not
 * stored: file providers take theirs from the file on every start, and only a fingerprint is kept
 * so an operator can tell which key is in use.
 */
export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE providers (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL CHECK (source IN ('file', 'api')),
    endpoint TEXT NOT NULL,
    provider_type TEXT NOT NULL,
    models TEXT,
    priority INTEGER NOT NULL,
    supports_tools INTEGER,
    supports_streaming INTEGER,
    supports_multimodal INTEGER,
    timeouts TEXT NOT NULL,
    api_key_fingerprint TEXT,
    updated_at INTEGER NOT NULL
  )`
  yield* sql`CREATE TABLE aliases (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL CHECK (source IN ('file', 'api')),
    targets TEXT NOT NULL,
    updated_at INTEGER NOT NULL
  )`
  yield* sql`CREATE TABLE requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    stream INTEGER NOT NULL,
    provider TEXT,
    upstream_model TEXT,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    attempts TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error TEXT
  )`
  // Only a time index: an index on random request ids made inserts ten times slower on a table
  // of a million rows. Look-ups by request id scan a time window instead.
  yield* sql`CREATE INDEX requests_created_at ON requests (created_at)`
})
