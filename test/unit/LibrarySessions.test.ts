/**
 * Sessions for a library caller (an Effect app calling `Router.chat` without HTTP): the
 * `sessionKey` it gives keeps a session on one provider under `weighted`, and a pin set through
 * `Sessions.layerMemory` (the in-memory registry for apps without a database) is applied, to that
 * session only, as the daemon applies a pin set through `POST /admin/override`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Sessions } from "../../src/policy/Sessions.js"
import * as SessionsModule from "../../src/policy/Sessions.js"
import { Router } from "../../src/router/Router.js"
import { chat, endpoint, routerWith } from "./helpers.js"

const providers = {
  a: { endpoint: endpoint("a"), models: ["m"], weight: 1 },
  b: { endpoint: endpoint("b"), models: ["m"], weight: 1 },
  c: { endpoint: endpoint("c"), models: ["m"], weight: 1 }
}

describe("a library caller's sessions", () => {
  it.effect("keep one provider per sessionKey under weighted, whatever the key looks like", () =>
    Effect.gen(function* () {
      const router = yield* Router
      const served = new Map<string, Set<string>>()
      for (const key of ["alice", "bob", "carol", "dave", "erin", "session:frank"]) {
        const seen = new Set<string>()
        for (let i = 0; i < 8; i++) seen.add((yield* router.chat({ request: chat("m"), sessionKey: key })).provider)
        served.set(key, seen)
      }
      for (const [key, seen] of served) expect([...seen], key).toHaveLength(1)
    }).pipe(Effect.provide(routerWith({ routing: { strategy: "weighted" }, providers }))))

  it.effect("follow a pin set through Sessions.layerMemory, and only for that session", () =>
    Effect.gen(function* () {
      const router = yield* Router
      const sessions = yield* Sessions
      yield* sessions.set("alice", "c")
      const alice = yield* router.chat({ request: chat("m"), sessionKey: "alice" })
      const bob = yield* router.chat({ request: chat("m"), sessionKey: "bob" })
      const nobody = yield* router.chat({ request: chat("m") })
      expect([alice.provider, bob.provider, nobody.provider]).toEqual(["c", "a", "a"])
      expect(alice.decision?.notes).toContain("session pin: c")
      yield* sessions.set("alice", null)
      expect((yield* router.chat({ request: chat("m"), sessionKey: "alice" })).provider).toBe("a")
    }).pipe(Effect.provide(routerWith({ providers }).pipe(Layer.provideMerge(SessionsModule.layerMemory)))))
})
