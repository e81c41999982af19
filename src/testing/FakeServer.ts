/**
 * A scripted OpenAI-compatible HTTP server on 127.0.0.1: a real backend for end-to-end tests and
 * for rehearsing outages against a real config. It records every request and whether the caller
 * hung up on it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import { type FakeBehaviour, plan } from "./Script.js"

export interface FakeServerOptions {
  /** Used in default answers (`Hello from <name>!`); default `fake`. */
  readonly name?: string
  /** What `GET /v1/models` lists. */
  readonly models?: ReadonlyArray<string>
  /**
   * The whole body of `GET /v1/models` (when the behaviour is `ok`), from the request's query: for
   * listings with capabilities, prices or pages. Default: the plain list of `models`.
   */
  readonly listing?: (query: URLSearchParams) => unknown
  readonly behaviour?: FakeBehaviour | ReadonlyArray<FakeBehaviour>
  readonly port?: number
  readonly host?: string
}

export interface FakeServerRequest {
  readonly method: string
  readonly path: string
  readonly headers: IncomingMessage["headers"]
  readonly body: unknown
  /** Set when the caller closed the connection before the answer was complete. */
  aborted: boolean
  /** Set when the answer was sent completely. */
  completed: boolean
}

export interface FakeServer {
  /** The API root to configure as a provider endpoint: `http://127.0.0.1:<port>/v1`. */
  readonly url: string
  readonly port: number
  readonly requests: ReadonlyArray<FakeServerRequest>
  /** Replaces the script; sequences restart. */
  readonly setBehaviour: (behaviour: FakeBehaviour | ReadonlyArray<FakeBehaviour>) => void
  /** Resolves once a request was aborted by the caller (or at once if one already was). */
  readonly waitForAbort: () => Promise<FakeServerRequest>
  readonly close: () => Promise<void>
}

export const startFakeServer = (options: FakeServerOptions = {}): Promise<FakeServer> => {
  const name = options.name ?? "fake"
  const models = options.models ?? ["fake-model"]
  let behaviour = options.behaviour ?? { mode: "ok" }
  let count = 0
  const requests: Array<FakeServerRequest> = []
  const abortWaiters: Array<(r: FakeServerRequest) => void> = []
  const sockets = new Set<Socket>()
  const timers = new Set<NodeJS.Timeout>()

  const next = (): FakeBehaviour => {
    if (!Array.isArray(behaviour)) return behaviour as FakeBehaviour
    const b = behaviour[Math.min(count++, behaviour.length - 1)]
    return b ?? { mode: "ok" }
  }

  const later = (ms: number, f: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t)
      f()
    }, ms)
    timers.add(t)
  }

  const handle = (req: IncomingMessage, res: ServerResponse, raw: string) => {
    const path = (req.url ?? "/").split("?")[0]!.replace(/^\/v1(?=\/)/, "")
    let body: unknown
    try {
      body = raw === "" ? undefined : JSON.parse(raw)
    } catch {
      body = raw
    }
    const record: FakeServerRequest = { method: req.method ?? "GET", path, headers: req.headers, body, aborted: false, completed: false }
    requests.push(record)
    res.on("close", () => {
      if (!res.writableFinished && !record.completed) {
        record.aborted = true
        for (const w of abortWaiters.splice(0)) w(record)
      }
    })
    const behaviourNow = next()
    let p = plan(behaviourNow, { method: record.method, path, body }, name, models)
    if (options.listing !== undefined && behaviourNow.mode === "ok" && record.method === "GET" && path === "/models" && p._tag === "Reply") {
      const query = new URLSearchParams((req.url ?? "").split("?")[1] ?? "")
      p = { ...p, chunks: [{ delayMs: 0, data: JSON.stringify(options.listing(query)) }] }
    }
    switch (p._tag) {
      case "Refuse":
      case "Reset":
        req.socket.destroy()
        return
      case "Hang":
        return
    }
    later(p.firstByteMs, () => {
      if (res.destroyed) return
      res.writeHead(p.status, { "content-type": p.contentType, ...(p.contentType === "application/json" ? {} : { "cache-control": "no-cache" }), ...p.headers })
      // A stream's headers, and those of an answer that stalls before its body, go out at once.
      if (p.contentType === "text/event-stream" || p.then !== "end") res.flushHeaders()
      let i = 0
      const step = () => {
        if (res.destroyed) return
        const chunk = p.chunks[i++]
        if (chunk === undefined) {
          if (p.then === "end") {
            record.completed = true
            res.end()
          } else if (p.then === "reset") {
            // Writes are flushed on the next tick: destroying now would drop the events just written.
            setImmediate(() => req.socket.destroy())
          }
          return
        }
        const write = () => {
          if (res.destroyed) return
          res.write(chunk.data)
          step()
        }
        if (chunk.delayMs > 0) later(chunk.delayMs, write)
        else write()
      }
      step()
    })
  }

  const server: Server = createServer((req, res) => {
    let raw = ""
    req.setEncoding("utf8")
    req.on("data", (c: string) => (raw += c))
    req.on("end", () => handle(req, res, raw))
  })
  server.on("connection", (s) => {
    sockets.add(s)
    s.on("close", () => sockets.delete(s))
  })

  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => {
      const port = (server.address() as AddressInfo).port
      resolve({
        url: `http://127.0.0.1:${port}/v1`,
        port,
        requests,
        setBehaviour: (b) => {
          behaviour = b
          count = 0
        },
        waitForAbort: () =>
          new Promise((res) => {
            const done = requests.find((r) => r.aborted)
            if (done !== undefined) res(done)
            else abortWaiters.push(res)
          }),
        close: () =>
          new Promise((res) => {
            for (const t of timers) clearTimeout(t)
            for (const s of sockets) s.destroy()
            server.close(() => res())
          })
      })
    })
  })
}
