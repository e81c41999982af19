/**
 * Helpers shared by the configuration, persistence and CLI tests: a typed handle on
 * `better-sqlite3` (it ships no types here), free ports, temp directories and small HTTP calls.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { createRequire } from "node:module"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type FakeServer, type FakeServerOptions, startFakeServer } from "../../src/testing/FakeServer.js"
import { type RouterUnderTest, startRouter, type StartOptions } from "../kit/TestRouter.js"

export interface SqliteStatement {
  get(...params: ReadonlyArray<unknown>): unknown
  all(...params: ReadonlyArray<unknown>): Array<unknown>
  run(...params: ReadonlyArray<unknown>): { readonly changes: number }
}

export interface SqliteDatabase {
  prepare(sql: string): SqliteStatement
  close(): void
}

type SqliteConstructor = new (
  filename: string,
  options?: { readonly readonly?: boolean; readonly fileMustExist?: boolean }
) => SqliteDatabase

const require = createRequire(import.meta.url)
const Sqlite = require("better-sqlite3") as SqliteConstructor

/** Opens the router's database file; read-only unless `write` (only done while the daemon is stopped). */
export const openDb = (path: string, options: { readonly write?: boolean } = {}): SqliteDatabase =>
  new Sqlite(path, { readonly: options.write !== true, fileMustExist: true })

/** Runs `f` on the database and closes it again. */
export const withDb = <A>(path: string, f: (db: SqliteDatabase) => A, options: { readonly write?: boolean } = {}): A => {
  const db = openDb(path, options)
  try {
    return f(db)
  } finally {
    db.close()
  }
}

export interface ProviderRowOut {
  readonly id: string
  readonly source: string
  readonly endpoint: string
  readonly provider_type: string
  readonly models: string | null
  readonly priority: number
  readonly supports_tools: number | null
  readonly supports_streaming: number | null
  readonly supports_multimodal: number | null
  readonly timeouts: string
  readonly api_key_fingerprint: string | null
  readonly max_connections: number | null
  readonly updated_at: number
}

export interface AliasRowOut {
  readonly name: string
  readonly source: string
  readonly targets: string
}

export const providerRows = (dbPath: string): ReadonlyArray<ProviderRowOut> =>
  withDb(dbPath, (db) => db.prepare("SELECT * FROM providers ORDER BY id").all() as Array<ProviderRowOut>)

export const aliasRows = (dbPath: string): ReadonlyArray<AliasRowOut> =>
  withDb(dbPath, (db) => db.prepare("SELECT name, source, targets FROM aliases ORDER BY name").all() as Array<AliasRowOut>)

/** A provider row as the config API would write it (source 'api'), inserted while the daemon is stopped. */
export const insertApiProvider = (
  dbPath: string,
  row: { readonly id: string; readonly endpoint: string; readonly models: ReadonlyArray<string> | null; readonly priority?: number }
) =>
  withDb(dbPath, (db) =>
    db.prepare(
      `INSERT INTO providers (id, source, endpoint, provider_type, models, priority, supports_tools, supports_streaming,
         supports_multimodal, timeouts, api_key_fingerprint, updated_at)
       VALUES (?, 'api', ?, 'openai_compat', ?, ?, NULL, NULL, NULL, ?, NULL, ?)`
    ).run(
      row.id,
      row.endpoint,
      row.models === null ? null : JSON.stringify(row.models),
      row.priority ?? 100,
      JSON.stringify({ connectMs: 5000, firstByteMs: 60000, totalMs: 600000 }),
      Date.now()
    ), { write: true })

export const insertApiAlias = (dbPath: string, name: string, targets: ReadonlyArray<string>) =>
  withDb(dbPath, (db) =>
    db.prepare("INSERT INTO aliases (name, source, targets, updated_at) VALUES (?, 'api', ?, ?)")
      .run(name, JSON.stringify(targets), Date.now()), { write: true })

/** A port nothing listens on right now (the usual small race is accepted). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

export const tempDir = (prefix = "sanctum-cfg-"): string => mkdtempSync(join(tmpdir(), prefix))

export const removeDir = (dir: string) => rmSync(dir, { recursive: true, force: true })

export interface JsonResponse {
  readonly status: number
  readonly body: unknown
  readonly headers: Headers
}

/** A response with its body parsed as JSON, or kept as text when it is not JSON. */
const readJson = async (res: Response): Promise<JsonResponse> => {
  const text = await res.text()
  let body: unknown = text
  try {
    body = JSON.parse(text)
  } catch {
    // not JSON: the raw text is kept
  }
  return { status: res.status, body, headers: res.headers }
}

export const getJson = async (url: string, headers: Record<string, string> = {}): Promise<JsonResponse> =>
  readJson(await fetch(url, { headers }))

export const postJson = async (url: string, payload: unknown, headers: Record<string, string> = {}): Promise<JsonResponse> =>
  readJson(
    await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: typeof payload === "string" ? payload : JSON.stringify(payload)
    })
  )

/** The ids `GET /v1/models` lists, sorted. */
export const modelIds = async (router: { readonly url: string }, headers: Record<string, string> = {}): Promise<Array<string>> => {
  const res = await getJson(`${router.url}/v1/models`, headers)
  if (res.status !== 200) throw new Error(`GET /v1/models answered ${res.status}: ${JSON.stringify(res.body)}`)
  const data = (res.body as { data: ReadonlyArray<{ id: string }> }).data
  return data.map((m) => m.id).sort()
}

export const chat = (router: { readonly url: string }, model: string, headers: Record<string, string> = {}) =>
  postJson(`${router.url}/v1/chat/completions`, { model, messages: [{ role: "user", content: "hi" }] }, headers)

/** Remembers every router and fake started, so `afterEach` stops them all (routers first). */
export const tracker = () => {
  const routers: Array<RouterUnderTest> = []
  const fakes: Array<FakeServer> = []
  const dirs: Array<string> = []
  return {
    router: async (options?: StartOptions) => {
      const r = await startRouter(options)
      routers.push(r)
      return r
    },
    /** Stops a router but keeps its directory, for a restart on the same database. */
    stop: async (router: RouterUnderTest) => {
      const i = routers.indexOf(router)
      if (i >= 0) routers.splice(i, 1)
      if (!dirs.includes(router.dir)) dirs.push(router.dir)
      await router.close({ keepDir: true })
    },
    fake: async (options?: FakeServerOptions) => {
      const f = await startFakeServer(options)
      fakes.push(f)
      return f
    },
    dir: () => {
      const d = tempDir()
      dirs.push(d)
      return d
    },
    closeAll: async () => {
      for (const r of routers.splice(0)) await r.close().catch(() => undefined)
      for (const f of fakes.splice(0)) await f.close().catch(() => undefined)
      for (const d of dirs.splice(0)) removeDir(d)
    }
  }
}
