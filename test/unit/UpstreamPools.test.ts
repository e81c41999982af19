/**
 * The live `Upstream` across configuration changes: a provider whose endpoint changed gets a new
 * pool, and a request planned before the change (a failover onto the old spec) still finds a
 * working one, while requests on the new spec are in flight. A provider whose `maxConnections`
 * changed gets a pool of the new size, and requests on the old one still complete.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import type { ProviderSpec } from "../../src/domain/Provider.js"
import * as UpstreamLive from "../../src/providers/Upstream.js"
import { startFakeServer, type FakeServer } from "../../src/testing/FakeServer.js"
import { heldServer, providerSpec } from "./helpers.js"

const spec = (endpoint: string): ProviderSpec => providerSpec("p", { endpoint, source: "api" })

const servers: Array<FakeServer> = []
afterAll(async () => {
  for (const s of servers) await s.close()
})
const fake = async (name: string) => {
  const s = await startFakeServer({ name, models: ["m"] })
  servers.push(s)
  return s
}

const body = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] })
const ask = (provider: ProviderSpec) =>
  Effect.flatMap(UpstreamLive.Upstream, (u) =>
    Effect.map(
      u.request({ provider, method: "POST", path: "/chat/completions", body, stream: false }),
      (r) => ({ status: r.status, content: (JSON.parse(Buffer.from(r.body).toString()) as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content })
    ))

describe("Upstream pools across a configuration change", () => {
  it.live("serves the old spec and the new one alike, in any order and concurrently, each at its own endpoint", () =>
    Effect.gen(function* () {
      const before = yield* Effect.promise(() => fake("before"))
      const after = yield* Effect.promise(() => fake("after"))
      const old = spec(before.url)
      const current = spec(after.url)
      expect((yield* ask(old)).content).toBe("Hello from before!")
      expect((yield* ask(current)).content).toBe("Hello from after!")
      // A failover planned before the change reaches the provider through its old spec.
      const results = yield* Effect.all([ask(old), ask(current), ask(old), ask(current)], { concurrency: "unbounded" })
      expect(results.map((r) => r.content)).toEqual(["Hello from before!", "Hello from after!", "Hello from before!", "Hello from after!"])
      expect((yield* ask(current)).content).toBe("Hello from after!")
      expect((yield* ask(current)).content).toBe("Hello from after!")
      // Slow answers, so that requests on each pool are in flight while the other spec is used.
      before.setBehaviour({ mode: "ok", firstByteMs: 30 })
      after.setBehaviour({ mode: "ok", firstByteMs: 30 })
      const slow = yield* Effect.all(Array.from({ length: 20 }, (_, i) => Effect.delay(ask(i % 3 === 0 ? old : current), i * 3)), { concurrency: "unbounded", mode: "either" })
      expect(slow.filter((r) => r._tag === "Left")).toEqual([])
      expect(slow.map((r) => (r._tag === "Right" ? r.right.content : null))).toEqual(
        Array.from({ length: 20 }, (_, i) => (i % 3 === 0 ? "Hello from before!" : "Hello from after!"))
      )
    }).pipe(Effect.provide(UpstreamLive.layer)))
})

/** A held backend (`heldServer`) whose requests the test answers oldest first. */
const heldServerInOrder = Effect.map(heldServer, (server) => {
  let answered = 0
  return {
    url: server.url,
    received: () => server.held.length,
    inFlight: server.inFlight,
    arrived: server.arrived,
    answerOldest: () => {
      const body = JSON.stringify({ choices: [{ index: 0, message: { role: "assistant", content: `answer ${answered}` }, finish_reason: "stop" }] })
      server.held[answered++]!.writeHead(200, { "content-type": "application/json" }).end(body)
    }
  }
})

describe("Upstream pools and a provider's maxConnections", () => {
  it.live("sends at most maxConnections at once, and follows a changed cap; requests on the old pool still complete", () =>
    Effect.gen(function* () {
      const server = yield* heldServerInOrder
      const settle = Effect.promise(() => new Promise((r) => setTimeout(r, 100)))
      const capped = (maxConnections: number) => providerSpec("p", { endpoint: server.url, source: "api", maxConnections })
      const one = capped(1)
      const first = yield* Effect.fork(Effect.all([ask(one), ask(one), ask(one)], { concurrency: "unbounded" }))
      yield* Effect.promise(() => server.arrived(1))
      yield* settle
      expect(server.inFlight()).toBe(1)

      // The cap is raised: new requests get a pool of three, while the old pool (closing) keeps
      // its one connection for the two requests queued on it.
      const three = capped(3)
      const second = yield* Effect.fork(Effect.all([ask(three), ask(three), ask(three)], { concurrency: "unbounded" }))
      yield* Effect.promise(() => server.arrived(4))
      yield* settle
      expect(server.inFlight()).toBe(4)

      // Answered in arrival order: each answer on the old pool lets its next queued request out.
      for (let n = 0; n < 6; n++) {
        yield* Effect.promise(() => server.arrived(n + 1))
        server.answerOldest()
      }
      const answers = [...(yield* Fiber.join(first)), ...(yield* Fiber.join(second))]
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200])
      expect(server.received()).toBe(6)

      // Lowered again: one at a time.
      const again = yield* Effect.fork(Effect.all([ask(one), ask(one)], { concurrency: "unbounded" }))
      yield* Effect.promise(() => server.arrived(7))
      yield* settle
      expect(server.inFlight()).toBe(1)
      server.answerOldest()
      yield* Effect.promise(() => server.arrived(8))
      server.answerOldest()
      expect((yield* Fiber.join(again)).map((a) => a.status)).toEqual([200, 200])
    }).pipe(Effect.scoped, Effect.provide(UpstreamLive.layer)))
})
