/**
 * The OpenAI wire schemas the router validates. They check only what routing depends on and keep
 * every other field (`temperature`, `seed`, `response_format`, `venice_parameters`, …) untouched,
 * so the body that goes upstream is the body the client sent.
 */
import { Cause, Either, ParseResult, Runtime, Schema } from "effect"
import { InvalidRequest } from "./Errors.js"
import { isWhitespace } from "./RawJson.js"

/**
 * Fields not named here are kept as they came: the schemas are decoded with
 * `onExcessProperty: "preserve"`, which keeps them without walking each one (an index signature
 * would check every key of every message on the hot path). `Extra` types them for users.
 */
type Extra = { readonly [key: string]: unknown }

export const ChatMessage = Schema.Struct({ role: Schema.String }).annotations({ identifier: "message object" })
export type ChatMessage = typeof ChatMessage.Type & Extra

export const StreamOptions = Schema.Struct({ include_usage: Schema.optional(Schema.Boolean) })

export const ChatCompletionRequest = Schema.Struct({
  model: Schema.String.pipe(Schema.minLength(1, { message: () => "model must be a non-empty string" })),
  messages: Schema.Array(ChatMessage).annotations({ identifier: "array of messages" }).pipe(
    Schema.minItems(1, { message: () => "messages must contain at least one message" })
  ),
  stream: Schema.optional(Schema.NullOr(Schema.Boolean)),
  stream_options: Schema.optional(Schema.NullOr(StreamOptions)),
  tools: Schema.optional(Schema.NullOr(Schema.Array(Schema.Unknown).annotations({ identifier: "array of tools" })))
})
export type ChatCompletionRequest =
  & Omit<typeof ChatCompletionRequest.Type, "messages">
  & { readonly messages: ReadonlyArray<ChatMessage> }
  & Extra

const EmbeddingInput = Schema.Union(
  Schema.String,
  Schema.Array(Schema.String),
  Schema.Array(Schema.Number),
  Schema.Array(Schema.Array(Schema.Number))
).annotations({ message: () => "input must be a string, an array of strings, or an array of token arrays" })

export const EmbeddingRequest = Schema.Struct({
  model: Schema.String.pipe(Schema.minLength(1, { message: () => "model must be a non-empty string" })),
  input: EmbeddingInput
})
export type EmbeddingRequest = typeof EmbeddingRequest.Type & Extra

const embeddingKey = Buffer.from('"embedding"')

/** Where the value of the first `"embedding"` key begins (not the `"object": "embedding"` value), or -1. */
const firstValueOf = (bytes: Buffer): number => {
  for (let at = bytes.indexOf(embeddingKey); at !== -1; at = bytes.indexOf(embeddingKey, at)) {
    at += embeddingKey.length
    while (isWhitespace(bytes[at])) at++
    if (bytes[at] !== 0x3a) continue // :
    at++
    while (isWhitespace(bytes[at])) at++
    return at
  }
  return -1
}

/**
 * An embeddings answer as a client that asked for `encoding_format: "base64"` can read it, or
 * `null` when it already is one (or is not an answer). The official openai clients ask for base64
 * by default and decode every vector from it; a backend that ignores the field (several local
 * servers do) sends arrays of numbers, which the Node client turns into empty vectors without a
 * word. So such arrays become what OpenAI sends: little-endian float32s in base64. Only the first
 * vector is looked at before deciding, so a base64 answer costs one byte search.
 */
export const embeddingsAsBase64 = (body: Uint8Array): Uint8Array | null => {
  const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
  const value = firstValueOf(bytes)
  if (value === -1 || bytes[value] !== 0x5b) return null // [
  let answer: unknown
  try {
    answer = JSON.parse(bytes.toString("utf8"))
  } catch {
    return null
  }
  const data = isRecord(answer) && Array.isArray(answer.data) ? answer.data : null
  if (data === null) return null
  for (const item of data) {
    if (!isRecord(item) || !Array.isArray(item.embedding) || !item.embedding.every((x) => typeof x === "number")) return null
  }
  const out = data.map((item: Record<string, unknown>) => {
    const vector = item.embedding as ReadonlyArray<number>
    const buf = Buffer.alloc(vector.length * 4)
    for (let i = 0; i < vector.length; i++) buf.writeFloatLE(vector[i]!, i * 4)
    return { ...item, embedding: buf.toString("base64") }
  })
  return Buffer.from(JSON.stringify({ ...(answer as Record<string, unknown>), data: out }))
}

/** The body of every error the router itself returns, in OpenAI's shape. */
export interface ErrorBody {
  readonly error: {
    readonly message: string
    readonly type: string
    readonly param: string | null
    readonly code: string | null
  }
}

/** What a model can do, as listed by `GET /v1/models`: only what is known is present. */
export interface ModelEntryCapabilities {
  readonly tools?: boolean
  readonly vision?: boolean
  readonly json_schema?: boolean
  readonly reasoning?: boolean
  readonly streaming?: boolean
  readonly embeddings?: boolean
}

/**
 * One entry of `GET /v1/models`: OpenAI's fields, then the router's own, each present only when
 * known. For an id several providers serve (a bare id, an alias) they are the best known across
 * them: the largest context and output, a capability `true` when one of them has it (`false` when
 * all are known not to), the cheapest known price (one provider's pair, input + output).
 */
export interface ModelEntry {
  readonly id: string
  readonly object: "model"
  readonly created: number
  readonly owned_by: string
  /** Context window in tokens. */
  readonly context_length?: number
  readonly max_output_tokens?: number
  readonly capabilities?: ModelEntryCapabilities
  /** USD per million tokens. */
  readonly pricing?: { readonly input: number; readonly output: number }
  /** The providers serving it, in the order the router tries them (an alias: its chain's order). */
  readonly providers?: ReadonlyArray<string>
  /** `false` when the provider lists the model as not available on the account's plan (Featherless). */
  readonly available_on_current_plan?: boolean
}

const decodeOptions = { errors: "first", onExcessProperty: "preserve" } as const
const decodeChat = Schema.decodeUnknownEither(ChatCompletionRequest, decodeOptions)
const decodeEmbedding = Schema.decodeUnknownEither(EmbeddingRequest, decodeOptions)

const toInvalidRequest = (error: ParseResult.ParseError): InvalidRequest => {
  const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
  const path = issue?.path ?? []
  const param = path.length > 0 ? path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join("") : null
  const what = issue?.message ?? "invalid request body"
  if (issue?._tag === "Missing" && param !== null) {
    return new InvalidRequest({ message: `Missing required parameter: '${param}'`, param, code: "missing_required_parameter" })
  }
  return new InvalidRequest({
    message: param === null ? `Invalid request body: ${what}` : `Invalid value for '${param}': ${what}`,
    param,
    code: "invalid_value"
  })
}

const isChat = Schema.is(ChatCompletionRequest)
const isEmbedding = Schema.is(EmbeddingRequest)

/** A JSON object (not an array, not null). */
export const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)
const isOptional = (v: unknown, is: (v: unknown) => boolean) => v === undefined || v === null || is(v)
const isBoolean = (v: unknown) => typeof v === "boolean"

/** Both bodies' `model`: a non-empty string, as the schemas say. */
const hasModel = (body: unknown): body is Record<string, unknown> =>
  isRecord(body) && typeof body.model === "string" && body.model.length > 0

/**
 * The common well-formed chat body, recognised by a few property reads. It is a shortcut, not the
 * contract: it accepts only bodies `ChatCompletionRequest` accepts (a property test holds it to
 * that), and anything it does not recognise goes to the schema. Why it exists: on the request path
 * of a running server, with caches cold between requests, decoding a body measured ~15 µs, ~5 of
 * them in `Schema.is`; this reads the same fields in well under one.
 */
export const looksLikeChat = (body: unknown): boolean => {
  if (!hasModel(body)) return false
  const messages = body.messages
  if (!Array.isArray(messages) || messages.length === 0) return false
  for (const m of messages) if (!isRecord(m) || typeof m.role !== "string") return false
  return isOptional(body.stream, isBoolean) &&
    isOptional(body.stream_options, (o) => isRecord(o) && (o.include_usage === undefined || isBoolean(o.include_usage))) &&
    isOptional(body.tools, Array.isArray)
}

/** The same shortcut for embeddings: a model and a string or a list of strings. */
export const looksLikeEmbeddings = (body: unknown): boolean => {
  if (!hasModel(body)) return false
  const input = body.input
  if (typeof input === "string") return true
  if (!Array.isArray(input)) return false
  for (const x of input) if (typeof x !== "string") return false
  return true
}

/** A body's validation: the shortcut, then `Schema.is`, then the full decode only to explain a failure. */
const parser = <A>(
  looksLike: (json: unknown) => boolean,
  is: (json: unknown) => boolean,
  decode: (json: unknown) => Either.Either<unknown, ParseResult.ParseError>
) => {
  const parse = (body: unknown): Either.Either<A, InvalidRequest> =>
    looksLike(body) || is(body)
      ? Either.right(body as A)
      : Either.mapBoth(decode(body), { onLeft: toInvalidRequest, onRight: (decoded) => decoded as A })
  return (json: unknown): Either.Either<A, InvalidRequest> => orTooDeep(json, parse)
}

/**
 * Validates a chat completion body; synchronous because it sits on the hot path. The schemas have
 * no transformations, so a valid body is its own decoded value.
 */
export const parseChatRequest = parser<ChatCompletionRequest>(looksLikeChat, isChat, decodeChat)

/** Validates an embeddings body, the same way. */
export const parseEmbeddingRequest = parser<EmbeddingRequest>(looksLikeEmbeddings, isEmbedding, decodeEmbedding)

/** `parse(input)`, or the 400 for an input nested deeper than its walk could go. */
export const orTooDeep = <I, A>(input: I, parse: (input: I) => Either.Either<A, InvalidRequest>): Either.Either<A, InvalidRequest> => {
  try {
    return parse(input)
  } catch (e) {
    if (isTooDeep(e)) return Either.left(nestedTooDeeply())
    throw e
  }
}

/**
 * Whether `e` is a walk of a value nested deeper than the stack allows. `JSON.parse` reads any depth
 * (it does not recurse), but decoding, formatting a decode error and `JSON.stringify` do; a body of
 * `[[[[…]]]]` then throws a `RangeError`, directly or inside Effect's `FiberFailure`.
 */
export const isTooDeep = (e: unknown): boolean =>
  e instanceof RangeError || (Runtime.isFiberFailure(e) && Cause.squash(e[Runtime.FiberFailureCauseId]) instanceof RangeError)

/** The 400 for a body nested too deeply to validate or rewrite. */
export const nestedTooDeeply = (): InvalidRequest =>
  new InvalidRequest({ message: "The request body is nested too deeply to process", param: null, code: "invalid_json" })

/** Parses JSON text into an object body, or fails with the 400 a client expects. */
export const parseJsonBody = (text: string): Either.Either<Record<string, unknown>, InvalidRequest> => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (e) {
    return Either.left(new InvalidRequest({
      message: `We could not parse the JSON body of your request: ${(e as Error).message}`,
      param: null,
      code: "invalid_json"
    }))
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return Either.left(new InvalidRequest({ message: "The request body must be a JSON object", param: null, code: "invalid_json" }))
  }
  return Either.right(value as Record<string, unknown>)
}
