/**
 * Resilience through the real daemon: the caller's deadline (`x-router-timeout-ms`), circuit
 * breakers and rate-limit windows as `X-Router-Attempts` and `GET /admin/status` show them, with
 * scripted HTTP upstreams and the official `openai` client (its own retries off).
 */
import OpenAI from "openai"
import { afterAll, describe, expect, it } from "vitest"
import type { ProviderStatus } from "../../src/health/Health.js"
import { chatCompletion } from "../../src/testing/Script.js"
import { clientOf, expectOpenAiError, harness, loopbackServer, newRequestId, postJson, requestsTo } from "./helpers.js"

const h = harness()
const extraClosers: Array<() => Promise<void>> = []
afterAll(async () => {
  await h.closeAll()
  for (const close of extraClosers.splice(0)) await close()
})

const adminKey = "admin-key-for-resilience-tests"

interface ScriptedAnswer {
  readonly status: number
  readonly headers?: Readonly<Record<string, string>>
  readonly body?: unknown
}

interface ScriptedUpstream {
  readonly url: string
  /** Chat requests received so far. */
  readonly chatRequests: () => number
}

/**
 * An upstream that plays `answers` in order on `/chat/completions` (the last one repeats), with
 * whatever headers they name (the shared fake sends no Retry-After); a 200 without a body is a
 * normal chat completion from `name`. It never answers `GET /models`, so the router's active health
 * checks never report on it during a test: only the requests a test makes count.
 */
const startScriptedUpstream = async (name: string, answers: ReadonlyArray<ScriptedAnswer>): Promise<ScriptedUpstream> => {
  let chats = 0
  const server = await loopbackServer((req, res, raw) => {
    if (!(req.url ?? "").endsWith("/chat/completions")) return
    const answer = answers[Math.min(chats++, answers.length - 1)]!
    const request = JSON.parse(raw) as Record<string, unknown>
    const body = answer.body ?? chatCompletion(String(request.model), `Hello from ${name}!`, request)
    res.writeHead(answer.status, { "content-type": "application/json", ...answer.headers }).end(JSON.stringify(body))
  })
  extraClosers.push(server.close)
  return { url: server.url, chatRequests: () => chats }
}

const ask = (client: OpenAI, headers: Record<string, string> = {}) =>
  client.chat.completions
    .create({ model: "m1", messages: [{ role: "user", content: "hello" }] }, { headers: { "x-request-id": newRequestId("res"), ...headers } })
    .withResponse()

const attemptsHeader = (r: { readonly response: Response }) => r.response.headers.get("x-router-attempts")

const adminStatus = async (url: string, headers: Record<string, string> = { authorization: `Bearer ${adminKey}` }) =>
  fetch(`${url}/admin/status`, { headers })

const statusOf = async (url: string): Promise<ReadonlyArray<ProviderStatus>> => {
  const res = await adminStatus(url)
  expect(res.status).toBe(200)
  expect(res.headers.get("content-type") ?? "").toContain("application/json")
  const body = (await res.json()) as { providers: ReadonlyArray<ProviderStatus> }
  return body.providers
}

/** Active health checks (where the daemon runs them) that report nothing while a test runs. */
const quietChecks = { health_check_interval: 3_600, health_check_timeout: 3_600 }

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe("x-router-timeout-ms", () => {
  it("lowers the request's deadline: a hanging upstream gets a 504 request_timeout, OpenAI-shaped", async () => {
    const alpha = await h.fake({ name: "alpha", behaviour: { mode: "hang" } })
    const router = await h.router({ config: { providers: { alpha: { endpoint: alpha.url, models: ["m1"] } } } })
    const client = clientOf(router)

    const started = Date.now()
    const failure = await ask(client, { "x-router-timeout-ms": "300" }).then(
      () => null,
      (e: unknown) => e
    )
    const elapsed = Date.now() - started
    expect(failure).toBeInstanceOf(OpenAI.APIError)
    const apiError = failure as InstanceType<typeof OpenAI.APIError>
    expect(apiError.status).toBe(504)
    expect(apiError.code).toBe("request_timeout")
    expect(apiError.type).toBe("upstream_error")
    // Far below alpha's own first-byte timeout (60 s) and the configured deadline (15 min).
    expect(elapsed).toBeGreaterThanOrEqual(290)
    expect(elapsed).toBeLessThan(5_000)
    expect(requestsTo(alpha)).toHaveLength(1)
    await alpha.waitForAbort()

    const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "hi" }] }, {
      "x-router-timeout-ms": "200"
    })
    expect(res.headers.get("x-router-attempts")).toBe("alpha:timeout")
    const error = await expectOpenAiError(res, 504)
    expect(error).toMatchObject({ type: "upstream_error", code: "request_timeout", param: null })
    expect(error.message).toContain("200 ms")
  })

  it("cannot raise resilience.request_timeout, which bounds every request", async () => {
    const alpha = await h.fake({ name: "alpha", behaviour: { mode: "hang" } })
    const router = await h.router({
      config: { resilience: { request_timeout: 0.3 }, providers: { alpha: { endpoint: alpha.url, models: ["m1"] } } }
    })
    const body = { model: "m1", messages: [{ role: "user", content: "hi" }] }
    // A value past 2^53, or past what a double holds, is still a whole number: capped, not refused.
    for (const headers of [{}, { "x-router-timeout-ms": "10000" }, { "x-router-timeout-ms": "99999999999999999999" }, { "x-router-timeout-ms": "9".repeat(400) }]) {
      const started = Date.now()
      const res = await postJson(router, "/v1/chat/completions", body, headers)
      const error = await expectOpenAiError(res, 504)
      expect(error.code).toBe("request_timeout")
      expect(error.message).toContain("300 ms")
      expect(Date.now() - started).toBeLessThan(5_000)
    }
  })

  it("an invalid value is a 400, and no upstream is called", async () => {
    const alpha = await h.fake({ name: "alpha" })
    const router = await h.router({ config: { providers: { alpha: { endpoint: alpha.url, models: ["m1"] } } } })
    const body = { model: "m1", messages: [{ role: "user", content: "hi" }] }
    for (const value of ["abc", "0", "-5", "1.5", "10ms", "000", "1e3", "+5", "0x10"]) {
      const res = await postJson(router, "/v1/chat/completions", body, { "x-router-timeout-ms": value })
      const error = await expectOpenAiError(res, 400)
      expect(error, value).toMatchObject({ type: "invalid_request_error", param: "x-router-timeout-ms", code: "invalid_value" })
    }
    const embeddings = await postJson(router, "/v1/embeddings", { model: "m1", input: "x" }, { "x-router-timeout-ms": "soon" })
    await expectOpenAiError(embeddings, 400)
    const viaClient = await ask(clientOf(router), { "x-router-timeout-ms": "nope" }).then(() => null, (e: unknown) => e)
    expect(viaClient).toBeInstanceOf(OpenAI.BadRequestError)
    expect(alpha.requests.filter((r) => r.path !== "/models")).toHaveLength(0)

    // A valid value that leaves time enough changes nothing.
    const { data, response } = await ask(clientOf(router), { "x-router-timeout-ms": "10000" })
    expect(data.choices[0]?.message.content).toBe("Hello from alpha!")
    expect(response.headers.get("x-router-attempts")).toBe("alpha:ok")
  })
})

describe("GET /admin/status", () => {
  it("is closed while ROUTER_ADMIN_KEY is unset, and needs that key once it is", async () => {
    const alpha = await h.fake({ name: "alpha" })
    const config = { providers: { alpha: { endpoint: alpha.url, models: ["m1"] } } }
    const closed = await h.router({ config })
    await expectOpenAiError(await adminStatus(closed.url), 401)

    const open = await h.router({ config, env: { ROUTER_ADMIN_KEY: adminKey } })
    await expectOpenAiError(await adminStatus(open.url, {}), 401)
    await expectOpenAiError(await adminStatus(open.url, { authorization: "Bearer wrong-key" }), 401)
    expect((await adminStatus(open.url, { "x-api-key": adminKey })).status).toBe(200)
    expect((await statusOf(open.url)).map((p) => [p.id, p.state])).toEqual([["alpha", "healthy"]])
  })

  it("shows a provider's open circuit after its failures, and another's statistics after its answers", async () => {
    const alpha = await startScriptedUpstream("alpha", [{ status: 500, body: { error: { message: "alpha is down", type: "server_error" } } }])
    const beta = await h.fake({ name: "beta", behaviour: { mode: "ok" } })
    const router = await h.router({
      config: {
        resilience: { circuit_breaker: { failure_threshold: 2, cooldown: 60 } },
        monitoring: quietChecks,
        providers: {
          alpha: { endpoint: alpha.url, models: ["m1"], priority: 1 },
          beta: { endpoint: beta.url, models: ["m1"], priority: 2 }
        }
      },
      env: { ROUTER_ADMIN_KEY: adminKey }
    })
    const client = clientOf(router)

    const before = await statusOf(router.url)
    expect(before.map((p) => [p.id, p.state, p.stats.requests])).toEqual([["alpha", "healthy", 0], ["beta", "healthy", 0]])

    expect(attemptsHeader(await ask(client))).toBe("alpha:server_error,beta:ok")
    expect(attemptsHeader(await ask(client))).toBe("alpha:server_error,beta:ok")
    const skipped = await ask(client)
    expect(attemptsHeader(skipped)).toBe("alpha:circuit_open,beta:ok")
    expect(skipped.data.choices[0]?.message.content).toBe("Hello from beta!")
    expect(alpha.chatRequests()).toBe(2)
    expect(requestsTo(beta)).toHaveLength(3)

    const now = Date.now()
    const [a, b] = await statusOf(router.url)
    expect(a).toMatchObject({
      id: "alpha",
      state: "circuit_open",
      circuit: { state: "open", trips: 1, consecutive_failures: 0 },
      rate_limited: [],
      out_of_credits_until: null,
      stats: { requests: 2, successes: 0, failures: 2, success_rate: 0, ewma_ttfb_ms: null },
      last_check: null
    })
    expect(a!.circuit.reason).toMatch(/^HTTP 500/)
    expect(a!.stats.last_error).toMatch(/^HTTP 500/)
    const openUntil = Date.parse(a!.circuit.open_until ?? "")
    expect(openUntil).toBeGreaterThan(now + 55_000)
    expect(openUntil).toBeLessThanOrEqual(now + 60_000)

    expect(b).toMatchObject({
      id: "beta",
      state: "healthy",
      circuit: { state: "closed", open_until: null, trips: 0, reason: null, consecutive_failures: 0 },
      stats: { requests: 3, successes: 3, failures: 0, success_rate: 1, last_error: null, last_error_at: null }
    })
    expect(typeof b!.stats.ewma_ttfb_ms).toBe("number")
    expect(b!.stats.ewma_ttfb_ms!).toBeGreaterThanOrEqual(0)
    expect(b!.stats.ewma_total_ms!).toBeGreaterThanOrEqual(b!.stats.ewma_ttfb_ms!)
  })
})

describe("when every provider is skipped", () => {
  const body = { model: "m1", messages: [{ role: "user", content: "hi" }] }
  /** A router whose only provider answered 401 once: it is misconfigured from then on. */
  const misconfigured = async () => {
    const alpha = await startScriptedUpstream("alpha", [{ status: 401, body: { error: { message: "Incorrect API key provided", type: "invalid_request_error" } } }])
    const router = await h.router({ config: { monitoring: quietChecks, providers: { alpha: { endpoint: alpha.url, models: ["m1"] } } } })
    const first = await postJson(router, "/v1/chat/completions", body)
    expect(first.headers.get("x-router-attempts")).toBe("alpha:auth_error")
    expect((await expectOpenAiError(first, 502)).code).toBe("all_providers_failed")
    return { alpha, router }
  }

  it("the answer is 503 no_available_provider, saying why, and no upstream is called", async () => {
    const { alpha, router } = await misconfigured()
    const error = await expectOpenAiError(await postJson(router, "/v1/chat/completions", body), 503)
    expect(error).toMatchObject({ type: "upstream_error", code: "no_available_provider" })
    expect(error.message).toContain("alpha+m1: circuit open until")
    expect(alpha.chatRequests()).toBe(1)
  })

  // Skipped candidates are listed in X-Router-Attempts (as on a 200, a 502 or a 504), so the 503
  // says which providers were passed over and why.
  it("the 503 lists the skipped providers in X-Router-Attempts", async () => {
    const { router } = await misconfigured()
    const res = await postJson(router, "/v1/chat/completions", body)
    expect(res.status).toBe(503)
    expect(res.headers.get("x-router-attempts")).toBe("alpha:misconfigured")
  })
})

describe("a 429 with Retry-After", () => {
  it("makes the next requests skip that provider until the window ends, then it is used again", async () => {
    const alpha = await startScriptedUpstream("alpha", [
      { status: 429, headers: { "retry-after": "1" }, body: { error: { message: "Rate limit reached", type: "requests", code: "rate_limit_exceeded" } } },
      { status: 200 }
    ])
    const beta = await h.fake({ name: "beta" })
    const router = await h.router({
      config: {
        monitoring: quietChecks,
        providers: {
          alpha: { endpoint: alpha.url, models: ["m1"], priority: 1 },
          beta: { endpoint: beta.url, models: ["m1"], priority: 2 }
        }
      },
      env: { ROUTER_ADMIN_KEY: adminKey }
    })
    const client = clientOf(router)

    const sentAt = Date.now()
    const first = await ask(client)
    expect(attemptsHeader(first)).toBe("alpha:rate_limited,beta:ok")
    expect(alpha.chatRequests()).toBe(1)

    const second = await ask(client)
    expect(attemptsHeader(second)).toBe("alpha:rate_limited,beta:ok")
    expect(second.data.choices[0]?.message.content).toBe("Hello from beta!")
    // Skipped at no cost: alpha was not called again.
    expect(alpha.chatRequests()).toBe(1)

    const [a] = await statusOf(router.url)
    expect(a).toMatchObject({ id: "alpha", state: "healthy", circuit: { state: "closed", consecutive_failures: 0 } })
    expect(a!.rate_limited.map((r) => r.model)).toEqual(["m1"])
    const until = Date.parse(a!.rate_limited[0]!.until)
    expect(until).toBeGreaterThanOrEqual(sentAt + 1_000)
    expect(until).toBeLessThanOrEqual(Date.now() + 1_000)

    // The window is one second from the 429; the only real wait in the suite.
    await sleep(Math.max(0, until - Date.now() + 50))
    const third = await ask(client)
    expect(attemptsHeader(third)).toBe("alpha:ok")
    expect(third.data.choices[0]?.message.content).toBe("Hello from alpha!")
    expect(alpha.chatRequests()).toBe(2)
    expect(requestsTo(beta)).toHaveLength(2)
    expect((await statusOf(router.url))[0]!.rate_limited).toEqual([])
  })
})
