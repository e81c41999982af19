import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Fiber, TestClock } from "effect"
import type { AllCandidatesFailed, StreamInterrupted } from "../../src/domain/Errors.js"
import * as Health from "../../src/health/Health.js"
import * as Router from "../../src/router/Router.js"
import { FakeUpstream } from "../../src/testing/FakeUpstream.js"
import * as Script from "../../src/testing/Script.js"
import { chat, chunkedUpstream, collector, dataLines, endpoint, failureOf, joinNow, type Recorded, routerOver, routerOverWithHealth, routerRecording, routerWith } from "./helpers.js"

const two = {
  providers: {
    a: { endpoint: endpoint("a"), models: ["m"], priority: 1, timeouts: { first_byte: 2 } },
    b: { endpoint: endpoint("b"), models: ["m"], priority: 2 }
  }
}

const calls = Effect.flatMap(FakeUpstream, (f) => f.calls)

const streamOf = (reply: Router.Reply): Router.StreamReply => {
  if (reply._tag !== "Stream") throw new Error(`expected a Stream reply, got ${reply._tag}`)
  return reply
}

/** A chat chunk, as an event. */
const event = (delta: Record<string, unknown>, finish: string | null = null) =>
  `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`

const tricky = event({ content: "data: [DONE]\n\n\"finish_reason\":\"stop\", {\"error\": 1}" })

/** Idle shorter than the gaps between the pieces of a slow answer. */
const slowIdle = { providers: { ...two.providers, a: { ...two.providers.a, timeouts: { first_byte: 2, idle: 3 } } } }

const pieces = (text: string, n: number) => Array.from({ length: n }, (_, i) => text.slice(Math.floor((i * text.length) / n), Math.floor(((i + 1) * text.length) / n)))

const contentOf = (events: ReadonlyArray<string>) =>
  events.filter((e) => e !== "[DONE]").map((e) => JSON.parse(e).choices[0]?.delta?.content ?? "").join("")

describe("streaming replies", () => {
  it.effect("pipe writes whole SSE events and ends with data: [DONE]", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = streamOf(yield* router.chat({ request: chat("m", { stream: true }) }))
      expect(reply.provider).toBe("a")
      expect(reply.status).toBe(200)
      expect(reply.contentType).toContain("text/event-stream")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:ok"])
      const out = collector()
      yield* reply.pipe(out.writer)
      for (const c of out.chunks) expect(c.toString("utf8").endsWith("\n\n")).toBe(true)
      const events = dataLines(out.text())
      expect(events.at(-1)).toBe("[DONE]")
      expect(out.text().endsWith("data: [DONE]\n\n")).toBe(true)
      expect(JSON.parse(events[0]!).choices[0].delta.role).toBe("assistant")
      expect(contentOf(events)).toBe("Hello from a!")
      expect(events.some((e) => e !== "[DONE]" && JSON.parse(e).usage !== undefined)).toBe(false)
    }).pipe(Effect.provide(routerWith(two))))

  it.effect("with stream_options.include_usage the usage chunk comes through before [DONE]", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = streamOf(yield* router.chat({ request: chat("m", { stream: true, stream_options: { include_usage: true } }) }))
      const out = collector()
      yield* reply.pipe(out.writer)
      const events = dataLines(out.text())
      expect(events.at(-1)).toBe("[DONE]")
      const usage = JSON.parse(events.at(-2)!)
      expect(usage.choices).toEqual([])
      expect(usage.usage.total_tokens).toBe(usage.usage.prompt_tokens + usage.usage.completion_tokens)
      expect(usage.usage.completion_tokens).toBeGreaterThan(0)
    }).pipe(Effect.provide(routerWith(two))))

  it.effect("a cut after N events fails pipe with StreamInterrupted, after exactly the N whole events", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = streamOf(yield* router.chat({ request: chat("m", { stream: true }) }))
      expect(reply.provider).toBe("a")
      const out = collector()
      const error: StreamInterrupted = yield* failureOf(reply.pipe(out.writer))
      expect(error._tag).toBe("StreamInterrupted")
      expect(error.provider).toBe("a")
      expect(error.detail).toBe("connection reset by upstream")
      for (const c of out.chunks) expect(c.toString("utf8").endsWith("\n\n")).toBe(true)
      const events = dataLines(out.text())
      expect(events).toHaveLength(3)
      expect(events).not.toContain("[DONE]")
      // The failover is over once the answer has begun: b is never asked.
      expect((yield* calls).map((c) => c.provider)).toEqual(["a"])
    }).pipe(Effect.provide(routerWith(two, { a: { behaviour: { mode: "cut", afterChunks: 3 } } }))))

  it.effect("a cut before the first event fails over (connection_reset)", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = streamOf(yield* router.chat({ request: chat("m", { stream: true }) }))
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:connection_reset", "b:ok"])
      const out = collector()
      yield* reply.pipe(out.writer)
      expect(contentOf(dataLines(out.text()))).toBe("Hello from b!")
    }).pipe(Effect.provide(routerWith(two, { a: { behaviour: { mode: "cut", afterChunks: 0 } } }))))

  it.effect("a stream that ends before its first event fails over (empty_stream)", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = streamOf(yield* router.chat({ request: chat("m", { stream: true }) }))
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => [a.provider, a.outcome, a.status])).toEqual([["a", "empty_stream", 200], ["b", "ok", 200]])
    }).pipe(Effect.provide(routerOver(two, chunkedUpstream({ a: { chunks: [], then: "end" } })))))

  it.effect("a stream mode request answered with JSON is a JSON reply", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m", { stream: true }) })
      expect(reply._tag).toBe("Json")
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:server_error", "b:ok"])
    }).pipe(Effect.provide(routerWith(two, { a: { behaviour: { mode: "status", status: 500 } }, b: { behaviour: { mode: "status", status: 200, body: { ok: true } } } }))))

  it.effect("a plain answer to a stream request, arriving slowly, is read whole under total, not cut as idle", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const routing = yield* Effect.fork(router.chat({ request: chat("m", { stream: true }) }))
      for (let i = 0; i < 3; i++) yield* TestClock.adjust("2 seconds")
      const reply = yield* joinNow(routing)
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:ok"])
    }).pipe(Effect.provide(routerOver(slowIdle, chunkedUpstream({
      a: { headers: { "content-type": "application/json" }, chunks: pieces(JSON.stringify(Script.chatCompletion("m", "Hi", {})), 4), gapMs: 2000, then: "end" }
    })))))

  it.effect("of two content types (a proxy adding its own), the last says what the answer is", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = streamOf(yield* router.chat({ request: chat("m", { stream: true }) }))
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:ok"])
    }).pipe(Effect.provide(routerOver(two, chunkedUpstream({
      a: { headers: { "content-type": ["text/plain", "text/event-stream"] }, chunks: [event({ content: "Hi" }, "stop"), "data: [DONE]\n\n"], then: "end" }
    })))))

  for (const stream of [false, true]) {
    it.effect(`an answer compressed though the router asked for none fails over, saying so (${stream ? "stream" : "plain"})`, () =>
      Effect.gen(function* () {
        const router = yield* Router.Router
        const reply = yield* router.chat({ request: chat("m", { stream }) })
        expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:bad_response", "b:ok"])
        expect(reply.attempts[0]!.detail).toBe("HTTP 200 encoded as gzip, though the router asked for no encoding")
      }).pipe(Effect.provide(routerOver(two, chunkedUpstream({
        a: {
          headers: { "content-type": stream ? "text/event-stream" : "application/json", "content-encoding": "gzip" },
          chunks: ["\u001f\u008b\u0008\u0000 compressed bytes"],
          then: "end"
        },
        ...(stream ? {} : { b: { headers: { "content-type": "application/json" }, chunks: [JSON.stringify(Script.chatCompletion("m", "Hi", {}))], then: "end" } })
      })))))
  }

  it.effect("events split across chunks are written whole; a partial event before a reset is never written", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = streamOf(yield* router.chat({ request: chat("m", { stream: true }) }))
      expect(reply.provider).toBe("a")
      const out = collector()
      const error = yield* failureOf(reply.pipe(out.writer))
      expect(error._tag).toBe("StreamInterrupted")
      expect(out.chunks.map((c) => c.toString("utf8"))).toEqual(["data: {\"n\":1}\n\n", "data: {\"n\":2}\n\ndata: {\"n\":3}\n\n"])
      expect(out.text()).not.toContain("\"n\":4")
    }).pipe(Effect.provide(routerOver(two, chunkedUpstream({
      a: { chunks: ["data: {\"n\":1}\n\ndata: {\"n\"", ":2}\n\ndata: {\"n\":3}\n\n", "data: {\"n\":4"], then: "reset" }
    })))))

  describe("how an answer ends", () => {
    const role = event({ role: "assistant", content: "" })
    const words = event({ content: "The answer is" })
    const stop = event({}, "stop")
    const done = "data: [DONE]\n\n"
    const errorEvent = (error: unknown) => `data: ${JSON.stringify({ error })}\n\n`
    /** Provider `a`'s stream, piped whole: what the client got, and the pipe's failure if it failed. */
    const piped = (request = chat("m", { stream: true })) =>
      Effect.gen(function* () {
        const router = yield* Router.Router
        const out = collector()
        const result = yield* Effect.either(streamOf(yield* router.chat({ request })).pipe(out.writer))
        return { text: out.text(), error: Either.isLeft(result) ? result.left : null }
      })
    /** Provider `a`'s successes and failures, as Health counts them. */
    const tally = Effect.flatMap(Health.Health, (h) =>
      Effect.map(Effect.clockWith((c) => c.currentTimeMillis), (now) => {
        const { successes, failures } = h.status(["a"], now)[0]!.stats
        return [successes, failures]
      }))
    const truncated = "stream ended before the answer finished (no finish_reason or [DONE])"

    it.effect("a connection lost after [DONE] loses nothing: no error event, and the provider is not blamed", () =>
      Effect.gen(function* () {
        expect(yield* piped()).toEqual({ text: role + words + stop + done, error: null })
        expect(yield* tally).toEqual([1, 0])
      }).pipe(Effect.provide(routerOverWithHealth(two, chunkedUpstream({ a: { chunks: [role, words, stop, done], then: "reset" } })))))

    for (const then of ["end", "reset"] as const) {
      it.effect(`a finished answer whose [DONE] never comes (then: ${then}) gets one`, () =>
        Effect.gen(function* () {
          expect(yield* piped()).toEqual({ text: role + words + stop + done, error: null })
        }).pipe(Effect.provide(routerOver(two, chunkedUpstream({ a: { chunks: [role, words, stop], then } })))))
    }

    it.effect("a clean end before the answer finished is an interruption, not a silent truncation", () =>
      Effect.gen(function* () {
        const { text, error } = yield* piped()
        expect(error?._tag).toBe("StreamInterrupted")
        expect(error?.detail).toBe(truncated)
        // The unfinished event at the end is not passed on either.
        expect(text).toBe(role + words)
        expect(yield* tally).toEqual([0, 1])
      }).pipe(Effect.provide(routerOverWithHealth(two, chunkedUpstream({ a: { chunks: [role, words, "data: {\"choices\":[{\"delta\":{\"content\":\" 4"], then: "end" } })))))

    it.effect("an error event after the commit point ends the stream as interrupted: not passed on, nothing after it, held against the provider", () =>
      Effect.gen(function* () {
        const { text, error } = yield* piped()
        expect(error?._tag).toBe("StreamInterrupted")
        expect(error?.detail).toBe("error event: upstream crashed mid-generation")
        expect(text).toBe(role + words)
        expect(yield* tally).toEqual([0, 1])
      }).pipe(Effect.provide(routerOverWithHealth(two, chunkedUpstream({
        a: { chunks: [role, words + errorEvent({ message: "upstream crashed mid-generation", code: 500 }), stop, done], then: "end" }
      })))))

    // OpenRouter's mid-generation error: an event with an `error` beside a choice that finished
    // with "error"; some proxies send the finish alone.
    const finishedWithError = (error?: unknown) =>
      `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", ...(error === undefined ? {} : { error }), choices: [{ index: 0, delta: { content: "" }, finish_reason: "error" }] })}\n\n`

    it.effect("an error beside a choice that finished with \"error\" (OpenRouter) is an interruption, not a finished answer", () =>
      Effect.gen(function* () {
        const { text, error } = yield* piped()
        expect(error?._tag).toBe("StreamInterrupted")
        expect(error?.detail).toBe("error event: Provider disconnected unexpectedly")
        expect(text).toBe(role + words)
        expect(yield* tally).toEqual([0, 1])
      }).pipe(Effect.provide(routerOverWithHealth(two, chunkedUpstream({
        a: { chunks: [role, words, finishedWithError({ code: "server_error", message: "Provider disconnected unexpectedly" }), done], then: "end" }
      })))))

    it.effect("a finish_reason \"error\" without an error object is an interruption too", () =>
      Effect.gen(function* () {
        const { text, error } = yield* piped()
        expect(error?._tag).toBe("StreamInterrupted")
        expect(text).toBe(role + words)
        expect(text).not.toContain("[DONE]")
      }).pipe(Effect.provide(routerOver(two, chunkedUpstream({ a: { chunks: [role, words, finishedWithError(), done], then: "end" } })))))

    it.effect("an Ollama-style error event (a string) is read the same way", () =>
      Effect.gen(function* () {
        expect((yield* piped()).error?.detail).toBe("error event: model runner has unexpectedly stopped")
      }).pipe(Effect.provide(routerOver(two, chunkedUpstream({
        a: { chunks: [role, words, `data: {"error": "model runner has unexpectedly stopped"}\n\n`], then: "end" }
      })))))

    it.effect("nothing after [DONE] is passed on: not a late error event (which blames nobody), not more data, not a second [DONE]", () =>
      Effect.gen(function* () {
        expect(yield* piped()).toEqual({ text: role + words + stop + done, error: null })
        expect(yield* tally).toEqual([1, 0])
      }).pipe(Effect.provide(routerOverWithHealth(two, chunkedUpstream({
        a: { chunks: [role, words + stop + done + words, done, errorEvent({ message: "late" })], then: "end" }
      })))))

    it.effect("an error event after every choice finished takes nothing from the answer: it ends with [DONE]", () =>
      Effect.gen(function* () {
        expect(yield* piped()).toEqual({ text: role + words + stop + done, error: null })
        expect(yield* tally).toEqual([1, 0])
      }).pipe(Effect.provide(routerOverWithHealth(two, chunkedUpstream({
        a: { chunks: [role, words, stop, errorEvent({ message: "usage accounting failed" })], then: "end" }
      })))))

    it.effect("with n: 2, one choice finished is not a whole answer", () =>
      Effect.gen(function* () {
        const { text, error } = yield* piped(chat("m", { stream: true, n: 2 }))
        expect(error?.detail).toBe(truncated)
        expect(text).not.toContain("[DONE]")
      }).pipe(Effect.provide(routerOver(two, chunkedUpstream({ a: { chunks: [role, words, stop], then: "end" } })))))

    it.effect("with n: 2, both choices finished is a whole answer", () =>
      Effect.gen(function* () {
        const { text, error } = yield* piped(chat("m", { stream: true, n: 2 }))
        expect(error).toBeNull()
        expect(text.endsWith(done)).toBe(true)
      }).pipe(Effect.provide(routerOver(two, chunkedUpstream({ a: { chunks: [role, words, stop, stop.replace("\"index\":0", "\"index\":1")], then: "end" } })))))

    it.effect("content that merely mentions [DONE], finish_reason or error is content", () =>
      Effect.gen(function* () {
        expect(yield* piped()).toMatchObject({ text: role + tricky, error: { detail: truncated } })
      }).pipe(Effect.provide(routerOver(two, chunkedUpstream({ a: { chunks: [role, tricky], then: "end" } })))))
  })

  // Closed with a blank line: at the end of a stream, SSE clients discard an event left open.
  it.effect("a clean end forwards the held-back tail, closing its event", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = streamOf(yield* router.chat({ request: chat("m", { stream: true }) }))
      const out = collector()
      yield* reply.pipe(out.writer)
      expect(out.text()).toBe("data: {\"n\":1}\r\n\r\ndata: [DONE]\n\n")
    }).pipe(Effect.provide(routerOver(two, chunkedUpstream({
      a: { chunks: ["data: {\"n\":1}\r\n", "\r\ndata: [DO", "NE]"], then: "end" }
    })))))

  // The commit point is the first *event*: until one has arrived nothing is sent, so a backend
  // that started an event and then went silent must still be skipped on first_byte.
  it.effect("a first chunk holding only part of an event is not the commit point", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("m", { stream: true }) }))
      yield* TestClock.adjust("2 seconds")
      const reply = streamOf(yield* joinNow(fiber))
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:timeout", "b:ok"])
    }).pipe(Effect.provide(routerOver(two, chunkedUpstream({
      a: { chunks: ["data: {\"id\":\"chatcmpl-1\","], then: "hang" }
    })))))

  it.effect("discard aborts the upstream call", () => {
    const recorded: Recorded = { calls: [] }
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = streamOf(yield* router.chat({ request: chat("m", { stream: true }) }))
      expect(recorded.calls[0]!.abort?.aborted).toBe(false)
      yield* reply.discard
      expect(recorded.calls[0]!.abort?.aborted).toBe(true)
    }).pipe(Effect.provide(routerRecording(two, recorded, { a: { behaviour: { mode: "stall", afterChunks: 2 } } })))
  })

  it.effect("interrupting pipe aborts the upstream call", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = streamOf(yield* router.chat({ request: chat("m", { stream: true }) }))
      const out = collector()
      const piping = yield* Effect.fork(reply.pipe(out.writer))
      yield* TestClock.adjust("1 second")
      expect(dataLines(out.text())).toHaveLength(2)
      yield* Fiber.interrupt(piping)
      expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", true]])
    }).pipe(Effect.provide(routerWith(two, { a: { behaviour: { mode: "stall", afterChunks: 2 } } }))))

  it.effect("when every stream fails before its first event: AllCandidatesFailed", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* failureOf(router.chat({ request: chat("m", { stream: true }) }))
      expect(error._tag).toBe("AllCandidatesFailed")
      expect((error as AllCandidatesFailed).attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:connection_reset", "b:server_error"])
    }).pipe(Effect.provide(routerWith(two, { a: { behaviour: { mode: "cut", afterChunks: 0 } }, b: { behaviour: { mode: "status", status: 503 } } }))))
})
