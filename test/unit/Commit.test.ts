/**
 * The streaming commit point: an answer is committed by its first event carrying content, a
 * tool-call delta, a finish or [DONE]; everything before that (a role-only preamble, comments) is
 * held back, and any failure before it moves to the next candidate without the client seeing it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import { completionAsEvents, preamble } from "../../src/router/Router.js"
import * as Router from "../../src/router/Router.js"
import { chat, chunkedUpstream, collector, dataLines, joinNow, routerOver, routerWith } from "./helpers.js"

const bytes = (s: string) => new Uint8Array(Buffer.from(s))
const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
  `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`

describe("preamble (what the first events of a stream say)", () => {
  it("waits on a partial event, a comment, a role-only delta, an empty delta or a usage-only chunk", () => {
    expect(preamble(bytes("data: {\"id\":"))).toBe("wait")
    expect(preamble(bytes(": keep-alive\n\n"))).toBe("wait")
    expect(preamble(bytes(chunk({ role: "assistant", content: "" })))).toBe("wait")
    expect(preamble(bytes(chunk({})))).toBe("wait")
    expect(preamble(bytes(`data: ${JSON.stringify({ choices: [], usage: { total_tokens: 3 } })}\n\n`))).toBe("wait")
  })

  it("commits on content, a tool-call delta, reasoning, a finish, [DONE], or an event it does not know", () => {
    expect(preamble(bytes(chunk({ role: "assistant", content: "" }) + chunk({ content: "Hi" })))).toBe("commit")
    expect(preamble(bytes(chunk({ tool_calls: [{ index: 0, function: { name: "f", arguments: "" } }] })))).toBe("commit")
    expect(preamble(bytes(chunk({ reasoning_content: "thinking" })))).toBe("commit")
    expect(preamble(bytes(chunk({}, "stop")))).toBe("commit")
    expect(preamble(bytes("data: [DONE]\n\n"))).toBe("commit")
    expect(preamble(bytes("data: {\"n\":1}\n\n"))).toBe("commit")
    // JSON that is no object at all is passed on the same way (it threw, and the request was a 500).
    expect(preamble(bytes("data: null\n\n"))).toBe("commit")
    expect(preamble(bytes("data: 5\n\n"))).toBe("commit")
  })

  it("commits on any delta field besides the role (reasoning, a legacy function call, audio, …), not on empty ones", () => {
    expect(preamble(bytes(chunk({ reasoning: "thinking" })))).toBe("commit")
    expect(preamble(bytes(chunk({ function_call: { name: "f", arguments: "" } })))).toBe("commit")
    expect(preamble(bytes(chunk({ audio: { id: "a1", data: "UklGR" } })))).toBe("commit")
    expect(preamble(bytes(chunk({ images: [{ type: "image_url" }] })))).toBe("commit")
    expect(preamble(bytes(chunk({ role: "assistant", content: null, refusal: null, tool_calls: [], reasoning: "" })))).toBe("wait")
    expect(preamble(bytes(chunk({ role: "assistant", function_call: {} })))).toBe("wait")
    // A choice of a shape the router does not know is passed on, like any unknown event.
    expect(preamble(bytes(`data: ${JSON.stringify({ choices: [null] })}\n\n`))).toBe("commit")
  })

  it("reads events the same with \\r\\n or bare \\r line endings", () => {
    const cr = (s: string) => s.replace(/\n/g, "\r")
    const crlf = (s: string) => s.replace(/\n/g, "\r\n")
    for (const eol of [cr, crlf]) {
      expect(preamble(bytes(eol(chunk({ role: "assistant", content: "" }))))).toBe("wait")
      expect(preamble(bytes(eol(chunk({ role: "assistant", content: "" }) + chunk({ content: "Hi" }))))).toBe("commit")
      expect(preamble(bytes(eol(": keep-alive\n\ndata: [DONE]\n\n")))).toBe("commit")
      const verdict = preamble(bytes(eol(`data: ${JSON.stringify({ error: { message: "busy", code: 503 } })}\n\n`)))
      expect(typeof verdict === "object" && verdict.status).toBe(503)
    }
  })

  it("reads a choice that finished with \"error\" as the error beside it (OpenRouter), or as a server error", () => {
    const openRouter = { id: "c", error: { code: 502, message: "Provider returned error" }, choices: [{ index: 0, delta: { content: "" }, finish_reason: "error" }] }
    const verdict = preamble(bytes(`: OPENROUTER PROCESSING\n\ndata: ${JSON.stringify(openRouter)}\n\n`))
    if (typeof verdict === "string") throw new Error(`expected an error verdict, got ${verdict}`)
    expect(verdict.status).toBe(502)
    expect(JSON.parse(Buffer.from(verdict.body).toString()).error.message).toBe("Provider returned error")
    const bare = preamble(bytes(chunk({}, "error")))
    expect(typeof bare === "object" && bare.status).toBe(500)
  })

  it("describes an error event nested deeper than it can be quoted, rather than failing", () => {
    const deep = "[".repeat(200_000) + "]".repeat(200_000)
    const verdict = preamble(bytes(`data: {"error":{"code":503,"message":"down","details":${deep}}}\n\n`))
    if (typeof verdict === "string") throw new Error(`expected an error verdict, got ${verdict}`)
    expect(verdict.status).toBe(503)
    expect(JSON.parse(Buffer.from(verdict.body).toString()).error.message).toBe("an error event nested too deeply to quote")
  })

  it("reads an error event as the HTTP error it stands for", () => {
    const verdict = preamble(bytes(`data: ${JSON.stringify({ error: { message: "slow down", code: 429 } })}\n\n`))
    expect(verdict).not.toBe("wait")
    expect(verdict).not.toBe("commit")
    if (typeof verdict === "string") return
    expect(verdict.status).toBe(429)
    expect(JSON.parse(Buffer.from(verdict.body).toString())).toEqual({ error: { message: "slow down", code: 429 } })
  })
})

/** A first event of 3 MiB (a whole answer, or an image, in one event). */
const big = chunk({ content: "x".repeat(3 * 1024 * 1024) })
const mib = "x".repeat(1024 * 1024)
const pieces = (text: string, size: number) => Array.from({ length: Math.ceil(text.length / size) }, (_, i) => text.slice(i * size, i * size + size))

const two = { providers: { a: { endpoint: "http://127.0.0.1:1/v1", models: ["m"], priority: 1, timeouts: { first_byte: 2, idle: 3 } }, b: { endpoint: "http://127.0.0.1:2/v1", models: ["m"], priority: 2 } } }

describe("the commit point, through the router", () => {
  it.effect("a stream that starts with reasoning is passed on from its first reasoning event, not held until content", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      // Nothing follows the reasoning: held back, it would wait for the idle limit, then fail over to b.
      const reply = yield* joinNow(yield* Effect.fork(router.chat({ request: chat("m", { stream: true }) })))
      expect(reply.provider).toBe("a")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:ok"])
      if (reply._tag !== "Stream") throw new Error("expected a stream")
      const out = collector()
      const piping = yield* Effect.fork(reply.pipe(out.writer))
      yield* Effect.yieldNow()
      expect(out.text()).toContain("\"reasoning\":\"Let me think.\"")
      yield* Fiber.interrupt(piping)
    }).pipe(Effect.provide(routerOver(two, chunkedUpstream({
      a: { chunks: [chunk({ role: "assistant", content: "" }), chunk({ reasoning: "Let me think." })], then: "hang" }
    })))))

  it.effect("a first event larger than 1 MiB, arriving in many chunks, is passed on whole", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m", { stream: true }) })
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:ok"])
      if (reply._tag !== "Stream") throw new Error("expected a stream")
      const out = collector()
      yield* reply.pipe(out.writer)
      expect(out.text()).toBe(big + chunk({}, "stop") + "data: [DONE]\n\n")
    }).pipe(Effect.provide(routerOver(two, chunkedUpstream({
      a: { chunks: [...pieces(big, 64 * 1024), chunk({}, "stop"), "data: [DONE]\n\n"], then: "end" }
    })))))

  it.effect("a first event still arriving past 32 MiB is cut off (protocol_error), not held without bound", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* joinNow(yield* Effect.fork(router.chat({ request: chat("m", { stream: true }) })))
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:protocol_error", "b:ok"])
      expect(reply.attempts[0]!.detail).toBe("stream event larger than 32 MiB before any content")
    }).pipe(Effect.provide(routerOver(two, chunkedUpstream({
      a: { chunks: ["data: {\"choices\":[{\"delta\":{\"content\":\"", ...Array.from({ length: 33 }, () => mib)], then: "hang" }
    })))))

  it.effect("a stream whose first event is an error beside a choice finished with \"error\" fails over invisibly", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m", { stream: true }) })
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:server_error", "b:ok"])
    }).pipe(Effect.provide(routerOver(two, chunkedUpstream({
      a: {
        chunks: [`data: ${JSON.stringify({ id: "c", error: { code: "server_error", message: "Provider disconnected" }, choices: [{ index: 0, delta: { content: "" }, finish_reason: "error" }] })}\n\n`, "data: [DONE]\n\n"],
        then: "end"
      }
    })))))

  it.effect("more than 1 MiB of whole events without content fails over as a bad response", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m", { stream: true }) })
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:bad_response", "b:ok"])
      expect(reply.attempts[0]!.detail).toBe("stream sent 1 MiB without any content")
    }).pipe(Effect.provide(routerOver(two, chunkedUpstream({
      a: { chunks: Array.from({ length: 1100 }, () => chunk({ role: "assistant", content: "", padding: null }) + ": " + "x".repeat(1000) + "\n\n"), then: "hang" }
    })))))

  it.effect("a role-only preamble followed by silence fails over on idle, and the client never sees the preamble", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const routing = yield* Effect.fork(router.chat({ request: chat("m", { stream: true }) }))
      yield* TestClock.adjust("2999 millis")
      yield* TestClock.adjust("1 millis")
      const reply = yield* joinNow(routing)
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:stalled", "b:ok"])
      if (reply._tag !== "Stream") throw new Error("expected a stream")
      const out = collector()
      yield* reply.pipe(out.writer)
      expect(out.text()).not.toContain("\"from\":\"a\"")
      expect(dataLines(out.text()).at(-1)).toBe("[DONE]")
    }).pipe(Effect.provide(routerOver(two, chunkedUpstream({ a: { chunks: [chunk({ role: "assistant", content: "" })], then: "hang" } })))))

  it.effect("an error event before any content fails over, classified by the error it carries", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m", { stream: true }) })
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:rate_limited", "b:ok"])
    }).pipe(Effect.provide(routerWith(two, { a: { behaviour: { mode: "error200", code: 429 } } }))))

  it.effect("a 200 whose body is an error object fails over, never passed on as success", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m") })
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:server_error", "b:ok"])
    }).pipe(Effect.provide(routerWith(two, { a: { behaviour: { mode: "error200", code: 503 } } }))))

  it.effect("a whole answer whose choice finished with \"error\" fails over, never passed on as success", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m") })
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:server_error", "b:ok"])
      expect(reply.attempts[0]!.detail).toContain("Provider disconnected")
    }).pipe(Effect.provide(routerWith(two, {
      a: {
        behaviour: {
          mode: "status",
          status: 200,
          body: {
            id: "chatcmpl-a",
            object: "chat.completion",
            choices: [{ index: 0, message: { role: "assistant", content: "Half an ans" }, finish_reason: "error" }],
            error: { code: "server_error", message: "Provider disconnected" }
          }
        }
      }
    }))))

  it.effect("a 200 carrying a request error is returned as that error, not retried elsewhere", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* Effect.flip(router.chat({ request: chat("m") }))
      expect(error._tag).toBe("UpstreamRejected")
      if (error._tag !== "UpstreamRejected") return
      expect(error.status).toBe(400)
      expect(error.attempts.map((a) => a.provider)).toEqual(["a"])
    }).pipe(Effect.provide(routerWith(two, { a: { behaviour: { mode: "error200", code: 400 } } }))))

  it.effect("after the commit point, silence longer than idle ends the stream with StreamInterrupted", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m", { stream: true }) })
      expect(reply.provider).toBe("a")
      if (reply._tag !== "Stream") throw new Error("expected a stream")
      const out = collector()
      const piping = yield* Effect.fork(Effect.flip(reply.pipe(out.writer)))
      yield* TestClock.adjust("3 seconds")
      const error = yield* joinNow(piping)
      expect(error.detail).toBe("no data for 3000 ms (stalled)")
      expect(out.text()).toContain("\"content\":\"Hi\"")
      expect(out.text()).not.toContain("[DONE]")
    }).pipe(Effect.provide(routerOver(two, chunkedUpstream({
      a: { chunks: [chunk({ role: "assistant", content: "" }), chunk({ content: "Hi" })], then: "hang" }
    })))))
})

describe("completionAsEvents (a whole answer to a streaming request, as a stream)", () => {
  const completion = {
    id: "chatcmpl-9",
    object: "chat.completion",
    created: 7,
    model: "m",
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "f", arguments: "{\"a\":1}" } }] },
        finish_reason: "tool_calls"
      }
    ],
    usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 }
  }
  const events = (body: unknown, includeUsage: boolean) => {
    const out = completionAsEvents(bytes(JSON.stringify(body)), includeUsage)
    return out === null ? null : Buffer.from(out).toString("utf8").split("\n\n").filter((e) => e !== "").map((e) => e.replace(/^data: /, ""))
  }

  it("is one chunk with each message as its delta (tool calls numbered), then [DONE]", () => {
    const out = events(completion, false)!
    expect(out).toHaveLength(2)
    expect(out[1]).toBe("[DONE]")
    expect(JSON.parse(out[0]!)).toEqual({
      id: "chatcmpl-9",
      object: "chat.completion.chunk",
      created: 7,
      model: "m",
      choices: [{
        index: 0,
        delta: { role: "assistant", content: null, tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "f", arguments: "{\"a\":1}" } }] },
        logprobs: null,
        finish_reason: "tool_calls"
      }]
    })
  })

  it("adds the usage chunk only when it was asked for", () => {
    const out = events(completion, true)!
    expect(out).toHaveLength(3)
    expect(JSON.parse(out[1]!)).toMatchObject({ object: "chat.completion.chunk", choices: [], usage: completion.usage })
  })

  it("is null for what is not a chat completion", () => {
    expect(events({ object: "list", data: [] }, false)).toBeNull()
    expect(completionAsEvents(bytes("{not json"), false)).toBeNull()
  })
})
