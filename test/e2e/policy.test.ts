/**
 * The policy through the real daemon: `/admin/explain` with a candidate dropped for each reason,
 * the same decision on the request path (`X-Router-Decision`, the clamped body upstream, the
 * request record), OpenRouter's `models` and `provider` fields, and a context-too-long refusal
 * moving on to a candidate with a larger window.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { FakeServer } from "../../src/testing/FakeServer.js"
import type { RouterUnderTest } from "../kit/TestRouter.js"
import { adminCall, adminKey, okJson, startWithContext } from "./admin.js"
import { clientOf, expectOpenAiError, harness, lastRequest, postJson, requestsTo } from "./helpers.js"

const tools = [{ type: "function", function: { name: "lookup", description: "find a thing", parameters: { type: "object", properties: {} } } }]
/** ~12,000 tokens by the router's estimate (characters / 4). */
const bigPrompt = "word ".repeat(9600)
const lettaShaped = {
  model: "x",
  messages: [{ role: "system", content: "You are a helpful agent." }, { role: "user", content: bigPrompt }],
  tools,
  max_completion_tokens: 16384
}

interface Explained {
  readonly needs: Record<string, unknown>
  readonly strategy: string
  readonly ranked: ReadonlyArray<{ id: string; score: number | null; max_tokens?: { requested: number; sent: number }; context_length?: number | null }>
  readonly dropped: ReadonlyArray<{ id: string; reason: string; outcome?: string }>
  readonly notes: ReadonlyArray<string>
  readonly header: string
}

describe("policy: explain and the request path agree", () => {
  const h = harness()
  let good: FakeServer
  let fallback: FakeServer
  let small: FakeServer
  let router: RouterUnderTest

  beforeAll(async () => {
    good = await h.fake({ name: "good", models: ["x"] })
    fallback = await h.fake({ name: "fallback", models: ["x"] })
    small = await h.fake({ name: "small", models: ["x"] })
    const notools = await h.fake({ name: "notools", models: ["x"] })
    const broke = await h.fake({ name: "broke", models: ["x"], behaviour: { mode: "status", status: 402 } })
    const limited = await h.fake({ name: "limited", models: ["x"], behaviour: { mode: "status", status: 429, retryAfter: 600 } })
    const keyless = await h.fake({ name: "keyless", models: ["x"], behaviour: { mode: "status", status: 401 } })
    const down = await h.deadEndpoint()
    router = await h.router({
      config: {
        resilience: { circuit_breaker: { failure_threshold: 2 } },
        providers: {
          good: { endpoint: good.url, models: ["x"], priority: 1, model_overrides: { x: { context_length: 32768, max_output_tokens: 4096 } } },
          small: { endpoint: small.url, models: ["x"], priority: 1, model_overrides: { x: { context_length: 8192 } } },
          notools: { endpoint: notools.url, models: ["x"], priority: 1, supports_tools: false },
          broke: { endpoint: broke.url, models: ["x"], priority: 2 },
          limited: { endpoint: limited.url, models: ["x"], priority: 2 },
          keyless: { endpoint: keyless.url, models: ["x"], priority: 2 },
          down: { endpoint: down, models: ["x"], priority: 2, timeouts: { connect: 1 } },
          fallback: { endpoint: fallback.url, models: ["x"], priority: 9 }
        }
      },
      env: { ROUTER_ADMIN_KEY: adminKey }
    })
    // Teach the router each failure: one request pinned to each broken provider (two for the dead
    // one, so its breaker opens whether or not the start-up health check has run yet).
    for (const id of ["broke", "limited", "keyless", "down", "down"]) {
      const res = await postJson(router, "/v1/chat/completions", { model: `${id}+x`, messages: [{ role: "user", content: "hi" }] })
      expect(res.status, id).toBeGreaterThanOrEqual(500)
      // Failed or skipped, the answer says how the router decided.
      expect(res.headers.get("x-router-decision"), id).toMatch(new RegExp(`^strategy=priority; order=(${id}\\+x)?`))
    }
  })
  afterAll(() => h.closeAll())

  const explain = async (body: unknown, headers: Record<string, string> = {}) =>
    (await okJson(await adminCall(router, "POST", "/admin/explain", body, { authorization: `Bearer ${adminKey}`, ...headers }))) as Explained

  it("explains a request with a candidate dropped for each reason, without calling any upstream", async () => {
    const before = good.requests.length + fallback.requests.length
    const e = await explain(lettaShaped)
    expect(good.requests.length + fallback.requests.length).toBe(before)
    expect(e.needs).toMatchObject({ stream: false, tools: true, vision: false, json_schema: false, max_tokens: 16384 })
    expect(e.needs.prompt_tokens_estimate).toBeGreaterThan(12000)
    expect(e.strategy).toBe("priority")
    expect(e.ranked.map((r) => r.id)).toEqual(["good+x", "fallback+x"])
    expect(e.ranked[0]).toMatchObject({ max_tokens: { requested: 16384, sent: 4096 }, context_length: 32768 })
    const reasons = Object.fromEntries(e.dropped.map((d) => [d.id, d]))
    expect(Object.keys(reasons).sort()).toEqual(["broke+x", "down+x", "keyless+x", "limited+x", "notools+x", "small+x"])
    expect(reasons["small+x"]!.reason).toBe(`context 8192 < needed ${e.needs.prompt_tokens_estimate}`)
    expect(reasons["notools+x"]!.reason).toBe("does not support tools")
    expect(reasons["broke+x"]).toMatchObject({ outcome: "out_of_credits", reason: expect.stringMatching(/^credits exhausted until \d{4}-/) })
    expect(reasons["limited+x"]).toMatchObject({ outcome: "rate_limited", reason: expect.stringMatching(/^rate limited until \d{4}-/) })
    expect(reasons["keyless+x"]).toMatchObject({ outcome: "misconfigured", reason: expect.stringMatching(/^circuit open until \d{4}-/) })
    expect(reasons["down+x"]).toMatchObject({ outcome: "circuit_open", reason: expect.stringMatching(/^circuit open until \d{4}-/) })
    expect(e.notes).toEqual(["good+x: clamped max_tokens 16384→4096"])
    expect(e.header).toContain("clamped=good+x(max_tokens 16384->4096)")
  })

  it("routes the same request the way it explained it, and keeps the decision with the request's record", async () => {
    const explained = await explain(lettaShaped)
    const res = await postJson(router, "/v1/chat/completions", lettaShaped, { "x-request-id": "policy-e2e-1" })
    expect(res.status, await res.clone().text()).toBe(200)
    expect(res.headers.get("x-router-provider")).toBe("good")
    expect(res.headers.get("x-router-decision")).toBe(explained.header)
    // The clamp reached the upstream; every other field went as sent.
    const sent = lastRequest(good).body as Record<string, unknown>
    expect(sent.max_completion_tokens).toBe(4096)
    expect(sent.tools).toEqual(tools)
    expect((sent.messages as Array<{ content: string }>)[1]!.content).toBe(bigPrompt)
    const record = (await router.records(20)).find((r) => r.request_id === "policy-e2e-1")
    expect(record?.decision).toMatchObject({
      strategy: "priority",
      ranked: [{ id: "good+x", max_tokens: { requested: 16384, sent: 4096 } }, { id: "fallback+x" }],
      dropped: expect.arrayContaining([expect.objectContaining({ id: "small+x", reason: expect.stringMatching(/^context 8192 < needed/) })])
    })
  })

  it("drops a candidate whose window a Chinese prompt does not fit, though its characters / 4 would, on explain and on the request path", async () => {
    // 10,000 characters: 2,500 tokens at characters / 4, which small's 8192 would take.
    const chinese = { model: "x", messages: [{ role: "user", content: "中文".repeat(5000) }] }
    const e = await explain(chinese)
    expect(e.needs.prompt_tokens_estimate).toBe(10004)
    expect(e.dropped.find((d) => d.id === "small+x")?.reason).toBe("context 8192 < needed 10004")
    const before = requestsTo(small).length
    const res = await postJson(router, "/v1/chat/completions", chinese)
    expect(res.status, await res.clone().text()).toBe(200)
    expect(res.headers.get("x-router-provider")).toBe("good")
    expect(res.headers.get("x-router-decision")).toContain("small+x(context 8192 < needed 10004)")
    expect(requestsTo(small)).toHaveLength(before)
  })

  it("explains embeddings bodies too, and refuses a body that is neither", async () => {
    const e = await explain({ model: "x", input: "hello" })
    expect(e.needs).toMatchObject({ embeddings: true, tools: false })
    expect(e.ranked.map((r) => r.id)).toContain("good+x")
    const error = await expectOpenAiError(await adminCall(router, "POST", "/admin/explain", { model: "x" }), 400)
    expect(error.message).toContain("messages")
    expect((await expectOpenAiError(await adminCall(router, "POST", "/admin/explain", { model: "nope", input: "x" }), 404)).code).toBe("model_not_found")
    expect((await expectOpenAiError(await adminCall(router, "POST", "/admin/explain", "{oops"), 400)).code).toBe("invalid_json")
    expect((await expectOpenAiError(await adminCall(router, "POST", "/admin/explain", lettaShaped, {}), 401)).code).toBe("invalid_api_key")
  })
})

describe("policy: OpenRouter's models and provider fields", () => {
  const h = harness()
  let a: FakeServer
  let b: FakeServer
  let router: RouterUnderTest

  beforeAll(async () => {
    a = await h.fake({ name: "a", models: ["m", "only-a"] })
    b = await h.fake({ name: "b", models: ["m"] })
    router = await h.router({
      config: {
        providers: {
          a: { endpoint: a.url, models: ["m", "only-a"], priority: 1, model_overrides: { m: { pricing: { input: 5, output: 15 } } } },
          b: { endpoint: b.url, models: ["m"], priority: 2, model_overrides: { m: { pricing: { input: 0.1, output: 0.2 } } } }
        }
      }
    })
  })
  afterAll(() => h.closeAll())

  const ask = (extra: Record<string, unknown>) => clientOf(router).chat.completions.create({ model: "m", messages: [{ role: "user", content: "hi" }], ...extra } as never).withResponse()

  it("provider.order puts its providers first, and neither field goes upstream", async () => {
    const { response } = await ask({ provider: { order: ["b"] } })
    expect(response.headers.get("x-router-provider")).toBe("b")
    const sent = lastRequest(b).body as Record<string, unknown>
    expect(sent.provider).toBeUndefined()
    expect(sent.models).toBeUndefined()
    expect(sent.model).toBe("m")
  })

  it("provider.sort price picks the cheapest; provider.ignore and provider.only drop providers", async () => {
    expect((await ask({ provider: { sort: "price" } })).response.headers.get("x-router-provider")).toBe("b")
    expect((await ask({ provider: { ignore: ["a"] } })).response.headers.get("x-router-provider")).toBe("b")
    expect((await ask({ provider: { only: ["a"] } })).response.headers.get("x-router-provider")).toBe("a")
    expect((await ask({ provider: { max_price: { prompt: 1 } } })).response.headers.get("x-router-provider")).toBe("b")
  })

  it("nothing left after provider.only is a 503 naming why each was dropped", async () => {
    const res = await postJson(router, "/v1/chat/completions", { model: "m", messages: [{ role: "user", content: "hi" }], provider: { only: ["zzz"] } })
    expect(res.headers.get("x-router-decision")).toBe("strategy=priority; order=; dropped=a+m(not in provider.only),b+m(not in provider.only)")
    const error = await expectOpenAiError(res, 503)
    expect(error.message).toContain("a+m: not in provider.only")
    expect(error.message).toContain("b+m: not in provider.only")
  })

  it("models: [...] is an ordered fallback list; unknown ids in it are skipped, and the model field may be left out", async () => {
    const before = requestsTo(a).length
    const { response } = await ask({ model: "no-such-model", models: ["only-a", "m"] })
    expect(response.headers.get("x-router-provider")).toBe("a")
    expect(response.headers.get("x-router-upstream-model")).toBe("only-a")
    expect(requestsTo(a).length).toBe(before + 1)
    const sent = lastRequest(a).body as Record<string, unknown>
    expect(sent.models).toBeUndefined()
    expect(sent.model).toBe("only-a")
    const bare = await postJson(router, "/v1/chat/completions", { models: ["m"], messages: [{ role: "user", content: "hi" }] })
    expect(bare.status, await bare.clone().text()).toBe(200)
    expect(bare.headers.get("x-router-upstream-model")).toBe("m")
  })

  it("a body whose provider or models field has the wrong shape is a 400 naming the field", async () => {
    const bad = async (extra: Record<string, unknown>) =>
      expectOpenAiError(await postJson(router, "/v1/chat/completions", { model: "m", messages: [{ role: "user", content: "hi" }], ...extra }), 400)
    expect((await bad({ provider: { order: "b" } })).param).toBe("provider.order")
    expect((await bad({ provider: { sort: "fastest" } })).param).toBe("provider.sort")
    expect((await bad({ models: "m" })).param).toBe("models")
    expect((await bad({ models: ["m", 3] })).param).toBe("models[1]")
  })

  it("the router's own ordering is untouched when the fields are absent (the client's bytes go as sent)", async () => {
    const raw = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], temperature: 0.25 })
    const res = await postJson(router, "/v1/chat/completions", raw)
    expect(res.headers.get("x-router-provider")).toBe("a")
    expect(res.headers.get("x-router-decision")).toBe("strategy=priority; order=a+m,b+m")
    expect(lastRequest(a).body).toEqual(JSON.parse(raw))
  })
})

describe("policy: a context-too-long refusal", () => {
  const h = harness()

  it("moves on to the next candidate known to have a larger context window, skipping smaller ones", async () => {
    const tooLong = { error: { message: "This model's maximum context length is 8192 tokens", type: "invalid_request_error", param: "messages", code: "context_length_exceeded" } }
    const tight = await h.fake({ name: "tight", models: ["m"], behaviour: { mode: "status", status: 400, body: tooLong } })
    const alsoTight = await h.fake({ name: "alsotight", models: ["m"] })
    const roomy = await h.fake({ name: "roomy", models: ["m"] })
    const router = await h.router({
      config: {
        providers: {
          tight: { endpoint: tight.url, models: ["m"], priority: 1, model_overrides: { m: { context_length: 8192 } } },
          alsotight: { endpoint: alsoTight.url, models: ["m"], priority: 2, model_overrides: { m: { context_length: 8192 } } },
          roomy: { endpoint: roomy.url, models: ["m"], priority: 3, model_overrides: { m: { context_length: 131072 } } }
        }
      }
    })
    try {
      const { response } = await clientOf(router).chat.completions.create({ model: "m", messages: [{ role: "user", content: "a short prompt the estimate thinks fits" }] }).withResponse()
      expect(response.headers.get("x-router-provider")).toBe("roomy")
      expect(response.headers.get("x-router-attempts")).toBe("tight:context_too_long,roomy:ok")
      expect(requestsTo(alsoTight)).toHaveLength(0)
    } finally {
      await h.closeAll()
    }
  })

  it("is returned to the client as is when no candidate is known to be larger", async () => {
    const tooLong = { error: { message: "prompt is too long", type: "invalid_request_error", param: null, code: "context_length_exceeded" } }
    const tight = await h.fake({ name: "tight", models: ["m"], behaviour: { mode: "status", status: 400, body: tooLong } })
    const other = await h.fake({ name: "other", models: ["m"] })
    const router = await h.router({
      config: { providers: { tight: { endpoint: tight.url, models: ["m"], priority: 1 }, other: { endpoint: other.url, models: ["m"], priority: 2 } } }
    })
    try {
      const res = await postJson(router, "/v1/chat/completions", { model: "m", messages: [{ role: "user", content: "hi" }] })
      // The upstream's own refusal goes back as is, with the decision that led to it.
      expect(res.headers.get("x-router-decision")).toBe("strategy=priority; order=tight+m,other+m")
      const error = await expectOpenAiError(res, 400)
      expect(error.code).toBe("context_length_exceeded")
      expect(requestsTo(other)).toHaveLength(0)
    } finally {
      await h.closeAll()
    }
  })
})

describe("policy: the routing config steers the next request", () => {
  const h = harness()
  let router: RouterUnderTest

  beforeAll(async () => {
    const slowPricey = await h.fake({ name: "a", models: ["m"], behaviour: { mode: "ok", firstByteMs: 200 } })
    const fastCheap = await h.fake({ name: "b", models: ["m"] })
    // c answers once (under provider_order) before the latency step: slower than b, so the order is certain.
    const third = await h.fake({ name: "c", models: ["m"], behaviour: { mode: "ok", firstByteMs: 120 } })
    router = await h.router({
      config: {
        providers: {
          a: { endpoint: slowPricey.url, models: ["m"], priority: 1, model_overrides: { m: { pricing: { input: 3, output: 15 } } } },
          b: { endpoint: fastCheap.url, models: ["m"], priority: 2, weight: 2, model_overrides: { m: { pricing: { input: 0.2, output: 0.6 } } } },
          c: { endpoint: third.url, models: ["m"], priority: 3 }
        }
      },
      env: { ROUTER_ADMIN_KEY: adminKey }
    })
  })
  afterAll(() => h.closeAll())

  const servedBy = async (model = "m", headers: Record<string, string> = {}) => {
    const res = await postJson(router, "/v1/chat/completions", { model, messages: [{ role: "user", content: "hi" }] }, headers)
    expect(res.status, await res.clone().text()).toBe(200)
    // A mismatch names the decision the router made, not just the provider.
    return `${res.headers.get("x-router-provider")} (${res.headers.get("x-router-decision")})`
  }
  const provider = (served: string | null) => served?.split(" ")[0]
  const setRouting = async (method: "PUT" | "PATCH", body: unknown) => okJson(await adminCall(router, method, "/admin/routing-config", body))

  it("priority, then provider_order, then cost, latency and weighted, each applied to the very next request", async () => {
    expect(await servedBy()).toMatch(/^a /)
    await setRouting("PATCH", { provider_order: ["c"] })
    expect(await servedBy()).toMatch(/^c /)
    await setRouting("PUT", { strategy: "cost" })
    expect(await servedBy()).toMatch(/^b /)
    // Latency needs data: one answer from each of a (200 ms to first byte) and b (at once).
    await servedBy("a+m")
    await servedBy("b+m")
    await setRouting("PUT", { strategy: "latency" })
    expect(await servedBy()).toMatch(/^b /)
    await setRouting("PUT", { strategy: "weighted" })
    const first = new Map<string, string | undefined>()
    for (let i = 0; i < 24; i++) first.set(`s${i}`, provider(await servedBy("m", { "x-router-session-id": `s${i}` })))
    // Each session keeps its provider, and the sessions spread over more than one.
    for (const [session, p] of first) expect(provider(await servedBy("m", { "x-router-session-id": session }))).toBe(p)
    expect(new Set(first.values()).size).toBeGreaterThan(1)
    await setRouting("PUT", {})
    expect(await servedBy()).toMatch(/^a /)
  })
})

describe("policy: weighted routing without a session", () => {
  const h = harness()
  let router: RouterUnderTest

  beforeAll(async () => {
    const heavy = await h.fake({ name: "heavy", models: ["m"] })
    const light = await h.fake({ name: "light", models: ["m"] })
    // No ROUTER_CLIENT_KEY: the loopback setup, where the official client still sends its bearer
    // token, the same one on every request.
    router = await h.router({
      config: {
        routing: { strategy: "weighted" },
        providers: {
          heavy: { endpoint: heavy.url, models: ["m"], weight: 3 },
          light: { endpoint: light.url, models: ["m"], weight: 1 }
        }
      },
      env: { ROUTER_ADMIN_KEY: adminKey }
    })
  })
  afterAll(() => h.closeAll())

  const servedBy = async (options: { readonly requestId?: string; readonly user?: string; readonly session?: string } = {}) => {
    const headers: Record<string, string> = {}
    if (options.requestId !== undefined) headers["x-request-id"] = options.requestId
    if (options.session !== undefined) headers["x-router-session-id"] = options.session
    const { response } = await clientOf(router).chat.completions
      .create({ model: "m", messages: [{ role: "user", content: "hi" }], ...(options.user === undefined ? {} : { user: options.user }) }, { headers })
      .withResponse()
    return response.headers.get("x-router-provider")
  }

  it("spreads anonymous requests over the providers by their request ids, in proportion to weight; the same id lands on the same provider", async () => {
    const counts = new Map<string | null, number>()
    const first = new Map<string, string | null>()
    for (let i = 0; i < 80; i++) {
      const id = `weighted-e2e-${i}`
      const p = await servedBy({ requestId: id })
      first.set(id, p)
      counts.set(p, (counts.get(p) ?? 0) + 1)
    }
    expect([...counts.keys()].sort()).toEqual(["heavy", "light"])
    // Expected 60 / 20; the ids are fixed, so the split is too.
    expect(counts.get("heavy")!).toBeGreaterThan(counts.get("light")!)
    expect(counts.get("light")!).toBeGreaterThanOrEqual(10)
    for (const id of [...first.keys()].slice(0, 10)) expect(await servedBy({ requestId: id })).toBe(first.get(id))
  })

  it("keeps each user on one provider whatever the request id, and spreads users; a session id wins over the user", async () => {
    const byUser = new Map<string, string | null>()
    for (let i = 0; i < 16; i++) byUser.set(`user-${i}`, await servedBy({ user: `user-${i}`, requestId: `u-${i}-a` }))
    for (const [user, p] of byUser) expect(await servedBy({ user, requestId: `${user}-b` })).toBe(p)
    expect(new Set(byUser.values()).size).toBe(2)
    const bySession = await servedBy({ session: "weighted-session", requestId: "s-0" })
    for (const user of byUser.keys()) expect(await servedBy({ session: "weighted-session", user })).toBe(bySession)
  })

  it("explain, which has no request id, says how requests without a session or user are spread", async () => {
    const body = { model: "m", messages: [{ role: "user", content: "hi" }] }
    const anonymous = (await okJson(await adminCall(router, "POST", "/admin/explain", body))) as { notes: ReadonlyArray<string> }
    expect(anonymous.notes).toEqual([expect.stringContaining("spread by request id")])
    const withUser = (await okJson(await adminCall(router, "POST", "/admin/explain", { ...body, user: "user-1" }))) as { notes: ReadonlyArray<string> }
    expect(withUser.notes).toEqual([])
  })
})

describe("POST /admin/models/refresh", () => {
  const h = harness()
  afterAll(() => h.closeAll())

  it("asks every provider for its models now, and answers with the new list", async () => {
    let listed = ["m1"]
    const fake = await h.fake({ name: "p", listing: () => ({ object: "list", data: listed.map((id) => ({ id, object: "model", context_length: 4096 })) }) })
    const router = await h.router({ config: { providers: { p: { endpoint: fake.url } } }, env: { ROUTER_ADMIN_KEY: adminKey } })
    await router.refreshModels()
    const ids = (body: unknown) => (body as { data: Array<{ id: string }> }).data.map((m) => m.id)
    expect(ids(await okJson(await adminCall(router, "GET", "/v1/models", undefined, {})))).toEqual(["m1", "p+m1"])
    listed = ["m1", "m2"]
    const refreshed = await okJson(await adminCall(router, "POST", "/admin/models/refresh"))
    expect(ids(refreshed)).toEqual(["m1", "m2", "p+m1", "p+m2"])
    expect((refreshed as { data: Array<Record<string, unknown>> }).data.find((m) => m.id === "p+m2")).toMatchObject({ context_length: 4096, providers: ["p"] })
    expect((await expectOpenAiError(await adminCall(router, "POST", "/admin/models/refresh", undefined, {}), 401)).code).toBe("invalid_api_key")
  })
})

describe("policy: failover rules on the request path", () => {
  const h = harness()
  afterAll(() => h.closeAll())

  it("a credit balance below its threshold and a success rate below its floor take providers out, and explain says why", async () => {
    const venice = await h.fake({ name: "venice", models: ["m"] })
    const flaky = await h.fake({ name: "flaky", models: ["m"], behaviour: { mode: "status", status: 500 } })
    const local = await h.fake({ name: "local", models: ["m"] })
    const daemon = await startWithContext({
      providers: {
        venice: { endpoint: venice.url, models: ["m"], priority: 1 },
        flaky: { endpoint: flaky.url, models: ["m"], priority: 2 },
        local: { endpoint: local.url, models: ["m"], priority: 3 }
      }
    })
    try {
      const chat = (model = "m") =>
        fetch(`${daemon.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] })
        })
      // flaky fails three requests: enough for a success rate (health checks do not count in it).
      for (let i = 0; i < 3; i++) expect((await chat("flaky+m")).status).toBe(502)
      await okJson(await adminCall(daemon, "PUT", "/admin/routing-config", {
        failover: [{ provider_id: "venice", condition: "credit_threshold", value: 5 }, { provider_id: "flaky", condition: "health", value: 0.5 }]
      }))
      // No balance known yet: the credit rule does not fire.
      expect((await chat()).headers.get("x-router-provider")).toBe("venice")
      daemon.credits.reportBalance("venice", 3.2)
      const res = await chat()
      expect(res.headers.get("x-router-provider")).toBe("local")
      expect(res.headers.get("x-router-attempts")).toBe("venice:out_of_credits,flaky:circuit_open,local:ok")
      const explained = (await okJson(await adminCall(daemon, "POST", "/admin/explain", { model: "m", messages: [{ role: "user", content: "hi" }] }))) as Explained
      expect(explained.dropped).toEqual([
        { id: "venice+m", provider: "venice", model: "m", reason: "credits 3.2 below threshold 5", outcome: "out_of_credits" },
        { id: "flaky+m", provider: "flaky", model: "m", reason: "success rate 0.00 below 0.5", outcome: "circuit_open" }
      ])
      daemon.credits.reportBalance("venice", 0)
      const empty = (await okJson(await adminCall(daemon, "POST", "/admin/explain", { model: "m", messages: [{ role: "user", content: "hi" }] }))) as Explained
      expect(empty.dropped[0]).toMatchObject({ id: "venice+m", reason: "credits exhausted", outcome: "out_of_credits" })
    } finally {
      await daemon.close()
    }
  })
})
