/**
 * What a fake provider does, shared by the in-memory fake (`FakeUpstream`) and the HTTP one
 * (`FakeServer`): a behaviour and a request go in, a plan of bytes and delays comes out.
 */

/** How a fake provider answers. Sequences of behaviours play in order; the last one repeats. */
export type FakeBehaviour =
  /** A normal answer: a chat completion (streamed when asked), embeddings or a model list. */
  | {
    readonly mode: "ok"
    /** The assistant's text; default `Hello from <provider>!`. */
    readonly content?: string
    /** Delay before the response starts. */
    readonly firstByteMs?: number
    /** Delay between streamed events. */
    readonly chunkDelayMs?: number
  }
  /**
   * An HTTP error with an optional JSON body (OpenAI's error shape by default) and, for a 429 or
   * 503, an optional `Retry-After` in seconds.
   */
  | {
    readonly mode: "status"
    readonly status: number
    readonly body?: unknown
    readonly firstByteMs?: number
    readonly retryAfter?: number | string
  }
  /**
   * A 200 whose body is an error object (or, for a stream, whose first event is one): the kind of
   * failure some providers send instead of an HTTP error. `code` goes in the error object.
   */
  | { readonly mode: "error200"; readonly code?: number | string; readonly message?: string }
  /** The connection is refused (in-memory) or dropped at once (HTTP). */
  | { readonly mode: "refuse" }
  /** The connection is reset after the request was sent, before any response. */
  | { readonly mode: "reset" }
  /** The request is accepted and never answered. */
  | { readonly mode: "hang" }
  /** A stream that sends `afterChunks` events and then goes silent, or (`cut`) drops the connection. */
  | { readonly mode: "stall" | "cut"; readonly afterChunks: number; readonly content?: string }
  /**
   * A plain answer (a chat completion as JSON, even to a stream request; embeddings) whose status
   * and headers arrive, then the first `afterBytes` bytes of its body (default none), then silence
   * with the connection kept open. A model list (`GET /models`) is answered whole.
   */
  | { readonly mode: "stallBody"; readonly afterBytes?: number; readonly content?: string }

export interface FakeRequest {
  readonly method: string
  /** Path relative to the API root: `/chat/completions`, `/embeddings`, `/models`. */
  readonly path: string
  readonly body: unknown
}

export type Plan =
  | {
    readonly _tag: "Reply"
    readonly status: number
    readonly contentType: string
    readonly firstByteMs: number
    readonly chunks: ReadonlyArray<{ readonly delayMs: number; readonly data: string }>
    /** After the chunks: end normally, go silent, or drop the connection. */
    readonly then: "end" | "hang" | "reset"
    readonly headers?: Readonly<Record<string, string>>
  }
  | { readonly _tag: "Refuse" }
  | { readonly _tag: "Reset" }
  | { readonly _tag: "Hang" }

const created = 1_700_000_000

const lastUserText = (body: Record<string, unknown>): string => {
  const messages = Array.isArray(body.messages) ? body.messages : []
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i] as { role?: unknown; content?: unknown }
    if (m?.role === "user" && typeof m.content === "string") return m.content
  }
  return ""
}

interface ToolCall {
  readonly id: string
  readonly type: "function"
  readonly function: { readonly name: string; readonly arguments: string }
}

/** With tools offered (and `tool_choice` not "none"), the fake calls the first one. */
const toolCallFor = (body: Record<string, unknown>): ToolCall | null => {
  if (!Array.isArray(body.tools) || body.tools.length === 0 || body.tool_choice === "none") return null
  const name = (body.tools[0] as { function?: { name?: unknown } })?.function?.name
  if (typeof name !== "string") return null
  return { id: "call_fake_1", type: "function", function: { name, arguments: JSON.stringify({ query: lastUserText(body) }) } }
}

const usageOf = (prompt: string, content: string) => {
  const prompt_tokens = Math.max(1, Math.ceil(prompt.length / 4))
  const completion_tokens = Math.max(1, Math.ceil(content.length / 4))
  return { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
}

export const chatCompletion = (model: string, content: string, body: Record<string, unknown>) => {
  const tool = toolCallFor(body)
  return {
    id: "chatcmpl-fake",
    object: "chat.completion",
    created,
    model,
    choices: [{
      index: 0,
      message: tool === null
        ? { role: "assistant", content }
        : { role: "assistant", content: null, tool_calls: [tool] },
      finish_reason: tool === null ? "stop" : "tool_calls"
    }],
    usage: usageOf(lastUserText(body), content)
  }
}

/** The events of a streamed answer, `[DONE]` included: role, content in pieces, finish, usage if asked. */
export const chatChunks = (model: string, content: string, body: Record<string, unknown>): Array<string> => {
  const chunk = (delta: unknown, finish: string | null) =>
    JSON.stringify({ id: "chatcmpl-fake", object: "chat.completion.chunk", created, model, choices: [{ index: 0, delta, finish_reason: finish }] })
  const tool = toolCallFor(body)
  const events = [chunk({ role: "assistant", content: "" }, null)]
  if (tool !== null) {
    events.push(chunk({ tool_calls: [{ index: 0, id: tool.id, type: "function", function: { name: tool.function.name, arguments: "" } }] }, null))
    const args = tool.function.arguments
    const half = Math.ceil(args.length / 2)
    for (const piece of [args.slice(0, half), args.slice(half)]) {
      events.push(chunk({ tool_calls: [{ index: 0, function: { arguments: piece } }] }, null))
    }
    events.push(chunk({}, "tool_calls"))
  } else {
    for (const piece of content.match(/\S+\s*|\s+/g) ?? []) events.push(chunk({ content: piece }, null))
    events.push(chunk({}, "stop"))
  }
  const options = body.stream_options as { include_usage?: unknown } | undefined
  if (options?.include_usage === true) {
    events.push(JSON.stringify({ id: "chatcmpl-fake", object: "chat.completion.chunk", created, model, choices: [], usage: usageOf(lastUserText(body), content) }))
  }
  return [...events.map((e) => `data: ${e}\n\n`), "data: [DONE]\n\n"]
}

/** Deterministic 8-dimensional vectors derived from the text, so tests can compare them. */
export const embedding = (text: string): Array<number> => {
  const v = Array.from({ length: 8 }, (_, i) => 0)
  for (let i = 0; i < text.length; i++) v[i % 8] = (v[i % 8]! + text.charCodeAt(i) / 1000) % 1
  return v.map((x) => Math.round(x * 1e6) / 1e6)
}

/** Like OpenAI, `encoding_format: "base64"` (the official client's default) gets little-endian float32s. */
export const embeddings = (model: string, input: unknown, encodingFormat?: unknown) => {
  const inputs = typeof input === "string" ? [input] : Array.isArray(input) ? input.map((x) => (typeof x === "string" ? x : JSON.stringify(x))) : []
  const encode = (v: Array<number>) =>
    encodingFormat === "base64" ? Buffer.from(new Float32Array(v).buffer).toString("base64") : v
  return {
    object: "list",
    data: inputs.map((text, index) => ({ object: "embedding", index, embedding: encode(embedding(text)) })),
    model,
    usage: { prompt_tokens: inputs.join(" ").length, total_tokens: inputs.join(" ").length }
  }
}

export const modelList = (ids: ReadonlyArray<string>) => ({
  object: "list",
  data: ids.map((id) => ({ id, object: "model", created, owned_by: "fake" }))
})

const json = (status: number, value: unknown, firstByteMs = 0): Plan => ({
  _tag: "Reply",
  status,
  contentType: "application/json",
  firstByteMs,
  chunks: [{ delayMs: 0, data: JSON.stringify(value) }],
  then: "end"
})

/** Decides what a fake provider named `name`, serving `models`, does with one request. */
export const plan = (behaviour: FakeBehaviour, request: FakeRequest, name: string, models: ReadonlyArray<string>): Plan => {
  switch (behaviour.mode) {
    case "refuse":
      return { _tag: "Refuse" }
    case "reset":
      return { _tag: "Reset" }
    case "hang":
      return { _tag: "Hang" }
    case "status": {
      const plan = json(
        behaviour.status,
        behaviour.body ?? { error: { message: `fake provider ${name} answered ${behaviour.status}`, type: "fake_error", param: null, code: null } },
        behaviour.firstByteMs
      )
      return behaviour.retryAfter === undefined || plan._tag !== "Reply" ? plan : { ...plan, headers: { "retry-after": String(behaviour.retryAfter) } }
    }
    case "error200": {
      const error = { error: { message: behaviour.message ?? `fake provider ${name} failed inside a 200`, type: "fake_error", param: null, code: behaviour.code ?? 500 } }
      const streamed = (request.body as { stream?: unknown } | undefined)?.stream === true
      return streamed
        ? { _tag: "Reply", status: 200, contentType: "text/event-stream", firstByteMs: 0, chunks: [{ delayMs: 0, data: `data: ${JSON.stringify(error)}\n\n` }], then: "end" }
        : json(200, error)
    }
    case "stallBody": {
      const asked = typeof request.body === "object" && request.body !== null ? { ...request.body, stream: false } : request.body
      const whole = plan({ mode: "ok", ...(behaviour.content === undefined ? {} : { content: behaviour.content }) }, { ...request, body: asked }, name, models)
      if (whole._tag !== "Reply" || request.method === "GET") return whole
      const sent = Buffer.from(whole.chunks.map((c) => c.data).join("")).subarray(0, behaviour.afterBytes ?? 0).toString("utf8")
      return { ...whole, chunks: sent === "" ? [] : [{ delayMs: 0, data: sent }], then: "hang" }
    }
    case "ok":
    case "stall":
    case "cut":
  }
  const body = (typeof request.body === "object" && request.body !== null ? request.body : {}) as Record<string, unknown>
  const model = typeof body.model === "string" ? body.model : "fake-model"
  const content = behaviour.content ?? `Hello from ${name}!`
  const firstByteMs = behaviour.mode === "ok" ? behaviour.firstByteMs ?? 0 : 0
  if (request.method === "GET" && request.path === "/models") return json(200, modelList(models))
  if (request.path === "/embeddings") return json(200, embeddings(model, body.input, body.encoding_format), firstByteMs)
  if (request.path !== "/chat/completions") {
    return json(404, { error: { message: `no route ${request.path}`, type: "invalid_request_error", param: null, code: null } })
  }
  if (body.stream !== true) return json(200, chatCompletion(model, content, body), firstByteMs)
  const chunkDelayMs = behaviour.mode === "ok" ? behaviour.chunkDelayMs ?? 0 : 0
  let events = chatChunks(model, content, body)
  let then: "end" | "hang" | "reset" = "end"
  if (behaviour.mode !== "ok") {
    events = events.slice(0, behaviour.afterChunks)
    then = behaviour.mode === "stall" ? "hang" : "reset"
  }
  return {
    _tag: "Reply",
    status: 200,
    contentType: "text/event-stream",
    firstByteMs,
    chunks: events.map((data, i) => ({ delayMs: i === 0 ? 0 : chunkDelayMs, data })),
    then
  }
}
