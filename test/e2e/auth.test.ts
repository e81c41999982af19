/**
 * Keys: the client key on `/v1/*` (Bearer or X-API-Key), `/health` open, `/admin/*` closed while no
 * admin key is set (the client key never opens it), and the provider's own key upstream.
 */
import OpenAI from "openai"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { FakeServer } from "../../src/testing/FakeServer.js"
import type { RouterUnderTest } from "../kit/TestRouter.js"
import { existsSync, readFileSync } from "node:fs"
import { clientOf, expectOpenAiError, harness, lastRequest, loopbackServer, newRequestId, postJson, recordOf, requestsTo } from "./helpers.js"

const clientKey = "client-secret-123"
const providerKey = "provider-secret-456"
const chatBody = { model: "m1", messages: [{ role: "user", content: "hi" }] }

describe("authentication", () => {
  const h = harness()
  let fake: FakeServer
  let router: RouterUnderTest

  beforeAll(async () => {
    fake = await h.fake({ name: "alpha" })
    router = await h.router({
      config: { providers: { alpha: { endpoint: fake.url, api_key: providerKey, models: ["m1", "e1"] } } },
      env: { ROUTER_CLIENT_KEY: clientKey }
    })
  })
  afterAll(() => h.closeAll())

  describe("without the client key", () => {
    // Health checks (GET /models) reach the upstream on their own schedule: only the requests a
    // client could have caused (POSTs) count here.
    it("refuses chat completions with 401 and never calls the upstream", async () => {
      const posts = () => fake.requests.filter((r) => r.method === "POST").length
      const before = posts()
      const res = await postJson(router, "/v1/chat/completions", chatBody, { "x-request-id": "auth-1" })
      const error = await expectOpenAiError(res, 401)
      expect(error.code).toBe("invalid_api_key")
      expect(error.type).toBe("invalid_request_error")
      expect(res.headers.get("x-request-id")).toBe("auth-1")
      // A streaming request and embeddings too.
      await expectOpenAiError(await postJson(router, "/v1/chat/completions", { ...chatBody, stream: true }), 401)
      await expectOpenAiError(await postJson(router, "/v1/embeddings", { model: "e1", input: "x" }), 401)
      expect(posts()).toBe(before)
    })

    it("refuses the model list and a model with 401", async () => {
      const error = await expectOpenAiError(await fetch(`${router.url}/v1/models`), 401)
      expect(error.code).toBe("invalid_api_key")
      await expectOpenAiError(await fetch(`${router.url}/v1/models/m1`), 401)
      // HEAD is answered as GET is, so it is refused as GET is.
      expect((await fetch(`${router.url}/v1/models`, { method: "HEAD" })).status).toBe(401)
    })

    it("refuses a wrong key, as Bearer and as X-API-Key", async () => {
      const bearer = await postJson(router, "/v1/chat/completions", chatBody, { authorization: "Bearer wrong-key" })
      expect((await expectOpenAiError(bearer, 401)).message).toMatch(/incorrect/i)
      const apiKey = await fetch(`${router.url}/v1/models`, { headers: { "x-api-key": "wrong-key" } })
      expect((await expectOpenAiError(apiKey, 401)).code).toBe("invalid_api_key")
      // A key that is a prefix of the right one is still wrong.
      const prefix = await fetch(`${router.url}/v1/models`, { headers: { authorization: `Bearer ${clientKey.slice(0, -1)}` } })
      await expectOpenAiError(prefix, 401)
    })

    it("surfaces as AuthenticationError in the openai client", async () => {
      const client = clientOf(router, "wrong-key")
      const chat = await client.chat.completions.create(chatBody as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming).catch((e: unknown) => e)
      expect(chat).toBeInstanceOf(OpenAI.AuthenticationError)
      const list = await client.models.list().catch((e: unknown) => e)
      expect(list).toBeInstanceOf(OpenAI.AuthenticationError)
    })

    it("still answers /health", async () => {
      const res = await fetch(`${router.url}/health`)
      expect(res.status).toBe(200)
      expect(await res.json()).toEqual({ status: "ok" })
    })
  })

  describe("with the client key", () => {
    it("accepts it as Authorization: Bearer (the openai client)", async () => {
      const client = clientOf(router, clientKey)
      const { data, response } = await client.chat.completions
        .create(chatBody as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming)
        .withResponse()
      expect(response.status).toBe(200)
      expect(data.choices[0]?.message.content).toBe("Hello from alpha!")
      const models = await client.models.list()
      expect(models.data.map((m) => m.id)).toContain("alpha+m1")
      const one = await client.models.retrieve("alpha+m1")
      expect(one.owned_by).toBe("alpha")
      const emb = await client.embeddings.create({ model: "e1", input: "x", encoding_format: "float" })
      expect(emb.data).toHaveLength(1)
    })

    it("accepts it as X-API-Key", async () => {
      const chat = await postJson(router, "/v1/chat/completions", chatBody, { "x-api-key": clientKey })
      expect(chat.status).toBe(200)
      expect(((await chat.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]?.message.content).toBe("Hello from alpha!")
      const models = await fetch(`${router.url}/v1/models`, { headers: { "x-api-key": clientKey } })
      expect(models.status).toBe(200)
      expect(((await models.json()) as { object: string }).object).toBe("list")
    })

    it("sends the provider's key upstream, never the client's", async () => {
      await postJson(router, "/v1/chat/completions", chatBody, { authorization: `Bearer ${clientKey}` })
      const viaBearer = lastRequest(fake)
      expect(viaBearer.headers.authorization).toBe(`Bearer ${providerKey}`)
      await postJson(router, "/v1/chat/completions", chatBody, { "x-api-key": clientKey })
      const viaApiKey = lastRequest(fake)
      expect(viaApiKey.headers.authorization).toBe(`Bearer ${providerKey}`)
      for (const r of [viaBearer, viaApiKey]) {
        expect(JSON.stringify(r.headers)).not.toContain(clientKey)
        expect(r.headers["x-api-key"]).toBeUndefined()
      }
      const emb = await postJson(router, "/v1/embeddings", { model: "e1", input: "x" }, { authorization: `Bearer ${clientKey}` })
      expect(emb.status).toBe(200)
      expect(lastRequest(fake, "/embeddings").headers.authorization).toBe(`Bearer ${providerKey}`)
      // Every request the provider ever saw (health checks of GET /models included) carried its
      // own key, and none the client's.
      for (const r of fake.requests) {
        expect(r.headers.authorization).toBe(`Bearer ${providerKey}`)
        expect(JSON.stringify(r.headers)).not.toContain(clientKey)
      }
    })
  })

  describe("the admin surface while ROUTER_ADMIN_KEY is unset", () => {
    const paths = ["/admin/anything", "/admin/providers", "/admin/a/b/c"]
    it("answers 401 without any key", async () => {
      for (const path of paths) {
        for (const method of ["GET", "POST", "DELETE"]) {
          const res = await fetch(`${router.url}${path}`, { method, ...(method === "POST" ? { body: "{}", headers: { "content-type": "application/json" } } : {}) })
          const error = await expectOpenAiError(res, 401)
          expect(error.message, `${method} ${path}`).toMatch(/admin/i)
        }
      }
      expect((await fetch(`${router.url}/admin/status`, { method: "HEAD" })).status).toBe(401)
    })

    it("answers 401 with the client key, as Bearer and as X-API-Key", async () => {
      for (const path of paths) {
        await expectOpenAiError(await fetch(`${router.url}${path}`, { headers: { authorization: `Bearer ${clientKey}` } }), 401)
        await expectOpenAiError(await fetch(`${router.url}${path}`, { headers: { "x-api-key": clientKey } }), 401)
      }
    })
  })
})

describe("without ROUTER_CLIENT_KEY (loopback only)", () => {
  const h = harness()
  afterAll(() => h.closeAll())

  it("serves /v1 without a key and still keeps /admin closed", async () => {
    const fake = await h.fake({ name: "alpha" })
    const router = await h.router({ config: { providers: { alpha: { endpoint: fake.url, models: ["m1"] } } } })
    expect((await postJson(router, "/v1/chat/completions", chatBody)).status).toBe(200)
    // No provider key configured: nothing is sent as Authorization, whatever the client sent.
    await postJson(router, "/v1/chat/completions", chatBody, { authorization: "Bearer client-sent-this" })
    expect(lastRequest(fake).headers.authorization).toBeUndefined()
    await expectOpenAiError(await fetch(`${router.url}/admin/anything`), 401)
    await expectOpenAiError(await fetch(`${router.url}/admin/anything`, { headers: { authorization: "Bearer anything" } }), 401)
  })
})

describe("a provider's key an upstream quotes back", () => {
  const h = harness()
  afterAll(() => h.closeAll())

  it("is blanked in what the client, the status and the records get, and never written to the database", async () => {
    const keys = { alpha: "sk-LEAK401-abcdefghijkl", beta: "sk-LEAK400-mnopqrstuvwx" }
    // Each answers its chat requests with an error that quotes the key it was sent: alpha a 401
    // (fail over), beta a 400 (the client's answer).
    const echoing = (status: number) =>
      loopbackServer((req, res) => {
        if (req.method !== "POST") return void res.writeHead(404).end()
        const key = String(req.headers.authorization ?? "").replace(/^Bearer /, "")
        res.writeHead(status, { "content-type": "application/json" })
        res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${key}`, type: "invalid_request_error", param: null, code: null } }))
      })
    const [alpha, beta] = await Promise.all([echoing(401), echoing(400)])
    const router = await h.router({
      config: {
        providers: {
          alpha: { endpoint: alpha.url, api_key: keys.alpha, models: ["m1"], priority: 1 },
          beta: { endpoint: beta.url, api_key: keys.beta, models: ["m1"], priority: 2 }
        }
      },
      env: { ROUTER_ADMIN_KEY: "admin-key-1" }
    })
    try {
      const requestId = newRequestId("leak")
      const res = await postJson(router, "/v1/chat/completions", chatBody, { "x-request-id": requestId })
      const text = await res.text()
      expect(res.status).toBe(400)
      expect(JSON.parse(text).error.message).toBe("Incorrect API key provided: <redacted>")
      expect(res.headers.get("x-router-attempts")).toBe("alpha:auth_error,beta:client_error")
      const status = await (await fetch(`${router.url}/admin/status`, { headers: { authorization: "Bearer admin-key-1" } })).text()
      expect(status).toContain("<redacted>")
      const record = JSON.stringify(await recordOf(router, requestId))
      expect(record).toContain("<redacted>")
      const db = ["", "-wal"].map((suffix) => (existsSync(router.dbPath + suffix) ? readFileSync(router.dbPath + suffix).toString("latin1") : "")).join("")
      for (const key of Object.values(keys)) {
        for (const seen of [text, status, record, db]) expect(seen).not.toContain(key)
      }
    } finally {
      await Promise.all([alpha.close(), beta.close()])
    }
  })
})
