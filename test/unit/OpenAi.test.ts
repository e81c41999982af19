import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck, Schema } from "effect"
import type { InvalidRequest } from "../../src/domain/Errors.js"
import {
  ChatCompletionRequest,
  EmbeddingRequest,
  embeddingsAsBase64,
  looksLikeChat,
  looksLikeEmbeddings,
  parseChatRequest,
  parseEmbeddingRequest,
  parseJsonBody
} from "../../src/domain/OpenAi.js"
import { modelsOf, prefsOf } from "../../src/policy/Preferences.js"
import { completionAsEvents } from "../../src/router/Router.js"

const left = <A>(e: Either.Either<A, InvalidRequest>): InvalidRequest => {
  if (Either.isRight(e)) throw new Error(`expected a failure, got ${JSON.stringify(e.right)}`)
  return e.left
}

const right = <A>(e: Either.Either<A, InvalidRequest>): A => {
  if (Either.isLeft(e)) throw new Error(`expected success, got ${e.left.message}`)
  return e.right
}

const messages = [{ role: "user", content: "hi" }]

describe("OpenAi.parseChatRequest", () => {
  it("names messages when it is not an array", () => {
    const e = left(parseChatRequest({ model: "m", messages: "hi" }))
    expect(e._tag).toBe("InvalidRequest")
    expect(e.param).toBe("messages")
    expect(e.code).toBe("invalid_value")
    expect(e.message).toContain("'messages'")
  })

  it("reports a missing model as missing_required_parameter", () => {
    const e = left(parseChatRequest({ messages }))
    expect(e.param).toBe("model")
    expect(e.code).toBe("missing_required_parameter")
    expect(e.message).toBe("Missing required parameter: 'model'")
  })

  it("reports missing messages as missing_required_parameter", () => {
    const e = left(parseChatRequest({ model: "m" }))
    expect(e.param).toBe("messages")
    expect(e.code).toBe("missing_required_parameter")
  })

  it("refuses an empty model and an empty messages list, naming the field", () => {
    const model = left(parseChatRequest({ model: "", messages }))
    expect(model.param).toBe("model")
    expect(model.message).toContain("model must be a non-empty string")
    const empty = left(parseChatRequest({ model: "m", messages: [] }))
    expect(empty.param).toBe("messages")
    expect(empty.message).toContain("at least one message")
  })

  it("names the path inside messages", () => {
    const e = left(parseChatRequest({ model: "m", messages: [{ role: "user", content: "a" }, { content: "b" }] }))
    expect(e.param).toBe("messages[1].role")
    expect(e.code).toBe("missing_required_parameter")
  })

  it("names stream, stream_options and tools when they have the wrong type", () => {
    expect(left(parseChatRequest({ model: "m", messages, stream: "yes" })).param).toBe("stream")
    expect(left(parseChatRequest({ model: "m", messages, stream_options: { include_usage: "yes" } })).param).toBe("stream_options.include_usage")
    expect(left(parseChatRequest({ model: "m", messages, tools: {} })).param).toBe("tools")
  })

  it("refuses a body that is not an object without naming a param", () => {
    for (const body of [null, "text", 42, [1]]) {
      const e = left(parseChatRequest(body))
      expect(e.param).toBeNull()
      expect(e.code).toBe("invalid_value")
    }
  })

  it("keeps unknown fields, at the top level and inside messages", () => {
    const body = {
      model: "m",
      messages: [{ role: "tool", content: "42", tool_call_id: "call_1", name: "calc" }],
      temperature: 0.2,
      seed: 7,
      stream: null,
      tools: null,
      response_format: { type: "json_object" },
      venice_parameters: { include_venice_system_prompt: false }
    }
    const snapshot = structuredClone(body)
    const parsed = right(parseChatRequest(body))
    expect(parsed).toEqual(snapshot)
    expect(parsed.temperature).toBe(0.2)
    expect(parsed.venice_parameters).toEqual({ include_venice_system_prompt: false })
    expect(parsed.messages[0]!.tool_call_id).toBe("call_1")
  })
})

describe("OpenAi.parseEmbeddingRequest", () => {
  it("accepts every input shape and keeps unknown fields", () => {
    for (const input of ["a", ["a", "b"], [1, 2, 3], [[1, 2], [3]]]) {
      expect(right(parseEmbeddingRequest({ model: "e", input, dimensions: 8 }))).toEqual({ model: "e", input, dimensions: 8 })
    }
  })

  it("names input when it has the wrong shape, and model when missing", () => {
    const bad = left(parseEmbeddingRequest({ model: "e", input: 3 }))
    expect(bad.param).toBe("input")
    expect(bad.code).toBe("invalid_value")
    const missing = left(parseEmbeddingRequest({ input: "a" }))
    expect(missing.param).toBe("model")
    expect(missing.code).toBe("missing_required_parameter")
  })
})

describe("OpenAi.parseJsonBody", () => {
  it("refuses invalid JSON and non-object bodies as invalid_json", () => {
    expect(left(parseJsonBody("{nope")).code).toBe("invalid_json")
    expect(left(parseJsonBody("[1,2]")).code).toBe("invalid_json")
    expect(left(parseJsonBody("null")).code).toBe("invalid_json")
    expect(right(parseJsonBody("{\"model\":\"m\"}"))).toEqual({ model: "m" })
  })
})

describe("OpenAi shortcuts", () => {
  // Near-valid bodies: each field either right or wrong in one of the ways clients get it wrong.
  const value = FastCheck.oneof(
    FastCheck.constant(undefined),
    FastCheck.constant(null),
    FastCheck.boolean(),
    FastCheck.integer(),
    FastCheck.string({ maxLength: 3 }),
    FastCheck.constant([]),
    FastCheck.constant({}),
    FastCheck.array(FastCheck.anything(), { maxLength: 2 })
  )
  const message = FastCheck.oneof(
    FastCheck.record({ role: FastCheck.constantFrom("user", "system", "assistant", "tool"), content: value }),
    FastCheck.record({ role: value, content: value }, { requiredKeys: [] }),
    value
  )
  const chatBody = FastCheck.record({
    model: FastCheck.oneof(FastCheck.constantFrom("m", "venice+llama-3.3-70b", ""), value),
    messages: FastCheck.oneof(FastCheck.array(message, { maxLength: 3 }), value),
    stream: value,
    stream_options: FastCheck.oneof(FastCheck.record({ include_usage: value }, { requiredKeys: [] }), value),
    tools: value,
    temperature: value
  }, { requiredKeys: [] })
  const embeddingsBody = FastCheck.record({
    model: FastCheck.oneof(FastCheck.constantFrom("e", ""), value),
    input: FastCheck.oneof(FastCheck.array(FastCheck.oneof(FastCheck.string(), value), { maxLength: 3 }), value)
  }, { requiredKeys: [] })

  it("the chat shortcut accepts only what the schema accepts", () => {
    const isChat = Schema.is(ChatCompletionRequest)
    FastCheck.assert(FastCheck.property(FastCheck.oneof(chatBody, FastCheck.anything()), (body) => !looksLikeChat(body) || isChat(body)), {
      numRuns: 5000
    })
  })

  it("the embeddings shortcut accepts only what the schema accepts", () => {
    const isEmbedding = Schema.is(EmbeddingRequest)
    FastCheck.assert(
      FastCheck.property(FastCheck.oneof(embeddingsBody, FastCheck.anything()), (body) => !looksLikeEmbeddings(body) || isEmbedding(body)),
      { numRuns: 5000 }
    )
  })

  it("the shortcuts recognise the bodies clients commonly send", () => {
    expect(looksLikeChat({ model: "m", messages })).toBe(true)
    expect(looksLikeChat({ model: "m", messages, stream: true, stream_options: { include_usage: true }, tools: [], temperature: 0.2 })).toBe(true)
    expect(looksLikeChat({ model: "m", messages, stream: null, stream_options: null, tools: null })).toBe(true)
    expect(looksLikeEmbeddings({ model: "e", input: "a" })).toBe(true)
    expect(looksLikeEmbeddings({ model: "e", input: ["a", "b"] })).toBe(true)
    // Token arrays are left to the schema, which accepts them.
    expect(looksLikeEmbeddings({ model: "e", input: [1, 2] })).toBe(false)
    expect(Either.isRight(parseEmbeddingRequest({ model: "e", input: [1, 2] }))).toBe(true)
  })
})

describe("values nested deeper than the stack", () => {
  // JSON.parse builds them without recursing; everything that walks them recursively must not throw.
  const deep = (): unknown => JSON.parse("[".repeat(200_000) + "]".repeat(200_000))
  const tooDeep = (r: Either.Either<unknown, InvalidRequest>) => {
    expect(Either.isLeft(r)).toBe(true)
    if (Either.isLeft(r)) expect(r.left).toMatchObject({ code: "invalid_json", message: "The request body is nested too deeply to process" })
  }

  it("are a 400 when validating a chat or embeddings body, not a thrown RangeError", () => {
    tooDeep(parseEmbeddingRequest({ model: "e", input: deep() }))
    tooDeep(parseChatRequest({ model: "m", messages: deep() }))
    tooDeep(parseChatRequest({ model: "m", messages: [{ role: "user", content: "x" }], stream: deep() }))
  })

  it("are a 400 in OpenRouter's models and provider fields", () => {
    expect(modelsOf({ models: deep() })).toMatchObject({ code: "invalid_json" })
    expect(prefsOf({ provider: { order: deep() } })).toMatchObject({ code: "invalid_json" })
  })

  it("leave an upstream's whole answer as it came when it cannot be re-serialized as a stream", () => {
    const body = `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"x","extra":${"[".repeat(200_000)}${"]".repeat(200_000)}}}]}`
    expect(completionAsEvents(new Uint8Array(Buffer.from(body)), false)).toBeNull()
  })
})

describe("OpenRouter's models field", () => {
  it("takes a fallback list of at most 64 ids (each is resolved on the request path)", () => {
    expect(modelsOf({ models: Array.from({ length: 64 }, (_, i) => `m${i}`) })).toHaveLength(64)
    expect(modelsOf({ models: Array.from({ length: 65 }, (_, i) => `m${i}`) })).toMatchObject({
      code: "invalid_value",
      param: "models",
      message: "Invalid value for 'models': lists at most 64 models"
    })
  })
})

describe("embeddingsAsBase64", () => {
  const bytes = (v: unknown) => new Uint8Array(Buffer.from(typeof v === "string" ? v : JSON.stringify(v)))
  const decode = (b64: string) => Array.from(new Float32Array(new Uint8Array(Buffer.from(b64, "base64")).buffer))

  it("encodes arrays of numbers as OpenAI does: little-endian float32s in base64, everything else kept", () => {
    const out = embeddingsAsBase64(bytes({ object: "list", data: [{ object: "embedding", index: 0, embedding: [0.5, -1, 1e-3] }], model: "e", usage: { prompt_tokens: 1, total_tokens: 1 } }))
    if (out === null) throw new Error("expected an encoded answer")
    const answer = JSON.parse(Buffer.from(out).toString("utf8"))
    expect(answer).toMatchObject({ object: "list", model: "e", usage: { prompt_tokens: 1, total_tokens: 1 }, data: [{ object: "embedding", index: 0 }] })
    expect(Buffer.from(answer.data[0].embedding, "base64").toString("hex")).toBe("0000003f000080bf6f12833a")
    expect(decode(answer.data[0].embedding)).toEqual([0.5, -1, Math.fround(1e-3)])
  })

  it("reads spaced JSON, and leaves answers already in base64, partial ones and non-answers alone", () => {
    expect(embeddingsAsBase64(bytes(`{"data": [{"embedding" :\n [1, 2]}]}`))).not.toBeNull()
    expect(embeddingsAsBase64(bytes({ data: [{ embedding: "AAAAPw==" }] }))).toBeNull()
    expect(embeddingsAsBase64(bytes({ data: [{ embedding: [1, 2] }, { embedding: "AAAAPw==" }] }))).toBeNull()
    expect(embeddingsAsBase64(bytes({ data: [{ embedding: [1, "2"] }] }))).toBeNull()
    expect(embeddingsAsBase64(bytes({ error: { message: "x" } }))).toBeNull()
    expect(embeddingsAsBase64(bytes(`{"data":[{"embedding":[1,2`))).toBeNull()
  })
})
