/**
 * The per-request workflow: resolve the model, rank the candidates, try them in order until one
 * answers, and record what happened. One typed Effect pipeline per request, kept lean (few Effect
 * steps, no per-request spans or logs) because it is the router's hot path.
 */
import { Cause, Context, Effect, Either, Exit, Fiber, FiberId, HashSet, Layer, Option, Random } from "effect"
import { randomUUID } from "node:crypto"
import * as ResilienceModule from "../config/Resilience.js"
import { Resilience } from "../config/Resilience.js"
import * as HealthModule from "../health/Health.js"
import { Health, type Verdict } from "../health/Health.js"
import {
  AllCandidatesFailed,
  type Attempt,
  InvalidRequest,
  ModelNotFound,
  NoCandidates,
  quotable,
  RequestTimedOut,
  StreamInterrupted,
  UpstreamRejected,
  UpstreamTransportError
} from "../domain/Errors.js"
import { type ChatCompletionRequest, type EmbeddingRequest, embeddingsAsBase64, isRecord, isTooDeep, nestedTooDeeply, orTooDeep } from "../domain/OpenAi.js"
import { bodyWithoutKey, type Candidate, inBaseOrder, pinnedId, type ProviderSpec, withoutKey } from "../domain/Provider.js"
import * as RawJson from "../domain/RawJson.js"
import { bodyTail, RequestLog, type RequestLogService, type RequestRecord } from "../persistence/RequestLog.js"
import * as Policy from "../policy/Policy.js"
import { modelsOf, prefsOf } from "../policy/Preferences.js"
import { type Decision, type Needs, needsOfChat, needsOfEmbeddings, summary, windowNeed } from "../policy/Rank.js"
import { Providers, type Resolution } from "../providers/Providers.js"
import { AbortSwitch, type ChunkWriter, Upstream, type UpstreamComplete, type UpstreamResponse } from "../providers/Upstream.js"
import {
  actionOfStatus,
  type Classified,
  classifyRefusal,
  classifyTransport,
  errorInBody,
  inBandError,
  looksLikeJsonObject,
  parseRetryAfter,
  statusOfErrorObject
} from "./Classify.js"
import { dataOf, framed, HeldStart, jsonOrNull, lastEventEnd, maxHeldBack, maxHeldEvent, normalizeLines, scanEvents } from "./Sse.js"
import { type Deadlines, deadlines, type Expiry, scheduler } from "./Timer.js"

/**
 * Who interrupts the requests still open when shutdown has waited out its drain time: a request
 * interrupted by it was cut by the router, not left by its client, and is recorded so.
 */
export const shutdownInterruptor = FiberId.make(-1, 0)

/** The recorded outcome of a request interrupted by `by`: cut by shutdown, or left by its client. */
const interruptedOutcome = (by: HashSet.HashSet<FiberId.FiberId>): "shutdown" | "client_closed" =>
  HashSet.has(by, shutdownInterruptor) ? "shutdown" : "client_closed"

export interface ChatInput {
  readonly request: ChatCompletionRequest
  /** The JSON body exactly as received: forwarded byte for byte when the model name need not change. */
  readonly raw?: Uint8Array | undefined
  /**
   * The request's id, for its record, the upstream's `x-request-id` and the `weighted` spread; one
   * is made when none is given, as the HTTP edge makes one for a client that sent none.
   */
  readonly requestId?: string | undefined
  /** Lowers the request's end-to-end deadline (`x-router-timeout-ms`); it never raises it. */
  readonly timeoutMs?: number | undefined
  /**
   * Whose request this is: the HTTP edge's `sessionKeyOf`, or any string a library caller chooses.
   * For session pins and the `weighted` strategy, which without a session hashes the body's `user`,
   * else `requestId` (a caller key's hash, `key:…`, is not a session there).
   */
  readonly sessionKey?: string | null | undefined
}

export interface EmbeddingsInput {
  readonly request: EmbeddingRequest
  readonly raw?: Uint8Array | undefined
  /** As `ChatInput.requestId`. */
  readonly requestId?: string | undefined
  readonly timeoutMs?: number | undefined
  readonly sessionKey?: string | null | undefined
}

interface ReplyInfo {
  /** The provider that served, and the model it was asked for. */
  readonly provider: string
  readonly upstreamModel: string
  /** Every attempt in order, the serving one last. */
  readonly attempts: ReadonlyArray<Attempt>
  readonly status: number
  readonly contentType: string
  /** How the candidates were ranked (set on every reply the workflow returns). */
  readonly decision?: Decision | undefined
}

/** A complete answer, as the upstream sent it. */
export interface JsonReply extends ReplyInfo {
  readonly _tag: "Json"
  readonly body: Uint8Array
}

/**
 * A streamed answer whose first bytes have arrived. `pipe` writes it (first bytes included) as it
 * comes, and fails with `StreamInterrupted` if the upstream dies after the answer has begun.
 */
export interface StreamReply extends ReplyInfo {
  readonly _tag: "Stream"
  /**
   * The provider's idle limit: as long as a client may leave the end of the answer unread before
   * the edge cuts its connection (it would otherwise hold the connection and its buffers forever).
   */
  readonly idleMs: number
  readonly pipe: (writer: ChunkWriter) => Effect.Effect<void, StreamInterrupted>
  /** Drops the answer unread (aborting the upstream call). */
  readonly discard: Effect.Effect<void>
}

export type Reply = JsonReply | StreamReply

export type ChatError = InvalidRequest | ModelNotFound | NoCandidates | AllCandidatesFailed | RequestTimedOut | UpstreamRejected

export interface RouterService {
  readonly chat: (input: ChatInput) => Effect.Effect<Reply, ChatError>
  readonly embeddings: (input: EmbeddingsInput) => Effect.Effect<JsonReply, ChatError>
  /**
   * The decision a chat or embeddings request would get now (needs, ranked candidates with their
   * scores, dropped ones with reasons), without calling any upstream or changing any state.
   */
  readonly explain: (
    request: { readonly endpoint: "chat"; readonly request: ChatCompletionRequest } | { readonly endpoint: "embeddings"; readonly request: EmbeddingRequest },
    sessionKey?: string | null
  ) => Effect.Effect<Explanation, InvalidRequest | ModelNotFound>
}

export class Router extends Context.Tag("sanctum/Router")<Router, RouterService>() {}

/**
 * A reply's body as text: the JSON answer, or every SSE event of a stream (read to its end). For
 * library callers; the HTTP edge writes replies as they come instead.
 */
export const text = (reply: Reply): Effect.Effect<string, StreamInterrupted> => {
  if (reply._tag === "Json") return Effect.succeed(Buffer.from(reply.body).toString("utf8"))
  const chunks: Array<Buffer> = []
  return Effect.as(
    reply.pipe({ write: (c) => chunks.push(Buffer.from(c)) > 0, onDrain: () => {} }),
    chunks
  ).pipe(Effect.map((cs) => Buffer.concat(cs).toString("utf8")))
}

/** The JSON answer of a non-streaming reply, parsed. */
export const json = (reply: JsonReply): unknown => JSON.parse(Buffer.from(reply.body).toString("utf8"))

/** What is decided about a request before any upstream is called. */
interface Plan {
  readonly resolution: Resolution
  readonly decision: Decision
  /** The body carries OpenRouter's routing fields, which must not go upstream. */
  readonly strip: boolean
}

/** What `explain` tells about a request, without calling anyone. */
export interface Explanation {
  readonly endpoint: "chat" | "embeddings"
  readonly model: string
  readonly needs: Needs
  readonly decision: Decision
}

type Outcome =
  | { readonly _tag: "Served"; readonly reply: Reply }
  | { readonly _tag: "Rejected"; readonly status: number; readonly body: Uint8Array; readonly attempt: Attempt }
  | { readonly _tag: "Failed"; readonly attempt: Attempt; readonly classified: Classified }
  /** Not tried: its circuit is open, it is rate limited or out of credits. */
  | { readonly _tag: "Skipped"; readonly attempt: Attempt }

/** An answer's content type; of two (a misconfigured proxy adding its own), the last, as browsers read it. */
const contentTypeOf = (r: { readonly headers: UpstreamResponse["headers"] }): string => {
  const ct = r.headers["content-type"]
  return typeof ct === "string" ? ct : Array.isArray(ct) && ct.length > 0 ? ct[ct.length - 1]! : "application/json"
}

/**
 * An answer's content coding other than identity, or null. The router asks for none
 * (`accept-encoding: identity`); a proxy that compresses anyway sends bytes it cannot read, and the
 * attempt says so rather than "not a JSON object" or "ended before any content".
 */
const encodingOf = (r: { readonly headers: UpstreamResponse["headers"] }): string | null => {
  const e = r.headers["content-encoding"]
  const v = typeof e === "string" ? e.trim().toLowerCase() : Array.isArray(e) ? e.join(", ").toLowerCase() : ""
  return v === "" || v === "identity" ? null : v
}

const encodedDetail = (status: number, encoding: string) => `HTTP ${status} encoded as ${encoding}, though the router asked for no encoding`

/** A stream that failed after its commit point: as transient, for the provider's health. */
const interrupted: Classified = { class: "transient", outcome: "stream_interrupted" }
const doneEvent = new Uint8Array(Buffer.from("data: [DONE]\n\n"))
const blankLines = new Uint8Array(Buffer.from("\n\n"))
/** Whether bytes end on an event's closing blank line. */
const endsEvent = (bytes: Uint8Array) => lastEventEnd(bytes) === bytes.byteLength

/**
 * Whether a delta says anything beyond its role. Any field counts, not a list of known ones:
 * backends stream `content`, `reasoning` (OpenRouter, Ollama, vLLM), `reasoning_content`,
 * `tool_calls`, `function_call`, `audio`, `refusal`, images and whatever comes next, and holding
 * one back would delay (and past the limit, discard) an answer that is under way. Empty values
 * (`""`, `null`, `[]`, `{}`) are what a role-only preamble carries.
 */
export const carries = (delta: unknown): boolean => {
  if (typeof delta !== "object" || delta === null) return false
  for (const key in delta) {
    if (key === "role") continue
    const v = (delta as Record<string, unknown>)[key]
    if (v === null || v === undefined || v === "") continue
    if (typeof v === "object" && (Array.isArray(v) ? v.length === 0 : isEmptyObject(v))) continue
    return true
  }
  return false
}

const isEmptyObject = (o: object): boolean => {
  for (const _ in o) return false
  return true
}

/**
 * Reads the complete events at the start of a stream: `commit` once a delta carries anything but
 * its role (see `carries`), or an event has a finish, is `[DONE]`, or is not a chat chunk at all;
 * `wait` while there are only role-only preambles, empty deltas, usage-only chunks or comments; or
 * the error an event carries (as a status and an error body), which then counts as that HTTP error.
 */
export const preamble = (buf: Uint8Array): "commit" | "wait" | { readonly status: number; readonly body: Uint8Array } => {
  const end = lastEventEnd(buf)
  if (end === -1) return "wait"
  const text = Buffer.from(buf.buffer, buf.byteOffset, end).toString("utf8")
  for (const event of normalizeLines(text).split("\n\n")) {
    const data = dataOf(event)
    if (data === "") continue
    if (data.trim() === "[DONE]") return "commit"
    let parsed: unknown
    try {
      parsed = JSON.parse(data)
    } catch {
      return "commit"
    }
    const error = inBandError(parsed)
    if (error !== undefined) {
      // One nested deeper than `JSON.stringify` goes is described instead.
      const body = jsonOrNull({ error }) ?? JSON.stringify({ error: { message: "an error event nested too deeply to quote" } })
      return { status: statusOfErrorObject(error), body: new Uint8Array(Buffer.from(body)) }
    }
    // An event of a shape this router does not know (`null`, a number, an object without
    // choices) is passed on, not held.
    if (!isRecord(parsed) || !Array.isArray(parsed.choices)) return "commit"
    for (const choice of parsed.choices as ReadonlyArray<unknown>) {
      if (!isRecord(choice)) return "commit"
      if (choice.finish_reason !== undefined && choice.finish_reason !== null) return "commit"
      if (carries(choice.delta)) return "commit"
    }
  }
  return "wait"
}

/**
 * A whole chat completion as the event stream a streaming client expects: one chunk whose delta is
 * each choice's message (tool calls numbered, as deltas are) with its finish reason, then the usage
 * chunk when it was asked for, then `[DONE]`. `null` when the body is not a chat completion.
 */
export const completionAsEvents = (body: Uint8Array, includeUsage: boolean): Uint8Array | null => {
  let parsed: unknown
  try {
    parsed = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("utf8"))
  } catch {
    return null
  }
  if (!isRecord(parsed) || !Array.isArray(parsed.choices)) return null
  const { choices, usage, object: _object, ...rest } = parsed
  const chunk = { ...rest, object: "chat.completion.chunk" }
  const deltas = choices.map((choice: unknown, i) => {
    const c = isRecord(choice) ? choice : {}
    const message = isRecord(c.message) ? c.message : {}
    const delta = Array.isArray(message.tool_calls)
      ? { ...message, tool_calls: message.tool_calls.map((call: unknown, index) => (isRecord(call) ? { index, ...call } : call)) }
      : message
    return { index: typeof c.index === "number" ? c.index : i, delta, logprobs: c.logprobs ?? null, finish_reason: c.finish_reason ?? null }
  })
  let out: string
  try {
    out = `data: ${JSON.stringify({ ...chunk, choices: deltas })}\n\n`
    if (includeUsage && isRecord(usage)) out += `data: ${JSON.stringify({ ...chunk, choices: [], usage })}\n\n`
  } catch {
    // Nested deeper than `JSON.stringify` can go: the answer goes as it came.
    return null
  }
  return new Uint8Array(Buffer.from(`${out}data: [DONE]\n\n`))
}

/** An attempt's detail when a deadline cut it short. */
const expiryDetail = (which: Expiry, p: ProviderSpec): string => {
  const t = p.timeouts
  switch (which) {
    case "idle":
      return `no data for ${t.idleMs} ms (stalled)`
    case "first_byte":
      return `no first byte within ${t.firstByteMs} ms`
    case "total":
      return `no complete answer within ${t.totalMs} ms`
    case "queued":
      // Named, since the cap is what to raise when the provider could serve more at once.
      return `no free connection to the provider within ${t.firstByteMs} ms (max_connections ${p.maxConnections})`
    case "deadline":
      return `the request deadline passed`
  }
}

const statusDetail = (status: number, body: Uint8Array) => `HTTP ${status}${body.byteLength > 0 ? `: ${snippet(body)}` : ""}`

/** Quoted in error messages and headers: bytes that are not text are described, not shown. */
const snippet = (body: Uint8Array): string => quotable(body, 300).replace(/\s+/g, " ").trim()

/** OpenRouter's routing fields: read by the router, never sent upstream. */
const openRouterFields = ["provider", "models"] as const

/** The output limits a clamp lowers: whichever of the two the client set. */
const limitFieldsOf = (request: { readonly model: string }): ReadonlyArray<"max_completion_tokens" | "max_tokens"> => {
  const r = request as { readonly max_tokens?: unknown; readonly max_completion_tokens?: unknown }
  const fields: Array<"max_completion_tokens" | "max_tokens"> = []
  if (r.max_completion_tokens !== undefined && r.max_completion_tokens !== null) fields.push("max_completion_tokens")
  if (r.max_tokens !== undefined && r.max_tokens !== null) fields.push("max_tokens")
  return fields
}

/** Error bodies are classified on their first few KiB (enough for any provider's message). */
const none: ReadonlyArray<string> = []

const headText = (body: Uint8Array) => Buffer.from(body.buffer, body.byteOffset, Math.min(body.byteLength, 4096)).toString("utf8")

export const make = Effect.gen(function* () {
  const providers = yield* Providers
  const policy = yield* Policy.Policy
  const upstream = yield* Upstream
  const health = yield* Health
  const resilience = yield* Resilience
  const log: RequestLogService | null = Option.getOrNull(yield* Effect.serviceOption(RequestLog))
  const clock = yield* Effect.clock
  const schedule = scheduler(clock)
  const now = () => clock.unsafeCurrentTimeMillis()

  const record = (entry: RequestRecord): void => {
    if (log !== null) log.record(entry)
  }

  const attemptOf = (c: Candidate, outcome: string, detail: string, status: number | null, started: number, ended: number): Attempt => ({
    provider: c.provider.id,
    upstreamModel: c.upstreamModel,
    outcome,
    detail,
    status,
    durationMs: ended - started
  })

  /**
   * One candidate, up to the commit point: it answers, refuses the request, fails, or is skipped
   * (its health says not now). Its timeouts are timers that abort the call (see `Timer.ts`), cut
   * short by the request's deadline; a read that fails because a timer fired is reported as that
   * timeout. Every ending is reported to `Health`, a client that left as "abandoned".
   */
  const tryCandidate = (
    c: Candidate,
    path: string,
    body: string | Uint8Array,
    stream: boolean,
    /** Choices a streamed answer has (`n`): each must finish for it to be whole. */
    choices: number,
    requestId: string | undefined,
    attempts: ReadonlyArray<Attempt>,
    deadlineAt: number,
    decision: Decision,
    /** No other candidate follows: waiting for a connection is better than giving up. */
    last: boolean,
    /** Told when the first byte arrives (a hedge waits for nothing else). */
    firstByte?: () => void
  ): Effect.Effect<Outcome> =>
    Effect.suspend(() => {
      const started = now()
      const admission = health.admit(c, started)
      if (!admission.ok) {
        return Effect.succeed({ _tag: "Skipped", attempt: attemptOf(c, admission.outcome, admission.reason, null, started, started) })
      }
      const probe = admission.probe
      const t = c.provider.timeouts
      const controller = new AbortSwitch()
      // Which deadline cut the attempt short, if one did.
      let expiry: Expiry | null = null
      const expired = () => (expiry === null ? null : expiryDetail(expiry, c.provider))
      // When the request went out on a connection (it may first wait for one), and its first byte.
      let sentAt = started
      let firstByteAt = started
      // Set once the attempt's ending has been reported to Health.
      let settled = false
      const settle = (verdict: Verdict) => {
        if (settled) return
        settled = true
        health.report(c, verdict, probe, now())
      }
      const limits = {
        firstByteMs: t.firstByteMs,
        // Between the pieces of a stream, and of a whole answer's body from its headers on: a body
        // that stalls fails over at once (nothing of a whole answer has reached the client yet).
        idleMs: t.idleMs,
        totalMs: t.totalMs,
        // A request that waits first_byte for one of the provider's connections moves on, unless
        // nobody else could take it.
        queueMs: last ? Number.POSITIVE_INFINITY : t.firstByteMs,
        deadlineAt
      }
      const timer = deadlines(schedule, now, limits, (which) => {
        expiry = which
        controller.abort()
      })
      // However the call ends early (a timeout, a discard, an interrupted read), the timer goes;
      // and if nothing else settled it, the client left: that says nothing about the provider.
      controller.onAbort(() => {
        timer.cancel()
        if (expiry === null) settle({ _tag: "Abandoned" })
      })
      // Time spent waiting for a connection is not the provider's: its limits and latency count from
      // when the request goes out.
      const onWaiting = () => timer.waiting()
      const onSent = () => {
        sentAt = firstByteAt = now()
        timer.sent()
      }
      const onFirstByte = () => {
        firstByteAt = now()
        timer.firstByte()
        if (firstByte !== undefined) firstByte()
      }
      const attempt = (outcome: string, detail: string, status: number | null) => attemptOf(c, outcome, detail, status, started, now())
      const failed = (classified: Classified, detail: string, status: number | null): Outcome => {
        timer.cancel()
        // Cut short by the request's own deadline (perhaps a caller's x-router-timeout-ms), while it
        // still waited for a connection, by the router itself (shutting down), or never sent for
        // want of a file descriptor: none says anything about the provider's health.
        const ours = expiry === "deadline" || expiry === "queued" || classified.outcome === "aborted" || classified.outcome === "local_error"
        settle(ours ? { _tag: "Abandoned" } : { _tag: "Failed", classified, detail })
        return { _tag: "Failed", attempt: attempt(classified.outcome, detail, status), classified }
      }

      /** A whole response: an answer, a refusal of the request, or a failure. */
      const complete = (r: UpstreamComplete): Outcome => {
        let status = r.status
        let text: string | null = null
        if (status >= 200 && status < 300) {
          // A success must at least look like an answer: anything else fails over, never reaches the client.
          if (!looksLikeJsonObject(r.body)) {
            const encoded = encodingOf(r)
            return failed(
              { class: "transient", outcome: "bad_response" },
              encoded !== null
                ? encodedDetail(status, encoded)
                : `HTTP ${status} whose body is not a JSON object${r.body.byteLength > 0 ? `: ${snippet(bodyWithoutKey(r.body, c.provider.apiKey))}` : " (empty)"}`,
              status
            )
          }
          // A 200 whose body is an error object is that error, never a success.
          const inBand = errorInBody(r.body)
          if (inBand === null) {
            timer.cancel()
            const ended = now()
            settle({ _tag: "Ok", ttfbMs: firstByteAt - sentAt, totalMs: ended - sentAt })
            return {
              _tag: "Served",
              reply: {
                _tag: "Json",
                provider: c.provider.id,
                upstreamModel: c.upstreamModel,
                attempts: [...attempts, attemptOf(c, "ok", "ok", r.status, started, ended)],
                status: r.status,
                contentType: contentTypeOf(r),
                body: r.body,
                decision
              }
            }
          }
          status = inBand.status
          text = inBand.text
        }
        const classified = classifyRefusal(status, text ?? headText(r.body), parseRetryAfter(r.headers["retry-after"], now()))
        // Upstreams quote the key they refused: what goes on to the client, the records and the
        // health status has it blanked.
        const body = bodyWithoutKey(r.body, c.provider.apiKey)
        const detail = statusDetail(status, body)
        if (classified.class !== "client_error" && classified.class !== "context_too_long") return failed(classified, detail, status)
        timer.cancel()
        settle({ _tag: "Failed", classified, detail })
        return { _tag: "Rejected", status, body, attempt: attempt(classified.outcome, detail, status) }
      }

      const served = (r: UpstreamResponse): Effect.Effect<Outcome, UpstreamTransportError> => {
        if (actionOfStatus(r.status) !== "ok" || !contentTypeOf(r).includes("text/event-stream")) {
          // An error status, or a plain answer to a stream request: read whole, under first_byte
          // and total only. `body` tells of no pieces, so idle could not tell a slowly arriving
          // answer from a stalled one (a request that is not streamed is read by `request`, which
          // does, and is watched for idle).
          onFirstByte()
          timer.hold()
          return Effect.map(r.body, (bytes) => complete({ status: r.status, headers: r.headers, body: bytes }))
        }
        // The commit point: the first event whose delta carries anything but a role, or a finish. Until
        // then nothing reaches the client (a role-only preamble is held back), so a backend that
        // accepts the stream and then stalls, drops the connection or sends an error event can
        // still be skipped invisibly.
        // The attempt fails before its commit point: reported first, so the abort that ends the
        // upstream call is not taken for a client leaving.
        const giveUp = (outcome: string, detail: string) => {
          const failure = failed({ class: "transient", outcome }, detail, r.status)
          controller.abort()
          return Effect.succeed(failure)
        }
        const noContent = () => giveUp("bad_response", `stream sent ${maxHeldBack / 1024 / 1024} MiB without any content`)
        const encoded = encodingOf(r)
        if (encoded !== null) return giveUp("bad_response", encodedDetail(r.status, encoded))
        let sawEvent = false
        const held = new HeldStart()
        const commit = (): Effect.Effect<Outcome, UpstreamTransportError> =>
          Effect.flatMap(r.next, (chunk): Effect.Effect<Outcome, UpstreamTransportError> => {
            if (chunk === null) return giveUp("empty_stream", "stream ended before any content")
            const events = held.add(chunk)
            // For a stream the first byte is its first whole event; silence after it is `idle`.
            if (!sawEvent && events !== null) {
              sawEvent = true
              onFirstByte()
            } else timer.touch()
            if (events === null) {
              // One event still arriving may be large (an image, a whole answer in one event): it is
              // held, up to a bound of its own (a few such streams at once must not take the
              // memory whole answers may). Bytes that begin like no event are not a stream at all.
              const arriving = held.size - held.judged
              if (arriving <= maxHeldBack) return commit()
              if (!held.arrivingLooksLikeEvent()) return noContent()
              if (arriving <= maxHeldEvent) return commit()
              return giveUp("protocol_error", `stream event larger than ${maxHeldEvent / 1024 / 1024} MiB before any content`)
            }
            const verdict = preamble(events)
            if (verdict === "wait") {
              // Held back only so far: a start that never commits is a broken stream, not one to
              // buffer without end.
              return held.judged <= maxHeldBack ? commit() : noContent()
            }
            if (verdict !== "commit") {
              // Settled as that error first, so the abort is not taken for a client leaving.
              const outcome = complete({ status: verdict.status, headers: r.headers, body: verdict.body })
              controller.abort()
              return Effect.succeed(outcome)
            }
            const ok = attempt("ok", "ok", r.status)
            return Effect.succeed({
              _tag: "Served",
              reply: streamReply(c, r, held.bytes(), choices, [...attempts, ok], decision, controller, expired, timer, (verdict) => {
                if (verdict._tag === "Ok") settle({ _tag: "Ok", ttfbMs: firstByteAt - sentAt, totalMs: now() - sentAt })
                else settle(verdict)
              })
            })
          })
        return commit()
      }

      const transportFailed = (e: UpstreamTransportError): Outcome =>
        expiry !== null
          ? failed(
            expiry === "idle"
              ? { class: "stalled", outcome: "stalled" }
              : { class: "transient", outcome: expiry === "queued" ? "busy" : "timeout" },
            expiryDetail(expiry, c.provider),
            null
          )
          : failed(classifyTransport(e), e.detail, null)

      if (!stream) {
        // Not streamed: one upstream step from request to complete answer. Interrupting it throws
        // the switch (aborting the call and its timer), and nothing follows it that could leak.
        // Each piece of the body restarts the idle deadline.
        return upstream.request({ provider: c.provider, method: "POST", path, body, stream, requestId, abort: controller, onRequestWaiting: onWaiting, onRequestSent: onSent, onResponseStart: onFirstByte, onResponseData: timer.touch }).pipe(
          Effect.match({ onFailure: transportFailed, onSuccess: complete })
        )
      }
      return upstream.send({ provider: c.provider, method: "POST", path, body, stream, requestId, abort: controller, onRequestWaiting: onWaiting, onRequestSent: onSent }).pipe(
        Effect.flatMap(served),
        Effect.catchAll((e) => Effect.succeed(transportFailed(e))),
        Effect.onInterrupt(() => Effect.sync(() => controller.abort()))
      )
    })

  const streamReply = (
    c: Candidate,
    r: UpstreamResponse,
    first: Uint8Array,
    choices: number,
    attempts: ReadonlyArray<Attempt>,
    decision: Decision,
    controller: AbortSwitch,
    expired: () => string | null,
    timer: Deadlines,
    settle: (verdict: Verdict) => void
  ): StreamReply => ({
    _tag: "Stream",
    idleMs: c.provider.timeouts.idleMs,
    provider: c.provider.id,
    upstreamModel: c.upstreamModel,
    attempts,
    status: r.status,
    contentType: contentTypeOf(r),
    decision,
    discard: Effect.sync(() => controller.abort()),
    pipe: (writer) =>
      Effect.suspend(() => {
        // How the answer ends, read from the events as they pass: whole (`[DONE]`, or every choice
        // finished), or cut by an upstream's error event, whose message becomes the interruption's.
        // Nothing after the end (`[DONE]`, an error event) is passed on.
        let finishes = 0
        let done = false
        let over = false
        let cut: string | null = null
        const finished = () => done || finishes >= choices
        const client: ChunkWriter = {
          write: (chunk) => {
            if (over) return true
            const seen = scanEvents(chunk)
            if (seen === null) return writer.write(chunk)
            finishes += seen.finishes
            if (seen.error !== null) {
              over = true
              // Reported first, so the abort is not taken for a client leaving. An error after a
              // finished answer takes nothing from it.
              if (finished()) settle({ _tag: "Ok", ttfbMs: 0, totalMs: 0 })
              else {
                cut = `error event: ${withoutKey(seen.error.message, c.provider.apiKey)}`
                settle({ _tag: "Failed", classified: interrupted, detail: cut })
              }
              controller.abort()
              return seen.error.at > 0 ? writer.write(chunk.subarray(0, seen.error.at)) : true
            }
            if (seen.doneEnd === -1) return writer.write(chunk)
            done = over = true
            return writer.write(seen.doneEnd === chunk.byteLength ? chunk : chunk.subarray(0, seen.doneEnd))
          },
          onDrain: writer.onDrain
        }
        const events = framed(client)
        events.write(first)
        // Each chunk restarts the idle deadline: a stream that goes silent mid-answer is cut. While
        // the client is behind, the upstream is paused and its silence is not counted against it.
        const watched: ChunkWriter = {
          write: (chunk) => {
            timer.touch()
            const more = events.write(chunk)
            if (!more) timer.hold()
            return more
          },
          onDrain: (resume) =>
            events.onDrain(() => {
              timer.release()
              resume()
            })
        }
        const cutShort = (detail: string) => Effect.fail(new UpstreamTransportError({ provider: c.provider.id, reason: "protocol", detail }))
        // A whole answer ends with `[DONE]` for the client, whether or not the upstream sent one.
        const whole = Effect.sync(() => {
          if (!done) writer.write(doneEvent)
        })
        return Effect.matchEffect(r.pipe(watched), {
          // A connection lost once the answer is whole loses nothing.
          onFailure: (e) => (cut !== null ? cutShort(cut) : finished() ? whole : Effect.fail(e)),
          onSuccess: () => {
            // An event without its closing blank line is passed on if it ends the answer (or says
            // why not); a part of an answer that stops short of its end is not.
            const tail = events.pending()
            if (tail !== null) {
              const seen = scanEvents(tail)
              if (finished() || seen !== null) {
                events.flush()
                if (!endsEvent(tail)) writer.write(blankLines)
              }
            }
            if (cut !== null) return cutShort(cut)
            return finished() ? whole : cutShort("stream ended before the answer finished (no finish_reason or [DONE])")
          }
        })
      }).pipe(
        Effect.mapError((e) => new StreamInterrupted({ provider: c.provider.id, detail: expired() ?? e.detail })),
        Effect.onExit((exit) =>
          Effect.sync(() => {
            timer.cancel()
            if (exit._tag === "Success") settle({ _tag: "Ok", ttfbMs: 0, totalMs: 0 })
            else if (Cause.isInterruptedOnly(exit.cause)) settle({ _tag: "Abandoned" })
            else {
              const detail = Option.getOrElse(Option.map(Cause.failureOption(exit.cause), (e) => e.detail), () => "stream failed")
              settle({ _tag: "Failed", classified: interrupted, detail })
            }
            if (exit._tag === "Failure") controller.abort()
          })
        )
      )
  })

  /**
   * OpenRouter's `models: [...]`: the request's model, then each listed one, as one ordered chain
   * (like an alias). Ids that resolve to nothing are noted; only when none resolves is it a 404.
   */
  const withFallbacks = (
    model: string,
    fields: { readonly models?: unknown }
  ): { readonly resolution: Resolution; readonly notes: ReadonlyArray<string> } | Resolution | ModelNotFound | InvalidRequest => {
    const models = modelsOf(fields)
    if (models instanceof InvalidRequest) return models
    const ids = [...new Set([model, ...(models ?? [])])]
    // No fallback beyond the model itself (`models: []`): the request as without the field, so an
    // alias keeps its own strategy.
    if (ids.length === 1) return providers.resolve(model)
    const notes: Array<string> = []
    const chain: Array<Candidate> = []
    const seen = new Set<string>()
    let first: Resolution | null = null
    for (const id of ids) {
      const r = providers.resolve(id)
      if (r instanceof ModelNotFound) {
        notes.push(`models: '${id}' not found`)
        continue
      }
      first ??= r
      // A bare id's providers in the order the bare id alone would have (the chain is kept as
      // written, like an alias's): its index entry lists them by id.
      for (const c of r.kind === "model" ? inBaseOrder(providers.index().routing, r.candidates) : r.candidates) {
        const key = pinnedId(c.provider.id, c.upstreamModel)
        if (!seen.has(key)) {
          seen.add(key)
          chain.push(c)
        }
      }
    }
    if (first === null) return new ModelNotFound({ model })
    if (ids.length > 1) notes.unshift(`models: ${ids.join(",")}`)
    return { resolution: { kind: "alias", candidates: chain, hedgeAfterMs: first.hedgeAfterMs, strategy: null }, notes }
  }

  /**
   * Resolves the model (with OpenRouter's `models` fallbacks) and asks the policy for the order:
   * everything about a request that is decided before any upstream is called.
   */
  const plan = (
    request: { readonly model: string },
    needs: Needs,
    sessionKey: string | null | undefined,
    /** `undefined` for `explain`, which has none. */
    requestId: string | undefined,
    at: number,
    /** For `explain`, which always shows the prompt estimate. */
    explaining: boolean
  ): Plan | ModelNotFound | InvalidRequest => {
    const fields = request as { readonly provider?: unknown; readonly models?: unknown; readonly user?: unknown }
    // OpenRouter's routing fields are read here and never go upstream.
    const strip = fields.provider !== undefined || fields.models !== undefined
    const prefs = fields.provider === undefined ? null : prefsOf(fields)
    if (prefs instanceof InvalidRequest) return prefs
    const resolved = fields.models === undefined ? providers.resolve(request.model) : withFallbacks(request.model, fields)
    if (resolved instanceof ModelNotFound || resolved instanceof InvalidRequest) return resolved
    const resolution = "resolution" in resolved ? resolved.resolution : resolved
    const extraNotes = "resolution" in resolved ? resolved.notes : none
    let decided: Decision
    try {
      if (explaining) needs.promptTokens()
      decided = policy.decide({
        resolution,
        needs,
        routing: providers.index().routing,
        aliasStrategy: resolution.strategy,
        prefs,
        sessionKey,
        user: fields.user,
        requestId
      }, at)
    } catch (e) {
      // The prompt estimate (asked for when a window or a price is known, and always by explain)
      // serializes `tools`, which a client may nest deeper than the stack allows.
      if (isTooDeep(e)) return nestedTooDeeply()
      throw e
    }
    const decision: Decision = extraNotes.length === 0 ? decided : { ...decided, notes: [...extraNotes, ...decided.notes] }
    return { resolution, decision, strip }
  }

  /** Exponential backoff with jitter (0.5–1.5×), on Effect's `Random` so tests can pin it. */
  const backoff = (retry: number) =>
    Effect.flatMap(Random.next, (r) => Effect.sleep(Math.round(resilience.retryBackoffMs * 2 ** retry * (0.5 + r))))

  /**
   * In how many ms the first of these candidates can be tried again, when none can be now (a rate
   * limit, an open circuit, credits run out); `undefined` when one can, or when nobody knows. What
   * a client retrying the same request should wait (`Retry-After`) rather than meet the same answer.
   */
  const freeAgainIn = (candidates: ReadonlyArray<Candidate>, at: number): number | undefined => {
    let soonest = Number.POSITIVE_INFINITY
    for (const c of candidates) {
      const blocked = health.peek(c, at)
      // A half-open circuit's probe is under way: its answer decides within moments.
      const until = blocked !== null ? blocked.until ?? at + 1000 : health.outOfCreditsUntil(c.provider.id, at)
      if (until === null) return undefined
      soonest = Math.min(soonest, until)
    }
    return soonest === Number.POSITIVE_INFINITY ? undefined : Math.max(0, soonest - at)
  }

  /**
   * Tries the ranked candidates in order; the first to answer wins. A transient failure is retried
   * on the same provider (with backoff, while the deadline allows) before the next is tried.
   * Written as a loop of `flatMap`s rather than `Effect.gen`: on this path the generator measured
   * ~5 µs per request.
   */
  const route = (
    endpoint: "chat" | "embeddings",
    path: string,
    request: { readonly model: string },
    raw: Uint8Array | undefined,
    needs: Needs,
    requestId: string,
    timeoutMs: number | undefined,
    sessionKey: string | null | undefined
  ): Effect.Effect<Reply, ChatError> => {
    const startedAt = now()
    const planned = plan(request, needs, sessionKey, requestId, startedAt, false)
    if (planned instanceof ModelNotFound || planned instanceof InvalidRequest) return Effect.fail(planned)
    const { decision, resolution, strip } = planned
    const ranked = decision.ranked
    // Candidates health or credits ruled out are listed as skipped, as if tried and refused at once.
    const skipped: Array<Attempt> = []
    for (const d of decision.dropped) {
      if (d.outcome !== undefined) skipped.push(attemptOf(d.candidate, d.outcome, d.reason, null, startedAt, startedAt))
    }
    const deadlineMs = timeoutMs === undefined ? resilience.requestTimeoutMs : Math.min(timeoutMs, resilience.requestTimeoutMs)
    const deadlineAt = startedAt + deadlineMs
    // A stream of `n` choices is whole once each has finished (or at `[DONE]`).
    const n = (request as { readonly n?: unknown }).n
    const choices = typeof n === "number" && Number.isSafeInteger(n) && n > 1 ? n : 1

    // The client's bytes go upstream untouched unless the model name or `max_tokens` must change
    // or OpenRouter's fields must go; then those members are edited in the bytes (see `RawJson`),
    // once per (model, max_tokens). Only a library caller without the bytes gets the decoded
    // body serialized, every other field kept.
    let bodies: Map<string, string | Uint8Array> | undefined
    const rewrites = (model: string, maxTokens: number | null) => model !== request.model || maxTokens !== null || strip || raw === undefined
    const bodyFor = (model: string, maxTokens: number | null): string | Uint8Array => {
      if (!rewrites(model, maxTokens)) return raw!
      bodies ??= new Map()
      const key = maxTokens === null ? model : `${maxTokens} ${model}`
      let body = bodies.get(key)
      if (body === undefined) {
        body = (raw === undefined ? null : RawJson.editMembers(raw, editsFor(model, maxTokens))) ?? serialized(model, maxTokens)
        bodies.set(key, body)
      }
      return body
    }
    const editsFor = (model: string, maxTokens: number | null): Record<string, RawJson.MemberEdit> => {
      const json = JSON.stringify(model)
      // An unchanged model keeps its bytes; it is only added when the client named it in `models` alone.
      const edits: Record<string, RawJson.MemberEdit> = { model: model === request.model ? RawJson.orDefault(json) : RawJson.set(json) }
      if (strip) for (const f of openRouterFields) edits[f] = RawJson.remove
      if (maxTokens !== null) for (const f of limitFieldsOf(request)) edits[f] = RawJson.set(String(maxTokens))
      return edits
    }
    const serialized = (model: string, maxTokens: number | null): string => {
      const out: Record<string, unknown> = { ...request, model }
      if (strip) for (const f of openRouterFields) delete out[f]
      if (maxTokens !== null) for (const f of limitFieldsOf(request)) out[f] = maxTokens
      return JSON.stringify(out)
    }

    // A body nested deeper than `JSON.stringify` can go cannot be serialized: found here, as a 400,
    // before any upstream is called, rather than as a defect in the middle of a failover. The first
    // rewrite is kept; the others serialize the same structure. Edited bytes need no such check.
    const firstRewrite = ranked.find((r) => rewrites(r.candidate.upstreamModel, r.maxTokens))
    if (firstRewrite !== undefined) {
      const rewritten = orTooDeep(firstRewrite, (r) => Either.right(bodyFor(r.candidate.upstreamModel, r.maxTokens)))
      if (Either.isLeft(rewritten)) return Effect.fail(rewritten.left)
    }

    /** Set once the request's record is written (or, for a stream, left to its end). */
    let recorded = false
    const recordAs = (
      provider: string | null,
      upstreamModel: string | null,
      status: number,
      outcome: string,
      attempts: ReadonlyArray<Attempt>,
      extra?: { readonly body?: Uint8Array; readonly error?: string | undefined }
    ) => {
      recorded = true
      record({
        requestId,
        createdAt: startedAt,
        endpoint,
        model: request.model,
        stream: needs.stream,
        provider,
        upstreamModel,
        status,
        outcome,
        attempts,
        durationMs: now() - startedAt,
        body: extra?.body,
        error: extra?.error,
        decision
      })
    }

    // The candidates health or credits ruled out for now: they come back by themselves. Asked for
    // on the failure paths only.
    const resting = () => decision.dropped.filter((d) => d.outcome !== undefined).map((d) => d.candidate)
    /** When a client's retry could meet a candidate again (see `freeAgainIn`). */
    const retryAfterMs = () => freeAgainIn([...ranked.map((r) => r.candidate), ...resting()], now())
    /** 503: nothing can be tried, for `reasons` (every candidate dropped, or skipped by health). */
    const noneLeft = (reasons: ReadonlyArray<string>, attempts: ReadonlyArray<Attempt>): Effect.Effect<never, NoCandidates> => {
      // Dropped by the request's own needs alone (tools, context, price, …), it never can be served.
      const retry = ranked.length === 0 && resting().length === 0 ? { final: true } : { retryAfterMs: retryAfterMs() }
      // The prompt alone kept some candidate out: the client's context-length error, on which an
      // agent (Letta) compacts its history and sends again, where a 503 would end its step.
      let window = 0
      if (retry.final === true) for (const d of decision.dropped) if (d.contextWindow !== undefined && d.contextWindow > window) window = d.contextWindow
      const tooLong = window > 0 ? { tooLong: { window, needed: windowNeed(needs), param: needs.endpoint === "embeddings" ? "input" as const : "messages" as const } } : {}
      const failure = new NoCandidates({ model: request.model, reasons, attempts, decision: summary(decision), ...retry, ...tooLong })
      recordAs(null, null, window > 0 ? 400 : 503, "no_candidates", attempts, { error: failure.message })
      return Effect.fail(failure)
    }
    if (ranked.length === 0) {
      const reasons = decision.dropped.map((d) => `${pinnedId(d.candidate.provider.id, d.candidate.upstreamModel)}: ${d.reason}`)
      // Not one candidate to drop: an alias whose targets name nothing a provider serves.
      if (resolution.candidates.length === 0) reasons.push("its targets name no model a configured provider serves (aliases do not name other aliases)")
      return noneLeft(reasons, skipped)
    }

    const served = (answer: Reply): Effect.Effect<Reply> => {
      // A hedged answer may have been built before its rival's failure was listed.
      const reply: Reply = answer.attempts.length === attempts.length + 1
        ? answer
        : { ...answer, attempts: [...attempts, answer.attempts[answer.attempts.length - 1]!] }
      if (reply._tag === "Json") {
        recordAs(reply.provider, reply.upstreamModel, reply.status, "ok", reply.attempts, { body: bodyTail(reply.body) })
        // A backend that answered a streaming request with a whole answer: the client still gets
        // the stream it asked for, rather than a body its stream parser finds no events in.
        const events = needs.stream
          ? completionAsEvents(reply.body, (request as { readonly stream_options?: { readonly include_usage?: unknown } | null }).stream_options?.include_usage === true)
          : null
        return Effect.succeed(events === null ? reply : { ...reply, contentType: "text/event-stream; charset=utf-8", body: events })
      }
      // A stream is recorded when it ends, with how it ended.
      recorded = true
      return Effect.succeed({
        ...reply,
        pipe: (writer: ChunkWriter) =>
          reply.pipe(writer).pipe(
            Effect.onExit((exit) =>
              Effect.sync(() =>
                recordAs(
                  reply.provider,
                  reply.upstreamModel,
                  reply.status,
                  exit._tag === "Success"
                    ? "ok"
                    : Cause.isInterruptedOnly(exit.cause)
                    ? interruptedOutcome(Cause.interruptors(exit.cause))
                    : "stream_interrupted",
                  reply.attempts,
                  {
                    error: exit._tag === "Failure"
                      ? Option.getOrUndefined(Option.map(Cause.failureOption(exit.cause), (e) => e.detail))
                      : undefined
                  }
                )
              )
            )
          )
      })
    }

    const attempts: Array<Attempt> = skipped
    let tried = 0
    const giveUp = (): Effect.Effect<never, ChatError> => {
      if (now() >= deadlineAt) {
        const failure = new RequestTimedOut({ model: request.model, timeoutMs: deadlineMs, attempts, decision: summary(decision) })
        recordAs(null, null, 504, "timed_out", attempts, { error: failure.message })
        return Effect.fail(failure)
      }
      // Nothing was even tried: every candidate's health ruled it out for now.
      if (tried === 0) return noneLeft(attempts.map((a) => `${a.provider}+${a.upstreamModel}: ${a.detail}`), attempts)
      const failure = new AllCandidatesFailed({ model: request.model, attempts, decision: summary(decision), retryAfterMs: retryAfterMs() })
      recordAs(null, null, 502, "all_failed", attempts, { error: failure.message })
      return Effect.fail(failure)
    }
    /** What an outcome means for the request: an answer, the end, or `otherwise` (try on). */
    const onOutcome = (outcome: Outcome, otherwise: () => Effect.Effect<Reply, ChatError>): Effect.Effect<Reply, ChatError> => {
      switch (outcome._tag) {
        case "Served":
          return served(outcome.reply)
        case "Rejected": {
          attempts.push(outcome.attempt)
          const { provider, upstreamModel, detail } = outcome.attempt
          recordAs(provider, upstreamModel, outcome.status, outcome.attempt.outcome, attempts, { error: detail })
          return Effect.fail(new UpstreamRejected({ provider, upstreamModel, status: outcome.status, body: outcome.body, attempts, decision: summary(decision) }))
        }
        case "Skipped":
          attempts.push(outcome.attempt)
          return otherwise()
        case "Failed":
          attempts.push(outcome.attempt)
          tried++
          return otherwise()
      }
    }

    const attemptAt = (i: number, firstByte?: () => void) => {
      const r = ranked[i]!
      return tryCandidate(r.candidate, path, bodyFor(r.candidate.upstreamModel, r.maxTokens), needs.stream, choices, requestId, attempts, deadlineAt, decision, i + 1 >= ranked.length, firstByte)
    }
    const aliasHedge = resolution.hedgeAfterMs ?? null

    /**
     * After a `context_too_long` refusal: the next candidate known to have a larger context window
     * than the one that refused (or than the prompt estimate, when its window is unknown), or -1.
     */
    const largerContext = (i: number): number => {
      let floor = ranked[i]!.candidate.info?.contextWindow ?? null
      for (let j = i + 1; j < ranked.length; j++) {
        const window = ranked[j]!.candidate.info?.contextWindow ?? null
        if (window === null) continue
        // Read only once a window is known: the policy's gate then already estimated the prompt (in
        // `plan`, where a body too deep to estimate is a 400), so this never walks the body anew.
        floor ??= windowNeed(needs)
        if (window > floor) return j
      }
      return -1
    }

    /**
     * Where a refusal that says nothing against the request sends it: a provider without the model
     * (its list out of date) to the next candidate, which may have it; a context too long to a
     * larger window. -1 for any other outcome, and when there is none to go to (the last one's
     * refusal goes to the client as it came).
     */
    const movesOnTo = (outcome: Outcome, i: number): number =>
      outcome._tag !== "Rejected"
        ? -1
        : outcome.attempt.outcome === "context_too_long"
        ? largerContext(i)
        : outcome.attempt.outcome === "model_not_found" && i + 1 < ranked.length
        ? i + 1
        : -1
    /** Lists such a refusal as a tried attempt, then goes on with `then`. */
    const movedOn = (outcome: Outcome, then: () => Effect.Effect<Reply, ChatError>): Effect.Effect<Reply, ChatError> => {
      if (outcome._tag === "Rejected") attempts.push(outcome.attempt)
      tried++
      return then()
    }

    const next = (i: number, retry: number): Effect.Effect<Reply, ChatError> => {
      const c = ranked[i]?.candidate
      if (c === undefined || now() >= deadlineAt) return giveUp()
      const hedge = aliasHedge ?? c.provider.hedgeAfterMs
      if (hedge !== null && ranked[i + 1] !== undefined) return hedged(i, hedge)
      return Effect.flatMap(attemptAt(i), (outcome) => {
        const j = movesOnTo(outcome, i)
        if (j !== -1) return movedOn(outcome, () => next(j, 0))
        return onOutcome(outcome, () => {
          // A provider that was busy (no free connection) is not asked again at once: the next one is.
          const transient = outcome._tag === "Failed" && outcome.classified.outcome !== "busy" &&
            (outcome.classified.class === "transient" || outcome.classified.class === "stalled")
          if (transient && retry < resilience.retries && now() + resilience.retryBackoffMs * 2 ** retry * 1.5 < deadlineAt) {
            return Effect.zipRight(backoff(retry), next(i, retry + 1))
          }
          return next(i + 1, 0)
        })
      })
    }

    /**
     * Hedging: candidate i alone for `delayMs`; if it has sent nothing by then (no response
     * headers for a plain answer, no first event for a stream), candidate i+1 as well. The first
     * to answer (or to refuse the request) wins and the other is interrupted, which aborts its
     * upstream call. A refusal that moves on (`movesOnTo`) is a failure here too.
     * If both fail the chain goes on after them (or at the larger window a refusal pointed to).
     */
    const hedged = (i: number, delayMs: number): Effect.Effect<Reply, ChatError> => {
      const aStartedAt = now()
      let bStarted = false
      let bStartedAt = 0
      // A first candidate whose first byte came in time is answering: it is left to finish (or to
      // fail over by its own timeouts) alone.
      let aSent = false
      const second = Effect.zipRight(
        Effect.sleep(delayMs),
        Effect.suspend(() => {
          if (aSent) return Effect.never
          bStarted = true
          bStartedAt = now()
          return attemptAt(i + 1)
        })
      )
      /**
       * The pair's loser, listed (before the answer) as the attempt it was: called and billed, then
       * aborted. Its health is not touched (it was left, not failed).
       */
      const lost = (at: number, since: number) =>
        attempts.push(attemptOf(ranked[at]!.candidate, "hedge_lost", "another candidate answered first; this one was aborted", null, since, now()))
      const decisive = (o: Outcome, at: number) => o._tag === "Served" || (o._tag === "Rejected" && movesOnTo(o, at) === -1)
      /** One of the pair's outcomes, as `next` takes it, with `otherwise` to go on. */
      const take = (o: Outcome, at: number, otherwise: () => Effect.Effect<Reply, ChatError>) =>
        movesOnTo(o, at) === -1 ? onOutcome(o, otherwise) : movedOn(o, otherwise)
      const both = (first: Outcome, fi: number, other: Outcome, oi: number) =>
        take(first, fi, () => take(other, oi, () => next(Math.max(i + 2, movesOnTo(first, fi), movesOnTo(other, oi)), 0)))
      return Effect.raceWith(attemptAt(i, () => (aSent = true)), second, {
        onSelfDone: (exit, other) => {
          if (Exit.isFailure(exit)) return Effect.zipRight(Fiber.interrupt(other), Effect.failCause(exit.cause))
          const a = exit.value
          const won = decisive(a, i)
          // An answer, or a failure before the hedge began: the hedge is not needed.
          if (won || !bStarted) {
            const j = movesOnTo(a, i)
            return Effect.zipRight(
              Fiber.interrupt(other),
              Effect.suspend(() => {
                if (won && bStarted) lost(i + 1, bStartedAt)
                return j !== -1 ? movedOn(a, () => next(j, 0)) : onOutcome(a, () => next(i + 1, 0))
              })
            )
          }
          return Effect.flatMap(Fiber.join(other), (ob) => both(a, i, ob, i + 1))
        },
        onOtherDone: (exit, other) =>
          Exit.isFailure(exit)
            ? Effect.zipRight(Fiber.interrupt(other), Effect.failCause(exit.cause))
            : decisive(exit.value, i + 1)
            ? Effect.zipRight(Fiber.interrupt(other), Effect.suspend(() => (lost(i, aStartedAt), onOutcome(exit.value, giveUp))))
            // The hedge failed first: it is listed first, then whatever the first candidate does.
            : Effect.flatMap(Fiber.join(other), (oa) => decisive(oa, i) ? both(exit.value, i + 1, oa, i) : both(oa, i, exit.value, i + 1))
      })
    }
    // Interrupted before an answer (the client left, or shutdown cut it): recorded too, with the
    // attempts that ended by then; the one under way was aborted.
    return Effect.onInterrupt(next(0, 0), (by) =>
      Effect.sync(() => {
        if (recorded) return
        const outcome = interruptedOutcome(by)
        recordAs(null, null, outcome === "shutdown" ? 503 : 499, outcome, attempts, {
          error: outcome === "shutdown" ? "the router shut down before the answer" : "the client closed the connection before the answer"
        })
      }))
  }

  return Router.of({
    chat: (input) =>
      Effect.suspend(() =>
        route("chat", "/chat/completions", input.request, input.raw, needsOfChat(input.request), input.requestId ?? randomUUID(), input.timeoutMs, input.sessionKey)
      ),
    embeddings: (input) => {
      const routed = Effect.suspend(() =>
        route("embeddings", "/embeddings", input.request, input.raw, needsOfEmbeddings(input.request), input.requestId ?? randomUUID(), input.timeoutMs, input.sessionKey)
      ) as Effect.Effect<JsonReply, ChatError>
      // Asked for base64 (the official clients' default): what a backend sent as numbers is encoded.
      return (input.request as { readonly encoding_format?: unknown }).encoding_format === "base64"
        ? Effect.map(routed, (reply) => {
          const encoded = reply.status >= 200 && reply.status < 300 ? embeddingsAsBase64(reply.body) : null
          return encoded === null ? reply : { ...reply, body: encoded }
        })
        : routed
    },
    explain: (what, sessionKey) =>
      Effect.suspend(() => {
        const needs = what.endpoint === "chat" ? needsOfChat(what.request) : needsOfEmbeddings(what.request)
        const planned = plan(what.request, needs, sessionKey, undefined, now(), true)
        return planned instanceof ModelNotFound || planned instanceof InvalidRequest
          ? Effect.fail(planned)
          : Effect.succeed({ endpoint: what.endpoint, model: what.request.model, needs, decision: planned.decision })
      })
  })
})

/**
 * The workflow, given `Providers`, `Upstream`, `Policy`, `Health` and `Resilience` (and
 * `RequestLog`, when present, for records).
 */
export const layerWithoutDependencies = Layer.effect(Router, make)

/**
 * The workflow with the default policy and an in-memory health registry; give it a `Providers` and
 * an `Upstream` Layer. Resilience settings are those a Layer given to it provides
 * (`Providers.layerStatic` provides its config's), else the defaults.
 */
export const layer = layerWithoutDependencies.pipe(
  Layer.provide(Policy.layer),
  Layer.provide(HealthModule.layer),
  Layer.provide(ResilienceModule.layerGivenOrDefaults)
)
