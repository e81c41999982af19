/**
 * A session pin set through `/admin/override` changes which provider serves that session's chat
 * requests, and only that session's; clearing it restores the configured order.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { FakeServer } from "../../src/testing/FakeServer.js"
import type { RouterUnderTest } from "../kit/TestRouter.js"
import { adminCall, adminKey, asSession, okJson } from "./admin.js"
import { harness, postJson } from "./helpers.js"

describe("a session pin on the request path", () => {
  const h = harness()
  let alpha: FakeServer
  let beta: FakeServer
  let router: RouterUnderTest

  beforeAll(async () => {
    alpha = await h.fake({ name: "alpha", models: ["shared"] })
    beta = await h.fake({ name: "beta", models: ["shared"] })
    router = await h.router({
      config: {
        providers: {
          alpha: { endpoint: alpha.url, models: ["shared"], priority: 1 },
          beta: { endpoint: beta.url, models: ["shared"], priority: 2 }
        }
      },
      env: { ROUTER_ADMIN_KEY: adminKey }
    })
  })
  afterAll(() => h.closeAll())

  const servedBy = async (session: string) => {
    const res = await postJson(router, "/v1/chat/completions", { model: "shared", messages: [{ role: "user", content: "hi" }] }, {
      "x-router-session-id": session
    })
    expect(res.status, await res.clone().text()).toBe(200)
    return res.headers.get("x-router-provider")
  }

  it("puts the pinned provider first for that session only, until the pin is cleared", async () => {
    expect(await servedBy("pinned")).toBe("alpha")
    await okJson(await adminCall(router, "POST", "/admin/override", { provider_id: "beta" }, asSession("pinned")))
    expect(await servedBy("pinned")).toBe("beta")
    expect(await servedBy("other")).toBe("alpha")
    await okJson(await adminCall(router, "POST", "/admin/override", { provider_id: null }, asSession("pinned")))
    expect(await servedBy("pinned")).toBe("alpha")
  })

  it("without a session id, a pin set with a key applies to chat requests presenting that key, and to no other", async () => {
    const byKey = async (key: string) => {
      const res = await postJson(router, "/v1/chat/completions", { model: "shared", messages: [{ role: "user", content: "hi" }] }, { authorization: `Bearer ${key}` })
      expect(res.status, await res.clone().text()).toBe(200)
      return res.headers.get("x-router-provider")
    }
    await okJson(await adminCall(router, "POST", "/admin/override", { provider_id: "beta" }))
    expect(await byKey(adminKey)).toBe("beta")
    expect(await byKey("another-key")).toBe("alpha")
    await okJson(await adminCall(router, "POST", "/admin/override", { provider_id: null }))
    expect(await byKey(adminKey)).toBe("alpha")
  })

  it("says so in X-Router-Decision", async () => {
    await okJson(await adminCall(router, "POST", "/admin/override", { provider_id: "beta" }, asSession("shown")))
    const res = await postJson(router, "/v1/chat/completions", { model: "shared", messages: [{ role: "user", content: "hi" }] }, { "x-router-session-id": "shown" })
    expect(res.headers.get("x-router-decision")).toBe("strategy=priority; order=beta+shared,alpha+shared; pin=beta")
  })
})
