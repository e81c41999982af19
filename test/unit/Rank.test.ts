import { describe, expect, it } from "@effect/vitest"
import { FastCheck } from "effect"
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { type ModelInfo, unknownModel } from "../../src/domain/Capabilities.js"
import { byPriority, type Candidate, type ProviderSpec } from "../../src/domain/Provider.js"
import { defaultRouting, type RoutingConfig } from "../../src/domain/Routing.js"
import {
  calm,
  type Conditions,
  type Decision,
  decide,
  type DecisionInput,
  decisionJson,
  estimateChatTokens,
  type Needs,
  needsOfChat,
  needsOfEmbeddings,
  noNeeds,
  noWeightedKeyNote,
  type ProviderPrefs,
  quarterTokens,
  rendezvousScore,
  summary,
  tokensPerMessage,
  unfit,
  weightedKey
} from "../../src/policy/Rank.js"
import { chat, providerSpec } from "./helpers.js"

const cand = (id: string, priority: number, caps: Partial<ProviderSpec> = {}, info?: Partial<ModelInfo>, model = "m"): Candidate => ({
  provider: providerSpec(id, { priority, ...caps }),
  upstreamModel: model,
  ...(info === undefined ? {} : { info: { ...unknownModel, ...info } })
})

const ids = (cs: ReadonlyArray<Candidate>) => cs.map((c) => c.provider.id)
const order = (d: Decision) => d.ranked.map((r) => r.candidate.provider.id)
const reasons = (d: Decision) => d.dropped.map((x) => [x.candidate.provider.id, x.reason])

const needs = (over: Partial<Omit<Needs, "promptTokens">> & { readonly prompt?: number } = {}): Needs => ({
  ...noNeeds,
  ...over,
  promptTokens: () => over.prompt ?? 10
})

const permutations = <A>(xs: ReadonlyArray<A>): Array<Array<A>> =>
  xs.length <= 1 ? [[...xs]] : xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]))

const run = (over: Partial<DecisionInput> & { readonly candidates: ReadonlyArray<Candidate> }): Decision =>
  decide({ kind: "model", needs: noNeeds, routing: defaultRouting, conditions: calm, ...over })

const routing = (over: Partial<RoutingConfig>): RoutingConfig => ({ ...defaultRouting, ...over })

const prefs = (over: Partial<ProviderPrefs>): ProviderPrefs => ({
  order: null,
  only: null,
  ignore: null,
  allowFallbacks: true,
  sort: null,
  requireParameters: false,
  maxPrice: null,
  ...over
})

/** A snapshot from plain maps, as a test would write the world. */
const world = (w: {
  readonly down?: Record<string, Conditions["unavailable"] extends (c: Candidate) => infer U ? U : never>
  readonly ttfb?: Record<string, number>
  readonly success?: Record<string, number>
  readonly credits?: Record<string, { exhausted?: string; remaining?: number }>
}): Conditions => ({
  unavailable: (c) => w.down?.[c.provider.id] ?? null,
  stats: (id) => ({ ewmaTtfbMs: w.ttfb?.[id] ?? null, successRate: w.success?.[id] ?? null }),
  credits: (id) => ({ exhausted: w.credits?.[id]?.exhausted ?? null, remaining: w.credits?.[id]?.remaining ?? null })
})

const streamNeeds = needs({ stream: true })

describe("Rank.decide: priority", () => {
  const pool = [cand("delta", 2), cand("alpha", 5), cand("charlie", 2), cand("bravo", 1)]

  it("orders a bare model's candidates by priority, ties by provider id", () => {
    const d = run({ candidates: pool })
    expect(order(d)).toEqual(["bravo", "charlie", "delta", "alpha"])
    expect(d.dropped).toEqual([])
    expect(d.strategy).toBe("priority")
  })

  it("gives the same order for every input order (deterministic)", () => {
    for (const p of permutations(pool)) expect(order(run({ candidates: p }))).toEqual(["bravo", "charlie", "delta", "alpha"])
  })

  it("keeps an alias in its configured order whatever the priorities", () => {
    expect(order(run({ kind: "alias", candidates: pool }))).toEqual(["delta", "alpha", "charlie", "bravo"])
  })

  it("does not reorder the resolution's array in place", () => {
    const candidates = [...pool]
    run({ candidates })
    expect(ids(candidates)).toEqual(["delta", "alpha", "charlie", "bravo"])
  })

  it("puts provider_order first, in its order, then the rest by priority", () => {
    expect(order(run({ candidates: pool, routing: routing({ providerOrder: ["alpha", "delta"] }) }))).toEqual(["alpha", "delta", "bravo", "charlie"])
  })

  it("with cost_optimization, breaks priority ties by known price (cheapest first, unknown last)", () => {
    const cs = [cand("a", 1, {}, { pricing: { inputPer1M: 5, outputPer1M: 5 } }), cand("b", 1, {}, { pricing: { inputPer1M: 1, outputPer1M: 1 } }), cand("c", 1), cand("d", 0)]
    expect(order(run({ candidates: cs, routing: routing({ costOptimization: true }) }))).toEqual(["d", "b", "a", "c"])
    expect(order(run({ candidates: cs }))).toEqual(["d", "a", "b", "c"])
  })
})

describe("Rank.decide: gates", () => {
  it("drops candidates whose capability is explicitly false, with a reason, and keeps unknown ones", () => {
    const d = run({
      candidates: [cand("a", 1, { supportsStreaming: false }), cand("b", 2, { supportsStreaming: null }), cand("c", 3, { supportsStreaming: true })],
      needs: streamNeeds
    })
    expect(order(d)).toEqual(["b", "c"])
    expect(reasons(d)).toEqual([["a", "does not support streaming"]])
  })

  it("drops a single pinned candidate that does not fit", () => {
    const d = run({ kind: "pinned", candidates: [cand("a", 1, { supportsTools: false })], needs: needs({ tools: true }) })
    expect(d.ranked).toEqual([])
    expect(d.dropped.map((x) => x.reason)).toEqual(["does not support tools"])
  })

  it("ignores capabilities a request does not need", () => {
    const c = cand("a", 1, { supportsStreaming: false, supportsTools: false, supportsMultimodal: false }, { jsonSchema: false, contextWindow: 100 })
    expect(order(run({ kind: "pinned", candidates: [c] }))).toEqual(["a"])
  })

  it("names each missing capability; per-model info wins over the provider's flag", () => {
    expect(unfit(cand("a", 1, { supportsStreaming: false }), streamNeeds)).toBe("does not support streaming")
    expect(unfit(cand("a", 1, { supportsTools: false }), needs({ tools: true }))).toBe("does not support tools")
    expect(unfit(cand("a", 1, {}, { tools: false }), needs({ tools: true }))).toBe("does not support tools")
    expect(unfit(cand("a", 1, { supportsTools: false }, { tools: true }), needs({ tools: true }))).toBeNull()
    expect(unfit(cand("a", 1, { supportsMultimodal: false }), needs({ vision: true }))).toBe("does not support images")
    expect(unfit(cand("a", 1, {}, { vision: false }), needs({ vision: true }))).toBe("does not support images")
    expect(unfit(cand("a", 1, {}, { jsonSchema: false }), needs({ jsonSchema: true }))).toBe("does not support json_schema response_format")
    expect(unfit(cand("a", 1, {}, { embeddings: false }), needs({ endpoint: "embeddings" }))).toBe("not an embeddings model")
    expect(unfit(cand("a", 1, {}, { embeddings: true }), needs())).toBe("an embeddings model, not a chat model")
    expect(unfit(cand("a", 1), needs({ stream: true, tools: true, vision: true, jsonSchema: true }))).toBeNull()
  })

  it("drops a candidate whose context window the prompt alone does not fit, naming both numbers", () => {
    const d = run({ candidates: [cand("small", 1, {}, { contextWindow: 8192 }), cand("big", 2, {}, { contextWindow: 131072 }), cand("unknown", 3)], needs: needs({ prompt: 12000 }) })
    expect(order(d)).toEqual(["big", "unknown"])
    expect(reasons(d)).toEqual([["small", "context 8192 < needed 12000"]])
  })

  it("drops a candidate whose window a CJK prompt does not fit, though its characters / 4 would", () => {
    const request = chat("m", { messages: [{ role: "user", content: "这是一个很长的中文提示。".repeat(500) }] })
    expect(6000 / 4 + tokensPerMessage).toBeLessThan(4096)
    const d = run({ candidates: [cand("small", 1, {}, { contextWindow: 4096 }), cand("big", 2, {}, { contextWindow: 131072 })], needs: needsOfChat(request) })
    expect(order(d)).toEqual(["big"])
    expect(reasons(d)).toEqual([["small", `context 4096 < needed ${6000 + tokensPerMessage}`]])
  })

  it("drops on health and credits, with the outcome they are listed under", () => {
    const d = run({
      candidates: [cand("open", 1), cand("broke", 2), cand("limited", 3), cand("ok", 4), cand("key", 5)],
      conditions: world({
        down: {
          open: { outcome: "circuit_open", reason: "circuit open until 2026-11-26T12:03:10.000Z" },
          limited: { outcome: "rate_limited", reason: "rate limited until 2026-11-26T12:00:00.000Z" },
          key: { outcome: "misconfigured", reason: "circuit open until 2026-11-26T12:10:00.000Z (misconfigured: HTTP 401)" }
        },
        credits: { broke: { exhausted: "credits exhausted" } }
      })
    })
    expect(order(d)).toEqual(["ok"])
    expect(d.dropped.map((x) => [x.candidate.provider.id, x.outcome, x.reason])).toEqual([
      ["open", "circuit_open", "circuit open until 2026-11-26T12:03:10.000Z"],
      ["broke", "out_of_credits", "credits exhausted"],
      ["limited", "rate_limited", "rate limited until 2026-11-26T12:00:00.000Z"],
      ["key", "misconfigured", "circuit open until 2026-11-26T12:10:00.000Z (misconfigured: HTTP 401)"]
    ])
  })

  it("applies failover rules: credits below a threshold and a success rate below a floor", () => {
    const r = routing({
      failover: [
        { providerId: "venice", condition: "credit_threshold", value: 5 },
        { providerId: "flaky", condition: "health", value: 0.5 }
      ]
    })
    const candidates = [cand("venice", 1), cand("flaky", 2), cand("local", 3)]
    const low = run({ candidates, routing: r, conditions: world({ credits: { venice: { remaining: 3.2 } }, success: { flaky: 0.4 } }) })
    expect(order(low)).toEqual(["local"])
    expect(reasons(low)).toEqual([["venice", "credits 3.2 below threshold 5"], ["flaky", "success rate 0.40 below 0.5"]])
    // Above the threshold, or with no data at all, the rules do not fire.
    expect(order(run({ candidates, routing: r, conditions: world({ credits: { venice: { remaining: 5 } }, success: { flaky: 0.5 } }) }))).toEqual(["venice", "flaky", "local"])
    expect(order(run({ candidates, routing: r }))).toEqual(["venice", "flaky", "local"])
  })

  it("honours provider.only, provider.ignore and allow_fallbacks: false (case-insensitively)", () => {
    const candidates = [cand("a", 1), cand("b", 2), cand("c", 3)]
    expect(reasons(run({ candidates, prefs: prefs({ only: ["B", "c"] }) }))).toEqual([["a", "not in provider.only"]])
    expect(reasons(run({ candidates, prefs: prefs({ ignore: ["b"] }) }))).toEqual([["b", "in provider.ignore"]])
    const strict = run({ candidates, prefs: prefs({ order: ["c", "a"], allowFallbacks: false }) })
    expect(order(strict)).toEqual(["c", "a"])
    expect(reasons(strict)).toEqual([["b", "not in provider.order (allow_fallbacks: false)"]])
  })

  it("drops a candidate whose known price is above provider.max_price; unknown prices pass", () => {
    const d = run({
      candidates: [cand("dear", 1, {}, { pricing: { inputPer1M: 3, outputPer1M: 9 } }), cand("cheap", 2, {}, { pricing: { inputPer1M: 0.1, outputPer1M: 0.2 } }), cand("free", 3)],
      prefs: prefs({ maxPrice: { prompt: 1, completion: null } })
    })
    expect(order(d)).toEqual(["cheap", "free"])
    expect(reasons(d)).toEqual([["dear", "price 3/9 per 1M above provider.max_price"]])
  })
})

describe("Rank.decide: max_tokens clamp", () => {
  const letta = needs({ maxTokens: 16384, prompt: 1000 })

  it("lowers max_tokens to what each candidate allows instead of dropping it, and says so", () => {
    const d = run({
      candidates: [cand("local", 1, {}, { contextWindow: 8192 }), cand("venice", 2, {}, { maxOutputTokens: 4096 }), cand("big", 3, {}, { contextWindow: 200000, maxOutputTokens: 32768 }), cand("unknown", 4)],
      needs: letta
    })
    expect(order(d)).toEqual(["local", "venice", "big", "unknown"])
    expect(d.ranked.map((r) => r.maxTokens)).toEqual([7192, 4096, null, null])
    expect(d.notes).toEqual(["local+m: clamped max_tokens 16384→7192", "venice+m: clamped max_tokens 16384→4096"])
    expect(d.maxTokensRequested).toBe(16384)
  })

  it("provider.require_parameters turns the clamp off", () => {
    const d = run({ candidates: [cand("venice", 1, {}, { maxOutputTokens: 4096 })], needs: letta, prefs: prefs({ requireParameters: true }) })
    expect(d.ranked.map((r) => r.maxTokens)).toEqual([null])
    expect(d.notes).toEqual([])
  })

  it("does not clamp a request without max_tokens, nor one within the limits", () => {
    const c = cand("venice", 1, {}, { maxOutputTokens: 4096, contextWindow: 8192 })
    expect(run({ candidates: [c], needs: needs({ prompt: 1000 }) }).ranked[0]!.maxTokens).toBeNull()
    expect(run({ candidates: [c], needs: needs({ prompt: 1000, maxTokens: 4096 }) }).ranked[0]!.maxTokens).toBeNull()
  })
})

describe("Rank.decide: strategies", () => {
  it("cost: cheapest expected cost for this request first, unknown prices last in priority order", () => {
    const candidates = [
      cand("unknown2", 2),
      cand("pricey", 1, {}, { pricing: { inputPer1M: 10, outputPer1M: 30 } }),
      cand("cheap", 9, {}, { pricing: { inputPer1M: 0.5, outputPer1M: 1 } }),
      cand("unknown1", 1)
    ]
    const d = run({ candidates, routing: routing({ strategy: "cost" }), needs: needs({ prompt: 1000, maxTokens: 1000 }) })
    expect(d.strategy).toBe("cost")
    expect(order(d)).toEqual(["cheap", "pricey", "unknown1", "unknown2"])
    expect(d.ranked.map((r) => r.score)).toEqual([0.0015, 0.04, null, null])
  })

  it("cost: input-heavy and output-heavy requests can pick different providers", () => {
    const candidates = [cand("inputcheap", 1, {}, { pricing: { inputPer1M: 0.1, outputPer1M: 10 } }), cand("outputcheap", 2, {}, { pricing: { inputPer1M: 5, outputPer1M: 1 } })]
    const r = routing({ strategy: "cost" })
    expect(order(run({ candidates, routing: r, needs: needs({ prompt: 100000, maxTokens: 100 }) }))[0]).toBe("inputcheap")
    expect(order(run({ candidates, routing: r, needs: needs({ prompt: 100, maxTokens: 100000 }) }))[0]).toBe("outputcheap")
  })

  it("cost: embeddings are priced on their input alone", () => {
    const candidates = [cand("cheapin", 1, {}, { pricing: { inputPer1M: 0.1, outputPer1M: 50 } }), cand("cheapout", 2, {}, { pricing: { inputPer1M: 0.2, outputPer1M: 0 } })]
    const d = run({ candidates, routing: routing({ strategy: "cost" }), needs: needs({ endpoint: "embeddings", prompt: 1000 }) })
    expect(order(d)).toEqual(["cheapin", "cheapout"])
    expect(d.ranked.map((r) => r.score)).toEqual([0.0001, 0.0002])
  })

  it("latency: lowest moving-average time to first byte first among the measured; providers without data keep their place in the priority order", () => {
    const candidates = [cand("slow", 1), cand("nodata2", 3), cand("fast", 4), cand("nodata1", 2)]
    const d = run({ candidates, routing: routing({ strategy: "latency" }), conditions: world({ ttfb: { slow: 900, fast: 120 } }) })
    // Priority order is slow, nodata1, nodata2, fast: the measured two swap places, the others stay.
    expect(order(d)).toEqual(["fast", "nodata1", "nodata2", "slow"])
    expect(d.ranked.map((r) => r.score)).toEqual([120, null, null, 900])
    // With nothing measured it is the priority order; with everything measured, pure latency.
    expect(order(run({ candidates, routing: routing({ strategy: "latency" }) }))).toEqual(["slow", "nodata1", "nodata2", "fast"])
    const all = world({ ttfb: { slow: 900, fast: 120, nodata1: 50, nodata2: 500 } })
    expect(order(run({ candidates, routing: routing({ strategy: "latency" }), conditions: all }))).toEqual(["nodata1", "fast", "nodata2", "slow"])
  })

  it("weighted: the same session always lands on the same provider, whatever the input order", () => {
    const candidates = [cand("a", 1), cand("b", 1), cand("c", 1)]
    const r = routing({ strategy: "weighted" })
    for (const key of ["session:alpha", "session:beta", "key:0123", ""]) {
      const first = order(run({ candidates, routing: r, sessionKey: key }))
      for (const p of permutations(candidates)) expect(order(run({ candidates: p, routing: r, sessionKey: key }))).toEqual(first)
    }
  })

  it("weighted: spreads sessions in proportion to weight", () => {
    const candidates = [cand("heavy", 1, { weight: 3 }), cand("light", 1, { weight: 1 })]
    const r = routing({ strategy: "weighted" })
    let heavy = 0
    for (let i = 0; i < 2000; i++) if (order(run({ candidates, routing: r, sessionKey: `session:${i}` }))[0] === "heavy") heavy++
    // Expected share 0.75; 2000 draws put it within ±0.04 with overwhelming probability, and the
    // draws are fixed (a hash), so this never flakes.
    expect(heavy / 2000).toBeGreaterThan(0.71)
    expect(heavy / 2000).toBeLessThan(0.79)
  })

  it("weighted: removing a provider only moves the sessions that were on it (rendezvous hashing)", () => {
    const all = [cand("a", 1), cand("b", 1), cand("c", 1), cand("d", 1)]
    const r = routing({ strategy: "weighted" })
    for (let i = 0; i < 300; i++) {
      const key = `session:${i}`
      const before = order(run({ candidates: all, routing: r, sessionKey: key }))[0]!
      const removed = before === "d" ? "c" : "d"
      const after = order(run({ candidates: all.filter((c) => c.provider.id !== removed), routing: r, sessionKey: key }))[0]
      expect(after).toBe(before)
    }
  })

  it("weighted: without a session, spreads users, else request ids, in proportion to weight", () => {
    const candidates = [cand("heavy", 1, { weight: 3 }), cand("light", 1, { weight: 1 })]
    const r = routing({ strategy: "weighted" })
    const share = (over: (i: number) => Partial<DecisionInput>) => {
      let heavy = 0
      for (let i = 0; i < 2000; i++) if (order(run({ candidates, routing: r, ...over(i) }))[0] === "heavy") heavy++
      return heavy / 2000
    }
    // As for sessions: expected 0.75, and the draws are a fixed hash, so the bounds never flake.
    for (
      const s of [
        share((i) => ({ user: `user-${i}` })),
        share((i) => ({ requestId: `req-${i}` })),
        // The one client key every caller presents says nothing about who is asking.
        share((i) => ({ sessionKey: "key:0123", requestId: `req-${i}` })),
        share((i) => ({ sessionKey: "key:0123", user: `user-${i}`, requestId: "same" }))
      ]
    ) {
      expect(s).toBeGreaterThan(0.71)
      expect(s).toBeLessThan(0.79)
    }
  })

  it("weighted: the same user or request id always lands on the same provider; a session id wins over user, and user over request id", () => {
    const candidates = [cand("a", 1), cand("b", 1), cand("c", 1)]
    const r = routing({ strategy: "weighted" })
    const first = (over: Partial<DecisionInput>) => order(run({ candidates, routing: r, ...over }))[0]
    for (let i = 0; i < 50; i++) {
      const byUser = first({ user: `user-${i}` })
      const byRequest = first({ requestId: `req-${i}` })
      const bySession = first({ sessionKey: `session:${i}` })
      for (let j = 0; j < 5; j++) {
        expect(first({ user: `user-${i}`, requestId: `other-${j}` })).toBe(byUser)
        expect(first({ user: `user-${i}`, sessionKey: "key:0123", requestId: `other-${j}` })).toBe(byUser)
        expect(first({ sessionKey: `session:${i}`, user: `someone-${j}`, requestId: `other-${j}` })).toBe(bySession)
      }
      expect(first({ requestId: `req-${i}` })).toBe(byRequest)
      // An empty or non-string `user` is no user.
      expect(first({ user: "", requestId: `req-${i}` })).toBe(byRequest)
      expect(first({ user: 42, requestId: `req-${i}` })).toBe(byRequest)
    }
    // A session id keeps the order it had before users and request ids were read.
    expect(run({ candidates, routing: r, sessionKey: "session:x", user: "u", requestId: "q" }).ranked.map((x) => x.score)).toEqual(
      run({ candidates, routing: r, sessionKey: "session:x" }).ranked.map((x) => x.score)
    )
  })

  it("weighted: with no session, user or request id (explain), ranks as for an empty key and says so; other strategies read none of them", () => {
    const candidates = [cand("a", 1), cand("b", 2)]
    const d = run({ candidates, routing: routing({ strategy: "weighted" }), sessionKey: "key:0123" })
    expect(d.notes).toEqual([noWeightedKeyNote])
    expect(d.ranked[0]!.score).toBe(rendezvousScore("", d.ranked[0]!.candidate))
    expect(run({ candidates, routing: routing({ strategy: "weighted" }), requestId: "q" }).notes).toEqual([])
    for (const strategy of ["priority", "cost", "latency"] as const) {
      expect(run({ candidates, routing: routing({ strategy }) }).notes).toEqual([])
      expect(order(run({ candidates, routing: routing({ strategy }), user: "u", requestId: "q" }))).toEqual(["a", "b"])
    }
    expect(weightedKey({})).toBeNull()
    expect(weightedKey({ user: "u".repeat(1000) })).toBe(`user:${"u".repeat(256)}`)
  })

  it("weighted: the score is the rendezvous score, largest first", () => {
    const candidates = [cand("a", 1), cand("b", 1)]
    const d = run({ candidates, routing: routing({ strategy: "weighted" }), sessionKey: "session:x" })
    const scores = d.ranked.map((x) => x.score!)
    expect(scores[0]).toBeGreaterThan(scores[1]!)
    expect(scores[0]).toBe(rendezvousScore("session:x", d.ranked[0]!.candidate))
  })

  it("an alias's strategy overrides the routing config's, and provider.sort overrides both", () => {
    const candidates = [cand("pricey", 1, {}, { pricing: { inputPer1M: 9, outputPer1M: 9 } }), cand("cheap", 2, {}, { pricing: { inputPer1M: 1, outputPer1M: 1 } })]
    const conditions = world({ ttfb: { pricey: 10, cheap: 500 } })
    expect(order(run({ kind: "alias", candidates, aliasStrategy: "cost", conditions }))).toEqual(["cheap", "pricey"])
    expect(order(run({ kind: "alias", candidates, routing: routing({ strategy: "cost" }), aliasStrategy: "priority", conditions }))).toEqual(["pricey", "cheap"])
    const sorted = run({ kind: "alias", candidates, aliasStrategy: "cost", prefs: prefs({ sort: "latency" }), conditions })
    expect(sorted.strategy).toBe("latency")
    expect(order(sorted)).toEqual(["pricey", "cheap"])
  })
})

describe("Rank.decide: provider.order and the session pin", () => {
  const candidates = [cand("a", 1), cand("b", 2), cand("c", 3)]

  it("provider.order puts those providers first, in that order, keeping the others as fallbacks", () => {
    const d = run({ candidates, prefs: prefs({ order: ["c", "b"] }) })
    expect(order(d)).toEqual(["c", "b", "a"])
    expect(d.notes).toEqual(["provider.order: c,b"])
  })

  it("the session's pin goes first whenever it can serve the request, over every strategy", () => {
    for (const strategy of ["priority", "cost", "latency", "weighted"] as const) {
      const d = run({ candidates, routing: routing({ strategy }), pin: "c", prefs: prefs({ order: ["b"] }), sessionKey: "session:s" })
      expect(order(d)[0]).toBe("c")
      expect(d.notes).toContain("session pin: c")
    }
  })

  it("a pin that cannot serve the request is noted and skipped", () => {
    const d = run({ candidates: [cand("a", 1), cand("b", 2, { supportsTools: false })], needs: needs({ tools: true }), pin: "b" })
    expect(order(d)).toEqual(["a"])
    expect(d.notes).toEqual(["session pin b cannot serve this request: does not support tools"])
    expect(run({ candidates, pin: "zzz" }).notes).toEqual(["session pin zzz does not serve this model"])
  })
})

describe("Rank.decide: determinism", () => {
  const arbCandidate = FastCheck.record({
    id: FastCheck.constantFrom("a", "b", "c", "d", "e", "f"),
    model: FastCheck.constantFrom("m", "n"),
    priority: FastCheck.integer({ min: 0, max: 3 }),
    weight: FastCheck.constantFrom(1, 2, 5),
    tools: FastCheck.constantFrom(true, false, null),
    context: FastCheck.option(FastCheck.constantFrom(4096, 8192, 131072), { nil: null }),
    maxOut: FastCheck.option(FastCheck.constantFrom(1024, 4096), { nil: null }),
    price: FastCheck.option(FastCheck.record({ inputPer1M: FastCheck.constantFrom(0, 0.5, 3), outputPer1M: FastCheck.constantFrom(0, 1, 9) }), { nil: null }),
    ttfb: FastCheck.option(FastCheck.integer({ min: 1, max: 2000 }), { nil: null })
  })
  const arbWorld = FastCheck.record({
    candidates: FastCheck.uniqueArray(arbCandidate, { selector: (c) => `${c.id}+${c.model}`, maxLength: 8 }),
    strategy: FastCheck.constantFrom<Array<RoutingConfig["strategy"]>>("priority", "cost", "latency", "weighted"),
    tools: FastCheck.boolean(),
    prompt: FastCheck.integer({ min: 1, max: 20000 }),
    maxTokens: FastCheck.option(FastCheck.integer({ min: 1, max: 32768 }), { nil: null }),
    session: FastCheck.string({ maxLength: 12 }),
    seed: FastCheck.integer()
  })
  type World = typeof arbWorld extends FastCheck.Arbitrary<infer W> ? W : never
  const inputOf = (w: World, shuffled: boolean): DecisionInput => {
    const cs = w.candidates.map((c) =>
      cand(c.id, c.priority, { weight: c.weight }, { tools: c.tools, contextWindow: c.context, maxOutputTokens: c.maxOut, pricing: c.price }, c.model)
    )
    if (shuffled) {
      // A fixed permutation from the seed: the decision must not depend on the input order.
      let s = Math.abs(w.seed) + 1
      for (let i = cs.length - 1; i > 0; i--) {
        s = (s * 48271) % 2147483647
        const j = s % (i + 1)
        ;[cs[i], cs[j]] = [cs[j]!, cs[i]!]
      }
    }
    const ttfb = Object.fromEntries(w.candidates.flatMap((c) => (c.ttfb === null ? [] : [[c.id, c.ttfb]])))
    return {
      kind: "model",
      candidates: cs,
      needs: needs({ tools: w.tools, prompt: w.prompt, maxTokens: w.maxTokens }),
      routing: routing({ strategy: w.strategy }),
      sessionKey: w.session,
      conditions: world({ ttfb })
    }
  }
  const canonical = (d: Decision) => JSON.stringify(decisionJson(d))

  it("the same inputs give the same decision, whatever order the candidates come in", () => {
    FastCheck.assert(
      FastCheck.property(arbWorld, (w) => {
        // Ids are unique per (provider, model) but a provider may appear with two models; those
        // tie on everything but the model, and the base order breaks that tie by id as well.
        expect(canonical(decide(inputOf(w, true)))).toBe(canonical(decide(inputOf(w, false))))
      }),
      { numRuns: 300, seed: 20261126 }
    )
  })

  it("every candidate is either ranked or dropped, exactly once", () => {
    FastCheck.assert(
      FastCheck.property(arbWorld, (w) => {
        const input = inputOf(w, false)
        const d = decide(input)
        const seen = [...d.ranked.map((r) => r.candidate), ...d.dropped.map((x) => x.candidate)].map((c) => `${c.provider.id}+${c.upstreamModel}`).sort()
        expect(seen).toEqual(input.candidates.map((c) => `${c.provider.id}+${c.upstreamModel}`).sort())
        for (const r of d.ranked) if (r.maxTokens !== null) expect(r.maxTokens).toBeLessThan(w.maxTokens!)
      }),
      { numRuns: 300, seed: 7 }
    )
  })

  it("gives the same decision in another process", () => {
    const input = {
      candidates: [cand("a", 1, { weight: 2 }, { pricing: { inputPer1M: 1, outputPer1M: 2 } }), cand("b", 1), cand("c", 2, {}, { contextWindow: 4096 }), cand("d", 0, { weight: 5 })],
      needs: needs({ prompt: 5000, maxTokens: 16384 })
    }
    const here = ["priority", "cost", "latency", "weighted"].map((strategy) =>
      canonical(run({ ...input, routing: routing({ strategy: strategy as RoutingConfig["strategy"] }), sessionKey: "session:letta-agent-7", conditions: world({ ttfb: { b: 40, a: 300 } }) }))
    )
    const rank = fileURLToPath(new URL("../../dist/policy/Rank.js", import.meta.url))
    const script = `
      const { decide, decisionJson } = await import(${JSON.stringify(rank)})
      const input = JSON.parse(process.argv[1])
      const conditions = { unavailable: () => null, stats: (id) => ({ ewmaTtfbMs: ({ b: 40, a: 300 })[id] ?? null, successRate: null }), credits: () => ({ exhausted: null, remaining: null }) }
      const out = ["priority", "cost", "latency", "weighted"].map((strategy) => JSON.stringify(decisionJson(decide({
        kind: "model", candidates: input.candidates, needs: { ...input.needs, promptTokens: () => 5000 },
        routing: { strategy, costOptimization: false, providerOrder: [], failover: [] }, sessionKey: "session:letta-agent-7", conditions
      }))))
      process.stdout.write(JSON.stringify(out))
    `
    const there = JSON.parse(execFileSync(process.execPath, ["--input-type=module", "-e", script, JSON.stringify(input)], { encoding: "utf8" }))
    expect(there).toEqual(here)
  })
})

describe("Rank.needsOfChat", () => {
  /** The estimate of one user message's text, without its framing. */
  const one = (content: string) => estimateChatTokens(chat("m", { messages: [{ role: "user", content }] })) - tokensPerMessage

  it("needs streaming only when stream is true", () => {
    expect(needsOfChat(chat("m", { stream: true })).stream).toBe(true)
    expect(needsOfChat(chat("m", { stream: false })).stream).toBe(false)
    expect(needsOfChat(chat("m", { stream: null })).stream).toBe(false)
    expect(needsOfChat(chat("m")).stream).toBe(false)
  })

  it("needs tools only for a non-empty tools list", () => {
    expect(needsOfChat(chat("m", { tools: [{ type: "function", function: { name: "f" } }] })).tools).toBe(true)
    expect(needsOfChat(chat("m", { tools: [] })).tools).toBe(false)
    expect(needsOfChat(chat("m", { tools: null })).tools).toBe(false)
  })

  it("needs tools for OpenAI's older function calling (a non-empty functions list) too", () => {
    expect(needsOfChat(chat("m", { functions: [{ name: "f", parameters: { type: "object" } }], function_call: "auto" })).tools).toBe(true)
    expect(needsOfChat(chat("m", { functions: [] })).tools).toBe(false)
    expect(needsOfChat(chat("m", { functions: null })).tools).toBe(false)
  })

  it("needs vision for an image part in any message", () => {
    for (const type of ["image_url", "input_image", "image"]) {
      const req = chat("m", {
        messages: [
          { role: "system", content: "be brief" },
          { role: "user", content: [{ type: "text", text: "what is this?" }, { type, image_url: { url: "data:," } }] }
        ]
      })
      expect(needsOfChat(req).vision).toBe(true)
    }
    expect(needsOfChat(chat("m", { messages: [{ role: "user", content: [{ type: "text", text: "x" }] }] })).vision).toBe(false)
  })

  it("needs json_schema support only for response_format json_schema", () => {
    expect(needsOfChat(chat("m", { response_format: { type: "json_schema", json_schema: { name: "x", schema: {} } } })).jsonSchema).toBe(true)
    expect(needsOfChat(chat("m", { response_format: { type: "json_object" } })).jsonSchema).toBe(false)
    expect(needsOfChat(chat("m")).jsonSchema).toBe(false)
  })

  it("reads max_completion_tokens, else max_tokens", () => {
    expect(needsOfChat(chat("m", { max_completion_tokens: 16384, max_tokens: 100 })).maxTokens).toBe(16384)
    expect(needsOfChat(chat("m", { max_tokens: 100 })).maxTokens).toBe(100)
    expect(needsOfChat(chat("m", { max_tokens: null })).maxTokens).toBeNull()
    expect(needsOfChat(chat("m")).maxTokens).toBeNull()
  })

  it("estimates prompt tokens as characters / 4, plus framing per message, images and tool definitions", () => {
    expect(estimateChatTokens(chat("m", { messages: [{ role: "user", content: "x".repeat(400) }] }))).toBe(4 + 100)
    const tools = [{ type: "function", function: { name: "f", parameters: { type: "object" } } }]
    expect(estimateChatTokens(chat("m", {
      messages: [
        { role: "system", content: "y".repeat(40) },
        { role: "user", content: [{ type: "text", text: "z".repeat(80) }, { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }] },
        { role: "assistant", content: null, tool_calls: [{ id: "1", type: "function", function: { name: "abcd", arguments: "{\"q\":1}" } }] }
      ],
      tools
    }))).toBe(3 * 4 + 1000 + Math.ceil((40 + 80 + 4 + 7 + JSON.stringify(tools).length) / 4))
  })

  it("estimates CJK ideographs and punctuation, kana and Hangul at about one token per character", () => {
    expect(one("你好，世界。".repeat(100))).toBe(600)
    expect(one("日本語のテキストです")).toBe(10)
    expect(one("안녕하세요 세계")).toBe(8) // 7 syllables, and the space a quarter
    expect(one("ＡＢＣ")).toBe(3)
    // A supplementary ideograph (CJK Extension B) is two UTF-16 units, counted once.
    expect(one("𠀀𠀁𠀂𠀃")).toBe(4)
    // Text parts, tool calls and tool definitions alike, in quarter tokens: 4 per CJK character, 1 per other.
    const tools = [{ type: "function", function: { name: "查找", description: "查找资料", parameters: { type: "object" } } }]
    const text = 100 * 4
    const call = 2 * 4 + (8 + 2 * 4) // `查找`, `{"q":"北京"}`
    const definitions = JSON.stringify(tools).length - 6 + 6 * 4
    expect(estimateChatTokens(chat("m", {
      messages: [{ role: "user", content: [{ type: "text", text: "中文".repeat(50) }] }, {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "1", type: "function", function: { name: "查找", arguments: "{\"q\":\"北京\"}" } }]
      }],
      tools
    }))).toBe(2 * tokensPerMessage + Math.ceil((text + call + definitions) / 4))
  })

  it("estimates mixed text by its parts, and other scripts as characters / 4 as before", () => {
    // 15 ASCII characters and 4 ideographs.
    expect(one("Translate: 我爱北京 now")).toBe(Math.ceil(15 / 4 + 4))
    expect(one("a".repeat(400))).toBe(100)
    for (const other of ["Привет, как дела?", "Γειά σου κόσμε", "déjà vu — “quoted” …", "مرحبا بالعالم", "สวัสดีครับ", "नमस्ते दुनिया", "🙂🙂"]) {
      expect(one(other.repeat(8))).toBe(Math.ceil((other.length * 8) / 4))
    }
  })

  it("counts every code unit the same way whether or not an ideograph comes before it", () => {
    // The fast path (no counted character at all) and the loop must agree on what counts.
    const disagree: Array<string> = []
    let counted = 0
    for (let c = 0; c <= 0xffff; c++) {
      if (c >= 0xd800 && c <= 0xdfff) continue
      const ch = String.fromCharCode(c)
      const alone = quarterTokens(ch)
      if (alone === 4) counted++
      if ((alone !== 1 && alone !== 4) || quarterTokens(`中${ch}`) !== 4 + alone) disagree.push(c.toString(16))
    }
    expect(disagree).toEqual([])
    // Hangul Jamo, CJK U+2E80–U+9FFF, Jamo Ext-A, Hangul syllables and Ext-B, compatibility ideographs and forms, fullwidth forms.
    expect(counted).toBe(0x100 + 0x7180 + 0x20 + 0x2c00 + 0x200 + 0x20 + 0xf0)
    expect(quarterTokens("\ud840")).toBe(1)
    expect(quarterTokens("\ud840\udc00")).toBe(4)
    expect(quarterTokens("中\ud840x")).toBe(4 + 2)
  })

  it("estimates embeddings input too", () => {
    expect(needsOfEmbeddings({ model: "e", input: "x".repeat(40) }).promptTokens()).toBe(10)
    expect(needsOfEmbeddings({ model: "e", input: ["x".repeat(8), "y".repeat(4)] }).promptTokens()).toBe(3)
    expect(needsOfEmbeddings({ model: "e", input: [[1, 2, 3], [4]] }).promptTokens()).toBe(4)
    expect(needsOfEmbeddings({ model: "e", input: "x" }).endpoint).toBe("embeddings")
    expect(needsOfEmbeddings({ model: "e", input: "向量".repeat(10) }).promptTokens()).toBe(20)
    expect(needsOfEmbeddings({ model: "e", input: ["한국어", "x".repeat(8)] }).promptTokens()).toBe(3 + 2)
  })

  it("an embeddings batch must fit a window input by input, not in sum (Letta sends up to 2048 chunks at once)", () => {
    const emb = (window: number) => cand("e", 1, {}, { embeddings: true, contextWindow: window })
    // 30 inputs of ~375 tokens: 11,250 in all, each far below 8192.
    const batch = needsOfEmbeddings({ model: "e", input: Array.from({ length: 30 }, () => "word ".repeat(300)) })
    expect(batch.promptTokens()).toBe(11250)
    expect(unfit(emb(8192), batch)).toBeNull()
    expect(order(run({ candidates: [emb(8192)], needs: batch }))).toEqual(["e"])
    // One input longer than the window still rules the candidate out.
    const long = needsOfEmbeddings({ model: "e", input: ["short", "word ".repeat(2000)] })
    expect(unfit(emb(2048), long)).toBe("context 2048 < needed 2500")
    expect(run({ candidates: [emb(2048)], needs: long }).dropped.map((d) => d.contextWindow)).toEqual([2048])
    // Token-id inputs count one a token, each array on its own.
    expect(unfit(emb(4), needsOfEmbeddings({ model: "e", input: [[1, 2, 3], [4, 5, 6]] }))).toBeNull()
    expect(unfit(emb(3), needsOfEmbeddings({ model: "e", input: [[1, 2, 3], [4]] }))).toBe("context 3 < needed 3")
  })
})

describe("Rank.summary", () => {
  it("is the short, ASCII form of a decision", () => {
    const d = run({
      candidates: [cand("venice", 1, {}, { maxOutputTokens: 4096 }), cand("featherless", 2, {}, { contextWindow: 8192 }, "x"), cand("local", 3)],
      needs: needs({ prompt: 12000, maxTokens: 16384 }),
      pin: "local"
    })
    expect(summary(d)).toBe(
      "strategy=priority; order=local+m,venice+m; dropped=featherless+x(context 8192 < needed 12000); clamped=venice+m(max_tokens 16384->4096); pin=local"
    )
  })

  it("keeps its separators unambiguous whatever a reason says", () => {
    const reason = "misconfigured: HTTP 401: {\"error\": {\"message\": \"bad key; rotate (now)\", \"code\": 401}}"
    const d: Decision = {
      strategy: "priority",
      maxTokensRequested: null,
      ranked: [{ candidate: cand("ok", 1), score: 1, maxTokens: null }],
      dropped: [{ candidate: cand("broke", 2), reason }, { candidate: cand("not", 3), reason: "not in provider.order (allow_fallbacks: false)" }],
      notes: []
    }
    const text = summary(d)
    const parts = text.split("; ")
    expect(parts.map((p) => p.slice(0, p.indexOf("=")))).toEqual(["strategy", "order", "dropped"])
    const dropped = parts[2]!.slice("dropped=".length).split(",")
    expect(dropped).toHaveLength(2)
    expect(dropped.map((x) => x.slice(0, x.indexOf("(")))).toEqual(["broke+m", "not+m"])
    for (const x of dropped) {
      expect(x.endsWith(")")).toBe(true)
      expect(x.slice(x.indexOf("(") + 1, -1)).not.toMatch(/[(),;]/)
    }
    expect(dropped[1]).toBe("not+m(not in provider.order [allow_fallbacks: false])")
  })

  it("byPriority is a total order", () => {
    expect(byPriority(cand("a", 1), cand("b", 1))).toBeLessThan(0)
    expect(byPriority(cand("b", 1), cand("a", 1))).toBeGreaterThan(0)
    expect(byPriority(cand("a", 1), cand("a", 1))).toBe(0)
    expect(byPriority(cand("z", 0), cand("a", 1))).toBeLessThan(0)
  })
})
