/**
 * What the router learns from its providers' own model lists (Venice's `model_spec`, Featherless's
 * paged list and plan availability) shows in `GET /v1/models`, through the official client and raw.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { FakeServer } from "../../src/testing/FakeServer.js"
import type { RouterUnderTest } from "../kit/TestRouter.js"
import { clientOf, harness, requestsTo } from "./helpers.js"

const veniceListing = {
  object: "list",
  type: "all",
  data: [
    {
      id: "llama-3.3-70b",
      type: "text",
      object: "model",
      created: 1733768349,
      owned_by: "venice.ai",
      model_spec: {
        availableContextTokens: 65536,
        maxCompletionTokens: 8192,
        capabilities: {
          supportsFunctionCalling: true,
          supportsReasoning: false,
          supportsResponseSchema: true,
          supportsVision: false
        },
        pricing: { input: { usd: 0.7, diem: 7 }, output: { usd: 2.8, diem: 28 } }
      }
    },
    {
      id: "text-embedding-bge-m3",
      type: "embedding",
      object: "model",
      created: 1733768349,
      owned_by: "venice.ai",
      model_spec: { pricing: { input: { usd: 0.15 }, output: { usd: 0.6 } } }
    }
  ]
}

/** Featherless-style entries, two pages. */
const featherPages: Record<string, unknown> = {
  "": {
    object: "list",
    data: [
      { id: "llama-3.3-70b", object: "model", context_length: 16384, max_completion_tokens: 4096, available_on_current_plan: true },
      { id: "not-configured", object: "model", context_length: 8192, available_on_current_plan: true }
    ],
    has_more: true,
    last_id: "not-configured"
  },
  "not-configured": {
    object: "list",
    data: [{ id: "org/premium-405b", object: "model", context_length: 32768, available_on_current_plan: false }],
    has_more: false
  }
}

describe("model capabilities from discovery", () => {
  const h = harness()
  let venice: FakeServer
  let feather: FakeServer
  let router: RouterUnderTest

  beforeAll(async () => {
    venice = await h.fake({ name: "venice", listing: () => veniceListing })
    feather = await h.fake({ name: "feather", listing: (query) => featherPages[query.get("after") ?? ""] })
    router = await h.router({
      config: {
        providers: {
          // No `models`: Venice's own list is what it serves.
          venice: { endpoint: venice.url, provider_type: "venice", api_key: "venice-key", priority: 1 },
          feather: {
            endpoint: feather.url,
            provider_type: "featherless",
            models: ["llama-3.3-70b", "org/premium-405b"],
            supports_streaming: true,
            priority: 2,
            model_overrides: { "llama-3.3-70b": { supports_tools: false } }
          }
        },
        aliases: { smart: ["feather+llama-3.3-70b", "venice+llama-3.3-70b"] }
      }
    })
    await router.refreshModels()
  })
  afterAll(() => h.closeAll())

  it("lists Venice's context, limits, capabilities and prices with the official client", async () => {
    const models: Array<Record<string, unknown>> = []
    for await (const m of clientOf(router).models.list()) models.push(m as unknown as Record<string, unknown>)
    const byId = (id: string) => models.find((m) => m.id === id)

    expect(byId("venice+llama-3.3-70b")).toEqual({
      id: "venice+llama-3.3-70b",
      object: "model",
      created: expect.any(Number),
      owned_by: "venice",
      context_length: 65536,
      max_output_tokens: 8192,
      capabilities: { tools: true, vision: false, json_schema: true, reasoning: false, embeddings: false },
      pricing: { input: 0.7, output: 2.8 },
      providers: ["venice"]
    })
    expect(byId("venice+text-embedding-bge-m3")).toMatchObject({
      capabilities: { embeddings: true },
      pricing: { input: 0.15, output: 0.6 },
      providers: ["venice"]
    })
    // Featherless's paged list: the configured model's facts, the override winning over them.
    expect(byId("feather+llama-3.3-70b")).toMatchObject({
      context_length: 16384,
      max_output_tokens: 4096,
      capabilities: { tools: false, streaming: true },
      providers: ["feather"]
    })
    expect(byId("feather+llama-3.3-70b")).not.toHaveProperty("pricing")
    // A bare id served by both: every provider in the order tried, the largest context.
    expect(byId("llama-3.3-70b")).toMatchObject({
      owned_by: "sanctum-router",
      context_length: 65536,
      max_output_tokens: 8192,
      capabilities: { tools: true, streaming: true },
      pricing: { input: 0.7, output: 2.8 },
      providers: ["venice", "feather"]
    })
    // An alias: its chain's providers.
    expect(byId("smart")).toMatchObject({ owned_by: "sanctum-router", providers: ["feather", "venice"], context_length: 65536 })
    // A configured list stays what the provider serves.
    expect(byId("feather+not-configured")).toBeUndefined()
    expect(byId("not-configured")).toBeUndefined()
  })

  it("marks a configured model the provider's plan does not include", async () => {
    const premium = await clientOf(router).models.retrieve("feather+org/premium-405b")
    expect(premium).toMatchObject({ id: "feather+org/premium-405b", context_length: 32768, available_on_current_plan: false })
  })

  it("serves the same fields to a raw GET /v1/models, and asked each provider for its list", async () => {
    const res = await fetch(`${router.url}/v1/models`)
    expect(res.status).toBe(200)
    const body = (await res.json()) as { object: string; data: Array<Record<string, unknown>> }
    expect(body.object).toBe("list")
    const ids = body.data.map((m) => m.id)
    expect(ids).toEqual([...ids].sort((a, b) => {
      // Bare ids, then pinned ids by provider, then aliases: sorted within each group.
      const group = (id: unknown) => (String(id) === "smart" ? 2 : String(id).includes("+") ? 1 : 0)
      return group(a) - group(b) || (String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0)
    }))
    expect(body.data.find((m) => m.id === "venice+llama-3.3-70b")).toMatchObject({ context_length: 65536, pricing: { input: 0.7, output: 2.8 } })

    const veniceAsked = requestsTo(venice, "/models")
    expect(veniceAsked.length).toBeGreaterThanOrEqual(1)
    expect(veniceAsked.some((r) => r.headers.authorization === "Bearer venice-key" && r.headers["x-request-id"] === "sanctum-model-discovery")).toBe(true)
    // Both pages of Featherless's list, although its models are configured.
    const featherAsked = requestsTo(feather, "/models").filter((r) => r.headers["x-request-id"] === "sanctum-model-discovery")
    expect(featherAsked.length).toBeGreaterThanOrEqual(2)
  })
})
