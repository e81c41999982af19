/**
 * The YAML configuration file, compatible with the original sanctum-router: parsing, `${VAR}`
 * substitution from the environment, validation, and conversion to `ProviderSpec`s.
 * JSON is valid YAML, so a JSON file works too.
 */
import { Effect, ParseResult, Redacted, Schema } from "effect"
import * as Yaml from "yaml"
import { readFile } from "node:fs/promises"
import type { ModelInfo } from "../domain/Capabilities.js"
import { defaultRouting, namesEachOnce, type RoutingConfig, routingFromJson } from "../domain/Routing.js"
import {
  type AliasSpec,
  type ConfigState,
  defaultMaxConnections,
  defaultTimeouts,
  type ProviderSpec,
  ProviderType,
  splitPinned
} from "../domain/Provider.js"
import { maxBusyPollUs } from "./Settings.js"

/** The file could not be read, parsed or validated. The message names the file and the key path. */
export class ConfigFileError extends Schema.TaggedError<ConfigFileError>()("ConfigFileError", {
  path: Schema.String,
  message: Schema.String
}) {}

/**
 * Numbers and booleans also accept their text, because `${VAR}` substitution happens after YAML
 * parsing and yields strings: `port: ${PORT:-8480}` must work. Numbers are finite: YAML's `.inf`
 * (or `1e400`) would be stored in the database as `null`, which the next start cannot read.
 */
const NumberLike = Schema.transformOrFail(Schema.Union(Schema.Number, Schema.String), Schema.Number, {
  strict: true,
  decode: (value, _, ast) => {
    if (typeof value === "number") {
      return Number.isFinite(value)
        ? ParseResult.succeed(value)
        : ParseResult.fail(new ParseResult.Type(ast, value, `Expected a finite number, actual ${value}`))
    }
    const n = Number(value)
    return value.trim() !== "" && Number.isFinite(n)
      ? ParseResult.succeed(n)
      : ParseResult.fail(new ParseResult.Type(ast, value, `Expected a number, actual ${JSON.stringify(value)}`))
  },
  encode: ParseResult.succeed
}).annotations({ identifier: "number" })
const IntLike = NumberLike.pipe(Schema.int({ message: () => "must be an integer" }))
const BooleanLike = Schema.Union(
  Schema.Boolean,
  Schema.transform(Schema.Literal("true", "false"), Schema.Boolean, { strict: true, decode: (s) => s === "true", encode: (b) => (b ? "true" : "false") })
).annotations({ identifier: "boolean" })

const PositiveIntLike = IntLike.pipe(Schema.positive({ message: () => "must be a positive integer" }))
const NonNegative = NumberLike.pipe(Schema.nonNegative({ message: () => "must be 0 or more" }))

/** How candidates are ordered: see the README's "Routing" section. */
export const Strategy = Schema.Literal("priority", "cost", "latency", "weighted")
export type Strategy = typeof Strategy.Type

/** Milliseconds without a first byte before the next candidate is started as well (hedging). */
const HedgeAfterMs = IntLike.pipe(Schema.positive({ message: () => "must be a positive number of milliseconds" }))

const Seconds = NumberLike.pipe(Schema.positive({ message: () => "must be a positive number of seconds" }))

const Timeouts = Schema.Struct({
  connect: Schema.optional(Seconds),
  first_byte: Schema.optional(Seconds),
  /** Longest silence between two chunks of a streamed answer. */
  idle: Schema.optional(Seconds),
  total: Schema.optional(Seconds)
}).annotations({ identifier: "timeouts (a mapping of connect, first_byte, idle, total in seconds)" })

/**
 * An endpoint as an error message may show it: a query string (`?key=…`) or a `user:password@`
 * is where a key would sit, so neither is repeated.
 */
export const shownUrl = (s: string): string => {
  const cut = s.search(/[?#]/)
  const base = cut === -1 ? s : `${s.slice(0, cut)}${s[cut]}…`
  return base.replace(/^([^/]*\/\/)[^/]*@/, "$1…@")
}

/**
 * A provider's endpoint: the base the router appends `/chat/completions` and the like to, so a
 * query string or fragment would be lost, and so would a `user:password@` (the key goes in
 * `api_key`): refused rather than dropped without a word.
 */
const HttpUrl = Schema.String.pipe(
  Schema.filter((s) => {
    let u: URL
    try {
      u = new URL(s)
    } catch {
      return `must be an http:// or https:// URL, got '${shownUrl(s)}'`
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") return `must be an http:// or https:// URL, got '${shownUrl(s)}'`
    if (u.username !== "" || u.password !== "") return "must not carry a user or password (put the provider's key in api_key)"
    if (u.search !== "" || u.hash !== "" || s.includes("?") || s.includes("#")) {
      return `must be a base URL without a query string or fragment (the router appends /chat/completions and the like to it), got '${shownUrl(s)}'`
    }
    return true
  })
)

/**
 * Provider ids and alias names appear in `provider+model` ids and URLs: no `+`, no spaces. Checked
 * after decoding, because a Record whose key schema rejects a key drops that entry silently.
 */
const namePattern = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/

/** What the config says about one model of a provider; it wins over what discovery tells. */
export const ModelOverrideFile = Schema.Struct({
  context_length: Schema.optional(PositiveIntLike),
  max_output_tokens: Schema.optional(PositiveIntLike),
  supports_tools: Schema.optional(BooleanLike),
  supports_vision: Schema.optional(BooleanLike),
  supports_json_schema: Schema.optional(BooleanLike),
  supports_reasoning: Schema.optional(BooleanLike),
  /** USD per million tokens. */
  pricing: Schema.optional(Schema.Struct({ input: NonNegative, output: NonNegative }).annotations({ identifier: "pricing (input and output, USD per 1M tokens)" }))
}).annotations({ identifier: "model settings (a mapping)" })
export type ModelOverrideFile = typeof ModelOverrideFile.Type

export const ProviderFile = Schema.Struct({
  endpoint: HttpUrl,
  api_key: Schema.optional(Schema.NullOr(Schema.String.annotations({
    message: () => ({ message: "must be a string (in YAML, quote a key made of digits alone)", override: true })
  }))),
  provider_type: Schema.optional(ProviderType),
  models: Schema.optional(Schema.NullOr(Schema.Array(Schema.NonEmptyTrimmedString))),
  priority: Schema.optional(IntLike),
  supports_tools: Schema.optional(BooleanLike),
  supports_streaming: Schema.optional(BooleanLike),
  supports_multimodal: Schema.optional(BooleanLike),
  timeouts: Schema.optional(Schema.NullOr(Timeouts)),
  /**
   * The most requests in flight to the provider at once (default 256): a local server with a few
   * slots (llama.cpp's `--parallel`) gets no more, and the rest wait in the router.
   */
  max_connections: Schema.optional(PositiveIntLike),
  hedge_after_ms: Schema.optional(HedgeAfterMs),
  /** Share of traffic under the `weighted` strategy, relative to other providers (default 1). */
  weight: Schema.optional(NumberLike.pipe(Schema.positive({ message: () => "must be a positive number" }))),
  /** Per-model capabilities, limits and prices; they win over what discovery tells. */
  model_overrides: Schema.optional(Schema.NullOr(Schema.Record({ key: Schema.String, value: ModelOverrideFile })))
}).annotations({ identifier: "provider settings (a mapping with at least an endpoint)" })
export type ProviderFile = typeof ProviderFile.Type

const TargetList = Schema.Union(
  Schema.NonEmptyTrimmedString,
  Schema.NonEmptyArray(Schema.NonEmptyTrimmedString)
)

/** A chain of targets, or (to set options on it) a mapping with `targets`. */
const AliasTargets = Schema.Union(
  TargetList,
  Schema.Struct({ targets: TargetList, hedge_after_ms: Schema.optional(HedgeAfterMs), strategy: Schema.optional(Strategy) })
).annotations({ identifier: "a model id, a list of model ids, or a mapping with targets" })

const targetList = (t: typeof AliasTargets.Type): ReadonlyArray<string> => {
  const list = typeof t === "string" || Array.isArray(t) ? t : (t as { targets: typeof TargetList.Type }).targets
  return typeof list === "string" ? [list] : list
}

export const ServerFile = Schema.Struct({
  host: Schema.optional(Schema.NonEmptyTrimmedString),
  port: Schema.optional(IntLike.pipe(Schema.between(0, 65535, { message: (issue) => `must be a port number (0-65535), got ${String(issue.actual)}` }))),
  max_body_bytes: Schema.optional(IntLike.pipe(Schema.positive({ message: (issue) => `must be a positive number of bytes, got ${String(issue.actual)}` }))),
  request_retention_days: Schema.optional(
    IntLike.pipe(Schema.nonNegative({ message: (issue) => `must be a whole number of days (0 keeps every record), got ${String(issue.actual)}` }))
  ),
  drain_timeout: Schema.optional(NumberLike.pipe(Schema.nonNegative({ message: (issue) => `must be a number of seconds (0 or more), got ${String(issue.actual)}` }))),
  busy_poll_us: Schema.optional(
    IntLike.pipe(Schema.between(0, maxBusyPollUs, { message: (issue) => `must be a number of microseconds (0-${maxBusyPollUs}, 0 turns busy polling off), got ${String(issue.actual)}` }))
  )
}).annotations({ identifier: "server settings (a mapping)" })
export type ServerFile = typeof ServerFile.Type

const Fraction = NumberLike.pipe(Schema.between(0, 1, { message: () => "must be between 0 and 1" }))
const PositiveInt = IntLike.pipe(Schema.positive({ message: () => "must be a positive integer" }))
const Count = IntLike.pipe(Schema.nonNegative({ message: () => "must be 0 or more" }))

/** Active health checks (the original sanctum-router's `monitoring` section). */
export const MonitoringFile = Schema.Struct({
  health_check_interval: Schema.optional(Seconds),
  health_check_timeout: Schema.optional(Seconds),
  /** How many providers are checked at once. */
  health_check_concurrency: Schema.optional(PositiveInt)
}).annotations({ identifier: "monitoring settings (a mapping)" })
export type MonitoringFile = typeof MonitoringFile.Type

/** How failures are handled: breakers, cooldowns, retries and the end-to-end deadline. */
export const ResilienceFile = Schema.Struct({
  circuit_breaker: Schema.optional(Schema.Struct({
    failure_threshold: Schema.optional(PositiveInt),
    window: Schema.optional(PositiveInt),
    error_rate: Schema.optional(Fraction),
    min_requests: Schema.optional(PositiveInt),
    cooldown: Schema.optional(Seconds),
    max_cooldown: Schema.optional(Seconds)
  }).annotations({ identifier: "circuit breaker settings (a mapping)" })),
  /** Used when a 429 or 408 comes without a Retry-After header. */
  default_retry_after: Schema.optional(Seconds),
  misconfigured_cooldown: Schema.optional(Seconds),
  out_of_credits_cooldown: Schema.optional(Seconds),
  /** Retries on the same provider after a transient failure, before failing over. */
  retries: Schema.optional(Count),
  retry_backoff: Schema.optional(Seconds),
  /** The end-to-end deadline of a request, across every retry and failover. */
  request_timeout: Schema.optional(Seconds)
}).annotations({ identifier: "resilience settings (a mapping)" })
export type ResilienceFile = typeof ResilienceFile.Type

/** The routing config (also editable at runtime through the admin API). */
export const RoutingFile = Schema.Struct({
  strategy: Schema.optional(Strategy),
  cost_optimization: Schema.optional(BooleanLike),
  provider_order: Schema.optional(Schema.Array(Schema.NonEmptyTrimmedString).pipe(Schema.filter(namesEachOnce))),
  failover: Schema.optional(Schema.Array(Schema.Struct({
    provider_id: Schema.NonEmptyTrimmedString,
    condition: Schema.Literal("credit_threshold", "health"),
    /** A credit balance (credit_threshold) or a success rate from 0 to 1 (health). */
    value: NonNegative
  }).pipe(Schema.filter((f) =>
    f.condition !== "health" || f.value <= 1 || { path: ["value"], message: "a health threshold is a success rate from 0 to 1" }
  ))))
}).annotations({ identifier: "routing settings (a mapping)" })
export type RoutingFile = typeof RoutingFile.Type

/** The whole file. Sections this version does not know are ignored. */
export const ConfigFile = Schema.Struct({
  server: Schema.optional(Schema.NullOr(ServerFile)),
  routing: Schema.optional(Schema.NullOr(RoutingFile)),
  monitoring: Schema.optional(Schema.NullOr(MonitoringFile)),
  resilience: Schema.optional(Schema.NullOr(ResilienceFile)),
  providers: Schema.optional(
    Schema.NullOr(Schema.Record({ key: Schema.String, value: ProviderFile }).annotations({ identifier: "a mapping of provider ids to provider settings" }))
  ),
  aliases: Schema.optional(
    Schema.NullOr(Schema.Record({ key: Schema.String, value: AliasTargets }).annotations({ identifier: "a mapping of alias names to model ids" }))
  )
}).annotations({ identifier: "a mapping of sections (server, providers, aliases)" })
export type ConfigFile = typeof ConfigFile.Type

const decodeFile = Schema.decodeUnknownEither(ConfigFile, { errors: "all" })

const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join("") || "(top level)"

/**
 * Replaces `${VAR}` and `${VAR:-default}` in every string of the parsed document. Done after YAML
 * parsing so a value with YAML-special characters (a key containing `:` or `#`) cannot break the file.
 * Unset variables become empty strings and are reported, so a provider without its key still loads.
 */
export const substituteEnv = (
  value: unknown,
  env: Readonly<Record<string, string | undefined>>,
  missing: Array<string>,
  path: ReadonlyArray<PropertyKey> = []
): unknown => {
  if (typeof value === "string") {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_, name: string, fallback: string | undefined) => {
      const v = env[name]
      if (v !== undefined && v !== "") return v
      if (fallback !== undefined) return fallback
      missing.push(`${name} (${formatPath(path)})`)
      return ""
    })
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, missing, [...path, i]))
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = substituteEnv(v, env, missing, [...path, k])
    return out
  }
  return value
}

export interface LoadedFile {
  readonly path: string | null
  readonly file: ConfigFile
  /** Environment variables referenced by the file but not set. */
  readonly missingEnv: ReadonlyArray<string>
}

/** Validates an already-parsed document (YAML or a plain object from a library user). */
export const decodeConfig = (
  document: unknown,
  path: string,
  env: Readonly<Record<string, string | undefined>> = {}
): Effect.Effect<LoadedFile, ConfigFileError> =>
  Effect.suspend(() => {
    const missing: Array<string> = []
    const substituted = substituteEnv(document ?? {}, env, missing)
    const decoded = decodeFile(substituted)
    if (decoded._tag === "Left") {
      const lines = describeIssues(ParseResult.ArrayFormatter.formatErrorSync(decoded.left), secretsIn(substituted))
      return Effect.fail(new ConfigFileError({ path, message: `${path} is not a valid configuration:\n${lines.join("\n")}` }))
    }
    const file = decoded.right
    const problem = checkNames(file)
    if (problem !== null) return Effect.fail(new ConfigFileError({ path, message: `${path} is not a valid configuration:\n  ${problem}` }))
    return Effect.succeed({ path, file, missingEnv: missing })
  })

/**
 * One line per problem. Optional and nullable keys make Schema report every union branch a value
 * failed ("Expected undefined", "Expected null"); those say nothing when a real reason exists.
 */
const describeIssues = (issues: ReadonlyArray<ParseResult.ArrayFormatterIssue>, secrets: ReadonlyArray<string>): Array<string> => {
  const noise = /^Expected (undefined|null), actual/
  const useful = issues.filter((i) => !noise.test(i.message))
  const lines = oneLinePerChoice(useful.length > 0 ? useful : issues).map((i) => `  ${formatPath(i.path)}: ${brief(i.message, secrets)}`)
  return [...new Set(lines)]
}

const literalMiss = /^Expected ("(?:[^"\\]|\\.)*"), actual ([\s\S]*)$/

/**
 * A value that is none of a fixed set of words fails each of them ("Expected "venice", actual …",
 * "Expected "featherless", actual …"): said once, as the list to choose from.
 */
const oneLinePerChoice = (issues: ReadonlyArray<ParseResult.ArrayFormatterIssue>): Array<ParseResult.ArrayFormatterIssue> => {
  const out: Array<ParseResult.ArrayFormatterIssue> = []
  const choices = new Map<string, { readonly at: number; readonly words: Array<string>; readonly actual: string }>()
  for (const issue of issues) {
    const miss = literalMiss.exec(issue.message)
    if (miss === null) {
      out.push(issue)
      continue
    }
    const key = `${JSON.stringify(issue.path)} ${miss[2]}`
    const seen = choices.get(key)
    if (seen !== undefined) {
      seen.words.push(miss[1]!)
      out[seen.at] = { ...issue, message: `Expected one of ${seen.words.join(", ")}, actual ${seen.actual}` }
    } else {
      choices.set(key, { at: out.length, words: [miss[1]!], actual: miss[2]! })
      out.push(issue)
    }
  }
  return out
}

/**
 * A wrong-shaped section would be echoed whole (`actual {...}`), keys included: say what it is
 * instead, and blank any key value that still slips through.
 */
const brief = (message: string, secrets: ReadonlyArray<string>): string => {
  let out = message.replace(/, actual ([[{][\s\S]*)$/, (_, actual: string) => `, got ${actual.startsWith("[") ? "a list" : "a mapping"}`)
  for (const secret of secrets) out = out.split(secret).join("<redacted>")
  return out
}

/** Every `api_key` value in a document, to keep them out of error messages. */
const secretsIn = (value: unknown, out: Array<string> = []): Array<string> => {
  if (Array.isArray(value)) for (const v of value) secretsIn(v, out)
  else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      // A key of digits alone reads as a YAML number: kept out of the message all the same.
      if (k === "api_key" && (typeof v === "string" || typeof v === "number") && String(v).length >= 4) out.push(String(v))
      else secretsIn(v, out)
    }
  }
  return out
}

/** Checks what the schema cannot: provider ids and alias names. */
const checkNames = (file: ConfigFile): string | null => {
  for (const [section, names] of [["providers", Object.keys(file.providers ?? {})], ["aliases", Object.keys(file.aliases ?? {})]] as const) {
    for (const name of names) {
      if (!namePattern.test(name)) {
        return `${section}.${name}: the name must start with a letter or digit and contain only letters, digits, '_', '.', ':' or '-'`
      }
    }
  }
  return null
}

/**
 * Pinned alias targets must name a known provider (the file's, or one created through the config
 * API): a typo would otherwise route nowhere. `null` when they all do.
 */
export const checkAliasTargets = (file: ConfigFile, providerIds: ReadonlySet<string>): string | null => {
  for (const [name, targets] of Object.entries(file.aliases ?? {})) {
    const list = targetList(targets)
    const path = typeof targets === "string" ? "" : Array.isArray(targets) ? "" : ".targets"
    const single = typeof targets === "string" || (!Array.isArray(targets) && typeof (targets as { targets: unknown }).targets === "string")
    for (let i = 0; i < list.length; i++) {
      const pinned = splitPinned(list[i]!)
      if (pinned !== null && !providerIds.has(pinned[0])) {
        return `aliases.${name}${path}${single ? "" : `[${i}]`}: unknown provider '${pinned[0]}' in '${list[i]}'`
      }
    }
  }
  return null
}

/** The error for a failed `checkAliasTargets`. */
export const aliasTargetError = (path: string, problem: string) =>
  new ConfigFileError({ path, message: `${path} is not a valid configuration:\n  ${problem}` })

/** Reads, parses and validates the file at `path`. */
export const loadConfigFile = (
  path: string,
  env: Readonly<Record<string, string | undefined>>
): Effect.Effect<LoadedFile, ConfigFileError> =>
  Effect.tryPromise({
    try: () => readFile(path, "utf8"),
    catch: (e) => new ConfigFileError({ path, message: `cannot read config file ${path}: ${(e as Error).message}` })
  }).pipe(
    Effect.flatMap((text) => {
      const doc = Yaml.parseDocument(text, { prettyErrors: true })
      if (doc.errors.length > 0) {
        const first = doc.errors[0]!.message.split("\n")[0]
        return Effect.fail(new ConfigFileError({ path, message: `${path} is not valid YAML: ${first}` }))
      }
      return decodeConfig(doc.toJS(), path, env)
    })
  )

const seconds = (s: number | undefined, fallbackMs: number) => (s === undefined ? fallbackMs : Math.round(s * 1000))

const overrideInfo = (o: ModelOverrideFile): Partial<ModelInfo> => ({
  ...(o.context_length === undefined ? {} : { contextWindow: o.context_length }),
  ...(o.max_output_tokens === undefined ? {} : { maxOutputTokens: o.max_output_tokens }),
  ...(o.supports_tools === undefined ? {} : { tools: o.supports_tools }),
  ...(o.supports_vision === undefined ? {} : { vision: o.supports_vision }),
  ...(o.supports_json_schema === undefined ? {} : { jsonSchema: o.supports_json_schema }),
  ...(o.supports_reasoning === undefined ? {} : { reasoning: o.supports_reasoning }),
  ...(o.pricing === undefined ? {} : { pricing: { inputPer1M: o.pricing.input, outputPer1M: o.pricing.output } })
})

/** The file's providers as specs, their `api_key` wrapped so it never prints. */
export const providerSpecs = (file: ConfigFile): ReadonlyArray<ProviderSpec> =>
  Object.entries(file.providers ?? {}).map(([id, p]): ProviderSpec => ({
    id,
    endpoint: p.endpoint.replace(/\/+$/, ""),
    apiKey: p.api_key ? Redacted.make(p.api_key) : null,
    type: p.provider_type ?? "openai_compat",
    models: p.models ?? null,
    priority: p.priority ?? 100,
    supportsTools: p.supports_tools ?? null,
    supportsStreaming: p.supports_streaming ?? null,
    supportsMultimodal: p.supports_multimodal ?? null,
    hedgeAfterMs: p.hedge_after_ms ?? null,
    weight: p.weight ?? 1,
    modelOverrides: Object.fromEntries(Object.entries(p.model_overrides ?? {}).map(([m, o]) => [m, overrideInfo(o)])),
    timeouts: {
      connectMs: seconds(p.timeouts?.connect, defaultTimeouts.connectMs),
      firstByteMs: seconds(p.timeouts?.first_byte, defaultTimeouts.firstByteMs),
      idleMs: seconds(p.timeouts?.idle, defaultTimeouts.idleMs),
      totalMs: seconds(p.timeouts?.total, defaultTimeouts.totalMs)
    },
    maxConnections: p.max_connections ?? defaultMaxConnections,
    source: "file"
  }))

export const aliasSpecs = (file: ConfigFile): ReadonlyArray<AliasSpec> =>
  Object.entries(file.aliases ?? {}).map(([name, targets]) => ({
    name,
    targets: targetList(targets),
    hedgeAfterMs: typeof targets === "object" && !Array.isArray(targets) ? (targets as { hedge_after_ms?: number }).hedge_after_ms ?? null : null,
    strategy: typeof targets === "object" && !Array.isArray(targets) ? (targets as { strategy?: Strategy }).strategy ?? null : null,
    source: "file"
  }))

/** The file's `routing` section, or `null` when it has none. */
export const routingOf = (file: ConfigFile): RoutingConfig | null => {
  const r = file.routing
  if (r === undefined || r === null) return null
  return routingFromJson({
    ...(r.strategy === undefined ? {} : { strategy: r.strategy }),
    ...(r.cost_optimization === undefined ? {} : { cost_optimization: r.cost_optimization }),
    ...(r.provider_order === undefined ? {} : { provider_order: r.provider_order }),
    ...(r.failover === undefined ? {} : { failover: r.failover })
  })
}

/** The file alone as a configuration state (no database): what library users and tests start from. */
export const configState = (file: ConfigFile): ConfigState => ({
  providers: providerSpecs(file),
  aliases: aliasSpecs(file),
  routing: routingOf(file) ?? defaultRouting
})
