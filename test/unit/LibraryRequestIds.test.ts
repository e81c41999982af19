/**
 * A library caller (an Effect app calling `Router.chat` without HTTP) need not make request ids:
 * the router makes one per request, as the HTTP edge does for a client that sent none. Without
 * that, its records had an empty id and the `weighted` strategy hashed one empty key for every
 * call, sending all of them to one provider whatever the weights.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as RequestLog from "../../src/persistence/RequestLog.js"
import { Router } from "../../src/router/Router.js"
import { FakeUpstream } from "../../src/testing/FakeUpstream.js"
import { chat, endpoint, requestLogLayer, routerWith } from "./helpers.js"

const weighted = {
  routing: { strategy: "weighted" },
  providers: {
    a: { endpoint: endpoint("a"), models: ["m"], weight: 1 },
    b: { endpoint: endpoint("b"), models: ["m"], weight: 1 }
  }
}

describe("requests from a library caller without an id", () => {
  it.effect("are spread by weight under the weighted strategy", () =>
    Effect.gen(function* () {
      const router = yield* Router
      for (let i = 0; i < 40; i++) yield* router.chat({ request: chat("m") })
      const calls = yield* Effect.flatMap(FakeUpstream, (f) => f.calls)
      const a = calls.filter((c) => c.provider === "a").length
      const b = calls.filter((c) => c.provider === "b").length
      expect(a + b).toBe(40)
      // Equal weights: each gets a fair share, not all or nothing.
      expect(a).toBeGreaterThanOrEqual(10)
      expect(b).toBeGreaterThanOrEqual(10)
    }).pipe(Effect.provide(routerWith(weighted))))

  it.effect("are recorded each under an id of their own, and a given id is kept", () =>
    Effect.gen(function* () {
      const router = yield* Router
      const log = yield* RequestLog.RequestLog
      yield* router.chat({ request: chat("m") })
      yield* router.chat({ request: chat("m") })
      yield* router.chat({ request: chat("m"), requestId: "mine-1" })
      const ids = (yield* log.recent(10)).map((r) => r.request_id)
      expect(ids).toHaveLength(3)
      expect(ids).toContain("mine-1")
      const made = ids.filter((id) => id !== "mine-1")
      for (const id of made) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
      expect(new Set(made).size).toBe(2)
    }).pipe(Effect.provide(routerWith(weighted).pipe(Layer.provideMerge(requestLogLayer(0))))))
})
