/**
 * OpenRouter's routing fields in a request body: `models` (an ordered fallback list) and
 * `provider: {order, only, ignore, allow_fallbacks, sort, require_parameters, max_price}`. They are
 * read here and never sent upstream. Other `provider` fields OpenRouter knows (`data_collection`,
 * `quantizations`, …) mean nothing to a self-hosted router and are ignored.
 */
import { Either, ParseResult, Schema } from "effect"
import { InvalidRequest } from "../domain/Errors.js"
import { orTooDeep } from "../domain/OpenAi.js"
import type { Strategy } from "../domain/Routing.js"
import type { ProviderPrefs } from "./Rank.js"

const Ids = Schema.Array(Schema.String)
const Price = Schema.NullOr(Schema.Number.pipe(Schema.nonNegative()))

const ProviderField = Schema.Struct({
  order: Schema.optional(Schema.NullOr(Ids)),
  only: Schema.optional(Schema.NullOr(Ids)),
  ignore: Schema.optional(Schema.NullOr(Ids)),
  allow_fallbacks: Schema.optional(Schema.NullOr(Schema.Boolean)),
  sort: Schema.optional(Schema.NullOr(Schema.Literal("price", "throughput", "latency"))),
  require_parameters: Schema.optional(Schema.NullOr(Schema.Boolean)),
  max_price: Schema.optional(Schema.NullOr(Schema.Struct({ prompt: Schema.optional(Price), completion: Schema.optional(Price) })))
})

const decodeProvider = Schema.decodeUnknownEither(ProviderField, { errors: "first", onExcessProperty: "ignore" })
/**
 * The most ids a `models` fallback list may name. Each is resolved on the request path and noted in
 * its decision; without a bound, a 2 MB list of unknown ids held the event loop for ~2 s.
 */
export const maxFallbackModels = 64

const decodeModels = Schema.decodeUnknownEither(
  Schema.Array(Schema.String.pipe(Schema.minLength(1))).pipe(
    Schema.maxItems(maxFallbackModels, { message: () => `lists at most ${maxFallbackModels} models` })
  ),
  { errors: "first" }
)

const invalid = (field: string, error: ParseResult.ParseError): InvalidRequest => {
  const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
  const path = (issue?.path ?? []).map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("")
  const param = `${field}${path}`
  return new InvalidRequest({ message: `Invalid value for '${param}': ${issue?.message ?? "invalid"}`, param, code: "invalid_value" })
}

const sortStrategy: Record<"price" | "throughput" | "latency", Strategy> = { price: "cost", latency: "latency", throughput: "latency" }

/** The body's `provider` object as preferences; `null` when absent. */
export const prefsOf = (body: { readonly provider?: unknown }): ProviderPrefs | null | InvalidRequest => {
  if (body.provider === undefined || body.provider === null) return null
  const decoded = orTooDeep(body.provider, (v) => Either.mapLeft(decodeProvider(v), (e) => invalid("provider", e)))
  if (Either.isLeft(decoded)) return decoded.left
  const p = decoded.right
  return {
    order: p.order ?? null,
    only: p.only ?? null,
    ignore: p.ignore ?? null,
    allowFallbacks: p.allow_fallbacks ?? true,
    sort: p.sort == null ? null : sortStrategy[p.sort],
    requireParameters: p.require_parameters ?? false,
    maxPrice: p.max_price == null ? null : { prompt: p.max_price.prompt ?? null, completion: p.max_price.completion ?? null }
  }
}

/** The body's `models` fallback list; `null` when absent. */
export const modelsOf = (body: { readonly models?: unknown }): ReadonlyArray<string> | null | InvalidRequest => {
  if (body.models === undefined || body.models === null) return null
  const decoded = orTooDeep(body.models, (v) => Either.mapLeft(decodeModels(v), (e) => invalid("models", e)))
  return Either.isLeft(decoded) ? decoded.left : decoded.right
}

/**
 * OpenRouter lets `models: [...]` stand alone; its first entry is then the model. Fills `model` in
 * place, before the body is validated, on every edge that takes a request body.
 */
export const modelFromModels = (body: Record<string, unknown>): void => {
  if (body.model === undefined && Array.isArray(body.models) && typeof body.models[0] === "string") body.model = body.models[0]
}
