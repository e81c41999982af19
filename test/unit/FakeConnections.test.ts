/**
 * The in-memory fake provider keeps each provider to its `maxConnections` calls in flight, as the
 * live client's pool does: further calls wait in line (`onRequestWaiting`), go out in the order they
 * asked (`onRequestSent`) as connections free up, and one aborted while waiting is never sent. So a
 * user testing routing with the fake sees `busy` failovers and waits as the router really makes
 * them. Without it, every call went out at once, whatever the cap.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import type { UpstreamTransportError } from "../../src/domain/Errors.js"
import { AbortSwitch, Upstream, type UpstreamCall } from "../../src/providers/Upstream.js"
import * as Router from "../../src/router/Router.js"
import * as FakeUpstream from "../../src/testing/FakeUpstream.js"
import { chat, collector, endpoint, joinNow, pending, providerSpec, routerWith, untilSuspended } from "./helpers.js"

const calls = Effect.flatMap(FakeUpstream.FakeUpstream, (f) => f.calls)

/** Who made each call the fake received (the request's `user`), by provider. */
const senders = Effect.map(calls, (cs) => cs.map((c) => [c.provider, (c.body as { user?: unknown }).user]))

/** Lets forked fibers run until `done` holds (a few turns of the scheduler at most). */
const until = (done: () => boolean, turns = 100): Effect.Effect<void> =>
  Effect.suspend(() =>
    done() ? Effect.void : turns === 0 ? Effect.dieMessage("condition never held") : Effect.zipRight(Effect.yieldNow(), until(done, turns - 1))
  )

describe("the fake provider's connections", () => {
  const slow = { p: { behaviour: { mode: "ok" as const, firstByteMs: 1000 } } }

  it.effect("holds calls beyond maxConnections in line, sends them in order as connections free up, and never sends one aborted while waiting", () =>
    Effect.gen(function* () {
      const upstream = yield* Upstream
      const provider = providerSpec("p", { maxConnections: 1 })
      const events: Array<string> = []
      const switches = new Map<string, AbortSwitch>()
      const call = (user: string): UpstreamCall => {
        const abort = new AbortSwitch()
        switches.set(user, abort)
        return {
          provider,
          method: "POST",
          path: "/chat/completions",
          body: JSON.stringify(chat("m", { user })),
          abort,
          onRequestWaiting: () => events.push(`${user} waiting`),
          onRequestSent: () => events.push(`${user} sent`)
        }
      }
      const one = yield* Effect.fork(upstream.send(call("1")))
      yield* until(() => events.length === 1)
      const two = yield* Effect.fork(Effect.flip(upstream.send(call("2"))))
      yield* until(() => events.length === 2)
      const three = yield* Effect.fork(upstream.send(call("3")))
      yield* until(() => events.length === 3)
      expect(events).toEqual(["1 sent", "2 waiting", "3 waiting"])
      expect(yield* senders).toEqual([["p", "1"]])

      // Aborted while waiting: it leaves the line and fails, and the provider never hears of it.
      switches.get("2")!.abort()
      const aborted: UpstreamTransportError = yield* Fiber.join(two)
      expect([aborted.reason, aborted.detail]).toEqual(["aborted", "request aborted"])

      yield* TestClock.adjust("1 second")
      const first = yield* Fiber.join(one)
      // Reading the answer to its end frees the connection: it passes to the call waiting longest,
      // even to one that asks in the very same turn.
      yield* first.body
      const four = yield* Effect.fork(upstream.send(call("4")))
      yield* until(() => events.length === 5)
      expect(events).toEqual(["1 sent", "2 waiting", "3 waiting", "3 sent", "4 waiting"])
      expect(yield* senders).toEqual([["p", "1"], ["p", "3"]])

      yield* TestClock.adjust("1 second")
      yield* (yield* Fiber.join(three)).body
      yield* until(() => events.length === 6)
      expect(events.at(-1)).toBe("4 sent")
      yield* TestClock.adjust("1 second")
      yield* (yield* Fiber.join(four)).body
      expect(yield* senders).toEqual([["p", "1"], ["p", "3"], ["p", "4"]])
      expect((yield* calls).map((c) => c.aborted)).toEqual([false, false, false])
    }).pipe(Effect.provide(FakeUpstream.layer(slow))))

  it.effect("frees a connection when its call is interrupted, in line or in flight, or its answer discarded", () =>
    Effect.gen(function* () {
      const upstream = yield* Upstream
      const provider = providerSpec("p", { maxConnections: 1 })
      const sent: Array<string> = []
      const call = (user: string): UpstreamCall => ({
        provider,
        method: "POST",
        path: "/chat/completions",
        body: JSON.stringify(chat("m", { user })),
        onRequestSent: () => sent.push(user)
      })
      const one = yield* Effect.fork(upstream.send(call("1")))
      const two = yield* Effect.fork(upstream.send(call("2")))
      const three = yield* Effect.fork(upstream.send(call("3")))
      yield* until(() => sent.length === 1)
      yield* Fiber.interrupt(two)
      // Interrupted before its answer: its connection goes to the next in line, 3 (2 left the line).
      yield* Fiber.interrupt(one)
      yield* until(() => sent.length === 2)
      expect(sent).toEqual(["1", "3"])
      yield* TestClock.adjust("1 second")
      // An answer dropped unread frees its connection too.
      yield* (yield* Fiber.join(three)).discard
      const four = yield* Effect.fork(upstream.send(call("4")))
      yield* until(() => sent.length === 3)
      yield* TestClock.adjust("1 second")
      yield* (yield* Fiber.join(four)).body
      expect(sent).toEqual(["1", "3", "4"])
      expect((yield* calls).map((c) => [(c.body as { user: string }).user, c.aborted])).toEqual([["1", true], ["3", true], ["4", false]])
    }).pipe(Effect.provide(FakeUpstream.layer(slow))))
})

describe("the router over the fake provider, at its max_connections", () => {
  // a serves one request at a time, and streams its answers slowly: an event every 4 s, the whole
  // answer (role, three pieces of content, finish, [DONE]) over 20 s. Plain answers come at once.
  const scripts = { a: { behaviour: { mode: "ok" as const, chunkDelayMs: 4000 } } }
  const a = { endpoint: endpoint("a"), models: ["m"], priority: 1, max_connections: 1, timeouts: { first_byte: 10 } }
  const b = { endpoint: endpoint("b"), models: ["m"], priority: 2 }

  /** Until the fake has received `n` calls. */
  const received = (n: number, turns = 100): Effect.Effect<void, never, FakeUpstream.FakeUpstream> =>
    Effect.flatMap(calls, (cs) =>
      cs.length >= n ? Effect.void : turns === 0 ? Effect.dieMessage(`fewer than ${n} calls`) : Effect.zipRight(Effect.yieldNow(), received(n, turns - 1)))

  /**
   * A stream to a takes its only connection; a plain request then waits for one. At 4 s, the
   * stream's first event: the stream is being piped to `out`, and the plain request still waits.
   */
  const streamThenPlain = Effect.gen(function* () {
    const router = yield* Router.Router
    const stream = yield* Effect.fork(router.chat({ request: chat("m", { user: "stream", stream: true }) }))
    yield* received(1)
    const waiting = yield* Effect.fork(router.chat({ request: chat("m", { user: "plain" }) }))
    yield* untilSuspended(waiting)
    yield* TestClock.adjust("4 seconds")
    const answer = yield* joinNow(stream)
    if (answer._tag !== "Stream") return yield* Effect.dieMessage("expected a stream")
    const out = collector()
    const piping = yield* Effect.fork(answer.pipe(out.writer))
    return { waiting, out, piping }
  })

  it.effect("moves a request waiting for a's only connection on to b after first_byte (busy), and a's next request goes out once the stream ends", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const { waiting, out, piping } = yield* streamThenPlain
      yield* TestClock.adjust("5999 millis")
      expect(yield* pending(waiting)).toBe(true)
      expect(yield* senders).toEqual([["a", "stream"]])
      yield* TestClock.adjust("1 millis")
      const reply = yield* joinNow(waiting)
      expect(reply.provider).toBe("b")
      expect(reply.attempts.map((x) => [x.provider, x.outcome, x.detail, x.durationMs])).toEqual([
        ["a", "busy", "no free connection to the provider within 10000 ms (max_connections 1)", 10_000],
        ["b", "ok", "ok", 0]
      ])
      // The request that moved on never went out to a.
      expect(yield* senders).toEqual([["a", "stream"], ["b", "plain"]])

      // The stream ends at 20 s and frees the connection: the next request to a goes out at once.
      yield* TestClock.adjust("10 seconds")
      yield* joinNow(piping)
      expect(out.text()).toContain("data: [DONE]")
      const next = yield* router.chat({ request: chat("m", { user: "next" }) })
      expect(next.attempts.map((x) => [x.provider, x.outcome, x.durationMs])).toEqual([["a", "ok", 0]])
      expect(yield* senders).toEqual([["a", "stream"], ["b", "plain"], ["a", "next"]])
    }).pipe(Effect.provide(routerWith({ providers: { a, b } }, scripts))))

  it.effect("keeps a request that has no other candidate waiting past first_byte, and serves it when the connection frees up", () =>
    Effect.gen(function* () {
      const { waiting, piping } = yield* streamThenPlain
      // Past first_byte (10 s), and still waiting: nobody else could take it.
      yield* TestClock.adjust("15999 millis")
      expect(yield* pending(waiting)).toBe(true)
      expect(yield* senders).toEqual([["a", "stream"]])
      // The stream ends at 20 s: the connection is free, and the waiting request goes out.
      yield* TestClock.adjust("1 millis")
      yield* joinNow(piping)
      const reply = yield* joinNow(waiting)
      expect(reply.attempts.map((x) => [x.provider, x.outcome, x.durationMs])).toEqual([["a", "ok", 20_000]])
      expect(yield* senders).toEqual([["a", "stream"], ["a", "plain"]])
    }).pipe(Effect.provide(routerWith({ providers: { a } }, scripts))))
})
