/**
 * Shared fixtures for the router's unit tests: a router over the in-memory fake provider, an
 * in-memory `ChunkWriter`, and an `Upstream` that sends hand-written byte chunks (for framing tests
 * the fake cannot express, such as an event split across chunks).
 */
import { Effect, Layer } from "effect"
import { UpstreamTransportError } from "../../src/domain/Errors.js"
import type { ChatCompletionRequest } from "../../src/domain/OpenAi.js"
import * as Providers from "../../src/providers/Providers.js"
import { type ChunkWriter, Upstream, type UpstreamCall, type UpstreamResponse } from "../../src/providers/Upstream.js"
import * as Router from "../../src/router/Router.js"
import * as FakeUpstream from "../../src/testing/FakeUpstream.js"

export const endpoint = (id: string) => `http://127.0.0.1:1/${id}/v1`

/** A router over `config` (the YAML file's shape), its upstream the in-memory fake with `scripts`. */
export const routerWith = (config: unknown, scripts: Readonly<Record<string, FakeUpstream.FakeProviderScript>> = {}) =>
  Router.layer.pipe(
    Layer.provide(Providers.layerStatic(config)),
    Layer.provideMerge(FakeUpstream.layer(scripts))
  )

/** A router over `config` and any `Upstream` layer. */
export const routerOver = <E>(config: unknown, upstream: Layer.Layer<Upstream, E>) =>
  Router.layer.pipe(Layer.provide(Providers.layerStatic(config)), Layer.provideMerge(upstream))

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

/** Wraps the `Upstream` below it, keeping every call as given (raw body included). */
export const recording = (recorded: Recorded) =>
  Layer.effect(
    Upstream,
    Effect.map(Upstream, (inner) =>
      Upstream.of({
        send: (call) => {
          recorded.calls.push(call)
          return inner.send(call)
        }
      }))
  )

/**
 * An `Upstream` whose every provider answers 200 `text/event-stream` with these exact chunks, then
 * ends (`then: "end"`) or fails with a reset. Chunks are handed out as written, so a test decides
 * where event boundaries fall.
 */
export const chunkedUpstream = (chunks: ReadonlyArray<string>, then: "end" | "reset") =>
  Layer.succeed(
    Upstream,
    Upstream.of({
      send: (call) =>
        Effect.sync((): UpstreamResponse => {
          let next = 0
          const reset = Effect.fail(new UpstreamTransportError({ provider: call.provider.id, reason: "reset", detail: "connection reset by upstream" }))
          const read: Effect.Effect<Uint8Array | null, UpstreamTransportError> = Effect.suspend(() => {
            const c = chunks[next]
            if (c !== undefined) {
              next++
              return Effect.succeed(new Uint8Array(Buffer.from(c)))
            }
            return then === "end" ? Effect.succeed(null) : reset
          })
          return {
            status: 200,
            headers: { "content-type": "text/event-stream" },
            body: Effect.map(read, (c) => c ?? new Uint8Array(0)),
            next: read,
            pipe: (writer) =>
              Effect.gen(function* () {
                for (;;) {
                  const c = yield* read
                  if (c === null) return
                  writer.write(c)
                }
              }),
            discard: Effect.void
          }
        })
    })
  )
