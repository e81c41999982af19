/**
 * A request that waits for a connection (every connection to its provider busy) waits in the
 * router, not at the provider: the provider's first-byte and total limits count from when it goes
 * out, and a wait as long as first_byte moves it on to the next candidate (outcome `busy`) without
 * holding it against the provider. The last candidate keeps it waiting, up to the request's
 * deadline. Counted from when it was asked for, a burst beyond the pool's size timed out in the
 * queue, and each of those timeouts counted against the provider's health.
 *
 * The live `Upstream` with one connection per provider against real loopback servers, and the
 * router's timers on the `TestClock`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, TestClock } from "effect"
import * as Resilience from "../../src/config/Resilience.js"
import * as Health from "../../src/health/Health.js"
import * as Policy from "../../src/policy/Policy.js"
import * as Providers from "../../src/providers/Providers.js"
import * as UpstreamLive from "../../src/providers/Upstream.js"
import * as Router from "../../src/router/Router.js"
import { chat, heldServer, pending, untilSuspended } from "./helpers.js"

/** The router over the live upstream client with one connection per provider, and its `Health`. */
const routerLive = (config: unknown, resilience: Partial<Resilience.ResilienceSettings> = {}) =>
  Router.layerWithoutDependencies.pipe(
    Layer.provide(Policy.layer),
    Layer.provide(Providers.layerStatic(config)),
    Layer.provideMerge(Health.layer.pipe(Layer.provideMerge(Resilience.layer({ ...Resilience.defaults, ...resilience })))),
    Layer.provide(UpstreamLive.layerWith({ connections: 1 }))
  )

const statsOf = (id: string) =>
  Effect.flatMap(Health.Health, (h) => Effect.map(Effect.clockWith((c) => c.currentTimeMillis), (now) => h.status([id], now)[0]!))

const completion = (content: string) =>
  JSON.stringify({
    id: "chatcmpl-1",
    object: "chat.completion",
    created: 0,
    model: "m",
    choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }]
  })

/** A held backend (`heldServer`), with the answers these tests give its requests. */
const heldServerAnswering = Effect.map(heldServer, (server) => ({
  url: server.url,
  count: () => server.held.length,
  /** The `user` field of each request held, in arrival order. */
  users: () => server.bodies.map((b) => (b as { user?: unknown }).user),
  seen: server.arrived,
  /** Starts request `i`'s answer as an event stream with one content event, and holds the rest. */
  startStream: (i: number) => {
    server.held[i]!.writeHead(200, { "content-type": "text/event-stream" })
    server.held[i]!.write(`data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", created: 0, model: "m", choices: [{ index: 0, delta: { content: "Hel" }, finish_reason: null }] })}\n\n`)
  },
  endStream: (i: number) => void server.held[i]!.end("data: [DONE]\n\n"),
  answer: (i: number) => {
    const body = completion(`answer ${i}`)
    const res = server.held[i]!
    if (!res.headersSent) res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
    res.end(body)
  }
}))

type Held = Effect.Effect.Success<typeof heldServerAnswering>

/** Providers p (first_byte 10 s), tried first, and q, each a held server. */
const pair = Effect.gen(function* () {
  const server = yield* heldServerAnswering
  const spare = yield* heldServerAnswering
  const config = {
    providers: {
      // The one connection the client below allows, said in the config too (a busy attempt names it).
      p: { endpoint: server.url, models: ["m"], priority: 1, max_connections: 1, timeouts: { first_byte: 10 } },
      q: { endpoint: spare.url, models: ["m"], priority: 2 }
    }
  }
  return { server, spare, config }
})

const scenario = (check: (b: Fiber.RuntimeFiber<Router.Reply, Router.ChatError>, server: Held, spare: Held) => Effect.Effect<void, Router.ChatError, Health.Health>) =>
  Effect.gen(function* () {
    const { server, spare, config } = yield* pair
    yield* Effect.gen(function* () {
      const router = yield* Router.Router
      const a = yield* Effect.fork(router.chat({ request: chat("m") }))
      yield* Effect.promise(() => server.seen(1))
      // The pool's one connection is A's: B waits for it, its timers armed at 0 s.
      const b = yield* Effect.fork(router.chat({ request: chat("m") }))
      yield* untilSuspended(b)
      yield* TestClock.adjust("9 seconds")
      expect(server.count()).toBe(1)
      server.answer(0)
      const first = yield* Fiber.join(a)
      expect(first.attempts.map((x) => [x.provider, x.outcome])).toEqual([["p", "ok"]])
      // B goes out at 9 s.
      yield* Effect.promise(() => server.seen(2))
      yield* check(b, server, spare)
    }).pipe(Effect.provide(routerLive(config)))
  }).pipe(Effect.scoped)

describe("a request waiting for a connection to its provider", () => {
  it.effect("gets the provider's whole first-byte limit from when it goes out", () =>
    scenario((b, server, spare) =>
      Effect.gen(function* () {
        // 18 s after B was asked for, 9 s after it went out: inside its 10 s.
        yield* TestClock.adjust("9 seconds")
        expect(yield* pending(b)).toBe(true)
        expect(spare.count()).toBe(0)
        server.answer(1)
        const reply = yield* Fiber.join(b)
        expect(reply.provider).toBe("p")
        expect(reply.attempts.map((x) => [x.provider, x.outcome, x.durationMs])).toEqual([["p", "ok", 18_000]])
        // The provider's latency: A waited 9 s for its answer, and so did B once it went out.
        expect((yield* statsOf("p")).stats.ewma_ttfb_ms).toBe(9000)
      })
    ))

  it.effect("and times out on that limit, counted from when it went out", () =>
    scenario((b, _server, spare) =>
      Effect.gen(function* () {
        yield* TestClock.adjust("9999 millis")
        expect(yield* pending(b)).toBe(true)
        expect(spare.count()).toBe(0)
        yield* TestClock.adjust("1 millis")
        yield* Effect.promise(() => spare.seen(1))
        spare.answer(0)
        const reply = yield* Fiber.join(b)
        expect(reply.attempts.map((x) => [x.provider, x.outcome, x.detail, x.durationMs])).toEqual([
          ["p", "timeout", "no first byte within 10000 ms", 19_000],
          ["q", "ok", "ok", 0]
        ])
      })
    ))

  it.effect("is cut by the request's own deadline without blame, and never goes out", () =>
    Effect.gen(function* () {
      const server = yield* heldServerAnswering
      const config = { providers: { p: { endpoint: server.url, models: ["m"], timeouts: { first_byte: 60 } } } }
      yield* Effect.gen(function* () {
        const router = yield* Router.Router
        const a = yield* Effect.fork(router.chat({ request: chat("m", { user: "a" }) }))
        yield* Effect.promise(() => server.seen(1))
        const b = yield* Effect.fork(router.chat({ request: chat("m", { user: "b" }), timeoutMs: 5000 }))
        yield* untilSuspended(b)
        yield* TestClock.adjust("5 seconds")
        const failure = yield* Effect.flip(Fiber.join(b))
        expect(failure._tag).toBe("RequestTimedOut")
        expect("attempts" in failure && failure.attempts.map((x) => [x.provider, x.outcome, x.detail])).toEqual([["p", "timeout", "the request deadline passed"]])
        // Not the provider's doing: nothing is held against it.
        const health = (yield* statsOf("p")).stats
        expect([health.failures, health.last_error]).toEqual([0, null])
        server.answer(0)
        yield* Fiber.join(a)
        const c = yield* Effect.fork(router.chat({ request: chat("m", { user: "c" }) }))
        yield* Effect.promise(() => server.seen(2))
        // The abandoned request left the pool's queue: the next one out is C.
        expect(server.users()).toEqual(["a", "c"])
        server.answer(1)
        expect((yield* Fiber.join(c)).attempts.map((x) => [x.provider, x.outcome])).toEqual([["p", "ok"]])
      }).pipe(Effect.provide(routerLive(config)))
    }).pipe(Effect.scoped))

  it.effect("moves on to the next candidate after waiting first_byte for a connection, without blame, and not retried", () =>
    Effect.gen(function* () {
      const { server, spare, config } = yield* pair
      yield* Effect.gen(function* () {
        const router = yield* Router.Router
        // A's answer is a stream that has begun (its first byte is in) and holds the connection.
        const a = yield* Effect.fork(router.chat({ request: chat("m", { user: "a", stream: true }) }))
        yield* Effect.promise(() => server.seen(1))
        server.startStream(0)
        const streaming = yield* Fiber.join(a)
        expect(streaming._tag).toBe("Stream")
        const b = yield* Effect.fork(router.chat({ request: chat("m", { user: "b" }) }))
        yield* untilSuspended(b)
        yield* TestClock.adjust("9999 millis")
        expect(spare.count()).toBe(0)
        yield* TestClock.adjust("1 millis")
        yield* Effect.promise(() => spare.seen(1))
        spare.answer(0)
        const reply = yield* Fiber.join(b)
        expect(reply.attempts.map((x) => [x.provider, x.outcome, x.detail])).toEqual([
          ["p", "busy", "no free connection to the provider within 10000 ms (max_connections 1)"],
          ["q", "ok", "ok"]
        ])
        // Retries are for failures: a provider that was busy is not asked again at once. Nothing is
        // held against p, and B never went out to it.
        const health = (yield* statsOf("p")).stats
        expect([health.failures, health.last_error]).toEqual([0, null])
        expect(server.users()).toEqual(["a"])
      }).pipe(Effect.provide(routerLive(config, { retries: 2 })))
    }).pipe(Effect.scoped))

  it.effect("waits for a connection past first_byte when no other candidate could take it", () =>
    Effect.gen(function* () {
      const server = yield* heldServerAnswering
      const config = { providers: { p: { endpoint: server.url, models: ["m"], timeouts: { first_byte: 10 } } } }
      yield* Effect.gen(function* () {
        const router = yield* Router.Router
        const a = yield* Effect.fork(router.chat({ request: chat("m", { user: "a", stream: true }) }))
        yield* Effect.promise(() => server.seen(1))
        server.startStream(0)
        yield* Fiber.join(a)
        const b = yield* Effect.fork(router.chat({ request: chat("m", { user: "b" }) }))
        yield* untilSuspended(b)
        yield* TestClock.adjust("15 seconds")
        expect(yield* pending(b)).toBe(true)
        expect(server.count()).toBe(1)
        // A's stream ends and frees the connection: B goes out at 15 s, with its whole first_byte.
        server.endStream(0)
        yield* Effect.promise(() => server.seen(2))
        yield* TestClock.adjust("9 seconds")
        expect(yield* pending(b)).toBe(true)
        server.answer(1)
        expect((yield* Fiber.join(b)).attempts.map((x) => [x.provider, x.outcome, x.durationMs])).toEqual([["p", "ok", 24_000]])
        const health = (yield* statsOf("p")).stats
        expect([health.failures, health.ewma_ttfb_ms]).toEqual([0, 9000])
      }).pipe(Effect.provide(routerLive(config)))
    }).pipe(Effect.scoped))
})
