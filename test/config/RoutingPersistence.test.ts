/**
 * What the routing config and session pins keep across restarts on the same SQLite file: a config
 * set through the API, the file's `routing` section winning at start (and going when the file drops
 * it), the file's section checked against the providers, and pins per session.
 */
import { afterEach, describe, expect, it } from "vitest"
import { startRouter } from "../kit/TestRouter.js"
import { adminCall, adminKey, asSession, okJson } from "../e2e/admin.js"
import { tracker, withDb } from "./support.js"

const t = tracker()
afterEach(() => t.closeAll())

const endpoint = "http://127.0.0.1:9/v1"
const providers = { alpha: { endpoint, models: ["m1"] }, beta: { endpoint, models: ["m1"] } }
const env = { ROUTER_ADMIN_KEY: adminKey }
const defaults = { strategy: "priority", cost_optimization: false, provider_order: [], failover: [] }

const routingOf = async (router: { readonly url: string }) => okJson(await adminCall(router, "GET", "/admin/routing-config"))

const routingRows = (dbPath: string) =>
  withDb(dbPath, (db) => db.prepare("SELECT id, body, source FROM routing_config").all() as Array<{ id: number; body: string; source: string }>)

const pinRows = (dbPath: string) =>
  withDb(dbPath, (db) => db.prepare("SELECT session_key, provider_id FROM session_overrides ORDER BY session_key").all())

describe("the routing config across restarts", () => {
  it("keeps a config set through the API when the file has no routing section", async () => {
    const config = { strategy: "latency", cost_optimization: true, provider_order: ["beta"], failover: [{ provider_id: "alpha", condition: "health", value: 0.8 }] }
    const first = await t.router({ config: { providers }, env })
    await okJson(await adminCall(first, "PUT", "/admin/routing-config", config))
    await t.stop(first)
    expect(routingRows(first.dbPath).map((r) => [r.id, r.source, JSON.parse(r.body)])).toEqual([[1, "api", config]])

    const second = await t.router({ dir: first.dir, config: { providers }, env })
    expect(await routingOf(second)).toEqual(config)
    // A PATCH after the restart starts from the stored config.
    expect(await okJson(await adminCall(second, "PATCH", "/admin/routing-config", { strategy: "cost" }))).toEqual({ ...config, strategy: "cost" })
    await t.stop(second)

    const third = await t.router({ dir: first.dir, config: { providers }, env })
    expect(await routingOf(third)).toEqual({ ...config, strategy: "cost" })
  })

  it("serves the file's routing section, in the wire form, stored with source 'file'", async () => {
    const router = await t.router({
      config: { providers, routing: { strategy: "cost", cost_optimization: "true", provider_order: ["beta", "alpha"] } },
      env
    })
    expect(await routingOf(router)).toEqual({ ...defaults, strategy: "cost", cost_optimization: true, provider_order: ["beta", "alpha"] })
    await t.stop(router)
    expect(routingRows(router.dbPath).map((r) => r.source)).toEqual(["file"])
  })

  it("lets the file's routing section win at start over a config set through the API", async () => {
    const first = await t.router({ config: { providers }, env })
    await okJson(await adminCall(first, "PUT", "/admin/routing-config", { strategy: "weighted", provider_order: ["alpha"] }))
    await t.stop(first)

    const file = { strategy: "latency", failover: [{ provider_id: "beta", condition: "credit_threshold", value: 10 }] }
    const second = await t.router({ dir: first.dir, config: { providers, routing: file }, env })
    expect(await routingOf(second)).toEqual({ ...defaults, ...file })
    // The API may still change it until the next start…
    await okJson(await adminCall(second, "PATCH", "/admin/routing-config", { strategy: "cost" }))
    expect(await routingOf(second)).toMatchObject({ strategy: "cost" })
    await t.stop(second)

    // …when the file wins again.
    const third = await t.router({ dir: first.dir, config: { providers, routing: file }, env })
    expect(await routingOf(third)).toEqual({ ...defaults, ...file })
    await t.stop(third)
    expect(routingRows(first.dbPath).map((r) => r.source)).toEqual(["file"])
  })

  it("drops the file's stored section when the file no longer has one, back to the defaults", async () => {
    const first = await t.router({ config: { providers, routing: { strategy: "cost" } }, env })
    await t.stop(first)
    const second = await t.router({ dir: first.dir, config: { providers }, env })
    expect(await routingOf(second)).toEqual(defaults)
    await t.stop(second)
    expect(routingRows(first.dbPath)).toEqual([])
  })

  it("refuses to start when the file's routing section names an unknown provider, naming it", async () => {
    const refused = await startRouter({
      config: { providers, routing: { provider_order: ["alpha", "ghost"], failover: [{ provider_id: "phantom", condition: "health", value: 0.5 }] } },
      env
    }).then(
      async (r) => {
        await r.close()
        throw new Error("expected start-up to be refused")
      },
      (e: Error) => e.message
    )
    expect(refused).toContain("routing.provider_order[1]: unknown provider 'ghost'")
    expect(refused).toContain("routing.failover[0].provider_id: unknown provider 'phantom'")
  })

  it("starts with a stored API config naming a provider the file since removed, and keeps it", async () => {
    const first = await t.router({ config: { providers }, env })
    await okJson(await adminCall(first, "PUT", "/admin/routing-config", { provider_order: ["beta", "alpha"] }))
    await t.stop(first)
    const second = await t.router({ dir: first.dir, config: { providers: { alpha: providers.alpha } }, env })
    expect(await routingOf(second)).toEqual({ ...defaults, provider_order: ["beta", "alpha"] })
  })

  it("lets a later PATCH of other fields through with that provider still named, and refuses only one the change brings in", async () => {
    const first = await t.router({ config: { providers }, env })
    await okJson(await adminCall(first, "PUT", "/admin/routing-config", { provider_order: ["beta", "alpha"] }))
    await t.stop(first)
    const second = await t.router({ dir: first.dir, config: { providers: { alpha: providers.alpha } }, env })
    expect(await okJson(await adminCall(second, "PATCH", "/admin/routing-config", { strategy: "cost" }))).toEqual({ ...defaults, strategy: "cost", provider_order: ["beta", "alpha"] })
    const refused = await adminCall(second, "PATCH", "/admin/routing-config", { failover: [{ provider_id: "gamma", condition: "health", value: 0.5 }] })
    expect(refused.status).toBe(400)
    expect(((await refused.json()) as { error: { message: string } }).error.message).toContain("'gamma' (failover[0].provider_id)")
  })

  it("refuses a file whose provider_order names a provider twice, as the admin API does", async () => {
    const refused = await startRouter({ config: { providers, routing: { provider_order: ["alpha", "alpha"] } }, env }).then(
      async (r) => {
        await r.close()
        throw new Error("expected start-up to be refused")
      },
      (e: Error) => e.message
    )
    expect(refused).toContain("routing.provider_order: names 'alpha' more than once")
  })
})

describe("session pins across restarts", () => {
  it("keeps each session's pin, and forgets a cleared one", async () => {
    const first = await t.router({ config: { providers }, env })
    await okJson(await adminCall(first, "POST", "/admin/override", { provider_id: "alpha" }, asSession("one")))
    await okJson(await adminCall(first, "POST", "/admin/override", { provider_id: "beta" }, asSession("two")))
    await okJson(await adminCall(first, "POST", "/admin/override", { provider_id: "beta" }, asSession("three")))
    await okJson(await adminCall(first, "POST", "/admin/override", { provider_id: null }, asSession("three")))
    await t.stop(first)
    expect(pinRows(first.dbPath)).toEqual([
      { session_key: "session:one", provider_id: "alpha" },
      { session_key: "session:two", provider_id: "beta" }
    ])

    const second = await t.router({ dir: first.dir, config: { providers }, env })
    const pin = async (s: string) => okJson(await adminCall(second, "GET", "/admin/override", undefined, asSession(s)))
    expect(await pin("one")).toEqual({ session: "session:one", provider_id: "alpha" })
    expect(await pin("two")).toEqual({ session: "session:two", provider_id: "beta" })
    expect(await pin("three")).toEqual({ session: "session:three", provider_id: null })
  })
})
