/**
 * Starts the real daemon in this process on an ephemeral port, with a real SQLite file in a temp
 * directory, exactly as `sanctum-router serve` would, and gives tests its address and records.
 */
import { HttpServer } from "@effect/platform"
import { ConfigProvider, Context, Effect, Exit, Layer, Logger, LogLevel, Scope } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Daemon from "../../src/Daemon.js"
import type { Flags } from "../../src/config/Settings.js"
import { RequestLog, type StoredRequest } from "../../src/persistence/RequestLog.js"
import { Providers } from "../../src/providers/Providers.js"

export interface RouterUnderTest {
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  /** `http://127.0.0.1:<port>/v1`, for the `openai` client's `baseURL`. */
  readonly baseURL: string
  readonly port: number
  readonly dir: string
  readonly dbPath: string
  /** The newest request records, newest first (queued records are flushed first). */
  readonly records: (limit?: number) => Promise<ReadonlyArray<StoredRequest>>
  /** Asks providers without a model list for theirs now, and waits for the answers. */
  readonly refreshModels: () => Promise<void>
  /** Stops the daemon; the temp directory is kept when `keepDir` (for restart tests). */
  readonly close: (options?: { readonly keepDir?: boolean }) => Promise<void>
}

export interface StartOptions {
  /** The config file: an object (written as JSON, which is YAML) or YAML text. */
  readonly config?: object | string
  /** Environment variables the daemon sees (nothing from the real environment leaks in). */
  readonly env?: Readonly<Record<string, string>>
  readonly flags?: Partial<Flags>
  /** Reuse a directory (and its database) from an earlier run. */
  readonly dir?: string
}

export const startRouter = async (options: StartOptions = {}): Promise<RouterUnderTest> => {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "sanctum-test-"))
  const dbPath = join(dir, "router.db")
  let configPath: string | undefined
  if (options.config !== undefined) {
    configPath = join(dir, "router.yaml")
    writeFileSync(configPath, typeof options.config === "string" ? options.config : JSON.stringify(options.config, null, 2))
  }
  const env = options.env ?? {}
  const flags: Flags = { config: configPath, port: 0, host: "127.0.0.1", db: dbPath, ...options.flags }
  const layer = Daemon.layer(flags, env).pipe(
    Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))),
    // Start-up chatter ("Listening on …") would drown the test output; warnings still show.
    Layer.provide(Logger.minimumLogLevel(LogLevel.Warning))
  )
  const scope = Effect.runSync(Scope.make())
  const built = await Effect.runPromiseExit(Layer.buildWithScope(layer, scope))
  if (Exit.isFailure(built)) {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    if (options.dir === undefined) rmSync(dir, { recursive: true, force: true })
    const failure = built.cause._tag === "Fail" ? built.cause.error : built.cause
    throw new Error((failure as { message?: string }).message ?? String(failure))
  }
  const context = built.value
  const address = Context.get(context, HttpServer.HttpServer).address
  if (address._tag !== "TcpAddress") throw new Error("expected a TCP address")
  const url = `http://127.0.0.1:${address.port}`
  return {
    url,
    baseURL: `${url}/v1`,
    port: address.port,
    dir,
    dbPath,
    records: (limit = 50) => Effect.runPromise(Context.get(context, RequestLog).recent(limit)),
    refreshModels: () => Effect.runPromise(Context.get(context, Providers).refresh),
    close: async (closeOptions) => {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      if (!closeOptions?.keepDir) rmSync(dir, { recursive: true, force: true })
    }
  }
}
