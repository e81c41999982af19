/**
 * Every error a request can end in, as tagged classes. The HTTP edge maps each one to an
 * OpenAI-shaped body in one exhaustive switch (`http/Errors.ts`); library users match on `_tag`.
 */
import { Schema } from "effect"

/** The request body is not valid JSON, or does not match the endpoint's schema. */
export class InvalidRequest extends Schema.TaggedError<InvalidRequest>()("InvalidRequest", {
  message: Schema.String,
  param: Schema.NullOr(Schema.String),
  code: Schema.NullOr(Schema.String)
}) {}

/** The request body is larger than the configured limit. */
export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()("PayloadTooLarge", {
  limit: Schema.Number
}) {
  get message() {
    return `Request body exceeds the limit of ${this.limit} bytes`
  }
}

/** Missing or wrong API key. */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", {
  message: Schema.String
}) {}

/**
 * A model id as an error message quotes it: whole up to 256 characters, else its start. A request
 * may name a model of megabytes, and its error should not send them back.
 */
export const shownModel = (model: string): string => (model.length <= 256 ? model : `${model.slice(0, 256)}… (${model.length} characters)`)

/** The requested model is neither an upstream model id, a `provider+model` id nor an alias. */
export class ModelNotFound extends Schema.TaggedError<ModelNotFound>()("ModelNotFound", {
  model: Schema.String
}) {
  get message() {
    return `The model '${shownModel(this.model)}' does not exist on this router (see GET /v1/models)`
  }
}

/**
 * What a client retrying the same request may expect (`Retry-After`, `x-should-retry`): in how
 * many ms the first candidate can be tried again, when none can be now and that is known; or
 * `final` when none ever can until the configuration changes.
 */
const Retry = {
  retryAfterMs: Schema.optional(Schema.Number),
  final: Schema.optional(Schema.Boolean)
}

/** The model is known but no configured provider can serve this request. */
export class NoCandidates extends Schema.TaggedError<NoCandidates>()("NoCandidates", {
  model: Schema.String,
  reasons: Schema.Array(Schema.String),
  /** The candidates skipped (circuit open, rate limited, …), when that is why none was tried. */
  attempts: Schema.optionalWith(Schema.Array(Schema.suspend(() => Attempt)), { default: () => [] }),
  /** The routing decision in short (`X-Router-Decision`), when routing got that far. */
  decision: Schema.optional(Schema.String),
  /**
   * Set when no candidate ever can, and the prompt alone is why some could not: the largest such
   * window and the prompt's estimate. The client gets OpenAI's 400 `context_length_exceeded`.
   */
  tooLong: Schema.optional(Schema.Struct({ window: Schema.Number, needed: Schema.Number, param: Schema.Literal("messages", "input") })),
  ...Retry
}) {
  get message() {
    if (this.tooLong !== undefined) {
      const what = this.tooLong.param === "input" ? "an input" : "your messages"
      return `This model's maximum context length is ${this.tooLong.window} tokens. However, ${what} resulted in about ${this.tooLong.needed} tokens (the router's estimate). Please reduce the length of the ${this.tooLong.param}. (${this.reasons.join("; ")})`
    }
    const why = this.reasons.length > 0 ? `: ${this.reasons.join("; ")}` : ""
    return `No provider can serve model '${shownModel(this.model)}' for this request${why}`
  }
}

/** One attempt at one candidate, as reported in `X-Router-Attempts` and the request record. */
export const Attempt = Schema.Struct({
  provider: Schema.String,
  upstreamModel: Schema.String,
  outcome: Schema.String,
  detail: Schema.String,
  status: Schema.NullOr(Schema.Number),
  durationMs: Schema.Number
})
export type Attempt = typeof Attempt.Type

/** Every candidate was tried and none produced an answer. */
export class AllCandidatesFailed extends Schema.TaggedError<AllCandidatesFailed>()("AllCandidatesFailed", {
  model: Schema.String,
  attempts: Schema.Array(Attempt),
  /** The routing decision in short (`X-Router-Decision`), when routing got that far. */
  decision: Schema.optional(Schema.String),
  ...Retry
}) {
  get message() {
    const tried = this.attempts.map((a) => `${a.provider}+${a.upstreamModel} (${a.detail})`).join(", ")
    return `All providers failed for model '${shownModel(this.model)}': ${tried}`
  }
}

/** The request's end-to-end deadline passed before any candidate answered. */
export class RequestTimedOut extends Schema.TaggedError<RequestTimedOut>()("RequestTimedOut", {
  model: Schema.String,
  timeoutMs: Schema.Number,
  attempts: Schema.Array(Attempt),
  /** The routing decision in short (`X-Router-Decision`), when routing got that far. */
  decision: Schema.optional(Schema.String)
}) {
  get message() {
    const tried = this.attempts.map((a) => `${a.provider}+${a.upstreamModel} (${a.detail})`).join(", ")
    return `No answer for model '${shownModel(this.model)}' within the request deadline of ${this.timeoutMs} ms${tried === "" ? "" : `: ${tried}`}`
  }
}

/**
 * The upstream refused the request for a reason of the request's own (400, 404, 413, 422, …).
 * It is returned to the client as the upstream sent it and is never retried elsewhere.
 */
export class UpstreamRejected extends Schema.TaggedError<UpstreamRejected>()("UpstreamRejected", {
  provider: Schema.String,
  upstreamModel: Schema.String,
  status: Schema.Number,
  body: Schema.Uint8ArrayFromSelf,
  attempts: Schema.Array(Attempt),
  /** The routing decision in short (`X-Router-Decision`), when routing got that far. */
  decision: Schema.optional(Schema.String)
}) {
  get message() {
    return `Provider '${this.provider}' rejected the request with HTTP ${this.status}`
  }
}

/**
 * Why a transport-level call to an upstream failed before producing a usable answer. `local`: the
 * router's own process could not make the call (out of file descriptors, ports or buffers), so the
 * provider was never reached.
 */
export const TransportReason = Schema.Literal("connect", "reset", "timeout", "protocol", "aborted", "local")
export type TransportReason = typeof TransportReason.Type

/** A failure talking to one upstream: the connection, not the answer. */
export class UpstreamTransportError extends Schema.TaggedError<UpstreamTransportError>()("UpstreamTransportError", {
  provider: Schema.String,
  reason: TransportReason,
  detail: Schema.String
}) {
  get message() {
    return `${this.provider}: ${this.detail}`
  }
}

/** The router could not write the streamed answer to the client (it hung up) or the upstream died mid-stream. */
export class StreamInterrupted extends Schema.TaggedError<StreamInterrupted>()("StreamInterrupted", {
  provider: Schema.String,
  detail: Schema.String
}) {
  get message() {
    return `The stream from '${this.provider}' ended early: ${this.detail}`
  }
}

/** The errors a routed request can end in. */
export type RouterError =
  | InvalidRequest
  | ModelNotFound
  | NoCandidates
  | AllCandidatesFailed
  | RequestTimedOut
  | UpstreamRejected

/**
 * An upstream body as it may be quoted in an error message, a record or a header: its first `max`
 * bytes as text, or, when they are not text (an image, compressed bytes), a description of them,
 * so that a client's message never carries raw binary.
 */
export const quotable = (body: Uint8Array, max: number): string => {
  let text = Buffer.from(body.buffer, body.byteOffset, Math.min(body.byteLength, max)).toString("utf8")
  // A cut in the middle of a character decodes as U+FFFD; that is the cut, not the body.
  if (body.byteLength > max) text = text.replace(/\ufffd{1,3}$/, "")
  return notText.test(text) ? `${body.byteLength} bytes that are not text` : text
}

/** Control characters other than whitespace, or bytes that do not decode as UTF-8. */
const notText = /[\u0000-\u0008\u000e-\u001f\u007f\ufffd]/
