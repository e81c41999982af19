/**
 * Shared fixtures for the router's unit tests: a router over the in-memory fake provider, an
 * in-memory `ChunkWriter`, and an `Upstream` that sends hand-written byte chunks (for framing tests
 * the fake cannot express, such as an event split across chunks).
 */
import { Effect, Fiber, FiberStatus, Layer, Option, TestServices } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { discoveryRequestId } from "../../src/domain/Capabilities.js"
import { UpstreamTransportError } from "../../src/domain/Errors.js"
import type { ChatCompletionRequest } from "../../src/domain/OpenAi.js"
import { defaultMaxConnections, defaultTimeouts, type ProviderSpec } from "../../src/domain/Provider.js"
import * as Resilience from "../../src/config/Resilience.js"
import * as Health from "../../src/health/Health.js"
import * as Policy from "../../src/policy/Policy.js"
import * as Providers from "../../src/providers/Providers.js"
import {
  type ChunkWriter,
  requestVia,
  Upstream,
  type UpstreamCall,
  type UpstreamResponse,
  type UpstreamService
} from "../../src/providers/Upstream.js"
import * as RequestLog from "../../src/persistence/RequestLog.js"
import * as Sql from "../../src/persistence/Sql.js"
import * as Router from "../../src/router/Router.js"
import * as FakeUpstream from "../../src/testing/FakeUpstream.js"

export const endpoint = (id: string) => `http://127.0.0.1:1/${id}/v1`

/** A provider as the policy and health registry see it: every capability unknown unless `over` says. */
export const providerSpec = (id: string, over: Partial<ProviderSpec> = {}): ProviderSpec => ({
  id,
  endpoint: endpoint(id),
  apiKey: null,
  type: "openai_compat",
  models: ["m"],
  priority: 1,
  supportsTools: null,
  supportsStreaming: null,
  supportsMultimodal: null,
  timeouts: defaultTimeouts,
  maxConnections: defaultMaxConnections,
  hedgeAfterMs: null,
  weight: 1,
  modelOverrides: {},
  source: "file",
  ...over
})

/** A router over `config` (the YAML file's shape), its upstream the in-memory fake with `scripts`. */
export const routerWith = (config: unknown, scripts: Readonly<Record<string, FakeUpstream.FakeProviderScript>> = {}) =>
  Router.layer.pipe(
    Layer.provide(Providers.layerStatic(config)),
    Layer.provideMerge(FakeUpstream.layer(scripts))
  )

/** A router over `config` and any `Upstream` layer. */
export const routerOver = <E>(config: unknown, upstream: Layer.Layer<Upstream, E>) =>
  Router.layer.pipe(Layer.provide(Providers.layerStatic(config)), Layer.provideMerge(upstream))

/** `routerOver`, also giving the test the `Health` the router reports to. */
export const routerOverWithHealth = <E>(config: unknown, upstream: Layer.Layer<Upstream, E>) =>
  Router.layerWithoutDependencies.pipe(
    Layer.provide(Policy.layer),
    Layer.provide(Providers.layerStatic(config)),
    Layer.provideMerge(Health.layer.pipe(Layer.provideMerge(Resilience.layer()))),
    Layer.provideMerge(upstream)
  )

export const chat = (model: string, extra: Record<string, unknown> = {}): ChatCompletionRequest => ({
  model,
  messages: [{ role: "user", content: "hi" }],
  ...extra
})

export interface Collector {
  readonly writer: ChunkWriter
  /** Every chunk written, in order. */
  readonly chunks: Array<Buffer>
  readonly text: () => string
}

export const collector = (): Collector => {
  const chunks: Array<Buffer> = []
  return {
    chunks,
    writer: {
      write: (c) => {
        chunks.push(Buffer.from(c))
        return true
      },
      onDrain: () => {}
    },
    text: () => Buffer.concat(chunks).toString("utf8")
  }
}

/** The `data:` payloads of a complete SSE text. */
export const dataLines = (text: string): Array<string> =>
  text.split("\n\n").filter((e) => e !== "").map((e) => {
    if (!e.startsWith("data: ")) throw new Error(`not an SSE data event: ${JSON.stringify(e)}`)
    return e.slice("data: ".length)
  })

export const bodyText = (reply: Router.JsonReply): string => Buffer.from(reply.body).toString("utf8")

export const bodyJson = (reply: Router.JsonReply): any => JSON.parse(bodyText(reply))

/** The calls a `recordingUpstream` saw, with the body exactly as the router passed it. */
export interface Recorded {
  readonly calls: Array<UpstreamCall>
}

/**
 * Wraps the `Upstream` below it, keeping every call as given (raw body included), except model
 * discovery's, which asks every provider at start on its own schedule.
 */
export const recording = (recorded: Recorded) =>
  Layer.effect(
    Upstream,
    Effect.map(Upstream, (inner) =>
      Upstream.of({
        send: (call) => {
          if (call.requestId !== discoveryRequestId) recorded.calls.push(call)
          return inner.send(call)
        },
        request: (call) => {
          if (call.requestId !== discoveryRequestId) recorded.calls.push(call)
          return inner.request(call)
        }
      }))
  )

export interface ChunkScript {
  readonly chunks: ReadonlyArray<string>
  /** After the chunks: end cleanly, reset the connection, or go silent until aborted. */
  readonly then: "end" | "reset" | "hang"
  /** The answer's headers (by default `content-type: text/event-stream`). */
  readonly headers?: Readonly<Record<string, string | ReadonlyArray<string>>>
  /** Each chunk after the first comes this long (on the test clock) after the one before. */
  readonly gapMs?: number
  /** The answer's status (by default 200). */
  readonly status?: number
}

/**
 * An `Upstream` whose providers answer 200 `text/event-stream` with these exact chunks, so a test
 * decides where event boundaries fall (the fake provider always sends whole events). A provider
 * without a script sends one whole event and `[DONE]`.
 */
/** An upstream from its `send` alone (`request` derived, as fakes do). */
const withRequest = (u: Pick<UpstreamService, "send">) => Upstream.of({ send: u.send, request: requestVia(u.send) })

export const chunkedUpstream = (scripts: Readonly<Record<string, ChunkScript>>) =>
  Layer.succeed(
    Upstream,
    withRequest({
      send: (call) =>
        Effect.sync((): UpstreamResponse => {
          const id = call.provider.id
          const script = scripts[id] ?? { chunks: [`data: {"from":"${id}"}\n\n`, "data: [DONE]\n\n"], then: "end" }
          let next = 0
          const fail = (reason: UpstreamTransportError["reason"], detail: string) =>
            Effect.fail(new UpstreamTransportError({ provider: id, reason, detail }))
          // Silent until the router aborts the call, like a live connection that stopped sending.
          const silent = Effect.async<never, UpstreamTransportError>((resume) => {
            call.abort?.onAbort(() => resume(fail("aborted", "request aborted")))
          })
          const read: Effect.Effect<Uint8Array | null, UpstreamTransportError> = Effect.suspend(() => {
            if (call.abort?.aborted) return fail("aborted", "request aborted")
            const c = script.chunks[next]
            if (c !== undefined) {
              const bytes = Effect.succeed(new Uint8Array(Buffer.from(c)))
              const gap = next++ > 0 ? script.gapMs ?? 0 : 0
              return gap === 0 ? bytes : Effect.raceFirst(Effect.zipRight(Effect.sleep(gap), bytes), silent)
            }
            switch (script.then) {
              case "end":
                return Effect.succeed(null)
              case "reset":
                return fail("reset", "connection reset by upstream")
              case "hang":
                return silent
            }
          })
          return {
            status: script.status ?? 200,
            headers: script.headers ?? { "content-type": "text/event-stream" },
            body: Effect.gen(function* () {
              const all: Array<Uint8Array> = []
              for (;;) {
                const c = yield* read
                if (c === null) return new Uint8Array(Buffer.concat(all))
                all.push(c)
              }
            }),
            next: read,
            pipe: (writer) =>
              Effect.gen(function* () {
                for (;;) {
                  const c = yield* read
                  if (c === null) return
                  writer.write(c)
                }
              }),
            discard: Effect.sync(() => call.abort?.abort())
          }
        })
    })
  )

/** A router over the fake provider with every upstream call also kept in `recorded`, as the router made it. */
export const routerRecording = (
  config: unknown,
  recorded: Recorded,
  scripts: Readonly<Record<string, FakeUpstream.FakeProviderScript>> = {}
) =>
  Router.layer.pipe(
    Layer.provide(Providers.layerStatic(config)),
    Layer.provide(recording(recorded)),
    Layer.provideMerge(FakeUpstream.layer(scripts))
  )

const describeValue = (a: unknown): string => {
  if (typeof a !== "object" || a === null) return String(a)
  const r = a as { _tag?: unknown; provider?: unknown }
  return `${String(r._tag ?? "object")}${r.provider === undefined ? "" : ` from ${String(r.provider)}`}`
}

/**
 * The error `self` fails with. A success becomes a short defect message instead (`Effect.flip`
 * would fail with the whole reply, which vitest then chokes on while formatting it).
 */
export const failureOf = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<E, never, R> =>
  Effect.flatMap(Effect.either(self), (r) =>
    r._tag === "Left" ? Effect.succeed(r.left) : Effect.dieMessage(`expected a failure, got a success: ${describeValue(r.right)}`))

/** Whether the fiber is still to finish. */
export const pending = <A, E>(fiber: Fiber.Fiber<A, E>): Effect.Effect<boolean> => Effect.map(Fiber.poll(fiber), Option.isNone)

/** Until the fiber waits on something outside itself (a connection, an upstream call), or is done. */
export const untilSuspended = <A, E>(fiber: Fiber.RuntimeFiber<A, E>): Effect.Effect<void> =>
  Effect.flatMap(fiber.status, (s) =>
    FiberStatus.isRunning(s) ? Effect.zipRight(Effect.yieldNow(), untilSuspended(fiber)) : Effect.void)

/**
 * Joins a fiber that should be done now that the test clock has passed its deadline. If it is
 * still running a second of real time later, the test fails at once instead of waiting for the
 * vitest timeout (the real sleep is only ever reached by a failing test).
 */
export const joinNow = <A, E>(fiber: Fiber.Fiber<A, E>): Effect.Effect<A, E> =>
  Effect.raceFirst(
    Fiber.join(fiber),
    TestServices.provideLive(Effect.sleep("1 second")).pipe(
      Effect.zipRight(Effect.dieMessage("still running after the test clock passed its deadline"))
    )
  )

/** A loopback backend whose requests the test answers itself, when it chooses (see `heldServer`). */
export interface HeldServer {
  readonly url: string
  /** Every request held (all but `GET`), in arrival order, and its JSON body. */
  readonly held: ReadonlyArray<ServerResponse>
  readonly bodies: ReadonlyArray<unknown>
  /** Held requests whose response is not closed yet. */
  readonly inFlight: () => number
  /** Resolves once `n` requests have been held. */
  readonly arrived: (n: number) => Promise<void>
}

/**
 * A backend on 127.0.0.1 that lists model `m` at once and holds every other request until the test
 * answers it through `held`. Closed with its scope, its connections cut.
 */
export const heldServer = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<HeldServer & { readonly close: () => Promise<void> }>((resolve) => {
      const held: Array<ServerResponse> = []
      const bodies: Array<unknown> = []
      const waiters: Array<() => void> = []
      const sockets = new Set<Socket>()
      let inFlight = 0
      const server = createServer((req, res) => {
        let raw = ""
        req.setEncoding("utf8")
        req.on("data", (c: string) => (raw += c))
        req.on("end", () => {
          if (req.method === "GET") return void res.end(JSON.stringify({ object: "list", data: [{ id: "m", object: "model", created: 0, owned_by: "x" }] }))
          inFlight++
          res.on("close", () => inFlight--)
          bodies.push(JSON.parse(raw))
          held.push(res)
          for (const wake of waiters.splice(0)) wake()
        })
      })
      server.on("connection", (s) => {
        sockets.add(s)
        s.on("close", () => sockets.delete(s))
      })
      const arrived = (n: number): Promise<void> =>
        held.length >= n ? Promise.resolve() : new Promise((r) => waiters.push(() => void arrived(n).then(r)))
      server.listen(0, "127.0.0.1", () =>
        resolve({
          url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
          held,
          bodies,
          inFlight: () => inFlight,
          arrived,
          close: () =>
            new Promise<void>((r) => {
              for (const s of sockets) s.destroy()
              server.close(() => r())
            })
        })
      )
    })
  ),
  (s) => Effect.promise(s.close)
)

/** A request log over a fresh SQLite file, keeping records for `retentionDays`; the file goes with the scope. */
export const requestLogLayer = (retentionDays: number) => {
  const dir = mkdtempSync(join(tmpdir(), "sanctum-log-"))
  return Layer.merge(
    RequestLog.layerWith({ retentionDays }).pipe(Layer.provide(Sql.layer(join(dir, "router.db")))),
    Layer.scopedDiscard(Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
  )
}
