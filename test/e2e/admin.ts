/**
 * Helpers for the admin API tests: an admin-key call with a JSON body, a 200 JSON reader, and the
 * daemon started with its layer context in reach, to look at what the request path sees.
 */
import { HttpServer } from "@effect/platform"
import { ConfigProvider, Context, Effect, Exit, Layer, Logger, LogLevel, Scope } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { expect } from "vitest"
import * as Daemon from "../../src/Daemon.js"
import { Credits } from "../../src/credits/Credits.js"
import { Sessions } from "../../src/policy/Sessions.js"
import { Providers } from "../../src/providers/Providers.js"

export const adminKey = "admin-key-for-admin-api-tests"

/** An admin call with a JSON body (a string is sent as is); `headers` replace the admin key. */
export const adminCall = (
  router: { readonly url: string },
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = { authorization: `Bearer ${adminKey}` }
): Promise<Response> =>
  fetch(`${router.url}${path}`, {
    method,
    headers: { "content-type": "application/json", ...headers },
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) })
  })

/** The admin key plus a session id. */
export const asSession = (id: string): Record<string, string> => ({ authorization: `Bearer ${adminKey}`, "x-router-session-id": id })

/** A response that must be 200 JSON, parsed. */
export const okJson = async (res: Response): Promise<unknown> => {
  const text = await res.text()
  expect(res.status, text).toBe(200)
  expect(res.headers.get("content-type") ?? "").toContain("application/json")
  return JSON.parse(text)
}

/** The daemon (admin key set) with its layer context in reach. */
export const startWithContext = async (config: object) => {
  const dir = mkdtempSync(join(tmpdir(), "sanctum-admin-"))
  writeFileSync(join(dir, "router.yaml"), JSON.stringify(config))
  const env = { ROUTER_ADMIN_KEY: adminKey }
  const layer = Daemon.layer({ config: join(dir, "router.yaml"), port: 0, host: "127.0.0.1", db: join(dir, "router.db") }, env).pipe(
    Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))),
    Layer.provide(Logger.minimumLogLevel(LogLevel.Error))
  )
  const scope = Effect.runSync(Scope.make())
  const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
  const address = Context.get(context, HttpServer.HttpServer).address
  if (address._tag !== "TcpAddress") throw new Error("expected a TCP address")
  return {
    url: `http://127.0.0.1:${address.port}`,
    providers: Context.get(context, Providers),
    sessions: Context.get(context, Sessions),
    credits: Context.get(context, Credits),
    close: async () => {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
