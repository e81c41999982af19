/**
 * The record of every routed request: which candidates were tried, with what outcome, and which
 * served. Writes are queued and flushed in batches by a background fiber, so bookkeeping never
 * sits on the response path; a full queue drops records rather than growing without bound.
 */
import { SqlClient } from "@effect/sql"
import { Chunk, Clock, Context, Effect, Layer, Queue, Schedule, Schema } from "effect"
import type { Attempt } from "../domain/Errors.js"
import { type Decision, decisionText } from "../policy/Rank.js"

export interface RequestRecord {
  readonly requestId: string
  readonly createdAt: number
  readonly endpoint: "chat" | "embeddings"
  readonly model: string
  readonly stream: boolean
  readonly provider: string | null
  readonly upstreamModel: string | null
  readonly status: number
  /** `ok`, or the error class the request ended in. */
  readonly outcome: string
  readonly attempts: ReadonlyArray<Attempt>
  readonly durationMs: number
  /**
   * The end of a non-streaming answer's body (see `bodyTail`), where its `usage` is; it is decoded
   * when the record is written, off the response path.
   */
  readonly body?: Uint8Array | undefined
  readonly usage?: { readonly prompt_tokens?: number; readonly completion_tokens?: number } | undefined
  readonly error?: string | undefined
  /** How the candidates were ranked and why others were dropped; written as JSON off the request path. */
  readonly decision?: Decision | undefined
}

export interface RequestLogService {
  /**
   * Queues a record and returns at once; the database write happens later, in a batch. A plain
   * function rather than an Effect because it is called on every request's hot path, where each
   * Effect step counts, and it can neither fail nor wait.
   */
  readonly record: (entry: RequestRecord) => void
  /** The most recent records, newest first (flushes the queue first). */
  readonly recent: (limit: number) => Effect.Effect<ReadonlyArray<StoredRequest>>
}

export class RequestLog extends Context.Tag("sanctum/RequestLog")<RequestLog, RequestLogService>() {}

const StoredRequest = Schema.Struct({
  request_id: Schema.String,
  created_at: Schema.Number,
  endpoint: Schema.String,
  model: Schema.String,
  stream: Schema.Number,
  provider: Schema.NullOr(Schema.String),
  upstream_model: Schema.NullOr(Schema.String),
  status: Schema.Number,
  outcome: Schema.String,
  attempts: Schema.parseJson(Schema.Array(Schema.Unknown)),
  duration_ms: Schema.Number,
  prompt_tokens: Schema.NullOr(Schema.Number),
  completion_tokens: Schema.NullOr(Schema.Number),
  error: Schema.NullOr(Schema.String),
  decision: Schema.NullOr(Schema.parseJson(Schema.Unknown))
})
export type StoredRequest = typeof StoredRequest.Type

/**
 * The last KiB of an answer, copied: enough for its `usage`, and small to hold until the batch is
 * written (a slice would keep the whole body, or the socket buffer under it, alive that long).
 */
export const bodyTail = (body: Uint8Array): Uint8Array =>
  Buffer.from(body.subarray(Math.max(0, body.byteLength - 1024)))

/** Lets pending I/O callbacks (requests) run before continuing. */
const yieldToIo = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

const usageKey = Buffer.from('"usage"')

/**
 * The `usage` object of an answer body. OpenAI-compatible servers put it last and flat, so only
 * that slice is decoded rather than the whole body.
 */
export const usageOf = (entry: RequestRecord): RequestRecord["usage"] => {
  if (entry.usage !== undefined) return entry.usage
  const body = entry.body
  if (body === undefined) return undefined
  const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
  const at = bytes.lastIndexOf(usageKey)
  if (at === -1) return undefined
  const open = bytes.indexOf(0x7b, at) // {
  const close = open === -1 ? -1 : bytes.indexOf(0x7d, open) // }
  if (close === -1) return undefined
  try {
    const usage = JSON.parse(bytes.toString("utf8", open, close + 1))
    return typeof usage === "object" && usage !== null ? usage : undefined
  } catch {
    return undefined
  }
}

const toRow = (e: RequestRecord) => {
  const usage = usageOf(e)
  return {
    request_id: e.requestId,
    created_at: e.createdAt,
    endpoint: e.endpoint,
    model: e.model,
    stream: e.stream ? 1 : 0,
    provider: e.provider,
    upstream_model: e.upstreamModel,
    status: e.status,
    outcome: e.outcome,
    attempts: JSON.stringify(e.attempts),
    duration_ms: Math.round(e.durationMs),
    prompt_tokens: typeof usage?.prompt_tokens === "number" ? usage.prompt_tokens : null,
    completion_tokens: typeof usage?.completion_tokens === "number" ? usage.completion_tokens : null,
    error: e.error ?? null,
    decision: e.decision === undefined ? null : decisionText(e.decision)
  }
}

/** How many days records are kept by default; about 550 bytes each, so a busy router's file stays bounded. */
export const defaultRetentionDays = 30

export interface RequestLogOptions {
  /** Records older than this many days are deleted, at start and every hour; 0 keeps them all. */
  readonly retentionDays: number
}

/** Rows deleted per statement when old records go: under a millisecond of SQLite's time each (measured). */
const purgeSlice = 500

/** The SQLite-backed log, keeping records for `options.retentionDays`. */
export const layerWith = (options: RequestLogOptions) => Layer.scoped(
  RequestLog,
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const queue = yield* Queue.dropping<RequestRecord>(10_000)
    const decode = Schema.decodeUnknown(Schema.Array(StoredRequest))

    // Multi-row inserts in slices of a fixed size: SQLite's statement cache then holds a handful
    // of prepared statements, and per-row cost is mostly SQLite's own (~3 µs measured here). Each
    // slice is its own short transaction followed by a turn of the event loop, so a large batch
    // never holds requests up for more than a fraction of a millisecond.
    const write = (batch: ReadonlyArray<RequestRecord>) =>
      batch.length === 0 ? Effect.void : Effect.forEach(
        Array.from({ length: Math.ceil(batch.length / 50) }, (_, i) => batch.slice(i * 50, i * 50 + 50)),
        (slice) => Effect.zipRight(sql`INSERT INTO requests ${sql.insert(slice.map(toRow))}`, yieldToIo),
        { discard: true }
      ).pipe(Effect.catchAllCause((cause) => Effect.logWarning("could not write request records", cause)))

    // Records taken off the queue but not yet written. Writes happen under one lock and take what is
    // in hand, so `recent` (which flushes first) sees every record queued before it was called.
    let inHand: Array<RequestRecord> = []
    const lock = yield* Effect.makeSemaphore(1)
    const writeInHand = lock.withPermits(1)(Effect.suspend(() => {
      const batch = inHand
      inHand = []
      return write(batch)
    }))
    const take = (c: Chunk.Chunk<RequestRecord>) => {
      for (const r of c) inHand.push(r)
      return writeInHand
    }
    const flush = Effect.flatMap(Queue.takeAll(queue), take)

    // Batches: one insert per quarter second at most, so a busy router does not pay a SQLite
    // transaction per request on its event loop. The writer waits on a latch rather than taking
    // from the queue: a record is then always in the queue or in hand, never held by a sleeping
    // fiber, so `recent` finds every record queued before it was called.
    const waiting = yield* Effect.makeLatch(false)
    yield* Effect.forkScoped(Effect.forever(
      waiting.await.pipe(
        Effect.zipRight(waiting.close),
        Effect.zipRight(Effect.sleep("250 millis")),
        Effect.zipRight(flush)
      )
    ))
    // Records still queued when the daemon stops are written before the database closes.
    yield* Effect.addFinalizer(() => flush)

    // Retention: without it the table grows by every request for as long as the daemon runs. Old
    // rows go in slices with a turn of the event loop between them, so even a large backlog (the
    // first start with a shorter retention) never holds requests up for long.
    if (options.retentionDays > 0) {
      const purgeBefore = (cutoff: number): Effect.Effect<void, unknown> =>
        Effect.flatMap(
          sql`DELETE FROM requests WHERE seq IN (SELECT seq FROM requests WHERE created_at < ${cutoff} LIMIT ${purgeSlice}) RETURNING seq`,
          (deleted) => (deleted.length < purgeSlice ? Effect.void : Effect.zipRight(yieldToIo, purgeBefore(cutoff)))
        )
      const purge = Effect.flatMap(Clock.currentTimeMillis, (now) => purgeBefore(now - options.retentionDays * 86_400_000)).pipe(
        Effect.catchAllCause((cause) => Effect.logWarning("could not delete old request records", cause))
      )
      yield* Effect.forkScoped(Effect.repeat(purge, Schedule.spaced("1 hour")))
    }

    return RequestLog.of({
      record: (entry) => {
        queue.unsafeOffer(entry)
        waiting.unsafeOpen()
      },
      recent: (limit) =>
        flush.pipe(
          Effect.zipRight(sql`SELECT * FROM requests ORDER BY seq DESC LIMIT ${limit}`),
          Effect.flatMap(decode),
          Effect.orDie
        )
    })
  })
)

/** The SQLite-backed log, keeping records for `defaultRetentionDays`. */
export const layer = layerWith({ retentionDays: defaultRetentionDays })
