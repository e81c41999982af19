/**
 * What the model index knows of each provider+model (provider flags < discovery < config
 * overrides), what discovery keeps (paging, filtering to the configured models, plan
 * availability), and the extra fields of the `GET /v1/models` entries.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, Logger, Option, TestClock } from "effect"
import { configState, decodeConfig } from "../../src/config/ConfigFile.js"
import { type ModelInfo, unknownModel } from "../../src/domain/Capabilities.js"
import { ModelNotFound } from "../../src/domain/Errors.js"
import type { ModelEntry } from "../../src/domain/OpenAi.js"
import * as Providers from "../../src/providers/Providers.js"
import { buildIndex, type Discovered, infoOf, maxModelPages, nextPagePath, resolveIn, type Resolution } from "../../src/providers/Providers.js"
import { Upstream } from "../../src/providers/Upstream.js"
import * as Router from "../../src/router/Router.js"
import * as FakeUpstream from "../../src/testing/FakeUpstream.js"
import { chat, endpoint } from "./helpers.js"

/** An upstream that never answers anything, as a server that accepted the connection and hangs. */
const silentUpstream = Layer.succeed(Upstream, Upstream.of({ send: () => Effect.never, request: () => Effect.never }))

const stateOf = (config: unknown) => Effect.map(decodeConfig(config, "test"), (loaded) => configState(loaded.file))

const discovered = (models: ReadonlyArray<string>, info: Record<string, Partial<ModelInfo>> = {}, options: { complete?: boolean; unavailable?: ReadonlyArray<string> } = {}): Discovered => ({
  models,
  complete: options.complete ?? true,
  info: new Map(Object.entries(info).map(([m, i]) => [m, { ...unknownModel, ...i }])),
  unavailable: new Set(options.unavailable ?? [])
})

const resolved = (r: Resolution | ModelNotFound): Resolution => {
  if (r instanceof ModelNotFound) throw new Error(`unexpected ModelNotFound for ${r.model}`)
  return r
}

const entryOf = (list: ReadonlyArray<ModelEntry>, id: string): ModelEntry => {
  const e = list.find((m) => m.id === id)
  if (e === undefined) throw new Error(`no entry ${id} in ${list.map((m) => m.id).join(", ")}`)
  return e
}

const config = {
  providers: {
    // Flags: no tools, images yes.
    flagged: { endpoint: endpoint("flagged"), models: ["m", "plain"], priority: 2, supports_tools: false, supports_multimodal: true, supports_streaming: false },
    other: {
      endpoint: endpoint("other"),
      models: ["m"],
      priority: 1,
      model_overrides: { m: { context_length: 2000, supports_reasoning: true, pricing: { input: 1, output: 2 } } }
    },
    open: { endpoint: endpoint("open"), priority: 3 }
  },
  aliases: { best: ["other+m", "flagged+m", "flagged+plain"], spare: ["flagged+unlisted"] }
}

describe("the index's ModelInfo per provider+model", () => {
  it.effect("flags < discovery < overrides", () =>
    Effect.gen(function* () {
      const state = yield* stateOf({
        providers: {
          p: {
            endpoint: endpoint("p"),
            models: ["a", "b", "c"],
            supports_tools: false,
            supports_multimodal: true,
            model_overrides: { c: { supports_tools: false, context_length: 9000, max_output_tokens: 100 } }
          }
        }
      })
      const index = buildIndex(state, new Map([["p", discovered(["b", "c"], {
        b: { tools: true, vision: false, contextWindow: 4000 },
        c: { tools: true, contextWindow: 4000, maxOutputTokens: 500, pricing: { inputPer1M: 0.5, outputPer1M: 1 } }
      }, { complete: false })]]))
      // Flags alone.
      expect(infoOf(index, "p", "a")).toEqual({ ...unknownModel, tools: false, vision: true })
      // Discovery wins over the flags.
      expect(infoOf(index, "p", "b")).toEqual({ ...unknownModel, tools: true, vision: false, contextWindow: 4000 })
      // Overrides win over discovery; what they do not say comes from below.
      expect(infoOf(index, "p", "c")).toEqual({
        ...unknownModel,
        tools: false,
        vision: true,
        contextWindow: 9000,
        maxOutputTokens: 100,
        pricing: { inputPer1M: 0.5, outputPer1M: 1 }
      })
      // A model the index does not know: the provider's flags; an unknown provider: nothing.
      expect(infoOf(index, "p", "zzz")).toEqual({ ...unknownModel, tools: false, vision: true })
      expect(infoOf(index, "nobody", "a")).toBe(unknownModel)
    }))

  it.effect("every candidate carries its info, one shared object per provider+model", () =>
    Effect.gen(function* () {
      const index = buildIndex(yield* stateOf(config), new Map())
      const bare = resolved(resolveIn(index, "m")).candidates
      const pinned = resolved(resolveIn(index, "flagged+m")).candidates[0]!
      const alias = resolved(resolveIn(index, "best")).candidates
      const flagged = bare.find((c) => c.provider.id === "flagged")!
      expect(pinned).toBe(flagged)
      expect(alias[1]).toBe(flagged)
      expect(alias[0]).toBe(bare.find((c) => c.provider.id === "other"))
      expect(resolved(resolveIn(index, "flagged+m")).candidates[0]).toBe(pinned)
      for (const c of [...bare, ...alias]) expect(c.info).toBeDefined()
      expect(flagged.info).toBe(infoOf(index, "flagged", "m"))
      expect(flagged.info).toEqual({ ...unknownModel, tools: false, vision: true })
      expect(alias[0]!.info).toEqual({ ...unknownModel, contextWindow: 2000, reasoning: true, pricing: { inputPer1M: 1, outputPer1M: 2 } })
      // An alias target the provider does not list still has the provider's flags.
      expect(resolved(resolveIn(index, "spare")).candidates[0]!.info).toEqual({ ...unknownModel, tools: false, vision: true })
    }))

  it.effect("a pinned model of a provider whose list is not known yet gets the provider's flags", () =>
    Effect.gen(function* () {
      const index = buildIndex(yield* stateOf({ providers: { open: { endpoint: endpoint("open"), supports_tools: true } } }), new Map())
      const c = resolved(resolveIn(index, "open+anything")).candidates[0]!
      expect(c.upstreamModel).toBe("anything")
      expect(c.info).toEqual({ ...unknownModel, tools: true })
    }))

  it.effect("a discovered list is served; a configured one wins, using only the discovered infos", () =>
    Effect.gen(function* () {
      const state = yield* stateOf(config)
      const index = buildIndex(state, new Map([
        ["open", discovered(["x", "m"], { x: { contextWindow: 1234 } })],
        ["other", discovered(["m"], { m: { contextWindow: 64000, maxOutputTokens: 4000, tools: true } }, { complete: false })]
      ]))
      expect([...index.served.get("open")!]).toEqual(["x", "m"])
      expect([...index.served.get("other")!]).toEqual(["m"])
      expect(infoOf(index, "open", "x").contextWindow).toBe(1234)
      // The override's context wins; discovery adds what the override does not say.
      expect(infoOf(index, "other", "m")).toEqual({
        ...unknownModel,
        contextWindow: 2000,
        maxOutputTokens: 4000,
        tools: true,
        reasoning: true,
        pricing: { inputPer1M: 1, outputPer1M: 2 }
      })
      expect(resolved(resolveIn(index, "m")).candidates.map((c) => c.provider.id).sort()).toEqual(["flagged", "open", "other"])
    }))

  it.effect("a partial list (configured provider) never becomes what a provider without models serves", () =>
    Effect.gen(function* () {
      const index = buildIndex(yield* stateOf(config), new Map([["open", discovered(["x"], {}, { complete: false })]]))
      expect(index.served.get("open")).toBeNull()
    }))
})

describe("GET /v1/models entries", () => {
  it.effect("keep OpenAI's fields and add what is known, deterministically", () =>
    Effect.gen(function* () {
      const state = yield* stateOf(config)
      const found = new Map([
        ["open", discovered(["m"], { m: { contextWindow: 128000, tools: true, jsonSchema: true, pricing: { inputPer1M: 3, outputPer1M: 4 } } })],
        ["flagged", discovered(["m"], { m: { contextWindow: 8000, embeddings: false } }, { complete: false })]
      ])
      const index = buildIndex(state, found, 42)
      expect(buildIndex(state, found, 42).list).toEqual(index.list)
      const ids = index.list.map((e) => e.id)
      expect(ids).toEqual(["m", "plain", "flagged+m", "flagged+plain", "open+m", "other+m", "best", "spare"])

      // One provider's own facts.
      expect(entryOf(index.list, "other+m")).toEqual({
        id: "other+m",
        object: "model",
        created: 42,
        owned_by: "other",
        context_length: 2000,
        capabilities: { reasoning: true },
        pricing: { input: 1, output: 2 },
        providers: ["other"]
      })
      expect(entryOf(index.list, "flagged+m")).toEqual({
        id: "flagged+m",
        object: "model",
        created: 42,
        owned_by: "flagged",
        context_length: 8000,
        capabilities: { tools: false, vision: true, streaming: false, embeddings: false },
        providers: ["flagged"]
      })
      // A bare id: every provider, by priority; the largest context, the cheapest price, a
      // capability one of them has; `false` only when all are known not to.
      expect(entryOf(index.list, "m")).toEqual({
        id: "m",
        object: "model",
        created: 42,
        owned_by: "sanctum-router",
        context_length: 128000,
        capabilities: { tools: true, vision: true, json_schema: true, reasoning: true },
        pricing: { input: 1, output: 2 },
        providers: ["other", "flagged", "open"]
      })
      // An alias: its chain's providers, in order.
      expect(entryOf(index.list, "best")).toMatchObject({ owned_by: "sanctum-router", context_length: 8000, providers: ["other", "flagged"] })
      expect(entryOf(index.list, "spare").providers).toEqual(["flagged"])
    }))

  it.effect("say nothing they do not know", () =>
    Effect.gen(function* () {
      const index = buildIndex(yield* stateOf({ providers: { p: { endpoint: endpoint("p"), models: ["m"] } } }), new Map(), 7)
      expect(index.list).toEqual([
        { id: "m", object: "model", created: 7, owned_by: "sanctum-router", providers: ["p"] },
        { id: "p+m", object: "model", created: 7, owned_by: "p", providers: ["p"] }
      ])
    }))
})

describe("nextPagePath", () => {
  const api = "https://api.example.com/v1"

  it("follows OpenAI-style paging", () => {
    expect(nextPagePath({ data: [{ id: "a" }], has_more: true, last_id: "org/b c" }, api)).toBe("/models?after=org%2Fb%20c")
    // Without last_id, the last entry's id.
    expect(nextPagePath({ data: [{ id: "a" }, { id: "z" }], has_more: true }, api)).toBe("/models?after=z")
    expect(nextPagePath({ data: [{ id: "a" }], has_more: false, next: "/models?page=2" }, api)).toBeNull()
    expect(nextPagePath({ data: [] }, api)).toBeNull()
  })

  it("follows next and next_page links on the endpoint, never elsewhere", () => {
    expect(nextPagePath({ data: [], next: "https://api.example.com/v1/models?page=2" }, api)).toBe("/models?page=2")
    expect(nextPagePath({ data: [], next_page: "/v1/models?cursor=abc" }, api)).toBe("/models?cursor=abc")
    expect(nextPagePath({ data: [], next: "?page=3" }, api)).toBe("/models?page=3")
    expect(nextPagePath({ data: [], next: "models?page=4" }, api)).toBe("/models?page=4")
    // Another origin, or outside the API root, would get the provider's key: not followed.
    expect(nextPagePath({ data: [], next: "https://evil.example.net/v1/models?page=2" }, api)).toBeNull()
    expect(nextPagePath({ data: [], next: "https://api.example.com/other/models" }, api)).toBeNull()
    expect(nextPagePath({ data: [], next: null }, api)).toBeNull()
  })
})

/** A registry over `config` whose providers' model lists are `listings`; refreshes once and returns the index. */
const indexAfterDiscovery = (config: unknown, scripts: Readonly<Record<string, FakeUpstream.FakeProviderScript>>) =>
  Effect.gen(function* () {
    const providers = yield* Providers.Providers
    yield* providers.refresh
    return providers.index()
  }).pipe(Effect.provide(Providers.layerStatic(config).pipe(Layer.provide(FakeUpstream.layer(scripts)))))

describe("discovery", () => {
  it.effect("is done before the registry is ready: a model nobody configured is known to the first request", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("llama3.2") })
      expect(reply.provider).toBe("local")
    }).pipe(Effect.provide(Router.layer.pipe(
      Layer.provide(Providers.layerStatic({ providers: { local: { endpoint: endpoint("local") } } })),
      Layer.provideMerge(FakeUpstream.layer({ local: { models: ["llama3.2"] } }))
    ))))

  it.effect("then says which aliases lead nowhere (a typo, a model nobody serves, another alias's name)", () =>
    Effect.gen(function* () {
      const logged: Array<string> = []
      yield* Effect.provide(Providers.Providers, Providers.layerStatic({
        providers: { local: { endpoint: endpoint("local") } },
        aliases: { good: "llama3.2", typo: "lama3.2", nested: "good" }
      }).pipe(Layer.provide(FakeUpstream.layer({ local: { models: ["llama3.2"] } })))).pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => void logged.push(String(message)))))
      )
      expect(logged.filter((m) => m.startsWith("alias"))).toEqual([
        "alias 'typo' names no model a configured provider serves (aliases do not name other aliases)",
        "alias 'nested' names no model a configured provider serves (aliases do not name other aliases)"
      ])
    }))

  it.effect(`is waited for ${Duration.format(Providers.startupDiscoveryWait)} at most: a list that never comes does not hold start-up`, () =>
    Effect.gen(function* () {
      const building = yield* Effect.fork(Effect.map(Providers.Providers, (p) => p.index().models.size).pipe(
        Effect.provide(Providers.layerStatic({ providers: { slow: { endpoint: endpoint("slow") } } }).pipe(Layer.provide(silentUpstream)))
      ))
      yield* TestClock.adjust(Duration.subtract(Providers.startupDiscoveryWait, Duration.millis(1)))
      expect(Option.isNone(yield* Fiber.poll(building))).toBe(true)
      yield* TestClock.adjust("1 millis")
      expect(yield* Fiber.join(building)).toBe(0)
    }))

  it.effect("follows has_more/last_id pages", () =>
    Effect.gen(function* () {
      const paths: Array<string> = []
      const pages: Record<string, unknown> = {
        "/models": { object: "list", data: [{ id: "a", context_length: 1000 }, { id: "b" }], has_more: true, last_id: "b" },
        "/models?after=b": { object: "list", data: [{ id: "c", context_length: 3000 }], has_more: true, last_id: "c" },
        "/models?after=c": { object: "list", data: [{ id: "d" }], has_more: false }
      }
      const index = yield* indexAfterDiscovery({ providers: { f: { endpoint: endpoint("f") } } }, {
        f: {
          listing: (path) => {
            paths.push(path)
            return pages[path]
          }
        }
      })
      expect([...index.served.get("f")!]).toEqual(["a", "b", "c", "d"])
      expect(infoOf(index, "f", "c").contextWindow).toBe(3000)
      expect(new Set(paths)).toEqual(new Set(Object.keys(pages)))
    }))

  it.effect("follows next links and stops at a page already read", () =>
    Effect.gen(function* () {
      const pages: Record<string, unknown> = {
        "/models": { data: [{ id: "a" }], next: `${endpoint("f")}/models?page=2` },
        "/models?page=2": { data: [{ id: "b" }], next_page: "/f/v1/models?page=1" },
        "/models?page=1": { data: [{ id: "a" }], next: "/models" }
      }
      const index = yield* indexAfterDiscovery({ providers: { f: { endpoint: endpoint("f") } } }, { f: { listing: (path) => pages[path] } })
      expect([...index.served.get("f")!]).toEqual(["a", "b"])
    }))

  it.effect(`stops after ${maxModelPages} pages`, () =>
    Effect.gen(function* () {
      const asked = new Set<string>()
      const index = yield* indexAfterDiscovery({ providers: { f: { endpoint: endpoint("f") } } }, {
        f: {
          // Page n+1 follows `m{n}b`, so asking again reads the same pages.
          listing: (path) => {
            asked.add(path)
            const n = Number(/after=m(\d+)b/.exec(path)?.[1] ?? 0) + 1
            return { data: [{ id: `m${n}a` }, { id: `m${n}b` }], has_more: true, last_id: `m${n}b` }
          }
        }
      })
      expect(asked.size).toBe(maxModelPages)
      expect(index.served.get("f")!.size).toBe(2 * maxModelPages)
    }))

  it.effect("with a configured list, keeps only the models the config names (models, overrides, alias targets)", () =>
    Effect.gen(function* () {
      const listing = {
        data: ["a", "b", "c", "d", "e"].map((id, i) => ({ id, context_length: 1000 * (i + 1) }))
      }
      const index = yield* indexAfterDiscovery({
        providers: {
          f: { endpoint: endpoint("f"), models: ["a"], model_overrides: { b: { max_output_tokens: 10 } } },
          g: { endpoint: endpoint("g") }
        },
        aliases: { x: ["f+c", "e"] }
      }, { f: { listing: () => listing }, g: { listing: () => listing } })
      // Served: only the configured list.
      expect([...index.served.get("f")!]).toEqual(["a"])
      expect([...index.byProvider.get("f")!.candidates.keys()].sort()).toEqual(["a", "b", "c"])
      expect(infoOf(index, "f", "a").contextWindow).toBe(1000)
      expect(infoOf(index, "f", "b")).toMatchObject({ contextWindow: 2000, maxOutputTokens: 10 })
      expect(resolved(resolveIn(index, "x")).candidates.map((c) => [c.provider.id, c.upstreamModel, c.info?.contextWindow])).toEqual([
        ["f", "c", 3000],
        ["g", "e", 5000]
      ])
      // Not named by the config: not kept.
      expect(infoOf(index, "f", "d").contextWindow).toBeNull()
      // Without a configured list, everything.
      expect(index.served.get("g")!.size).toBe(5)
    }))

  it.effect("available_on_current_plan: false drops a discovered model and marks a configured one", () =>
    Effect.gen(function* () {
      const listing = {
        data: [
          { id: "free", context_length: 8192, available_on_current_plan: true },
          { id: "premium", context_length: 32768, available_on_current_plan: false }
        ]
      }
      const index = yield* indexAfterDiscovery({
        providers: {
          feather: { endpoint: endpoint("feather"), provider_type: "featherless" },
          pinned: { endpoint: endpoint("pinned"), provider_type: "featherless", models: ["free", "premium"] }
        }
      }, { feather: { listing: () => listing }, pinned: { listing: () => listing } })
      expect([...index.served.get("feather")!]).toEqual(["free"])
      expect(resolveIn(index, "feather+premium")).toBeInstanceOf(ModelNotFound)
      expect(resolved(resolveIn(index, "premium")).candidates.map((c) => c.provider.id)).toEqual(["pinned"])
      // Configured: still served (the config says so), and the entry says what the provider said.
      expect([...index.byProvider.get("pinned")!.unavailable]).toEqual(["premium"])
      expect(entryOf(index.list, "pinned+premium")).toMatchObject({ context_length: 32768, available_on_current_plan: false })
      expect(entryOf(index.list, "pinned+free").available_on_current_plan).toBeUndefined()
    }))

  it.effect("an unchanged list leaves the index as it is; a changed one rebuilds it", () => {
    let answer: unknown = { data: [{ id: "a", context_length: 1000 }] }
    return Effect.gen(function* () {
      const providers = yield* Providers.Providers
      yield* providers.refresh
      const first = providers.index()
      yield* providers.refresh
      expect(providers.index()).toBe(first)
      answer = { data: [{ id: "a", context_length: 2000 }] }
      yield* providers.refresh
      expect(providers.index()).not.toBe(first)
      expect(infoOf(providers.index(), "f", "a").contextWindow).toBe(2000)
    }).pipe(Effect.provide(Providers.layerStatic({ providers: { f: { endpoint: endpoint("f") } } }).pipe(
      Layer.provide(FakeUpstream.layer({ f: { listing: () => answer } }))
    )))
  })

  it.effect("a failed discovery keeps the previous list", () => {
    let answer: unknown = { data: [{ id: "a" }] }
    return Effect.gen(function* () {
      const providers = yield* Providers.Providers
      yield* providers.refresh
      expect([...providers.index().served.get("f")!]).toEqual(["a"])
      answer = "not a model list"
      yield* providers.refresh
      expect([...providers.index().served.get("f")!]).toEqual(["a"])
      answer = { data: [{ id: "b" }] }
      yield* providers.refresh
      expect([...providers.index().served.get("f")!]).toEqual(["b"])
    }).pipe(Effect.provide(Providers.layerStatic({ providers: { f: { endpoint: endpoint("f") } } }).pipe(
      Layer.provide(FakeUpstream.layer({ f: { listing: () => answer } }))
    )))
  })
})
