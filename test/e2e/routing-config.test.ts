/**
 * `GET`/`PUT`/`PATCH /admin/routing-config` on the real server: the wire form, PUT's defaults and
 * PATCH's partial change, validation (unknown provider, unknown strategy, wrong types, bad JSON,
 * unknown fields), the admin key, and a change taking effect for the very next request.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import type { RouterUnderTest } from "../kit/TestRouter.js"
import { adminCall, adminKey, okJson, startWithContext } from "./admin.js"
import { expectOpenAiError, harness, loopbackServer } from "./helpers.js"

const endpoint = "http://127.0.0.1:9/v1"
const providers = { alpha: { endpoint, models: ["m1"] }, beta: { endpoint, models: ["m1"] }, gamma: { endpoint, models: ["m2"] } }
const defaults = { strategy: "priority", cost_optimization: false, provider_order: [], failover: [] }

describe("/admin/routing-config", () => {
  const h = harness()
  let router: RouterUnderTest
  const get = async () => okJson(await adminCall(router, "GET", "/admin/routing-config"))

  beforeAll(async () => {
    router = await h.router({ config: { providers }, env: { ROUTER_ADMIN_KEY: adminKey } })
  })
  afterAll(() => h.closeAll())
  beforeEach(async () => {
    await okJson(await adminCall(router, "PUT", "/admin/routing-config", {}))
  })

  it("GET returns the defaults when nothing was set", async () => {
    expect(await get()).toEqual(defaults)
  })

  it("PUT replaces the whole config and answers with it; GET then returns it", async () => {
    const config = {
      strategy: "cost",
      cost_optimization: true,
      provider_order: ["beta", "alpha"],
      failover: [{ provider_id: "alpha", condition: "credit_threshold", value: 5 }, { provider_id: "beta", condition: "health", value: 0.5 }]
    }
    expect(await okJson(await adminCall(router, "PUT", "/admin/routing-config", config))).toEqual(config)
    expect(await get()).toEqual(config)
  })

  it("PUT puts the fields it leaves out back at their defaults", async () => {
    await okJson(await adminCall(router, "PUT", "/admin/routing-config", { strategy: "latency", provider_order: ["gamma"], cost_optimization: true }))
    expect(await okJson(await adminCall(router, "PUT", "/admin/routing-config", { strategy: "weighted" }))).toEqual({ ...defaults, strategy: "weighted" })
    expect(await get()).toEqual({ ...defaults, strategy: "weighted" })
  })

  it("PATCH changes only the fields given", async () => {
    const base = { strategy: "cost", cost_optimization: true, provider_order: ["alpha"], failover: [{ provider_id: "gamma", condition: "health", value: 0.9 }] }
    await okJson(await adminCall(router, "PUT", "/admin/routing-config", base))
    expect(await okJson(await adminCall(router, "PATCH", "/admin/routing-config", { strategy: "latency" }))).toEqual({ ...base, strategy: "latency" })
    // A list given replaces the old one.
    const patched = await okJson(await adminCall(router, "PATCH", "/admin/routing-config", { provider_order: ["beta", "gamma"], failover: [] }))
    expect(patched).toEqual({ ...base, strategy: "latency", provider_order: ["beta", "gamma"], failover: [] })
    // An empty PATCH changes nothing.
    expect(await okJson(await adminCall(router, "PATCH", "/admin/routing-config", {}))).toEqual(patched)
    expect(await get()).toEqual(patched)
  })

  it("refuses an unknown provider id with a 400 that names it, and changes nothing", async () => {
    await okJson(await adminCall(router, "PUT", "/admin/routing-config", { provider_order: ["alpha"] }))
    for (const method of ["PUT", "PATCH"]) {
      const error = await expectOpenAiError(await adminCall(router, method, "/admin/routing-config", { provider_order: ["beta", "ghost"] }), 400)
      expect(error.message).toContain("'ghost'")
      expect(error.message).toContain("alpha, beta, gamma") // what is configured
      expect(error.param).toBe("provider_order[1]")
      expect(error.code).toBe("invalid_value")
      expect(error.type).toBe("invalid_request_error")
    }
    const failover = await expectOpenAiError(
      await adminCall(router, "PATCH", "/admin/routing-config", { failover: [{ provider_id: "phantom", condition: "health", value: 0.5 }] }),
      400
    )
    expect(failover.message).toContain("'phantom'")
    expect(failover.param).toBe("failover[0].provider_id")
    expect(await get()).toEqual({ ...defaults, provider_order: ["alpha"] })
  })

  it("refuses a provider_order that names a provider twice, and changes nothing", async () => {
    const before = await get()
    for (const method of ["PUT", "PATCH"]) {
      const error = await expectOpenAiError(await adminCall(router, method, "/admin/routing-config", { provider_order: ["alpha", "beta", "alpha"] }), 400)
      expect(error.param).toBe("provider_order")
      expect(error.message).toContain("'alpha' more than once")
    }
    expect(await get()).toEqual(before)
  })

  it("refuses an unknown strategy with a 400 that names it", async () => {
    for (const method of ["PUT", "PATCH"]) {
      const error = await expectOpenAiError(await adminCall(router, method, "/admin/routing-config", { strategy: "fastest" }), 400)
      expect(error.message).toContain("fastest")
      expect(error.message).toContain("priority, cost, latency, weighted")
      expect(error.param).toBe("strategy")
      expect(error.code).toBe("invalid_value")
    }
    expect(await get()).toEqual(defaults)
  })

  it("refuses wrong types with 400 invalid_value naming the field", async () => {
    const cases: ReadonlyArray<readonly [unknown, string]> = [
      [{ cost_optimization: "yes" }, "cost_optimization"],
      [{ provider_order: "alpha" }, "provider_order"],
      [{ provider_order: [""] }, "provider_order[0]"],
      [{ strategy: null }, "strategy"],
      [{ failover: [{ provider_id: "alpha", condition: "sometimes", value: 1 }] }, "failover[0].condition"],
      [{ failover: [{ provider_id: "alpha", condition: "credit_threshold", value: "5" }] }, "failover[0].value"],
      [{ failover: [{ provider_id: "alpha", condition: "credit_threshold", value: -1 }] }, "failover[0].value"],
      [{ failover: [{ provider_id: "alpha", condition: "health", value: 5 }] }, "failover[0].value"]
    ]
    for (const [body, param] of cases) {
      const error = await expectOpenAiError(await adminCall(router, "PUT", "/admin/routing-config", body), 400)
      expect(error.param, JSON.stringify(body)).toBe(param)
      expect(error.code, JSON.stringify(body)).toBe("invalid_value")
      expect(error.message, JSON.stringify(body)).toContain(param)
    }
    const missing = await expectOpenAiError(
      await adminCall(router, "PUT", "/admin/routing-config", { failover: [{ provider_id: "alpha", value: 1 }] }),
      400
    )
    expect(missing.param).toBe("failover[0].condition")
    const notAnId = await expectOpenAiError(await adminCall(router, "PUT", "/admin/routing-config", { provider_order: ["alpha", 7] }), 400)
    expect(notAnId.message).toBe("Invalid request body: invalid value for 'provider_order[1]': must be a provider id (a non-empty string)")
    expect(await get()).toEqual(defaults)
  })

  it("refuses a failover value too large for a number (1e400 parses as Infinity, which JSON stores as null)", async () => {
    for (const method of ["PUT", "PATCH"]) {
      const body = `{"failover":[{"provider_id":"alpha","condition":"credit_threshold","value":1e400}]}`
      const error = await expectOpenAiError(await adminCall(router, method, "/admin/routing-config", body), 400)
      expect(error.param).toBe("failover[0].value")
      expect(error.code).toBe("invalid_value")
    }
    expect(await get()).toEqual(defaults)
  })

  it("refuses an unknown field, so a misspelt one cannot reset a setting", async () => {
    const error = await expectOpenAiError(await adminCall(router, "PUT", "/admin/routing-config", { stratgy: "cost" }), 400)
    expect(error.message).toContain("stratgy")
    expect(error.param).toBe("stratgy")
  })

  it("refuses bad JSON and a body that is not an object with 400 invalid_json", async () => {
    for (const body of ["{\"strategy\": ", "", "[1, 2]", "\"cost\""]) {
      for (const method of ["PUT", "PATCH"]) {
        const error = await expectOpenAiError(await adminCall(router, method, "/admin/routing-config", body), 400)
        expect(error.code, `${method} ${body}`).toBe("invalid_json")
      }
    }
  })

  it("refuses a body over the size limit with 413", async () => {
    const small = await h.router({ config: { providers }, env: { ROUTER_ADMIN_KEY: adminKey, ROUTER_MAX_BODY_BYTES: "1000" } })
    const big = { provider_order: Array.from({ length: 200 }, () => "alpha") }
    const error = await expectOpenAiError(await adminCall(small, "PUT", "/admin/routing-config", big), 413)
    expect(error.code).toBe("request_too_large")
  })

  it("is closed without the admin key (401), and the client key does not open it", async () => {
    for (const method of ["GET", "PUT", "PATCH"]) {
      const body = method === "GET" ? undefined : { strategy: "cost" }
      await expectOpenAiError(await adminCall(router, method, "/admin/routing-config", body, {}), 401)
      await expectOpenAiError(await adminCall(router, method, "/admin/routing-config", body, { authorization: "Bearer wrong" }), 401)
    }
    expect(await get()).toEqual(defaults)
    // X-API-Key works as well as Bearer.
    expect(await okJson(await adminCall(router, "GET", "/admin/routing-config", undefined, { "x-api-key": adminKey }))).toEqual(defaults)
  })

  it("answers other methods with 405 and the allowed ones", async () => {
    const res = await adminCall(router, "DELETE", "/admin/routing-config")
    const error = await expectOpenAiError(res, 405)
    expect(error.code).toBe("method_not_allowed")
    expect(res.headers.get("allow")).toBe("GET, HEAD, PUT, PATCH")
  })
})

describe("a routing config change", () => {
  it("is in force for the request path once the answer is sent, without a restart", async () => {
    const daemon = await startWithContext({ providers })
    try {
      for (let i = 0; i < 5; i++) {
        const order = i % 2 === 0 ? ["gamma", "alpha"] : ["beta"]
        await okJson(await adminCall(daemon, "PATCH", "/admin/routing-config", { provider_order: order, strategy: i % 2 === 0 ? "cost" : "latency" }))
        const routing = daemon.providers.index().routing
        expect(routing.providerOrder).toEqual(order)
        expect(routing.strategy).toBe(i % 2 === 0 ? "cost" : "latency")
      }
    } finally {
      await daemon.close()
    }
  })

  // The index once took a config change only after the model discovery that the previous change
  // started had ended, so one provider whose `GET /models` hung held every later change back.
  it("is in force at once even while a provider's model discovery hangs", async () => {
    const hanging = await loopbackServer(() => undefined)
    const daemon = await startWithContext({ providers: { ...providers, slow: { endpoint: hanging.url } } })
    try {
      await okJson(await adminCall(daemon, "PUT", "/admin/routing-config", { provider_order: ["alpha"] }))
      expect(daemon.providers.index().routing.providerOrder).toEqual(["alpha"])
    } finally {
      await daemon.close()
      await hanging.close()
    }
  })
})
