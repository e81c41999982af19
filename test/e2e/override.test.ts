/**
 * `POST`/`GET /admin/override`: a session (its `X-Router-Session-Id`, else its key's hash) pinned to a provider, kept per
 * session, cleared with `null`, validated, behind the admin key, and visible to the request path
 * through `Sessions.pinOf`.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { RouterUnderTest } from "../kit/TestRouter.js"
import { adminCall, adminKey, asSession, okJson, startWithContext } from "./admin.js"
import { expectOpenAiError, harness } from "./helpers.js"

const endpoint = "http://127.0.0.1:9/v1"
const providers = { alpha: { endpoint, models: ["m1"] }, beta: { endpoint, models: ["m1"] } }

describe("/admin/override", () => {
  const h = harness()
  let router: RouterUnderTest
  let n = 0
  /** A session id no other test uses (the router is shared by the whole block). */
  const fresh = () => `sess-${process.pid}-${++n}`
  const pin = (session: string, providerId: string | null) => adminCall(router, "POST", "/admin/override", { provider_id: providerId }, asSession(session))
  const pinOf = async (session: string) => okJson(await adminCall(router, "GET", "/admin/override", undefined, asSession(session)))

  beforeAll(async () => {
    router = await h.router({ config: { providers }, env: { ROUTER_ADMIN_KEY: adminKey } })
  })
  afterAll(() => h.closeAll())

  it("pins a session and answers with the session key and the provider; GET returns the pin", async () => {
    const s = fresh()
    expect(await okJson(await pin(s, "beta"))).toEqual({ session: `session:${s}`, provider_id: "beta" })
    expect(await pinOf(s)).toEqual({ session: `session:${s}`, provider_id: "beta" })
  })

  it("answers GET with a null provider for a session without a pin", async () => {
    const s = fresh()
    expect(await pinOf(s)).toEqual({ session: `session:${s}`, provider_id: null })
  })

  it("keeps each session's pin to itself", async () => {
    const [a, b, c] = [fresh(), fresh(), fresh()]
    await okJson(await pin(a, "alpha"))
    await okJson(await pin(b, "beta"))
    expect(await pinOf(a)).toMatchObject({ provider_id: "alpha" })
    expect(await pinOf(b)).toMatchObject({ provider_id: "beta" })
    expect(await pinOf(c)).toMatchObject({ provider_id: null })
    // Re-pinning one session leaves the other alone.
    await okJson(await pin(a, "beta"))
    expect(await pinOf(a)).toMatchObject({ provider_id: "beta" })
    expect(await pinOf(b)).toMatchObject({ provider_id: "beta" })
    await okJson(await pin(b, "alpha"))
    expect(await pinOf(a)).toMatchObject({ provider_id: "beta" })
  })

  it("keeps apart long session ids that share their first 256 characters", async () => {
    const common = `${fresh()}-${"x".repeat(300)}`
    const [a, b] = [`${common}-alice`, `${common}-bob`]
    const pinned = (await okJson(await pin(a, "beta"))) as { session: string }
    expect(await pinOf(a)).toEqual({ session: pinned.session, provider_id: "beta" })
    expect(await pinOf(b)).toMatchObject({ provider_id: null })
    expect((await pinOf(b) as { session: string }).session).not.toBe(pinned.session)
    // A long id's key stays bounded.
    expect(pinned.session.length).toBeLessThanOrEqual("session:".length + 256)
  })

  it("removes the pin with provider_id null (also when there was none)", async () => {
    const s = fresh()
    await okJson(await pin(s, "alpha"))
    expect(await okJson(await pin(s, null))).toEqual({ session: `session:${s}`, provider_id: null })
    expect(await pinOf(s)).toMatchObject({ provider_id: null })
    expect(await okJson(await pin(s, null))).toEqual({ session: `session:${s}`, provider_id: null })
  })

  it("refuses an unknown provider id with a 400 naming it, and keeps the old pin", async () => {
    const s = fresh()
    await okJson(await pin(s, "alpha"))
    const error = await expectOpenAiError(await pin(s, "ghost"), 400)
    expect(error.message).toContain("'ghost'")
    expect(error.message).toContain("alpha, beta")
    expect(error.param).toBe("provider_id")
    expect(error.code).toBe("invalid_value")
    expect(await pinOf(s)).toMatchObject({ provider_id: "alpha" })
  })

  it("without X-Router-Session-Id, keys the pin on a hash of the caller's key (never the key itself), for POST and GET", async () => {
    const auth = { authorization: `Bearer ${adminKey}` }
    for (const headers of [auth, { ...auth, "x-router-session-id": "   " }]) {
      const set = (await okJson(await adminCall(router, "POST", "/admin/override", { provider_id: "beta" }, headers))) as { session: string }
      expect(set.session).toMatch(/^key:[0-9a-f]{32}$/)
      expect(set.session).not.toContain(adminKey)
      expect(await okJson(await adminCall(router, "GET", "/admin/override", undefined, headers))).toEqual({ session: set.session, provider_id: "beta" })
    }
    await okJson(await adminCall(router, "POST", "/admin/override", { provider_id: null }, auth))
    expect(await okJson(await adminCall(router, "GET", "/admin/override", undefined, auth))).toMatchObject({ provider_id: null })
  })

  it("refuses bad bodies: bad JSON (invalid_json), a missing or wrong-typed provider_id, unknown fields", async () => {
    const s = fresh()
    const send = (body: unknown) => adminCall(router, "POST", "/admin/override", body, asSession(s))
    for (const body of ["{", "", "[]", "null"]) {
      expect((await expectOpenAiError(await send(body), 400)).code, body).toBe("invalid_json")
    }
    const missing = await expectOpenAiError(await send({}), 400)
    expect(missing.param).toBe("provider_id")
    expect(missing.code).toBe("missing_required_parameter")
    for (const value of [5, true, "", ["alpha"]]) {
      const error = await expectOpenAiError(await send({ provider_id: value }), 400)
      expect(error.param, JSON.stringify(value)).toBe("provider_id")
      expect(error.code).toBe("invalid_value")
      expect(error.message).toBe("Invalid request body: invalid value for 'provider_id': must be a provider id (a non-empty string) or null")
    }
    const extra = await expectOpenAiError(await send({ provider_id: "alpha", model: "m1" }), 400)
    expect(extra.message).toContain("model")
    expect(await pinOf(s)).toMatchObject({ provider_id: null })
  })

  it("is closed without the admin key (401)", async () => {
    const s = fresh()
    await expectOpenAiError(await adminCall(router, "POST", "/admin/override", { provider_id: "alpha" }, { "x-router-session-id": s }), 401)
    await expectOpenAiError(await adminCall(router, "GET", "/admin/override", undefined, { "x-router-session-id": s }), 401)
    await expectOpenAiError(
      await adminCall(router, "POST", "/admin/override", { provider_id: "alpha" }, { authorization: "Bearer wrong", "x-router-session-id": s }),
      401
    )
    expect(await pinOf(s)).toMatchObject({ provider_id: null })
  })

  it("answers other methods with 405 and the allowed ones", async () => {
    const res = await adminCall(router, "DELETE", "/admin/override", undefined, asSession(fresh()))
    await expectOpenAiError(res, 405)
    expect(res.headers.get("allow")).toBe("GET, HEAD, POST")
  })
})

describe("a session pin", () => {
  it("is what Sessions.pinOf answers for the session's key, once the answer is sent", async () => {
    const daemon = await startWithContext({ providers })
    try {
      await okJson(await adminCall(daemon, "POST", "/admin/override", { provider_id: "beta" }, asSession("agent-7")))
      expect(daemon.sessions.pinOf("session:agent-7")).toBe("beta")
      expect(daemon.sessions.pinOf("session:agent-8")).toBeNull()
      expect(daemon.sessions.pinOf(null)).toBeNull()
      await okJson(await adminCall(daemon, "POST", "/admin/override", { provider_id: null }, asSession("agent-7")))
      expect(daemon.sessions.pinOf("session:agent-7")).toBeNull()
    } finally {
      await daemon.close()
    }
  })
})
