/**
 * The routes served through @effect/platform's `HttpLayerRouter`: health, the model list, and the
 * closed-by-default admin surface. The two hot endpoints live in `FastLane.ts`.
 */
import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Cause, Clock, Effect, Either, ParseResult, Schedule, Schema } from "effect"
import { METHODS } from "node:http"
import { Strategy } from "../config/ConfigFile.js"
import { RouterConfig } from "../config/RouterConfig.js"
import { Settings } from "../config/Settings.js"
import { InvalidRequest, ModelNotFound, PayloadTooLarge, type Unauthorized } from "../domain/Errors.js"
import { isTooDeep, nestedTooDeeply, parseChatRequest, parseEmbeddingRequest, parseJsonBody } from "../domain/OpenAi.js"
import { namesEachOnce, type RoutingConfig, routingFromJson, routingToJson, strategies } from "../domain/Routing.js"
import { Health } from "../health/Health.js"
import { Sessions } from "../policy/Sessions.js"
import { modelFromModels } from "../policy/Preferences.js"
import { decisionJson, summary } from "../policy/Rank.js"
import { type ModelIndex, Providers } from "../providers/Providers.js"
import { type Explanation, Router } from "../router/Router.js"
import { adminKeyCheck, clientKeyCheck, type KeyCheck, sessionKeyOf } from "./Auth.js"
import { type HttpError, internalErrorBody, MethodNotAllowed, RouteNotFound, toErrorResponse } from "./Errors.js"
import { collectBody, requestIdOf } from "./FastLane.js"

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
export const guarded = <E extends HttpError, R = never>(
  keys: KeyCheck,
  handler: (req: HttpServerRequest.HttpServerRequest, requestId: string) => Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
) =>
(req: HttpServerRequest.HttpServerRequest) => {
  const requestId = requestIdOf(NodeHttpServerRequest.toIncomingMessage(req))
  const denied: Unauthorized | null = keys.check(NodeHttpServerRequest.toIncomingMessage(req).headers)
  if (denied !== null) return Effect.succeed(errorResponse(denied, requestId))
  return handler(req, requestId).pipe(
    Effect.map(HttpServerResponse.setHeader("x-request-id", requestId)),
    Effect.catchAll((e) => Effect.succeed(errorResponse(e, requestId))),
    // A defect (a bug) is logged, and its answer is still OpenAI-shaped with its request id: the
    // platform's own would be an empty 500.
    Effect.catchAllDefect((defect) => Effect.as(Effect.logError("request failed unexpectedly", Cause.die(defect)), internalErrorResponse(requestId)))
  )
}

const internalErrorResponse = (requestId: string) =>
  HttpServerResponse.text(internalErrorBody, {
    status: 500,
    contentType: "application/json",
    headers: { "x-request-id": requestId }
  })

const pathOf = (req: HttpServerRequest.HttpServerRequest) => req.url.split("?")[0] ?? req.url

/**
 * The body as a JSON object, within the same size limit as the hot endpoints, read as they read
 * it. Not `req.text` with `withMaxBodySize`: past the limit the platform's reader destroys the
 * request, which on Node destroys the socket too, so a chunked upload over the limit got a reset
 * connection instead of its 413. A body a client leaves unfinished never ends: the platform
 * interrupts this fiber when the connection closes.
 */
const readJsonBody = (req: HttpServerRequest.HttpServerRequest, limit: number) =>
  Effect.async<Buffer, PayloadTooLarge>((resume) =>
    collectBody(NodeHttpServerRequest.toIncomingMessage(req), limit, (tooLarge, raw) =>
      resume(tooLarge === null ? Effect.succeed(raw) : Effect.fail(tooLarge)))
  ).pipe(Effect.flatMap((raw) => parseJsonBody(raw.toString("utf8"))))

const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join("")

/** Every problem of a body in one message; `param` names the first. */
const bodyError = (error: ParseResult.ParseError): InvalidRequest => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const lines = issues.map((i) => {
    const at = formatPath(i.path)
    if (i._tag === "Unexpected") return `unknown field '${at}'`
    if (i._tag === "Missing") return `missing required field '${at}'`
    return at === "" ? i.message : `invalid value for '${at}': ${i.message}`
  })
  const first = issues[0]
  return new InvalidRequest({
    message: `Invalid request body: ${[...new Set(lines)].join("; ")}`,
    param: first === undefined || first.path.length === 0 ? null : formatPath(first.path),
    code: first?._tag === "Missing" ? "missing_required_parameter" : "invalid_value"
  })
}

/**
 * Unknown fields are refused: a misspelt one in a PUT would otherwise reset that field to its default.
 * A body nested too deeply to decode, or to describe why not, throws inside `decode` or `bodyError`:
 * one guard here turns either into the 400.
 */
const decodeBody = <A, I>(schema: Schema.Schema<A, I>) => {
  const decode = Schema.decodeUnknown(schema, { errors: "all", onExcessProperty: "error" })
  return (json: unknown) =>
    Effect.mapError(decode(json), bodyError).pipe(
      Effect.catchAllDefect((defect) => (isTooDeep(defect) ? Effect.fail(nestedTooDeeply()) : Effect.die(defect)))
    )
}

const ProviderId = Schema.NonEmptyTrimmedString.annotations({ message: () => ({ message: "must be a provider id (a non-empty string)", override: true }) })

const FailoverRule = Schema.Struct({
  provider_id: ProviderId,
  condition: Schema.Literal("credit_threshold", "health"),
  // Finite too: `1e400` parses as Infinity, which would be stored as `null` and stop the next start.
  value: Schema.Number.pipe(
    Schema.finite({ message: () => "must be a finite number, 0 or more" }),
    Schema.nonNegative({ message: () => "must be a number, 0 or more" })
  )
}).pipe(Schema.filter((f) =>
  f.condition !== "health" || f.value <= 1 || { path: ["value"], message: "a health threshold is a success rate from 0 to 1" }
))

/** The admin API's routing config; every field optional (PUT: defaults, PATCH: unchanged). */
const RoutingBody = Schema.Struct({
  strategy: Schema.optionalWith(
    Strategy.annotations({
      message: (issue) => ({ message: `unknown strategy ${JSON.stringify(issue.actual)}: use one of ${strategies.join(", ")}`, override: true })
    }),
    { exact: true }
  ),
  cost_optimization: Schema.optionalWith(Schema.Boolean, { exact: true }),
  provider_order: Schema.optionalWith(
    Schema.Array(ProviderId).pipe(Schema.filter(namesEachOnce)),
    { exact: true }
  ),
  failover: Schema.optionalWith(Schema.Array(FailoverRule), { exact: true })
})

const OverrideBody = Schema.Struct({
  provider_id: Schema.NullOr(Schema.NonEmptyTrimmedString).annotations({
    message: () => ({ message: "must be a provider id (a non-empty string) or null", override: true })
  })
})

/**
 * The session a pin is for: `X-Router-Session-Id`, else (as the issue's contract says) a hash of
 * the key the caller presented. On an admin route that key is the admin key, so without the header
 * the pin applies to chat requests presenting that same key: what an agent holding one key for
 * both sees. The README tells operators to send the header.
 */
const pinnedSession = (req: HttpServerRequest.HttpServerRequest): Effect.Effect<string, InvalidRequest> => {
  const key = sessionKeyOf(NodeHttpServerRequest.toIncomingMessage(req).headers)
  return key === null
    ? Effect.fail(new InvalidRequest({
      message: "No session given: send the session to pin in the X-Router-Session-Id header",
      param: "X-Router-Session-Id",
      code: "missing_required_parameter"
    }))
    : Effect.succeed(key)
}

/** `/admin/explain`'s answer: the needs, the decision, and what is known of each ranked candidate. */
const explanationJson = (e: Explanation, session: string | null, pin: string | null, index: ModelIndex) => {
  const d = decisionJson(e.decision)
  const known = (r: (typeof e.decision.ranked)[number]) => {
    const info = r.candidate.info
    return info === undefined
      ? {}
      : {
        context_length: info.contextWindow,
        max_output_tokens: info.maxOutputTokens,
        pricing: info.pricing === null ? null : { input: info.pricing.inputPer1M, output: info.pricing.outputPer1M }
      }
  }
  return {
    endpoint: e.endpoint,
    model: e.model,
    session,
    session_pin: pin,
    needs: {
      stream: e.needs.stream,
      tools: e.needs.tools,
      vision: e.needs.vision,
      json_schema: e.needs.jsonSchema,
      embeddings: e.needs.endpoint === "embeddings",
      prompt_tokens_estimate: e.needs.promptTokens(),
      max_tokens: e.needs.maxTokens
    },
    strategy: d.strategy,
    routing: routingToJson(index.routing),
    ranked: d.ranked.map((r, i) => ({ rank: i + 1, ...r, ...known(e.decision.ranked[i]!) })),
    dropped: d.dropped,
    notes: d.notes,
    header: summary(e.decision)
  }
}

export const layer = HttpLayerRouter.use((router) =>
  Effect.gen(function* () {
    const settings = yield* Settings
    const providers = yield* Providers
    const health = yield* Health
    const config = yield* RouterConfig
    const sessions = yield* Sessions
    const routerService = yield* Router
    const client = clientKeyCheck(settings.clientKey)
    const admin = adminKeyCheck(settings.adminKey)
    const open: KeyCheck = { check: () => null }

    // HEAD is answered as GET (see `Server.ts`), so wherever GET is allowed, so is HEAD.
    const withHead = (allowed: ReadonlyArray<string>) => allowed.flatMap((m) => (m === "GET" ? ["GET", "HEAD"] : [m])).join(", ")

    const healthy = HttpServerResponse.unsafeJson({ status: "ok" })
    yield* router.add("GET", "/health", guarded(open, () => Effect.succeed(healthy)))
    yield* router.add(
      "GET",
      "/v1/models",
      guarded(client, () => Effect.succeed(HttpServerResponse.unsafeJson({ object: "list", data: providers.index().list })))
    )

    // Model ids contain `/` (`meta-llama/Llama-3.3-70B-Instruct`), so the id is the rest of the path:
    // the route's wildcard, as the router matched it, not a slice of the raw URL (which in `/v1//models/m`
    // or an absolute-form target is not where the slice assumes).
    yield* router.add(
      "GET",
      "/v1/models/*",
      guarded(client, () =>
        Effect.flatMap(HttpLayerRouter.params, (params) => {
          const id = params["*"] ?? ""
          const entry = providers.index().list.find((m) => m.id === id)
          return entry === undefined ? Effect.fail(new ModelNotFound({ model: id })) : Effect.succeed(HttpServerResponse.unsafeJson(entry))
        }))
    )

    // Every method Node parses: TRACE or PROPFIND on a known path is a 405 as much as PUT is, and
    // none may fall through to the platform's bare 404 (no body, no x-request-id), which is what
    // `router.add("*", …)` leaves to a method find-my-way's own list lacks (QUERY). HEAD is
    // answered as GET (see `Server.ts`). The platform's type names only the common methods;
    // find-my-way, underneath, takes any.
    const methods = METHODS.filter((m) => m !== "HEAD")
    const addAny = (method: string, path: HttpLayerRouter.PathInput, handler: (req: HttpServerRequest.HttpServerRequest) => Effect.Effect<HttpServerResponse.HttpServerResponse>) =>
      router.add(method as "GET", path, handler)
    // Other methods on a known path get 405 with `Allow`, not 404. (A `*` route would clash with the
    // allowed ones; POST on the two hot paths never gets here, the fast lane answers it.)
    const otherMethods = (path: HttpLayerRouter.PathInput, allowed: ReadonlyArray<string>, keys: KeyCheck) =>
      Effect.forEach(
        methods.filter((m) => !allowed.includes(m)),
        (method) => addAny(method, path, guarded(keys, (req) => Effect.fail(new MethodNotAllowed({ method: req.method, path, allowed: withHead(allowed) })))),
        { discard: true }
      )
    const known = [["/v1/chat/completions", "POST"], ["/v1/embeddings", "POST"], ["/v1/models", "GET"], ["/health", "GET"]] as const
    for (const [path, allowed] of known) yield* otherMethods(path, [allowed], path === "/health" ? open : client)

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

    // The routing config in force, in the wire form PUT and PATCH take.
    const routingResponse = (r: RoutingConfig) => HttpServerResponse.unsafeJson(routingToJson(r))
    // The policy reads the routing config from the providers' index, which follows the config's
    // changes on its own fiber: the answer waits (briefly) until the index has it, so a request
    // sent after the answer is routed by the new config. Superseded by a later change: no wait.
    const inForce = (next: RoutingConfig) =>
      Effect.suspend(() =>
        providers.index().routing === next
          ? Effect.void
          : Effect.flatMap(config.current, (s) => (s.routing === next ? Effect.fail("pending" as const) : Effect.void))
      ).pipe(Effect.retry(Schedule.spaced("2 millis").pipe(Schedule.upTo("2 seconds"))), Effect.ignore)
    const decodeRouting = decodeBody(RoutingBody)
    const updateRouting = (req: HttpServerRequest.HttpServerRequest, f: (body: typeof RoutingBody.Type, current: RoutingConfig) => RoutingConfig) =>
      Effect.gen(function* () {
        const body = yield* Effect.flatMap(readJsonBody(req, settings.maxBodyBytes), decodeRouting)
        const next = yield* config.updateRouting((current) => f(body, current))
        yield* inForce(next)
        return routingResponse(next)
      })

    yield* router.add("GET", "/admin/routing-config", guarded(admin, () => Effect.map(config.current, (s) => routingResponse(s.routing))))
    // PUT replaces the whole config: fields left out are at their defaults.
    yield* router.add("PUT", "/admin/routing-config", guarded(admin, (req) => updateRouting(req, (body) => routingFromJson(body))))
    // PATCH changes only the fields given; a list given (provider_order, failover) replaces the old one.
    yield* router.add(
      "PATCH",
      "/admin/routing-config",
      guarded(admin, (req) => updateRouting(req, (body, current) => routingFromJson({ ...routingToJson(current), ...body })))
    )

    // A session pinned to one provider; `provider_id: null` removes the pin.
    const decodeOverride = decodeBody(OverrideBody)
    const pinResponse = (session: string, providerId: string | null) => HttpServerResponse.unsafeJson({ session, provider_id: providerId })
    yield* router.add(
      "GET",
      "/admin/override",
      guarded(admin, (req) => Effect.map(pinnedSession(req), (session) => pinResponse(session, sessions.pinOf(session))))
    )
    yield* router.add(
      "POST",
      "/admin/override",
      guarded(admin, (req) =>
        Effect.gen(function* () {
          const session = yield* pinnedSession(req)
          const body = yield* Effect.flatMap(readJsonBody(req, settings.maxBodyBytes), decodeOverride)
          if (body.provider_id !== null) {
            const ids = new Set((yield* config.current).providers.map((p) => p.id))
            if (!ids.has(body.provider_id)) {
              const configured = ids.size === 0 ? "none are configured" : `configured: ${[...ids].sort().join(", ")}`
              return yield* new InvalidRequest({ message: `Unknown provider '${body.provider_id}'; ${configured}`, param: "provider_id", code: "invalid_value" })
            }
          }
          yield* sessions.set(session, body.provider_id)
          return pinResponse(session, body.provider_id)
        }))
    )

    // What the policy would decide for a chat or embeddings body, without calling any upstream.
    yield* router.add(
      "POST",
      "/admin/explain",
      guarded(admin, (req) =>
        Effect.gen(function* () {
          const body = yield* readJsonBody(req, settings.maxBodyBytes)
          modelFromModels(body)
          const parsed = "messages" in body
            ? Either.map(parseChatRequest(body), (request) => ({ endpoint: "chat" as const, request }))
            : "input" in body
            ? Either.map(parseEmbeddingRequest(body), (request) => ({ endpoint: "embeddings" as const, request }))
            : Either.left(new InvalidRequest({ message: "Send a chat completion body (with messages) or an embeddings body (with input)", param: null, code: "invalid_value" }))
          const what = yield* parsed
          const session = sessionKeyOf(NodeHttpServerRequest.toIncomingMessage(req).headers)
          const explained = yield* routerService.explain(what, session)
          return HttpServerResponse.unsafeJson(explanationJson(explained, session, sessions.pinOf(session), providers.index()))
        }))
    )

    // Model discovery on demand (it also runs at start, on config changes and every 10 minutes).
    yield* router.add(
      "POST",
      "/admin/models/refresh",
      guarded(admin, () => Effect.map(providers.refresh, () => HttpServerResponse.unsafeJson({ object: "list", data: providers.index().list })))
    )

    const adminMethods = [
      ["/admin/routing-config", ["GET", "PUT", "PATCH"]],
      ["/admin/override", ["GET", "POST"]],
      ["/admin/explain", ["POST"]],
      ["/admin/models/refresh", ["POST"]]
    ] as const
    for (const [path, allowed] of adminMethods) yield* otherMethods(path, allowed, admin)

    const notFound = (path: HttpLayerRouter.PathInput, keys: KeyCheck) =>
      Effect.forEach(
        methods,
        (method) => addAny(method, path, guarded(keys, (req) => Effect.fail(new RouteNotFound({ method: req.method, path: pathOf(req) })))),
        { discard: true }
      )
    // The admin surface is closed until ROUTER_ADMIN_KEY is set; more routes arrive with later features.
    yield* notFound("/admin/*", admin)
    yield* notFound("/v1/*", client)
    yield* notFound("*", open)
  })
)
