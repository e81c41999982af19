/**
 * The hot endpoints, `POST /v1/chat/completions` and `POST /v1/embeddings`, answered straight on
 * Node's request and response by one Effect fiber per request running the `Router` workflow.
 *
 * Why not an `HttpLayerRouter` route like the others: measured on this stack, the platform's
 * per-request machinery (request wrapper, scope, middleware, response conversion) added ~200 µs
 * and cut throughput at 32 concurrent requests to 0.3 of a bare proxy's, where this lane adds a
 * few tens of µs and keeps ~0.5. Everything else (`/health`, `/v1/models`, `/admin/*`) is served
 * by `HttpLayerRouter` on the same server.
 */
import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import { Cause, Context, Effect, Either, type Fiber, FiberId, Layer, Runtime, RuntimeFlags, Scheduler } from "effect"
import { randomUUID } from "node:crypto"
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http"
import { Settings } from "../config/Settings.js"
import { InvalidRequest, PayloadTooLarge } from "../domain/Errors.js"
import { parseChatRequest, parseEmbeddingRequest, parseJsonBody } from "../domain/OpenAi.js"
import type { ChunkWriter } from "../providers/Upstream.js"
import { type ChatError, type Reply, Router, shutdownInterruptor } from "../router/Router.js"
import { modelFromModels } from "../policy/Preferences.js"
import { summary } from "../policy/Rank.js"
import { clientKeyCheck, sessionKeyOf } from "./Auth.js"
import * as BusyPoll from "./BusyPoll.js"
import { type ErrorResponse, type HttpError, internalErrorBody, interruptedEvent, shutdownEvent, ShuttingDown, toErrorResponse } from "./Errors.js"

export interface FastLaneService {
  /** Answers the request and returns `true`, or returns `false` for a request it does not serve. */
  readonly handle: (req: IncomingMessage, res: ServerResponse) => boolean
  /**
   * Cuts every request still being answered, for a shutdown that has waited long enough: each
   * gets a 503 `shutting_down`, or, when its stream has begun, a last `stream_interrupted` event,
   * instead of a connection closed under it. `then` runs once they are answered.
   */
  readonly cutInFlight: (then: () => void) => void
}

export class FastLane extends Context.Tag("sanctum/FastLane")<FastLane, FastLaneService>() {}

type Endpoint = "chat" | "embeddings"

/**
 * How request targets are matched to paths, by `HttpLayerRouter` and by the fast lane alike
 * (find-my-way's defaults: any case, duplicate slashes and one trailing slash ignored, absolute-form
 * targets taken by their path). One object, so the two cannot disagree on what names a hot path.
 */
export const routerConfig: Partial<HttpLayerRouter.FindMyWay.RouterConfig> = {}

/** A client's `x-request-id` is echoed when it is a sane token; otherwise one is made. */
export const requestIdOf = (req: IncomingMessage): string => {
  const id = req.headers["x-request-id"]
  return typeof id === "string" && id.length > 0 && id.length <= 128 && /^[\x21-\x7e]+$/.test(id) ? id : randomUUID()
}

/**
 * `x-router-timeout-ms`: a positive whole number of milliseconds that lowers the request's deadline.
 * One past 2^53 (or past what a double holds) is still a whole number, only far above any deadline,
 * which the header cannot raise: it is capped, and the configured deadline applies.
 */
export const timeoutOf = (req: IncomingMessage): number | undefined | InvalidRequest => {
  const v = req.headers["x-router-timeout-ms"]
  if (v === undefined) return undefined
  const n = typeof v === "string" && /^\d+$/.test(v.trim()) ? Number(v) : NaN
  return n > 0
    ? Math.min(n, Number.MAX_SAFE_INTEGER)
    : new InvalidRequest({ message: "x-router-timeout-ms must be a positive whole number of milliseconds", param: "x-router-timeout-ms", code: "invalid_value" })
}

/** Header values must be visible ASCII; model ids from upstream lists are not guaranteed to be. */
const headerSafe = (s: string) => (/^[\x20-\x7e]*$/.test(s) ? s : encodeURIComponent(s.replace(loneSurrogate, "\ufffd")))

/** What `encodeURIComponent` refuses (it throws): half of a UTF-16 pair with no other half. */
const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/** `X-Router-Attempts`: `provider:outcome` for each attempt, in order. */
const attemptsHeader = (attempts: ReadonlyArray<{ readonly provider: string; readonly outcome: string }>): string => {
  let out = ""
  for (const a of attempts) out += out === "" ? `${a.provider}:${a.outcome}` : `,${a.provider}:${a.outcome}`
  return headerSafe(out)
}

/** The router's own headers on an answer, added to `headers` (one object per reply, no copies). */
export const routerHeaders = (reply: Reply, requestId: string, headers: OutgoingHttpHeaders): OutgoingHttpHeaders => {
  headers["x-request-id"] = requestId
  headers["x-router-provider"] = headerSafe(reply.provider)
  headers["x-router-upstream-model"] = headerSafe(reply.upstreamModel)
  headers["x-router-attempts"] = attemptsHeader(reply.attempts)
  if (reply.decision !== undefined) headers["x-router-decision"] = summary(reply.decision)
  return headers
}

/** Writes an OpenAI-shaped error, before any part of an answer has been sent. */
export const sendError = (res: ServerResponse, requestId: string, error: HttpError) => {
  // Too late for an error answer: cut the connection rather than leave the client waiting.
  if (res.headersSent) return void (res.writableEnded || res.destroy())
  let e: ErrorResponse
  try {
    e = toErrorResponse(error)
  } catch {
    // Never leave a client without an answer because its error could not be written.
    return internalError(res, requestId)
  }
  const attempts = "attempts" in error && Array.isArray(error.attempts) && error.attempts.length > 0
    ? { "x-router-attempts": attemptsHeader(error.attempts) }
    : {}
  const decision = "decision" in error && typeof error.decision === "string" ? { "x-router-decision": error.decision } : {}
  res.writeHead(e.status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(e.body),
    "x-request-id": requestId,
    ...attempts,
    ...decision,
    ...e.headers
  })
  res.end(e.body)
}

/** How long a shutdown waits for the requests it cut to be answered before closing connections. */
const cutWaitMs = 1_000

/**
 * The answer to a request shutdown cut: a 503 when nothing of it was sent yet, else the end of its
 * stream with an event that says why (the router writes whole events only, so it lands between two).
 */
const cutByShutdown = (res: ServerResponse, requestId: string) => {
  if (!res.headersSent) return sendError(res, requestId, new ShuttingDown())
  if (!res.writableEnded) res.end(shutdownEvent)
}

/** A 500 for a defect, or a cut connection when the answer had already begun. */
const internalError = (res: ServerResponse, requestId: string) => {
  if (res.headersSent) return void res.destroy()
  res.writeHead(500, { "content-type": "application/json", "x-request-id": requestId })
  res.end(internalErrorBody)
}

/**
 * Collects the request body with plain stream callbacks, before any fiber exists: the upload is
 * I/O at the edge, and starting the workflow only once the body is complete keeps one async step
 * (and the fiber's lifetime) off the hot path. More than `limit` bytes fail at once, and the
 * request is left as it is (not destroyed), so the 413 can still be written on its connection.
 */
export const collectBody = (req: IncomingMessage, limit: number, done: (error: PayloadTooLarge | null, body: Buffer) => void) => {
  const declared = Number(req.headers["content-length"])
  if (declared > limit) return done(new PayloadTooLarge({ limit }), Buffer.alloc(0))
  const chunks: Array<Buffer> = []
  let size = 0
  const onData = (c: Buffer) => {
    size += c.length
    if (size > limit) {
      req.off("data", onData)
      req.off("end", onEnd)
      done(new PayloadTooLarge({ limit }), Buffer.alloc(0))
    } else chunks.push(c)
  }
  const onEnd = () => done(null, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size))
  req.on("data", onData)
  req.on("end", onEnd)
}

const streamHeaders = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache",
  "x-accel-buffering": "no"
}

/**
 * Ends a streamed answer, and sees that it ends. Nothing times out a response being written, so a
 * client that stopped reading (its socket full) would hold its connection, and what is buffered
 * for it, forever: after `graceMs` without the end taken, the connection is cut.
 */
const endStream = (res: ServerResponse, graceMs: number, last?: string) => {
  res.end(last)
  if (res.writableFinished) return
  const timer = setTimeout(() => {
    if (!res.writableFinished) res.destroy()
  }, graceMs)
  timer.unref()
  res.once("finish", () => clearTimeout(timer))
  res.once("close", () => clearTimeout(timer))
}

const writerOf = (res: ServerResponse): ChunkWriter => ({
  write: (chunk) => res.write(chunk),
  onDrain: (resume) => res.once("drain", resume)
})

/** The fiber that has run 2,048 steps without waiting, and now gives the event loop a turn. */
let yielding: unknown = undefined
/** How deeply inline runs are nested (a fiber waking another, and so on). */
let depth = 0

/**
 * The scheduler request fibers run on: a fiber woken by an upstream's answer continues at once, in
 * the callback that woke it, instead of in a later microtask. Measured on a running server, the
 * default scheduler's hop (a per-fiber runner and a microtask) cost ~4 µs between the upstream's
 * last byte and the reply. Effect still serialises each fiber's own messages, so a fiber woken
 * while it runs is not re-entered. A fiber that yields after 2,048 steps, or a run nested 32 deep,
 * goes to `setImmediate`, so neither starves the event loop nor grows the stack.
 */
export const inline = Scheduler.make(
  (task, _priority, fiber) => {
    if (fiber !== undefined && fiber === yielding) {
      yielding = undefined
      setImmediate(task)
    } else if (depth >= 32) {
      setImmediate(task)
    } else {
      depth++
      try {
        task()
      } finally {
        depth--
      }
    }
  },
  (fiber) => {
    if (fiber.currentOpCount <= 2048) return false
    yielding = fiber
    return 0
  }
)

export const make = Effect.gen(function* () {
  const router = yield* Router
  const settings = yield* Settings
  // Request fibers skip the runtime's built-in fiber metrics (started, active, lifetimes): nothing
  // reads them, and each fiber would pay for them on start and end.
  const runtime = yield* Effect.runtime<never>().pipe(Effect.withScheduler(inline))
  const runFork = Runtime.runFork(Runtime.disableRuntimeFlag(runtime, RuntimeFlags.RuntimeMetrics))
  const auth = clientKeyCheck(settings.clientKey)
  const limit = settings.maxBodyBytes
  // Told when a request arrives and when it ends, so a quick upstream answer or a client's next
  // request finds the CPU awake (see BusyPoll).
  const poll = BusyPoll.make(settings.busyPollUs)
  /** The requests being answered, for a shutdown to cut; a request leaves when its response closes. */
  const inFlight = new Map<ServerResponse, { readonly fiber: Fiber.RuntimeFiber<void>; readonly requestId: string }>()

  /**
   * Decodes the body at the edge, synchronously: a bad request is answered without ever starting
   * a fiber, and a good one starts the workflow already knowing whether it streams.
   */
  const decode = (endpoint: Endpoint, raw: Buffer, requestId: string, timeoutMs: number | undefined, sessionKey: string | null) => {
    const json = parseJsonBody(raw.toString("utf8"))
    if (Either.isLeft(json)) return json
    const body = json.right
    modelFromModels(body)
    if (endpoint === "chat") {
      return Either.map(parseChatRequest(body), (request) => ({
        stream: request.stream === true,
        route: router.chat({ request, raw, requestId, timeoutMs, sessionKey })
      }))
    }
    return Either.map(parseEmbeddingRequest(body), (request) => ({
      stream: false,
      route: router.embeddings({ request, raw, requestId, timeoutMs, sessionKey })
    }))
  }

  const respond = (reply: Reply, res: ServerResponse, requestId: string): Effect.Effect<void> => {
    if (reply._tag === "Json") {
      return Effect.sync(() => {
        res.writeHead(reply.status, routerHeaders(reply, requestId, { "content-type": reply.contentType, "content-length": reply.body.byteLength }))
        res.end(reply.body)
      })
    }
    return Effect.suspend(() => {
      res.writeHead(reply.status, routerHeaders(reply, requestId, { ...streamHeaders }))
      return reply.pipe(writerOf(res)).pipe(
        Effect.matchEffect({
          onSuccess: () => Effect.sync(() => endStream(res, reply.idleMs)),
          // After the first event only an in-band error is possible: a final event carrying it, and
          // no `[DONE]`, so the client can tell a cut-off answer from a finished one.
          onFailure: (e) =>
            Effect.sync(() => {
              endStream(res, reply.idleMs, interruptedEvent(e.message, "upstream_error"))
            })
        })
      )
    })
  }

  // For a stream, interruption is masked between the router's answer and the code that writes it,
  // so a stream whose client left at that instant is still discarded (aborting its upstream call).
  const program = (stream: boolean, route: Effect.Effect<Reply, ChatError>, res: ServerResponse, requestId: string) =>
    (stream
      ? Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(route), (reply) =>
          reply._tag === "Json" ? respond(reply, res, requestId) : Effect.onInterrupt(restore(respond(reply, res, requestId)), () => reply.discard))
      )
      : Effect.flatMap(route, (reply) => respond(reply, res, requestId))).pipe(
      // One handler for all three ends: a typed error (OpenAI-shaped 4xx/5xx), the client leaving
      // (nothing to answer), or a defect (logged, 500).
      Effect.catchAllCause((cause) => {
        const failure = Cause.failureOption(cause)
        if (failure._tag === "Some") return Effect.sync(() => sendError(res, requestId, failure.value))
        return Cause.isInterruptedOnly(cause)
          ? Effect.void
          : Effect.zipRight(Effect.logError("request failed unexpectedly", cause), Effect.sync(() => internalError(res, requestId)))
      })
    )

  // The spellings clients send, matched exactly on the hot path. Any other spelling the platform's
  // routes would take for the same path (`/V1//chat/completions`, an absolute-form target, …) is
  // found by `variants`, with the platform's own matcher and options, so the fast lane serves POST
  // wherever the routes in `Routes.ts` answer the other methods with 405.
  const paths: Record<string, Endpoint> = {
    "/v1/chat/completions": "chat",
    "/v1/chat/completions/": "chat",
    "/v1/embeddings": "embeddings",
    "/v1/embeddings/": "embeddings"
  }
  const variants = HttpLayerRouter.FindMyWay.make<Endpoint>(routerConfig)
  variants.on("POST", "/v1/chat/completions", "chat")
  variants.on("POST", "/v1/embeddings", "embeddings")

  const handle = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (req.method !== "POST") return false
    const url = req.url ?? ""
    const q = url.indexOf("?")
    const endpoint = paths[q === -1 ? url : url.slice(0, q)] ?? variants.find("POST", url)?.handler
    if (endpoint === undefined) return false
    poll.touch()
    const requestId = requestIdOf(req)
    const denied = auth.check(req.headers)
    if (denied !== null) {
      sendError(res, requestId, denied)
      req.resume()
      return true
    }
    const timeout = timeoutOf(req)
    if (timeout instanceof InvalidRequest) {
      sendError(res, requestId, timeout)
      req.resume()
      return true
    }
    collectBody(req, limit, (tooLarge, raw) => {
      // This runs in a stream callback, outside any fiber: whatever it throws would take the whole
      // process down, so it is caught here and answered as a defect is.
      try {
        if (tooLarge !== null) return sendError(res, requestId, tooLarge)
        if (res.destroyed) return
        const decoded = decode(endpoint, raw, requestId, timeout, sessionKeyOf(req.headers))
        if (Either.isLeft(decoded)) return sendError(res, requestId, decoded.left)
        const fiber = runFork(program(decoded.right.stream, decoded.right.route, res, requestId))
        inFlight.set(res, { fiber, requestId })
        fiber.addObserver(poll.touch)
        // A client that hangs up interrupts the workflow, which aborts the upstream call.
        res.once("close", () => {
          inFlight.delete(res)
          if (!res.writableFinished) fiber.unsafeInterruptAsFork(FiberId.none)
        })
      } catch (e) {
        runFork(Effect.logError("request failed unexpectedly", Cause.die(e)))
        internalError(res, requestId)
      }
    })
    return true
  }

  const cutInFlight = (then: () => void) => {
    let left = inFlight.size
    let called = false
    const finish = () => {
      if (!called) {
        called = true
        then()
      }
    }
    if (left === 0) return finish()
    // An interruption waits for its finalizers (the upstream call's abort); a bound all the same.
    setTimeout(finish, cutWaitMs).unref()
    for (const [res, { fiber, requestId }] of inFlight) {
      // Answered once the fiber is done, so nothing it still writes can follow the answer. (A fiber
      // cannot catch its own interruption: `program`'s handler never sees this one.)
      fiber.addObserver(() => {
        cutByShutdown(res, requestId)
        if (--left === 0) finish()
      })
      fiber.unsafeInterruptAsFork(shutdownInterruptor)
    }
  }

  return FastLane.of({ handle, cutInFlight })
})

export const layer = Layer.effect(FastLane, make)
