/**
 * Active health checks on the test clock: results feed the breaker, so a provider whose circuit
 * opened is used again once a check finds it healthy, without a restart.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Layer, TestClock } from "effect"
import * as Resilience from "../../src/config/Resilience.js"
import * as Checks from "../../src/health/Checks.js"
import * as Health from "../../src/health/Health.js"
import * as Providers from "../../src/providers/Providers.js"
import { classifyTransportError, Upstream, type UpstreamService } from "../../src/providers/Upstream.js"
import * as FakeUpstream from "../../src/testing/FakeUpstream.js"
import type { FakeBehaviour } from "../../src/testing/Script.js"

const config = { providers: { local: { endpoint: "http://127.0.0.1:11434/v1", models: ["m"] }, remote: { endpoint: "http://127.0.0.1:1/v1", models: ["m"] } } }

const settings: Resilience.ResilienceSettings = {
  ...Resilience.defaults,
  healthCheckIntervalMs: 60_000,
  healthCheckTimeoutMs: 10_000,
  breaker: { ...Resilience.defaults.breaker, consecutiveFailures: 2 }
}

/** The checks over the fake provider; `wrap` may stand between them and it. */
const world = (
  behaviours: Record<string, FakeBehaviour | ReadonlyArray<FakeBehaviour>>,
  wrap: Layer.Layer<Upstream, never, Upstream> = Layer.effectContext(Effect.context<Upstream>())
) => {
  const upstream = FakeUpstream.layer(Object.fromEntries(Object.entries(behaviours).map(([id, behaviour]) => [id, { behaviour, models: ["m"] }])))
  const base = Layer.mergeAll(Providers.layerStatic(config), Health.layer).pipe(
    Layer.provideMerge(upstream),
    Layer.provideMerge(Resilience.layer(settings))
  )
  return Checks.layer.pipe(Layer.provide(wrap.pipe(Layer.provide(base))), Layer.provideMerge(base))
}

/** The upstream as it is, except that requests (checks) to `id` go to `request` instead. */
const checksOf = (id: string, request: UpstreamService["request"]) =>
  Layer.effect(
    Upstream,
    Effect.map(Upstream, (inner) =>
      Upstream.of({
        send: inner.send,
        request: (call) => (call.provider.id === id ? request(call) : inner.request(call))
      }))
  )

/** Checks of `id` wait for one of its connections (all busy), and wait on. */
const connectionsBusy = (id: string) => checksOf(id, (call) => Effect.zipRight(Effect.sync(() => call.onRequestWaiting?.()), Effect.never))

/** Checks of `id` cannot even open a connection: the router's process is out of file descriptors. */
const outOfDescriptors = (id: string) =>
  checksOf(id, () => Effect.fail(classifyTransportError(id, Object.assign(new Error("connect EMFILE 127.0.0.1:1 - Local (undefined:undefined)"), { code: "EMFILE" }))))

const stateOf = (id: string) =>
  Effect.gen(function* () {
    const health = yield* Health.Health
    return health.status([id], yield* Clock.currentTimeMillis)[0]!
  })

describe("active health checks", () => {
  it.effect("check every provider at start and then every interval, a bounded number at a time", () =>
    Effect.gen(function* () {
      const fake = yield* FakeUpstream.FakeUpstream
      const checks = () => Effect.map(fake.calls, (cs) => cs.filter((c) => c.path === "/models").length)
      yield* TestClock.adjust("1 millis")
      const first = yield* checks()
      expect(first).toBeGreaterThanOrEqual(2)
      yield* TestClock.adjust("59 seconds")
      expect(yield* checks()).toBe(first)
      yield* TestClock.adjust("1 second")
      expect(yield* checks()).toBe(first + 2)
    }).pipe(Effect.provide(world({}))))

  it.effect("failing checks open the circuit; a healthy check closes it again", () =>
    Effect.gen(function* () {
      yield* TestClock.adjust("1 millis")
      yield* TestClock.adjust("60 seconds")
      const down = yield* stateOf("local")
      expect(down.state).toBe("circuit_open")
      expect(down.last_check?.healthy).toBe(false)
      yield* TestClock.adjust("60 seconds")
      const up = yield* stateOf("local")
      expect(up.state).toBe("healthy")
      expect(up.last_check?.healthy).toBe(true)
    }).pipe(Effect.provide(world({ local: [{ mode: "status", status: 503 }, { mode: "status", status: 503 }, { mode: "ok" }] }))))

  it.effect("a check that hangs is a failure after the check timeout", () =>
    Effect.gen(function* () {
      yield* TestClock.adjust("9999 millis")
      expect((yield* stateOf("remote")).last_check).toBeNull()
      yield* TestClock.adjust("1 millis")
      const after = yield* stateOf("remote")
      expect(after.last_check?.healthy).toBe(false)
      expect(after.last_check?.detail).toBe("no answer within 10000 ms")
    }).pipe(Effect.provide(world({ remote: { mode: "hang" } }))))

  it.effect("a check that timed out still waiting for one of the provider's connections is not counted: it never reached the provider", () =>
    Effect.gen(function* () {
      yield* TestClock.adjust("10 seconds")
      expect((yield* stateOf("remote")).last_check).toBeNull()
      expect((yield* stateOf("local")).last_check?.healthy).toBe(true)
      yield* TestClock.adjust("60 seconds")
      expect((yield* stateOf("remote")).last_check).toBeNull()
      expect((yield* stateOf("remote")).state).toBe("healthy")
    }).pipe(Effect.provide(world({}, connectionsBusy("remote")))))

  it.effect("a check the router could not even open (its process out of file descriptors) is not counted: it never reached the provider", () =>
    Effect.gen(function* () {
      yield* TestClock.adjust("1 millis")
      for (let i = 0; i < 4; i++) yield* TestClock.adjust("60 seconds")
      const remote = yield* stateOf("remote")
      expect(remote.state).toBe("healthy")
      expect(remote.circuit).toMatchObject({ state: "closed", consecutive_failures: 0 })
      expect(remote.last_check).toBeNull()
      expect((yield* stateOf("local")).last_check?.healthy).toBe(true)
    }).pipe(Effect.provide(world({}, outOfDescriptors("remote")))))

  it.effect("a 401 on the check marks the provider misconfigured; 404 and 405 are healthy", () =>
    Effect.gen(function* () {
      yield* TestClock.adjust("1 millis")
      expect((yield* stateOf("local")).state).toBe("misconfigured")
      expect((yield* stateOf("remote")).last_check?.healthy).toBe(true)
    }).pipe(Effect.provide(world({ local: { mode: "status", status: 401 }, remote: { mode: "status", status: 405 } }))))

  it.effect("a 429 or a 402 on the check is not a health failure: the circuit stays closed however many come", () =>
    Effect.gen(function* () {
      yield* TestClock.adjust("1 millis")
      yield* TestClock.adjust("5 minutes")
      for (const id of ["local", "remote"]) {
        const s = yield* stateOf(id)
        expect(s.state, id).toBe("healthy")
        expect(s.circuit, id).toMatchObject({ state: "closed", trips: 0 })
        expect(s.last_check?.healthy, id).toBe(false)
      }
      expect((yield* stateOf("local")).last_check?.detail).toBe("GET /models answered HTTP 429")
    }).pipe(Effect.provide(world({ local: { mode: "status", status: 429, retryAfter: 1 }, remote: { mode: "status", status: 402 } }))))
})
