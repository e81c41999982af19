import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, TestClock } from "effect"
import type { ModelNotFound, UpstreamRejected } from "../../src/domain/Errors.js"
import * as Router from "../../src/router/Router.js"
import { FakeUpstream } from "../../src/testing/FakeUpstream.js"
import { bodyJson, chat, endpoint, failureOf, type Recorded, routerRecording, routerWith } from "./helpers.js"

const config = {
  providers: {
    a: { endpoint: endpoint("a"), models: ["m", "m1"], priority: 1, timeouts: { first_byte: 2 } },
    b: { endpoint: endpoint("b"), models: ["m", "m2", "e"], priority: 2, supports_streaming: false }
  },
  aliases: { smart: ["a+m1", "b+m2"] }
}

const calls = Effect.flatMap(FakeUpstream, (f) => f.calls)

const text = (body: string | Uint8Array | undefined): string =>
  body === undefined ? "" : typeof body === "string" ? body : Buffer.from(body).toString("utf8")

// Fields the router does not know, which must reach the upstream unchanged.
const extras = {
  temperature: 0.7,
  top_p: 1,
  seed: 42,
  tools: [{ type: "function", function: { name: "lookup", description: "find", parameters: { type: "object", properties: { q: { type: "string" } } } } }],
  tool_choice: "auto",
  response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object" } } },
  venice_parameters: { include_venice_system_prompt: false, enable_web_search: "auto" },
  messages: [
    { role: "system", content: "be brief" },
    { role: "user", content: "hi", name: "bob" }
  ]
}

describe("body forwarding", () => {
  it.effect("when the upstream model is the requested one, the raw bytes go as they are", () => {
    const recorded: Recorded = { calls: [] }
    // Formatting JSON.stringify would not reproduce: spaces, key order, `1.0`.
    const rawText = `{ "messages": [ {"role":"user","content":"hi"} ],\n  "model": "m", "temperature": 1.0, "x_vendor": {"k": [1, 2]} }`
    const raw = new Uint8Array(Buffer.from(rawText))
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const request = JSON.parse(rawText)
      const reply = yield* router.chat({ request, raw })
      expect(reply.provider).toBe("a")
      expect(text(recorded.calls[0]!.body)).toBe(rawText)
    }).pipe(Effect.provide(routerRecording(config, recorded)))
  })

  it.effect("the raw bytes go to every candidate that serves the same model name", () => {
    const recorded: Recorded = { calls: [] }
    const rawText = `{"model":"m",  "messages":[{"role":"user","content":"hi"}]}`
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: JSON.parse(rawText), raw: new Uint8Array(Buffer.from(rawText)) })
      expect(reply.provider).toBe("b")
      expect(recorded.calls.map((c) => [c.provider.id, text(c.body)])).toEqual([["a", rawText], ["b", rawText]])
    }).pipe(Effect.provide(routerRecording(config, recorded, { a: { behaviour: { mode: "status", status: 503 } } })))
  })

  it.effect("without raw bytes the decoded request is sent, every field kept", () => {
    const recorded: Recorded = { calls: [] }
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const request = chat("m", extras)
      yield* router.chat({ request })
      expect(JSON.parse(text(recorded.calls[0]!.body))).toEqual(request)
    }).pipe(Effect.provide(routerRecording(config, recorded)))
  })

  it.effect("for an alias, model is replaced per candidate and every other field is unchanged", () => {
    const recorded: Recorded = { calls: [] }
    const rawText = JSON.stringify(chat("smart", extras), null, 2)
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const request = chat("smart", extras)
      const snapshot = structuredClone(request)
      const reply = yield* router.chat({ request, raw: new Uint8Array(Buffer.from(rawText)) })
      expect(reply.provider).toBe("b")
      expect(reply.upstreamModel).toBe("m2")
      const [toA, toB] = recorded.calls.map((c) => JSON.parse(text(c.body)))
      expect(toA).toEqual({ ...snapshot, model: "m1" })
      expect(toB).toEqual({ ...snapshot, model: "m2" })
      expect(Object.keys(toA)).toEqual(Object.keys(snapshot))
      // The caller's request is left as it was.
      expect(request).toEqual(snapshot)
      expect((yield* calls).map((c) => (c.body as { model: string }).model)).toEqual(["m1", "m2"])
    }).pipe(Effect.provide(routerRecording(config, recorded, { a: { behaviour: { mode: "status", status: 500 } } })))
  })

  it.effect("for a pinned id, model is replaced and tools, response_format and venice_parameters are unchanged", () => {
    const recorded: Recorded = { calls: [] }
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const request = chat("a+m", extras)
      const rawText = JSON.stringify(request)
      yield* router.chat({ request, raw: new Uint8Array(Buffer.from(rawText)) })
      const sent = JSON.parse(text(recorded.calls[0]!.body))
      expect(sent.model).toBe("m")
      expect(sent.temperature).toBe(0.7)
      expect(sent.seed).toBe(42)
      expect(sent.tools).toEqual(extras.tools)
      expect(sent.tool_choice).toBe("auto")
      expect(sent.response_format).toEqual(extras.response_format)
      expect(sent.venice_parameters).toEqual(extras.venice_parameters)
      expect(sent.messages).toEqual(extras.messages)
      expect(sent).toEqual({ ...request, model: "m" })
    }).pipe(Effect.provide(routerRecording(config, recorded)))
  })
})

describe("rewritten bodies keep the client's bytes", () => {
  // What JSON.parse + JSON.stringify would change: a seed past 2^53, `1.0`, `1e400`, escapes, spacing.
  const members = `"seed": 9007199254740993, "temperature":1.0,"top_p":1e-7, "x":1e400,\n  "logit_bias":{"50256":-100},` +
    `"messages":[{"role":"user","content":"caf\\u00e9 \\ud83d\\ude00 \\/ \\"q\\""}]`

  it.effect("for an alias, only the model's value changes, per candidate", () => {
    const recorded: Recorded = { calls: [] }
    const rawText = `{ "model" : "smart", ${members} }`
    return Effect.gen(function* () {
      const router = yield* Router.Router
      yield* router.chat({ request: JSON.parse(rawText), raw: new Uint8Array(Buffer.from(rawText)) })
      expect(recorded.calls.map((c) => text(c.body))).toEqual([
        `{ "model" : "m1", ${members} }`,
        `{ "model" : "m2", ${members} }`
      ])
    }).pipe(Effect.provide(routerRecording(config, recorded, { a: { behaviour: { mode: "status", status: 500 } } })))
  })

  it.effect("for a pinned id with OpenRouter's fields and a clamped max_tokens, only those members change", () => {
    const recorded: Recorded = { calls: [] }
    const clamping = { providers: { a: { endpoint: endpoint("a"), models: ["m"], model_overrides: { m: { max_output_tokens: 100 } } } } }
    const rawText = `{"provider":{"order":["a"]},"model":"a+m","max_tokens":4096, ${members},"models":["a+m"]}`
    return Effect.gen(function* () {
      const router = yield* Router.Router
      yield* router.chat({ request: JSON.parse(rawText), raw: new Uint8Array(Buffer.from(rawText)) })
      expect(text(recorded.calls[0]!.body)).toBe(`{"model":"m","max_tokens":100, ${members}}`)
    }).pipe(Effect.provide(routerRecording(clamping, recorded)))
  })

  it.effect("a model named only in `models` is added, the client's bytes otherwise kept", () => {
    const recorded: Recorded = { calls: [] }
    const rawText = `{"models":["m"], ${members}}`
    // As the HTTP edge does (`modelFromModels`): the decoded request gets `model` from `models`.
    const request = { ...JSON.parse(rawText), model: "m" }
    return Effect.gen(function* () {
      const router = yield* Router.Router
      yield* router.chat({ request, raw: new Uint8Array(Buffer.from(rawText)) })
      expect(text(recorded.calls[0]!.body)).toBe(`{"model":"m",${members}}`)
    }).pipe(Effect.provide(routerRecording(config, recorded)))
  })
})

describe("request ids", () => {
  it.effect("the request id goes upstream with every attempt", () => {
    const recorded: Recorded = { calls: [] }
    return Effect.gen(function* () {
      const router = yield* Router.Router
      yield* router.chat({ request: chat("m"), requestId: "req-123" })
      expect(recorded.calls.map((c) => [c.provider.id, c.method, c.path, c.stream, c.requestId])).toEqual([
        ["a", "POST", "/chat/completions", false, "req-123"],
        ["b", "POST", "/chat/completions", false, "req-123"]
      ])
    }).pipe(Effect.provide(routerRecording(config, recorded, { a: { behaviour: { mode: "status", status: 500 } } })))
  })
})

describe("interruption", () => {
  it.effect("interrupting the request while the upstream hangs aborts the call, and no one else is tried", () => {
    const recorded: Recorded = { calls: [] }
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("m") }))
      yield* TestClock.adjust("1 second")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", false]])
      yield* Fiber.interrupt(fiber)
      expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", true]])
      expect(recorded.calls[0]!.abort?.aborted).toBe(true)
      // The first-byte timer went with the request: nothing happens when it would have fired.
      yield* TestClock.adjust("1 hour")
      expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", true]])
    }).pipe(Effect.provide(routerRecording(config, recorded, { a: { behaviour: { mode: "hang" } } })))
  })

  it.effect("interrupting during the second candidate aborts that call", () => {
    const recorded: Recorded = { calls: [] }
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("m") }))
      yield* TestClock.adjust("500 millis")
      expect(recorded.calls.map((c) => c.provider.id)).toEqual(["a", "b"])
      yield* Fiber.interrupt(fiber)
      expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", false], ["b", true]])
      expect(recorded.calls[1]!.abort?.aborted).toBe(true)
    }).pipe(Effect.provide(routerRecording(config, recorded, { a: { behaviour: { mode: "status", status: 500 } }, b: { behaviour: { mode: "hang" } } })))
  })
})

describe("embeddings", () => {
  it.effect("are routed to /embeddings and answered as JSON", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.embeddings({ request: { model: "e", input: ["alpha", "beta"] } })
      expect(reply._tag).toBe("Json")
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["b:ok"])
      const body = bodyJson(reply)
      expect(body.object).toBe("list")
      expect(body.model).toBe("e")
      expect(body.data.map((d: { index: number }) => d.index)).toEqual([0, 1])
      expect(body.data[0].embedding).toHaveLength(8)
      expect(body.data[0].embedding).not.toEqual(body.data[1].embedding)
      const seen = yield* calls
      expect(seen.map((c) => [c.provider, c.path])).toEqual([["b", "/embeddings"]])
      expect(seen[0]!.body).toEqual({ model: "e", input: ["alpha", "beta"] })
    }).pipe(Effect.provide(routerWith(config))))

  it.effect("fail over like chat, ignoring chat capabilities (b does not stream)", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.embeddings({ request: { model: "m", input: "x", encoding_format: "float" } })
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:server_error", "b:ok"])
      expect((yield* calls).map((c) => [c.provider, c.path, (c.body as { encoding_format?: string }).encoding_format])).toEqual([
        ["a", "/embeddings", "float"],
        ["b", "/embeddings", "float"]
      ])
    }).pipe(Effect.provide(routerWith(config, { a: { behaviour: { mode: "status", status: 502 } } }))))

  it.effect("pass raw bytes through when the model name is unchanged", () => {
    const recorded: Recorded = { calls: [] }
    const rawText = `{"input": "x",   "model": "e"}`
    return Effect.gen(function* () {
      const router = yield* Router.Router
      yield* router.embeddings({ request: { model: "e", input: "x" }, raw: new Uint8Array(Buffer.from(rawText)) })
      expect(text(recorded.calls[0]!.body)).toBe(rawText)
    }).pipe(Effect.provide(routerRecording(config, recorded)))
  })

  it.effect("an unknown model is ModelNotFound, a 400 is UpstreamRejected", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const missing = yield* failureOf(router.embeddings({ request: { model: "nope", input: "x" } }))
      expect(missing._tag).toBe("ModelNotFound")
      expect((missing as ModelNotFound).model).toBe("nope")
      const rejected = yield* failureOf(router.embeddings({ request: { model: "e", input: "x" } }))
      expect(rejected._tag).toBe("UpstreamRejected")
      expect((rejected as UpstreamRejected).status).toBe(400)
      expect((yield* calls).map((c) => c.provider)).toEqual(["b"])
    }).pipe(Effect.provide(routerWith(config, { b: { behaviour: { mode: "status", status: 400 } } }))))
})
