/**
 * What a failed attempt means for the request, decided from the failure alone. Pure, so the table
 * in the README can be tested row by row.
 */
import type { UpstreamTransportError } from "../domain/Errors.js"
import { isWhitespace } from "../domain/RawJson.js"

/** `return`: the request itself was refused, so no other backend would do better. */
export type StatusAction = "ok" | "return" | "failover"

/** Statuses that say the provider (its key, credits, rate or health) is the problem, not the request. */
const providerSide = new Set([401, 402, 403, 408, 429])

export const actionOfStatus = (status: number): StatusAction => {
  if (status >= 200 && status < 300) return "ok"
  if (status >= 500 || providerSide.has(status)) return "failover"
  if (status >= 400) return "return"
  // 1xx/3xx answers to an API call mean the endpoint is not what the config says it is.
  return "failover"
}

/** The outcome word used in `X-Router-Attempts` and the request record. */
export const outcomeOfStatus = (status: number): string => {
  if (status >= 200 && status < 300) return "ok"
  if (status === 401 || status === 403) return "auth_error"
  if (status === 402) return "out_of_credits"
  if (status === 429 || status === 408) return "rate_limited"
  if (status >= 500) return "server_error"
  if (status >= 400) return "client_error"
  return "bad_status"
}

export const outcomeOfTransport = (e: UpstreamTransportError): string => {
  switch (e.reason) {
    case "connect":
      return "connect_error"
    case "reset":
      return "connection_reset"
    case "timeout":
      return "timeout"
    case "protocol":
      return "protocol_error"
    case "aborted":
      return "aborted"
    case "local":
      return "local_error"
  }
}

/**
 * The error classes of a failed attempt, each with one action (see the README's "Failure
 * handling" table): `client_error` is returned as is; `context_too_long` goes to a candidate with a
 * larger context window, if one is known; `auth` marks the provider misconfigured; `credits` marks
 * it out of credits; `rate_limited` skips it for that model until Retry-After; `transient` and
 * `stalled` are retried with backoff, then fail over.
 */
export type FailureClass = "client_error" | "context_too_long" | "auth" | "credits" | "rate_limited" | "transient" | "stalled"

export interface Classified {
  readonly class: FailureClass
  /** The outcome word for X-Router-Attempts and the record. */
  readonly outcome: string
  /** For `rate_limited`: how long the provider should be left alone, when the upstream said. */
  readonly retryAfterMs?: number | undefined
  /**
   * For a server error whose message is about the model ("model is loading", "model
   * unavailable"): it counts against that model's breaker, not the whole provider's.
   */
  readonly modelSpecific?: boolean | undefined
}

const modelPattern = /\bmodels?\b/i

/**
 * A 404 saying the model does not exist there (OpenAI's `model_not_found`, Ollama's "try pulling it
 * first", vLLM's "does not exist"): the router's list of that provider's models is out of date.
 */
const missingModelPattern = /model_not_found|no such model|unknown model|try pulling it|\bmodel\b.{0,200}?\b(not found|does not exist|doesn't exist|not available)/i

const creditsPattern = /insufficient[_ ]quota|insufficient[_ ](balance|credits?|funds)|out of credits|credit balance|balance (is )?(too low|exhausted|insufficient)|payment required|billing/i
const contextPattern =
  /context[_ ]length[_ ]exceeded|maximum context length|context window|too many tokens|prompt is too long|exceeds? (the )?(model'?s? )?(maximum |available )?context|exceed_context_size|maximum model length|greater than the context length/i

/**
 * `Retry-After` as milliseconds from `now`: delta-seconds or an HTTP date. `undefined` when absent
 * or unreadable (the caller then uses its configured default).
 */
export const parseRetryAfter = (value: string | ReadonlyArray<string> | undefined, now: number): number | undefined => {
  const v = typeof value === "string" ? value.trim() : value?.[0]?.trim()
  if (v === undefined || v === "") return undefined
  if (/^\d+(\.\d+)?$/.test(v)) return Math.min(maxRetryAfterMs, Math.round(Number(v) * 1000))
  // Only what looks like an HTTP date: V8's Date.parse also reads "-1" or "foo 1" as dates.
  if (!httpDate.test(v)) return undefined
  const at = Date.parse(v)
  return Number.isNaN(at) ? undefined : Math.min(maxRetryAfterMs, Math.max(0, at - now))
}

/**
 * The longest a `Retry-After` parks a provider for a model: a day, past any real quota window
 * (daily limits reset within one), so a bogus value cannot take a provider out for good.
 */
export const maxRetryAfterMs = 24 * 60 * 60 * 1000

/** IMF-fixdate and the two obsolete forms RFC 9110 still accepts: a weekday and an hh:mm:ss time. */
const httpDate = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? .*\b\d{2}:\d{2}:\d{2}\b/

/** What a refused answer means, from its status and (a bounded look at) its body. */
export const classifyRefusal = (status: number, body: string, retryAfterMs: number | undefined): Classified => {
  // Some providers say "no credits" with 400, 403 or 429 (OpenAI: 429 insufficient_quota).
  if (status !== 200 && creditsPattern.test(body) && status !== 404) return { class: "credits", outcome: "out_of_credits" }
  switch (outcomeOfStatus(status)) {
    case "auth_error":
      return { class: "auth", outcome: "auth_error" }
    case "out_of_credits":
      return { class: "credits", outcome: "out_of_credits" }
    case "rate_limited":
      return { class: "rate_limited", outcome: "rate_limited", retryAfterMs }
    case "client_error":
      return status === 400 && contextPattern.test(body)
        ? { class: "context_too_long", outcome: "context_too_long" }
        : status === 404 && missingModelPattern.test(body)
        ? { class: "client_error", outcome: "model_not_found" }
        : { class: "client_error", outcome: "client_error" }
    default:
      return status >= 500 && modelPattern.test(body)
        ? { class: "transient", outcome: outcomeOfStatus(status), modelSpecific: true }
        : { class: "transient", outcome: outcomeOfStatus(status) }
  }
}

/** A transport failure is transient, whatever its kind. */
export const classifyTransport = (e: UpstreamTransportError): Classified => ({ class: "transient", outcome: outcomeOfTransport(e) })

/**
 * Whether an answer's body has the shape of a JSON object: its first and last non-blank bytes are
 * `{` and `}`. Cheap enough for every answer (no parse), and enough to tell a chat or embeddings
 * answer from what a misconfigured or failing backend sends with a 200: an HTML page, an empty
 * body, a cut-off answer, an event stream to a request that asked for none.
 */
export const looksLikeJsonObject = (body: Uint8Array): boolean => {
  let start = 0
  let end = body.byteLength - 1
  while (start <= end && isWhitespace(body[start])) start++
  while (end > start && isWhitespace(body[end])) end--
  return start < end && body[start] === 0x7b && body[end] === 0x7d
}

/**
 * The error an answer or event stands for: its `error`, when it has one and no `choices` (a chunk
 * may carry `"error": null` beside its choices); or, when a choice finished with `"error"`
 * (OpenRouter's mid-generation error, some proxies' failed answers), the `error` beside it, else a
 * description. `undefined` otherwise.
 */
export const inBandError = (parsed: unknown): unknown => {
  if (typeof parsed !== "object" || parsed === null) return undefined
  const { error, choices } = parsed as { error?: unknown; choices?: unknown }
  if (choices === undefined) return error === null ? undefined : error
  if (!Array.isArray(choices) || !choices.some((c) => (c as { finish_reason?: unknown } | null)?.finish_reason === "error")) return undefined
  return error === null || error === undefined ? finishedWithError : error
}

/** The JSON string `"error"`: as a key (an error object) and as a value (`finish_reason`). */
export const errorWord = Buffer.from('"error"')

const finishedWithError = { message: 'the upstream finished the answer with finish_reason "error"' }

/**
 * A 200 whose body is an error object is that error, never a success: an `error` without choices,
 * or a choice that finished with `"error"` (a generation that failed half-way, as OpenRouter and
 * some proxies report it). Either needs the JSON string `"error"`, which an answer's text cannot
 * hold unescaped, so only a body with it is parsed to find out: one byte search on the others.
 */
export const errorInBody = (body: Uint8Array): { readonly status: number; readonly text: string } | null => {
  const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
  if (bytes.indexOf(errorWord) === -1) return null
  const text = bytes.toString("utf8")
  try {
    const error = inBandError(JSON.parse(text))
    return error === undefined ? null : { status: statusOfErrorObject(error), text }
  } catch {
    return null
  }
}

/** The HTTP status an in-band error object stands for: its numeric code, else a reading of its type. */
export const statusOfErrorObject = (error: unknown): number => {
  const e = (typeof error === "object" && error !== null ? error : { message: String(error) }) as { code?: unknown; status?: unknown; type?: unknown }
  for (const c of [e.status, e.code]) {
    const n = typeof c === "number" ? c : typeof c === "string" && /^\d{3}$/.test(c) ? Number(c) : NaN
    if (n >= 400 && n < 600) return n
  }
  const word = `${String(e.type ?? "")} ${String(e.code ?? "")}`.toLowerCase()
  if (/rate|too_many/.test(word)) return 429
  if (/auth|permission|api_key|key/.test(word)) return 401
  if (/quota|credit|billing|payment/.test(word)) return 402
  if (/invalid_request|not_found|context/.test(word)) return 400
  return 500
}
