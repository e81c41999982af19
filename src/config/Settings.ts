/**
 * Process settings: command-line flags, then environment, then the config file's `server`
 * section, then defaults. Nothing else in the router reads the environment.
 */
import { Config, ConfigError, Context, Effect, Either, Option, Redacted, Schema } from "effect"
import { readFileSync } from "node:fs"
import { availableParallelism } from "node:os"
import type { ServerFile } from "./ConfigFile.js"

/** Flags of `sanctum-router serve`; each wins over its environment variable. */
export interface Flags {
  readonly config?: string | undefined
  readonly port?: number | undefined
  readonly host?: string | undefined
  readonly db?: string | undefined
}

export interface SettingsShape {
  readonly host: string
  readonly port: number
  readonly dbPath: string
  readonly configPath: string | null
  /** `ROUTER_CLIENT_KEY`: required on `/v1/*` when set. */
  readonly clientKey: Redacted.Redacted<string> | null
  /** `ROUTER_ADMIN_KEY`: required on `/admin/*`; while unset the admin surface answers 401. */
  readonly adminKey: Redacted.Redacted<string> | null
  readonly maxBodyBytes: number
  /**
   * How long shutdown waits for open requests (streams included) before answering them itself (a
   * 503, or a last `stream_interrupted` event) and closing their connections.
   */
  readonly drainMs: number
  /** Request records older than this many days are deleted; 0 keeps them all. */
  readonly requestRetentionDays: number
  /** The longest the event loop keeps polling after a request arrives or ends (see `BusyPoll`); 0 never. */
  readonly busyPollUs: number
}

export class Settings extends Context.Tag("sanctum/Settings")<Settings, SettingsShape>() {}

/** Start-up refused: bad settings or an unsafe combination of them. */
export class StartupError extends Schema.TaggedError<StartupError>()("StartupError", {
  message: Schema.String
}) {}

export const defaults = {
  host: "127.0.0.1",
  port: 8480,
  dbPath: "./data/router.db",
  maxBodyBytes: 20 * 1024 * 1024,
  drainMs: 10_000,
  requestRetentionDays: 30,
  busyPollUs: 500
} as const

/** The longest busy-polling window accepted, in µs: polling for longer is a core spent waiting. */
export const maxBusyPollUs = 100_000

/** What the machine gives the process: CPUs, and the CPU time a cgroup quota allows (in CPUs). */
export interface MachineFacts {
  readonly cpus: number
  /** `null` when no quota is set. */
  readonly quotaCpus: number | null
}

/**
 * Busy polling by default only where it cannot cost the router its own speed: with one CPU the
 * polling competes with a backend or client on the same machine, and under a CPU quota (a container
 * limit) it spends the quota and gets the process throttled for the rest of the period.
 */
export const busyPollDefault = (machine: MachineFacts): number =>
  machine.cpus >= 2 && (machine.quotaCpus === null || machine.quotaCpus >= 2) ? defaults.busyPollUs : 0

/** A cgroup's `quota period` pair (v2 `cpu.max`, or v1's two files) as CPUs; `null` for no quota. */
export const quotaCpusOf = (quota: string, period: string): number | null => {
  const q = Number(quota.trim())
  const p = Number(period.trim())
  return Number.isFinite(q) && q > 0 && Number.isFinite(p) && p > 0 ? q / p : null
}

const readOr = (path: string): string | null => {
  try {
    return readFileSync(path, "utf8")
  } catch {
    return null
  }
}

/** The CPUs this process may use, read from the OS and the cgroup files (v2, else v1). */
export const machineFacts = (): MachineFacts => {
  const v2 = readOr("/sys/fs/cgroup/cpu.max")
  let quotaCpus: number | null = null
  if (v2 !== null) {
    const [quota = "", period = ""] = v2.trim().split(/\s+/)
    quotaCpus = quotaCpusOf(quota, period)
  } else {
    const quota = readOr("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    const period = readOr("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if (quota !== null && period !== null) quotaCpus = quotaCpusOf(quota, period)
  }
  return { cpus: availableParallelism(), quotaCpus }
}

const nonEmpty = (name: string) =>
  Config.option(Config.string(name)).pipe(Config.map(Option.filter((s) => s.trim() !== "")))

/** `raw` as a number when, blanks around it aside, it is written as `pattern` says; else `NaN`. */
const numberIn = (raw: string, pattern: RegExp): number => {
  const text = raw.trim()
  return pattern.test(text) ? Number(text) : NaN
}

/**
 * A whole number as the router reads one, in the environment and in command-line flags alike:
 * digits only (no sign, exponent or `0x`), blanks around them aside, and exact; else `NaN`.
 */
export const wholeNumberIn = (raw: string): number => {
  const n = numberIn(raw, /^\d+$/)
  return Number.isSafeInteger(n) ? n : NaN
}

/**
 * A number from the environment, as `read` reads it and within `valid`. Empty or blank means
 * unset, as for every other variable (compose files write `ROUTER_PORT=${PORT}` with PORT unset).
 */
const numberFrom = (name: string, read: (raw: string) => number, valid: (n: number) => boolean, expected: string) =>
  nonEmpty(name).pipe(Config.mapOrFail(Option.match({
    onNone: () => Either.right(Option.none<number>()),
    onSome: (raw) => {
      const n = read(raw)
      return Number.isFinite(n) && valid(n)
        ? Either.right(Option.some(n))
        : Either.left(ConfigError.InvalidData([name], `${expected}, but received ${JSON.stringify(raw)}`))
    }
  })))

/** A whole number, within `valid`. */
const wholeNumber = (name: string, valid: (n: number) => boolean, expected: string) => numberFrom(name, wholeNumberIn, valid, expected)

/** Seconds, a whole or decimal number of 0 or more. */
const seconds = (name: string) =>
  numberFrom(name, (raw) => numberIn(raw, /^\d+(\.\d+)?$/), () => true, "Expected a number of seconds (0 or more)")

/** The environment part, read through Effect's `Config` so tests can supply a `ConfigProvider`. */
export const EnvSettings = Config.all({
  config: nonEmpty("ROUTER_CONFIG"),
  host: nonEmpty("ROUTER_HOST"),
  port: wholeNumber("ROUTER_PORT", (n) => n <= 65535, "Expected a port number (0-65535)"),
  dbPath: nonEmpty("ROUTER_DB_PATH"),
  clientKey: nonEmpty("ROUTER_CLIENT_KEY"),
  adminKey: nonEmpty("ROUTER_ADMIN_KEY"),
  maxBodyBytes: wholeNumber("ROUTER_MAX_BODY_BYTES", (n) => n > 0, "Expected a positive number of bytes"),
  requestRetentionDays: wholeNumber("ROUTER_REQUEST_RETENTION_DAYS", () => true, "Expected a whole number of days, 0 to keep every record"),
  drainTimeout: seconds("ROUTER_DRAIN_TIMEOUT"),
  busyPollUs: wholeNumber("ROUTER_BUSY_POLL_US", (n) => n <= maxBusyPollUs, `Expected a number of microseconds (0-${maxBusyPollUs}, 0 turns busy polling off)`)
})

/** Which config file to load, if any: `--config` wins over `ROUTER_CONFIG`. */
export const configPath = (flags: Flags) =>
  Effect.map(nonEmpty("ROUTER_CONFIG"), (env) => flags.config ?? Option.getOrNull(env)).pipe(
    Effect.mapError((e) => new StartupError({ message: `Invalid environment: ${e.toString()}` }))
  )

export const isLoopback = (host: string): boolean =>
  host === "localhost" || host === "::1" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host)

/** Merges flags, environment and file into settings, refusing to expose `/v1` without a key. */
export const resolveSettings = (
  flags: Flags,
  file: ServerFile | null | undefined,
  path: string | null,
  machine: () => MachineFacts = machineFacts
) =>
  Effect.gen(function* () {
    const env = yield* EnvSettings.pipe(
      Effect.mapError((e) => new StartupError({ message: `Invalid environment: ${e.toString()}` }))
    )
    const settings: SettingsShape = {
      host: flags.host ?? Option.getOrUndefined(env.host) ?? file?.host ?? defaults.host,
      port: flags.port ?? Option.getOrUndefined(env.port) ?? file?.port ?? defaults.port,
      dbPath: flags.db ?? Option.getOrUndefined(env.dbPath) ?? defaults.dbPath,
      configPath: path,
      clientKey: Option.getOrNull(Option.map(env.clientKey, Redacted.make)),
      adminKey: Option.getOrNull(Option.map(env.adminKey, Redacted.make)),
      maxBodyBytes: Option.getOrUndefined(env.maxBodyBytes) ?? file?.max_body_bytes ?? defaults.maxBodyBytes,
      drainMs: Math.round(1000 * (Option.getOrUndefined(env.drainTimeout) ?? file?.drain_timeout ?? defaults.drainMs / 1000)),
      requestRetentionDays: Option.getOrUndefined(env.requestRetentionDays) ?? file?.request_retention_days ?? defaults.requestRetentionDays,
      busyPollUs: Option.getOrUndefined(env.busyPollUs) ?? file?.busy_poll_us ?? busyPollDefault(machine())
    }
    if (!Number.isInteger(settings.port) || settings.port < 0 || settings.port > 65535) {
      return yield* new StartupError({ message: `Invalid port ${settings.port}: expected 0-65535` })
    }
    if (settings.clientKey === null && !isLoopback(settings.host)) {
      return yield* new StartupError({
        message: `Refusing to listen on ${settings.host} without a client key: set ROUTER_CLIENT_KEY, ` +
          `or bind to a loopback address (127.0.0.1), so /v1 is never open to the network`
      })
    }
    return settings
  })
