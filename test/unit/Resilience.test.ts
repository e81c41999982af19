/**
 * The router's resilience, on the in-memory fake provider and the test clock: in-band errors,
 * circuit breakers, skipping (and the 503 when everything is skipped), rate-limit windows, retries
 * with backoff, and the end-to-end deadline. Time only moves with `TestClock.adjust`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Random, TestClock } from "effect"
import * as Resilience from "../../src/config/Resilience.js"
import type { ResilienceSettings } from "../../src/config/Resilience.js"
import { type AllCandidatesFailed, type NoCandidates, type RequestTimedOut, type UpstreamRejected, UpstreamTransportError } from "../../src/domain/Errors.js"
import type { BreakerConfig } from "../../src/health/Breaker.js"
import * as Health from "../../src/health/Health.js"
import * as Policy from "../../src/policy/Policy.js"
import * as Providers from "../../src/providers/Providers.js"
import { classifyTransportError, Upstream } from "../../src/providers/Upstream.js"
import * as Router from "../../src/router/Router.js"
import * as FakeUpstream from "../../src/testing/FakeUpstream.js"
import type { FakeBehaviour } from "../../src/testing/Script.js"
import { bodyJson, chat, endpoint, failureOf, joinNow, pending } from "./helpers.js"

type Settings = Partial<Omit<ResilienceSettings, "breaker">> & { readonly breaker?: Partial<BreakerConfig> }

/** Response headers a provider adds to its non-2xx answers (the fake itself sends none). */
type ExtraHeaders = Readonly<Record<string, Readonly<Record<string, string>>>>

const withHeaders = (extra: ExtraHeaders) =>
  Layer.effect(
    Upstream,
    Effect.map(Upstream, (inner) => {
      const add = <R extends { readonly status: number; readonly headers: Readonly<Record<string, unknown>> }>(id: string, r: R): R =>
        extra[id] === undefined || r.status < 300 ? r : ({ ...r, headers: { ...r.headers, ...extra[id] } } as R)
      return Upstream.of({
        send: (call) => Effect.map(inner.send(call), (r) => add(call.provider.id, r)),
        request: (call) => Effect.map(inner.request(call), (r) => add(call.provider.id, r))
      })
    })
  )

/**
 * A router over the fake provider with these resilience settings (defaults otherwise), giving
 * access to `Router`, `Health` and `FakeUpstream`.
 */
const routerWith = (
  settings: Settings,
  config: unknown,
  scripts: Readonly<Record<string, FakeUpstream.FakeProviderScript>> = {},
  headers: ExtraHeaders = {}
) => {
  const resilience: ResilienceSettings = {
    ...Resilience.defaults,
    ...settings,
    breaker: { ...Resilience.defaults.breaker, ...settings.breaker }
  }
  const HealthLive = Health.layer.pipe(Layer.provideMerge(Resilience.layer(resilience)))
  return Router.layerWithoutDependencies.pipe(
    Layer.provide(Policy.layer),
    Layer.provide(Providers.layerStatic(config)),
    Layer.provide(withHeaders(headers)),
    Layer.provideMerge(HealthLive),
    Layer.provideMerge(FakeUpstream.layer(scripts))
  )
}

/** `a` (tried first, also serving `m2`) and `b`. */
const pair = {
  providers: {
    a: { endpoint: endpoint("a"), models: ["m", "m2"], priority: 1 },
    b: { endpoint: endpoint("b"), models: ["m"], priority: 2 }
  }
}

const calls = Effect.flatMap(FakeUpstream.FakeUpstream, (f) => f.calls)
const callsTo = (provider: string) => Effect.map(calls, (cs) => cs.filter((c) => c.provider === provider).length)
const providersCalled = Effect.map(calls, (cs) => cs.map((c) => c.provider))
const ask = (model = "m", extra: Partial<Router.ChatInput> = {}) =>
  Effect.flatMap(Router.Router, (router) => router.chat({ request: chat(model), ...extra }))

const outcomes = (reply: { readonly attempts: ReadonlyArray<{ readonly provider: string; readonly outcome: string }> }) =>
  reply.attempts.map((a) => `${a.provider}:${a.outcome}`)

const statusOf = (id: string) =>
  Effect.flatMap(Health.Health, (h) => Effect.map(Effect.clockWith((c) => c.currentTimeMillis), (now) => h.status([id], now)[0]!))

const iso = (ms: number) => new Date(ms).toISOString()

const closing = new UpstreamTransportError({ provider: "a", reason: "aborted", detail: "connection pool closed (the router is shutting down)" })

const status = (s: number, body?: unknown): FakeBehaviour => (body === undefined ? { mode: "status", status: s } : { mode: "status", status: s, body })

describe("a 200 whose body is an error object", () => {
  const cases: ReadonlyArray<readonly [string, unknown, string, number]> = [
    ["a rate limit", { error: { message: "Rate limit reached for requests", type: "requests", code: "rate_limit_exceeded" } }, "rate_limited", 429],
    ["exhausted credits", { error: { message: "You exceeded your current quota", type: "insufficient_quota", code: "insufficient_quota" } }, "out_of_credits", 402],
    ["a bad key", { error: { message: "Incorrect API key provided", type: "authentication_error" } }, "auth_error", 401],
    ["an overload", { error: { message: "The engine is currently overloaded", code: 503 } }, "server_error", 503]
  ]
  for (const [name, body, outcome, code] of cases) {
    it.effect(`is ${name}: it fails over with outcome ${outcome}`, () =>
      Effect.gen(function* () {
        const reply = yield* ask()
        expect(reply.provider).toBe("b")
        if (reply._tag === "Json") expect(bodyJson(reply).choices[0].message.content).toBe("Hello from b!")
        expect(reply.attempts[0]).toMatchObject({ provider: "a", upstreamModel: "m", outcome, status: code })
        expect(reply.attempts[0]!.detail).toMatch(new RegExp(`^HTTP ${code}: \\{"error"`))
        expect(outcomes(reply)).toEqual([`a:${outcome}`, "b:ok"])
        expect(yield* providersCalled).toEqual(["a", "b"])
      }).pipe(Effect.provide(routerWith({}, pair, { a: { behaviour: status(200, body) } }))))
  }

  it.effect("about the request itself is returned as that error, not failed over", () =>
    Effect.gen(function* () {
      const error = (yield* failureOf(ask())) as UpstreamRejected
      expect(error._tag).toBe("UpstreamRejected")
      expect(error.status).toBe(400)
      expect(JSON.parse(Buffer.from(error.body).toString("utf8")).error.message).toBe("Unknown parameter: 'foo'")
      expect(yield* providersCalled).toEqual(["a"])
    }).pipe(Effect.provide(routerWith({}, pair, {
      a: { behaviour: status(200, { error: { message: "Unknown parameter: 'foo'", type: "invalid_request_error" } }) }
    }))))

  it.effect("counts in the provider's health like the status it stands for", () =>
    Effect.gen(function* () {
      yield* ask()
      expect((yield* statusOf("a")).rate_limited).toEqual([{ model: "m", until: iso(30_000) }])
      const again = yield* ask()
      expect(outcomes(again)).toEqual(["a:rate_limited", "b:ok"])
      expect(yield* callsTo("a")).toBe(1)
    }).pipe(Effect.provide(routerWith({ defaultRetryAfterMs: 30_000 }, pair, {
      a: { behaviour: status(200, { error: { message: "slow down", type: "rate_limit_error" } }) }
    }))))

  it.effect("with choices too is an answer", () =>
    Effect.gen(function* () {
      const reply = yield* ask()
      expect(reply.provider).toBe("a")
      expect(outcomes(reply)).toEqual(["a:ok"])
    }).pipe(Effect.provide(routerWith({}, pair, {
      a: { behaviour: status(200, { error: { message: "partial" }, choices: [{ index: 0, message: { role: "assistant", content: "x" }, finish_reason: "stop" }] }) }
    }))))
})

describe("the circuit breaker", () => {
  const breaker = { breaker: { consecutiveFailures: 3, cooldownMs: 10_000 } }

  it.effect("opens after the threshold; the next requests skip the provider without calling it", () =>
    Effect.gen(function* () {
      for (let i = 0; i < 3; i++) {
        expect(outcomes(yield* ask())).toEqual(["a:server_error", "b:ok"])
      }
      expect(yield* callsTo("a")).toBe(3)
      const skipped = yield* ask()
      expect(skipped.provider).toBe("b")
      expect(skipped.attempts).toEqual([
        { provider: "a", upstreamModel: "m", outcome: "circuit_open", detail: `circuit open until ${iso(10_000)}`, status: null, durationMs: 0 },
        { provider: "b", upstreamModel: "m", outcome: "ok", detail: "ok", status: 200, durationMs: 0 }
      ])
      // Every model of the provider.
      const other = yield* Effect.flip(ask("m2"))
      expect(other._tag).toBe("NoCandidates")
      yield* TestClock.adjust("9999 millis")
      expect(outcomes(yield* ask())).toEqual(["a:circuit_open", "b:ok"])
      expect(yield* callsTo("a")).toBe(3)
      expect(yield* statusOf("a")).toMatchObject({
        state: "circuit_open",
        circuit: { state: "open", open_until: iso(10_000), trips: 1 },
        stats: { requests: 3, failures: 3, successes: 0 }
      })

      // The cooldown is over: one probe goes through; it fails and the circuit opens for 20 s.
      yield* TestClock.adjust("1 millis")
      expect(outcomes(yield* ask())).toEqual(["a:server_error", "b:ok"])
      expect(yield* callsTo("a")).toBe(4)
      const reopened = yield* ask()
      expect(reopened.attempts[0]).toMatchObject({ outcome: "circuit_open", detail: `circuit open until ${iso(30_000)}` })
      expect(yield* callsTo("a")).toBe(4)
    }).pipe(Effect.provide(routerWith(breaker, pair, { a: { behaviour: status(500) } }))))

  it.effect("a probe that succeeds closes it: the provider is used again", () =>
    Effect.gen(function* () {
      for (let i = 0; i < 3; i++) yield* ask()
      yield* TestClock.adjust("10 seconds")
      const probe = yield* ask()
      expect(probe.provider).toBe("a")
      expect(outcomes(probe)).toEqual(["a:ok"])
      expect(outcomes(yield* ask())).toEqual(["a:ok"])
      expect(yield* callsTo("a")).toBe(5)
      expect(yield* callsTo("b")).toBe(3)
      expect((yield* statusOf("a")).circuit).toMatchObject({ state: "closed", trips: 0 })
    }).pipe(Effect.provide(routerWith(breaker, pair, { a: { behaviour: [status(500), status(500), status(500), { mode: "ok" }] } }))))

  it.effect("while the probe is under way, other requests skip the provider", () =>
    Effect.gen(function* () {
      for (let i = 0; i < 3; i++) yield* ask()
      yield* TestClock.adjust("10 seconds")
      const probe = yield* Effect.fork(ask())
      yield* TestClock.adjust("10 millis")
      expect(yield* callsTo("a")).toBe(4)
      // Joined without moving the clock: it must not wait for the probe.
      const meanwhile = yield* joinNow(yield* Effect.fork(ask()))
      expect(meanwhile.attempts[0]).toMatchObject({ provider: "a", outcome: "circuit_open", detail: "circuit half-open, probe under way" })
      expect(meanwhile.provider).toBe("b")
      expect(yield* callsTo("a")).toBe(4)
      yield* TestClock.adjust("990 millis")
      const answered = yield* joinNow(probe)
      expect(answered.provider).toBe("a")
      expect(outcomes(answered)).toEqual(["a:ok"])
    }).pipe(Effect.provide(routerWith(breaker, pair, {
      a: { behaviour: [status(500), status(500), status(500), { mode: "ok", firstByteMs: 1_000 }] }
    }))))

  it.effect("a probe whose client left frees the slot for the next request", () =>
    Effect.gen(function* () {
      for (let i = 0; i < 3; i++) yield* ask()
      yield* TestClock.adjust("10 seconds")
      const probe = yield* Effect.fork(ask())
      yield* TestClock.adjust("10 millis")
      yield* Fiber.interrupt(probe)
      const next = yield* ask()
      expect(outcomes(next)).toEqual(["a:ok"])
      expect((yield* calls).filter((c) => c.provider === "a").map((c) => c.aborted)).toEqual([false, false, false, true, false])
    }).pipe(Effect.provide(routerWith(breaker, pair, {
      a: { behaviour: [status(500), status(500), status(500), { mode: "hang" }, { mode: "ok" }] }
    }))))

  it.effect("rate limits never open it", () =>
    Effect.gen(function* () {
      for (let i = 0; i < 6; i++) {
        expect(outcomes(yield* ask())).toEqual(["a:rate_limited", "b:ok"])
      }
      expect(yield* callsTo("a")).toBe(6)
      expect((yield* statusOf("a")).circuit).toMatchObject({ state: "closed", consecutive_failures: 0 })
    }).pipe(Effect.provide(routerWith(breaker, pair, { a: { behaviour: status(429) } }, { a: { "retry-after": "0" } }))))

  it.effect("a request answered with a client error resets the count", () =>
    Effect.gen(function* () {
      yield* ask()
      yield* ask()
      yield* failureOf(ask())
      yield* ask()
      yield* ask()
      expect(outcomes(yield* ask())).toEqual(["a:ok"])
      expect(yield* callsTo("a")).toBe(6)
    }).pipe(Effect.provide(routerWith(breaker, pair, {
      a: { behaviour: [status(500), status(500), status(400), status(500), status(500), { mode: "ok" }] }
    }))))
})

describe("when every candidate is skipped", () => {
  it.effect("the request fails with NoCandidates, listing why, without calling anyone", () =>
    Effect.gen(function* () {
      const first = (yield* failureOf(ask())) as AllCandidatesFailed
      expect(first._tag).toBe("AllCandidatesFailed")
      expect(first.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:auth_error", "b:auth_error"])
      const second = (yield* failureOf(ask())) as NoCandidates
      expect(second._tag).toBe("NoCandidates")
      expect(second.model).toBe("m")
      expect(second.reasons).toEqual([`a+m: circuit open until ${iso(600_000)}`, `b+m: circuit open until ${iso(600_000)}`])
      expect(yield* providersCalled).toEqual(["a", "b"])
      expect((yield* statusOf("a")).state).toBe("misconfigured")
    }).pipe(Effect.provide(routerWith({}, pair, { a: { behaviour: status(401) }, b: { behaviour: status(403) } }))))

  it.effect("one skipped and one failed is AllCandidatesFailed, with both listed", () =>
    Effect.gen(function* () {
      yield* failureOf(ask())
      const error = (yield* failureOf(ask())) as AllCandidatesFailed
      expect(error._tag).toBe("AllCandidatesFailed")
      expect(error.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:out_of_credits", "b:server_error"])
      expect(yield* providersCalled).toEqual(["a", "b", "b"])
    }).pipe(Effect.provide(routerWith({}, pair, { a: { behaviour: status(402) }, b: { behaviour: status(500) } }))))
})

describe("rate-limit windows", () => {
  it.effect("a 429's Retry-After skips that provider for that model until it passes, then it is used at once", () =>
    Effect.gen(function* () {
      const first = yield* ask()
      expect(first.attempts[0]).toMatchObject({ provider: "a", outcome: "rate_limited", status: 429 })
      expect(first.provider).toBe("b")
      expect((yield* statusOf("a")).rate_limited).toEqual([{ model: "m", until: iso(5_000) }])

      yield* TestClock.adjust("4999 millis")
      const skipped = yield* ask()
      expect(skipped.attempts[0]).toEqual({
        provider: "a",
        upstreamModel: "m",
        outcome: "rate_limited",
        detail: `rate limited until ${iso(5_000)}`,
        status: null,
        durationMs: 0
      })
      expect(skipped.provider).toBe("b")
      expect(yield* callsTo("a")).toBe(1)
      // Another model of the same provider is not limited.
      const otherModel = yield* ask("m2")
      expect(otherModel.provider).toBe("a")
      expect(yield* callsTo("a")).toBe(2)

      yield* TestClock.adjust("1 millis")
      const after = yield* ask()
      expect(after.provider).toBe("a")
      expect(outcomes(after)).toEqual(["a:ok"])
      expect(yield* callsTo("a")).toBe(3)
    }).pipe(Effect.provide(routerWith({}, pair, { a: { behaviour: [status(429), { mode: "ok" }] } }, { a: { "retry-after": "5" } }))))

  it.effect("without Retry-After the window is default_retry_after", () =>
    Effect.gen(function* () {
      expect(outcomes(yield* ask())).toEqual(["a:rate_limited", "b:ok"])
      yield* TestClock.adjust("1999 millis")
      expect(outcomes(yield* ask())).toEqual(["a:rate_limited", "b:ok"])
      expect(yield* callsTo("a")).toBe(1)
      yield* TestClock.adjust("1 millis")
      expect(outcomes(yield* ask())).toEqual(["a:ok"])
    }).pipe(Effect.provide(routerWith({ defaultRetryAfterMs: 2_000 }, pair, { a: { behaviour: [status(429), { mode: "ok" }] } }))))

  it.effect("a Retry-After given as an HTTP date", () =>
    Effect.gen(function* () {
      yield* ask()
      yield* TestClock.adjust("2999 millis")
      expect(outcomes(yield* ask())).toEqual(["a:rate_limited", "b:ok"])
      yield* TestClock.adjust("1 millis")
      expect(outcomes(yield* ask())).toEqual(["a:ok"])
    }).pipe(Effect.provide(routerWith({}, pair, { a: { behaviour: [status(429), { mode: "ok" }] } }, {
      a: { "retry-after": new Date(3_000).toUTCString() }
    }))))
})

describe("an attempt the router itself cut short", () => {
  it.effect("(its pools closing as it shuts down) is not held against the provider", () =>
    Effect.gen(function* () {
      const failed = (yield* failureOf(ask())) as AllCandidatesFailed
      expect(failed.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:aborted"])
      expect((yield* statusOf("a")).stats).toMatchObject({ requests: 0, failures: 0 })
    }).pipe(Effect.provide(
      Router.layerWithoutDependencies.pipe(
        Layer.provide(Policy.layer),
        Layer.provide(Providers.layerStatic({ providers: { a: { endpoint: endpoint("a"), models: ["m"] } } })),
        Layer.provide(Layer.succeed(Upstream, Upstream.of({
          send: () => Effect.fail(closing),
          request: () => Effect.fail(closing)
        }))),
        Layer.provideMerge(Health.layer.pipe(Layer.provideMerge(Resilience.layer(Resilience.defaults))))
      )
    )))
})

describe("an attempt the router itself could not make", () => {
  // What undici reports when the router's process has no file descriptor left (a flood of idle
  // client connections can do that): the provider was never reached.
  const emfile = classifyTransportError("a", Object.assign(new Error("connect EMFILE 127.0.0.1:1 - Local (undefined:undefined)"), { code: "EMFILE", errno: -24, syscall: "connect" }))
  it.effect("(out of file descriptors) is not held against the provider, however often", () =>
    Effect.gen(function* () {
      for (let i = 0; i < 8; i++) {
        const failed = (yield* failureOf(ask())) as AllCandidatesFailed
        expect(failed.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:local_error"])
        expect(failed.attempts[0]!.detail).toMatch(/EMFILE/)
      }
      const a = yield* statusOf("a")
      expect(a.circuit).toMatchObject({ state: "closed", consecutive_failures: 0 })
      expect(a.stats).toMatchObject({ requests: 0, failures: 0 })
    }).pipe(Effect.provide(
      Router.layerWithoutDependencies.pipe(
        Layer.provide(Policy.layer),
        Layer.provide(Providers.layerStatic({ providers: { a: { endpoint: endpoint("a"), models: ["m"] } } })),
        Layer.provide(Layer.succeed(Upstream, Upstream.of({
          send: () => Effect.fail(emfile),
          request: () => Effect.fail(emfile)
        }))),
        Layer.provideMerge(Health.layer.pipe(Layer.provideMerge(Resilience.layer(Resilience.defaults))))
      )
    )))
})

describe("what a client retrying should wait (Retry-After, x-should-retry)", () => {
  it.effect("every candidate rate limited: the 502, then the 503, say when the first frees up", () =>
    Effect.gen(function* () {
      const failed = (yield* failureOf(ask())) as AllCandidatesFailed
      expect(failed._tag).toBe("AllCandidatesFailed")
      expect(failed.retryAfterMs).toBe(3_000)
      yield* TestClock.adjust("1 second")
      const none = (yield* failureOf(ask())) as NoCandidates
      expect(none._tag).toBe("NoCandidates")
      expect([none.retryAfterMs, none.final]).toEqual([2_000, undefined])
    }).pipe(Effect.provide(routerWith({}, pair, { a: { behaviour: status(429) }, b: { behaviour: status(429) } }, { a: { "retry-after": "5" }, b: { "retry-after": "3" } }))))

  it.effect("a candidate that could be tried again at once (a 500): no wait to suggest", () =>
    Effect.gen(function* () {
      const failed = (yield* failureOf(ask())) as AllCandidatesFailed
      expect(failed.retryAfterMs).toBeUndefined()
    }).pipe(Effect.provide(routerWith({}, pair, { a: { behaviour: status(429) }, b: { behaviour: status(500) } }, { a: { "retry-after": "5" } }))))

  it.effect("an open circuit frees up when it half-opens", () =>
    Effect.gen(function* () {
      yield* failureOf(ask("m2"))
      const none = (yield* failureOf(ask("m2"))) as NoCandidates
      expect(none._tag).toBe("NoCandidates")
      expect(none.retryAfterMs).toBe(7_000)
    }).pipe(Effect.provide(routerWith({ breaker: { consecutiveFailures: 1, cooldownMs: 7_000 } }, pair, { a: { behaviour: status(500) } }))))

  it.effect("an alias whose targets name nothing served says so, and is final", () =>
    Effect.gen(function* () {
      const none = (yield* failureOf(ask("ghost"))) as NoCandidates
      expect(none._tag).toBe("NoCandidates")
      expect(none.reasons).toEqual(["its targets name no model a configured provider serves (aliases do not name other aliases)"])
      expect(none.final).toBe(true)
    }).pipe(Effect.provide(routerWith({}, { ...pair, aliases: { ghost: ["nosuchmodel", "smart"], smart: "m" } }))))

  it.effect("nothing can ever serve the request as it is (tools to providers without them): final", () =>
    Effect.gen(function* () {
      const none = (yield* failureOf(ask("m", { request: chat("m", { tools: [{ type: "function", function: { name: "f" } }] }) }))) as NoCandidates
      expect(none._tag).toBe("NoCandidates")
      expect([none.final, none.retryAfterMs]).toEqual([true, undefined])
    }).pipe(Effect.provide(routerWith({}, {
      providers: {
        a: { endpoint: endpoint("a"), models: ["m"], supports_tools: false },
        b: { endpoint: endpoint("b"), models: ["m"], supports_tools: false }
      }
    }))))
})

describe("retries on the same provider", () => {
  const retrying = { retries: 2, retryBackoffMs: 100 }
  /** Jitter pinned: 0.5 makes each delay exactly `retry_backoff × 2^n`. */
  const pinned = (r: number) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.withRandom(self, Random.fixed([r]))

  it.effect("a provider failing twice then answering answers on the third call, after the backoff delays", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(ask().pipe(pinned(0.5)))
      yield* TestClock.adjust("99 millis")
      expect(yield* pending(fiber)).toBe(true)
      expect(yield* callsTo("a")).toBe(1)
      yield* TestClock.adjust("1 millis")
      expect(yield* callsTo("a")).toBe(2)
      // The second delay is doubled.
      yield* TestClock.adjust("199 millis")
      expect(yield* pending(fiber)).toBe(true)
      expect(yield* callsTo("a")).toBe(2)
      yield* TestClock.adjust("1 millis")
      const reply = yield* joinNow(fiber)
      expect(reply.provider).toBe("a")
      expect(reply.attempts.map((a) => [a.provider, a.outcome, a.status])).toEqual([
        ["a", "server_error", 500],
        ["a", "server_error", 500],
        ["a", "ok", 200]
      ])
      expect(yield* providersCalled).toEqual(["a", "a", "a"])
    }).pipe(Effect.provide(routerWith(retrying, pair, { a: { behaviour: [status(500), status(500), { mode: "ok" }] } }))))

  it.effect("the jitter scales each delay between 0.5× and 1.5×", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(ask().pipe(pinned(0)))
      yield* TestClock.adjust("49 millis")
      expect(yield* callsTo("a")).toBe(1)
      yield* TestClock.adjust("1 millis")
      expect(yield* callsTo("a")).toBe(2)
      yield* TestClock.adjust("99 millis")
      expect(yield* callsTo("a")).toBe(2)
      yield* TestClock.adjust("1 millis")
      expect((yield* joinNow(fiber)).provider).toBe("a")
    }).pipe(Effect.provide(routerWith(retrying, pair, { a: { behaviour: [status(500), status(500), { mode: "ok" }] } }))))

  it.effect("transport failures are retried too", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(ask().pipe(pinned(0.5)))
      yield* TestClock.adjust("100 millis")
      const reply = yield* joinNow(fiber)
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:connect_error", "a:ok"])
    }).pipe(Effect.provide(routerWith(retrying, pair, { a: { behaviour: [{ mode: "refuse" }, { mode: "ok" }] } }))))

  it.effect("once the retries are spent, it fails over", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(ask().pipe(pinned(0.5)))
      yield* TestClock.adjust("299 millis")
      expect(yield* pending(fiber)).toBe(true)
      expect(yield* providersCalled).toEqual(["a", "a"])
      yield* TestClock.adjust("1 millis")
      const reply = yield* joinNow(fiber)
      expect(outcomes(reply)).toEqual(["a:server_error", "a:server_error", "a:server_error", "b:ok"])
      expect(yield* providersCalled).toEqual(["a", "a", "a", "b"])
    }).pipe(Effect.provide(routerWith(retrying, pair, { a: { behaviour: status(503) } }))))

  for (const [code, outcome] of [[429, "rate_limited"], [401, "auth_error"], [402, "out_of_credits"]] as const) {
    it.effect(`are not used for HTTP ${code} (${outcome}): it fails over at once`, () =>
      Effect.gen(function* () {
        const fiber = yield* Effect.fork(ask().pipe(pinned(0.5)))
        const reply = yield* joinNow(fiber)
        expect(outcomes(reply)).toEqual([`a:${outcome}`, "b:ok"])
        expect(yield* providersCalled).toEqual(["a", "b"])
      }).pipe(Effect.provide(routerWith(retrying, pair, { a: { behaviour: status(code) } }))))
  }

  it.effect("are not used for a client error: it is returned at once", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(failureOf(ask().pipe(pinned(0.5))))
      const error = yield* joinNow(fiber)
      expect(error._tag).toBe("UpstreamRejected")
      expect(yield* providersCalled).toEqual(["a"])
    }).pipe(Effect.provide(routerWith(retrying, pair, { a: { behaviour: status(400) } }))))

  it.effect("are not used when the longest backoff would pass the deadline", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(ask().pipe(pinned(0.5)))
      const reply = yield* joinNow(fiber)
      expect(outcomes(reply)).toEqual(["a:server_error", "b:ok"])
    }).pipe(Effect.provide(routerWith({ retries: 2, retryBackoffMs: 1_000, requestTimeoutMs: 1_500 }, pair, { a: { behaviour: status(500) } }))))

  it.effect("are off by default", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(ask())
      expect(outcomes(yield* joinNow(fiber))).toEqual(["a:server_error", "b:ok"])
    }).pipe(Effect.provide(routerWith({}, pair, { a: { behaviour: [status(500), { mode: "ok" }] } }))))
})

describe("the end-to-end deadline", () => {
  it.effect("a hanging upstream fails the request with RequestTimedOut after exactly request_timeout", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(failureOf(ask()))
      yield* TestClock.adjust("4999 millis")
      expect(yield* pending(fiber)).toBe(true)
      yield* TestClock.adjust("1 millis")
      const error = (yield* joinNow(fiber)) as RequestTimedOut
      expect(error._tag).toBe("RequestTimedOut")
      expect(error.model).toBe("m")
      expect(error.timeoutMs).toBe(5_000)
      expect(error.attempts).toEqual([
        { provider: "a", upstreamModel: "m", outcome: "timeout", detail: "the request deadline passed", status: null, durationMs: 5_000 }
      ])
      // The call was aborted, and no other candidate was tried past the deadline.
      expect((yield* calls).map((c) => [c.provider, c.aborted])).toEqual([["a", true]])
    }).pipe(Effect.provide(routerWith({ requestTimeoutMs: 5_000 }, pair, { a: { behaviour: { mode: "hang" } } }))))

  it.effect("it spans every candidate: the last one gets what is left", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(failureOf(ask()))
      yield* TestClock.adjust("2 seconds")
      expect(yield* providersCalled).toEqual(["a", "b"])
      yield* TestClock.adjust("2999 millis")
      expect(yield* pending(fiber)).toBe(true)
      yield* TestClock.adjust("1 millis")
      const error = (yield* joinNow(fiber)) as RequestTimedOut
      expect(error._tag).toBe("RequestTimedOut")
      expect(error.attempts.map((a) => [a.provider, a.outcome, a.detail, a.durationMs])).toEqual([
        ["a", "timeout", "no first byte within 2000 ms", 2_000],
        ["b", "timeout", "the request deadline passed", 3_000]
      ])
    }).pipe(Effect.provide(routerWith({ requestTimeoutMs: 5_000 }, {
      providers: {
        a: { endpoint: endpoint("a"), models: ["m"], priority: 1, timeouts: { first_byte: 2 } },
        b: { endpoint: endpoint("b"), models: ["m"], priority: 2 }
      }
    }, { a: { behaviour: { mode: "hang" } }, b: { behaviour: { mode: "hang" } } }))))

  it.effect("timeoutMs lowers it", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(failureOf(ask("m", { timeoutMs: 300 })))
      yield* TestClock.adjust("299 millis")
      expect(yield* pending(fiber)).toBe(true)
      yield* TestClock.adjust("1 millis")
      const error = (yield* joinNow(fiber)) as RequestTimedOut
      expect(error._tag).toBe("RequestTimedOut")
      expect(error.timeoutMs).toBe(300)
      expect(error.message).toContain("within the request deadline of 300 ms")
    }).pipe(Effect.provide(routerWith({}, pair, { a: { behaviour: { mode: "hang" } } }))))

  it.effect("timeoutMs never raises it", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(failureOf(ask("m", { timeoutMs: 5_000 })))
      yield* TestClock.adjust("999 millis")
      expect(yield* pending(fiber)).toBe(true)
      yield* TestClock.adjust("1 millis")
      const error = (yield* joinNow(fiber)) as RequestTimedOut
      expect(error._tag).toBe("RequestTimedOut")
      expect(error.timeoutMs).toBe(1_000)
    }).pipe(Effect.provide(routerWith({ requestTimeoutMs: 1_000 }, pair, { a: { behaviour: { mode: "hang" } } }))))

  it.effect("an answer inside it is served", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(ask("m", { timeoutMs: 500 }))
      yield* TestClock.adjust("400 millis")
      const reply = yield* joinNow(fiber)
      expect(reply.provider).toBe("a")
      expect(reply.attempts.map((a) => [a.provider, a.outcome, a.durationMs])).toEqual([["a", "ok", 400]])
    }).pipe(Effect.provide(routerWith({}, pair, { a: { behaviour: { mode: "ok", firstByteMs: 400 } } }))))

  it.effect("bounds streamed requests and embeddings too", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const streamed = yield* Effect.fork(failureOf(router.chat({ request: chat("m", { stream: true }), timeoutMs: 250 })))
      const embedded = yield* Effect.fork(failureOf(router.embeddings({ request: { model: "m", input: "hi" }, timeoutMs: 350 })))
      yield* TestClock.adjust("249 millis")
      expect(yield* pending(streamed)).toBe(true)
      yield* TestClock.adjust("1 millis")
      expect(yield* joinNow(streamed)).toMatchObject({ _tag: "RequestTimedOut", timeoutMs: 250 })
      yield* TestClock.adjust("99 millis")
      expect(yield* pending(embedded)).toBe(true)
      yield* TestClock.adjust("1 millis")
      expect(yield* joinNow(embedded)).toMatchObject({ _tag: "RequestTimedOut", timeoutMs: 350 })
    }).pipe(Effect.provide(routerWith({}, pair, { a: { behaviour: { mode: "hang" } } }))))

  // A caller's own short deadline says nothing about the provider: a slow but healthy provider (well
  // inside its own first_byte timeout) must not have its circuit opened, for everyone, by clients
  // that chose to wait less.
  it.effect("a deadline the caller lowered does not count against the provider's circuit", () =>
    Effect.gen(function* () {
      for (let i = 0; i < 5; i++) {
        const fiber = yield* Effect.fork(failureOf(ask("m", { timeoutMs: 500 })))
        yield* TestClock.adjust("500 millis")
        expect(yield* joinNow(fiber)).toMatchObject({ _tag: "RequestTimedOut" })
      }
      const fiber = yield* Effect.fork(ask())
      yield* TestClock.adjust("1 second")
      const reply = yield* joinNow(fiber)
      expect(outcomes(reply)).toEqual(["a:ok"])
    }).pipe(Effect.provide(routerWith({}, pair, { a: { behaviour: { mode: "ok", firstByteMs: 1_000 } } }))))
})

describe("Router.layer's resilience settings", () => {
  /** Both providers hang, and give up on a first byte only long after any deadline below. */
  const patient = {
    providers: {
      a: { endpoint: endpoint("a"), models: ["m"], priority: 1, timeouts: { first_byte: 5_000, total: 5_000 } },
      b: { endpoint: endpoint("b"), models: ["m"], priority: 2, timeouts: { first_byte: 5_000, total: 5_000 } }
    }
  }
  const hanging = FakeUpstream.layer({ a: { behaviour: { mode: "hang" } }, b: { behaviour: { mode: "hang" } } })
  const deadlineOf = (ms: number) =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(failureOf(ask()))
      yield* TestClock.adjust(ms - 1)
      expect(yield* pending(fiber)).toBe(true)
      yield* TestClock.adjust(1)
      const error = (yield* joinNow(fiber)) as RequestTimedOut
      expect(error._tag).toBe("RequestTimedOut")
      expect(error.timeoutMs).toBe(ms)
    })

  it.effect("come from the resilience section of the config given to Providers.layerStatic", () =>
    deadlineOf(5_000).pipe(Effect.provide(Router.layer.pipe(
      Layer.provide(Providers.layerStatic({ ...patient, resilience: { request_timeout: 5 } })),
      Layer.provideMerge(hanging)
    ))))

  it.effect("without such a section, are those given to the Layer", () =>
    deadlineOf(7_000).pipe(Effect.provide(Router.layer.pipe(
      Layer.provide(Providers.layerStatic(patient)),
      Layer.provide(Resilience.layer({ ...Resilience.defaults, requestTimeoutMs: 7_000 })),
      Layer.provideMerge(hanging)
    ))))

  it.effect("and with neither, are the defaults", () =>
    deadlineOf(Resilience.defaults.requestTimeoutMs).pipe(Effect.provide(Router.layer.pipe(
      Layer.provide(Providers.layerStatic(patient)),
      Layer.provideMerge(hanging)
    ))))
})

describe("passive statistics", () => {
  it.effect("each answer feeds the provider's latency averages and success rate", () =>
    Effect.gen(function* () {
      const first = yield* Effect.fork(ask())
      yield* TestClock.adjust("200 millis")
      yield* joinNow(first)
      expect((yield* statusOf("a")).stats).toMatchObject({ requests: 1, successes: 1, success_rate: 1, ewma_ttfb_ms: 200, ewma_total_ms: 200 })
      const second = yield* Effect.fork(ask())
      yield* TestClock.adjust("700 millis")
      yield* joinNow(second)
      // 200 + 0.2 × (700 − 200)
      expect((yield* statusOf("a")).stats).toMatchObject({ requests: 2, successes: 2, ewma_ttfb_ms: 300, ewma_total_ms: 300 })
      expect(outcomes(yield* ask())).toEqual(["a:server_error", "b:ok"])
      expect((yield* statusOf("a")).stats).toMatchObject({ requests: 3, successes: 2, failures: 1, last_error_at: iso(900) })
      expect((yield* statusOf("a")).stats.last_error).toMatch(/^HTTP 500: /)
      expect((yield* statusOf("b")).stats).toMatchObject({ requests: 1, successes: 1, ewma_ttfb_ms: 0 })
    }).pipe(Effect.provide(routerWith({}, pair, {
      a: { behaviour: [{ mode: "ok", firstByteMs: 200 }, { mode: "ok", firstByteMs: 700 }, status(500)] }
    }))))
})
