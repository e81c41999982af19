/**
 * The registry of configured backends and the models they serve. It keeps one immutable index,
 * rebuilt when the configuration or a model discovery changes, so resolving a model on the request
 * path is a synchronous map lookup.
 */
import { Context, Deferred, Duration, Effect, FiberHandle, Layer, Option, Schedule, Stream } from "effect"
import { aliasTargetError, checkAliasTargets, type ConfigFileError, configState, decodeConfig } from "../config/ConfigFile.js"
import * as Resilience from "../config/Resilience.js"
import { RouterConfig } from "../config/RouterConfig.js"
import { discoveryRequestId, infoFromListing, isUnknown, listingAvailable, mergeInfo, type ModelInfo, unknownModel } from "../domain/Capabilities.js"
import { ModelNotFound } from "../domain/Errors.js"
import type { ModelEntry } from "../domain/OpenAi.js"
import { type Candidate, type ConfigState, inBaseOrder, pinnedId, type ProviderSpec, splitPinned } from "../domain/Provider.js"
import type { RoutingConfig, Strategy } from "../domain/Routing.js"
import { Upstream, type UpstreamService } from "./Upstream.js"

/** How a model id was resolved: the candidates, and whether their order is the configuration's. */
export interface Resolution {
  readonly kind: "model" | "pinned" | "alias"
  readonly candidates: ReadonlyArray<Candidate>
  /** An alias's own hedging delay, which overrides the providers' settings. */
  readonly hedgeAfterMs?: number | null | undefined
  /** An alias's own strategy, which overrides the routing config's. */
  readonly strategy?: Strategy | null | undefined
}

/** What the index knows of one provider's models. */
export interface ProviderModels {
  /** What is known of a model of this provider that nothing else is known of: the provider's flags. */
  readonly base: ModelInfo
  /**
   * One candidate, shared by every resolution, per model the index knows of at this provider:
   * the ones it serves, the ones the config says something about (`model_overrides`, alias
   * targets), and the ones discovery described.
   */
  readonly candidates: ReadonlyMap<string, Candidate>
  /** Models the provider's own list marks as not available on the account's plan. */
  readonly unavailable: ReadonlySet<string>
}

/** A snapshot of what is configured and known; never mutated once built. */
export interface ModelIndex {
  readonly providers: ReadonlyMap<string, ProviderSpec>
  /** Bare upstream model id → every provider serving it. */
  readonly models: ReadonlyMap<string, ReadonlyArray<Candidate>>
  readonly aliases: ReadonlyMap<string, Resolution>
  /** Upstream models known per provider (configured, else discovered). */
  readonly served: ReadonlyMap<string, ReadonlySet<string> | null>
  /** Per provider: its models' candidates and what is known of them. Read it through `infoOf`. */
  readonly byProvider: ReadonlyMap<string, ProviderModels>
  /** The `GET /v1/models` entries. */
  readonly list: ReadonlyArray<ModelEntry>
  /** The routing config in force. */
  readonly routing: RoutingConfig
}

/** What one provider's `GET /models` said, reduced to what the index needs. */
export interface Discovered {
  /** The models listed and usable, in the provider's order: all of them, or (not `complete`) those the config names. */
  readonly models: ReadonlyArray<string>
  /** Whether `models` is the provider's whole list. Only a whole list tells what a provider serves. */
  readonly complete: boolean
  /** What the list says of the models kept; a model it says nothing about is absent. */
  readonly info: ReadonlyMap<string, ModelInfo>
  /** Models kept although the list marks them not available on the account's plan (configured ones). */
  readonly unavailable: ReadonlySet<string>
}

export interface ProvidersService {
  /** The current snapshot. */
  readonly index: () => ModelIndex
  /** Resolves a requested model id (bare, `provider+model` or alias) to candidates. */
  readonly resolve: (model: string) => Resolution | ModelNotFound
  /** Asks every provider for its models now (discovery also runs at start, on config changes and every 10 minutes). */
  readonly refresh: Effect.Effect<void>
}

export class Providers extends Context.Tag("sanctum/Providers")<Providers, ProvidersService>() {}

const byId = (a: ProviderSpec, b: ProviderSpec) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/** What a provider's flags say of every model it serves. Streaming stays a provider flag (`supportsStreaming`). */
export const providerInfo = (p: ProviderSpec): ModelInfo =>
  mergeInfo(unknownModel, { tools: p.supportsTools, vision: p.supportsMultimodal })

/** The models the config names for a provider: its `models`, its `model_overrides` and the alias targets pinned to it. */
export const namedModels = (state: ConfigState, p: ProviderSpec): ReadonlySet<string> => {
  const named = new Set<string>(p.models ?? [])
  for (const m of Object.keys(p.modelOverrides)) named.add(m)
  for (const a of state.aliases) {
    for (const t of a.targets) {
      const pinned = splitPinned(t)
      if (pinned !== null && pinned[0] === p.id) named.add(pinned[1])
    }
  }
  return named
}

const overrideOf = (p: ProviderSpec, model: string): Partial<ModelInfo> | undefined =>
  Object.hasOwn(p.modelOverrides, model) ? p.modelOverrides[model] : undefined

type Extras = Omit<ModelEntry, "id" | "object" | "created" | "owned_by">

/** A known capability: `true` when one candidate has it, `false` when every one is known not to. */
const capability = (cs: ReadonlyArray<Candidate>, of: (c: Candidate) => boolean | null | undefined): boolean | null => {
  let no = 0
  for (const c of cs) {
    const v = of(c)
    if (v === true) return true
    if (v === false) no++
  }
  return no > 0 && no === cs.length ? false : null
}

/** The router's own fields of a `GET /v1/models` entry served by these candidates (see `ModelEntry`). */
const extrasOf = (cs: ReadonlyArray<Candidate>): Extras => {
  let context: number | null = null
  let output: number | null = null
  let pricing: { input: number; output: number } | null = null
  const providers: Array<string> = []
  for (const c of cs) {
    if (!providers.includes(c.provider.id)) providers.push(c.provider.id)
    const info = c.info ?? unknownModel
    if (info.contextWindow !== null && (context === null || info.contextWindow > context)) context = info.contextWindow
    if (info.maxOutputTokens !== null && (output === null || info.maxOutputTokens > output)) output = info.maxOutputTokens
    const p = info.pricing
    if (p !== null && (pricing === null || p.inputPer1M + p.outputPer1M < pricing.input + pricing.output)) {
      pricing = { input: p.inputPer1M, output: p.outputPer1M }
    }
  }
  const caps: Record<string, boolean> = {}
  const set = (name: string, v: boolean | null) => {
    if (v !== null) caps[name] = v
  }
  set("tools", capability(cs, (c) => c.info?.tools))
  set("vision", capability(cs, (c) => c.info?.vision))
  set("json_schema", capability(cs, (c) => c.info?.jsonSchema))
  set("reasoning", capability(cs, (c) => c.info?.reasoning))
  set("streaming", capability(cs, (c) => c.provider.supportsStreaming))
  set("embeddings", capability(cs, (c) => c.info?.embeddings))
  return {
    ...(context === null ? {} : { context_length: context }),
    ...(output === null ? {} : { max_output_tokens: output }),
    ...(Object.keys(caps).length === 0 ? {} : { capabilities: caps }),
    ...(pricing === null ? {} : { pricing }),
    providers
  }
}

/**
 * Builds the index from configuration and discovered model lists. Pure.
 *
 * What is known of a provider+model merges, later winning: nothing, the provider's flags
 * (`supportsTools` → tools, `supportsMultimodal` → vision), what its `GET /models` said, and the
 * config's `model_overrides`. Each provider+model gets one candidate, shared by the bare id, the
 * pinned id and the aliases.
 */
export const buildIndex = (
  state: ConfigState,
  discovered: ReadonlyMap<string, Discovered> = new Map(),
  created = 0
): ModelIndex => {
  const providers = new Map(state.providers.map((p) => [p.id, p]))
  const models = new Map<string, Array<Candidate>>()
  const served = new Map<string, ReadonlySet<string> | null>()
  const byProvider = new Map<string, ProviderModels>()
  const list: Array<ModelEntry> = []

  const candidateFor = (p: ProviderSpec, m: string): Candidate => {
    const known = byProvider.get(p.id)!
    const candidates = known.candidates as Map<string, Candidate>
    let c = candidates.get(m)
    if (c === undefined) {
      const found = discovered.get(p.id)?.info.get(m)
      const over = overrideOf(p, m)
      let info = found === undefined ? known.base : mergeInfo(known.base, found)
      if (over !== undefined) info = mergeInfo(info, over)
      c = { provider: p, upstreamModel: m, info }
      candidates.set(m, c)
    }
    return c
  }

  const sorted = [...state.providers].sort(byId)
  for (const p of sorted) {
    const d = discovered.get(p.id)
    byProvider.set(p.id, { base: providerInfo(p), candidates: new Map(), unavailable: d?.unavailable ?? new Set() })
    const ids = p.models ?? (d !== undefined && d.complete ? d.models : null)
    served.set(p.id, ids === null ? null : new Set(ids))
    for (const m of ids ?? []) {
      const c = candidateFor(p, m)
      const entry = models.get(m)
      if (entry === undefined) models.set(m, [c])
      else if (!entry.includes(c)) entry.push(c)
    }
    // What the config or the listing says of models it does not serve still counts when pinned.
    for (const m of Object.keys(p.modelOverrides)) candidateFor(p, m)
    for (const m of d?.info.keys() ?? []) candidateFor(p, m)
  }
  const candidatesOf = (target: string): ReadonlyArray<Candidate> => {
    const pinned = splitPinned(target)
    if (pinned !== null) {
      const provider = providers.get(pinned[0])
      return provider === undefined ? [] : [candidateFor(provider, pinned[1])]
    }
    // A bare model in a chain stands for all its providers, in the order the bare id has.
    return inBaseOrder(state.routing, models.get(target) ?? [])
  }
  const aliases = new Map<string, Resolution>()
  for (const a of state.aliases) {
    const seen = new Set<Candidate>()
    const chain: Array<Candidate> = []
    for (const t of a.targets) {
      for (const c of candidatesOf(t)) {
        if (!seen.has(c)) {
          seen.add(c)
          chain.push(c)
        }
      }
    }
    aliases.set(a.name, { kind: "alias", candidates: chain, hedgeAfterMs: a.hedgeAfterMs, strategy: a.strategy })
  }
  // One entry's extras per single candidate: a model one provider serves lists the same facts bare and pinned.
  const single = new Map<Candidate, Extras>()
  const extrasOfOne = (c: Candidate): Extras => {
    let e = single.get(c)
    if (e === undefined) {
      e = extrasOf([c])
      single.set(c, e)
    }
    return e
  }
  for (const id of [...models.keys()].sort()) {
    const cs = models.get(id)!
    const extras = cs.length === 1 ? extrasOfOne(cs[0]!) : extrasOf(inBaseOrder(state.routing, cs))
    list.push({ id, object: "model", created, owned_by: "sanctum-router", ...extras })
  }
  for (const p of sorted) {
    const known = byProvider.get(p.id)!
    for (const m of [...(served.get(p.id) ?? [])].sort()) {
      const c = known.candidates.get(m)!
      list.push({
        id: pinnedId(p.id, m),
        object: "model",
        created,
        owned_by: p.id,
        ...extrasOfOne(c),
        ...(known.unavailable.has(m) ? { available_on_current_plan: false } : {})
      })
    }
  }
  for (const name of [...aliases.keys()].sort()) {
    list.push({ id: name, object: "model", created, owned_by: "sanctum-router", ...extrasOf(aliases.get(name)!.candidates) })
  }
  return { providers, models, aliases, served, byProvider, list, routing: state.routing }
}

/**
 * What is known of `model` at provider `providerId`: its shared candidate's info when the index
 * knows the pair, else the provider's flags alone, else (unknown provider) nothing. A map lookup,
 * no allocation: fit for the request path.
 */
export const infoOf = (index: ModelIndex, providerId: string, model: string): ModelInfo => {
  const known = index.byProvider.get(providerId)
  return known === undefined ? unknownModel : known.candidates.get(model)?.info ?? known.base
}

/** The shared candidate for `provider+model`, with its info; a new one (provider flags only) when the index does not know the pair. */
export const candidateIn = (index: ModelIndex, provider: ProviderSpec, model: string): Candidate => {
  const known = index.byProvider.get(provider.id)
  return known?.candidates.get(model) ?? { provider, upstreamModel: model, info: known?.base ?? providerInfo(provider) }
}

/**
 * Resolution order: an alias, then a `provider+model` id, then a bare upstream model id. A pinned
 * model a provider does not list is refused, unless its list is not known yet (discovery pending),
 * in which case the upstream decides.
 */
export const resolveIn = (index: ModelIndex, model: string): Resolution | ModelNotFound => {
  const alias = index.aliases.get(model)
  if (alias !== undefined) return alias
  const pinned = splitPinned(model)
  if (pinned !== null) {
    const provider = index.providers.get(pinned[0])
    const served = index.served.get(pinned[0])
    if (provider !== undefined && (served === null || served?.has(pinned[1]))) {
      return { kind: "pinned", candidates: [candidateIn(index, provider, pinned[1])] }
    }
  }
  const bare = index.models.get(model)
  if (bare !== undefined) return { kind: "model", candidates: bare }
  return new ModelNotFound({ model })
}

/** Where a provider's model list is read while it is being paged through. */
interface Collecting {
  readonly models: Array<string>
  readonly seen: Set<string>
  readonly info: Map<string, ModelInfo>
  readonly unavailable: Set<string>
  /** Equal infos share one object: a 20k-model list has only a few distinct ones. */
  readonly interned: Map<string, ModelInfo>
}

const collecting = (): Collecting => ({ models: [], seen: new Set(), info: new Map(), unavailable: new Set(), interned: new Map() })

/**
 * Folds one page of an OpenAI-style model list (`{ data: [{ id, ... }] }`) into `into`, keeping
 * only the models `keep` accepts (all when `keep` is `null`, a discovered list: then a model marked
 * not available on the account's plan is left out, as not served). Only the kept models' infos are
 * stored, never the raw entries. `false` when the page is not a model list.
 */
const collectPage = (page: Record<string, unknown>, keep: ReadonlySet<string> | null, into: Collecting): boolean => {
  if (!Array.isArray(page.data)) return false
  for (const e of page.data as ReadonlyArray<unknown>) {
    if (typeof e !== "object" || e === null) continue
    const entry = e as Record<string, unknown>
    const id = entry.id
    if (typeof id !== "string" || id === "" || into.seen.has(id)) continue
    if (keep !== null && !keep.has(id)) continue
    const available = listingAvailable(entry)
    if (keep === null && !available) continue
    into.seen.add(id)
    into.models.push(id)
    if (!available) into.unavailable.add(id)
    const info = infoFromListing(entry)
    if (isUnknown(info)) continue
    const key = JSON.stringify(info)
    let shared = into.interned.get(key)
    if (shared === undefined) {
      shared = info
      into.interned.set(key, info)
    }
    into.info.set(id, shared)
  }
  return true
}

/**
 * Where the page after `page` is, as a path relative to the provider's `endpoint`, or `null` at
 * the end. OpenAI-style paging (`has_more: true` and `last_id`, else the last entry's id) asks
 * `/models?after=<id>`; otherwise a `next` or `next_page` link is followed: a full URL (only on the
 * endpoint's own origin and under its path, so the provider's key never goes elsewhere), a path
 * under the endpoint's path, a path relative to the endpoint, or a bare query string.
 */
export const nextPagePath = (page: Record<string, unknown>, endpoint: string): string | null => {
  if (page.has_more === false) return null
  if (page.has_more === true) {
    const data = Array.isArray(page.data) ? page.data as ReadonlyArray<{ id?: unknown } | null> : []
    const last = typeof page.last_id === "string" && page.last_id !== "" ? page.last_id : data[data.length - 1]?.id
    return typeof last === "string" && last !== "" ? `/models?after=${encodeURIComponent(last)}` : null
  }
  const link = typeof page.next === "string" && page.next !== "" ? page.next : page.next_page
  if (typeof link !== "string" || link === "") return null
  const base = new URL(endpoint)
  const basePath = base.pathname.replace(/\/+$/, "")
  if (/^https?:\/\//i.test(link)) {
    let url: URL
    try {
      url = new URL(link)
    } catch {
      return null
    }
    if (url.origin !== base.origin || !url.pathname.startsWith(basePath + "/")) return null
    return url.pathname.slice(basePath.length) + url.search
  }
  if (link.startsWith("?")) return `/models${link}`
  if (basePath !== "" && link.startsWith(basePath + "/")) return link.slice(basePath.length)
  return link.startsWith("/") ? link : `/${link}`
}

/** At most this many pages of one provider's list (Featherless lists ~20k models). */
export const maxModelPages = 50
const pageTimeout = Duration.seconds(15)
const discoveryTimeout = Duration.minutes(2)

/** How long start-up waits for the model lists nobody configured before serving without them. */
export const startupDiscoveryWait = Duration.seconds(10)

const parsePage = (body: Uint8Array): Record<string, unknown> | null => {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(body).toString("utf8"))
    return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? parsed as Record<string, unknown> : null
  } catch {
    return null
  }
}

/**
 * Reads one provider's model list, following its pages. With a configured `models` list only the
 * models the config names are kept (`keep`); without one, all of them.
 */
export const discoverModels = (upstream: UpstreamService, p: ProviderSpec, keep: ReadonlySet<string> | null) =>
  Effect.gen(function* () {
    const into = collecting()
    const asked = new Set<string>()
    let path: string | null = "/models"
    for (let page = 0; path !== null; page++) {
      if (page === maxModelPages) {
        yield* Effect.logWarning(`model discovery for provider '${p.id}' stopped after ${maxModelPages} pages`)
        break
      }
      asked.add(path)
      const at: string = path
      const r = yield* upstream.request({ provider: p, method: "GET", path: at, requestId: discoveryRequestId }).pipe(
        Effect.timeoutFail({ duration: pageTimeout, onTimeout: () => `GET ${p.endpoint}${at} timed out` }),
        Effect.mapError((e) => (typeof e === "string" ? e : e.message))
      )
      const body = r.status === 200 ? parsePage(r.body) : null
      if (body === null || !collectPage(body, keep, into)) {
        return yield* Effect.fail(`GET ${p.endpoint}${at} answered HTTP ${r.status} without a model list`)
      }
      const next = nextPagePath(body, p.endpoint)
      // A link back to a page already read would loop.
      path = next !== null && !asked.has(next) ? next : null
    }
    return {
      models: into.models,
      complete: keep === null,
      info: into.info,
      unavailable: into.unavailable
    } satisfies Discovered as Discovered
  }).pipe(
    Effect.timeoutFail({ duration: discoveryTimeout, onTimeout: () => "timed out" })
  )

const samePricing = (a: ModelInfo["pricing"], b: ModelInfo["pricing"]) =>
  a === b || (a !== null && b !== null && a.inputPer1M === b.inputPer1M && a.outputPer1M === b.outputPer1M)

const sameInfo = (a: ModelInfo, b: ModelInfo) =>
  a === b || (a.contextWindow === b.contextWindow && a.maxOutputTokens === b.maxOutputTokens && a.tools === b.tools &&
    a.vision === b.vision && a.jsonSchema === b.jsonSchema && a.reasoning === b.reasoning && a.embeddings === b.embeddings &&
    samePricing(a.pricing, b.pricing))

/** Whether two discoveries say the same: most do, and rebuilding over a 20k-model list takes ~100 ms. */
const sameDiscovery = (a: Discovered | undefined, b: Discovered): boolean => {
  if (a === undefined || a.complete !== b.complete || a.models.length !== b.models.length) return false
  if (a.info.size !== b.info.size || a.unavailable.size !== b.unavailable.size) return false
  for (let i = 0; i < a.models.length; i++) if (a.models[i] !== b.models[i]) return false
  for (const m of a.unavailable) if (!b.unavailable.has(m)) return false
  for (const [m, info] of a.info) {
    const other = b.info.get(m)
    if (other === undefined || !sameInfo(info, other)) return false
  }
  return true
}

/** Asks one provider for its models; failures are logged and leave the previous list in place. */
const discover = (upstream: UpstreamService, state: ConfigState, p: ProviderSpec) =>
  discoverModels(upstream, p, p.models === null ? null : namedModels(state, p)).pipe(
    Effect.tapError((e) => {
      const message = `model discovery for provider '${p.id}' failed: ${e}`
      // A configured list does not depend on it, and some servers have no model list at all.
      return p.models === null ? Effect.logWarning(message) : Effect.logDebug(message)
    }),
    Effect.option
  )

/**
 * Builds the registry over a stream of configuration states. Discovery runs in the background at
 * start, on every configuration change and every ten minutes, never on the request path; the
 * registry is ready once each provider without a configured list has been asked once (see
 * `startupDiscoveryWait`).
 */
export const make = (states: Stream.Stream<ConfigState>, initial: ConfigState) =>
  Effect.gen(function* () {
    const upstream = yield* Upstream
    const created = Math.floor(Date.now() / 1000)
    let state = initial
    const discovered = new Map<string, Discovered>()
    let index = buildIndex(state, discovered, created)
    const rebuild = () => {
      index = buildIndex(state, discovered, created)
    }

    // The providers whose model list nobody configured (`models` omitted) not asked yet, and when
    // none is left. (A configured list needs no waiting: its models are known, and a backend
    // without a model list at all would hold start-up for nothing.)
    const unasked = new Set(initial.providers.filter((p) => p.models === null).map((p) => p.id))
    const asked = yield* Deferred.make<void>()
    if (unasked.size === 0) yield* Deferred.succeed(asked, undefined)

    const refreshNow = Effect.suspend(() => {
      const current = state
      // Lists of providers no longer configured are dropped.
      for (const id of [...discovered.keys()]) if (!current.providers.some((p) => p.id === id)) discovered.delete(id)
      return Effect.forEach(
        current.providers,
        (p) =>
          Effect.map(discover(upstream, current, p), (found) => {
            if (found._tag === "Some" && !sameDiscovery(discovered.get(p.id), found.value)) {
              discovered.set(p.id, found.value)
              rebuild()
            }
            if (unasked.delete(p.id) && unasked.size === 0) Deferred.unsafeDone(asked, Effect.void)
          }),
        { concurrency: 8, discard: true }
      )
    })

    // A new configuration applies at once; the discovery it starts replaces one still under way
    // (which may take minutes over a paged list) instead of holding the next change back.
    const latest = yield* FiberHandle.make<void>()
    yield* states.pipe(
      Stream.runForEach((s) =>
        Effect.suspend(() => {
          state = s
          rebuild()
          return FiberHandle.run(latest, refreshNow)
        })
      ),
      Effect.forkScoped
    )
    yield* refreshNow.pipe(Effect.repeat(Schedule.spaced("10 minutes")), Effect.delay("10 minutes"), Effect.forkScoped)

    // Ready only once those lists have been asked for (or after a bound): answering before, the
    // router would call a model it had not been told of yet unknown, a 404 that clients do not
    // retry (and an agent framework takes for a model that does not exist).
    const done = yield* Deferred.await(asked).pipe(Effect.timeout(startupDiscoveryWait), Effect.option)
    if (Option.isNone(done)) {
      yield* Effect.logWarning(
        `serving before the model lists of ${[...unasked].map((id) => `'${id}'`).join(", ")} arrived (waited ${Duration.format(startupDiscoveryWait)})`
      )
    }
    // An alias that leads nowhere (a typo, a model nobody serves, another alias's name) would answer
    // every request with a 503: said once, at start.
    for (const [name, alias] of index.aliases) {
      if (alias.candidates.length === 0) yield* Effect.logWarning(`alias '${name}' names no model a configured provider serves (aliases do not name other aliases)`)
    }

    return Providers.of({
      index: () => index,
      resolve: (model) => resolveIn(index, model),
      refresh: refreshNow
    })
  })

/** The registry over the daemon's configuration (file and database). */
export const layer = Layer.scoped(
  Providers,
  Effect.gen(function* () {
    const config = yield* RouterConfig
    return yield* make(config.changes, yield* config.current)
  })
)

/**
 * A registry from a configuration object in the YAML file's shape, without a database: for using
 * the router as a library. It also gives `Resilience`, which `Router.layer` takes from it: from the
 * object's `resilience` and `monitoring` sections when it has either (before, they were silently
 * left at the defaults), else the settings given to this Layer, else the defaults. Invalid input
 * fails the layer with a `ConfigFileError`.
 */
export const layerStatic = (config: unknown): Layer.Layer<Providers | Resilience.Resilience, ConfigFileError, Upstream> =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const loaded = yield* decodeConfig(config, "configuration")
      const problem = checkAliasTargets(loaded.file, new Set(Object.keys(loaded.file.providers ?? {})))
      if (problem !== null) return yield* aliasTargetError("configuration", problem)
      const state = configState(loaded.file)
      const own = loaded.file.resilience != null || loaded.file.monitoring != null
      return Layer.merge(
        Layer.scoped(Providers, make(Stream.make(state), state)),
        own ? Resilience.layer(Resilience.fromFile(loaded.file)) : Resilience.layerGivenOrDefaults
      )
    })
  )
