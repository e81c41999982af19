/**
 * Hedging (`hedge_after_ms` on an alias or a provider): when the first candidate has not answered
 * after that long, the next starts as well; the first to answer wins and the other is aborted.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, TestClock } from "effect"
import * as Router from "../../src/router/Router.js"
import * as FakeUpstream from "../../src/testing/FakeUpstream.js"
import { chat, joinNow, routerWith } from "./helpers.js"

const providers = {
  a: { endpoint: "http://127.0.0.1:1/v1", models: ["m"], priority: 1 },
  b: { endpoint: "http://127.0.0.1:2/v1", models: ["m"], priority: 2 },
  c: { endpoint: "http://127.0.0.1:3/v1", models: ["m"], priority: 3 }
}
const alias = { providers, aliases: { fast: { targets: ["a+m", "b+m", "c+m"], hedge_after_ms: 500 } } }

const calls = Effect.flatMap(FakeUpstream.FakeUpstream, (f) => f.calls)
const summary = (reply: Router.Reply) => reply.attempts.map((a) => `${a.provider}:${a.outcome}`)

describe("hedging", () => {
  it.effect("a slow first candidate gets company after hedge_after_ms, and the faster one wins", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("fast") }))
      yield* TestClock.adjust("499 millis")
      expect((yield* calls).map((c) => c.provider)).toEqual(["a"])
      yield* TestClock.adjust("1 millis")
      expect((yield* calls).map((c) => c.provider)).toEqual(["a", "b"])
      yield* TestClock.adjust("100 millis")
      const reply = yield* joinNow(fiber)
      expect(reply.provider).toBe("b")
      // Both were called (and billed): the loser is listed before the answer, for as long as it ran.
      expect(summary(reply)).toEqual(["a:hedge_lost", "b:ok"])
      expect(reply.attempts.map((a) => a.durationMs)).toEqual([600, 100])
      // The loser was aborted upstream.
      expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", true], ["b", false]])
    }).pipe(Effect.provide(routerWith(alias, {
      a: { behaviour: { mode: "ok", firstByteMs: 2000 } },
      b: { behaviour: { mode: "ok", firstByteMs: 100 } }
    }))))

  it.effect("a first candidate that answers after the hedge began wins; the hedge is listed as lost", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("fast") }))
      yield* TestClock.adjust("700 millis")
      const reply = yield* joinNow(fiber)
      expect(reply.provider).toBe("a")
      expect(summary(reply)).toEqual(["b:hedge_lost", "a:ok"])
      expect(reply.attempts.map((a) => a.durationMs)).toEqual([200, 700])
      expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", false], ["b", true]])
    }).pipe(Effect.provide(routerWith(alias, {
      a: { behaviour: { mode: "ok", firstByteMs: 700 } },
      b: { behaviour: { mode: "ok", firstByteMs: 2000 } }
    }))))

  it.effect("an answer before hedge_after_ms never starts the next candidate", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("fast") }))
      yield* TestClock.adjust("300 millis")
      const reply = yield* joinNow(fiber)
      expect(reply.provider).toBe("a")
      yield* TestClock.adjust("1 second")
      expect((yield* calls).map((c) => c.provider)).toEqual(["a"])
    }).pipe(Effect.provide(routerWith(alias, { a: { behaviour: { mode: "ok", firstByteMs: 300 } } }))))

  it.effect("a fast failure moves on at once, without waiting for the hedge delay", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("fast") })
      expect(reply.provider).toBe("b")
      expect(summary(reply)).toEqual(["a:connect_error", "b:ok"])
    }).pipe(Effect.provide(routerWith(alias, { a: { behaviour: { mode: "refuse" } } }))))

  it.effect("when the first fails after the hedge began, the hedge's answer is used and both are listed", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("fast") }))
      yield* TestClock.adjust("600 millis")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust("400 millis")
      const reply = yield* joinNow(fiber)
      expect(reply.provider).toBe("b")
      expect(summary(reply)).toEqual(["a:server_error", "b:ok"])
    }).pipe(Effect.provide(routerWith(alias, {
      a: { behaviour: { mode: "status", status: 503, firstByteMs: 600 } },
      b: { behaviour: { mode: "ok", firstByteMs: 500 } }
    }))))

  it.effect("when both fail, the chain goes on after them", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("fast") }))
      yield* TestClock.adjust("2 seconds")
      const reply = yield* joinNow(fiber)
      expect(reply.provider).toBe("c")
      expect(summary(reply)).toEqual(["a:server_error", "b:server_error", "c:ok"])
    }).pipe(Effect.provide(routerWith(alias, {
      a: { behaviour: { mode: "status", status: 500, firstByteMs: 1000 } },
      b: { behaviour: { mode: "status", status: 502, firstByteMs: 100 } }
    }))))

  it.effect("a provider's own hedge_after_ms applies to a bare model", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("m") }))
      yield* TestClock.adjust("250 millis")
      expect((yield* calls).map((c) => c.provider)).toEqual(["a", "b"])
      yield* TestClock.adjust("50 millis")
      const reply = yield* joinNow(fiber)
      expect(reply.provider).toBe("b")
    }).pipe(Effect.provide(routerWith({ providers: { ...providers, a: { ...providers.a, hedge_after_ms: 250 } } }, {
      a: { behaviour: { mode: "hang" } },
      b: { behaviour: { mode: "ok", firstByteMs: 50 } }
    }))))

  const missingModel = { error: { message: "The model `m` does not exist", type: "invalid_request_error", param: null, code: "model_not_found" } }

  it.effect("a model_not_found before the hedge began moves on to the next candidate, as without hedging", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("fast") })
      expect(reply.provider).toBe("b")
      expect(summary(reply)).toEqual(["a:model_not_found", "b:ok"])
    }).pipe(Effect.provide(routerWith(alias, { a: { behaviour: { mode: "status", status: 404, body: missingModel } } }))))

  it.effect("a model_not_found after the hedge began leaves the answer to the hedge", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("fast") }))
      yield* TestClock.adjust("2 seconds")
      const reply = yield* joinNow(fiber)
      expect(reply.provider).toBe("b")
      expect(summary(reply)).toEqual(["a:model_not_found", "b:ok"])
    }).pipe(Effect.provide(routerWith(alias, {
      a: { behaviour: { mode: "status", status: 404, body: missingModel, firstByteMs: 600 } },
      b: { behaviour: { mode: "ok", firstByteMs: 500 } }
    }))))

  it.effect("a context_too_long moves on to the candidate with a larger window, as without hedging", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("fast") })
      expect(reply.provider).toBe("c")
      expect(summary(reply)).toEqual(["a:context_too_long", "c:ok"])
    }).pipe(Effect.provide(routerWith({
      ...alias,
      providers: {
        a: { ...providers.a, model_overrides: { m: { context_length: 8000 } } },
        b: { ...providers.b, model_overrides: { m: { context_length: 4000 } } },
        c: { ...providers.c, model_overrides: { m: { context_length: 128000 } } }
      }
    }, {
      a: { behaviour: { mode: "status", status: 400, body: { error: { message: "maximum context length is 8000 tokens", code: "context_length_exceeded" } } } }
    }))))

  it.effect("a first candidate that has sent its first event by hedge_after_ms gets no company", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("fast", { stream: true }) }))
      // Its role-only preamble comes at once, its content after 1 s.
      yield* TestClock.adjust("600 millis")
      expect((yield* calls).map((c) => c.provider)).toEqual(["a"])
      yield* TestClock.adjust("500 millis")
      const reply = yield* joinNow(fiber)
      expect(reply.provider).toBe("a")
      expect(summary(reply)).toEqual(["a:ok"])
      expect((yield* calls).map((c) => c.provider)).toEqual(["a"])
      yield* reply._tag === "Stream" ? reply.discard : Effect.void
    }).pipe(Effect.provide(routerWith(alias, { a: { behaviour: { mode: "ok", chunkDelayMs: 1000 } } }))))

  it.effect("a plain answer whose headers came by hedge_after_ms gets no company; if it then stalls, the chain goes on", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat({ request: chat("fast") }))
      yield* TestClock.adjust("600 millis")
      expect((yield* calls).map((c) => c.provider)).toEqual(["a"])
      yield* TestClock.adjust("30 seconds")
      const reply = yield* joinNow(fiber)
      expect(summary(reply)).toEqual(["a:stalled", "b:ok"])
    }).pipe(Effect.provide(routerWith(alias, { a: { behaviour: { mode: "stallBody", afterBytes: 10 } } }))))
})
