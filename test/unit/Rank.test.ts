import { describe, expect, it } from "@effect/vitest"
import { type Candidate, defaultTimeouts, type ProviderSpec } from "../../src/domain/Provider.js"
import { byPriority, gate, needsOfChat, noNeeds, rankByPriority, unfit } from "../../src/policy/Rank.js"
import { chat } from "./helpers.js"

const spec = (id: string, priority: number, caps: Partial<ProviderSpec> = {}): ProviderSpec => ({
  id,
  endpoint: `http://127.0.0.1:1/${id}`,
  apiKey: null,
  type: "openai_compat",
  models: ["m"],
  priority,
  supportsTools: null,
  supportsStreaming: null,
  supportsMultimodal: null,
  timeouts: defaultTimeouts,
  hedgeAfterMs: null,
  weight: 1,
  modelOverrides: {},
  source: "file",
  ...caps
})

const cand = (id: string, priority: number, caps: Partial<ProviderSpec> = {}): Candidate => ({
  provider: spec(id, priority, caps),
  upstreamModel: "m"
})

const ids = (cs: ReadonlyArray<Candidate>) => cs.map((c) => c.provider.id)

const permutations = <A>(xs: ReadonlyArray<A>): Array<Array<A>> =>
  xs.length <= 1 ? [[...xs]] : xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]))

const streamNeeds = { stream: true, tools: false, vision: false }

describe("Rank.rankByPriority", () => {
  const pool = [cand("delta", 2), cand("alpha", 5), cand("charlie", 2), cand("bravo", 1)]

  it("orders a bare model's candidates by priority, ties by provider id", () => {
    const { ranked, dropped } = rankByPriority({ kind: "model", candidates: pool }, noNeeds)
    expect(ids(ranked)).toEqual(["bravo", "charlie", "delta", "alpha"])
    expect(dropped).toEqual([])
  })

  it("gives the same order for every input order (deterministic)", () => {
    for (const p of permutations(pool)) {
      expect(ids(rankByPriority({ kind: "model", candidates: p }, noNeeds).ranked)).toEqual(["bravo", "charlie", "delta", "alpha"])
    }
  })

  it("keeps an alias in its configured order whatever the priorities", () => {
    expect(ids(rankByPriority({ kind: "alias", candidates: pool }, noNeeds).ranked)).toEqual(["delta", "alpha", "charlie", "bravo"])
  })

  it("does not reorder the resolution's array in place", () => {
    const candidates = [...pool]
    rankByPriority({ kind: "model", candidates }, noNeeds)
    expect(ids(candidates)).toEqual(["delta", "alpha", "charlie", "bravo"])
  })

  it("drops candidates whose capability is explicitly false, with a reason, and keeps unknown ones", () => {
    const { ranked, dropped } = rankByPriority(
      { kind: "model", candidates: [cand("a", 1, { supportsStreaming: false }), cand("b", 2, { supportsStreaming: null }), cand("c", 3, { supportsStreaming: true })] },
      streamNeeds
    )
    expect(ids(ranked)).toEqual(["b", "c"])
    expect(dropped.map((d) => [d.candidate.provider.id, d.reason])).toEqual([["a", "does not support streaming"]])
  })

  it("drops a single pinned candidate that does not fit", () => {
    const { ranked, dropped } = rankByPriority({ kind: "pinned", candidates: [cand("a", 1, { supportsTools: false })] }, { stream: false, tools: true, vision: false })
    expect(ranked).toEqual([])
    expect(dropped.map((d) => d.reason)).toEqual(["does not support tools"])
  })

  it("ignores capabilities a request does not need", () => {
    const c = cand("a", 1, { supportsStreaming: false, supportsTools: false, supportsMultimodal: false })
    expect(ids(rankByPriority({ kind: "pinned", candidates: [c] }, noNeeds).ranked)).toEqual(["a"])
  })
})

describe("Rank.unfit / gate / byPriority", () => {
  it("names each missing capability", () => {
    expect(unfit(cand("a", 1, { supportsStreaming: false }), streamNeeds)).toBe("does not support streaming")
    expect(unfit(cand("a", 1, { supportsTools: false }), { stream: false, tools: true, vision: false })).toBe("does not support tools")
    expect(unfit(cand("a", 1, { supportsMultimodal: false }), { stream: false, tools: false, vision: true })).toBe("does not support images")
    expect(unfit(cand("a", 1), { stream: true, tools: true, vision: true })).toBeNull()
  })

  it("gate keeps the input order of what fits", () => {
    const r = gate([cand("z", 1), cand("x", 9, { supportsMultimodal: false }), cand("y", 0)], { stream: false, tools: false, vision: true })
    expect(ids(r.ranked)).toEqual(["z", "y"])
    expect(ids(r.dropped.map((d) => d.candidate))).toEqual(["x"])
  })

  it("byPriority is a total order", () => {
    expect(byPriority(cand("a", 1), cand("b", 1))).toBeLessThan(0)
    expect(byPriority(cand("b", 1), cand("a", 1))).toBeGreaterThan(0)
    expect(byPriority(cand("a", 1), cand("a", 1))).toBe(0)
    expect(byPriority(cand("z", 0), cand("a", 1))).toBeLessThan(0)
  })
})

describe("Rank.needsOfChat", () => {
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
})
