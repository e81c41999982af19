/**
 * What every route of the HTTP surface gets from `guarded`: even a defect (a bug in a handler) is
 * answered in the OpenAI error shape with the request's id, and logged, never as an empty 500.
 */
import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Logger } from "effect"
import { createServer } from "node:http"
import { clientKeyCheck } from "../../src/http/Auth.js"
import { guarded } from "../../src/http/Routes.js"

describe("guarded", () => {
  it.scopedLive("answers a handler's defect with an OpenAI-shaped 500 carrying the request id, and logs it", () =>
    Effect.gen(function* () {
      const logged: Array<string> = []
      const app = HttpLayerRouter.use((router) => router.add("GET", "/boom", guarded(clientKeyCheck(null), () => Effect.die(new Error("a bug")))))
      const served = HttpLayerRouter.serve(app, { disableLogger: true, disableListenLog: true }).pipe(
        Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" }))
      )
      const context = yield* Layer.build(served).pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, Logger.make(({ message, cause }) => void logged.push(`${String(message)} ${String(cause)}`))))
      )
      const address = Context.get(context, HttpServer.HttpServer).address
      if (address._tag !== "TcpAddress") throw new Error("expected a TCP address")
      const res = yield* Effect.promise(() => fetch(`http://127.0.0.1:${address.port}/boom`, { headers: { "x-request-id": "boom-1" } }))
      expect(res.status).toBe(500)
      expect(res.headers.get("x-request-id")).toBe("boom-1")
      expect(yield* Effect.promise(() => res.json())).toEqual({
        error: { message: "Internal router error", type: "server_error", param: null, code: "internal_error" }
      })
      expect(logged.some((l) => l.startsWith("request failed unexpectedly") && l.includes("a bug"))).toBe(true)
    }))
})
