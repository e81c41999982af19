/**
 * The live `Upstream`'s connections, against real loopback servers.
 *
 * Most of it: a server that closes kept-alive connections on its own clock (as uvicorn does after
 * 5 s). A request that goes out on a connection the server has just closed is lost before the
 * server reads it, and is sent again on another connection instead of failing. A connection that
 * dies on its first request is a real failure, and is never sent again. The race is made
 * deterministic: the server here drops a connection when a request arrives on it that its policy
 * refuses, exactly what the client sees when its request crosses the server's close.
 *
 * Also: the connector the pools use (a refused connection, an untrusted certificate) and how long
 * idle connections are kept.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Exit, Fiber, Layer, Scope } from "effect"
import { readFileSync } from "node:fs"
import { createServer as createHttpServer } from "node:http"
import { createServer as createHttpsServer } from "node:https"
import { createServer, type Server, type Socket } from "node:net"
import type { ProviderSpec } from "../../src/domain/Provider.js"
import * as UpstreamLive from "../../src/providers/Upstream.js"
import { providerSpec } from "./helpers.js"

const answer = JSON.stringify({
  id: "c1",
  object: "chat.completion",
  created: 1,
  model: "m",
  choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }]
})
const events = `data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", created: 1, model: "m", choices: [{ index: 0, delta: { content: "hi" }, finish_reason: null }] })}\n\ndata: [DONE]\n\n`

/**
 * What the server does with the n-th request on a connection (1-based), the k-th request overall:
 * answer it, close the connection without a word (FIN), reset it (RST, what a server closing with
 * the request unread in its buffer sends), close it in the middle of a status line, answer after
 * an interim `100 Continue` nobody asked for, or say nothing at all.
 */
type Policy = (onConnection: number, overall: number) => "answer" | "close" | "reset" | "partial" | "interim" | "silent"

interface RawServer {
  readonly url: string
  /** Requests received, answered or not. */
  readonly received: () => number
  readonly connections: () => number
  readonly close: () => Promise<void>
}

/** A minimal HTTP/1.1 keep-alive server on a raw socket: no Keep-Alive header, no idle timer. */
const rawServer = (policy: Policy): Promise<RawServer> => {
  let received = 0
  let connections = 0
  const sockets = new Set<Socket>()
  const server: Server = createServer((socket) => {
    connections++
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
    socket.on("error", () => {})
    let onConnection = 0
    let buffered = ""
    socket.on("data", (d) => {
      buffered += d.toString("latin1")
      for (;;) {
        const end = buffered.indexOf("\r\n\r\n")
        if (end === -1) return
        const length = Number(/content-length:\s*(\d+)/i.exec(buffered.slice(0, end))?.[1] ?? 0)
        if (buffered.length < end + 4 + length) return
        const head = buffered.slice(0, end)
        buffered = buffered.slice(end + 4 + length)
        received++
        onConnection++
        const action = policy(onConnection, received)
        if (action === "close") return void socket.destroy()
        if (action === "reset") return void socket.resetAndDestroy()
        if (action === "partial") return void socket.end("HTTP/1.1 2")
        if (action === "silent") return
        const streamed = /^accept: text\/event-stream/im.test(head)
        const body = streamed ? events : answer
        if (action === "interim") socket.write("HTTP/1.1 100 Continue\r\n\r\n")
        socket.write(`HTTP/1.1 200 OK\r\ncontent-type: ${streamed ? "text/event-stream" : "application/json"}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
      }
    })
  })
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      resolve({
        url: `http://127.0.0.1:${port}/v1`,
        received: () => received,
        connections: () => connections,
        close: () =>
          new Promise((done) => {
            for (const s of sockets) s.destroy()
            server.close(() => done())
          })
      })
    })
  })
}

const servers: Array<RawServer> = []
afterAll(async () => {
  for (const s of servers) await s.close()
})
const serve = async (policy: Policy) => {
  const s = await rawServer(policy)
  servers.push(s)
  return s
}

const body = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] })
const spec = (url: string): ProviderSpec => providerSpec("p", { endpoint: url })

const ask = (provider: ProviderSpec) =>
  Effect.flatMap(UpstreamLive.Upstream, (u) =>
    Effect.map(u.request({ provider, method: "POST", path: "/chat/completions", body }), (r) => ({
      status: r.status,
      text: Buffer.from(r.body).toString("utf8")
    })))

const askStreamed = (provider: ProviderSpec) =>
  Effect.flatMap(UpstreamLive.Upstream, (u) =>
    Effect.flatMap(u.send({ provider, method: "POST", path: "/chat/completions", body, stream: true }), (r) =>
      Effect.map(r.body, (bytes) => ({ status: r.status, text: Buffer.from(bytes).toString("utf8") }))))

/**
 * Lets undici mark the connection free again (it does so in a microtask after an answer ends), as
 * it is by the time a router's next request arrives; asked at once, the pool would open another.
 */
const settle = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

/** The server answers one request per connection and closes a connection asked a second time. */
const onePerConnection: Policy = (onConnection) => (onConnection === 1 ? "answer" : "close")

describe("a kept-alive connection the server has closed", () => {
  // The server closes the connection (FIN), or resets it (RST: what a server closing with the
  // request unread in its buffer sends, which reaches undici as a bare ECONNRESET).
  for (const action of ["close", "reset"] as const) {
    it.live(`(${action}) a request lost on it is sent again on a new connection, and answered`, () =>
      Effect.gen(function* () {
        const server = yield* Effect.promise(() => serve((onConnection) => (onConnection === 1 ? "answer" : action)))
        const p = spec(server.url)
        for (let i = 0; i < 3; i++) {
          yield* settle
          const r = yield* ask(p)
          expect(r.status).toBe(200)
          expect(r.text).toBe(answer)
        }
        // Requests 2 and 3 each met the closed connection first: 5 received, 3 connections.
        expect(server.received()).toBe(5)
        expect(server.connections()).toBe(3)
      }).pipe(Effect.provide(UpstreamLive.layer)))
  }

  it.live("a streamed request is sent again the same way", () =>
    Effect.gen(function* () {
      const server = yield* Effect.promise(() => serve(onePerConnection))
      const p = spec(server.url)
      expect((yield* askStreamed(p)).text).toBe(events)
      yield* settle
      expect((yield* askStreamed(p)).text).toBe(events)
      expect(server.received()).toBe(3)
    }).pipe(Effect.provide(UpstreamLive.layer)))

  it.live("the caller hears of the new send: its limits count from when the request went out again", () =>
    Effect.gen(function* () {
      const server = yield* Effect.promise(() => serve(onePerConnection))
      const p = spec(server.url)
      yield* ask(p)
      yield* settle
      let sent = 0
      const u = yield* UpstreamLive.Upstream
      const r = yield* u.request({ provider: p, method: "POST", path: "/chat/completions", body, onRequestSent: () => sent++ })
      expect(r.status).toBe(200)
      expect(sent).toBe(2)
    }).pipe(Effect.provide(UpstreamLive.layer)))
})

describe("a connection that dies on its own first request", () => {
  for (const action of ["close", "reset"] as const) {
    it.live(`(${action}) is a failure, and the request is not sent again`, () =>
      Effect.gen(function* () {
        const server = yield* Effect.promise(() => serve(() => action))
        const result = yield* Effect.either(ask(spec(server.url)))
        expect(Either.isLeft(result) && result.left.reason).toBe("reset")
        expect(server.received()).toBe(1)
      }).pipe(Effect.provide(UpstreamLive.layer)))
  }
})

describe("an interim 100 Continue nobody asked for", () => {
  // undici drops the connection at it rather than read the answer after it: a malformed answer,
  // reported as one (not as a reset, which would send a reader looking at the network).
  it.live("is a protocol error that says so", () =>
    Effect.gen(function* () {
      const server = yield* Effect.promise(() => serve(() => "interim"))
      const result = yield* Effect.either(ask(spec(server.url)))
      if (Either.isRight(result)) throw new Error("expected a failure")
      expect(result.left.reason).toBe("protocol")
      expect(result.left.detail).toBe("malformed response (bad response: an interim answer nobody asked for)")
    }).pipe(Effect.provide(UpstreamLive.layer)))
})

describe("a request still under way when the router's pools close (shutting down)", () => {
  it.live("ends as aborted, the router's doing, not as a failure of the provider", () =>
    Effect.gen(function* () {
      const server = yield* Effect.promise(() => serve(() => "silent"))
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(UpstreamLive.layer, scope)
      const upstream = Context.get(context, UpstreamLive.Upstream)
      const call = yield* Effect.fork(Effect.either(upstream.request({ provider: spec(server.url), method: "POST", path: "/chat/completions", body })))
      yield* Effect.sleep("100 millis")
      yield* Scope.close(scope, Exit.void)
      const result = yield* Fiber.join(call)
      if (Either.isRight(result)) throw new Error("expected a failure")
      expect(result.left.reason).toBe("aborted")
      expect(result.left.detail).toBe("connection pool closed (the router is shutting down)")
    }))
})

describe("the new send is one, not more", () => {
  // After the first request the server fails every one: by closing the connection, which on the
  // new connection is a plain failure; or by starting an answer and breaking off mid-status-line,
  // which looks stale there too (bytes were read, no answer began).
  for (const action of ["close", "partial"] as const) {
    it.live(`(${action}) after a stale connection, a second loss ends the call`, () =>
      Effect.gen(function* () {
        const server = yield* Effect.promise(() => serve((_, overall) => (overall === 1 ? "answer" : action)))
        const p = spec(server.url)
        expect((yield* ask(p)).status).toBe(200)
        yield* settle
        const result = yield* Effect.either(ask(p))
        expect(Either.isLeft(result) && result.left.reason).toBe("reset")
        // The first request, the one lost on the stale connection, and one on a new connection.
        expect(server.received()).toBe(3)
      }).pipe(Effect.provide(UpstreamLive.layer)))
  }
})

describe("a whole answer's body, as it arrives", () => {
  it.live("request tells of each piece after the response start (the router's idle limit counts the gaps)", () =>
    Effect.gen(function* () {
      // The first half, then the rest once the caller has heard of the first (or, if it never
      // does, a second later, so the test fails rather than hangs).
      let rest: () => void = () => {}
      const server = createHttpServer((_, res) => {
        res.writeHead(200, { "content-type": "application/json" })
        res.write(answer.slice(0, 40))
        const timer = setTimeout(() => rest(), 1000)
        rest = () => {
          clearTimeout(timer)
          rest = () => {}
          res.end(answer.slice(40))
        }
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((done) => server.listen(0, "127.0.0.1", () => done()))),
        () => Effect.promise(() => new Promise<void>((done) => {
          server.closeAllConnections()
          server.close(() => done())
        }))
      )
      const { port } = server.address() as { port: number }
      const heard: Array<string> = []
      const u = yield* UpstreamLive.Upstream
      const r = yield* u.request({
        provider: spec(`http://127.0.0.1:${port}/v1`),
        method: "POST",
        path: "/chat/completions",
        body,
        onResponseStart: () => heard.push("start"),
        onResponseData: () => {
          heard.push("data")
          rest()
        }
      })
      expect(Buffer.from(r.body).toString("utf8")).toBe(answer)
      expect(heard[0]).toBe("start")
      expect(heard.filter((h) => h === "data").length).toBeGreaterThanOrEqual(2)
      expect(heard.slice(1).every((h) => h === "data")).toBe(true)
    }).pipe(Effect.provide(UpstreamLive.layer), Effect.scoped))
})

describe("the connector the pools use", () => {
  it.live("a connection refused (nothing listening) is a connect failure, and the next call still works", () =>
    Effect.gen(function* () {
      // A port that was just free: nothing listens there.
      const gone = yield* Effect.promise(() => serve(() => "answer"))
      const url = gone.url
      yield* Effect.promise(() => gone.close())
      const refused = yield* Effect.either(ask(spec(url)))
      expect(Either.isLeft(refused) && refused.left.reason).toBe("connect")
      const server = yield* Effect.promise(() => serve(() => "answer"))
      expect((yield* ask(providerSpec("q", { endpoint: server.url }))).text).toBe(answer)
    }).pipe(Effect.provide(UpstreamLive.layer)))
})

describe("an HTTPS endpoint whose certificate nothing trusts", () => {
  it.live("is a connect failure that says why (a TLS error), not a protocol error", () =>
    Effect.gen(function* () {
      const fixtures = new URL("../fixtures/", import.meta.url)
      const server = createHttpsServer({ key: readFileSync(new URL("self-signed.key", fixtures)), cert: readFileSync(new URL("self-signed.pem", fixtures)) }, (_, res) => {
        res.writeHead(200, { "content-type": "application/json" }).end(answer)
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))),
        () => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
      )
      const { port } = server.address() as { port: number }
      const result = yield* Effect.either(ask(spec(`https://127.0.0.1:${port}/v1`)))
      expect(Either.isLeft(result) && result.left.reason).toBe("connect")
      expect(Either.isLeft(result) && result.left.detail).toBe("TLS error: self-signed certificate (DEPTH_ZERO_SELF_SIGNED_CERT)")
    }).pipe(Effect.scoped, Effect.provide(UpstreamLive.layer)))
})

describe("isStaleConnection", () => {
  const socketError = (message: string, bytesRead: number) =>
    Object.assign(new Error(message), { code: "UND_ERR_SOCKET", socket: { bytesRead, bytesWritten: 10 } })

  it("is a close before any answer on a connection that had carried one", () => {
    expect(UpstreamLive.isStaleConnection(socketError("other side closed", 293))).toBe(true)
    expect(UpstreamLive.isStaleConnection(socketError("closed", 293))).toBe(true)
    const reset = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET", socket: { bytesRead: 293, bytesWritten: 10 } })
    expect(UpstreamLive.isStaleConnection(reset)).toBe(true)
  })

  it("is not a close on a new connection, a malformed answer, or another error", () => {
    expect(UpstreamLive.isStaleConnection(socketError("other side closed", 0))).toBe(false)
    expect(UpstreamLive.isStaleConnection(socketError("bad response", 293))).toBe(false)
    // A reset that says nothing of its socket, or of one that never read anything.
    expect(UpstreamLive.isStaleConnection(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }))).toBe(false)
    expect(UpstreamLive.isStaleConnection(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET", socket: { bytesRead: 0 } }))).toBe(false)
    expect(UpstreamLive.isStaleConnection(undefined)).toBe(false)
  })
})

describe("keepAliveMs", () => {
  it("lets go of an idle plain-HTTP connection before uvicorn's 5 s, and keeps an HTTPS one 30 s", () => {
    expect(UpstreamLive.keepAliveMs(new URL("http://127.0.0.1:8000/v1"))).toBe(4_000)
    expect(UpstreamLive.keepAliveMs(new URL("http://gpu-box.lan:11434/v1"))).toBe(4_000)
    expect(UpstreamLive.keepAliveMs(new URL("https://api.venice.ai/api/v1"))).toBe(30_000)
  })
})
