/**
 * `GET /health` and the model list: bare ids, `provider+model` ids, aliases, discovery from a
 * provider's own `GET /models`, and retrieving ids that contain `/`.
 */
import { request } from "node:http"
import { NotFoundError } from "openai"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { FakeServer } from "../../src/testing/FakeServer.js"
import type { RouterUnderTest } from "../kit/TestRouter.js"
import { clientOf, expectOpenAiError, harness, requestsTo } from "./helpers.js"

const slashModel = "meta-llama/Llama-3.3-70B-Instruct"

describe("health and models", () => {
  const h = harness()
  let alpha: FakeServer
  let beta: FakeServer
  let gamma: FakeServer
  let router: RouterUnderTest

  beforeAll(async () => {
    alpha = await h.fake({ name: "alpha", models: ["ignored-because-configured"] })
    beta = await h.fake({ name: "beta" })
    gamma = await h.fake({ name: "gamma", models: ["g-small", "acme/g-large"] })
    router = await h.router({
      config: {
        providers: {
          alpha: { endpoint: alpha.url, models: ["m1", slashModel], priority: 1 },
          beta: { endpoint: beta.url, models: ["m1", "m2"], priority: 2 },
          // No `models`: the list comes from gamma's own GET /models.
          gamma: { endpoint: gamma.url, api_key: "gamma-key", priority: 3 }
        },
        aliases: { fast: "beta+m2", smart: ["alpha+m1", "m2"] }
      }
    })
  })
  afterAll(() => h.closeAll())

  it("GET /health answers {status: ok} without a key", async () => {
    const res = await fetch(`${router.url}/health`)
    expect(res.status).toBe(200)
    expect(res.headers.get("content-type")).toContain("application/json")
    expect(await res.json()).toEqual({ status: "ok" })
  })

  it("lists bare ids once, every provider+model id and the aliases", async () => {
    await router.refreshModels()
    const client = clientOf(router)
    const models = []
    for await (const m of client.models.list()) models.push(m)
    const ids = models.map((m) => m.id)

    // Bare ids, each once even when several providers serve it, owned by the router.
    for (const id of ["m1", "m2", slashModel, "g-small", "acme/g-large"]) {
      expect(ids.filter((x) => x === id), id).toHaveLength(1)
      expect(models.find((m) => m.id === id)?.owned_by).toBe("sanctum-router")
    }
    // Every provider+model pair, owned by its provider.
    const pinned: Array<[string, string]> = [
      ["alpha+m1", "alpha"],
      [`alpha+${slashModel}`, "alpha"],
      ["beta+m1", "beta"],
      ["beta+m2", "beta"],
      ["gamma+g-small", "gamma"],
      ["gamma+acme/g-large", "gamma"]
    ]
    for (const [id, owner] of pinned) {
      expect(models.filter((m) => m.id === id), id).toHaveLength(1)
      expect(models.find((m) => m.id === id)?.owned_by).toBe(owner)
    }
    // Aliases, owned by the router.
    for (const id of ["fast", "smart"]) {
      expect(ids.filter((x) => x === id), id).toHaveLength(1)
      expect(models.find((m) => m.id === id)?.owned_by).toBe("sanctum-router")
    }
    // Nothing else: a configured list wins over what the provider would report.
    expect(ids).not.toContain("ignored-because-configured")
    expect(ids).toHaveLength(5 + 6 + 2)
    for (const m of models) {
      expect(m.object).toBe("model")
      expect(typeof m.created).toBe("number")
    }
  })

  it("discovers a provider's models from its GET /models, with the provider's key", async () => {
    await router.refreshModels()
    const discovery = requestsTo(gamma, "/models")
    expect(discovery.length).toBeGreaterThanOrEqual(1)
    expect(discovery[0]?.method).toBe("GET")
    expect(discovery[0]?.headers.authorization).toBe("Bearer gamma-key")
    // Providers with a configured list are asked for /models too (by health checks, and by
    // discovery for what it says of their models), but what they answer does not change their
    // list (see "a configured list wins" above).
    const listed = (await clientOf(router).models.list()).data.map((m) => m.id)
    expect(listed).not.toContain("ignored-because-configured")

    // A discovered model is routable, bare and pinned.
    const client = clientOf(router)
    const { data, response } = await client.chat.completions
      .create({ model: "acme/g-large", messages: [{ role: "user", content: "hi" }] })
      .withResponse()
    expect(data.choices[0]?.message.content).toBe("Hello from gamma!")
    expect(response.headers.get("x-router-provider")).toBe("gamma")
    expect(response.headers.get("x-router-upstream-model")).toBe("acme/g-large")
  })

  it("retrieves models whose ids contain '/' and '+'", async () => {
    await router.refreshModels()
    const client = clientOf(router)
    const bare = await client.models.retrieve(slashModel)
    expect(bare).toMatchObject({ id: slashModel, object: "model", owned_by: "sanctum-router" })
    const pinned = await client.models.retrieve(`alpha+${slashModel}`)
    expect(pinned).toMatchObject({ id: `alpha+${slashModel}`, object: "model", owned_by: "alpha" })
    const discovered = await client.models.retrieve("gamma+acme/g-large")
    expect(discovered).toMatchObject({ id: "gamma+acme/g-large", owned_by: "gamma" })
    const alias = await client.models.retrieve("smart")
    expect(alias).toMatchObject({ id: "smart", owned_by: "sanctum-router" })

    // The same ids, unencoded in the path, as a curl user would send them.
    const raw = await fetch(`${router.url}/v1/models/${slashModel}`)
    expect(raw.status).toBe(200)
    expect(await raw.json()).toMatchObject({ id: slashModel })
    const rawPinned = await fetch(`${router.url}/v1/models/alpha+${slashModel}`)
    expect(rawPinned.status).toBe(200)
    expect(await rawPinned.json()).toMatchObject({ id: `alpha+${slashModel}`, owned_by: "alpha" })
  })

  it("takes the id from the path the route matched: a doubled slash or an absolute-form target", async () => {
    // fetch tidies such paths; node:http sends them as written, as some clients and proxies do.
    const get = (path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request(`${router.url}/`, { path }, (res) => {
          const chunks: Array<Buffer> = []
          res.on("data", (c: Buffer) => chunks.push(c))
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }))
        })
        req.on("error", reject)
        req.end()
      })
    for (const path of ["/v1//models/m1", `${router.url}/v1/models/m1`, "/v1/models/m%31", `/v1//models/${slashModel}`]) {
      const { status, body } = await get(path)
      expect({ path, status }).toEqual({ path, status: 200 })
      expect(JSON.parse(body)).toMatchObject({ id: path.endsWith(slashModel) ? slashModel : "m1", object: "model" })
    }
  })

  it("answers 404 model_not_found for an unknown model id", async () => {
    const client = clientOf(router)
    const error = await client.models.retrieve("no/such-model").catch((e: unknown) => e)
    expect(error).toBeInstanceOf(NotFoundError)
    expect((error as NotFoundError).status).toBe(404)
    expect((error as NotFoundError).code).toBe("model_not_found")

    const res = await fetch(`${router.url}/v1/models/no-such-model`)
    const body = await expectOpenAiError(res, 404)
    expect(body.code).toBe("model_not_found")
    expect(body.message).toContain("no-such-model")
  })
})
