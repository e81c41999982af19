/**
 * A fake `Upstream`: scripted providers answering in memory, no network, timed by Effect's `Clock`
 * (so `TestClock` drives its delays). Provide it instead of the live `Upstream.layer` to test routing.
 * Like the live client, it keeps each provider to its `maxConnections` calls in flight; the rest
 * wait for one (see `Connections`).
 */
import { Context, Effect, Layer, Ref } from "effect"
import { discoveryRequestId } from "../domain/Capabilities.js"
import { UpstreamTransportError } from "../domain/Errors.js"
import type { ProviderSpec } from "../domain/Provider.js"
import { type ChunkWriter, requestVia, Upstream, type UpstreamCall, type UpstreamResponse } from "../providers/Upstream.js"
import { type FakeBehaviour, plan } from "./Script.js"

export interface FakeProviderScript {
  /** One behaviour for every call, or a sequence played in order whose last entry repeats. */
  readonly behaviour?: FakeBehaviour | ReadonlyArray<FakeBehaviour>
  /** What `GET /models` lists. */
  readonly models?: ReadonlyArray<string>
  /**
   * The body model discovery gets for a path (`/models`, `/models?after=...`), in place of the
   * plain list of `models`: for listings with capabilities, prices or pages.
   */
  readonly listing?: (path: string) => unknown
}

/** One request a fake provider received. */
export interface FakeCall {
  readonly provider: string
  readonly method: string
  readonly path: string
  readonly body: unknown
  /** Whether the caller aborted it before it completed. */
  readonly aborted: boolean
}

export interface FakeUpstreamService {
  /**
   * Every call so far, in the order they went out: a call still waiting for a connection, or
   * aborted while it waited, never reached the provider and is not listed.
   */
  readonly calls: Effect.Effect<ReadonlyArray<FakeCall>>
}

export class FakeUpstream extends Context.Tag("sanctum/FakeUpstream")<FakeUpstream, FakeUpstreamService>() {}

/**
 * One provider's connections, as the live client's pool keeps them: at most `size` calls hold one,
 * and the rest wait for one, first come first served. A call holds its connection until its answer
 * has been read to the end, it failed, or it was aborted or discarded.
 *
 * Not an Effect `Semaphore`: it wakes its waiters on a later task, and a call arriving meanwhile
 * takes the freed permit at once, ahead of every call waiting (the waiter then queues again, at the
 * back). Here a freed connection passes straight to the call that has waited longest, as in
 * undici's pool, so the order calls go out in is the order they asked.
 */
class Connections {
  private busy = 0
  private readonly waiting: Array<() => void> = []

  constructor(readonly size: number) {}

  /**
   * Takes a connection for `call`: at once when one is free, else after a wait in line, announced
   * by `onRequestWaiting`. `taken` runs the moment the connection becomes the call's, before the
   * call's fiber resumes, so whoever gives it back on interruption knows it has one. A call
   * aborted while it waits leaves the line and fails with `aborted`, never having gone out.
   */
  take(call: UpstreamCall, taken: () => void): Effect.Effect<void, UpstreamTransportError> {
    return Effect.async((resume) => {
      if (this.busy < this.size) {
        this.busy++
        taken()
        return resume(Effect.void)
      }
      const aborted = () => resume(Effect.fail(new UpstreamTransportError({ provider: call.provider.id, reason: "aborted", detail: "request aborted" })))
      if (call.abort?.aborted) return aborted()
      let inLine = true
      const turn = () => {
        inLine = false
        taken()
        resume(Effect.void)
      }
      const leave = () => {
        if (!inLine) return false
        inLine = false
        this.waiting.splice(this.waiting.indexOf(turn), 1)
        return true
      }
      this.waiting.push(turn)
      call.abort?.onAbort(() => {
        if (leave()) aborted()
      })
      call.onRequestWaiting?.()
      return Effect.sync(() => void leave())
    })
  }

  /** Gives a connection back: to the call waiting longest, if any. */
  release(): void {
    const next = this.waiting.shift()
    if (next !== undefined) next()
    else this.busy--
  }
}

const decodeBody = (body: UpstreamCall["body"]): unknown => {
  if (body === undefined) return undefined
  try {
    return JSON.parse(typeof body === "string" ? body : Buffer.from(body).toString("utf8"))
  } catch {
    return undefined
  }
}

/**
 * Providers by id; a provider without a script answers `ok`. Provides `Upstream` and `FakeUpstream`
 * (to inspect the calls).
 */
export const layer = (scripts: Readonly<Record<string, FakeProviderScript>> = {}) =>
  Layer.effectContext(
    Effect.gen(function* () {
      const calls = yield* Ref.make<ReadonlyArray<FakeCall>>([])
      const counters = new Map<string, number>()
      const connections = new Map<string, Connections>()

      const connectionsOf = (provider: ProviderSpec): Connections => {
        const known = connections.get(provider.id)
        if (known !== undefined && known.size === provider.maxConnections) return known
        // A changed cap gets a new set of connections, as the live client gets a new pool: calls
        // holding or waiting for one of the old set finish there.
        const fresh = new Connections(provider.maxConnections)
        connections.set(provider.id, fresh)
        return fresh
      }

      const behaviourFor = (provider: string): FakeBehaviour => {
        const b = scripts[provider]?.behaviour ?? { mode: "ok" }
        if (!Array.isArray(b)) return b as FakeBehaviour
        const n = counters.get(provider) ?? 0
        counters.set(provider, n + 1)
        return b[Math.min(n, b.length - 1)] ?? { mode: "ok" }
      }

      /** Answers model discovery: the script's `listing`, else the plain list of its `models`. */
      const discovery = (call: UpstreamCall): UpstreamResponse => {
        const script = scripts[call.provider.id]
        const p = plan({ mode: "ok" }, { method: call.method, path: call.path, body: undefined }, call.provider.id, script?.models ?? [])
        const [status, text] = script?.listing !== undefined
          ? [200, JSON.stringify(script.listing(call.path))]
          : p._tag === "Reply"
          ? [p.status, p.chunks.map((c) => c.data).join("")]
          : [404, ""]
        const bytes = new Uint8Array(Buffer.from(text))
        let read = false
        return {
          status,
          headers: { "content-type": "application/json" },
          body: Effect.succeed(bytes),
          next: Effect.sync(() => (read ? null : ((read = true), bytes))),
          pipe: (writer) => Effect.sync(() => void writer.write(bytes)),
          discard: Effect.void
        }
      }

      const send = (call: UpstreamCall): Effect.Effect<UpstreamResponse, UpstreamTransportError> => {
        // Model discovery asks every provider at start: it takes no turn in the script, no
        // connection, and stays out of `calls`, so a test's sequences, call lists and connection
        // limits see only the traffic it makes.
        if (call.requestId === discoveryRequestId) return Effect.sync(() => discovery(call))
        const slots = connectionsOf(call.provider)
        let holds = false
        // Every way a call ends gives its connection back, once.
        const free = () => {
          if (holds) {
            holds = false
            slots.release()
          }
        }
        return Effect.gen(function* () {
          const id = call.provider.id
          yield* slots.take(call, () => (holds = true))
          // Only now does the provider see the call: one aborted while waiting was never sent.
          call.onRequestSent?.()
          const body = decodeBody(call.body)
          const index = yield* Ref.modify(calls, (cs) => [cs.length, [...cs, { provider: id, method: call.method, path: call.path, body, aborted: false }]])
          let finished = false
          const markAborted = Ref.update(calls, (cs) => cs.map((c, i) => (i === index ? { ...c, aborted: true } : c)))
          const fail = (reason: UpstreamTransportError["reason"], detail: string) =>
            Effect.fail(new UpstreamTransportError({ provider: id, reason, detail }))
          // Like the live client: aborting the signal (or interrupting) ends whatever is pending.
          let onAbort: (() => void) | undefined
          // Like the live client, an abort at any time (a discard included) is seen by the provider.
          call.abort?.onAbort(() => {
            if (!finished) Effect.runSync(markAborted)
            free()
            onAbort?.()
          })
          const signalled: Effect.Effect<never, UpstreamTransportError> = Effect.async((resume) => {
            if (call.abort === undefined) return
            if (call.abort.aborted) return resume(fail("aborted", "request aborted"))
            onAbort = () => resume(fail("aborted", "request aborted"))
            return Effect.sync(() => {
              onAbort = undefined
            })
          })
          // As the contract says, interrupting a pending read throws the caller's switch.
          const abortable = <A>(effect: Effect.Effect<A, UpstreamTransportError>) =>
            Effect.raceFirst(effect, signalled).pipe(
              Effect.tapError((e) => (e.reason === "aborted" ? Effect.zipRight(Effect.sync(free), markAborted) : Effect.void)),
              Effect.onInterrupt(() =>
                Effect.suspend(() => {
                  call.abort?.abort()
                  free()
                  return finished ? Effect.void : markAborted
                })
              )
            )
          const p = plan(behaviourFor(id), { method: call.method, path: call.path, body }, id, scripts[id]?.models ?? [])
          switch (p._tag) {
            case "Refuse":
              free()
              return yield* fail("connect", "connection refused")
            case "Reset":
              free()
              return yield* fail("reset", "connection reset by upstream")
            case "Hang":
              return yield* abortable(Effect.never)
          }
          yield* abortable(Effect.sleep(p.firstByteMs))
          let next = 0
          const read: Effect.Effect<string | null, UpstreamTransportError> = Effect.suspend(() => {
            const chunk = p.chunks[next]
            if (chunk === undefined) {
              if (p.then === "hang") return Effect.never
              if (p.then === "reset") {
                free()
                return fail("reset", "connection reset by upstream")
              }
              finished = true
              free()
              return Effect.succeed(null)
            }
            next++
            return Effect.as(Effect.sleep(chunk.delayMs), chunk.data)
          })
          const readAll = Effect.gen(function* () {
            let out = ""
            for (;;) {
              const c = yield* read
              if (c === null) return new Uint8Array(Buffer.from(out))
              out += c
            }
          })
          const pipe = (writer: ChunkWriter) =>
            abortable(Effect.gen(function* () {
              for (;;) {
                const c = yield* read
                if (c === null) return
                if (!writer.write(Buffer.from(c))) yield* Effect.async<void>((resume) => writer.onDrain(() => resume(Effect.void)))
              }
            }))
          return {
            status: p.status,
            headers: { "content-type": p.contentType, ...p.headers },
            body: abortable(readAll),
            next: abortable(Effect.map(read, (c) => (c === null ? null : new Uint8Array(Buffer.from(c))))),
            pipe,
            discard: Effect.suspend(() => {
              free()
              return finished ? Effect.void : markAborted
            })
          } satisfies UpstreamResponse
        }).pipe(
          // Interrupted anywhere between taking its connection and handing out the answer (a
          // pending read gives it back itself).
          Effect.onInterrupt(() => Effect.sync(free))
        )
      }

      return Context.make(Upstream, Upstream.of({ send, request: requestVia(send) })).pipe(
        Context.add(FakeUpstream, FakeUpstream.of({ calls: Ref.get(calls) }))
      )
    })
  )
