/**
 * What one entry of an upstream's `GET /models` says, in each dialect met so far, and how infos
 * merge.
 */
import { describe, expect, it } from "@effect/vitest"
import { infoFromListing, isUnknown, listingAvailable, mergeInfo, unknownModel } from "../../src/domain/Capabilities.js"

describe("infoFromListing", () => {
  it("reads Venice's model_spec, and type text as not an embedding model", () => {
    const info = infoFromListing({
      id: "llama-3.3-70b",
      type: "text",
      object: "model",
      owned_by: "venice.ai",
      model_spec: {
        availableContextTokens: 65536,
        maxCompletionTokens: 8192,
        capabilities: {
          optimizedForCode: false,
          supportsFunctionCalling: true,
          supportsReasoning: false,
          supportsResponseSchema: true,
          supportsVision: false,
          supportsWebSearch: true
        },
        pricing: { input: { usd: 0.7, diem: 7 }, output: { usd: 2.8, diem: 28 } }
      }
    })
    expect(info).toEqual({
      contextWindow: 65536,
      maxOutputTokens: 8192,
      tools: true,
      vision: false,
      jsonSchema: true,
      reasoning: false,
      embeddings: false,
      pricing: { inputPer1M: 0.7, outputPer1M: 2.8 }
    })
  })

  it("reads Venice's type embedding as an embedding model, whatever its name", () => {
    const info = infoFromListing({ id: "text-bge-m3", type: "embedding", model_spec: { pricing: { input: { usd: 0.15 } } } })
    expect(info.embeddings).toBe(true)
    // Only an input price: not a price pair, so unknown.
    expect(info.pricing).toBeNull()
    expect(infoFromListing({ id: "venice-sd35", type: "image" }).embeddings).toBe(false)
  })

  it("reads Featherless's context_length and max_completion_tokens, and its plan availability", () => {
    const entry = {
      id: "meta-llama/Meta-Llama-3.1-8B-Instruct",
      object: "model",
      owned_by: "featherless",
      model_class: "llama3.1-8b",
      context_length: 16384,
      max_completion_tokens: 4096,
      available_on_current_plan: true,
      is_gated: false
    }
    expect(infoFromListing(entry)).toEqual({ ...unknownModel, contextWindow: 16384, maxOutputTokens: 4096 })
    expect(listingAvailable(entry)).toBe(true)
    expect(listingAvailable({ ...entry, available_on_current_plan: false })).toBe(false)
    // Saying nothing is not saying no.
    expect(listingAvailable({ id: "x" })).toBe(true)
  })

  it("reads vLLM's max_model_len", () => {
    const info = infoFromListing({ id: "Qwen/Qwen2.5-7B-Instruct", object: "model", owned_by: "vllm", root: "Qwen/Qwen2.5-7B-Instruct", max_model_len: 32768 })
    expect(info).toEqual({ ...unknownModel, contextWindow: 32768 })
  })

  it("reads llama.cpp's meta.n_ctx_train", () => {
    const info = infoFromListing({ id: "model.gguf", object: "model", owned_by: "llamacpp", meta: { n_vocab: 128256, n_ctx_train: 131072, n_params: 8030261248 } })
    expect(info).toEqual({ ...unknownModel, contextWindow: 131072 })
  })

  it("reads OpenRouter's per-token prices, modalities, parameters and top provider", () => {
    const info = infoFromListing({
      id: "openai/gpt-4o",
      context_length: 128000,
      pricing: { prompt: "0.0000025", completion: "0.00001", image: "0.003613" },
      architecture: { input_modalities: ["text", "image", "file"], output_modalities: ["text"] },
      top_provider: { context_length: 128000, max_completion_tokens: 16384 },
      supported_parameters: ["max_tokens", "tools", "tool_choice", "response_format", "structured_outputs"]
    })
    expect(info.contextWindow).toBe(128000)
    expect(info.maxOutputTokens).toBe(16384)
    expect(info.tools).toBe(true)
    expect(info.vision).toBe(true)
    expect(info.jsonSchema).toBe(true)
    expect(info.reasoning).toBe(false)
    expect(info.embeddings).toBe(false)
    expect(info.pricing?.inputPer1M).toBeCloseTo(2.5, 9)
    expect(info.pricing?.outputPer1M).toBeCloseTo(10, 9)
  })

  it("knows nothing of a plain OpenAI entry, except an embedding model by its name", () => {
    const plain = infoFromListing({ id: "gpt-4o-mini", object: "model", created: 1, owned_by: "openai" })
    expect(plain).toEqual(unknownModel)
    expect(isUnknown(plain)).toBe(true)
    expect(infoFromListing({ id: "text-embedding-3-small", object: "model" }).embeddings).toBe(true)
    expect(infoFromListing({ id: "nomic-embed-text", object: "model" }).embeddings).toBe(true)
  })

  it("ignores values of the wrong type or out of range", () => {
    const info = infoFromListing({
      id: "m",
      context_length: -5,
      max_model_len: "4096",
      max_completion_tokens: Number.NaN,
      model_spec: { capabilities: { supportsVision: "yes" }, pricing: { input: { usd: -1 }, output: { usd: 1 } } },
      pricing: { prompt: "free", completion: "0" },
      meta: null
    })
    expect(info).toEqual(unknownModel)
  })
})

describe("mergeInfo", () => {
  it("takes the known values of the later one, keeps the rest", () => {
    const base = { ...unknownModel, contextWindow: 1000, tools: false }
    expect(mergeInfo(base, { tools: true, vision: null })).toEqual({ ...unknownModel, contextWindow: 1000, tools: true })
  })
})
