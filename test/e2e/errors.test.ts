/**
 * Bad input is answered with the right 4xx in OpenAI's error shape: never a 500, never a hang,
 * and never a call upstream.
 */
import OpenAI from "openai"
import { type IncomingHttpHeaders, METHODS, request as httpRequest } from "node:http"
import { connect } from "node:net"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import type { FakeServer } from "../../src/testing/FakeServer.js"
import type { RouterUnderTest } from "../kit/TestRouter.js"
import { clientOf, expectOpenAiError, harness, postJson } from "./helpers.js"

/** The answer to an upload sent chunked (no content-length) that the client never finishes. */
const unfinishedUpload = (url: string, method: string, payload: Buffer, headers: Record<string, string> = {}) =>
  new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const req = httpRequest(url, { method, headers: { "content-type": "application/json", ...headers } }, (res) => {
      let text = ""
      res.setEncoding("utf8")
      res.on("data", (c: string) => (text += c))
      res.on("end", () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text })
        req.destroy()
      })
      res.on("error", reject)
    })
    req.on("error", reject)
    // Still sending when the router decides: a real over-limit upload is far larger than one read.
    for (let i = 0; i < payload.length; i += 256) req.write(payload.subarray(i, i + 256))
  })

/** Writes `data` on a fresh connection and reads until the router closes it. */
const rawExchange = (port: number, data: string) =>
  new Promise<string>((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(data))
    let out = ""
    socket.setEncoding("utf8")
    socket.on("data", (d: string) => (out += d))
    socket.on("close", () => resolve(out))
    socket.on("error", reject)
  })

/** The status line's code, the lower-cased head and the body of a raw answer. */
const rawAnswer = (answer: string) => {
  const [head = "", body = ""] = answer.split("\r\n\r\n")
  return { status: Number(head.split(" ")[1]), head: head.toLowerCase(), body }
}

/** A header's value in a lower-cased raw head. */
const headerOf = (head: string, name: string) => head.split("\r\n").find((l) => l.startsWith(`${name}:`))?.slice(name.length + 1).trim()

const adminKey = "admin-key-for-bad-requests"

describe("bad requests", () => {
  const h = harness()
  let fake: FakeServer
  let router: RouterUnderTest
  let seen = 0

  beforeAll(async () => {
    fake = await h.fake({ name: "alpha" })
    router = await h.router({
      config: { server: { max_body_bytes: 1000 }, providers: { alpha: { endpoint: fake.url, models: ["m1", "e1"] } } },
      env: { ROUTER_ADMIN_KEY: adminKey }
    })
  })
  // None of these requests may reach the upstream.
  afterEach(() => {
    expect(fake.requests.filter((r) => r.path !== "/models").length).toBe(seen)
  })
  afterAll(() => h.closeAll())

  describe("invalid bodies", () => {
    it("answers 400 invalid_json to a body that is not JSON", async () => {
      for (const path of ["/v1/chat/completions", "/v1/embeddings"]) {
        const res = await postJson(router, path, '{"model": "m1", "messages": [', { "x-request-id": "bad-json" })
        const error = await expectOpenAiError(res, 400)
        expect(error.code).toBe("invalid_json")
        expect(error.type).toBe("invalid_request_error")
        expect(error.param).toBeNull()
        expect(res.headers.get("x-request-id")).toBe("bad-json")
      }
    })

    it("answers 400 invalid_json to JSON that is not an object, and to an empty body", async () => {
      for (const body of ["[1, 2]", '"text"', "null", "42", ""]) {
        const error = await expectOpenAiError(await postJson(router, "/v1/chat/completions", body), 400)
        expect(error.code, JSON.stringify(body)).toBe("invalid_json")
      }
    })

    it("answers 400 with param 'messages' when messages is not an array", async () => {
      for (const messages of ["hello", { role: "user", content: "hi" }, 3, null]) {
        const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages })
        const error = await expectOpenAiError(res, 400)
        expect(error.param, JSON.stringify(messages)).toBe("messages")
        expect(error.type).toBe("invalid_request_error")
      }
    })

    it("names the parameter for a missing field, an empty message list and a bad message", async () => {
      const missing = await expectOpenAiError(await postJson(router, "/v1/chat/completions", { messages: [{ role: "user", content: "x" }] }), 400)
      expect(missing).toMatchObject({ param: "model", code: "missing_required_parameter" })
      const missingMessages = await expectOpenAiError(await postJson(router, "/v1/chat/completions", { model: "m1" }), 400)
      expect(missingMessages.param).toBe("messages")
      const empty = await expectOpenAiError(await postJson(router, "/v1/chat/completions", { model: "m1", messages: [] }), 400)
      expect(empty.param).toBe("messages")
      const noRole = await expectOpenAiError(await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ content: "x" }] }), 400)
      expect(noRole.param).toBe("messages[0].role")
      const badInput = await expectOpenAiError(await postJson(router, "/v1/embeddings", { model: "e1", input: { text: "x" } }), 400)
      expect(badInput.param).toBe("input")
    })

    it("surfaces as BadRequestError in the openai client", async () => {
      const client = clientOf(router)
      const error = await client.chat.completions
        .create({ model: "m1", messages: "not an array" } as unknown as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming)
        .catch((e: unknown) => e)
      expect(error).toBeInstanceOf(OpenAI.BadRequestError)
      expect((error as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("messages")
    })
  })

  describe("unknown models", () => {
    it("answers 404 model_not_found, for chat, streams and embeddings", async () => {
      for (const [path, body] of [
        ["/v1/chat/completions", { model: "no-such-model", messages: [{ role: "user", content: "x" }] }],
        ["/v1/chat/completions", { model: "no-such-model", messages: [{ role: "user", content: "x" }], stream: true }],
        ["/v1/chat/completions", { model: "alpha+not-served", messages: [{ role: "user", content: "x" }] }],
        ["/v1/chat/completions", { model: "nobody+m1", messages: [{ role: "user", content: "x" }] }],
        ["/v1/embeddings", { model: "no-such-model", input: "x" }]
      ] as const) {
        const error = await expectOpenAiError(await postJson(router, path, body), 404)
        expect(error.code).toBe("model_not_found")
        expect(error.param).toBe("model")
        expect(error.message).toContain(body.model)
      }
    })

    it("quotes a long model id by its start, not sending it all back (a body may hold megabytes of it)", async () => {
      // This router's body limit is 1000 bytes; the quote stops at 256 characters whatever the length.
      const model = `huge-${"x".repeat(800)}`
      const res = await postJson(router, "/v1/chat/completions", { model, messages: [{ role: "user", content: "x" }] })
      const error = await expectOpenAiError(res, 404)
      expect(error.code).toBe("model_not_found")
      expect(error.message).toBe(`The model '${model.slice(0, 256)}… (805 characters)' does not exist on this router (see GET /v1/models)`)
    })

    it("surfaces as NotFoundError in the openai client", async () => {
      const error = await clientOf(router)
        .chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] })
        .catch((e: unknown) => e)
      expect(error).toBeInstanceOf(OpenAI.NotFoundError)
      expect((error as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("model_not_found")
    })
  })

  describe("body size", () => {
    const big = { model: "m1", messages: [{ role: "user", content: "x".repeat(2000) }] }

    it("answers 413 to a body over max_body_bytes, declared by content-length", async () => {
      const error = await expectOpenAiError(await postJson(router, "/v1/chat/completions", big), 413)
      expect(error.code).toBe("request_too_large")
      expect(error.message).toContain("1000")
      const emb = await expectOpenAiError(await postJson(router, "/v1/embeddings", { model: "e1", input: "y".repeat(2000) }), 413)
      expect(emb.code).toBe("request_too_large")
    })

    it("answers 413 to a chunked body that grows over the limit", async () => {
      const payload = Buffer.from(JSON.stringify(big))
      const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpRequest(`${router.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" } }, (res) => {
          let text = ""
          res.setEncoding("utf8")
          res.on("data", (c: string) => (text += c))
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }))
          res.on("error", reject)
        })
        req.on("error", reject)
        // No content-length: Node sends the body chunked, in pieces.
        for (let i = 0; i < payload.length; i += 256) req.write(payload.subarray(i, i + 256))
        req.end()
      })
      expect(status).toBe(413)
      expect(JSON.parse(body)).toMatchObject({ error: { code: "request_too_large", type: "invalid_request_error" } })
    })

    it("answers 413 to a chunked body over the limit on the admin routes too, while it is still arriving", async () => {
      const payload = Buffer.from(JSON.stringify({ ...big, provider_order: ["alpha"] }))
      for (const [method, path] of [
        ["POST", "/admin/explain"],
        ["PUT", "/admin/routing-config"],
        ["PATCH", "/admin/routing-config"],
        ["POST", "/admin/override"],
        ["POST", "/v1/chat/completions"]
      ] as const) {
        const answer = await unfinishedUpload(`${router.url}${path}`, method, payload, {
          authorization: `Bearer ${adminKey}`,
          "x-router-session-id": "s1",
          "x-request-id": "chunked-413"
        })
        expect(answer.status, `${method} ${path}: ${answer.body}`).toBe(413)
        expect(JSON.parse(answer.body)).toMatchObject({ error: { code: "request_too_large", type: "invalid_request_error", param: null } })
        expect(answer.headers["x-request-id"]).toBe("chunked-413")
      }
      // The routing config was not touched, and the router still serves.
      const config = await fetch(`${router.url}/admin/routing-config`, { headers: { authorization: `Bearer ${adminKey}` } })
      expect(((await config.json()) as { provider_order: unknown }).provider_order).toEqual([])
    })

    it("still serves a body under the limit", async () => {
      const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "small" }] })
      expect(res.status).toBe(200)
      seen++
    })
  })

  describe("methods and paths", () => {
    it("answers 405 to the wrong method on the POST endpoints", async () => {
      for (const path of ["/v1/chat/completions", "/v1/embeddings"]) {
        for (const method of ["GET", "PUT", "DELETE"]) {
          const res = await fetch(`${router.url}${path}`, { method })
          const error = await expectOpenAiError(res, 405)
          expect(error.code, `${method} ${path}`).toBe("method_not_allowed")
          expect(res.headers.get("allow")).toBe("POST")
        }
      }
    })

    it("answers HEAD wherever GET is answered, with GET's status and headers and no body", async () => {
      const get = await fetch(`${router.url}/v1/models`)
      const head = await fetch(`${router.url}/v1/models`, { method: "HEAD" })
      expect(head.status).toBe(200)
      expect(head.headers.get("content-type")).toBe(get.headers.get("content-type"))
      expect(head.headers.get("content-length")).toBe(get.headers.get("content-length"))
      expect(await head.text()).toBe("")
      const health = await fetch(`${router.url}/health`, { method: "HEAD" })
      expect(health.status).toBe(200)
      const model = await fetch(`${router.url}/v1/models/m1`, { method: "HEAD" })
      expect(model.status).toBe(200)
      // Where GET is not answered, neither is HEAD.
      expect((await fetch(`${router.url}/v1/models/no-such-model`, { method: "HEAD" })).status).toBe(404)
      expect((await fetch(`${router.url}/v1/nope`, { method: "HEAD" })).status).toBe(404)
      const post = await fetch(`${router.url}/v1/chat/completions`, { method: "HEAD" })
      expect(post.status).toBe(405)
      expect(post.headers.get("allow")).toBe("POST")
      const options = await fetch(`${router.url}/v1/models`, { method: "OPTIONS" })
      expect(options.status).toBe(405)
      expect(options.headers.get("allow")).toBe("GET, HEAD")
    })

    it("echoes x-request-id on /health, GET and HEAD, or makes one", async () => {
      for (const method of ["GET", "HEAD"]) {
        for (const path of ["/health", "/health/"]) {
          const res = await fetch(`${router.url}${path}`, { method, headers: { "x-request-id": "health-1" } })
          expect(res.status, `${method} ${path}`).toBe(200)
          expect(res.headers.get("x-request-id"), `${method} ${path}`).toBe("health-1")
        }
        const res = await fetch(`${router.url}/health`, { method })
        expect(res.headers.get("x-request-id") ?? "").toMatch(/^[0-9a-f-]{36}$/)
      }
    })

    it("serves POST on every spelling of a hot path the other routes accept, where GET says 405", async () => {
      const chat = JSON.stringify({ model: "m1", messages: [{ role: "user", content: "variant" }] })
      for (const path of [
        "/V1/chat/completions",
        "/v1/Chat/Completions",
        "/v1//chat/completions",
        "//v1/chat///completions",
        "/v1/chat/completions//",
        "/v1/chat/completions//?x=1",
        "/v1/chat/completions;x=1",
        "/v1/chat/complet%69ons"
      ]) {
        const get = await fetch(`${router.url}${path}`)
        expect((await expectOpenAiError(get, 405)).code, `GET ${path}`).toBe("method_not_allowed")
        const post = await postJson(router, path, chat)
        expect(post.status, `POST ${path}: ${await post.clone().text()}`).toBe(200)
        seen++
      }
      const emb = await postJson(router, "/V1//Embeddings/", { model: "e1", input: "x" })
      expect(emb.status).toBe(200)
      seen++
      // A spelling no route takes is 404 for both methods.
      for (const path of ["/v1/chat%2Fcompletions", "/v1/chat/completions/x", "/v2/chat/completions"]) {
        expect((await fetch(`${router.url}${path}`)).status, `GET ${path}`).toBe(404)
        expect((await postJson(router, path, chat)).status, `POST ${path}`).toBe(404)
      }
    })

    it("serves an absolute-form request target on the hot paths too", async () => {
      const body = JSON.stringify({ model: "m1", messages: [{ role: "user", content: "absolute" }] })
      const answer = rawAnswer(
        await rawExchange(
          router.port,
          `POST http://127.0.0.1:${router.port}/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
        )
      )
      expect(answer.status, answer.body).toBe(200)
      expect(headerOf(answer.head, "x-router-provider")).toBe("alpha")
      seen++
      const get = rawAnswer(await rawExchange(router.port, `GET http://127.0.0.1:${router.port}/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`))
      expect(get.status).toBe(200)
    })

    it("answers 405 with Allow to any other method on a known path", async () => {
      for (const [path, allow] of [["/v1/chat/completions", "POST"], ["/v1/embeddings", "POST"], ["/v1/models", "GET, HEAD"], ["/health", "GET, HEAD"]] as const) {
        // QUERY: a method Node parses (from 20.x releases on) but find-my-way's own list lacks.
        for (const method of ["TRACE", "PROPFIND", "MKCOL", "SEARCH", ...(METHODS.includes("QUERY") ? ["QUERY"] : [])]) {
          const answer = rawAnswer(await rawExchange(router.port, `${method} ${path} HTTP/1.1\r\nHost: x\r\nX-Request-Id: odd-method\r\nConnection: close\r\n\r\n`))
          expect(answer.status, `${method} ${path}`).toBe(405)
          expect(headerOf(answer.head, "allow"), `${method} ${path}`).toBe(allow.toLowerCase())
          expect(headerOf(answer.head, "x-request-id")).toBe("odd-method")
          expect(JSON.parse(answer.body)).toMatchObject({ error: { code: "method_not_allowed" } })
        }
      }
      const admin = await fetch(`${router.url}/admin/explain`, { method: "PROPFIND", headers: { authorization: `Bearer ${adminKey}` } })
      expect(admin.status).toBe(405)
      expect(admin.headers.get("allow")).toBe("POST")
      // On a path no route takes, any method is the usual 404.
      for (const method of ["TRACE", ...(METHODS.includes("QUERY") ? ["QUERY"] : [])]) {
        const answer = rawAnswer(await rawExchange(router.port, `${method} /nope HTTP/1.1\r\nHost: x\r\nX-Request-Id: odd-method\r\nConnection: close\r\n\r\n`))
        expect(answer.status, method).toBe(404)
        expect(headerOf(answer.head, "x-request-id")).toBe("odd-method")
        expect(JSON.parse(answer.body)).toMatchObject({ error: { code: "unknown_url" } })
      }
    })

    it("answers CONNECT (a proxy's method) with 405 in the OpenAI error shape, not a bare close", async () => {
      for (const target of ["127.0.0.1:1", "api.openai.com:443"]) {
        const answer = rawAnswer(await rawExchange(router.port, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nX-Request-Id: connect-1\r\n\r\n`))
        expect(answer.status, target).toBe(405)
        expect(headerOf(answer.head, "content-type")).toBe("application/json")
        expect(headerOf(answer.head, "x-request-id")).toBe("connect-1")
        expect(headerOf(answer.head, "connection")).toBe("close")
        expect(JSON.parse(answer.body)).toEqual({
          error: { message: expect.stringContaining("CONNECT"), type: "invalid_request_error", param: null, code: "method_not_allowed" }
        })
      }
      expect((await fetch(`${router.url}/health`)).status).toBe(200)
    })

    it("answers an Expect it cannot meet with 417 in the OpenAI error shape", async () => {
      const body = JSON.stringify({ model: "m1", messages: [{ role: "user", content: "x" }] })
      for (const path of ["/v1/chat/completions", "/v1/models"]) {
        const answer = rawAnswer(
          await rawExchange(
            router.port,
            `POST ${path} HTTP/1.1\r\nHost: x\r\nExpect: foo\r\nX-Request-Id: expect-1\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
          )
        )
        expect(answer.status, path).toBe(417)
        expect(headerOf(answer.head, "content-type")).toBe("application/json")
        expect(headerOf(answer.head, "x-request-id")).toBe("expect-1")
        expect(JSON.parse(answer.body)).toEqual({
          error: { message: expect.stringContaining("foo"), type: "invalid_request_error", param: "expect", code: "expectation_failed" }
        })
      }
    })

    it("answers 400 invalid_url to a path whose percent-encoding does not decode", async () => {
      for (const path of ["/v1/models/%ZZ", "/v1/models/%E0%A4%A", "/%ZZ", "/admin/status%E0"]) {
        const res = await fetch(`${router.url}${path}`, { headers: { "x-request-id": "bad-url" } })
        const error = await expectOpenAiError(res, 400)
        expect(error.code, path).toBe("invalid_url")
        expect(res.headers.get("x-request-id")).toBe("bad-url")
      }
    })

    it("answers 404 JSON to unknown paths, with any method", async () => {
      for (const [method, path] of [
        ["GET", "/nope"],
        ["POST", "/nope"],
        ["GET", "/v1/nope"],
        ["POST", "/v1/completions"],
        ["POST", "/v1/chat/completions/extra"],
        ["GET", "/v1"],
        ["GET", "/"]
      ] as const) {
        const res = await fetch(`${router.url}${path}`, { method })
        const error = await expectOpenAiError(res, 404)
        expect(error.code, `${method} ${path}`).toBe("unknown_url")
        expect(error.message).toContain(path)
      }
      // A known path with a method it does not serve is a client error too, never a 500.
      const del = await fetch(`${router.url}/v1/models`, { method: "DELETE" })
      await expectOpenAiError(del, del.status)
      expect(del.status).toBeGreaterThanOrEqual(400)
      expect(del.status).toBeLessThan(500)
    })
  })

  describe("bytes that are not an HTTP request", () => {
    const raw = (data: string) => rawExchange(router.port, data)
    const parse = (answer: string) => {
      const { status, head, body } = rawAnswer(answer)
      return { status, head, error: (JSON.parse(body) as { error: Record<string, unknown> }).error }
    }
    const cases: ReadonlyArray<readonly [string, number, string]> = [
      ["HELLO THERE\r\n\r\n", 400, "invalid_http"],
      [`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`, 431, "headers_too_large"],
      ["POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "invalid_http"],
      ["POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", 400, "invalid_http"]
    ]

    it("answers each in the OpenAI error shape and closes the connection", async () => {
      for (const [data, status, code] of cases) {
        const answer = parse(await raw(data))
        expect(answer.status, code).toBe(status)
        expect(answer.head).toContain("content-type: application/json")
        expect(answer.head).toContain("connection: close")
        expect(answer.error).toMatchObject({ type: "invalid_request_error", param: null, code })
        expect(typeof answer.error.message).toBe("string")
      }
      // The router still serves.
      expect((await fetch(`${router.url}/health`)).status).toBe(200)
    })

    it("gives each answer a fresh x-request-id (there is no request to take one from)", async () => {
      const ids = new Set<string>()
      for (const [data, status] of [...cases, ...cases]) {
        const answer = rawAnswer(await raw(data))
        expect(answer.status).toBe(status)
        const id = headerOf(answer.head, "x-request-id")
        expect(id, answer.head).toMatch(/^[0-9a-f-]{36}$/)
        ids.add(id!)
      }
      expect(ids.size).toBe(cases.length * 2)
    })
  })
})

describe("bodies nested deeper than a recursive walk can go", () => {
  // `JSON.parse` reads any depth, but validating, describing a validation error and `JSON.stringify`
  // recurse: such a body used to be a 500 and, for embeddings, an uncaught exception that stopped
  // the whole daemon.
  const h = harness()
  const adminKey = "admin-key-for-deep-bodies"
  let fake: FakeServer
  let router: RouterUnderTest
  const deep = (depth: number) => "[".repeat(depth) + "]".repeat(depth)

  beforeAll(async () => {
    fake = await h.fake({ name: "alpha" })
    router = await h.router({
      // `m2`'s known context window makes the policy estimate the prompt, `tools` included.
      config: { providers: { alpha: { endpoint: fake.url, models: ["m1", "e1", "m2"], model_overrides: { m2: { context_length: 8192 } } } } },
      env: { ROUTER_ADMIN_KEY: adminKey }
    })
  })
  afterAll(() => h.closeAll())

  it("answers 400 invalid_json wherever the router must walk the nesting, and stays up", async () => {
    const cases: Array<[string, string]> = [
      ["/v1/embeddings", `{"model":"e1","input":${deep(200_000)}}`],
      ["/v1/chat/completions", `{"model":"m1","messages":${deep(200_000)}}`],
      ["/v1/chat/completions", `{"model":${deep(200_000)},"messages":[]}`],
      ["/v1/chat/completions", `{"model":"m1","models":${deep(200_000)},"messages":[{"role":"user","content":"hi"}]}`],
      ["/v1/chat/completions", `{"model":"m1","provider":{"order":${deep(200_000)}},"messages":[{"role":"user","content":"hi"}]}`]
    ]
    for (const [path, body] of cases) {
      const error = await expectOpenAiError(await postJson(router, path, body), 400)
      expect(error.code, body.slice(0, 60)).toBe("invalid_json")
      expect(error.message).toContain("nested too deeply")
    }
    expect(fake.requests.filter((r) => r.path !== "/models")).toHaveLength(0)
    // Still serving, and a deep field it only forwards (never walks) goes through untouched.
    const res = await postJson(router, "/v1/chat/completions", `{"model":"m1","messages":[{"role":"user","content":"hi"}],"metadata":${deep(100)}}`)
    expect(res.status).toBe(200)
    expect(JSON.stringify((fake.requests.at(-1)?.body as { metadata: unknown }).metadata)).toBe(deep(100))
    // A pinned id makes the router rewrite the body (the model name): it edits the bytes, so a deep
    // field still goes through untouched.
    const pinned = await postJson(router, "/v1/chat/completions", `{"model":"alpha+m1","messages":[{"role":"user","content":"hi"}],"metadata":${deep(200_000)}}`)
    expect(pinned.status).toBe(200)
    const sent = fake.requests.at(-1)?.body as { model: string; metadata: unknown }
    expect(sent.model).toBe("m1")
    let depth = 0
    for (let v = sent.metadata; Array.isArray(v); v = v[0]) depth++
    expect(depth).toBe(200_000)
  })

  it("answers 400 invalid_json to deep tools wherever the prompt estimate is needed", async () => {
    const before = fake.requests.length
    const body = (model: string, stream: boolean) =>
      `{"model":"${model}","stream":${stream},"messages":[{"role":"user","content":"hi"}],"tools":${deep(100_000)}}`
    for (const stream of [false, true]) {
      const res = await postJson(router, "/v1/chat/completions", body("m2", stream), { "x-request-id": "deep-tools" })
      expect((await expectOpenAiError(res, 400)).code).toBe("invalid_json")
      expect(res.headers.get("x-request-id")).toBe("deep-tools")
    }
    // Explain always shows the estimate, even for a model whose window is unknown.
    const explain = await fetch(`${router.url}/admin/explain`, {
      method: "POST",
      headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json", "x-request-id": "deep-explain" },
      body: body("m1", false)
    })
    expect((await expectOpenAiError(explain, 400)).code).toBe("invalid_json")
    expect(explain.headers.get("x-request-id")).toBe("deep-explain")
    expect(fake.requests.slice(before).filter((r) => r.path !== "/models")).toHaveLength(0)
  })

  it("answers 400 on the admin API too", async () => {
    const explain = await fetch(`${router.url}/admin/explain`, {
      method: "POST",
      headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" },
      body: `{"model":"m1","input":${deep(200_000)}}`
    })
    expect((await expectOpenAiError(explain, 400)).code).toBe("invalid_json")
    // The strategy's error message quotes the value it got, so describing this one recurses too.
    const routing = await fetch(`${router.url}/admin/routing-config`, {
      method: "PATCH",
      headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" },
      body: `{"strategy":${deep(200_000)}}`
    })
    expect((await expectOpenAiError(routing, 400)).code).toBe("invalid_json")
  })
})
