/**
 * Every error a client sees, in OpenAI's shape `{"error":{"message","type","param","code"}}`, with
 * its HTTP status. One exhaustive switch, so a new error class cannot reach a client unmapped.
 */
import { Schema } from "effect"
import { quotable } from "../domain/Errors.js"
import type {
  AllCandidatesFailed,
  InvalidRequest,
  ModelNotFound,
  NoCandidates,
  PayloadTooLarge,
  RequestTimedOut,
  StreamInterrupted,
  Unauthorized,
  UpstreamRejected
} from "../domain/Errors.js"
import type { ErrorBody } from "../domain/OpenAi.js"

/** No route at this path. */
export class RouteNotFound extends Schema.TaggedError<RouteNotFound>()("RouteNotFound", {
  method: Schema.String,
  path: Schema.String
}) {}

/** The path exists but not with this method. */
export class MethodNotAllowed extends Schema.TaggedError<MethodNotAllowed>()("MethodNotAllowed", {
  method: Schema.String,
  path: Schema.String,
  allowed: Schema.String
}) {}

/** An `Expect` header other than `100-continue`, the one expectation HTTP/1.1 defines. */
export class ExpectationFailed extends Schema.TaggedError<ExpectationFailed>()("ExpectationFailed", {
  expectation: Schema.String
}) {}

/**
 * The router stopped before this request was answered: shutdown waited out its drain time. Nothing
 * is wrong with the request, so a client may send it again (to this router once it is back).
 */
export class ShuttingDown extends Schema.TaggedError<ShuttingDown>()("ShuttingDown", {}) {
  get message() {
    return "The router is shutting down and did not finish this request; send it again"
  }
}

export type HttpError =
  | InvalidRequest
  | PayloadTooLarge
  | Unauthorized
  | ModelNotFound
  | NoCandidates
  | AllCandidatesFailed
  | RequestTimedOut
  | UpstreamRejected
  | StreamInterrupted
  | RouteNotFound
  | MethodNotAllowed
  | ExpectationFailed
  | ShuttingDown

export interface ErrorResponse {
  readonly status: number
  /** Serialized JSON. */
  readonly body: string
  readonly headers?: Readonly<Record<string, string>>
}

export const errorBody = (message: string, type: string, param: string | null, code: string | null): ErrorBody => ({
  error: { message, type, param, code }
})

/** The body of the 500 for a defect (a bug), wherever in the HTTP surface it comes up. */
export const internalErrorBody = JSON.stringify(errorBody("Internal router error", "server_error", null, "internal_error"))

/** The last event of a stream cut short: an OpenAI-shaped error, `stream_interrupted`, and no `[DONE]`. */
export const interruptedEvent = (message: string, type: string): string =>
  `data: ${JSON.stringify(errorBody(message, type, null, "stream_interrupted"))}\n\n`

/** The last event of a stream the router cuts because it is shutting down. */
export const shutdownEvent = interruptedEvent("The router is shutting down; the answer was cut off before its end", "server_error")

const json = (status: number, message: string, type: string, param: string | null, code: string | null, headers?: Record<string, string>): ErrorResponse => ({
  status,
  body: JSON.stringify(errorBody(message, type, param, code)),
  ...(headers === undefined ? {} : { headers })
})

/**
 * An upstream's own 4xx is passed through as it was sent when it is already OpenAI-shaped; other
 * shapes (Ollama's `{"error":"…"}`, FastAPI's `{"detail":…}`, plain text) are wrapped so the client
 * always gets the same shape.
 */
export const passThrough = (status: number, body: Uint8Array, provider: string): string => {
  try {
    return wrapped(status, body, provider)
  } catch {
    // Only a body nested deeper than `JSON.stringify` can go gets here.
    return JSON.stringify(errorBody(`Provider '${provider}' answered HTTP ${status}`, "invalid_request_error", null, null))
  }
}

const wrapped = (status: number, body: Uint8Array, provider: string): string => {
  const text = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("utf8")
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    parsed = undefined
  }
  const error = (parsed as { error?: unknown } | undefined)?.error
  if (typeof error === "object" && error !== null && typeof (error as { message?: unknown }).message === "string") {
    const e = error as Record<string, unknown>
    if ("type" in e && "param" in e && "code" in e) return text
    return JSON.stringify({ ...(parsed as object), error: { type: "invalid_request_error", param: null, code: null, ...e } })
  }
  const detail = (parsed as { detail?: unknown } | undefined)?.detail
  // vLLM's older error body is flat: `{"object":"error","message":…,"type":…,"code":400}`.
  const flat = (parsed as { message?: unknown } | undefined)?.message
  const message = typeof error === "string"
    ? error
    : typeof flat === "string"
    ? flat
    : detail !== undefined
    ? typeof detail === "string" ? detail : JSON.stringify(detail)
    : text.trim() !== ""
    ? quotable(body, 2000).trim()
    : `Provider '${provider}' answered HTTP ${status}`
  return JSON.stringify(errorBody(message, "invalid_request_error", null, null))
}

/**
 * What the official clients read before retrying a 5xx: `x-should-retry: false` when the same
 * request cannot succeed, else `retry-after` (and the finer `retry-after-ms`) when the router knows
 * when it might. Without them a client retries at once and meets the same answer.
 */
const retryHeaders = (e: { readonly retryAfterMs?: number | undefined; readonly final?: boolean | undefined }): Record<string, string> | undefined =>
  e.final === true
    ? { "x-should-retry": "false" }
    : e.retryAfterMs !== undefined
    ? { "retry-after": String(Math.max(1, Math.ceil(e.retryAfterMs / 1000))), "retry-after-ms": String(Math.max(1, Math.ceil(e.retryAfterMs))) }
    : undefined

export const toErrorResponse = (e: HttpError): ErrorResponse => {
  switch (e._tag) {
    case "InvalidRequest":
      return json(400, e.message, "invalid_request_error", e.param, e.code)
    case "PayloadTooLarge":
      return json(413, e.message, "invalid_request_error", null, "request_too_large", { connection: "close" })
    case "Unauthorized":
      return json(401, e.message, "invalid_request_error", null, "invalid_api_key")
    case "ModelNotFound":
      return json(404, e.message, "invalid_request_error", "model", "model_not_found")
    case "NoCandidates":
      if (e.tooLong !== undefined) return json(400, e.message, "invalid_request_error", e.tooLong.param, "context_length_exceeded")
      return json(503, e.message, "upstream_error", "model", "no_available_provider", retryHeaders(e))
    case "AllCandidatesFailed":
      return json(502, e.message, "upstream_error", null, "all_providers_failed", retryHeaders(e))
    case "RequestTimedOut":
      return json(504, e.message, "upstream_error", null, "request_timeout")
    case "UpstreamRejected":
      return { status: e.status, body: passThrough(e.status, e.body, e.provider) }
    case "StreamInterrupted":
      return json(502, e.message, "upstream_error", null, "stream_interrupted")
    case "RouteNotFound":
      return json(404, `Unknown request URL: ${e.method} ${e.path}`, "invalid_request_error", null, "unknown_url")
    case "MethodNotAllowed":
      return json(405, `Method ${e.method} is not allowed on ${e.path} (use ${e.allowed})`, "invalid_request_error", null, "method_not_allowed", { allow: e.allowed })
    case "ShuttingDown":
      return json(503, e.message, "server_error", null, "shutting_down", { connection: "close" })
    case "ExpectationFailed":
      return json(417, `Expect: ${e.expectation} cannot be met; only 100-continue is supported`, "invalid_request_error", "expect", "expectation_failed")
  }
}
