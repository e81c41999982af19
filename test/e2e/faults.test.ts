/**
 * The fault modes of the scripted provider, each driven through the real daemon with the official
 * openai client: the client sees the next provider's answer (or, after the commit point, an
 * in-band error), never a hang or a fake success.
 */
import OpenAI from "openai"
import { afterAll, describe, expect, it } from "vitest"
import type { FakeBehaviour } from "../../src/testing/Script.js"
import { clientOf, harness, postJson, requestsTo, streamedText } from "./helpers.js"

const h = harness()
afterAll(() => h.closeAll())

const pair = async (alpha: FakeBehaviour, alphaTimeouts: Record<string, number> = {}) => {
  const a = await h.fake({ name: "alpha", behaviour: alpha })
  const b = await h.fake({ name: "beta" })
  const router = await h.router({
    config: {
      providers: {
        alpha: { endpoint: a.url, models: ["m1"], priority: 1, timeouts: { first_byte: 0.3, idle: 0.3, total: 5, ...alphaTimeouts } },
        beta: { endpoint: b.url, models: ["m1"], priority: 2 }
      }
    }
  })
  return { a, b, router, client: clientOf(router) }
}

const ask = (client: OpenAI, stream: boolean) =>
  stream
    ? client.chat.completions.create({ model: "m1", messages: [{ role: "user", content: "hi" }], stream: true }).then(streamedText)
    : client.chat.completions.create({ model: "m1", messages: [{ role: "user", content: "hi" }] }).then((r) => r.choices[0]?.message.content)

describe("what the official client does with the router's 5xx", () => {
  /** A client that retries as the openai client does by default, counting what it sends. */
  const retrying = (router: { readonly baseURL: string }) => {
    let sent = 0
    const client = new OpenAI({
      baseURL: router.baseURL,
      apiKey: "unused",
      maxRetries: 2,
      fetch: (url, init) => {
        sent++
        return fetch(url, init)
      }
    })
    return { client, sent: () => sent }
  }

  it("a request no provider can ever serve as it is is not retried (x-should-retry: false)", async () => {
    const a = await h.fake({ name: "alpha" })
    const router = await h.router({ config: { providers: { alpha: { endpoint: a.url, models: ["m1"], supports_tools: false } } } })
    const { client, sent } = retrying(router)
    const error = await client.chat.completions
      .create({ model: "m1", messages: [{ role: "user", content: "hi" }], tools: [{ type: "function", function: { name: "f", parameters: {} } }] })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(OpenAI.APIError)
    const e = error as InstanceType<typeof OpenAI.APIError>
    expect(e.status).toBe(503)
    expect(e.headers?.get("x-should-retry")).toBe("false")
    expect(sent()).toBe(1)
  })

  it("a prompt too long for every window that could take it is OpenAI's 400 context_length_exceeded, not a 503", async () => {
    // Letta compacts an agent's history on this 400 (its code, or "maximum context length" in its
    // message) and sends the request again; a 503 ends the agent's step with an error instead.
    const a = await h.fake({ name: "alpha" })
    const b = await h.fake({ name: "beta" })
    const c = await h.fake({ name: "gamma" })
    const router = await h.router({
      config: {
        providers: {
          alpha: { endpoint: a.url, models: ["m1"], model_overrides: { m1: { context_length: 8192 } } },
          beta: { endpoint: b.url, models: ["m1"], model_overrides: { m1: { context_length: 4096 } } },
          gamma: { endpoint: c.url, models: ["m1"], supports_tools: false }
        },
        aliases: { smart: ["alpha+m1", "beta+m1", "gamma+m1"] }
      }
    })
    const { client, sent } = retrying(router)
    const error = await client.chat.completions
      .create({
        model: "smart",
        messages: [{ role: "system", content: "word ".repeat(9600) }, { role: "user", content: "hi" }],
        tools: [{ type: "function", function: { name: "f", parameters: {} } }],
        max_completion_tokens: 16384
      })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(OpenAI.BadRequestError)
    const e = error as InstanceType<typeof OpenAI.BadRequestError>
    expect(e.status).toBe(400)
    expect(e.code).toBe("context_length_exceeded")
    expect(e.param).toBe("messages")
    expect(e.type).toBe("invalid_request_error")
    // The largest window among the candidates the prompt alone ruled out.
    expect(e.message).toMatch(/maximum context length is 8192 tokens/)
    expect(e.headers?.get("x-router-decision")).toContain("alpha+m1(context 8192 < needed")
    expect(sent()).toBe(1)
    expect([...requestsTo(a), ...requestsTo(b), ...requestsTo(c)]).toHaveLength(0)
    // Short enough, the same request is served.
    const ok = await client.chat.completions.create({ model: "smart", messages: [{ role: "user", content: "hi" }] })
    expect(ok.choices[0]?.message.content).toBeTypeOf("string")
  })

  it("an embeddings batch is held to the window input by input: a long batch is sent, one input too long is a 400", async () => {
    const a = await h.fake({ name: "alpha", models: ["emb-1"] })
    const router = await h.router({
      config: { providers: { alpha: { endpoint: a.url, models: ["emb-1"], model_overrides: { "emb-1": { context_length: 512 } } } } }
    })
    const { client, sent } = retrying(router)
    // Letta embeds up to 2048 chunks of a file at once: 64 of ~300 tokens each, far more than 512 in all.
    const batch = await client.embeddings.create({ model: "emb-1", input: Array.from({ length: 64 }, (_, i) => `${i} ${"word ".repeat(240)}`), encoding_format: "float" })
    expect(batch.data).toHaveLength(64)
    expect(requestsTo(a, "/embeddings")).toHaveLength(1)
    const error = await client.embeddings
      .create({ model: "emb-1", input: ["short", "word ".repeat(600)], encoding_format: "float" })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(OpenAI.BadRequestError)
    const e = error as InstanceType<typeof OpenAI.BadRequestError>
    expect([e.code, e.param]).toEqual(["context_length_exceeded", "input"])
    expect(e.message).toMatch(/maximum context length is 512 tokens/)
    expect(sent()).toBe(2)
    expect(requestsTo(a, "/embeddings")).toHaveLength(1)
  })

  it("a prompt too long for the one candidate not resting is still a 503 with Retry-After: the other may take it later", async () => {
    const a = await h.fake({ name: "alpha", behaviour: { mode: "status", status: 429, retryAfter: 30 } })
    const b = await h.fake({ name: "beta" })
    const router = await h.router({
      config: {
        providers: {
          alpha: { endpoint: a.url, models: ["m1"], priority: 1 },
          beta: { endpoint: b.url, models: ["m1"], priority: 2, model_overrides: { m1: { context_length: 4096 } } }
        }
      }
    })
    // alpha says 429 and rests.
    expect((await postJson(router, "/v1/chat/completions", { model: "alpha+m1", messages: [{ role: "user", content: "hi" }] })).status).toBe(502)
    const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "word ".repeat(9600) }] })
    expect(res.status).toBe(503)
    expect(res.headers.get("retry-after")).not.toBeNull()
    expect((await res.json() as { error: { code: string } }).error.code).toBe("no_available_provider")
  })

  it("a rate-limited provider's Retry-After reaches the client, on the 502 and on the 503 after it", async () => {
    const a = await h.fake({ name: "alpha", behaviour: { mode: "status", status: 429, retryAfter: 30 } })
    const router = await h.router({ config: { providers: { alpha: { endpoint: a.url, models: ["m1"] } } } })
    const body = { model: "m1", messages: [{ role: "user", content: "hi" }] }
    const first = await postJson(router, "/v1/chat/completions", body)
    expect(first.status).toBe(502)
    expect(first.headers.get("retry-after")).toBe("30")
    const second = await postJson(router, "/v1/chat/completions", body)
    expect(second.status).toBe(503)
    expect(Number(second.headers.get("retry-after"))).toBeGreaterThanOrEqual(29)
    expect(Number(second.headers.get("retry-after"))).toBeLessThanOrEqual(30)
    expect(requestsTo(a)).toHaveLength(1)
  })
})

describe("fault modes through the real server", () => {
  for (const stream of [false, true]) {
    const kind = stream ? "streamed" : "plain"

    it(`(${kind}) an error object inside a 200 fails over, never passed on as success`, async () => {
      const { client } = await pair({ mode: "error200", code: 503 })
      expect(await ask(client, stream)).toBe("Hello from beta!")
    })

    it(`(${kind}) a slow first byte fails over after first_byte`, async () => {
      const { a, client } = await pair({ mode: "ok", firstByteMs: 2000 })
      expect(await ask(client, stream)).toBe("Hello from beta!")
      // The slow call was closed, not left running.
      await a.waitForAbort()
    })

    it(`(${kind}) a 429 with Retry-After fails over, and the attempts say rate_limited`, async () => {
      const { router } = await pair({ mode: "status", status: 429, retryAfter: 30 })
      const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "hi" }], stream })
      expect(res.status).toBe(200)
      expect(res.headers.get("x-router-attempts")).toBe("alpha:rate_limited,beta:ok")
      // Within the window, alpha is skipped without being called.
      const again = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "hi" }], stream })
      expect(again.headers.get("x-router-attempts")).toBe("alpha:rate_limited,beta:ok")
    })
  }

  it("a stream that stalls after its preamble fails over on idle, invisibly", async () => {
    const { client } = await pair({ mode: "stall", afterChunks: 1 })
    expect(await ask(client, true)).toBe("Hello from beta!")
  })

  it("a stream that stalls after its first content ends with an error event on idle, and no [DONE]", async () => {
    const { b, router } = await pair({ mode: "stall", afterChunks: 2, content: "one two three" })
    const res = await postJson(router, "/v1/chat/completions", { model: "m1", messages: [{ role: "user", content: "hi" }], stream: true })
    const text = await res.text()
    expect(text).toContain("\"content\":\"one \"")
    expect(text).not.toContain("[DONE]")
    const last = JSON.parse(text.trim().split("\n\n").at(-1)!.slice("data: ".length)) as { error: { code: string; message: string } }
    expect(last.error.code).toBe("stream_interrupted")
    expect(last.error.message).toContain("stalled")
    expect(requestsTo(b)).toHaveLength(0)
  })
})
