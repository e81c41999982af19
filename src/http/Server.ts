/**
 * The HTTP server: one Node server, owned by `NodeHttpServer` (listen, close), whose requests go to
 * the fast lane when it serves them and to the platform's `HttpLayerRouter` app otherwise.
 */
import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpServer from "@effect/platform/HttpServer"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Effect, Layer } from "effect"
import { randomUUID } from "node:crypto"
import { createServer, type IncomingMessage, type ServerResponse, STATUS_CODES } from "node:http"
import type { Duplex } from "node:stream"
import { Settings } from "../config/Settings.js"
import { InvalidRequest } from "../domain/Errors.js"
import { errorBody, ExpectationFailed } from "./Errors.js"
import { FastLane, requestIdOf, routerConfig, sendError } from "./FastLane.js"
import * as Routes from "./Routes.js"

/** Whether a request target's path decodes: `%ZZ` or a cut-off `%E0%A4` does not. */
const wellFormedPath = (url: string): boolean => {
  const q = url.indexOf("?")
  const path = q === -1 ? url : url.slice(0, q)
  if (!path.includes("%")) return true
  try {
    decodeURIComponent(path)
    return true
  } catch {
    return false
  }
}

/**
 * The answer to bytes Node cannot parse as a request (not HTTP, headers over 16 KiB, a broken body
 * framing, a request not received within Node's time limit): Node's own has no body. There is no
 * parsed request to take an `x-request-id` from, so the caller passes a new one.
 */
export const clientErrorAnswer = (code: string | undefined, requestId: string): string => {
  const [status, message, errorCode] = code === "HPE_HEADER_OVERFLOW"
    ? [431, "The request's headers are too large", "headers_too_large"] as const
    : code === "ERR_HTTP_REQUEST_TIMEOUT"
    ? [408, "The request was not received in time", "request_timeout"] as const
    : [400, "The request is not valid HTTP", "invalid_http"] as const
  const body = JSON.stringify(errorBody(message, "invalid_request_error", null, errorCode))
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n${body}`
}

const onClientError = (error: NodeJS.ErrnoException, socket: Duplex) => {
  // As Node itself does: no answer once a response on this connection has begun (it would land in
  // the middle of it), nor to a peer that is gone.
  const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage
  if (error.code !== "ECONNRESET" && socket.writable && (inFlight == null || inFlight.headersSent !== true)) {
    socket.write(clientErrorAnswer(error.code, randomUUID()))
  }
  socket.destroy()
}

/**
 * A request whose `Expect` is not `100-continue` (Node emits this instead of `request`): Node's own
 * 417 has no body and no `x-request-id`. The body, if the client sends one anyway, is discarded.
 */
const onCheckExpectation = (req: IncomingMessage, res: ServerResponse) => {
  sendError(res, requestIdOf(req), new ExpectationFailed({ expectation: req.headers.expect ?? "" }))
  req.resume()
}

/**
 * `CONNECT`, a proxy's method: Node emits it instead of `request` and, with no listener, closes the
 * connection without a word. The socket is the router's from here (no Node timeouts, no error
 * handler), so it is answered and closed at once.
 */
const onConnect = (req: IncomingMessage, socket: Duplex) => {
  socket.on("error", () => socket.destroy())
  const body = JSON.stringify(errorBody("Method CONNECT is not allowed: this is an API server, not a proxy", "invalid_request_error", null, "method_not_allowed"))
  socket.end(
    `HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestIdOf(req)}\r\nallow: GET, HEAD, POST\r\nconnection: close\r\n\r\n${body}`,
    () => socket.destroy()
  )
}

/** An `HttpServer` that serves the fast lane first, on the host and port from `Settings`. */
export const serverLayer = Layer.scoped(
  HttpServer.HttpServer,
  Effect.gen(function* () {
    const settings = yield* Settings
    const lane = yield* FastLane
    const server = createServer({ keepAliveTimeout: 65_000 })
    server.on("clientError", onClientError)
    server.on("checkExpectation", onCheckExpectation)
    server.on("connect", onConnect)
    const base = yield* NodeHttpServer.make(() => server, { port: settings.port, host: settings.host })
    // Runs before `NodeHttpServer`'s own close, which waits for every open connection: idle ones
    // go at once, and open requests (streams included) get `drainMs` to finish. Those still open
    // then are cut and answered by the fast lane (a 503, or a last event), and the connections
    // closed a turn after those answers are written.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        server.closeIdleConnections()
        setTimeout(() => {
          lane.cutInFlight(() => setImmediate(() => server.closeAllConnections()))
        }, settings.drainMs).unref()
      })
    )
    return HttpServer.make({
      address: base.address,
      serve: (app, middleware) =>
        Effect.gen(function* () {
          const platform = yield* (middleware === undefined
            ? NodeHttpServer.makeHandler(app)
            : NodeHttpServer.makeHandler(app, middleware as never))
          const onRequest = (req: IncomingMessage, res: ServerResponse) => {
            if (lane.handle(req, res)) return
            // HEAD is answered as GET wherever GET is (uptime checkers and proxies probe with it):
            // `HttpLayerRouter` takes no HEAD routes, and its own GET fallback comes after the `*`
            // routes. Node made the response when it saw HEAD, so it still sends no body.
            if (req.method === "HEAD") req.method = "GET"
            if (!wellFormedPath(req.url ?? "/")) {
              // The router below cannot even match such a path and would answer a bare 404.
              sendError(res, requestIdOf(req), new InvalidRequest({ message: "The request URL is malformed (bad percent-encoding)", param: null, code: "invalid_url" }))
              return void req.resume()
            }
            platform(req, res)
          }
          server.on("request", onRequest)
          yield* Effect.addFinalizer(() => Effect.sync(() => server.off("request", onRequest)))
        })
    })
  })
).pipe(Layer.provideMerge(NodeHttpServer.layerContext))

/** The whole HTTP surface, listening. Needs `Settings`, `FastLane` and what the routes use. */
export const layer = HttpLayerRouter.serve(Routes.layer, { disableLogger: true, disableListenLog: true, routerConfig }).pipe(
  // No per-request spans: the tracer costs more than the routes it would describe.
  HttpMiddleware.withTracerDisabledWhen(() => true),
  Layer.provideMerge(serverLayer)
)
