/**
 * Start-up of the real daemon (in process, real SQLite file): where the config comes from, what is
 * refused, how the settings it resolves show on the HTTP surface, and the keys on `/v1` and `/admin`.
 */
import { existsSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { Effect, Layer, Logger } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as Daemon from "../../src/Daemon.js"
import { startRouter } from "../kit/TestRouter.js"
import { chat, freePort, getJson, modelIds, postJson, tracker, withDb } from "./support.js"

const t = tracker()
afterEach(() => t.closeAll())

/** startRouter's rejection message, for a start that must be refused. */
const refusedWith = async (options: Parameters<typeof startRouter>[0]): Promise<string> => {
  try {
    const router = await startRouter(options)
    await router.close()
  } catch (e) {
    return (e as Error).message
  }
  throw new Error("expected start-up to be refused")
}

describe("start-up without a config file", () => {
  it("starts on an empty database, serves /health, and lists no models", async () => {
    const router = await t.router()
    const health = await getJson(`${router.url}/health`)
    expect(health.status).toBe(200)
    expect(health.body).toEqual({ status: "ok" })
    const models = await getJson(`${router.url}/v1/models`)
    expect(models.status).toBe(200)
    expect(models.body).toEqual({ object: "list", data: [] })
  })

  it("creates and migrates the database file, with empty tables", async () => {
    const router = await t.router()
    expect(existsSync(router.dbPath)).toBe(true)
    const counts = withDb(router.dbPath, (db) =>
      ["providers", "aliases", "requests"].map((table) => (db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n))
    expect(counts).toEqual([0, 0, 0])
  })

  it("creates missing parent directories of the database path", async () => {
    const dir = t.dir()
    const dbPath = join(dir, "nested", "deeper", "router.db")
    const router = await t.router({ dir, flags: { db: dbPath } })
    expect((await getJson(`${router.url}/health`)).status).toBe(200)
    expect(existsSync(dbPath)).toBe(true)
  })

  it("answers an unknown model with an OpenAI-shaped 404", async () => {
    const router = await t.router()
    const res = await chat(router, "nothing-here")
    expect(res.status).toBe(404)
    expect(res.body).toMatchObject({ error: { message: expect.any(String) } })
  })
})

describe("where the config file comes from", () => {
  it("reads the file named by ROUTER_CONFIG when no --config is given", async () => {
    const dir = t.dir()
    const path = join(dir, "from-env.yaml")
    writeFileSync(path, "providers:\n  envp:\n    endpoint: http://127.0.0.1:9/v1\n    models: [env-model]\n")
    const router = await t.router({ dir, env: { ROUTER_CONFIG: path } })
    expect(await modelIds(router)).toEqual(["env-model", "envp+env-model"])
  })

  it("prefers --config over ROUTER_CONFIG", async () => {
    const dir = t.dir()
    const envPath = join(dir, "from-env.yaml")
    writeFileSync(envPath, "providers:\n  envp:\n    endpoint: http://127.0.0.1:9/v1\n    models: [env-model]\n")
    const router = await t.router({
      dir,
      env: { ROUTER_CONFIG: envPath },
      config: { providers: { flagp: { endpoint: "http://127.0.0.1:9/v1", models: ["flag-model"] } } }
    })
    expect(await modelIds(router)).toEqual(["flag-model", "flagp+flag-model"])
  })

  it("accepts YAML text with comments and ${VAR:-default} substitution", async () => {
    const fake = await t.fake({ name: "yaml", models: ["y1"] })
    const router = await t.router({
      config: [
        "# the local box",
        "providers:",
        "  local:",
        "    endpoint: ${LOCAL_URL:-http://127.0.0.1:1/v1}",
        "    models: [y1]   # pinned list",
        "aliases:",
        "  fast: local+y1",
        ""
      ].join("\n"),
      env: { LOCAL_URL: fake.url }
    })
    expect(await modelIds(router)).toEqual(["fast", "local+y1", "y1"])
    const res = await chat(router, "fast")
    expect(res.status).toBe(200)
    expect(fake.requests.filter((r) => r.path === "/chat/completions")).toHaveLength(1)
  })

  it("sends the key substituted from the environment to the provider", async () => {
    const fake = await t.fake({ name: "keyed", models: ["k1"] })
    const router = await t.router({
      config: { providers: { keyed: { endpoint: fake.url, api_key: "${KEYED_API_KEY}", models: ["k1"] } } },
      env: { KEYED_API_KEY: "sk-keyed-123" }
    })
    expect((await chat(router, "k1")).status).toBe(200)
    const sent = fake.requests.find((r) => r.path === "/chat/completions")
    expect(sent?.headers.authorization).toBe("Bearer sk-keyed-123")
  })

  it("still starts when a referenced variable is unset, and then sends no key", async () => {
    const fake = await t.fake({ name: "nokey", models: ["n1"] })
    const router = await t.router({
      config: { providers: { nokey: { endpoint: fake.url, api_key: "${UNSET_PROVIDER_KEY}", models: ["n1"] } } }
    })
    expect((await chat(router, "n1")).status).toBe(200)
    const sent = fake.requests.find((r) => r.path === "/chat/completions")
    expect(sent?.headers.authorization).toBeUndefined()
  })

  it("discovers the models of a provider whose `models` is omitted or null", async () => {
    const fake = await t.fake({ name: "disc", models: ["d1", "d2"] })
    const router = await t.router({
      config: { providers: { disc: { endpoint: fake.url }, disc2: { endpoint: fake.url, models: null } } }
    })
    await router.refreshModels()
    expect(await modelIds(router)).toEqual(["d1", "d2", "disc+d1", "disc+d2", "disc2+d1", "disc2+d2"])
  })
})

describe("invalid configuration stops start-up", () => {
  it("names the file, the key path and the problem of an invalid value", async () => {
    const dir = t.dir()
    const message = await refusedWith({
      dir,
      config: { providers: { venice: { endpoint: "https://api.venice.ai/api/v1", priority: "first" } } }
    })
    expect(message).toContain(join(dir, "router.yaml"))
    expect(message).toContain("providers.venice.priority")
    expect(message).toContain("\"first\"")
  })

  it("names the key path of a max_connections that is not a positive integer", async () => {
    const dir = t.dir()
    const message = await refusedWith({
      dir,
      config: { providers: { llama: { endpoint: "http://127.0.0.1:8080/v1", models: ["m"], max_connections: 0 } } }
    })
    expect(message).toContain(join(dir, "router.yaml"))
    expect(message).toMatch(/providers\.llama\.max_connections: must be a positive integer/)
  })

  it("names the file of invalid YAML", async () => {
    const dir = t.dir()
    const message = await refusedWith({ dir, config: "providers:\n  p: [\n" })
    expect(message).toContain(join(dir, "router.yaml"))
    expect(message).toContain("YAML")
  })

  it("names a config file that does not exist", async () => {
    const dir = t.dir()
    const missing = join(dir, "nope.yaml")
    const message = await refusedWith({ dir, env: { ROUTER_CONFIG: missing } })
    expect(message).toContain(missing)
  })

  it("refuses an alias pinned to an undefined provider, naming the alias", async () => {
    const message = await refusedWith({
      dir: t.dir(),
      config: { providers: { a: { endpoint: "http://127.0.0.1:9/v1", models: ["m"] } }, aliases: { fast: ["a+m", "b+m"] } }
    })
    expect(message).toContain("aliases.fast[1]")
    expect(message).toContain("'b'")
  })

  it("leaves the database untouched when the config is refused", async () => {
    const dir = t.dir()
    const first = await t.router({ dir, config: { providers: { keep: { endpoint: "http://127.0.0.1:9/v1", models: ["k"] } } } })
    await t.stop(first)
    await refusedWith({ dir, config: { providers: { keep: { endpoint: "not a url" } } } })
    const again = await t.router({ dir, config: { providers: { keep: { endpoint: "http://127.0.0.1:9/v1", models: ["k"] } } } })
    expect(await modelIds(again)).toEqual(["k", "keep+k"])
  })
})

describe("a database that cannot be opened stops start-up, naming it", () => {
  it("a file that is not a database, and a directory", async () => {
    const dir = t.dir()
    const junk = join(dir, "junk.db")
    writeFileSync(junk, "this is not a database, just text long enough to have a header page ".repeat(100))
    const notADatabase = await refusedWith({ dir, flags: { db: junk } })
    expect(notADatabase).toBe(`Cannot open or migrate the database ${junk}: file is not a database`)
    const aDirectory = await refusedWith({ dir, flags: { db: dir } })
    expect(aDirectory).toContain(`Cannot open or migrate the database ${dir}: `)
  })
})

describe("ROUTER_LOG_LEVEL in the env given to Daemon.layer", () => {
  it("sets the level of everything the daemon logs, as it does from the command line", async () => {
    for (const [level, listening] of [["warn", false], ["info", true]] as const) {
      const logged: Array<string> = []
      const capture = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => void logged.push(String(message))))
      const daemon = Daemon.layer({ port: 0, host: "127.0.0.1", db: join(t.dir(), "router.db") }, { ROUTER_LOG_LEVEL: level })
      await Effect.runPromise(Effect.scoped(Layer.build(daemon)).pipe(Effect.provide(capture)))
      expect(logged.some((m) => m.startsWith("Listening on"))).toBe(listening)
    }
  })
})

describe("binding", () => {
  it("refuses a non-loopback --host without ROUTER_CLIENT_KEY, before creating the database", async () => {
    const dir = t.dir()
    const message = await refusedWith({ dir, flags: { host: "0.0.0.0" } })
    expect(message).toContain("0.0.0.0")
    expect(message).toContain("ROUTER_CLIENT_KEY")
    expect(existsSync(join(dir, "router.db"))).toBe(false)
  })

  it("refuses a non-loopback ROUTER_HOST or server.host without ROUTER_CLIENT_KEY", async () => {
    const fromEnv = await refusedWith({ dir: t.dir(), flags: { host: undefined }, env: { ROUTER_HOST: "0.0.0.0" } })
    expect(fromEnv).toContain("ROUTER_CLIENT_KEY")
    const fromFile = await refusedWith({ dir: t.dir(), flags: { host: undefined }, config: { server: { host: "0.0.0.0" } } })
    expect(fromFile).toContain("ROUTER_CLIENT_KEY")
  })

  it("lets --host 127.0.0.1 override a non-loopback ROUTER_HOST", async () => {
    const router = await t.router({ flags: { host: "127.0.0.1" }, env: { ROUTER_HOST: "0.0.0.0" } })
    expect((await getJson(`${router.url}/health`)).status).toBe(200)
  })

  it("refuses a port outside 0-65535", async () => {
    const message = await refusedWith({ dir: t.dir(), flags: { port: 99999 } })
    expect(message).toContain("99999")
  })

  it("listens on server.port from the file when neither flag nor environment gives one", async () => {
    const port = await freePort()
    const router = await t.router({ flags: { port: undefined }, config: { server: { port } } })
    expect(router.port).toBe(port)
  })

  it("prefers ROUTER_PORT over server.port, and --port over ROUTER_PORT", async () => {
    const [filePort, envPort, flagPort] = [await freePort(), await freePort(), await freePort()]
    const envWins = await t.router({ flags: { port: undefined }, env: { ROUTER_PORT: String(envPort) }, config: { server: { port: filePort } } })
    expect(envWins.port).toBe(envPort)
    await t.stop(envWins)
    const flagWins = await t.router({ flags: { port: flagPort }, env: { ROUTER_PORT: String(envPort) }, config: { server: { port: filePort } } })
    expect(flagWins.port).toBe(flagPort)
  })
})

describe("request body limit", () => {
  const bigBody = (size: number) => ({ model: "m", messages: [{ role: "user", content: "x".repeat(size) }] })

  it("applies server.max_body_bytes from the file", async () => {
    const router = await t.router({ config: { server: { max_body_bytes: 1024 } } })
    const res = await postJson(`${router.url}/v1/chat/completions`, bigBody(4096))
    expect(res.status).toBe(413)
  })

  it("prefers ROUTER_MAX_BODY_BYTES over the file", async () => {
    const router = await t.router({ config: { server: { max_body_bytes: 1024 } }, env: { ROUTER_MAX_BODY_BYTES: "100000" } })
    const res = await postJson(`${router.url}/v1/chat/completions`, bigBody(4096))
    expect(res.status).not.toBe(413)
    expect(res.status).toBe(404) // the model is unknown: the body was read and parsed
  })
})

describe("keys", () => {
  it("answers 401 on /admin/* while ROUTER_ADMIN_KEY is unset, whatever key is presented", async () => {
    const router = await t.router({ env: { ROUTER_CLIENT_KEY: "client-k" } })
    for (const headers of [{}, { authorization: "Bearer client-k" }, { "x-api-key": "anything" }]) {
      const res = await getJson(`${router.url}/admin/providers`, headers)
      expect(res.status, JSON.stringify(headers)).toBe(401)
      expect(res.body).toMatchObject({ error: { message: expect.stringContaining("ROUTER_ADMIN_KEY") } })
    }
    expect((await postJson(`${router.url}/admin/providers`, {})).status).toBe(401)
  })

  it("opens /admin/* only to ROUTER_ADMIN_KEY once it is set (the client key does not open it)", async () => {
    const router = await t.router({ env: { ROUTER_ADMIN_KEY: "admin-k", ROUTER_CLIENT_KEY: "client-k" } })
    expect((await getJson(`${router.url}/admin/x`)).status).toBe(401)
    expect((await getJson(`${router.url}/admin/x`, { authorization: "Bearer client-k" })).status).toBe(401)
    expect((await getJson(`${router.url}/admin/x`, { authorization: "Bearer wrong" })).status).toBe(401)
    expect((await getJson(`${router.url}/admin/x`, { authorization: "Bearer admin-k" })).status).not.toBe(401)
  })

  it("requires ROUTER_CLIENT_KEY on /v1/* when set, but not on /health", async () => {
    const router = await t.router({ env: { ROUTER_CLIENT_KEY: "client-k" } })
    expect((await getJson(`${router.url}/health`)).status).toBe(200)
    expect((await getJson(`${router.url}/v1/models`)).status).toBe(401)
    expect((await getJson(`${router.url}/v1/models`, { authorization: "Bearer nope" })).status).toBe(401)
    expect((await chat(router, "m")).status).toBe(401)
    expect((await getJson(`${router.url}/v1/models`, { authorization: "Bearer client-k" })).status).toBe(200)
    expect((await getJson(`${router.url}/v1/models`, { "x-api-key": "client-k" })).status).toBe(200)
  })

  it("leaves /v1/* open on loopback when ROUTER_CLIENT_KEY is unset", async () => {
    const router = await t.router()
    expect((await getJson(`${router.url}/v1/models`)).status).toBe(200)
  })
})
