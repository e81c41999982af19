/**
 * Shared pieces of the end-to-end suite: a harness that remembers every server it started (so
 * `afterAll` closes them all), an `openai` client that never retries on its own, and helpers for
 * raw HTTP calls and OpenAI-shaped error bodies.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import OpenAI from "openai"
import { expect } from "vitest"
import { type FakeServer, type FakeServerOptions, type FakeServerRequest, startFakeServer } from "../../src/testing/FakeServer.js"
import { type RouterUnderTest, startRouter, type StartOptions } from "../kit/TestRouter.js"

export interface Harness {
  readonly fake: (options?: FakeServerOptions) => Promise<FakeServer>
  readonly router: (options?: StartOptions) => Promise<RouterUnderTest>
  /** An endpoint URL nothing listens on: a fake server's address, after it was closed. */
  readonly deadEndpoint: () => Promise<string>
  readonly closeAll: () => Promise<void>
}

export const harness = (): Harness => {
  const closers: Array<() => Promise<void>> = []
  return {
    fake: async (options) => {
      const f = await startFakeServer(options)
      closers.push(() => f.close())
      return f
    },
    router: async (options) => {
      const r = await startRouter(options)
      closers.push(() => r.close())
      return r
    },
    deadEndpoint: async () => {
      const f = await startFakeServer()
      const url = f.url
      await f.close()
      return url
    },
    // Routers first (they hold connections to the fakes), then the fakes.
    closeAll: async () => {
      const all = closers.splice(0).reverse()
      for (const close of all) await close()
    }
  }
}

/** The official client, with its own retries off so every failover seen is the router's. */
/** The text of a streamed chat answer, its content deltas joined in order. */
export const streamedText = async (stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>): Promise<string> => {
  let text = ""
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ""
  return text
}

export const clientOf = (router: RouterUnderTest, apiKey = "unused-client-key") =>
  new OpenAI({ baseURL: router.baseURL, apiKey, maxRetries: 0, timeout: 15_000 })

/** Requests the fake received on one path (discovery's `GET /models` excluded by default). */
export const requestsTo = (fake: FakeServer, path = "/chat/completions"): ReadonlyArray<FakeServerRequest> =>
  fake.requests.filter((r) => r.path === path)

export const lastRequest = (fake: FakeServer, path = "/chat/completions"): FakeServerRequest => {
  const all = requestsTo(fake, path)
  const last = all[all.length - 1]
  if (last === undefined) throw new Error(`the fake received no request on ${path}`)
  return last
}

export const postJson = (
  router: RouterUnderTest,
  path: string,
  body: unknown,
  headers: Record<string, string> = {}
): Promise<Response> =>
  fetch(`${router.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body)
  })

export interface OpenAiErrorBody {
  readonly error: { readonly message: string; readonly type: string; readonly param: string | null; readonly code: string | null }
}

/** Reads a response that must be an OpenAI-shaped error with this status, and returns its body. */
export const expectOpenAiError = async (res: Response, status: number): Promise<OpenAiErrorBody["error"]> => {
  const text = await res.text()
  expect(res.status, `status of ${text}`).toBe(status)
  expect(res.headers.get("content-type") ?? "").toContain("application/json")
  const body = JSON.parse(text) as OpenAiErrorBody
  expect(Object.keys(body)).toEqual(["error"])
  expect(Object.keys(body.error).sort()).toEqual(["code", "message", "param", "type"])
  expect(typeof body.error.message).toBe("string")
  expect(body.error.message.length).toBeGreaterThan(0)
  expect(typeof body.error.type).toBe("string")
  return body.error
}

/** The parsed attempts of a stored request record. */
export interface StoredAttempt {
  readonly provider: string
  readonly upstreamModel: string
  readonly outcome: string
  readonly detail: string
  readonly status: number | null
  readonly durationMs: number
}

export const attemptsOf = (record: { readonly attempts: ReadonlyArray<unknown> }): ReadonlyArray<StoredAttempt> =>
  record.attempts as ReadonlyArray<StoredAttempt>

/** The record of the request with this id (the router stores the client's `x-request-id`). */
export const recordOf = async (router: RouterUnderTest, requestId: string) => {
  const records = await router.records(200)
  const found = records.find((r) => r.request_id === requestId)
  if (found === undefined) throw new Error(`no record for request ${requestId}; have ${records.map((r) => r.request_id).join(", ")}`)
  return found
}

/** Resolves once `condition` holds, checked on every turn of the event loop (a test's own timeout bounds it). */
export const until = (condition: () => boolean): Promise<void> =>
  new Promise((resolve) => {
    const check = () => (condition() ? resolve() : setImmediate(check))
    check()
  })

let counter = 0
/** A fresh request id, so a test can find its own record. */
export const newRequestId = (label: string) => `e2e-${label}-${process.pid}-${++counter}`

/**
 * A hand-written upstream on 127.0.0.1, for what the scripted fake cannot do. `close` destroys
 * its open connections first, so a test's hanging request cannot hold it open.
 */
export const loopbackServer = (
  handler: (req: IncomingMessage, res: ServerResponse, body: string) => void
): Promise<{ readonly url: string; readonly close: () => Promise<void> }> => {
  const sockets = new Set<Socket>()
  const server = createServer((req, res) => {
    let raw = ""
    req.setEncoding("utf8")
    req.on("data", (c: string) => (raw += c))
    req.on("end", () => handler(req, res, raw))
  })
  server.on("connection", (s) => {
    sockets.add(s)
    s.on("close", () => sockets.delete(s))
  })
  const close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy()
      server.close(() => resolve())
    })
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, close }))
  )
}
