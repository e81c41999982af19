/**
 * What the router knows about a backend, once configuration (file, environment, database) has been
 * resolved. Routing code only ever sees these plain values.
 */
import { Redacted, Schema } from "effect"
import type { ModelInfo } from "./Capabilities.js"
import type { RoutingConfig, Strategy } from "./Routing.js"

export const ProviderType = Schema.Literal("venice", "featherless", "openai_compat")
export type ProviderType = typeof ProviderType.Type

/** Where a provider or alias record came from: the YAML file (rewritten on every start) or the config API. */
export const RecordSource = Schema.Literal("file", "api")
export type RecordSource = typeof RecordSource.Type

export interface Timeouts {
  readonly connectMs: number
  readonly firstByteMs: number
  /** Longest silence between two chunks of a streamed answer. */
  readonly idleMs: number
  readonly totalMs: number
}

export const defaultTimeouts: Timeouts = { connectMs: 5_000, firstByteMs: 60_000, idleMs: 30_000, totalMs: 600_000 }

/** Connections the router opens to one provider at most, unless its `max_connections` says otherwise. */
export const defaultMaxConnections = 256

export interface ProviderSpec {
  readonly id: string
  /** Base URL of the OpenAI-compatible API, without a trailing slash (`https://api.venice.ai/api/v1`). */
  readonly endpoint: string
  readonly apiKey: Redacted.Redacted<string> | null
  readonly type: ProviderType
  /** The upstream model ids it serves; `null` means "ask the provider" (`GET {endpoint}/models`). */
  readonly models: ReadonlyArray<string> | null
  /** Lower is tried first. */
  readonly priority: number
  /** Capability flags: `false` rules the provider out for requests that need it; `null` means unknown (allowed). */
  readonly supportsTools: boolean | null
  readonly supportsStreaming: boolean | null
  readonly supportsMultimodal: boolean | null
  readonly timeouts: Timeouts
  /**
   * The most requests in flight to this provider at once (its connection pool's size). Further
   * requests wait in the router for a connection, and move on to the next candidate after a wait
   * as long as `timeouts.firstByteMs` (outcome `busy`).
   */
  readonly maxConnections: number
  /** Start the next candidate as well when this one has sent no first byte after this long. */
  readonly hedgeAfterMs: number | null
  /** Share of traffic under the `weighted` strategy. */
  readonly weight: number
  /** What the config says about its models; wins over discovery. */
  readonly modelOverrides: Readonly<Record<string, Partial<ModelInfo>>>
  readonly source: RecordSource
}

export interface AliasSpec {
  readonly name: string
  /** Ordered fallback chain: `provider+model` ids or bare model ids. */
  readonly targets: ReadonlyArray<string>
  /** Hedging for requests to this alias: overrides the providers' own setting. */
  readonly hedgeAfterMs: number | null
  /** How this alias's targets are ordered; `null` keeps the order written. */
  readonly strategy: Strategy | null
  readonly source: RecordSource
}

/** The providers, aliases and routing config in force, whatever their source. */
export interface ConfigState {
  readonly providers: ReadonlyArray<ProviderSpec>
  readonly aliases: ReadonlyArray<AliasSpec>
  readonly routing: RoutingConfig
}

/** One (provider, upstream model) pair a request may be sent to. */
export interface Candidate {
  readonly provider: ProviderSpec
  readonly upstreamModel: string
  /** What is known of this model at this provider (config, flags, discovery); absent: unknown. */
  readonly info?: ModelInfo | undefined
}

/** Lower `priority` first, ties by provider id: a total order, so no two runs differ. */
export const byPriority = (a: Candidate, b: Candidate): number =>
  a.provider.priority - b.provider.priority || (a.provider.id < b.provider.id ? -1 : a.provider.id > b.provider.id ? 1 : 0)

const cheapness = (c: Candidate): number => {
  const p = c.info?.pricing
  return p == null ? Number.POSITIVE_INFINITY : p.inputPer1M + p.outputPer1M
}

const byId = (a: Candidate, b: Candidate) => {
  const ia = pinnedId(a.provider.id, a.upstreamModel)
  const ib = pinnedId(b.provider.id, b.upstreamModel)
  return ia < ib ? -1 : ia > ib ? 1 : 0
}

/**
 * A bare model's candidates in the routing config's base order: `provider_order` first, then
 * priority (cheapest first on ties with `cost_optimization`), then id. The policy's order for a bare
 * id, and the index's for a bare id inside an alias's chain, so both try its providers alike.
 */
export const inBaseOrder = (routing: RoutingConfig, candidates: ReadonlyArray<Candidate>): Array<Candidate> => {
  const listed = new Map(routing.providerOrder.map((id, i) => [id, i] as const))
  const cost = routing.costOptimization
  return [...candidates].sort((a, b) => {
    const la = listed.get(a.provider.id) ?? Number.POSITIVE_INFINITY
    const lb = listed.get(b.provider.id) ?? Number.POSITIVE_INFINITY
    if (la !== lb) return la < lb ? -1 : 1
    const p = a.provider.priority - b.provider.priority
    if (p !== 0) return p
    if (cost) {
      const ca = cheapness(a)
      const cb = cheapness(b)
      if (ca !== cb) return ca < cb ? -1 : 1
    }
    return byPriority(a, b) || byId(a, b)
  })
}

/** `provider+model`: the id that pins a provider. The split is at the first `+`. */
export const pinnedId = (providerId: string, model: string): string => `${providerId}+${model}`

export const splitPinned = (id: string): readonly [provider: string, model: string] | null => {
  const at = id.indexOf("+")
  return at > 0 && at < id.length - 1 ? [id.slice(0, at), id.slice(at + 1)] : null
}

/**
 * `text` without the provider's key: an upstream's error message may quote the key it refused,
 * whole or (cut at a detail's length limit) its beginning.
 */
export const withoutKey = (text: string, key: Redacted.Redacted<string> | null): string => {
  const secret = key === null ? "" : Redacted.value(key)
  if (secret.length < 4) return text
  const out = text.split(secret).join("<redacted>")
  for (let n = secret.length - 1; n >= 4; n--) {
    if (out.endsWith(secret.slice(0, n))) return `${out.slice(0, out.length - n)}<redacted>`
  }
  return out
}

/** An upstream's answer without the provider's key in it, every other byte as it came. */
export const bodyWithoutKey = (body: Uint8Array, key: Redacted.Redacted<string> | null): Uint8Array => {
  const secret = key === null ? "" : Redacted.value(key)
  if (secret.length < 4) return body
  const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
  const needle = Buffer.from(secret)
  let at = bytes.indexOf(needle)
  if (at === -1) return body
  const parts: Array<Buffer> = []
  let from = 0
  for (; at !== -1; at = bytes.indexOf(needle, from)) {
    parts.push(bytes.subarray(from, at), redactedMark)
    from = at + needle.length
  }
  parts.push(bytes.subarray(from))
  return new Uint8Array(Buffer.concat(parts))
}

const redactedMark = Buffer.from("<redacted>")
