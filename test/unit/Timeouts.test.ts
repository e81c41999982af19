import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import type { StreamInterrupted } from "../../src/domain/Errors.js"
import * as Router from "../../src/router/Router.js"
import { FakeUpstream } from "../../src/testing/FakeUpstream.js"
import * as Script from "../../src/testing/Script.js"
import {
  chat,
  chunkedUpstream,
  collector,
  dataLines,
  endpoint,
  failureOf,
  joinNow,
  pending,
  type Recorded,
  routerOver,
  routerRecording,
  routerWith
} from "./helpers.js"

const calls = Effect.flatMap(FakeUpstream, (f) => f.calls)

const providers = (a: Record<string, unknown>, b: Record<string, unknown> = {}) => ({
  providers: {
    a: { endpoint: endpoint("a"), models: ["m"], priority: 1, ...a },
    b: { endpoint: endpoint("b"), models: ["m"], priority: 2, ...b }
  }
})

/** Asks (for `m` unless told): still waiting 1 ms before `ms`, and answered, or failed, at `ms`. */
const replyAt = (ms: number, request = chat("m")) =>
  Effect.gen(function* () {
    const router = yield* Router.Router
    const fiber = yield* Effect.fork(router.chat({ request }))
    yield* TestClock.adjust(ms - 1)
    expect(yield* pending(fiber)).toBe(true)
    yield* TestClock.adjust(1)
    return yield* joinNow(fiber)
  })

/**
 * Asks for `m`: still waiting on a 1 ms before `ms` (its call open), then failed over from a (its
 * call aborted, with this outcome and detail) to b at `ms`.
 */
const failsOverAt = (ms: number, outcome: string, detail: string) =>
  Effect.gen(function* () {
    const router = yield* Router.Router
    const fiber = yield* Effect.fork(router.chat({ request: chat("m") }))
    yield* TestClock.adjust(ms - 1)
    expect(yield* pending(fiber)).toBe(true)
    expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", false]])
    yield* TestClock.adjust(1)
    const reply = yield* joinNow(fiber)
    expect(reply.provider).toBe("b")
    expect(reply.attempts).toEqual([
      { provider: "a", upstreamModel: "m", outcome, detail, status: null, durationMs: ms },
      { provider: "b", upstreamModel: "m", outcome: "ok", detail: "ok", status: 200, durationMs: 0 }
    ])
    expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", true], ["b", false]])
  })

describe("first-byte timeout", () => {
  it.effect("fails over after exactly first_byte, not before, and aborts the silent call", () =>
    failsOverAt(2000, "timeout", "no first byte within 2000 ms").pipe(
      Effect.provide(routerWith(providers({ timeouts: { first_byte: 2 } }), { a: { behaviour: { mode: "hang" } } }))
    ))

  it.effect("a slow answer inside first_byte is served", () =>
    Effect.gen(function* () {
      const reply = yield* replyAt(2000)
      expect(reply.provider).toBe("a")
      expect(reply.attempts.map((a) => [a.provider, a.outcome, a.durationMs])).toEqual([["a", "ok", 2000]])
      expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", false]])
    }).pipe(Effect.provide(routerWith(providers({ timeouts: { first_byte: 3 } }), { a: { behaviour: { mode: "ok", firstByteMs: 2000 } } }))))

  it.effect("each candidate gets its own first_byte", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("m") }))
      yield* TestClock.adjust("2 seconds")
      expect(yield* pending(fiber)).toBe(true)
      expect((yield* calls).map((c) => c.provider)).toEqual(["a", "b"])
      yield* TestClock.adjust("2999 millis")
      expect(yield* pending(fiber)).toBe(true)
      expect((yield* calls).map((c) => c.provider)).toEqual(["a", "b"])
      yield* TestClock.adjust("1 millis")
      const reply = yield* joinNow(fiber)
      expect(reply.provider).toBe("c")
      expect(reply.attempts.map((a) => [a.provider, a.outcome, a.durationMs])).toEqual([["a", "timeout", 2000], ["b", "timeout", 3000], ["c", "ok", 0]])
    }).pipe(Effect.provide(routerWith({
      providers: {
        a: { endpoint: endpoint("a"), models: ["m"], priority: 1, timeouts: { first_byte: 2 } },
        b: { endpoint: endpoint("b"), models: ["m"], priority: 2, timeouts: { first_byte: 3 } },
        c: { endpoint: endpoint("c"), models: ["m"], priority: 3 }
      }
    }, { a: { behaviour: { mode: "hang" } }, b: { behaviour: { mode: "hang" } } }))))

  it.effect("a stream whose headers came but no first event fails over on first_byte", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("m", { stream: true }) }))
      yield* TestClock.adjust("1999 millis")
      expect(yield* pending(fiber)).toBe(true)
      expect((yield* calls).map((c) => c.provider)).toEqual(["a"])
      yield* TestClock.adjust("1 millis")
      const reply = yield* joinNow(fiber)
      expect(reply._tag).toBe("Stream")
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => [a.provider, a.outcome, a.detail, a.durationMs])).toEqual([
        ["a", "timeout", "no first byte within 2000 ms", 2000],
        ["b", "ok", "ok", 0]
      ])
      expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", true], ["b", false]])
      if (reply._tag !== "Stream") return
      const out = collector()
      yield* reply.pipe(out.writer)
      expect(dataLines(out.text()).at(-1)).toBe("[DONE]")
    }).pipe(Effect.provide(routerWith(providers({ timeouts: { first_byte: 2 } }), { a: { behaviour: { mode: "stall", afterChunks: 0 } } }))))

  // The first event (a role-only preamble) comes at once; the content 3 s later, past first_byte.
  // The answer commits on that content, so the clock is moved to reach it.
  it.effect("once the first event is in, slow later events are not a first-byte timeout", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const routing = yield* Effect.fork(router.chat({ request: chat("m", { stream: true }) }))
      yield* TestClock.adjust("3 seconds")
      const reply = yield* joinNow(routing)
      expect(reply._tag).toBe("Stream")
      if (reply._tag !== "Stream") return
      const out = collector()
      const piping = yield* Effect.fork(reply.pipe(out.writer))
      yield* TestClock.adjust("30 seconds")
      yield* joinNow(piping)
      const events = dataLines(out.text())
      expect(events.at(-1)).toBe("[DONE]")
      expect(events.slice(0, -1).map((e) => JSON.parse(e).choices[0]?.delta?.content ?? "").join("")).toBe("Hello from a!")
      expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", false]])
    }).pipe(Effect.provide(routerWith(providers({ timeouts: { first_byte: 2 } }), { a: { behaviour: { mode: "ok", chunkDelayMs: 3000 } } }))))
})

describe("total timeout", () => {
  it.effect("before any answer, it fails over after exactly total", () =>
    Effect.gen(function* () {
      const reply = yield* replyAt(3000)
      expect(reply.provider).toBe("b")
      expect(reply.attempts[0]).toMatchObject({ provider: "a", outcome: "timeout", detail: "no complete answer within 3000 ms", durationMs: 3000 })
    }).pipe(Effect.provide(routerWith(providers({ timeouts: { first_byte: 10, total: 3 } }), { a: { behaviour: { mode: "hang" } } }))))

  it.effect("mid-stream after the commit, pipe fails with StreamInterrupted and the call is aborted", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m", { stream: true }) })
      expect(reply._tag).toBe("Stream")
      expect(reply.provider).toBe("a")
      if (reply._tag !== "Stream") return
      const out = collector()
      const piping = yield* Effect.fork(failureOf(reply.pipe(out.writer)))
      yield* TestClock.adjust("4999 millis")
      expect(yield* pending(piping)).toBe(true)
      expect((yield* calls).map((c) => c.aborted)).toEqual([false])
      yield* TestClock.adjust("1 millis")
      const error: StreamInterrupted = yield* joinNow(piping)
      expect(error._tag).toBe("StreamInterrupted")
      expect(error.provider).toBe("a")
      expect(error.detail).toBe("no complete answer within 5000 ms")
      // The two events sent before the stall, whole, and no [DONE].
      expect(out.text().endsWith("\n\n")).toBe(true)
      const events = dataLines(out.text())
      expect(events).toHaveLength(2)
      expect(events).not.toContain("[DONE]")
      expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", true]])
    }).pipe(Effect.provide(routerWith(providers({ timeouts: { total: 5 } }), { a: { behaviour: { mode: "stall", afterChunks: 2 } } }))))

  it.effect("counts from the start of the request, not from the start of pipe", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m", { stream: true }) })
      if (reply._tag !== "Stream") throw new Error("expected a stream")
      yield* TestClock.adjust("4 seconds")
      const piping = yield* Effect.fork(failureOf(reply.pipe(collector().writer)))
      yield* TestClock.adjust("999 millis")
      expect(yield* pending(piping)).toBe(true)
      yield* TestClock.adjust("1 millis")
      expect((yield* joinNow(piping)).detail).toBe("no complete answer within 5000 ms")
      // Two events: the role-only preamble, then the first content, which commits the answer.
    }).pipe(Effect.provide(routerWith(providers({ timeouts: { total: 5 } }), { a: { behaviour: { mode: "stall", afterChunks: 2 } } }))))
})

describe("idle on the body of a whole (not streamed) answer", () => {
  /** A whole answer in `n` pieces. */
  const answerIn = (n: number) => {
    const text = JSON.stringify(Script.chatCompletion("m", "Hi", {}))
    return Array.from({ length: n }, (_, i) => text.slice(Math.floor((i * text.length) / n), Math.floor(((i + 1) * text.length) / n)))
  }
  const json = { "content-type": "application/json" }

  it.effect("headers, then no body: fails over after exactly idle, as stalled, and aborts the call", () =>
    failsOverAt(2000, "stalled", "no data for 2000 ms (stalled)").pipe(
      Effect.provide(routerWith(providers({ timeouts: { idle: 2 } }), { a: { behaviour: { mode: "stallBody" } } }))
    ))

  it.effect("part of the body, then silence: idle counts from the last piece", () =>
    Effect.gen(function* () {
      // The second piece comes at 1.5 s; silence from then on.
      const reply = yield* replyAt(3500)
      expect(reply.attempts.map((a) => [a.provider, a.outcome, a.durationMs])).toEqual([["a", "stalled", 3500], ["b", "ok", 0]])
    }).pipe(Effect.provide(routerOver(providers({ timeouts: { idle: 2 } }), chunkedUpstream({
      a: { headers: json, chunks: answerIn(3).slice(0, 2), gapMs: 1500, then: "hang" },
      b: { headers: json, chunks: answerIn(1), then: "end" }
    })))))

  it.effect("a body arriving slowly, each piece within idle, is served however long it takes", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("m") }))
      for (let i = 0; i < 5; i++) yield* TestClock.adjust("1500 millis")
      const reply = yield* joinNow(fiber)
      expect(reply.attempts.map((a) => [a.provider, a.outcome, a.durationMs])).toEqual([["a", "ok", 7500]])
      if (reply._tag !== "Json") throw new Error("expected a whole answer")
      expect(Buffer.from(reply.body).toString("utf8")).toBe(answerIn(1)[0])
    }).pipe(Effect.provide(routerOver(providers({ timeouts: { idle: 2 } }), chunkedUpstream({
      a: { headers: json, chunks: answerIn(6), gapMs: 1500, then: "end" }
    })))))

  it.effect("an error status whose body stalls fails over on idle too", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("m") }))
      yield* TestClock.adjust("2 seconds")
      const reply = yield* joinNow(fiber)
      expect(reply.attempts.map((a) => [a.provider, a.outcome])).toEqual([["a", "stalled"], ["b", "ok"]])
    }).pipe(Effect.provide(routerOver(providers({ timeouts: { idle: 2 } }), chunkedUpstream({
      a: { headers: json, status: 500, chunks: ["{\"error\":"], then: "hang" },
      b: { headers: json, chunks: answerIn(1), then: "end" }
    })))))

  // Kept as it was: `body` of a streamed call tells of no pieces, so idle cannot watch it.
  it.effect("a plain answer to a stream request whose body stalls is bounded by total, not idle", () =>
    Effect.gen(function* () {
      const reply = yield* replyAt(5000, chat("m", { stream: true }))
      expect(reply.attempts.map((a) => [a.provider, a.outcome, a.detail])).toEqual([
        ["a", "timeout", "no complete answer within 5000 ms"],
        ["b", "ok", "ok"]
      ])
    }).pipe(Effect.provide(routerWith(providers({ timeouts: { idle: 2, total: 5 } }), { a: { behaviour: { mode: "stallBody", afterBytes: 10 } } }))))
})

describe("timers after the answer", () => {
  it.effect("a served JSON answer is never aborted later", () => {
    const recorded: Recorded = { calls: [] }
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m") })
      expect(reply.provider).toBe("b")
      yield* TestClock.adjust("1 hour")
      expect(recorded.calls.map((c) => c.abort?.aborted)).toEqual([false, false])
      expect((yield* calls).map((c) => c.aborted)).toEqual([false, false])
    }).pipe(Effect.provide(routerRecording(providers({ timeouts: { first_byte: 1, total: 2 } }, { timeouts: { first_byte: 1, total: 2 } }), recorded, {
      a: { behaviour: { mode: "status", status: 500 } }
    })))
  })

  it.effect("a stream read to its end is never aborted later", () => {
    const recorded: Recorded = { calls: [] }
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m", { stream: true }) })
      if (reply._tag !== "Stream") throw new Error("expected a stream")
      yield* reply.pipe(collector().writer)
      yield* TestClock.adjust("1 hour")
      expect(recorded.calls.map((c) => c.abort?.aborted)).toEqual([false])
    }).pipe(Effect.provide(routerRecording(providers({ timeouts: { first_byte: 1, total: 2 } }), recorded)))
  })
})
