/**
 * Failover between real HTTP upstreams: what moves a request to the next provider (5xx, reset,
 * refused connection, no first byte, a stream with headers but no event), what does not (a 4xx of
 * the request's own, a stream that already began), and what the client sees when nothing works.
 * Every scenario gets its own fakes and router, so no state leaks between them.
 */
import { request as httpRequest, type ServerResponse } from "node:http"
import { connect } from "node:net"
import { gzipSync } from "node:zlib"
import OpenAI from "openai"
import { afterAll, describe, expect, it } from "vitest"
import { chatChunks, type FakeBehaviour } from "../../src/testing/Script.js"
import type { FakeServer } from "../../src/testing/FakeServer.js"
import type { RouterUnderTest } from "../kit/TestRouter.js"
import {
  attemptsOf,
  clientOf,
  expectOpenAiError,
  harness,
  loopbackServer,
  newRequestId,
  postJson,
  recordOf,
  requestsTo,
  streamedText
} from "./helpers.js"

const h = harness()
const extraClosers: Array<() => Promise<void>> = []
afterAll(async () => {
  await h.closeAll()
  for (const close of extraClosers.splice(0)) await close()
})

/**
 * A minimal upstream that streams the first `events` events of an answer, waits until they have
 * left the process, then drops the connection: a mid-stream crash, independent of `FakeServer`.
 */
const startCuttingUpstream = async (events: number, content: string): Promise<string> => {
  const server = await loopbackServer((req, res, raw) => {
    // Health checks (GET /models) get a 404, which they count as healthy.
    if (req.method !== "POST") return void res.writeHead(404).end()
    const body = JSON.parse(raw) as Record<string, unknown>
    const chunks = chatChunks(String(body.model), content, body).slice(0, events)
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
    res.flushHeaders()
    const step = (i: number) => {
      const chunk = chunks[i]
      if (chunk === undefined) req.socket.destroy()
      else res.write(chunk, () => step(i + 1))
    }
    step(0)
  })
  extraClosers.push(server.close)
  return server.url
}

interface Pair {
  readonly alpha: FakeServer
  readonly beta: FakeServer
  readonly router: RouterUnderTest
  readonly client: OpenAI
}

/** Alpha (tried first, tiny timeouts) behaving as given, beta answering normally. */
const pair = async (
  alphaBehaviour: FakeBehaviour,
  betaBehaviour: FakeBehaviour = { mode: "ok" },
  alphaTotalSeconds = 5
): Promise<Pair> => {
  const alpha = await h.fake({ name: "alpha", behaviour: alphaBehaviour })
  const beta = await h.fake({ name: "beta", behaviour: betaBehaviour })
  const router = await h.router({
    config: {
      providers: {
        alpha: { endpoint: alpha.url, models: ["m1"], priority: 1, timeouts: { connect: 1, first_byte: 0.3, total: alphaTotalSeconds } },
        beta: { endpoint: beta.url, models: ["m1"], priority: 2, timeouts: { connect: 1, first_byte: 2, total: 5 } }
      }
    }
  })
  return { alpha, beta, router, client: clientOf(router) }
}

const ask = (client: OpenAI, requestId: string) =>
  client.chat.completions
    .create({ model: "m1", messages: [{ role: "user", content: "hello" }] }, { headers: { "x-request-id": requestId } })
    .withResponse()

describe("failover to the next provider", () => {
  it("on HTTP 500, and the record lists both attempts", async () => {
    const { alpha, beta, router, client } = await pair({ mode: "status", status: 500 })
    const requestId = newRequestId("500")
    const { data, response } = await ask(client, requestId)
    expect(data.choices[0]?.message.content).toBe("Hello from beta!")
    expect(response.headers.get("x-router-provider")).toBe("beta")
    expect(response.headers.get("x-router-attempts")).toBe("alpha:server_error,beta:ok")
    expect(requestsTo(alpha)).toHaveLength(1)
    expect(requestsTo(beta)).toHaveLength(1)
    // Both upstreams got the same body and request id.
    expect(requestsTo(beta)[0]?.body).toEqual(requestsTo(alpha)[0]?.body)
    expect(requestsTo(beta)[0]?.headers["x-request-id"]).toBe(requestId)

    const record = await recordOf(router, requestId)
    expect(record).toMatchObject({ provider: "beta", upstream_model: "m1", status: 200, outcome: "ok", model: "m1" })
    const attempts = attemptsOf(record)
    expect(attempts.map((a) => [a.provider, a.outcome, a.status])).toEqual([
      ["alpha", "server_error", 500],
      ["beta", "ok", 200]
    ])
    expect(attempts[0]?.detail).toContain("HTTP 500")
    expect(attempts[0]?.upstreamModel).toBe("m1")
  })

  it("on HTTP 429 (the provider's rate limit, not the request's fault)", async () => {
    const { client } = await pair({ mode: "status", status: 429 })
    const { data, response } = await ask(client, newRequestId("429"))
    expect(data.choices[0]?.message.content).toBe("Hello from beta!")
    expect(response.headers.get("x-router-attempts")).toBe("alpha:rate_limited,beta:ok")
  })

  // A fresh pair per status: 401/403 mark a provider misconfigured and 402 out of credits, so on a
  // shared router the later cases would skip alpha instead of reaching it.
  it("on every provider-side status (401, 402, 403, 408, 5xx) and on a redirect", async () => {
    const cases: Array<[number, string]> = [
      [401, "auth_error"],
      [402, "out_of_credits"],
      [403, "auth_error"],
      [408, "rate_limited"],
      [503, "server_error"],
      [504, "server_error"],
      [302, "bad_status"]
    ]
    for (const [status, outcome] of cases) {
      const { beta, client } = await pair({ mode: "status", status })
      const { data, response } = await ask(client, newRequestId(`s${status}`))
      expect(data.choices[0]?.message.content, `HTTP ${status}`).toBe("Hello from beta!")
      expect(response.headers.get("x-router-attempts"), `HTTP ${status}`).toBe(`alpha:${outcome},beta:ok`)
      expect(requestsTo(beta)).toHaveLength(1)
    }
  })

  it("for embeddings too", async () => {
    const { alpha, beta, client } = await pair({ mode: "status", status: 500 })
    const { data, response } = await client.embeddings
      .create({ model: "m1", input: "vector me", encoding_format: "float" })
      .withResponse()
    expect(response.headers.get("x-router-attempts")).toBe("alpha:server_error,beta:ok")
    expect(data.data).toHaveLength(1)
    expect(requestsTo(alpha, "/embeddings")).toHaveLength(1)
    expect(requestsTo(beta, "/embeddings")).toHaveLength(1)
  })

  // Once alpha has failed five times in a row its circuit opens, and the requests still to come
  // skip it at no cost: each answer lists alpha as failed or as skipped, never anything else.
  it("for many concurrent requests, each failing over on its own", async () => {
    const { alpha, beta, client } = await pair({ mode: "status", status: 500 })
    const ids = Array.from({ length: 24 }, (_, i) => newRequestId(`par${i}`))
    const results = await Promise.all(ids.map((id) => ask(client, id)))
    for (const { data, response } of results) {
      expect(data.choices[0]?.message.content).toBe("Hello from beta!")
      expect(response.headers.get("x-router-attempts")).toMatch(/^alpha:(server_error|circuit_open),beta:ok$/)
    }
    const failedAtAlpha = results.filter((r) => r.response.headers.get("x-router-attempts") === "alpha:server_error,beta:ok")
    expect(results.map((r) => r.response.headers.get("x-request-id")).sort()).toEqual([...ids].sort())
    expect(requestsTo(alpha)).toHaveLength(failedAtAlpha.length)
    expect(requestsTo(alpha).length).toBeGreaterThanOrEqual(5)
    expect(requestsTo(beta)).toHaveLength(ids.length)
  })

  it("on a connection reset before any response", async () => {
    const { router, client } = await pair({ mode: "reset" })
    const requestId = newRequestId("reset")
    const { data, response } = await ask(client, requestId)
    expect(data.choices[0]?.message.content).toBe("Hello from beta!")
    expect(response.headers.get("x-router-attempts")).toBe("alpha:connection_reset,beta:ok")
    const attempts = attemptsOf(await recordOf(router, requestId))
    expect(attempts.map((a) => a.outcome)).toEqual(["connection_reset", "ok"])
  })

  it("on a refused connection (nothing listening)", async () => {
    const dead = await h.deadEndpoint()
    const beta = await h.fake({ name: "beta" })
    const router = await h.router({
      config: {
        providers: {
          alpha: { endpoint: dead, models: ["m1"], priority: 1, timeouts: { connect: 1, first_byte: 1, total: 5 } },
          beta: { endpoint: beta.url, models: ["m1"], priority: 2 }
        }
      }
    })
    const requestId = newRequestId("refused")
    const { data, response } = await ask(clientOf(router), requestId)
    expect(data.choices[0]?.message.content).toBe("Hello from beta!")
    expect(response.headers.get("x-router-attempts")).toBe("alpha:connect_error,beta:ok")
    const attempts = attemptsOf(await recordOf(router, requestId))
    expect(attempts[0]).toMatchObject({ provider: "alpha", outcome: "connect_error", status: null })
    expect(attempts[0]?.detail).toContain("refused")
  })

  it("on a first-byte timeout (the upstream accepts and never answers), closing that call", async () => {
    const { alpha, client } = await pair({ mode: "hang" })
    const started = Date.now()
    const { data, response } = await ask(client, newRequestId("hang"))
    expect(data.choices[0]?.message.content).toBe("Hello from beta!")
    expect(response.headers.get("x-router-attempts")).toBe("alpha:timeout,beta:ok")
    // first_byte is 0.3 s: the failover must not wait for anything longer.
    expect(Date.now() - started).toBeLessThan(3_000)
    // The abandoned call is closed, not left hanging on the upstream.
    const aborted = await alpha.waitForAbort()
    expect(aborted.path).toBe("/chat/completions")
  })

  it("on a stream whose headers arrive but no first event", async () => {
    const { alpha, beta, router, client } = await pair({ mode: "stall", afterChunks: 0 })
    const requestId = newRequestId("stall")
    const { data: stream, response } = await client.chat.completions
      .create({ model: "m1", messages: [{ role: "user", content: "hello" }], stream: true }, { headers: { "x-request-id": requestId } })
      .withResponse()
    expect(response.headers.get("x-router-provider")).toBe("beta")
    expect(response.headers.get("x-router-attempts")).toBe("alpha:timeout,beta:ok")
    expect(await streamedText(stream)).toBe("Hello from beta!")
    expect((await alpha.waitForAbort()).path).toBe("/chat/completions")
    expect(requestsTo(beta)).toHaveLength(1)
    const record = await recordOf(router, requestId)
    expect(record).toMatchObject({ provider: "beta", outcome: "ok", stream: 1 })
    expect(attemptsOf(record).map((a) => `${a.provider}:${a.outcome}`)).toEqual(["alpha:timeout", "beta:ok"])
  })

  it("on a plain answer whose headers arrive and whose body then stalls, after idle, not total", async () => {
    const alpha = await h.fake({ name: "alpha", behaviour: { mode: "stallBody", afterBytes: 20 } })
    const beta = await h.fake({ name: "beta" })
    const router = await h.router({
      config: {
        providers: {
          alpha: { endpoint: alpha.url, models: ["m1"], priority: 1, timeouts: { first_byte: 2, idle: 0.3, total: 30 } },
          beta: { endpoint: beta.url, models: ["m1"], priority: 2 }
        }
      }
    })
    const requestId = newRequestId("stall-body")
    const started = Date.now()
    const { data, response } = await ask(clientOf(router), requestId)
    const elapsed = Date.now() - started
    expect(data.choices[0]?.message.content).toBe("Hello from beta!")
    expect(response.headers.get("x-router-provider")).toBe("beta")
    expect(response.headers.get("x-router-attempts")).toBe("alpha:stalled,beta:ok")
    // idle is 0.3 s: neither first_byte (2 s) nor total (30 s) was waited for.
    expect(elapsed).toBeGreaterThanOrEqual(250)
    expect(elapsed).toBeLessThan(2_000)
    // The stalled call is closed, not left open on the upstream.
    expect((await alpha.waitForAbort()).path).toBe("/chat/completions")
    const attempts = attemptsOf(await recordOf(router, requestId))
    expect(attempts.map((a) => [a.provider, a.outcome, a.status])).toEqual([["alpha", "stalled", null], ["beta", "ok", 200]])
    expect(attempts[0]?.detail).toBe("no data for 300 ms (stalled)")
  })

  it("on a streamed 500 before the stream began", async () => {
    const { client } = await pair({ mode: "status", status: 502 })
    const { data: stream, response } = await client.chat.completions
      .create({ model: "m1", messages: [{ role: "user", content: "hello" }], stream: true })
      .withResponse()
    expect(response.headers.get("x-router-attempts")).toBe("alpha:server_error,beta:ok")
    expect(await streamedText(stream)).toBe("Hello from beta!")
  })
})

/** Writes `block` `times` times with backpressure, then `last`; stops early if the router hangs up. */
const pump = (res: ServerResponse, block: Buffer, times: number, last: string) => {
  let sent = 0
  res.on("close", () => (sent = Infinity))
  const more = () => {
    while (sent < times) {
      sent++
      if (!res.write(block)) return void res.once("drain", more)
    }
    if (sent === times) res.end(last)
  }
  more()
}

describe("failover on answers that are not answers", () => {
  /** An upstream whose 200s are whatever `answer` writes, with alpha (it) tried before beta (a fake). */
  const brokenPair = async (answer: (res: ServerResponse, stream: boolean) => void) => {
    const upstream = await loopbackServer((req, res, raw) => {
      if (req.method !== "POST") return void res.writeHead(404).end()
      answer(res, (JSON.parse(raw) as { stream?: boolean }).stream === true)
    })
    extraClosers.push(upstream.close)
    const beta = await h.fake({ name: "beta" })
    const router = await h.router({
      config: {
        providers: {
          alpha: { endpoint: upstream.url, models: ["m1", "e1"], priority: 1, timeouts: { connect: 1, first_byte: 2, total: 10 } },
          beta: { endpoint: beta.url, models: ["m1", "e1"], priority: 2 }
        }
      }
    })
    return { router, client: clientOf(router) }
  }

  it("on a 200 whose body is an HTML page, nothing, a cut-off answer or an event stream to a plain request", async () => {
    const bodies: Array<[string, string | Buffer, string]> = [
      ["text/html", "<html><body>Welcome to nginx!</body></html>", "Welcome to nginx!"],
      ["application/octet-stream", gzipSync("{}"), ": 22 bytes that are not text"],
      ["application/json", "", "(empty)"],
      ["application/json", '{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"mess', "chatcmpl-1"],
      ["text/event-stream", `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: "hi" } }] })}\n\ndata: [DONE]\n\n`, "data:"]
    ]
    for (const [contentType, body, shown] of bodies) {
      const { router, client } = await brokenPair((res) => res.writeHead(200, { "content-type": contentType }).end(body))
      const requestId = newRequestId("not-an-answer")
      const { data, response } = await ask(client, requestId)
      expect(data.choices[0]?.message.content, contentType).toBe("Hello from beta!")
      expect(response.headers.get("x-router-attempts")).toBe("alpha:bad_response,beta:ok")
      const [first] = attemptsOf(await recordOf(router, requestId))
      expect(first).toMatchObject({ provider: "alpha", outcome: "bad_response", status: 200 })
      expect(first?.detail).toContain("not a JSON object")
      expect(first?.detail).toContain(shown)
    }
  })

  it("never on a compressed one: the router asks for answers as they are (accept-encoding: identity)", async () => {
    // Without an Accept-Encoding a server may use any coding (RFC 9110); this one gzips unless told not to.
    const seen: Array<string | undefined> = []
    const upstream = await loopbackServer((req, res, raw) => {
      if (req.method !== "POST") return void res.writeHead(404).end()
      seen.push(req.headers["accept-encoding"])
      const stream = (JSON.parse(raw) as { stream?: boolean }).stream === true
      const body = stream
        ? chatChunks("m1", "Plain as asked.", {}).join("")
        : JSON.stringify({ id: "c1", object: "chat.completion", created: 0, model: "m1", choices: [{ index: 0, message: { role: "assistant", content: "Plain as asked." }, finish_reason: "stop" }] })
      const type = stream ? "text/event-stream" : "application/json"
      if (req.headers["accept-encoding"] === "identity") return void res.writeHead(200, { "content-type": type }).end(body)
      res.writeHead(200, { "content-type": type, "content-encoding": "gzip" }).end(gzipSync(body))
    })
    extraClosers.push(upstream.close)
    const router = await h.router({ config: { providers: { alpha: { endpoint: upstream.url, models: ["m1"] } } } })
    const client = clientOf(router)
    const { data, response } = await ask(client, newRequestId("identity"))
    expect(response.headers.get("x-router-attempts")).toBe("alpha:ok")
    expect(data.choices[0]?.message.content).toBe("Plain as asked.")
    expect(await streamedText(await client.chat.completions.create({ model: "m1", messages: [{ role: "user", content: "hi" }], stream: true }))).toBe("Plain as asked.")
    expect(seen).toEqual(["identity", "identity"])
  })

  it("for embeddings too", async () => {
    const { client } = await brokenPair((res) => res.writeHead(200, { "content-type": "text/html" }).end("<html></html>"))
    const { data, response } = await client.embeddings.create({ model: "e1", input: "hello" }).withResponse()
    expect(data.data).toHaveLength(1)
    expect(response.headers.get("x-router-attempts")).toBe("alpha:bad_response,beta:ok")
  })

  it("on a stream that sends a megabyte without a single event, instead of holding it all", async () => {
    const { client } = await brokenPair((res) => {
      res.writeHead(200, { "content-type": "text/event-stream" })
      pump(res, Buffer.alloc(64 * 1024, 0x78), 64, "")
    })
    const { data: stream, response } = await client.chat.completions
      .create({ model: "m1", messages: [{ role: "user", content: "hello" }], stream: true })
      .withResponse()
    expect(response.headers.get("x-router-attempts")).toBe("alpha:bad_response,beta:ok")
    expect(await streamedText(stream)).toBe("Hello from beta!")
  })

  it("on an answer larger than the router holds in memory (256 MiB), cut off rather than buffered", async () => {
    const { client } = await brokenPair((res) => {
      res.writeHead(200, { "content-type": "application/json" })
      pump(res, Buffer.alloc(1024 * 1024, 0x20), 300, "{}")
    })
    const { data, response } = await ask(client, newRequestId("huge"))
    expect(data.choices[0]?.message.content).toBe("Hello from beta!")
    expect(response.headers.get("x-router-attempts")).toBe("alpha:protocol_error,beta:ok")
  })

  it("a provider whose 404 says it does not have the model fails over: its model list was out of date", async () => {
    const missing = { error: "model \"m1\" not found, try pulling it first" }
    const { alpha, beta, router, client } = await pair({ mode: "status", status: 404, body: missing })
    const requestId = newRequestId("404")
    const { data, response } = await client.chat.completions
      .create({ model: "m1", messages: [{ role: "user", content: "hello" }] }, { headers: { "x-request-id": requestId } })
      .withResponse()
    expect(data.choices[0]?.message.content).toBe("Hello from beta!")
    expect(response.headers.get("x-router-attempts")).toBe("alpha:model_not_found,beta:ok")
    expect([requestsTo(alpha).length, requestsTo(beta).length]).toEqual([1, 1])
    // Pinned to the provider without it, the 404 is the answer.
    const pinned = await postJson(router, "/v1/chat/completions", { model: "alpha+m1", messages: [{ role: "user", content: "hi" }] })
    expect((await expectOpenAiError(pinned, 404)).message).toBe(missing.error)
    expect(pinned.headers.get("x-router-attempts")).toBe("alpha:model_not_found")
  })
})

describe("no failover", () => {
  it("returns an upstream 400 as is, and never calls the next provider", async () => {
    const upstreamError = {
      error: { message: "temperature must be between 0 and 2", type: "invalid_request_error", param: "temperature", code: "invalid_value" }
    }
    const { beta, router, client } = await pair({ mode: "status", status: 400, body: upstreamError })
    const requestId = newRequestId("400")
    const error = await client.chat.completions
      .create({ model: "m1", messages: [{ role: "user", content: "hello" }], temperature: 9 }, { headers: { "x-request-id": requestId } })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(OpenAI.BadRequestError)
    const e = error as InstanceType<typeof OpenAI.BadRequestError>
    expect(e.status).toBe(400)
    expect(e.error).toEqual(upstreamError.error)
    expect(e.param).toBe("temperature")
    expect(e.headers.get("x-router-attempts")).toBe("alpha:client_error")
    expect(e.headers.get("x-request-id")).toBe(requestId)
    expect(requestsTo(beta)).toHaveLength(0)

    const record = await recordOf(router, requestId)
    expect(record).toMatchObject({ provider: "alpha", status: 400, outcome: "client_error" })
  })

  it("returns the fake's default 400 body byte for byte over raw HTTP", async () => {
    const { beta, router } = await pair({ mode: "status", status: 400 })
    const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "hi" }] })
    const body = await expectOpenAiError(res, 400)
    expect(body).toEqual({ message: "fake provider alpha answered 400", type: "fake_error", param: null, code: null })
    expect(requestsTo(beta)).toHaveLength(0)
  })

  it("wraps a non-OpenAI-shaped 4xx body into the OpenAI shape, without failing over", async () => {
    const { beta, router } = await pair({ mode: "status", status: 422, body: { detail: "field 'messages' is malformed" } })
    const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "hi" }] })
    const body = await expectOpenAiError(res, 422)
    expect(body.message).toBe("field 'messages' is malformed")
    expect(requestsTo(beta)).toHaveLength(0)
  })

  it("takes the message of vLLM's flat error body (object: error)", async () => {
    const flat = { object: "error", message: "This model's maximum number of tool calls is 8", type: "BadRequestError", param: null, code: 400 }
    const { beta, router } = await pair({ mode: "status", status: 400, body: flat })
    const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "hi" }] })
    const body = await expectOpenAiError(res, 400)
    expect(body.message).toBe("This model's maximum number of tool calls is 8")
    expect(requestsTo(beta)).toHaveLength(0)
  })
})

describe("an upstream refusal whose body is not text", () => {
  it("reaches the client described, not as raw bytes in its message", async () => {
    const bytes = gzipSync(JSON.stringify({ error: { message: "bad request" } }))
    const upstream = await loopbackServer((req, res) => {
      if (req.method !== "POST") return void res.writeHead(404).end()
      res.writeHead(400, { "content-type": "application/octet-stream" }).end(bytes)
    })
    extraClosers.push(upstream.close)
    const router = await h.router({ config: { providers: { alpha: { endpoint: upstream.url, models: ["m1"] } } } })
    const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "hi" }] })
    const error = await expectOpenAiError(res, 400)
    expect(error.message).toBe(`${bytes.byteLength} bytes that are not text`)
  })

  it("a long text body cut in the middle of a character is still quoted as text", async () => {
    const text = "é".repeat(1500)
    const upstream = await loopbackServer((req, res) => {
      if (req.method !== "POST") return void res.writeHead(404).end()
      res.writeHead(400, { "content-type": "text/plain; charset=utf-8" }).end(`x${text}`)
    })
    extraClosers.push(upstream.close)
    const router = await h.router({ config: { providers: { alpha: { endpoint: upstream.url, models: ["m1"] } } } })
    const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "hi" }] })
    const error = await expectOpenAiError(res, 400)
    // 2,000 bytes: the "x" and 999 whole characters, the half of the next one dropped.
    expect(error.message).toBe(`x${"é".repeat(999)}`)
  })
})

describe("an upstream refusal nested deeper than JSON.stringify can go", () => {
  it("is returned as an OpenAI-shaped error with its status, not left unanswered", async () => {
    const depth = 200_000
    const upstream = await loopbackServer((req, res) => {
      if (req.method !== "POST") return void res.writeHead(404).end()
      // FastAPI's validation errors put a structure under `detail`; this one is absurdly deep.
      res.writeHead(422, { "content-type": "application/json" }).end(`{"detail":${"[".repeat(depth)}${"]".repeat(depth)}}`)
    })
    extraClosers.push(upstream.close)
    const router = await h.router({ config: { providers: { alpha: { endpoint: upstream.url, models: ["m1"] } } } })
    const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "hi" }] })
    const error = await expectOpenAiError(res, 422)
    expect(error.message).toBe("Provider 'alpha' answered HTTP 422")
  })
})

describe("when no provider can answer", () => {
  it("answers 502 naming every provider tried", async () => {
    const { router, client } = await pair({ mode: "status", status: 500 }, { mode: "reset" })
    const requestId = newRequestId("alldown")
    const error = await client.chat.completions
      .create({ model: "m1", messages: [{ role: "user", content: "hello" }] }, { headers: { "x-request-id": requestId } })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(OpenAI.APIError)
    const e = error as InstanceType<typeof OpenAI.APIError>
    expect(e.status).toBe(502)
    expect(e.code).toBe("all_providers_failed")
    expect(e.type).toBe("upstream_error")
    expect(e.message).toContain("alpha")
    expect(e.message).toContain("beta")
    expect(e.headers?.get("x-router-attempts")).toBe("alpha:server_error,beta:connection_reset")

    // The same over raw HTTP, checking the exact shape.
    const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "hello" }] })
    const body = await expectOpenAiError(res, 502)
    expect(body.code).toBe("all_providers_failed")
    expect(body.param).toBeNull()
    expect(body.message).toMatch(/alpha\+m1 \(HTTP 500.*\).*beta\+m1 \(connection reset/)

    const record = await recordOf(router, requestId)
    expect(record).toMatchObject({ status: 502, outcome: "all_failed", provider: null })
    expect(attemptsOf(record).map((a) => `${a.provider}:${a.outcome}`)).toEqual(["alpha:server_error", "beta:connection_reset"])
  })

  it("answers 502 for a stream whose providers all time out", async () => {
    const alpha = await h.fake({ name: "alpha", behaviour: { mode: "stall", afterChunks: 0 } })
    const beta = await h.fake({ name: "beta", behaviour: { mode: "hang" } })
    const router = await h.router({
      config: {
        providers: {
          alpha: { endpoint: alpha.url, models: ["m1"], priority: 1, timeouts: { first_byte: 0.2 } },
          beta: { endpoint: beta.url, models: ["m1"], priority: 2, timeouts: { first_byte: 0.2 } }
        }
      }
    })
    const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "hi" }], stream: true })
    const body = await expectOpenAiError(res, 502)
    expect(body.code).toBe("all_providers_failed")
    expect(body.message).toContain("alpha")
    expect(body.message).toContain("beta")
    expect(res.headers.get("x-router-attempts")).toBe("alpha:timeout,beta:timeout")
  })

  it("answers 503 for a stream when the model's only provider cannot stream", async () => {
    const fake = await h.fake({ name: "solo" })
    const router = await h.router({
      config: { providers: { solo: { endpoint: fake.url, models: ["batch-only"], supports_streaming: false } } }
    })
    const client = clientOf(router)
    const error = await client.chat.completions
      .create({ model: "batch-only", messages: [{ role: "user", content: "hi" }], stream: true })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(OpenAI.APIError)
    expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(503)

    const res = await postJson(router, "/v1/chat/completions", { model: "batch-only", messages: [{ role: "user", content: "hi" }], stream: true })
    const body = await expectOpenAiError(res, 503)
    expect(body.code).toBe("no_available_provider")
    expect(body.message).toContain("solo")
    expect(body.message).toContain("streaming")
    expect(requestsTo(fake)).toHaveLength(0)

    // Without stream it is served.
    const ok = await client.chat.completions.create({ model: "batch-only", messages: [{ role: "user", content: "hi" }] })
    expect(ok.choices[0]?.message.content).toBe("Hello from solo!")
  })
})

describe("a client that reads a stream slowly", () => {
  it("is waited for: the upstream's pause is not taken for a stall, and the answer arrives whole", async () => {
    const piece = "a".repeat(4096)
    const event = `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] })}\n\n`
    const upstream = await loopbackServer((req, res) => {
      if (req.method !== "POST") return void res.writeHead(404).end()
      res.writeHead(200, { "content-type": "text/event-stream" })
      // 16 MB: more than the sockets and buffers in between hold, so the router must pause it.
      pump(res, Buffer.from(event), 4000, "data: [DONE]\n\n")
    })
    extraClosers.push(upstream.close)
    const router = await h.router({
      config: { providers: { alpha: { endpoint: upstream.url, models: ["m1"], timeouts: { connect: 1, first_byte: 2, idle: 0.3, total: 30 } } } }
    })
    const requestId = newRequestId("slow-reader")
    const text = await new Promise<string>((resolve, reject) => {
      const req = httpRequest(`${router.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": requestId }
      }, (res) => {
        // Not reading for four times the idle limit.
        res.pause()
        setTimeout(() => res.resume(), 1200)
        const chunks: Array<Buffer> = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
      })
      req.on("error", reject)
      req.end(JSON.stringify({ model: "m1", messages: [{ role: "user", content: "hi" }], stream: true }))
    })
    expect(text).not.toContain("stream_interrupted")
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true)
    expect(text.split("\n\n").filter((e) => e.startsWith("data: {")).length).toBe(4000)
    expect(await recordOf(router, requestId)).toMatchObject({ provider: "alpha", outcome: "ok" })
  })
})

describe("a client that stops reading a stream for good", () => {
  it("is cut loose once its answer is over, rather than holding its connection forever", async () => {
    const piece = "a".repeat(4096)
    const event = `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] })}\n\n`
    let upstreamClosed = false
    const upstream = await loopbackServer((req, res) => {
      if (req.method !== "POST") return void res.writeHead(404).end()
      res.on("close", () => (upstreamClosed = true))
      res.writeHead(200, { "content-type": "text/event-stream" })
      pump(res, Buffer.from(event), 4000, "data: [DONE]\n\n")
    })
    extraClosers.push(upstream.close)
    const router = await h.router({
      config: { providers: { alpha: { endpoint: upstream.url, models: ["m1"], timeouts: { connect: 1, first_byte: 2, idle: 0.3, total: 1 } } } }
    })
    // A raw keep-alive connection that reads nothing: a paused socket hears nothing of a close
    // either, so whether the router let go shows once it reads again, well after total and idle.
    const socket = connect(router.port, "127.0.0.1")
    socket.pause()
    const body = JSON.stringify({ model: "m1", messages: [{ role: "user", content: "hi" }], stream: true })
    socket.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`)
    await new Promise((resolve) => setTimeout(resolve, 3000))
    const ended = await new Promise<boolean>((resolve) => {
      socket.on("end", () => resolve(true))
      socket.on("error", () => resolve(true))
      // Kept open, the connection would take everything (the answer ends with an error event) and
      // then wait for the next request.
      setTimeout(() => resolve(false), 2000)
      socket.resume()
    })
    socket.destroy()
    // total (1 s) ended the answer; its end then waited idle (0.3 s) to be taken, and the router
    // cut the connection.
    expect(ended).toBe(true)
    expect(upstreamClosed).toBe(true)
  })
})

describe("a stream that fails after its first content", () => {
  const cut: FakeBehaviour = { mode: "cut", afterChunks: 3, content: "one two three four five" }

  // The same checks against the fake server's `cut` and against an upstream that drops its socket
  // right after writing its first events (a real connection cut, not a scripted one).
  const cuttingPair = async () => {
    const alphaUrl = await startCuttingUpstream(3, "one two three four five")
    const beta = await h.fake({ name: "beta" })
    const router = await h.router({
      config: {
        providers: {
          alpha: { endpoint: alphaUrl, models: ["m1"], priority: 1, timeouts: { first_byte: 2, total: 5 } },
          beta: { endpoint: beta.url, models: ["m1"], priority: 2 }
        }
      }
    })
    return { beta, router, client: clientOf(router) }
  }
  const setups = [["FakeServer cut", () => pair(cut)], ["hand-rolled upstream", cuttingPair]] as const

  for (const [label, setup] of setups) {
    it(`(${label}) gives the openai client the first content, then an error, and never fails over`, async () => {
      const { beta, router, client } = await setup()
      const requestId = newRequestId("cut")
      const stream = await client.chat.completions.create(
        { model: "m1", messages: [{ role: "user", content: "count" }], stream: true },
        { headers: { "x-request-id": requestId } }
      )
      let text = ""
      const failure = await (async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? ""
      })().then(() => null, (e: unknown) => e)
      expect(text).toBe("one two ")
      expect(failure).toBeInstanceOf(OpenAI.APIError)
      expect((failure as Error).message).toContain("alpha")
      expect(requestsTo(beta)).toHaveLength(0)

      const record = await recordOf(router, requestId)
      expect(record).toMatchObject({ provider: "alpha", outcome: "stream_interrupted", stream: 1 })
      expect(record.error).not.toBeNull()
    })

    it(`(${label}) ends the SSE body with an error event and no [DONE]`, async () => {
      const { router } = await setup()
      const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "count" }], stream: true })
      expect(res.status).toBe(200)
      expect(res.headers.get("x-router-provider")).toBe("alpha")
      const text = await res.text()
      expect(text).not.toContain("[DONE]")
      const events = text.split(/\n\n/).map((e) => e.trim()).filter((e) => e !== "")
      // Whole events only: every one is a `data:` line with JSON.
      for (const e of events) expect(e).toMatch(/^data: \{.*\}$/s)
      const payloads = events.map((e) => JSON.parse(e.slice("data: ".length)) as Record<string, unknown>)
      const last = payloads[payloads.length - 1] as { error?: { message: string; type: string; param: unknown; code: string } }
      expect(last.error).toBeDefined()
      expect(Object.keys(last.error ?? {}).sort()).toEqual(["code", "message", "param", "type"])
      expect(last.error).toMatchObject({ code: "stream_interrupted", type: "upstream_error" })
      const content = payloads
        .slice(0, -1)
        .map((p) => (p as { choices: Array<{ delta: { content?: string } }> }).choices[0]?.delta.content ?? "")
        .join("")
      expect(content).toBe("one two ")
    })
  }

  it("ends a stream that goes silent mid-answer at the total timeout, with an error event", async () => {
    const { beta, router } = await pair({ mode: "stall", afterChunks: 3, content: "one two three four five" }, { mode: "ok" }, 0.6)
    const requestId = newRequestId("stall3")
    const res = await postJson(
      router,
      "/v1/chat/completions",
      { model: "m1", messages: [{ role: "user", content: "count" }], stream: true },
      { "x-request-id": requestId }
    )
    expect(res.status).toBe(200)
    expect(res.headers.get("x-router-provider")).toBe("alpha")
    const text = await res.text()
    expect(text).not.toContain("[DONE]")
    const events = text.split(/\n\n/).map((e) => e.trim()).filter((e) => e !== "")
    const payloads = events.map((e) => JSON.parse(e.slice("data: ".length)) as Record<string, unknown>)
    const last = payloads[payloads.length - 1] as { error?: { code: string; message: string } }
    expect(last.error?.code).toBe("stream_interrupted")
    expect(last.error?.message).toContain("600 ms")
    expect(payloads.slice(0, -1).map((p) => (p as { choices: Array<{ delta: { content?: string } }> }).choices[0]?.delta.content ?? "").join("")).toBe("one two ")
    expect(requestsTo(beta)).toHaveLength(0)
    const record = await recordOf(router, requestId)
    expect(record).toMatchObject({ provider: "alpha", outcome: "stream_interrupted" })
    expect(record.error).toContain("600 ms")
  })
})

// Hedging forks a second attempt inside the request's fiber and interrupts the loser: through the
// real server, where request fibers run on the fast lane's inline scheduler.
describe("hedging through the server", () => {
  const hedgedPair = async () => {
    const alpha = await h.fake({ name: "alpha", behaviour: { mode: "ok", firstByteMs: 3_000 } })
    const beta = await h.fake({ name: "beta" })
    const router = await h.router({
      config: {
        providers: {
          alpha: { endpoint: alpha.url, models: ["m1"], priority: 1, hedge_after_ms: 100 },
          beta: { endpoint: beta.url, models: ["m1"], priority: 2 }
        }
      }
    })
    return { alpha, beta, router, client: clientOf(router) }
  }

  it("a slow first provider is raced by the next one, which serves; the slow call is aborted", async () => {
    const { alpha, beta, router, client } = await hedgedPair()
    const requestId = newRequestId("hedge")
    const { data, response } = await ask(client, requestId)
    expect(data.choices[0]?.message.content).toBe("Hello from beta!")
    expect(response.headers.get("x-router-provider")).toBe("beta")
    // Both were called: the loser is listed, before the answer.
    expect(response.headers.get("x-router-attempts")).toBe("alpha:hedge_lost,beta:ok")
    expect(requestsTo(beta)).toHaveLength(1)
    const abandoned = await alpha.waitForAbort()
    expect(abandoned.aborted).toBe(true)
    const record = await recordOf(router, requestId)
    expect(record).toMatchObject({ provider: "beta", status: 200, outcome: "ok" })
    expect(attemptsOf(record).map((a) => `${a.provider}:${a.outcome}`)).toEqual(["alpha:hedge_lost", "beta:ok"])
  })

  it("streams too: the hedge's events reach the client whole", async () => {
    const { alpha, client } = await hedgedPair()
    const stream = await client.chat.completions.create({ model: "m1", messages: [{ role: "user", content: "hello" }], stream: true })
    expect(await streamedText(stream)).toBe("Hello from beta!")
    expect((await alpha.waitForAbort()).aborted).toBe(true)
  })
})

describe("a provider that closes kept-alive connections", () => {
  it("a request that meets a connection the server has just closed is answered, not failed: the only provider is not blamed", async () => {
    // Like uvicorn (vLLM) closing an idle connection as the next request arrives on it: here any
    // request on a connection that has served one before finds it closed, deterministically.
    const perSocket = new WeakMap<object, number>()
    let lost = 0
    let answered = 0
    const upstream = await loopbackServer((req, res, raw) => {
      const n = (perSocket.get(req.socket) ?? 0) + 1
      perSocket.set(req.socket, n)
      // Health checks (GET /models) get a 404, which they count as healthy.
      if (req.method !== "POST") return void res.writeHead(404).end()
      if (n > 1) {
        lost++
        return void req.socket.destroy()
      }
      const body = JSON.parse(raw) as { model: string }
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify({
        id: "c1",
        object: "chat.completion",
        created: 1,
        model: body.model,
        choices: [{ index: 0, message: { role: "assistant", content: `answer ${++answered}` }, finish_reason: "stop" }]
      }))
    })
    extraClosers.push(upstream.close)
    const router = await h.router({ config: { providers: { only: { endpoint: upstream.url, models: ["m1"] } } } })
    const client = clientOf(router)
    for (let i = 1; i <= 3; i++) {
      const { data, response } = await client.chat.completions.create({ model: "m1", messages: [{ role: "user", content: "hi" }] }).withResponse()
      expect(data.choices[0]?.message.content).toBe(`answer ${i}`)
      expect(response.headers.get("x-router-attempts")).toBe("only:ok")
    }
    // The second and third requests each went out on a connection that had served before.
    expect(lost).toBe(2)
  })
})
