/**
 * The registry of configured backends and the models they serve. It keeps one immutable index,
 * rebuilt when the configuration or a model discovery changes, so resolving a model on the request
 * path is a synchronous map lookup.
 */
import { Context, Duration, Effect, Layer, Schedule, Stream } from "effect"
import { aliasTargetError, checkAliasTargets, configState, decodeConfig } from "../config/ConfigFile.js"
import { RouterConfig } from "../config/RouterConfig.js"
import { ModelNotFound } from "../domain/Errors.js"
import type { ModelEntry } from "../domain/OpenAi.js"
import { byPriority, type Candidate, type ConfigState, pinnedId, type ProviderSpec, splitPinned } from "../domain/Provider.js"
import type { RoutingConfig } from "../domain/Routing.js"
import { Upstream, type UpstreamService } from "./Upstream.js"

/** How a model id was resolved: the candidates, and whether their order is the configuration's. */
export interface Resolution {
  readonly kind: "model" | "pinned" | "alias"
  readonly candidates: ReadonlyArray<Candidate>
  /** An alias's own hedging delay, which overrides the providers' settings. */
  readonly hedgeAfterMs?: number | null | undefined
}

/** A snapshot of what is configured and known; never mutated once built. */
export interface ModelIndex {
  readonly providers: ReadonlyMap<string, ProviderSpec>
  /** Bare upstream model id → every provider serving it. */
  readonly models: ReadonlyMap<string, ReadonlyArray<Candidate>>
  readonly aliases: ReadonlyMap<string, Resolution>
  /** Upstream models known per provider (configured, else discovered). */
  readonly served: ReadonlyMap<string, ReadonlySet<string> | null>
  /** The `GET /v1/models` entries. */
  readonly list: ReadonlyArray<ModelEntry>
  /** The routing config in force. */
  readonly routing: RoutingConfig
}

export interface ProvidersService {
  /** The current snapshot. */
  readonly index: () => ModelIndex
  /** Resolves a requested model id (bare, `provider+model` or alias) to candidates. */
  readonly resolve: (model: string) => Resolution | ModelNotFound
  /** Asks every provider without a configured model list for its models now. */
  readonly refresh: Effect.Effect<void>
}

export class Providers extends Context.Tag("sanctum/Providers")<Providers, ProvidersService>() {}

/** Builds the index from configuration and discovered model lists. Pure. */
export const buildIndex = (
  state: ConfigState,
  discovered: ReadonlyMap<string, ReadonlyArray<string>>,
  created = 0
): ModelIndex => {
  const providers = new Map(state.providers.map((p) => [p.id, p]))
  const models = new Map<string, Array<Candidate>>()
  const served = new Map<string, ReadonlySet<string> | null>()
  const list: Array<ModelEntry> = []
  for (const p of [...state.providers].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
    const ids = p.models ?? discovered.get(p.id) ?? null
    served.set(p.id, ids === null ? null : new Set(ids))
    for (const m of ids ?? []) {
      const entry = models.get(m)
      if (entry === undefined) models.set(m, [{ provider: p, upstreamModel: m }])
      else if (!entry.some((c) => c.provider.id === p.id)) entry.push({ provider: p, upstreamModel: m })
    }
  }
  const candidatesOf = (target: string): ReadonlyArray<Candidate> => {
    const pinned = splitPinned(target)
    if (pinned !== null) {
      const provider = providers.get(pinned[0])
      return provider === undefined ? [] : [{ provider, upstreamModel: pinned[1] }]
    }
    // A bare model in a chain stands for all its providers, in the order the bare id has.
    return [...(models.get(target) ?? [])].sort(byPriority)
  }
  const aliases = new Map<string, Resolution>()
  for (const a of state.aliases) {
    const seen = new Set<string>()
    const chain: Array<Candidate> = []
    for (const t of a.targets) {
      for (const c of candidatesOf(t)) {
        const id = pinnedId(c.provider.id, c.upstreamModel)
        if (!seen.has(id)) {
          seen.add(id)
          chain.push(c)
        }
      }
    }
    aliases.set(a.name, { kind: "alias", candidates: chain, hedgeAfterMs: a.hedgeAfterMs })
  }
  for (const id of [...models.keys()].sort()) list.push({ id, object: "model", created, owned_by: "sanctum-router" })
  for (const [providerId, ids] of served) {
    for (const m of [...(ids ?? [])].sort()) {
      list.push({ id: pinnedId(providerId, m), object: "model", created, owned_by: providerId })
    }
  }
  for (const name of [...aliases.keys()].sort()) list.push({ id: name, object: "model", created, owned_by: "sanctum-router" })
  return { providers, models, aliases, served, list, routing: state.routing }
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
      return { kind: "pinned", candidates: [{ provider, upstreamModel: pinned[1] }] }
    }
  }
  const bare = index.models.get(model)
  if (bare !== undefined) return { kind: "model", candidates: bare }
  return new ModelNotFound({ model })
}

/** Reads `data[].id` from an OpenAI-style model list. */
const modelIds = (body: Uint8Array): ReadonlyArray<string> | null => {
  try {
    const parsed = JSON.parse(Buffer.from(body).toString("utf8")) as { data?: unknown }
    if (!Array.isArray(parsed?.data)) return null
    return parsed.data.flatMap((m: { id?: unknown }) => (typeof m?.id === "string" && m.id !== "" ? [m.id] : []))
  } catch {
    return null
  }
}

const discoveryTimeout = Duration.seconds(15)

/** Asks one provider for its models; failures are logged and leave the previous list in place. */
const discover = (upstream: UpstreamService, p: ProviderSpec) =>
  upstream.send({ provider: p, method: "GET", path: "/models" }).pipe(
    Effect.flatMap((r) =>
      Effect.flatMap(r.body, (body) => {
        const ids = r.status === 200 ? modelIds(body) : null
        return ids === null
          ? Effect.fail(`GET ${p.endpoint}/models answered HTTP ${r.status} without a model list`)
          : Effect.succeed(ids)
      })
    ),
    Effect.timeoutFail({ duration: discoveryTimeout, onTimeout: () => "timed out" }),
    Effect.tapError((e) =>
      Effect.logWarning(`model discovery for provider '${p.id}' failed: ${typeof e === "string" ? e : e.message}`)
    ),
    Effect.option
  )

/**
 * Builds the registry over a stream of configuration states. Discovery runs in the background at
 * start, on every configuration change and every ten minutes, never on the request path.
 */
export const make = (states: Stream.Stream<ConfigState>, initial: ConfigState) =>
  Effect.gen(function* () {
    const upstream = yield* Upstream
    const created = Math.floor(Date.now() / 1000)
    let state = initial
    const discovered = new Map<string, ReadonlyArray<string>>()
    let index = buildIndex(state, discovered, created)
    const rebuild = () => {
      index = buildIndex(state, discovered, created)
    }

    const refreshNow = Effect.suspend(() =>
      Effect.forEach(
        state.providers.filter((p) => p.models === null),
        (p) =>
          Effect.map(discover(upstream, p), (ids) => {
            if (ids._tag === "Some") {
              discovered.set(p.id, ids.value)
              rebuild()
            }
          }),
        { concurrency: 8, discard: true }
      )
    )

    yield* states.pipe(
      Stream.runForEach((s) =>
        Effect.suspend(() => {
          state = s
          rebuild()
          return refreshNow
        })
      ),
      Effect.forkScoped
    )
    yield* refreshNow.pipe(Effect.repeat(Schedule.spaced("10 minutes")), Effect.delay("10 minutes"), Effect.forkScoped)

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
 * the router as a library. Invalid input fails the layer with a `ConfigFileError`.
 */
export const layerStatic = (config: unknown) =>
  Layer.scoped(
    Providers,
    Effect.gen(function* () {
      const loaded = yield* decodeConfig(config, "configuration")
      const problem = checkAliasTargets(loaded.file, new Set(Object.keys(loaded.file.providers ?? {})))
      if (problem !== null) return yield* aliasTargetError("configuration", problem)
      const state = configState(loaded.file)
      return yield* make(Stream.make(state), state)
    })
  )
