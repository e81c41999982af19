/**
 * Sanctum Router as a library: its services, their Layers, the wire and error schemas, and the
 * fake provider, so another Effect app can route requests without HTTP.
 *
 * ```ts
 * const RouterLive = Router.layer.pipe(
 *   Layer.provide(Providers.layerStatic({ providers: { local: { endpoint: "http://127.0.0.1:11434/v1", models: ["llama3.2"] } } })),
 *   Layer.provideMerge(Upstream.layer))
 * ```
 */
export * as ConfigFile from "./config/ConfigFile.js"
export * as RouterConfig from "./config/RouterConfig.js"
export * as Settings from "./config/Settings.js"
export * as Resilience from "./config/Resilience.js"
export * as Credits from "./credits/Credits.js"
export * as Daemon from "./Daemon.js"
export * as Capabilities from "./domain/Capabilities.js"
export * as Errors from "./domain/Errors.js"
export * as OpenAi from "./domain/OpenAi.js"
export * as Provider from "./domain/Provider.js"
export * as Routing from "./domain/Routing.js"
export * as Health from "./health/Health.js"
export * as HttpErrors from "./http/Errors.js"
export * as FastLane from "./http/FastLane.js"
export * as HttpServer from "./http/Server.js"
export * as ConfigRepo from "./persistence/ConfigRepo.js"
export * as RequestLog from "./persistence/RequestLog.js"
export * as Sql from "./persistence/Sql.js"
export * as Policy from "./policy/Policy.js"
export * as Preferences from "./policy/Preferences.js"
export * as Rank from "./policy/Rank.js"
export * as Sessions from "./policy/Sessions.js"
export * as Providers from "./providers/Providers.js"
export * as Upstream from "./providers/Upstream.js"
export * as Classify from "./router/Classify.js"
export * as Router from "./router/Router.js"
export * as Sse from "./router/Sse.js"
export * as FakeUpstream from "./testing/FakeUpstream.js"
export { startFakeServer } from "./testing/FakeServer.js"
export type { FakeServer, FakeServerOptions } from "./testing/FakeServer.js"
export type { FakeBehaviour } from "./testing/Script.js"
