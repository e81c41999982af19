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

const record = (v: unknown): Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : {}
const strings = (v: unknown): ReadonlyArray<string> | null =>
  Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : null

/** Whether a list names one of `names`; `null` when there is no list. */
const listsAny = (list: ReadonlyArray<string> | null, ...names: ReadonlyArray<string>): boolean | null =>
  list === null ? null : names.some((n) => list.includes(n))

/**
 * What one entry of an upstream's model list says, in the dialects met so far:
 * - Venice: `type` ("text", "embedding", "image", ...) and `model_spec` (`availableContextTokens`,
 *   `maxCompletionTokens`, `capabilities.supports*`, `pricing.input.usd`/`output.usd` per 1M tokens);
 * - Featherless: `context_length`, `max_completion_tokens` (its `available_on_current_plan` is read
 *   by `listingAvailable`);
 * - vLLM: `max_model_len`; llama.cpp: `meta.n_ctx_train`;
 * - OpenRouter: `context_length`, `top_provider.max_completion_tokens`, `pricing` in USD per token
 *   (strings), `architecture.input_modalities`/`output_modalities`, `supported_parameters`.
 *
 * Embeddings: an entry with a `type` is an embedding model exactly when the type is "embedding"
 * (Venice), and one that lists its output modalities is one when they include "embeddings"
 * (OpenRouter). With neither, an id containing "embed" (text-embedding-3-small, nomic-embed-text)
 * is taken as an embedding model: a heuristic that only ever says `true`, so other ids (bge-m3)
 * stay unknown rather than being called chat models.
 */
export const infoFromListing = (entry: Record<string, unknown>): ModelInfo => {
  const spec = record(entry.model_spec)
  const caps = record(spec.capabilities)
  const venicePricing = record(spec.pricing)
  const vIn = price(record(venicePricing.input).usd)
  const vOut = price(record(venicePricing.output).usd)
  // OpenRouter quotes USD per token, as strings.
  const perToken = record(entry.pricing)
  const tIn = price(perToken.prompt)
  const tOut = price(perToken.completion)
  const architecture = record(entry.architecture)
  const inputs = strings(architecture.input_modalities)
  const outputs = strings(architecture.output_modalities)
  const params = strings(entry.supported_parameters)
  const id = typeof entry.id === "string" ? entry.id : ""
  return {
    contextWindow: positive(spec.availableContextTokens) ?? positive(entry.context_length) ?? positive(entry.max_model_len) ??
      positive(record(entry.meta).n_ctx_train),
    maxOutputTokens: positive(spec.maxCompletionTokens) ?? positive(entry.max_completion_tokens) ??
      positive(record(entry.top_provider).max_completion_tokens),
    tools: flag(caps.supportsFunctionCalling) ?? listsAny(params, "tools"),
    vision: flag(caps.supportsVision) ?? listsAny(inputs, "image"),
    jsonSchema: flag(caps.supportsResponseSchema) ?? listsAny(params, "structured_outputs"),
    reasoning: flag(caps.supportsReasoning) ?? listsAny(params, "reasoning", "include_reasoning"),
    embeddings: typeof entry.type === "string"
      ? entry.type === "embedding"
      : listsAny(outputs, "embeddings") ?? (/embed/i.test(id) ? true : null),
    pricing: vIn !== null && vOut !== null
      ? { inputPer1M: vIn, outputPer1M: vOut }
      : tIn !== null && tOut !== null
      ? { inputPer1M: tIn * 1e6, outputPer1M: tOut * 1e6 }
      : null
  }
}

/**
 * Whether the account may use the model: `false` only when the entry says so (Featherless's
 * `available_on_current_plan: false`); anything else counts as available.
 */
export const listingAvailable = (entry: Record<string, unknown>): boolean => entry.available_on_current_plan !== false

/** Whether nothing at all is known. */
export const isUnknown = (info: ModelInfo): boolean =>
  info.contextWindow === null && info.maxOutputTokens === null && info.tools === null && info.vision === null &&
  info.jsonSchema === null && info.reasoning === null && info.embeddings === null && info.pricing === null

/**
 * The `x-request-id` of model discovery's `GET /models` requests: tells them apart from health
 * checks in an upstream's logs, and lets fakes answer them outside their script.
 */
export const discoveryRequestId = "sanctum-model-discovery"
