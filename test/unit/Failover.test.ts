import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { AllCandidatesFailed, NoCandidates, UpstreamRejected } from "../../src/domain/Errors.js"
import * as Router from "../../src/router/Router.js"
import type { FakeBehaviour } from "../../src/testing/Script.js"
import { FakeUpstream } from "../../src/testing/FakeUpstream.js"
import { bodyJson, chat, endpoint, failureOf, routerWith } from "./helpers.js"

const three = {
  providers: {
    a: { endpoint: endpoint("a"), models: ["m"], priority: 1 },
    b: { endpoint: endpoint("b"), models: ["m"], priority: 2 },
    c: { endpoint: endpoint("c"), models: ["m"], priority: 3 }
  }
}

const failingFirst = (behaviour: FakeBehaviour) => routerWith(three, { a: { behaviour } })

const callsTo = Effect.flatMap(FakeUpstream, (f) => Effect.map(f.calls, (cs) => cs.map((c) => c.provider)))

describe("failover", () => {
  const statuses: ReadonlyArray<readonly [number, string]> = [
    [500, "server_error"],
    [502, "server_error"],
    [503, "server_error"],
    [401, "auth_error"],
    [403, "auth_error"],
    [402, "out_of_credits"],
    [408, "rate_limited"],
    [429, "rate_limited"]
  ]
  for (const [status, outcome] of statuses) {
    it.effect(`HTTP ${status} moves on to the next candidate (${outcome})`, () =>
      Effect.gen(function* () {
        const router = yield* Router.Router
        const reply = yield* router.chat({ request: chat("m") })
        expect(reply._tag).toBe("Json")
        expect(reply.provider).toBe("b")
        expect(reply.status).toBe(200)
        expect(reply.attempts).toHaveLength(2)
        const [first, second] = reply.attempts
        expect(first).toMatchObject({ provider: "a", upstreamModel: "m", outcome, status })
        expect(first!.detail).toContain(`HTTP ${status}`)
        expect(first!.detail).toContain(`fake provider a answered ${status}`)
        expect(second).toMatchObject({ provider: "b", upstreamModel: "m", outcome: "ok", status: 200 })
        if (reply._tag === "Json") expect(bodyJson(reply).choices[0].message.content).toBe("Hello from b!")
        expect(yield* callsTo).toEqual(["a", "b"])
      }).pipe(Effect.provide(failingFirst({ mode: "status", status }))))
  }

  it.effect("connection refused moves on (connect_error)", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m") })
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => [a.provider, a.outcome, a.status])).toEqual([["a", "connect_error", null], ["b", "ok", 200]])
      expect(reply.attempts[0]!.detail).toBe("connection refused")
    }).pipe(Effect.provide(failingFirst({ mode: "refuse" }))))

  it.effect("a reset connection moves on (connection_reset)", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m") })
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((a) => [a.provider, a.outcome, a.status])).toEqual([["a", "connection_reset", null], ["b", "ok", 200]])
    }).pipe(Effect.provide(failingFirst({ mode: "reset" }))))

  for (const status of [400, 404, 413, 422]) {
    it.effect(`HTTP ${status} is UpstreamRejected with the upstream body, and no other candidate is called`, () =>
      Effect.gen(function* () {
        const router = yield* Router.Router
        const error = yield* failureOf(router.chat({ request: chat("m") }))
        expect(error._tag).toBe("UpstreamRejected")
        const rejected = error as UpstreamRejected
        expect(rejected.provider).toBe("a")
        expect(rejected.upstreamModel).toBe("m")
        expect(rejected.status).toBe(status)
        expect(JSON.parse(Buffer.from(rejected.body).toString("utf8"))).toEqual({ error: { message: `bad ${status}`, param: "messages" } })
        expect(rejected.attempts.map((a) => [a.provider, a.outcome, a.status])).toEqual([["a", "client_error", status]])
        expect(yield* callsTo).toEqual(["a"])
      }).pipe(Effect.provide(failingFirst({ mode: "status", status, body: { error: { message: `bad ${status}`, param: "messages" } } }))))
  }

  it.effect("a 4xx after a failover stops there, listing both attempts", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* failureOf(router.chat({ request: chat("m") }))
      expect(error._tag).toBe("UpstreamRejected")
      const rejected = error as UpstreamRejected
      expect(rejected.provider).toBe("b")
      expect(rejected.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:server_error", "b:client_error"])
      expect(yield* callsTo).toEqual(["a", "b"])
    }).pipe(Effect.provide(routerWith(three, { a: { behaviour: { mode: "status", status: 503 } }, b: { behaviour: { mode: "status", status: 400 } } }))))

  it.effect("when every candidate fails: AllCandidatesFailed listing every attempt in order", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* failureOf(router.chat({ request: chat("m") }))
      expect(error._tag).toBe("AllCandidatesFailed")
      const all = error as AllCandidatesFailed
      expect(all.model).toBe("m")
      expect(all.attempts.map((a) => [a.provider, a.outcome, a.status])).toEqual([
        ["a", "rate_limited", 429],
        ["b", "connect_error", null],
        ["c", "server_error", 502]
      ])
      expect(all.message).toContain("a+m (HTTP 429")
      expect(all.message).toContain("b+m (connection refused)")
      expect(all.message).toContain("c+m (HTTP 502")
      expect(yield* callsTo).toEqual(["a", "b", "c"])
    }).pipe(Effect.provide(routerWith(three, {
      a: { behaviour: { mode: "status", status: 429 } },
      b: { behaviour: { mode: "refuse" } },
      c: { behaviour: { mode: "status", status: 502 } }
    }))))

  it.effect("each request starts a fresh attempt list", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const first = yield* router.chat({ request: chat("m") })
      const second = yield* router.chat({ request: chat("m") })
      expect(first.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:server_error", "b:ok"])
      expect(second.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["a:ok"])
    }).pipe(Effect.provide(routerWith(three, { a: { behaviour: [{ mode: "status", status: 500 }, { mode: "ok" }] } }))))
})

describe("capability gating", () => {
  const gated = {
    providers: {
      a: { endpoint: endpoint("a"), models: ["m"], priority: 1, supports_streaming: false, supports_tools: false, supports_multimodal: false },
      b: { endpoint: endpoint("b"), models: ["m"], priority: 2 },
      c: { endpoint: endpoint("c"), models: ["m"], priority: 3, supports_streaming: true, supports_tools: true, supports_multimodal: true }
    }
  }
  const tools = [{ type: "function", function: { name: "lookup", parameters: { type: "object" } } }]
  const image = [{ role: "user", content: [{ type: "text", text: "what?" }, { type: "image_url", image_url: { url: "data:," } }] }]

  it.effect("a provider without streaming is skipped for a stream, not for a plain request", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const streamed = yield* router.chat({ request: chat("m", { stream: true }) })
      expect(streamed.provider).toBe("b")
      expect(streamed.attempts.map((a) => a.provider)).toEqual(["b"])
      if (streamed._tag === "Stream") yield* streamed.discard
      const plain = yield* router.chat({ request: chat("m") })
      expect(plain.provider).toBe("a")
      expect(yield* callsTo).toEqual(["b", "a"])
    }).pipe(Effect.provide(routerWith(gated))))

  it.effect("a provider without tools is skipped for a request with tools", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m", { tools }) })
      expect(reply.provider).toBe("b")
      expect(yield* callsTo).toEqual(["b"])
    }).pipe(Effect.provide(routerWith(gated))))

  it.effect("a provider without images is skipped for a request with an image part", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m", { messages: image }) })
      expect(reply.provider).toBe("b")
      expect(yield* callsTo).toEqual(["b"])
    }).pipe(Effect.provide(routerWith(gated))))

  it.effect("when no candidate remains: NoCandidates with every reason, and nobody is called", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* failureOf(router.chat({ request: chat("m", { stream: true, tools }) }))
      expect(error._tag).toBe("NoCandidates")
      const none = error as NoCandidates
      expect(none.model).toBe("m")
      expect(none.reasons).toEqual(["x+m: does not support streaming", "y+m: does not support tools"])
      expect(none.message).toContain("x+m: does not support streaming")
      expect(yield* callsTo).toEqual([])
    }).pipe(Effect.provide(routerWith({
      providers: {
        x: { endpoint: endpoint("x"), models: ["m"], priority: 1, supports_streaming: false },
        y: { endpoint: endpoint("y"), models: ["m"], priority: 2, supports_tools: false }
      }
    }))))

  it.effect("a pinned provider that cannot serve the request is NoCandidates, not a fallback", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* failureOf(router.chat({ request: chat("a+m", { messages: image }) }))
      expect(error._tag).toBe("NoCandidates")
      expect((error as NoCandidates).reasons).toEqual(["a+m: does not support images"])
      expect(yield* callsTo).toEqual([])
    }).pipe(Effect.provide(routerWith(gated))))
})
