/**
 * What the daemon keeps in SQLite across restarts: the file's providers and aliases rewritten on
 * every start (file wins, removals disappear), API-sourced records kept, request records with their
 * attempts, and provider keys never stored in plain text.
 */
import { createHash } from "node:crypto"
import { existsSync, readFileSync } from "node:fs"
import { afterEach, describe, expect, it } from "vitest"
import {
  aliasRows,
  chat,
  insertApiAlias,
  insertApiProvider,
  modelIds,
  providerRows,
  tracker,
  withDb
} from "./support.js"

const t = tracker()
afterEach(() => t.closeAll())

const endpoint = "http://127.0.0.1:9/v1"

describe("the file's records on restart", () => {
  it("writes providers and aliases as the file says, with source 'file'", async () => {
    const router = await t.router({
      config: {
        providers: {
          alpha: {
            endpoint: `${endpoint}/`,
            provider_type: "venice",
            models: ["m1", "m2"],
            priority: 10,
            supports_tools: false,
            supports_streaming: true,
            timeouts: { connect: 2, first_byte: 30, total: 90 },
            max_connections: 4
          },
          beta: { endpoint, models: ["m3"] }
        },
        aliases: { fast: "alpha+m1", chain: ["alpha+m2", "m3"] }
      }
    })
    await t.stop(router)
    const [alpha, beta] = providerRows(router.dbPath)
    expect(alpha).toMatchObject({
      id: "alpha",
      source: "file",
      endpoint,
      provider_type: "venice",
      priority: 10,
      supports_tools: 0,
      supports_streaming: 1,
      supports_multimodal: null,
      api_key_fingerprint: null,
      max_connections: 4
    })
    expect(JSON.parse(alpha!.models!)).toEqual(["m1", "m2"])
    expect(JSON.parse(alpha!.timeouts)).toEqual({ connectMs: 2_000, firstByteMs: 30_000, idleMs: 30_000, totalMs: 90_000 })
    expect(beta).toMatchObject({ id: "beta", source: "file", provider_type: "openai_compat", priority: 100, supports_tools: null, max_connections: 256 })
    expect(JSON.parse(beta!.timeouts)).toEqual({ connectMs: 5_000, firstByteMs: 60_000, idleMs: 30_000, totalMs: 600_000 })
    expect(aliasRows(router.dbPath).map((a) => ({ ...a, targets: JSON.parse(a.targets) }))).toEqual([
      { name: "chain", source: "file", targets: ["alpha+m2", "m3"] },
      { name: "fast", source: "file", targets: ["alpha+m1"] }
    ])
  })

  it("stores `models` omitted as NULL (discovered), not as an empty list", async () => {
    const router = await t.router({ config: { providers: { disc: { endpoint }, empty: { endpoint, models: [] } } } })
    await t.stop(router)
    const rows = providerRows(router.dbPath)
    expect(rows.find((r) => r.id === "disc")?.models).toBeNull()
    expect(rows.find((r) => r.id === "empty")?.models).toBe("[]")
  })

  it("follows an edited file: priority changed, a provider removed, an alias changed", async () => {
    const first = await t.router({
      config: {
        providers: { alpha: { endpoint, models: ["m1"], priority: 10 }, beta: { endpoint, models: ["m2"] } },
        aliases: { fast: "alpha+m1", old: "m2" }
      }
    })
    expect(await modelIds(first)).toEqual(["alpha+m1", "beta+m2", "fast", "m1", "m2", "old"])
    await t.stop(first)

    const second = await t.router({
      dir: first.dir,
      config: {
        providers: { alpha: { endpoint, models: ["m1", "m4"], priority: 3 } },
        aliases: { fast: ["alpha+m4", "m1"] }
      }
    })
    expect(await modelIds(second)).toEqual(["alpha+m1", "alpha+m4", "fast", "m1", "m4"])
    await t.stop(second)

    const providers = providerRows(first.dbPath)
    expect(providers.map((p) => [p.id, p.source, p.priority])).toEqual([["alpha", "file", 3]])
    expect(JSON.parse(providers[0]!.models!)).toEqual(["m1", "m4"])
    expect(aliasRows(first.dbPath).map((a) => [a.name, a.source, JSON.parse(a.targets)])).toEqual([
      ["fast", "file", ["alpha+m4", "m1"]]
    ])
  })

  it("routes by the edited priority after a restart", async () => {
    const one = await t.fake({ name: "one", models: ["shared"] })
    const two = await t.fake({ name: "two", models: ["shared"] })
    const config = (p1: number, p2: number) => ({
      providers: { one: { endpoint: one.url, models: ["shared"], priority: p1 }, two: { endpoint: two.url, models: ["shared"], priority: p2 } }
    })
    const first = await t.router({ config: config(1, 2) })
    expect((await chat(first, "shared")).status).toBe(200)
    expect((await first.records(1))[0]?.provider).toBe("one")
    await t.stop(first)
    const second = await t.router({ dir: first.dir, config: config(2, 1) })
    expect((await chat(second, "shared")).status).toBe(200)
    expect((await second.records(1))[0]?.provider).toBe("two")
  })

  it("drops every file record when the file no longer defines providers or aliases", async () => {
    const first = await t.router({ config: { providers: { alpha: { endpoint, models: ["m1"] } }, aliases: { fast: "alpha+m1" } } })
    await t.stop(first)
    const second = await t.router({ dir: first.dir, config: { providers: {}, aliases: null } })
    expect(await modelIds(second)).toEqual([])
    await t.stop(second)
    expect(providerRows(first.dbPath)).toEqual([])
    expect(aliasRows(first.dbPath)).toEqual([])
  })
})

describe("records created at runtime (source 'api')", () => {
  it("keeps an 'api' provider and alias across restarts and serves them, even if the file never mentions them", async () => {
    const fake = await t.fake({ name: "manual", models: ["m9"] })
    const first = await t.router({ config: { providers: { alpha: { endpoint, models: ["m1"] } } } })
    await t.stop(first)

    insertApiProvider(first.dbPath, { id: "manual", endpoint: fake.url, models: ["m9"], priority: 50 })
    insertApiAlias(first.dbPath, "handmade", ["manual+m9"])

    const second = await t.router({ dir: first.dir, config: { providers: { alpha: { endpoint, models: ["m1", "m2"] } } } })
    expect(await modelIds(second)).toEqual(["alpha+m1", "alpha+m2", "handmade", "m1", "m2", "m9", "manual+m9"])
    // An api provider has no key yet (keys are never stored): it is called without one.
    const res = await chat(second, "handmade")
    expect(res.status).toBe(200)
    const sent = fake.requests.find((r) => r.path === "/chat/completions")
    expect(sent?.headers.authorization).toBeUndefined()
    await t.stop(second)

    // A third start without any config file keeps them too.
    const third = await t.router({ dir: first.dir })
    expect(await modelIds(third)).toEqual(["handmade", "m9", "manual+m9"])
    await t.stop(third)

    expect(providerRows(first.dbPath).map((p) => [p.id, p.source])).toEqual([["manual", "api"]])
    expect(aliasRows(first.dbPath).map((a) => [a.name, a.source])).toEqual([["handmade", "api"]])
  })

  it("accepts a file alias that pins an 'api' provider, and routes through it", async () => {
    const fake = await t.fake({ name: "manual", models: ["m9"] })
    const first = await t.router({ config: { providers: { alpha: { endpoint, models: ["m1"] } } } })
    await t.stop(first)
    insertApiProvider(first.dbPath, { id: "manual", endpoint: fake.url, models: ["m9"], priority: 50 })

    const second = await t.router({ dir: first.dir, config: { providers: { alpha: { endpoint, models: ["m1"] } }, aliases: { best: ["manual+m9"] } } })
    const res = await chat(second, "best")
    expect(res.status).toBe(200)
    expect(fake.requests.filter((r) => r.path === "/chat/completions")).toHaveLength(1)
    await t.stop(second)
  })

  it("lets the file win over an 'api' record with the same id or name", async () => {
    const first = await t.router()
    await t.stop(first)
    insertApiProvider(first.dbPath, { id: "dup", endpoint: "http://127.0.0.1:8/v1", models: ["api-model"], priority: 7 })
    insertApiAlias(first.dbPath, "fast", ["api-model"])

    const second = await t.router({
      dir: first.dir,
      config: { providers: { dup: { endpoint, models: ["file-model"], priority: 20 } }, aliases: { fast: "dup+file-model" } }
    })
    expect(await modelIds(second)).toEqual(["dup+file-model", "fast", "file-model"])
    await t.stop(second)

    const [dup] = providerRows(first.dbPath)
    expect(dup).toMatchObject({ id: "dup", source: "file", endpoint, priority: 20 })
    expect(aliasRows(first.dbPath).map((a) => [a.name, a.source, JSON.parse(a.targets)])).toEqual([["fast", "file", ["dup+file-model"]]])
  })
})

describe("request records", () => {
  it("writes each routed request to the `requests` table with its attempts as JSON", async () => {
    const fake = await t.fake({ name: "alpha", models: ["m1"] })
    const router = await t.router({ config: { providers: { alpha: { endpoint: fake.url, models: ["m1"] } } } })
    const res = await chat(router, "m1", { "x-request-id": "req-cfg-test-1" })
    expect(res.status).toBe(200)
    expect(await router.records(5)).toHaveLength(1) // flushes the queue
    await t.stop(router)

    const rows = withDb(router.dbPath, (db) => db.prepare("SELECT * FROM requests").all()) as Array<Record<string, unknown>>
    expect(rows).toHaveLength(1)
    const row = rows[0]!
    expect(row).toMatchObject({
      request_id: "req-cfg-test-1",
      endpoint: "chat",
      model: "m1",
      stream: 0,
      provider: "alpha",
      upstream_model: "m1",
      status: 200,
      outcome: "ok",
      error: null
    })
    expect(typeof row.created_at).toBe("number")
    expect(typeof row.duration_ms).toBe("number")
    expect(row.prompt_tokens).toEqual(expect.any(Number))
    expect(row.completion_tokens).toEqual(expect.any(Number))
    const attempts = JSON.parse(row.attempts as string) as Array<Record<string, unknown>>
    expect(attempts).toHaveLength(1)
    expect(attempts[0]).toMatchObject({ provider: "alpha", upstreamModel: "m1", status: 200 })
  })

  it("records every attempt of a failover, and the provider that served", async () => {
    const bad = await t.fake({ name: "bad", models: ["shared"], behaviour: { mode: "status", status: 503 } })
    const good = await t.fake({ name: "good", models: ["shared"] })
    const router = await t.router({
      config: {
        providers: {
          bad: { endpoint: bad.url, models: ["shared"], priority: 1 },
          good: { endpoint: good.url, models: ["shared"], priority: 2 }
        }
      }
    })
    expect((await chat(router, "shared")).status).toBe(200)
    await t.stop(router) // queued records are written before the database closes

    const rows = withDb(router.dbPath, (db) => db.prepare("SELECT provider, status, outcome, attempts FROM requests").all()) as Array<
      { provider: string; status: number; outcome: string; attempts: string }
    >
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ provider: "good", status: 200, outcome: "ok" })
    const attempts = JSON.parse(rows[0]!.attempts) as Array<{ provider: string; status: number | null }>
    expect(attempts[0]).toMatchObject({ provider: "bad", status: 503 })
    expect(attempts[attempts.length - 1]).toMatchObject({ provider: "good", status: 200 })
  })

  it("records a request that failed, with its outcome and error", async () => {
    const bad = await t.fake({ name: "bad", models: ["m"], behaviour: { mode: "status", status: 500 } })
    const router = await t.router({ config: { providers: { bad: { endpoint: bad.url, models: ["m"] } } } })
    const res = await chat(router, "m")
    expect(res.status).toBeGreaterThanOrEqual(500)
    await t.stop(router)
    const rows = withDb(router.dbPath, (db) => db.prepare("SELECT status, outcome, attempts FROM requests").all()) as Array<
      { status: number; outcome: string; attempts: string }
    >
    expect(rows).toHaveLength(1)
    expect(rows[0]!.outcome).not.toBe("ok")
    expect(rows[0]!.status).toBe(res.status)
    expect((JSON.parse(rows[0]!.attempts) as Array<unknown>).length).toBeGreaterThan(0)
  })

  it("keeps request records across restarts", async () => {
    const fake = await t.fake({ name: "alpha", models: ["m1"] })
    const config = { providers: { alpha: { endpoint: fake.url, models: ["m1"] } } }
    const first = await t.router({ config })
    await chat(first, "m1")
    await t.stop(first)
    const second = await t.router({ dir: first.dir, config })
    await chat(second, "m1")
    expect(await second.records(10)).toHaveLength(2)
  })
})

describe("provider keys", () => {
  const fingerprintOf = (key: string) => `sha256:${createHash("sha256").update(key).digest("hex").slice(0, 12)}`

  /** Every byte SQLite wrote for this database (main file, WAL and shared memory, if present). */
  const databaseBytes = (dbPath: string) =>
    Buffer.concat([dbPath, `${dbPath}-wal`, `${dbPath}-shm`, `${dbPath}-journal`].filter(existsSync).map((p) => readFileSync(p)))

  it("never stores a provider key in plain text, only its sha256 fingerprint", async () => {
    const fileKey = "sk-file-PLAINTEXT-7f3a9c"
    const envKey = "sk-env-PLAINTEXT-41d2be"
    const alpha = await t.fake({ name: "alpha", models: ["m1"] })
    const beta = await t.fake({ name: "beta", models: ["m2"] })
    const router = await t.router({
      config: {
        providers: {
          alpha: { endpoint: alpha.url, api_key: fileKey, models: ["m1"] },
          beta: { endpoint: beta.url, api_key: "${BETA_KEY}", models: ["m2"] }
        }
      },
      env: { BETA_KEY: envKey }
    })
    // The keys are really in use...
    expect((await chat(router, "m1")).status).toBe(200)
    expect((await chat(router, "m2")).status).toBe(200)
    expect(alpha.requests.find((r) => r.path === "/chat/completions")?.headers.authorization).toBe(`Bearer ${fileKey}`)
    expect(beta.requests.find((r) => r.path === "/chat/completions")?.headers.authorization).toBe(`Bearer ${envKey}`)
    // ...and the database, read while the daemon runs and after it stopped, has neither.
    for (const key of [fileKey, envKey]) expect(databaseBytes(router.dbPath).includes(key)).toBe(false)
    await t.stop(router)
    const bytes = databaseBytes(router.dbPath)
    for (const key of [fileKey, envKey]) {
      expect(bytes.includes(key)).toBe(false)
      expect(bytes.includes(Buffer.from(key, "utf16le"))).toBe(false)
    }

    const rows = providerRows(router.dbPath)
    expect(rows.map((r) => [r.id, r.api_key_fingerprint])).toEqual([
      ["alpha", fingerprintOf(fileKey)],
      ["beta", fingerprintOf(envKey)]
    ])
    const columns = withDb(router.dbPath, (db) => db.prepare("SELECT name FROM pragma_table_info('providers')").all()) as Array<{ name: string }>
    expect(columns.map((c) => c.name)).toContain("api_key_fingerprint")
    expect(columns.map((c) => c.name)).not.toContain("api_key")
  })

  it("takes the key from the file again on every start, and updates the fingerprint when it changes", async () => {
    const fake = await t.fake({ name: "alpha", models: ["m1"] })
    const config = (key: string) => ({ providers: { alpha: { endpoint: fake.url, api_key: key, models: ["m1"] } } })
    const first = await t.router({ config: config("sk-first-key") })
    await t.stop(first)
    expect(providerRows(first.dbPath)[0]?.api_key_fingerprint).toBe(fingerprintOf("sk-first-key"))

    const second = await t.router({ dir: first.dir, config: config("sk-second-key") })
    expect((await chat(second, "m1")).status).toBe(200)
    expect(fake.requests.find((r) => r.path === "/chat/completions")?.headers.authorization).toBe("Bearer sk-second-key")
    await t.stop(second)
    expect(providerRows(first.dbPath)[0]?.api_key_fingerprint).toBe(fingerprintOf("sk-second-key"))
    expect(databaseBytes(first.dbPath).includes("sk-second-key")).toBe(false)
    expect(databaseBytes(first.dbPath).includes("sk-first-key")).toBe(false)
  })
})
