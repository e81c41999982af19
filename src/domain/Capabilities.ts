/**
 * What a provider+model can do and what it costs: merged from the provider's flags, per-model
 * overrides in the config (which win) and what the upstream's `GET /models` tells.
 */

export interface Pricing {
  /** USD per million input (prompt) tokens. */
  readonly inputPer1M: number
  /** USD per million output (completion) tokens. */
  readonly outputPer1M: number
}

/** `null` everywhere means "unknown": an unknown capability never rules a candidate out. */
export interface ModelInfo {
  readonly contextWindow: number | null
  readonly maxOutputTokens: number | null
  readonly tools: boolean | null
  readonly vision: boolean | null
  readonly jsonSchema: boolean | null
  readonly reasoning: boolean | null
  readonly embeddings: boolean | null
  readonly pricing: Pricing | null
}

export const unknownModel: ModelInfo = {
  contextWindow: null,
  maxOutputTokens: null,
  tools: null,
  vision: null,
  jsonSchema: null,
  reasoning: null,
  embeddings: null,
  pricing: null
}

/** `over`'s known (non-null) values win over `base`'s. */
export const mergeInfo = (base: ModelInfo, over: Partial<ModelInfo>): ModelInfo => ({
  contextWindow: over.contextWindow ?? base.contextWindow,
  maxOutputTokens: over.maxOutputTokens ?? base.maxOutputTokens,
  tools: over.tools ?? base.tools,
  vision: over.vision ?? base.vision,
  jsonSchema: over.jsonSchema ?? base.jsonSchema,
  reasoning: over.reasoning ?? base.reasoning,
  embeddings: over.embeddings ?? base.embeddings,
  pricing: over.pricing ?? base.pricing
})

const positive = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) && v > 0 ? Math.floor(v) : null)
const flag = (v: unknown): boolean | null => (typeof v === "boolean" ? v : null)
const price = (v: unknown): number | null => {
  const n = typeof v === "string" ? Number(v) : v
  return typeof n === "number" && Number.isFinite(n) && n >= 0 ? n : null
}

/**
 * What one entry of an upstream's model list says, in the dialects met so far: Venice's
 * `model_spec`, Featherless's `context_length`/`max_completion_tokens`, vLLM's `max_model_len`,
 * llama.cpp's `meta.n_ctx_train`, OpenRouter-style `context_length` and per-token `pricing`.
 */
export const infoFromListing = (entry: Record<string, unknown>): ModelInfo => {
  const spec = (typeof entry.model_spec === "object" && entry.model_spec !== null ? entry.model_spec : {}) as Record<string, unknown>
  const caps = (typeof spec.capabilities === "object" && spec.capabilities !== null ? spec.capabilities : {}) as Record<string, unknown>
  const venicePricing = (spec.pricing ?? {}) as { input?: { usd?: unknown }; output?: { usd?: unknown } }
  const vIn = price(venicePricing.input?.usd)
  const vOut = price(venicePricing.output?.usd)
  // OpenRouter quotes USD per token, as strings.
  const perToken = (typeof entry.pricing === "object" && entry.pricing !== null ? entry.pricing : {}) as { prompt?: unknown; completion?: unknown }
  const tIn = price(perToken.prompt)
  const tOut = price(perToken.completion)
  return {
    contextWindow: positive(spec.availableContextTokens) ?? positive(entry.context_length) ?? positive(entry.max_model_len) ??
      positive((entry.meta as Record<string, unknown> | undefined)?.n_ctx_train),
    maxOutputTokens: positive(spec.maxCompletionTokens) ?? positive(entry.max_completion_tokens),
    tools: flag(caps.supportsFunctionCalling),
    vision: flag(caps.supportsVision),
    jsonSchema: flag(caps.supportsResponseSchema),
    reasoning: flag(caps.supportsReasoning),
    embeddings: null,
    pricing: vIn !== null && vOut !== null
      ? { inputPer1M: vIn, outputPer1M: vOut }
      : tIn !== null && tOut !== null
      ? { inputPer1M: tIn * 1e6, outputPer1M: tOut * 1e6 }
      : null
  }
}
