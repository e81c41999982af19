import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { configState, decodeConfig } from "../../src/config/ConfigFile.js"
import { ModelNotFound } from "../../src/domain/Errors.js"
import * as Providers from "../../src/providers/Providers.js"
import { buildIndex, resolveIn, type Resolution } from "../../src/providers/Providers.js"
import * as Router from "../../src/router/Router.js"
import * as Fake from "../../src/testing/FakeUpstream.js"
import { FakeUpstream } from "../../src/testing/FakeUpstream.js"
import { chat, endpoint, failureOf, routerWith } from "./helpers.js"

const indexOf = (config: unknown) =>
  Effect.map(decodeConfig(config, "test"), (loaded) => buildIndex(configState(loaded.file), new Map()))

const candidatesOf = (r: Resolution | ModelNotFound) => {
  if (r instanceof ModelNotFound) throw new Error(`unexpected ModelNotFound for ${r.model}`)
  return { kind: r.kind, candidates: r.candidates.map((c) => `${c.provider.id}+${c.upstreamModel}`) }
}

const config = {
  providers: {
    zeta: { endpoint: endpoint("zeta"), models: ["m", "shared"], priority: 1 },
    alpha: { endpoint: endpoint("alpha"), models: ["m", "shared"], priority: 1 },
    cheap: { endpoint: endpoint("cheap"), models: ["m"], priority: 0 },
    feather: { endpoint: endpoint("feather"), models: ["meta-llama/Llama-3.3-70B-Instruct", "org/m+v2"] }
  },
  aliases: {
    smart: ["zeta+m", "cheap+m", "alpha+m"],
    dup: ["alpha+m", "alpha+m", "cheap+m"],
    // `m` is a bare id inside an alias: it stands for every provider serving `m`.
    bare: ["m"]
  }
}

/** The providers tried, in order, for the bare id `m` and for the alias `bare` over it, all failing. */
const triedDirectAndViaAlias = Effect.gen(function* () {
  const router = yield* Router.Router
  const viaAlias = yield* failureOf(router.chat({ request: chat("bare") }))
  const direct = yield* failureOf(router.chat({ request: chat("m") }))
  if (viaAlias._tag !== "AllCandidatesFailed" || direct._tag !== "AllCandidatesFailed") throw new Error("expected AllCandidatesFailed")
  return { direct: direct.attempts.map((a) => a.provider), viaAlias: viaAlias.attempts.map((a) => a.provider) }
})

describe("Providers.resolveIn", () => {
  it.effect("a bare id resolves to every provider serving it", () =>
    Effect.gen(function* () {
      const index = yield* indexOf(config)
      const r = candidatesOf(resolveIn(index, "m"))
      expect(r.kind).toBe("model")
      expect([...r.candidates].sort()).toEqual(["alpha+m", "cheap+m", "zeta+m"])
    }))

  it.effect("provider+model pins, split at the first '+', with '/' and '+' in the model id", () =>
    Effect.gen(function* () {
      const index = yield* indexOf(config)
      expect(candidatesOf(resolveIn(index, "zeta+m"))).toEqual({ kind: "pinned", candidates: ["zeta+m"] })
      expect(candidatesOf(resolveIn(index, "feather+meta-llama/Llama-3.3-70B-Instruct")))
        .toEqual({ kind: "pinned", candidates: ["feather+meta-llama/Llama-3.3-70B-Instruct"] })
      const plus = resolveIn(index, "feather+org/m+v2")
      expect(candidatesOf(plus)).toEqual({ kind: "pinned", candidates: ["feather+org/m+v2"] })
      expect((plus as Resolution).candidates[0]!.upstreamModel).toBe("org/m+v2")
    }))

  it.effect("a bare id containing '+' still resolves as a bare id", () =>
    Effect.gen(function* () {
      const index = yield* indexOf(config)
      expect(candidatesOf(resolveIn(index, "org/m+v2"))).toEqual({ kind: "model", candidates: ["feather+org/m+v2"] })
    }))

  it.effect("an alias resolves to its targets in the order written, duplicates once", () =>
    Effect.gen(function* () {
      const index = yield* indexOf(config)
      expect(candidatesOf(resolveIn(index, "smart"))).toEqual({ kind: "alias", candidates: ["zeta+m", "cheap+m", "alpha+m"] })
      expect(candidatesOf(resolveIn(index, "dup"))).toEqual({ kind: "alias", candidates: ["alpha+m", "cheap+m"] })
    }))

  it.effect("unknown models, unknown providers and models a provider does not list are ModelNotFound", () =>
    Effect.gen(function* () {
      const index = yield* indexOf(config)
      for (const model of ["nope", "nobody+m", "cheap+shared", "zeta+", "+m"]) {
        const r = resolveIn(index, model)
        expect(r).toBeInstanceOf(ModelNotFound)
        expect((r as ModelNotFound).model).toBe(model)
      }
    }))

  it.effect("the model list names bare ids, pinned ids and aliases", () =>
    Effect.gen(function* () {
      const index = yield* indexOf(config)
      const list = index.list.map((e) => `${e.id}|${e.owned_by}`)
      expect(list).toContain("m|sanctum-router")
      expect(list).toContain("feather+org/m+v2|feather")
      expect(list).toContain("smart|sanctum-router")
    }))
})

describe("Router model resolution", () => {
  const bothFail = { behaviour: { mode: "status", status: 500 } } as const

  it.effect("a bare id tries the lower priority first, ties by provider id", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* failureOf(router.chat({ request: chat("m") }))
      expect(error._tag).toBe("AllCandidatesFailed")
      if (error._tag !== "AllCandidatesFailed") return
      expect(error.attempts.map((a) => a.provider)).toEqual(["cheap", "alpha", "zeta"])
      const calls = yield* (yield* FakeUpstream).calls
      expect(calls.map((c) => c.provider)).toEqual(["cheap", "alpha", "zeta"])
    }).pipe(Effect.provide(routerWith(config, { cheap: bothFail, alpha: bothFail, zeta: bothFail }))))

  it.effect("a bare id is served by the first candidate that answers", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("m") })
      expect(reply.provider).toBe("alpha")
      expect(reply.upstreamModel).toBe("m")
      expect(reply.attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["cheap:server_error", "alpha:ok"])
    }).pipe(Effect.provide(routerWith(config, { cheap: bothFail }))))

  it.effect("provider+model pins that provider, even when others have a lower priority", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("zeta+m") })
      expect(reply.provider).toBe("zeta")
      expect(reply.upstreamModel).toBe("m")
      const calls = yield* (yield* FakeUpstream).calls
      expect(calls.map((c) => c.provider)).toEqual(["zeta"])
      expect((calls[0]!.body as { model: string }).model).toBe("m")
    }).pipe(Effect.provide(routerWith(config))))

  it.effect("a pinned model id with '/' and '+' goes upstream whole", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const reply = yield* router.chat({ request: chat("feather+org/m+v2") })
      expect(reply.provider).toBe("feather")
      expect(reply.upstreamModel).toBe("org/m+v2")
      const calls = yield* (yield* FakeUpstream).calls
      expect((calls[0]!.body as { model: string }).model).toBe("org/m+v2")
    }).pipe(Effect.provide(routerWith(config))))

  it.effect("a pinned provider that fails is not replaced by another", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* failureOf(router.chat({ request: chat("zeta+m") }))
      expect(error._tag).toBe("AllCandidatesFailed")
      const calls = yield* (yield* FakeUpstream).calls
      expect(calls.map((c) => c.provider)).toEqual(["zeta"])
    }).pipe(Effect.provide(routerWith(config, { zeta: bothFail }))))

  it.effect("an alias keeps its configured order, not the priorities", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* failureOf(router.chat({ request: chat("smart") }))
      if (error._tag !== "AllCandidatesFailed") throw new Error(`unexpected ${error._tag}`)
      expect(error.attempts.map((a) => a.provider)).toEqual(["zeta", "cheap", "alpha"])
    }).pipe(Effect.provide(routerWith(config, { cheap: bothFail, alpha: bothFail, zeta: bothFail }))))

  it.effect("a bare id inside an alias is tried by priority, as the bare id itself is", () =>
    Effect.gen(function* () {
      const { direct, viaAlias } = yield* triedDirectAndViaAlias
      expect(direct).toEqual(["cheap", "alpha", "zeta"])
      expect(viaAlias).toEqual(["cheap", "alpha", "zeta"])
    }).pipe(Effect.provide(routerWith(config, { cheap: bothFail, alpha: bothFail, zeta: bothFail }))))

  it.effect("a bare id inside an alias follows routing.provider_order, as the bare id itself does", () =>
    Effect.gen(function* () {
      const { direct, viaAlias } = yield* triedDirectAndViaAlias
      expect(direct).toEqual(["zeta", "cheap", "alpha"])
      expect(viaAlias).toEqual(["zeta", "cheap", "alpha"])
      // The model list names them in the order tried, for the bare id and the alias alike.
      const list = (yield* indexOf({ ...config, routing: { provider_order: ["zeta"] } })).list
      expect(list.find((e) => e.id === "m")?.providers).toEqual(["zeta", "cheap", "alpha"])
      expect(list.find((e) => e.id === "bare")?.providers).toEqual(["zeta", "cheap", "alpha"])
    }).pipe(Effect.provide(routerWith({ ...config, routing: { provider_order: ["zeta"] } }, { cheap: bothFail, alpha: bothFail, zeta: bothFail }))))

  it.effect("a bare id in OpenRouter's models list is tried in the bare id's order (priority, then provider_order)", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const tried = (e: unknown) => {
        const error = e as { _tag: string; attempts: ReadonlyArray<{ provider: string; upstreamModel: string }> }
        if (error._tag !== "AllCandidatesFailed") throw new Error(`unexpected ${error._tag}`)
        return error.attempts.map((a) => `${a.provider}+${a.upstreamModel}`)
      }
      const plain = tried(yield* failureOf(router.chat({ request: chat("m") })))
      expect(plain).toEqual(["cheap+m", "alpha+m", "zeta+m"])
      // No fallbacks at all: the same order as without the field.
      expect(tried(yield* failureOf(router.chat({ request: chat("m", { models: [] }) })))).toEqual(plain)
      // Fallbacks: the model's providers first, in its order, then each fallback's, in theirs.
      expect(tried(yield* failureOf(router.chat({ request: chat("m", { models: ["shared"] }) })))).toEqual([...plain, "alpha+shared", "zeta+shared"])
    }).pipe(Effect.provide(routerWith(config, { cheap: bothFail, alpha: bothFail, zeta: bothFail }))))

  it.effect("a bare id in OpenRouter's models list follows routing.provider_order", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* failureOf(router.chat({ request: chat("m", { models: ["shared"] }) }))
      if (error._tag !== "AllCandidatesFailed") throw new Error(`unexpected ${error._tag}`)
      expect(error.attempts.map((a) => `${a.provider}+${a.upstreamModel}`)).toEqual(["zeta+m", "cheap+m", "alpha+m", "zeta+shared", "alpha+shared"])
    }).pipe(Effect.provide(routerWith({ ...config, routing: { provider_order: ["zeta"] } }, { cheap: bothFail, alpha: bothFail, zeta: bothFail }))))

  it.effect("models: [] (or models naming only the model) routes as a request without the field: an alias keeps its strategy", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const order = (extra: Record<string, unknown>) =>
        Effect.map(
          router.explain({ endpoint: "chat", request: chat("thrifty", extra) }),
          (e) => [e.decision.strategy, ...e.decision.ranked.map((r) => r.candidate.provider.id)]
        )
      const plain = yield* order({})
      expect(plain).toEqual(["cost", "cheap", "zeta"])
      expect(yield* order({ models: [] })).toEqual(plain)
      expect(yield* order({ models: ["thrifty"] })).toEqual(plain)
    }).pipe(Effect.provide(routerWith({
      providers: {
        zeta: { endpoint: endpoint("zeta"), models: ["m"], priority: 1, model_overrides: { m: { pricing: { input: 5, output: 5 } } } },
        cheap: { endpoint: endpoint("cheap"), models: ["m"], priority: 2, model_overrides: { m: { pricing: { input: 1, output: 1 } } } }
      },
      aliases: { thrifty: { targets: ["zeta+m", "cheap+m"], strategy: "cost" } }
    }))))

  it.effect("an unknown model is ModelNotFound and calls nobody", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* failureOf(router.chat({ request: chat("gpt-nope") }))
      expect(error).toBeInstanceOf(ModelNotFound)
      expect((error as ModelNotFound).model).toBe("gpt-nope")
      expect(yield* (yield* FakeUpstream).calls).toEqual([])
    }).pipe(Effect.provide(routerWith(config))))

  it.effect("a model pinned to an unknown provider is ModelNotFound and calls nobody", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* failureOf(router.chat({ request: chat("nobody+m") }))
      expect(error._tag).toBe("ModelNotFound")
      expect((error as ModelNotFound).model).toBe("nobody+m")
      const other = yield* failureOf(router.chat({ request: chat("cheap+shared") }))
      expect(other._tag).toBe("ModelNotFound")
      expect(yield* (yield* FakeUpstream).calls).toEqual([])
    }).pipe(Effect.provide(routerWith(config))))

  it.effect("a static registry whose alias pins an unknown provider is refused", () =>
    Effect.gen(function* () {
      const layer = Providers.layerStatic({ providers: config.providers, aliases: { x: ["nobody+m"] } }).pipe(Layer.provide(Fake.layer()))
      const error = yield* failureOf(Effect.scoped(Layer.build(layer)))
      expect(error._tag).toBe("ConfigFileError")
      expect(error.message).toContain("unknown provider 'nobody'")
    }))
})
