/**
 * Settings resolution: flags win over the environment, which wins over the config file's `server`
 * section, which wins over the defaults; and the start-up refusals (bad port, open non-loopback bind).
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Redacted } from "effect"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll } from "vitest"
import type { ServerFile } from "../../src/config/ConfigFile.js"
import {
  busyPollDefault,
  configPath,
  defaults,
  type Flags,
  isLoopback,
  type MachineFacts,
  quotaCpusOf,
  resolveSettings,
  StartupError
} from "../../src/config/Settings.js"
import { loadSettings } from "../../src/Daemon.js"
import { removeDir, tempDir } from "./support.js"

const withEnv = (env: Record<string, string>) => Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

/** A machine with two CPUs and no quota, whatever machine the tests run on. */
const twoCpus: MachineFacts = { cpus: 2, quotaCpus: null }

const resolve = (flags: Flags, file: ServerFile | null, env: Record<string, string> = {}, path: string | null = null, machine = twoCpus) =>
  resolveSettings(flags, file, path, () => machine).pipe(withEnv(env))

const refusal = (flags: Flags, file: ServerFile | null, env: Record<string, string> = {}) =>
  Effect.gen(function* () {
    const result = yield* Effect.either(resolve(flags, file, env))
    if (Either.isRight(result)) throw new Error("expected start-up to be refused")
    return result.left
  })

describe("isLoopback", () => {
  it("accepts loopback addresses", () => {
    for (const host of ["127.0.0.1", "127.0.0.2", "127.10.20.30", "localhost", "::1", "[::1]"]) {
      expect(isLoopback(host), host).toBe(true)
    }
  })

  it("refuses every other address", () => {
    for (const host of ["0.0.0.0", "::", "[::]", "192.168.1.10", "10.0.0.1", "example.com", "127.0.0.1.example.com", "localhost.example.com", ""]) {
      expect(isLoopback(host), host).toBe(false)
    }
  })
})

describe("busyPollDefault", () => {
  it("polls by default with two CPUs or more and no quota below two", () => {
    expect(busyPollDefault({ cpus: 2, quotaCpus: null })).toBe(500)
    expect(busyPollDefault({ cpus: 16, quotaCpus: 2 })).toBe(500)
    expect(busyPollDefault({ cpus: 1, quotaCpus: null })).toBe(0)
    expect(busyPollDefault({ cpus: 16, quotaCpus: 1.5 })).toBe(0)
  })
})

describe("quotaCpusOf", () => {
  it("reads a cgroup quota and period as CPUs, and no quota as null", () => {
    expect(quotaCpusOf("50000", "100000\n")).toBe(0.5)
    expect(quotaCpusOf("200000", "100000")).toBe(2)
    expect(quotaCpusOf("max", "100000")).toBeNull()
    expect(quotaCpusOf("-1\n", "100000\n")).toBeNull()
    expect(quotaCpusOf("", "")).toBeNull()
  })
})

describe("resolveSettings", () => {
  it.effect("uses the defaults with no flags, environment or file", () =>
    Effect.gen(function* () {
      const s = yield* resolve({}, null)
      expect(s).toMatchObject({
        host: "127.0.0.1",
        port: 8480,
        dbPath: "./data/router.db",
        configPath: null,
        clientKey: null,
        adminKey: null,
        maxBodyBytes: defaults.maxBodyBytes,
        requestRetentionDays: 30,
        busyPollUs: 500
      })
      expect(defaults.port).toBe(8480)
      expect(defaults.dbPath).toBe("./data/router.db")
    }))

  it.effect("takes the file's server section over the defaults", () =>
    Effect.gen(function* () {
      const s = yield* resolve({}, { host: "127.0.0.5", port: 9100, max_body_bytes: 4096 }, {}, "/etc/router.yaml")
      expect(s).toMatchObject({ host: "127.0.0.5", port: 9100, maxBodyBytes: 4096, configPath: "/etc/router.yaml" })
    }))

  it.effect("takes the environment over the file", () =>
    Effect.gen(function* () {
      const s = yield* resolve({}, { host: "127.0.0.5", port: 9100, max_body_bytes: 4096 }, {
        ROUTER_HOST: "127.0.0.6",
        ROUTER_PORT: "9200",
        ROUTER_MAX_BODY_BYTES: "8192",
        ROUTER_DB_PATH: "/var/lib/sanctum/env.db"
      })
      expect(s).toMatchObject({ host: "127.0.0.6", port: 9200, maxBodyBytes: 8192, dbPath: "/var/lib/sanctum/env.db" })
    }))

  it.effect("takes flags over the environment and the file", () =>
    Effect.gen(function* () {
      const s = yield* resolve(
        { port: 9300, host: "localhost", db: "/tmp/flag.db" },
        { host: "127.0.0.5", port: 9100 },
        { ROUTER_HOST: "127.0.0.6", ROUTER_PORT: "9200", ROUTER_DB_PATH: "/var/lib/sanctum/env.db" }
      )
      expect(s).toMatchObject({ host: "localhost", port: 9300, dbPath: "/tmp/flag.db" })
    }))

  it.effect("accepts port 0 from a flag (an ephemeral port)", () =>
    Effect.gen(function* () {
      expect((yield* resolve({ port: 0 }, null, { ROUTER_PORT: "9200" })).port).toBe(0)
    }))

  it.effect("ignores empty or blank environment variables", () =>
    Effect.gen(function* () {
      const s = yield* resolve({}, { host: "127.0.0.5" }, {
        ROUTER_HOST: "",
        ROUTER_DB_PATH: "  ",
        ROUTER_CLIENT_KEY: "",
        ROUTER_ADMIN_KEY: "   "
      })
      expect(s).toMatchObject({ host: "127.0.0.5", dbPath: "./data/router.db", clientKey: null, adminKey: null })
    }))

  it.effect("reads the client and admin keys as redacted values", () =>
    Effect.gen(function* () {
      const s = yield* resolve({}, null, { ROUTER_CLIENT_KEY: "client-secret-1", ROUTER_ADMIN_KEY: "admin-secret-2" })
      expect(s.clientKey && Redacted.value(s.clientKey)).toBe("client-secret-1")
      expect(s.adminKey && Redacted.value(s.adminKey)).toBe("admin-secret-2")
      expect(String(s.clientKey)).not.toContain("client-secret-1")
      expect(JSON.stringify(s)).not.toContain("client-secret-1")
      expect(JSON.stringify(s)).not.toContain("admin-secret-2")
    }))

  it.effect("refuses a port flag outside 0-65535 with a message naming the port", () =>
    Effect.gen(function* () {
      for (const port of [99999, 65536, -1, 1.5]) {
        const e = yield* refusal({ port }, null)
        expect(e).toBeInstanceOf(StartupError)
        expect(e.message).toContain(`Invalid port ${port}`)
      }
    }))

  it.effect("takes the request retention from ROUTER_REQUEST_RETENTION_DAYS over the file's server.request_retention_days", () =>
    Effect.gen(function* () {
      expect((yield* resolve({}, { request_retention_days: 7 })).requestRetentionDays).toBe(7)
      expect((yield* resolve({}, { request_retention_days: 7 }, { ROUTER_REQUEST_RETENTION_DAYS: "0" })).requestRetentionDays).toBe(0)
      expect((yield* resolve({}, null, { ROUTER_REQUEST_RETENTION_DAYS: "90" })).requestRetentionDays).toBe(90)
      for (const bad of ["-1", "a week", "1.5"]) {
        const e = yield* refusal({}, null, { ROUTER_REQUEST_RETENTION_DAYS: bad })
        expect(e.message).toContain("ROUTER_REQUEST_RETENTION_DAYS")
      }
    }))

  it.effect("takes the shutdown drain from ROUTER_DRAIN_TIMEOUT over the file's server.drain_timeout, in seconds", () =>
    Effect.gen(function* () {
      expect((yield* resolve({}, null)).drainMs).toBe(10_000)
      expect((yield* resolve({}, { drain_timeout: 8 })).drainMs).toBe(8_000)
      expect((yield* resolve({}, { drain_timeout: 8 }, { ROUTER_DRAIN_TIMEOUT: "2.5" })).drainMs).toBe(2_500)
      expect((yield* resolve({}, { drain_timeout: 8 }, { ROUTER_DRAIN_TIMEOUT: "0" })).drainMs).toBe(0)
      expect((yield* resolve({}, { drain_timeout: 8 }, { ROUTER_DRAIN_TIMEOUT: " " })).drainMs).toBe(8_000)
      for (const bad of ["-1", "soon", "1e3", "5s"]) {
        const e = yield* refusal({}, null, { ROUTER_DRAIN_TIMEOUT: bad })
        expect(e.message).toContain("ROUTER_DRAIN_TIMEOUT")
        expect(e.message).toContain(JSON.stringify(bad))
      }
    }))

  it.effect("takes the busy-polling window from ROUTER_BUSY_POLL_US over the file's server.busy_poll_us, in µs", () =>
    Effect.gen(function* () {
      expect((yield* resolve({}, { busy_poll_us: 200 })).busyPollUs).toBe(200)
      expect((yield* resolve({}, { busy_poll_us: 200 }, { ROUTER_BUSY_POLL_US: "0" })).busyPollUs).toBe(0)
      expect((yield* resolve({}, null, { ROUTER_BUSY_POLL_US: "100000" })).busyPollUs).toBe(100_000)
      for (const bad of ["-1", "100001", "0.5", "off"]) {
        const e = yield* refusal({}, null, { ROUTER_BUSY_POLL_US: bad })
        expect(e.message).toContain("ROUTER_BUSY_POLL_US")
        expect(e.message).toContain(JSON.stringify(bad))
      }
    }))

  it.effect("turns busy polling off by default on one CPU or under a CPU quota below two, unless it is set", () =>
    Effect.gen(function* () {
      expect((yield* resolve({}, null, {}, null, { cpus: 1, quotaCpus: null })).busyPollUs).toBe(0)
      expect((yield* resolve({}, null, {}, null, { cpus: 8, quotaCpus: 0.5 })).busyPollUs).toBe(0)
      expect((yield* resolve({}, null, {}, null, { cpus: 8, quotaCpus: 4 })).busyPollUs).toBe(500)
      expect((yield* resolve({}, { busy_poll_us: 300 }, {}, null, { cpus: 1, quotaCpus: null })).busyPollUs).toBe(300)
      expect((yield* resolve({}, null, { ROUTER_BUSY_POLL_US: "200" }, null, { cpus: 8, quotaCpus: 0.5 })).busyPollUs).toBe(200)
    }))

  it.effect("takes an empty or blank number variable for unset, and blanks around its digits for nothing", () =>
    Effect.gen(function* () {
      expect((yield* resolve({}, null, { ROUTER_PORT: "", ROUTER_MAX_BODY_BYTES: "  ", ROUTER_REQUEST_RETENTION_DAYS: "" })).port).toBe(8480)
      expect((yield* resolve({ port: 9300 }, null, { ROUTER_PORT: "" })).port).toBe(9300)
      expect((yield* resolve({}, null, { ROUTER_PORT: " 9201 " })).port).toBe(9201)
    }))

  it.effect("refuses an invalid ROUTER_PORT or ROUTER_MAX_BODY_BYTES, naming the variable", () =>
    Effect.gen(function* () {
      for (const env of [{ ROUTER_PORT: "99999" }, { ROUTER_PORT: "http" }, { ROUTER_PORT: "-1" }, { ROUTER_PORT: "80.5" }, { ROUTER_MAX_BODY_BYTES: "0" }, { ROUTER_MAX_BODY_BYTES: "lots" }, { ROUTER_REQUEST_RETENTION_DAYS: "-3" }]) {
        const e = yield* refusal({}, null, env)
        expect(e._tag).toBe("StartupError")
        expect(e.message).toContain(Object.keys(env)[0]!)
      }
    }))

  it.effect("refuses a non-loopback host without ROUTER_CLIENT_KEY, whichever source named the host", () =>
    Effect.gen(function* () {
      const fromFlag = yield* refusal({ host: "0.0.0.0" }, null)
      expect(fromFlag.message).toContain("0.0.0.0")
      expect(fromFlag.message).toContain("ROUTER_CLIENT_KEY")
      const fromEnv = yield* refusal({}, null, { ROUTER_HOST: "192.168.1.10" })
      expect(fromEnv.message).toContain("192.168.1.10")
      const fromFile = yield* refusal({}, { host: "0.0.0.0" })
      expect(fromFile.message).toContain("ROUTER_CLIENT_KEY")
      const blankKey = yield* refusal({ host: "0.0.0.0" }, null, { ROUTER_CLIENT_KEY: "  " })
      expect(blankKey.message).toContain("ROUTER_CLIENT_KEY")
    }))

  it.effect("allows a non-loopback host once ROUTER_CLIENT_KEY is set", () =>
    Effect.gen(function* () {
      const s = yield* resolve({ host: "0.0.0.0" }, null, { ROUTER_CLIENT_KEY: "k" })
      expect(s.host).toBe("0.0.0.0")
    }))

  it.effect("lets a loopback flag override a non-loopback ROUTER_HOST without a client key", () =>
    Effect.gen(function* () {
      const s = yield* resolve({ host: "127.0.0.1" }, { host: "0.0.0.0" }, { ROUTER_HOST: "0.0.0.0" })
      expect(s.host).toBe("127.0.0.1")
    }))
})

describe("configPath", () => {
  it.effect("takes --config over ROUTER_CONFIG, ROUTER_CONFIG otherwise, and none when neither is set", () =>
    Effect.gen(function* () {
      expect(yield* configPath({ config: "/flag.yaml" }).pipe(withEnv({ ROUTER_CONFIG: "/env.yaml" }))).toBe("/flag.yaml")
      expect(yield* configPath({}).pipe(withEnv({ ROUTER_CONFIG: "/env.yaml" }))).toBe("/env.yaml")
      expect(yield* configPath({}).pipe(withEnv({}))).toBeNull()
      expect(yield* configPath({}).pipe(withEnv({ ROUTER_CONFIG: "" }))).toBeNull()
    }))
})

describe("loadSettings (Daemon)", () => {
  const dir = tempDir()
  afterAll(() => removeDir(dir))

  it.effect("runs with no config file at all", () =>
    Effect.gen(function* () {
      const { loaded, settings } = yield* loadSettings({}, {}).pipe(withEnv({}))
      expect(loaded).toEqual({ path: null, file: {}, missingEnv: [] })
      expect(settings.port).toBe(8480)
    }))

  it.effect("loads the file named by ROUTER_CONFIG and uses its server section below the environment", () =>
    Effect.gen(function* () {
      const path = join(dir, "env.yaml")
      writeFileSync(path, "server:\n  port: 9400\n  host: 127.0.0.9\nproviders:\n  p:\n    endpoint: ${P_URL}\n")
      const env = { ROUTER_CONFIG: path, ROUTER_HOST: "127.0.0.10", P_URL: "http://127.0.0.1:1/v1" }
      const { loaded, settings } = yield* loadSettings({}, env).pipe(withEnv(env))
      expect(loaded.path).toBe(path)
      expect(loaded.file.providers?.p?.endpoint).toBe("http://127.0.0.1:1/v1")
      expect(settings).toMatchObject({ port: 9400, host: "127.0.0.10", configPath: path })
    }))

  it.effect("fails with the ConfigFileError of an invalid file", () =>
    Effect.gen(function* () {
      const path = join(dir, "bad.yaml")
      writeFileSync(path, "providers:\n  p:\n    endpoint: http://127.0.0.1:1/v1\n    timeouts: { total: 0 }\n")
      const e = yield* Effect.flip(loadSettings({ config: path }, {}).pipe(withEnv({})))
      expect(e._tag).toBe("ConfigFileError")
      expect(e.message).toContain(path)
      expect(e.message).toContain("providers.p.timeouts.total")
    }))

  // Every start-up problem must surface as a StartupError or ConfigFileError, which the CLI turns
  // into one line; a raw ConfigError escapes that and is reported by the runtime instead.
  it.effect("refuses an invalid ROUTER_PORT with a StartupError (not a raw ConfigError)", () =>
    Effect.gen(function* () {
      const e = yield* Effect.flip(loadSettings({}, {}).pipe(withEnv({ ROUTER_PORT: "99999" })))
      expect(e._tag).toBe("StartupError")
      expect(e.message).toContain("ROUTER_PORT")
    }))

  it.effect("refuses an invalid ROUTER_MAX_BODY_BYTES with a StartupError (not a raw ConfigError)", () =>
    Effect.gen(function* () {
      const e = yield* Effect.flip(loadSettings({}, {}).pipe(withEnv({ ROUTER_MAX_BODY_BYTES: "-5" })))
      expect(e._tag).toBe("StartupError")
      expect(e.message).toContain("ROUTER_MAX_BODY_BYTES")
    }))
})
