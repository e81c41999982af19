/**
 * The routes served through @effect/platform's `HttpLayerRouter`: health, the model list, and the
 * closed-by-default admin surface. The two hot endpoints live in `FastLane.ts`.
 */
import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Clock, Effect } from "effect"
import { Settings } from "../config/Settings.js"
import { ModelNotFound, type Unauthorized } from "../domain/Errors.js"
import { Health } from "../health/Health.js"
import { Providers } from "../providers/Providers.js"
import { adminKeyCheck, clientKeyCheck, type KeyCheck } from "./Auth.js"
import { type HttpError, MethodNotAllowed, RouteNotFound, toErrorResponse } from "./Errors.js"
import { requestIdOf } from "./FastLane.js"

const errorResponse = (e: HttpError, requestId: string) => {
  const r = toErrorResponse(e)
  return HttpServerResponse.text(r.body, {
    status: r.status,
    contentType: "application/json",
    headers: { "x-request-id": requestId, ...r.headers }
  })
}

/**
 * Wraps a handler with a key check, the request id and the OpenAI error shape; the handler gets
 * the request and the id.
 */
const guarded = <E extends HttpError>(
  keys: KeyCheck,
  handler: (req: HttpServerRequest.HttpServerRequest, requestId: string) => Effect.Effect<HttpServerResponse.HttpServerResponse, E>
) =>
(req: HttpServerRequest.HttpServerRequest) => {
  const requestId = requestIdOf(NodeHttpServerRequest.toIncomingMessage(req))
  const denied: Unauthorized | null = keys.check(NodeHttpServerRequest.toIncomingMessage(req).headers)
  if (denied !== null) return Effect.succeed(errorResponse(denied, requestId))
  return handler(req, requestId).pipe(
    Effect.map(HttpServerResponse.setHeader("x-request-id", requestId)),
    Effect.catchAll((e) => Effect.succeed(errorResponse(e, requestId)))
  )
}

const pathOf = (req: HttpServerRequest.HttpServerRequest) => req.url.split("?")[0] ?? req.url

export const layer = HttpLayerRouter.use((router) =>
  Effect.gen(function* () {
    const settings = yield* Settings
    const providers = yield* Providers
    const health = yield* Health
    const client = clientKeyCheck(settings.clientKey)
    const admin = adminKeyCheck(settings.adminKey)
    const open: KeyCheck = { check: () => null }

    const healthy = HttpServerResponse.unsafeJson({ status: "ok" })
    yield* router.add("GET", "/health", healthy)
    yield* router.add(
      "GET",
      "/v1/models",
      guarded(client, () => Effect.succeed(HttpServerResponse.unsafeJson({ object: "list", data: providers.index().list })))
    )

    // Model ids contain `/` (`meta-llama/Llama-3.3-70B-Instruct`), so the id is the rest of the path.
    yield* router.add(
      "GET",
      "/v1/models/*",
      guarded(client, (req) => {
        const id = decodeURIComponent(pathOf(req).slice("/v1/models/".length))
        const entry = providers.index().list.find((m) => m.id === id)
        return entry === undefined ? Effect.fail(new ModelNotFound({ model: id })) : Effect.succeed(HttpServerResponse.unsafeJson(entry))
      })
    )

    // Other methods on known paths get 405 with `Allow`, not 404. (A `*` route would clash with
    // the GET routes; POST on the two hot paths never gets here, the fast lane answers it.)
    const methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const
    const known = [["/v1/chat/completions", "POST"], ["/v1/embeddings", "POST"], ["/v1/models", "GET"], ["/health", "GET"]] as const
    for (const [path, allowed] of known) {
      for (const method of methods) {
        if (method === allowed) continue
        yield* router.add(
          method,
          path,
          guarded(path === "/health" ? open : client, (req) => Effect.fail(new MethodNotAllowed({ method: req.method, path, allowed })))
        )
      }
    }

    // Each provider's circuit, rate limits, credit state and passive statistics.
    yield* router.add(
      "GET",
      "/admin/status",
      guarded(admin, () =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          const ids = [...providers.index().providers.keys()].sort()
          return HttpServerResponse.unsafeJson({ providers: health.status(ids, now) })
        }))
    )

    // The admin surface is closed until ROUTER_ADMIN_KEY is set; more routes arrive with later features.
    yield* router.add("*", "/admin/*", guarded(admin, (req) => Effect.fail(new RouteNotFound({ method: req.method, path: pathOf(req) }))))
    yield* router.add("*", "/v1/*", guarded(client, (req) => Effect.fail(new RouteNotFound({ method: req.method, path: pathOf(req) }))))
    yield* router.add("*", "*", (req) =>
      // HEAD reaches the catch-all before the router's GET fallback; uptime checkers use it on /health.
      req.method === "HEAD" && pathOf(req) === "/health"
        ? Effect.succeed(healthy)
        : guarded(open, (r) => Effect.fail(new RouteNotFound({ method: r.method, path: pathOf(r) })))(req))
  })
)
