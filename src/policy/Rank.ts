/**
 * Pure policy decisions: what a request needs, which candidates can serve it, and in what order
 * they are tried. No I/O, no clock and no randomness: the same inputs give the same decision in
 * every run and every process, which is what makes the router explainable.
 */
import { createHash } from "node:crypto"
import type { ChatCompletionRequest, EmbeddingRequest } from "../domain/OpenAi.js"
import { byPriority, type Candidate, inBaseOrder, pinnedId } from "../domain/Provider.js"
import type { RoutingConfig, Strategy } from "../domain/Routing.js"

// ---------------------------------------------------------------------------------------------
// Needs

/** What a request needs from a backend, derived from the request alone. */
export interface Needs {
  readonly endpoint: "chat" | "embeddings"
  readonly stream: boolean
  readonly tools: boolean
  readonly vision: boolean
  /** `response_format: {type: "json_schema"}`. */
  readonly jsonSchema: boolean
  /** Estimated prompt tokens (see `estimateChatTokens`); computed only when a decision asks. */
  readonly promptTokens: () => number
  /**
   * The tokens that must fit one context window, when that is not the whole prompt: an embeddings
   * model takes each input on its own, so its longest input. Omitted: `promptTokens`.
   */
  readonly windowTokens?: (() => number) | undefined
  /** `max_completion_tokens` (else `max_tokens`) as the client sent it, or `null`. */
  readonly maxTokens: number | null
}

const lazy = (f: () => number): (() => number) => {
  let v = -1
  return () => (v === -1 ? (v = f()) : v)
}

/** Tokens counted for each image part: a flat guess, since the real cost depends on the model. */
export const tokensPerImage = 1000
/** Tokens counted for each message's role and framing. */
export const tokensPerMessage = 4

const isImagePart = (type: unknown) => type === "image_url" || type === "input_image" || type === "image"

/** The first unit of a character `quarterTokens` counts as a token (the ranges of its loop). */
const wideChar = /[\u1100-\u11ff\u2e80-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\ud840-\ud88f]/

/**
 * The size of `s` in quarter tokens: 1 per UTF-16 unit (so ASCII is characters / 4, as before), 4
 * per character of the scripts tokenizers spend about a token per character on: CJK ideographs
 * (with the supplementary ones, a surrogate pair counted once), CJK punctuation, kana, Hangul and
 * fullwidth forms. Every other script (Latin, Cyrillic, Greek, Arabic, Thai, emoji …) stays at
 * 1 per unit: an overestimate would drop a candidate that fits, while an underestimate only costs
 * the upstream's refusal and a move to a larger window. One pass, no allocation.
 */
export const quarterTokens = (s: string): number => {
  // Most text has none of these. Finding that is near-instant for a Latin-1 string and about three
  // times as fast as the loop for others (measured), and the loop starts at the first one.
  const from = s.search(wideChar)
  if (from === -1) return s.length
  const n = s.length
  let q = n
  for (let i = from; i < n; i++) {
    const c = s.charCodeAt(i)
    // Below U+1100 (ASCII, Latin, Greek, Cyrillic, Arabic, Indic, Thai …): the common case.
    if (c < 0x1100) continue
    if (
      c <= 0x11ff || // Hangul Jamo
      (c >= 0x2e80 && c <= 0x9fff) || // CJK radicals, punctuation, kana, Bopomofo, enclosed, Ext. A, unified ideographs
      (c >= 0xa960 && c <= 0xa97f) || // Hangul Jamo Extended-A
      (c >= 0xac00 && c <= 0xd7ff) || // Hangul syllables, Jamo Extended-B
      (c >= 0xf900 && c <= 0xfaff) || // CJK compatibility ideographs
      (c >= 0xfe30 && c <= 0xfe4f) || // CJK compatibility forms
      (c >= 0xff00 && c <= 0xffef) // halfwidth and fullwidth forms
    ) {
      q += 3
    } else if (c >= 0xd840 && c <= 0xd88f) {
      // The high half of U+20000–U+33FFF (CJK Extensions B–H): with its low half, 4 in all.
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        q += 2
        i++
      }
    }
  }
  return q
}

/**
 * A cheap prompt-size estimate: text in tokens at characters / 4 (OpenAI's rule of thumb for
 * English) and one per CJK, kana or Hangul character (see `quarterTokens`), plus 4 tokens per
 * message and 1,000 per image, plus the tool definitions' JSON measured as text. It runs in
 * microseconds; it is not a tokenizer, so the context gate only drops a candidate when the
 * estimate exceeds its window, and the upstream's own refusal (`context_too_long`) stays the
 * final word.
 */
export const estimateChatTokens = (request: ChatCompletionRequest): number => {
  let quarters = 0
  let tokens = 0
  for (const m of request.messages) {
    tokens += tokensPerMessage
    const content = m.content
    if (typeof content === "string") quarters += quarterTokens(content)
    else if (Array.isArray(content)) {
      for (const part of content) {
        const p = part as { type?: unknown; text?: unknown }
        if (isImagePart(p?.type)) tokens += tokensPerImage
        else if (typeof p?.text === "string") quarters += quarterTokens(p.text)
      }
    }
    const calls = m.tool_calls
    if (Array.isArray(calls)) {
      for (const call of calls) {
        const f = (call as { function?: { name?: unknown; arguments?: unknown } })?.function
        if (typeof f?.arguments === "string") quarters += quarterTokens(f.arguments)
        if (typeof f?.name === "string") quarters += quarterTokens(f.name)
      }
    }
  }
  if (request.tools !== undefined && request.tools !== null && request.tools.length > 0) quarters += quarterTokens(JSON.stringify(request.tools))
  return tokens + Math.ceil(quarters / 4)
}

/** One element of an embeddings `input`, in tokens: a text estimated, a token id, a list of token ids. */
const inputTokens = (item: string | number | ReadonlyArray<number>): number =>
  typeof item === "string" ? Math.ceil(quarterTokens(item) / 4) : typeof item === "number" ? 1 : item.length

export const estimateEmbeddingTokens = (request: EmbeddingRequest): number => {
  const input = request.input
  if (typeof input === "string") return inputTokens(input)
  let n = 0
  for (const item of input) n += inputTokens(item)
  return n
}

/** The estimate of an embeddings request's longest input: each must fit the model's window. */
export const estimateLongestEmbeddingInput = (request: EmbeddingRequest): number => {
  const input = request.input
  if (typeof input === "string") return inputTokens(input)
  // A flat array of numbers is one input of token ids.
  if (input.length > 0 && typeof input[0] === "number") return input.length
  let n = 0
  for (const item of input) n = Math.max(n, inputTokens(item))
  return n
}

/** The tokens that must fit one context window (see `Needs.windowTokens`). */
export const windowNeed = (needs: Needs): number => (needs.windowTokens ?? needs.promptTokens)()

const hasImagePart = (content: unknown): boolean => {
  if (!Array.isArray(content)) return false
  for (const part of content) if (isImagePart((part as { type?: unknown })?.type)) return true
  return false
}

const positiveInt = (v: unknown): number | null => (typeof v === "number" && Number.isInteger(v) && v > 0 ? v : null)

/** OpenAI's older function calling (`functions`), which some agent frameworks still send. */
const legacyFunctions = (request: ChatCompletionRequest): boolean => {
  const functions = (request as { readonly functions?: unknown }).functions
  return Array.isArray(functions) && functions.length > 0
}

export const needsOfChat = (request: ChatCompletionRequest): Needs => {
  let vision = false
  for (const m of request.messages) {
    if (hasImagePart(m.content)) {
      vision = true
      break
    }
  }
  const format = request.response_format as { type?: unknown } | null | undefined
  return {
    endpoint: "chat",
    stream: request.stream === true,
    tools: (request.tools !== undefined && request.tools !== null && request.tools.length > 0) || legacyFunctions(request),
    vision,
    jsonSchema: format?.type === "json_schema",
    promptTokens: lazy(() => estimateChatTokens(request)),
    maxTokens: positiveInt(request.max_completion_tokens) ?? positiveInt(request.max_tokens)
  }
}

export const needsOfEmbeddings = (request: EmbeddingRequest): Needs => ({
  endpoint: "embeddings",
  stream: false,
  tools: false,
  vision: false,
  jsonSchema: false,
  promptTokens: lazy(() => estimateEmbeddingTokens(request)),
  windowTokens: lazy(() => estimateLongestEmbeddingInput(request)),
  maxTokens: null
})

/** No needs at all: what a caller that knows nothing of the request passes. */
export const noNeeds: Needs = {
  endpoint: "chat",
  stream: false,
  tools: false,
  vision: false,
  jsonSchema: false,
  promptTokens: () => 0,
  maxTokens: null
}

// ---------------------------------------------------------------------------------------------
// Request preferences (OpenRouter's `provider` object)

/** OpenRouter's `provider: {…}` routing preferences, as far as this router honours them. */
export interface ProviderPrefs {
  /** Providers tried first, in this order. */
  readonly order: ReadonlyArray<string> | null
  /** Only these providers. */
  readonly only: ReadonlyArray<string> | null
  readonly ignore: ReadonlyArray<string> | null
  /** `false`: only the providers in `order`. */
  readonly allowFallbacks: boolean
  /** `price` → cost, `latency` and `throughput` → latency. */
  readonly sort: Strategy | null
  /** Send the request as written: no `max_tokens` clamp. */
  readonly requireParameters: boolean
  /** USD per 1M tokens; a candidate whose known price is above either is dropped. */
  readonly maxPrice: { readonly prompt: number | null; readonly completion: number | null } | null
}

// ---------------------------------------------------------------------------------------------
// The state of the world, as the policy sees it

/** Why a candidate cannot be tried now, with the attempt outcome it is listed under. */
export interface Unavailable {
  readonly outcome: "circuit_open" | "misconfigured" | "rate_limited" | "out_of_credits"
  readonly reason: string
  /** When it may be tried again, when known (a half-open circuit's probe under way has no time). */
  readonly until?: number | undefined
}

export interface ProviderStats {
  /** Moving average of time to first byte, `null` without data. */
  readonly ewmaTtfbMs: number | null
  /** Successes / requests (0–1), `null` without data. */
  readonly successRate: number | null
}

export interface CreditState {
  /** Why it is out of credits now (`credits exhausted until …`), or `null`. */
  readonly exhausted: string | null
  /** Known remaining balance (USD), `null` when unknown. */
  readonly remaining: number | null
}

/**
 * A snapshot of health, credits and statistics. Reading it must not change anything (no probe
 * reserved), so explaining a request never affects the next one.
 */
export interface Conditions {
  readonly unavailable: (c: Candidate) => Unavailable | null
  readonly stats: (providerId: string) => ProviderStats
  readonly credits: (providerId: string) => CreditState
}

const noStats: ProviderStats = { ewmaTtfbMs: null, successRate: null }
const noCredits: CreditState = { exhausted: null, remaining: null }

/** Everything healthy, nothing measured: for callers without health or credit services. */
export const calm: Conditions = { unavailable: () => null, stats: () => noStats, credits: () => noCredits }

// ---------------------------------------------------------------------------------------------
// The decision

export interface DecisionInput {
  /** How the model id resolved: an alias (or a `models` list) keeps its written order. */
  readonly kind: "model" | "pinned" | "alias"
  readonly candidates: ReadonlyArray<Candidate>
  readonly needs: Needs
  readonly routing: RoutingConfig
  /** The alias's own strategy, which overrides the routing config's. */
  readonly aliasStrategy?: Strategy | null | undefined
  readonly prefs?: ProviderPrefs | null | undefined
  /** The session's pinned provider (`/admin/override`). */
  readonly pin?: string | null | undefined
  /**
   * Whose request this is (`sessionKeyOf`): the key of the session pin, and the `weighted`
   * strategy's key when it names an `X-Router-Session-Id` (see `weightedKey`).
   */
  readonly sessionKey?: string | null | undefined
  /** The body's OpenAI `user` field as sent: the `weighted` key without a session, when a non-empty string. */
  readonly user?: unknown
  /** The request's id (`x-request-id`, echoed or made): the `weighted` key without a session or `user`. */
  readonly requestId?: string | null | undefined
  readonly conditions: Conditions
}

export interface Ranked {
  readonly candidate: Candidate
  /** The strategy's score (priority, expected USD, ms, or weight), `null` when unknown. */
  readonly score: number | null
  /** The `max_tokens` this candidate is sent when lowered from the client's, else `null`. */
  readonly maxTokens: number | null
}

export interface Dropped {
  readonly candidate: Candidate
  readonly reason: string
  /** For health and credit gates: the attempt outcome it is listed under. */
  readonly outcome?: Unavailable["outcome"] | undefined
  /** Dropped by the context gate alone (it can do everything else the request needs): its window. */
  readonly contextWindow?: number | undefined
}

export interface Decision {
  readonly strategy: Strategy
  /** The client's `max_tokens`, which `Ranked.maxTokens` lowers for some candidates. */
  readonly maxTokensRequested: number | null
  readonly ranked: ReadonlyArray<Ranked>
  readonly dropped: ReadonlyArray<Dropped>
  /** What else shaped the order: a session pin, `provider.order`, clamps. */
  readonly notes: ReadonlyArray<string>
}

/** Output tokens assumed by the `cost` strategy when the request sets no limit. */
export const defaultExpectedOutputTokens = 256

const none: ReadonlyArray<never> = []

const idOf = (c: Candidate) => pinnedId(c.provider.id, c.upstreamModel)

const lower = (ids: ReadonlyArray<string> | null): ReadonlySet<string> | null => (ids === null ? null : new Set(ids.map((s) => s.toLowerCase())))

const fmtPrice = (n: number) => String(Math.round(n * 1e4) / 1e4)

/**
 * Why a candidate cannot serve this request, or `null`. Unknown capabilities (`null`) pass: only an
 * explicit `false` from the config or the upstream's model list rules a candidate out.
 */
export const unfit = (c: Candidate, needs: Needs): string | null => {
  const other = unfitButForSize(c, needs)
  if (other !== null) return other
  // The prompt is estimated only for a candidate that could otherwise serve.
  const window = windowTooSmall(c, needs)
  return window === null ? null : tooLongReason(window, needs)
}

/** The candidate's known window, when the prompt estimate alone does not fit it; else `null`. */
const windowTooSmall = (c: Candidate, needs: Needs): number | null => {
  const window = c.info?.contextWindow ?? null
  return window !== null && windowNeed(needs) >= window ? window : null
}

const tooLongReason = (window: number, needs: Needs): string => `context ${window} < needed ${windowNeed(needs)}`

/** What `unfit` checks before the prompt's size. */
const unfitButForSize = (c: Candidate, needs: Needs): string | null => {
  const info = c.info
  const p = c.provider
  if (needs.endpoint === "embeddings" ? info?.embeddings === false : info?.embeddings === true) {
    return needs.endpoint === "embeddings" ? "not an embeddings model" : "an embeddings model, not a chat model"
  }
  if (needs.stream && p.supportsStreaming === false) return "does not support streaming"
  if (needs.tools && (info?.tools ?? p.supportsTools) === false) return "does not support tools"
  if (needs.vision && (info?.vision ?? p.supportsMultimodal) === false) return "does not support images"
  if (needs.jsonSchema && info?.jsonSchema === false) return "does not support json_schema response_format"
  return null
}

/** The most output tokens a candidate can give after the prompt, or `null` when unbounded/unknown. */
const outputRoom = (c: Candidate, needs: Needs): number | null => {
  const info = c.info
  if (info === undefined) return null
  const byContext = info.contextWindow === null ? null : info.contextWindow - needs.promptTokens()
  const max = info.maxOutputTokens
  return byContext === null ? max : max === null ? byContext : Math.min(max, byContext)
}

/** 0..1 from a hash of (key, candidate): the rendezvous hash's draw, stable across processes. */
const draw = (key: string, c: Candidate): number => {
  const h = createHash("sha256").update(key).update("\u0000").update(idOf(c)).digest()
  // 48 bits are plenty; +0.5 keeps it strictly inside (0, 1) so the logarithm is finite.
  return (h.readUIntBE(0, 6) + 0.5) / 2 ** 48
}

/** Highest-random-weight (rendezvous) score: the largest wins, in proportion to `weight`. */
export const rendezvousScore = (key: string, c: Candidate): number => c.provider.weight / -Math.log(draw(key, c))

/**
 * How a session key made from an `X-Router-Session-Id` begins (`sessionKeyOf` makes it); its other
 * kind (`callerKeyPrefix`) hashes the caller's key.
 */
export const sessionIdPrefix = "session:"

/** How a session key made from the hash of the caller's key begins (`sessionKeyOf`). */
export const callerKeyPrefix = "key:"

/** Noted when `weighted` had nothing to tell this request from others (`/admin/explain`, a library call without an id). */
export const noWeightedKeyNote =
  "weighted: no X-Router-Session-Id, user or request id, so ranked as for an empty key (requests without a session or user are spread by request id)"

/**
 * What the `weighted` strategy hashes: the session (an `X-Router-Session-Id`, or any `sessionKey` a
 * library caller gives, so a session keeps its provider), else the body's `user` (a stable per-user
 * id from Letta and many clients), else the request id, so anonymous traffic spreads in proportion
 * to the weights instead of all hashing one string. A hash of the caller's key is not used: there
 * is one client key (or none), which every caller presents alike. The kinds are prefixed so a
 * `user` can never pass for a session or a request id. `null` when there is none of them.
 */
export const weightedKey = (input: Pick<DecisionInput, "sessionKey" | "user" | "requestId">): string | null => {
  const session = input.sessionKey
  if (session != null && session !== "" && !session.startsWith(callerKeyPrefix)) {
    return session.startsWith(sessionIdPrefix) ? session : `${sessionIdPrefix}${session}`
  }
  const user = input.user
  if (typeof user === "string" && user !== "") return `user:${user.length > 256 ? user.slice(0, 256) : user}`
  const id = input.requestId
  return id != null && id !== "" ? `request:${id}` : null
}

const strategyOf = (input: DecisionInput): Strategy => input.prefs?.sort ?? input.aliasStrategy ?? input.routing.strategy

/**
 * The decision: gates, then the strategy's order, then `provider.order`, then the session's pin.
 * Ties always fall back to the base order (an alias's written order, else `provider_order`, then
 * priority, then provider id), so no two runs can differ.
 */
export const decide = (input: DecisionInput): Decision => {
  const { candidates, needs, routing, conditions } = input
  const prefs = input.prefs ?? null
  const strategy = strategyOf(input)
  const notes: Array<string> = []
  const dropped: Array<Dropped> = []
  const kept: Array<{ candidate: Candidate; score: number | null; maxTokens: number | null }> = []

  const only = lower(prefs?.only ?? null)
  const ignore = lower(prefs?.ignore ?? null)
  const order = prefs?.order ?? null
  const orderIds = lower(order)
  const failover = routing.failover
  const clampable = needs.maxTokens !== null && prefs?.requireParameters !== true

  // Candidates are gated in the base order, so the dropped list and the notes come out the same
  // whatever order the candidates arrived in.
  for (const c of baseOrder(input, candidates)) {
    const pid = c.provider.id
    const key = pid.toLowerCase()
    let reason: string | null = null
    let outcome: Unavailable["outcome"] | undefined
    let contextWindow: number | undefined
    if (only !== null && !only.has(key)) reason = "not in provider.only"
    else if (ignore?.has(key)) reason = "in provider.ignore"
    else if (orderIds !== null && prefs?.allowFallbacks === false && !orderIds.has(key)) reason = "not in provider.order (allow_fallbacks: false)"
    else {
      reason = unfitButForSize(c, needs)
      if (reason === null) {
        contextWindow = windowTooSmall(c, needs) ?? undefined
        if (contextWindow !== undefined) reason = tooLongReason(contextWindow, needs)
      }
    }
    if (reason === null && prefs?.maxPrice != null && c.info?.pricing != null) {
      const { prompt, completion } = prefs.maxPrice
      const price = c.info.pricing
      if ((prompt !== null && price.inputPer1M > prompt) || (completion !== null && price.outputPer1M > completion)) {
        reason = `price ${fmtPrice(price.inputPer1M)}/${fmtPrice(price.outputPer1M)} per 1M above provider.max_price`
      }
    }
    if (reason === null) {
      const down = conditions.unavailable(c)
      if (down !== null) {
        reason = down.reason
        outcome = down.outcome
      }
    }
    if (reason === null) {
      const credits = conditions.credits(pid)
      if (credits.exhausted !== null) {
        reason = credits.exhausted
        outcome = "out_of_credits"
      } else {
        for (const rule of failover) {
          if (rule.providerId !== pid) continue
          if (rule.condition === "credit_threshold" && credits.remaining !== null && credits.remaining < rule.value) {
            reason = `credits ${fmtPrice(credits.remaining)} below threshold ${fmtPrice(rule.value)}`
            outcome = "out_of_credits"
            break
          }
          if (rule.condition === "health") {
            const rate = conditions.stats(pid).successRate
            if (rate !== null && rate < rule.value) {
              reason = `success rate ${rate.toFixed(2)} below ${rule.value}`
              outcome = "circuit_open"
              break
            }
          }
        }
      }
    }
    if (reason !== null) {
      dropped.push(outcome === undefined ? contextWindow === undefined ? { candidate: c, reason } : { candidate: c, reason, contextWindow } : { candidate: c, reason, outcome })
      continue
    }
    let maxTokens: number | null = null
    if (clampable) {
      const room = outputRoom(c, needs)
      if (room !== null && needs.maxTokens! > room) {
        maxTokens = room
        notes.push(`${idOf(c)}: clamped max_tokens ${needs.maxTokens}→${room}`)
      }
    }
    kept.push({ candidate: c, score: null, maxTokens })
  }

  // `kept` is in the base order every strategy falls back to on ties. Only `weighted` needs a key.
  let key = ""
  if (strategy === "weighted") {
    const k = weightedKey(input)
    if (k === null) notes.push(noWeightedKeyNote)
    else key = k
  }
  for (let i = 0; i < kept.length; i++) {
    const r = kept[i]!
    r.score = strategy === "priority"
      ? i
      : strategy === "cost"
      ? expectedCost(r.candidate, needs, r.maxTokens)
      : strategy === "latency"
      ? conditions.stats(r.candidate.provider.id).ewmaTtfbMs
      : rendezvousScore(key, r.candidate)
  }
  let ranked: ReadonlyArray<Ranked> = sortByScore(strategy, kept)

  if (order !== null && order.length > 0) {
    const position = new Map(order.map((id, i) => [id.toLowerCase(), i] as const))
    ranked = stablePartition(ranked, (r) => position.get(r.candidate.provider.id.toLowerCase()) ?? null)
    notes.push(`provider.order: ${order.join(",")}`)
  }

  const pin = input.pin ?? null
  if (pin !== null) {
    if (ranked.some((r) => r.candidate.provider.id === pin)) {
      ranked = stablePartition(ranked, (r) => (r.candidate.provider.id === pin ? 0 : null))
      notes.push(`session pin: ${pin}`)
    } else {
      const why = dropped.find((d) => d.candidate.provider.id === pin)
      notes.push(why === undefined ? `session pin ${pin} does not serve this model` : `session pin ${pin} cannot serve this request: ${why.reason}`)
    }
  }
  return { strategy, maxTokensRequested: needs.maxTokens, ranked, dropped: dropped.length === 0 ? none : dropped, notes: notes.length === 0 ? none : notes }
}

/** An alias's written order; otherwise `provider_order`, then priority (cheapest first on ties with cost_optimization), then id. */
const baseOrder = (input: DecisionInput, candidates: ReadonlyArray<Candidate>): ReadonlyArray<Candidate> =>
  input.kind === "alias" || candidates.length < 2 ? candidates : inBaseOrder(input.routing, candidates)

/** The USD a request is expected to cost at this candidate, `null` when its price is unknown. */
export const expectedCost = (c: Candidate, needs: Needs, maxTokens: number | null): number | null => {
  const p = c.info?.pricing
  if (p == null) return null
  // Embeddings produce no output tokens.
  const output = needs.endpoint === "embeddings" ? 0 : maxTokens ?? needs.maxTokens ?? defaultExpectedOutputTokens
  return (needs.promptTokens() * p.inputPer1M + output * p.outputPer1M) / 1e6
}

/**
 * Sorts by score, ties in the base order. `cost` ascending, unknown prices last; `weighted`
 * descending. `latency` ascending among the measured candidates only: a candidate without data
 * keeps its place in the base order, so a new provider is tried (and measured) in its turn
 * instead of never, and the measured ones are sorted among the other places. `priority`'s score is
 * the base position itself.
 */
const sortByScore = (strategy: Strategy, scored: ReadonlyArray<Ranked>): ReadonlyArray<Ranked> => {
  if (strategy === "priority" || scored.length < 2) return scored
  if (strategy === "latency") {
    // Array.prototype.sort is stable, so equal scores keep the base order.
    const measured = scored.filter((r) => r.score !== null).sort((a, b) => a.score! - b.score!)
    let k = 0
    return scored.map((r) => (r.score === null ? r : measured[k++]!))
  }
  const sign = strategy === "weighted" ? -1 : 1
  return scored
    .map((r, i) => [r, i] as const)
    .sort(([a, i], [b, j]) => {
      if (a.score === null || b.score === null) return a.score === b.score ? i - j : a.score === null ? 1 : -1
      return a.score !== b.score ? sign * (a.score - b.score) : i - j
    })
    .map(([r]) => r)
}

/** Items with a rank (smaller first) move to the front in that order; the rest keep theirs. */
const stablePartition = <A>(items: ReadonlyArray<A>, rank: (a: A) => number | null): ReadonlyArray<A> => {
  const front: Array<readonly [A, number, number]> = []
  const rest: Array<A> = []
  items.forEach((a, i) => {
    const r = rank(a)
    if (r === null) rest.push(a)
    else front.push([a, r, i])
  })
  if (front.length === 0) return items
  front.sort((x, y) => x[1] - y[1] || x[2] - y[2])
  return [...front.map(([a]) => a), ...rest]
}

/** A decision as JSON: what `/admin/explain` shows and each request's record keeps. */
export const decisionJson = (d: Decision) => ({
  strategy: d.strategy,
  ranked: d.ranked.map((r) => ({
    id: idOf(r.candidate),
    provider: r.candidate.provider.id,
    model: r.candidate.upstreamModel,
    score: r.score,
    ...(r.maxTokens === null ? {} : { max_tokens: { requested: d.maxTokensRequested, sent: r.maxTokens } })
  })),
  dropped: d.dropped.map((x) => ({
    id: idOf(x.candidate),
    provider: x.candidate.provider.id,
    model: x.candidate.upstreamModel,
    reason: x.reason,
    ...(x.outcome === undefined ? {} : { outcome: x.outcome })
  })),
  notes: d.notes
})

/**
 * A reason as the short form can carry it: its separators (`;` between parts, `,` between
 * candidates, parentheses around a reason) would otherwise split it, and reasons quote upstream
 * error bodies. The decision's JSON (`/admin/explain`, the request record) keeps them as they are.
 */
const inSummary = (reason: string) => reason.replace(/\(/g, "[").replace(/\)/g, "]").replace(/[,;]/g, " /")

const summaryOf = (d: Decision): string => {
  const parts = [`strategy=${d.strategy}`, `order=${d.ranked.map((r) => idOf(r.candidate)).join(",")}`]
  if (d.dropped.length > 0) parts.push(`dropped=${d.dropped.map((x) => `${idOf(x.candidate)}(${inSummary(x.reason)})`).join(",")}`)
  const clamped = d.ranked.filter((r) => r.maxTokens !== null)
  if (clamped.length > 0) parts.push(`clamped=${clamped.map((r) => `${idOf(r.candidate)}(max_tokens ${d.maxTokensRequested}->${r.maxTokens})`).join(",")}`)
  const pin = d.notes.find((n) => n.startsWith("session pin: "))
  if (pin !== undefined) parts.push(`pin=${pin.slice("session pin: ".length)}`)
  const text = parts.join("; ").replace(/[^\x20-\x7e]/g, "?")
  return text.length > 1024 ? `${text.slice(0, 1021)}...` : text
}

interface Rendered {
  readonly candidates: ReadonlyArray<Candidate>
  readonly summary: string
  readonly json: string
}

/**
 * The two texts of a plain decision (priority order, nothing dropped, clamped or noted) depend only
 * on its candidates, which the model index shares between requests: they are rendered once per
 * candidate list rather than on every request, the common case on the hot path.
 */
const rendered = new WeakMap<Candidate, Array<Rendered>>()

const plainTexts = (d: Decision): Rendered | null => {
  if (d.strategy !== "priority" || d.dropped.length > 0 || d.notes.length > 0 || d.ranked.length === 0) return null
  for (const r of d.ranked) if (r.maxTokens !== null) return null
  const first = d.ranked[0]!.candidate
  let list = rendered.get(first)
  if (list !== undefined) {
    for (const e of list) {
      if (e.candidates.length === d.ranked.length && e.candidates.every((c, i) => c === d.ranked[i]!.candidate)) return e
    }
  } else {
    list = []
    rendered.set(first, list)
  }
  const e: Rendered = { candidates: d.ranked.map((r) => r.candidate), summary: summaryOf(d), json: JSON.stringify(decisionJson(d)) }
  // Bounded: one candidate heads few distinct lists (its model, its aliases).
  if (list.length >= 16) list.shift()
  list.push(e)
  return e
}

/** The short form of a decision for the `X-Router-Decision` header (ASCII, at most ~1 KiB). */
export const summary = (d: Decision): string => plainTexts(d)?.summary ?? summaryOf(d)

/** `decisionJson` as text, for the request record. */
export const decisionText = (d: Decision): string => plainTexts(d)?.json ?? JSON.stringify(decisionJson(d))

export { byPriority }
