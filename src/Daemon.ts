/**
 * The daemon's Layers, built in one place: settings and the config file first (they say where the
 * database is and how to listen), then persistence, configuration, providers, the workflow and HTTP.
 */
import * as HttpServer from "@effect/platform/HttpServer"
import { Effect, Layer, Logger, LogLevel } from "effect"
import { ConfigFileError, type LoadedFile, loadConfigFile } from "./config/ConfigFile.js"
import * as Resilience from "./config/Resilience.js"
import * as RouterConfig from "./config/RouterConfig.js"
import { configPath, type Flags, resolveSettings, Settings, type SettingsShape, StartupError } from "./config/Settings.js"
import * as Credits from "./credits/Credits.js"
import * as Checks from "./health/Checks.js"
import * as Health from "./health/Health.js"
import * as FastLane from "./http/FastLane.js"
import * as Http from "./http/Server.js"
import { ConfigRepo } from "./persistence/ConfigRepo.js"
import * as RequestLog from "./persistence/RequestLog.js"
import * as Sql from "./persistence/Sql.js"
import * as Policy from "./policy/Policy.js"
import * as Sessions from "./policy/Sessions.js"
import * as Providers from "./providers/Providers.js"
import * as Upstream from "./providers/Upstream.js"
import * as Router from "./router/Router.js"

/** Reads the config file named by `--config` or `ROUTER_CONFIG` (none is fine) and resolves settings. */
export const loadSettings = (flags: Flags, env: Readonly<Record<string, string | undefined>>) =>
  Effect.gen(function* () {
    const path = yield* configPath(flags)
    const loaded: LoadedFile = path === null ? { path: null, file: {}, missingEnv: [] } : yield* loadConfigFile(path, env)
    for (const missing of loaded.missingEnv) {
      yield* Effect.logWarning(`environment variable ${missing} is not set; using an empty value`)
    }
    const settings = yield* resolveSettings(flags, loaded.file.server, path)
    return { settings, loaded }
  })

/** Every service of a running daemon, given its settings and config file. */
export const services = (settings: SettingsShape, loaded: LoadedFile) => {
  const SettingsLive = Layer.succeed(Settings, settings)
  const SqlLive = Sql.layer(settings.dbPath)
  const RequestLogLive = RequestLog.layerWith({ retentionDays: settings.requestRetentionDays })
  const ConfigLive = RouterConfig.layer(loaded).pipe(Layer.provide(ConfigRepo.Default), Layer.provide(SettingsLive))
  const SessionsLive = Sessions.layer.pipe(Layer.provide(ConfigRepo.Default))
  const ProvidersLive = Providers.layer.pipe(Layer.provide(ConfigLive), Layer.provide(Upstream.layer))
  const ResilienceLive = Resilience.layer(Resilience.fromFile(loaded.file))
  const HealthLive = Health.layer.pipe(Layer.provide(ResilienceLive))
  const CreditsLive = Credits.layer.pipe(Layer.provide(HealthLive))
  const PinsLive = Layer.effect(Policy.Pins, Effect.map(Sessions.Sessions, (s) => ({ pinOf: s.pinOf }))).pipe(Layer.provide(SessionsLive))
  const PolicyLive = Policy.layer.pipe(Layer.provide([HealthLive, CreditsLive, PinsLive]))
  const RouterLive = Router.layerWithoutDependencies.pipe(
    Layer.provide([ProvidersLive, Upstream.layer, RequestLogLive, PolicyLive, HealthLive, ResilienceLive])
  )
  const ChecksLive = Checks.layer.pipe(Layer.provide([HealthLive, ProvidersLive, Upstream.layer, ResilienceLive]))
  const FastLaneLive = FastLane.layer.pipe(Layer.provide([RouterLive, SettingsLive]))
  return Http.layer.pipe(
    HttpServer.withLogAddress,
    Layer.provide(FastLaneLive),
    Layer.provideMerge(Layer.mergeAll(ProvidersLive, ConfigLive, SessionsLive, RequestLogLive, RouterLive, SettingsLive, HealthLive, CreditsLive, PolicyLive, ResilienceLive, ChecksLive)),
    Layer.provide(SqlLive)
  )
}

const levels: Readonly<Record<string, LogLevel.LogLevel>> = {
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warn: LogLevel.Warning,
  warning: LogLevel.Warning,
  error: LogLevel.Error
}

/** `ROUTER_LOG_LEVEL` (`debug`, `info`, `warn`, `error`), or null when unset or unknown. */
export const logLevelOf = (env: Readonly<Record<string, string | undefined>>): LogLevel.LogLevel | null =>
  levels[(env.ROUTER_LOG_LEVEL ?? "").trim().toLowerCase()] ?? null

/**
 * The daemon as one Layer: `Layer.launch(Daemon.layer(flags, process.env))` runs it. Its
 * `ROUTER_LOG_LEVEL`, when `env` has one, applies to everything it runs; without one, the caller's
 * level does.
 */
export const layer = (flags: Flags, env: Readonly<Record<string, string | undefined>>) => {
  const daemon = Layer.unwrapEffect(Effect.map(loadSettings(flags, env), ({ loaded, settings }) => services(settings, loaded)))
  const level = logLevelOf(env)
  return level === null ? daemon : daemon.pipe(Layer.provide(Logger.minimumLogLevel(level)))
}

export { ConfigFileError, StartupError }
