/**
 * Successful routing through the official client: chat (plain, streamed, tool calls), fields the
 * router does not know reaching the upstream untouched, embeddings, and how a model id picks its
 * provider (priority, `provider+model` pinning, ids with `/`, aliases in their configured order).
 */
import type OpenAI from "openai"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import type { FakeServer } from "../../src/testing/FakeServer.js"
import { chatChunks, embedding } from "../../src/testing/Script.js"
import type { RouterUnderTest } from "../kit/TestRouter.js"
import { clientOf, harness, lastRequest, loopbackServer, newRequestId, recordOf, requestsTo, streamedText } from "./helpers.js"

const tools: Array<OpenAI.Chat.Completions.ChatCompletionTool> = [
  {
    type: "function",
    function: {
      name: "lookup_weather",
      description: "Looks up the weather",
      parameters: { type: "object", properties: { query: { type: "string" } }, required: ["query"] }
    }
  },
  { type: "function", function: { name: "second_tool", parameters: { type: "object", properties: {} } } }
]

describe("chat, embeddings and model resolution", () => {
  const h = harness()
  let alpha: FakeServer
  let beta: FakeServer
  let router: RouterUnderTest
  let client: OpenAI

  beforeAll(async () => {
    alpha = await h.fake({ name: "alpha" })
    beta = await h.fake({ name: "beta" })
    router = await h.router({
      config: {
        providers: {
          alpha: { endpoint: alpha.url, api_key: "alpha-key", models: ["m1", "org/model-x", "emb-1"], priority: 1 },
          beta: { endpoint: beta.url, api_key: "beta-key", models: ["m1", "m2", "big-model"], priority: 2 }
        },
        aliases: {
          // Beta first although alpha has the lower priority: an alias keeps its order.
          chain: ["beta+m1", "alpha+m1"],
          renamed: "beta+big-model",
          mixed: ["m2", "alpha+org/model-x"]
        }
      }
    })
    client = clientOf(router)
  })
  beforeEach(() => {
    alpha.setBehaviour({ mode: "ok" })
    beta.setBehaviour({ mode: "ok" })
  })
  afterAll(() => h.closeAll())

  describe("chat completions", () => {
    it("answers a non-streaming request with the router's headers", async () => {
      const requestId = newRequestId("plain")
      const { data, response } = await client.chat.completions
        .create({ model: "m1", messages: [{ role: "user", content: "hello there" }] }, { headers: { "x-request-id": requestId } })
        .withResponse()
      expect(response.status).toBe(200)
      expect(data.object).toBe("chat.completion")
      expect(data.model).toBe("m1")
      expect(data.choices).toHaveLength(1)
      expect(data.choices[0]?.message).toMatchObject({ role: "assistant", content: "Hello from alpha!" })
      expect(data.choices[0]?.finish_reason).toBe("stop")
      expect(data.usage?.total_tokens).toBeGreaterThan(0)
      expect(response.headers.get("x-router-provider")).toBe("alpha")
      expect(response.headers.get("x-router-upstream-model")).toBe("m1")
      expect(response.headers.get("x-router-attempts")).toBe("alpha:ok")
      expect(response.headers.get("x-request-id")).toBe(requestId)
      // The upstream gets the request id and the provider's own key.
      const upstream = lastRequest(alpha)
      expect(upstream.headers["x-request-id"]).toBe(requestId)
      expect(upstream.headers.authorization).toBe("Bearer alpha-key")
      expect(upstream.body).toMatchObject({ model: "m1", messages: [{ role: "user", content: "hello there" }] })

      const record = await recordOf(router, requestId)
      expect(record).toMatchObject({ endpoint: "chat", model: "m1", provider: "alpha", upstream_model: "m1", status: 200, outcome: "ok", stream: 0 })
      expect(record.prompt_tokens).toBeGreaterThan(0)
    })

    it("makes up a request id when the client sends none", async () => {
      const { response } = await client.chat.completions
        .create({ model: "m1", messages: [{ role: "user", content: "hi" }] })
        .withResponse()
      const id = response.headers.get("x-request-id")
      expect(id).toMatch(/^[\x21-\x7e]{8,}$/)
      expect(lastRequest(alpha).headers["x-request-id"]).toBe(id)
    })

    it("streams an answer whose chunks reassemble to the text, with a usage chunk when asked", async () => {
      alpha.setBehaviour({ mode: "ok", content: "The quick brown fox jumps over the lazy dog." })
      const { data: stream, response } = await client.chat.completions
        .create({
          model: "m1",
          messages: [{ role: "user", content: "tell me about foxes" }],
          stream: true,
          stream_options: { include_usage: true }
        })
        .withResponse()
      expect(response.headers.get("content-type")).toContain("text/event-stream")
      expect(response.headers.get("x-router-provider")).toBe("alpha")
      expect(response.headers.get("x-router-attempts")).toBe("alpha:ok")
      const chunks: Array<OpenAI.Chat.Completions.ChatCompletionChunk> = []
      for await (const chunk of stream) chunks.push(chunk)
      const text = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")
      expect(text).toBe("The quick brown fox jumps over the lazy dog.")
      const contentChunks = chunks.filter((c) => (c.choices[0]?.delta.content ?? "") !== "")
      expect(contentChunks.length).toBeGreaterThan(3)
      expect(chunks.some((c) => c.choices[0]?.finish_reason === "stop")).toBe(true)
      const usage = chunks.filter((c) => c.usage != null)
      expect(usage).toHaveLength(1)
      expect(usage[0]?.choices).toEqual([])
      expect(usage[0]?.usage?.completion_tokens).toBeGreaterThan(0)
      expect(usage[0]?.usage?.total_tokens).toBe((usage[0]?.usage?.prompt_tokens ?? 0) + (usage[0]?.usage?.completion_tokens ?? 0))
      expect(lastRequest(alpha).body).toMatchObject({ stream: true, stream_options: { include_usage: true } })
    })

    it("answers through an informational 103 (Early Hints) that comes before the response, plain and streamed", async () => {
      const upstream = await loopbackServer((req, res, raw) => {
        if (req.method !== "POST") return void res.writeHead(404).end()
        const body = JSON.parse(raw) as Record<string, unknown>
        res.writeEarlyHints({ link: "</hint>; rel=preload" })
        if (body.stream !== true) {
          res.writeHead(200, { "content-type": "application/json" })
          return void res.end(JSON.stringify({ id: "c1", object: "chat.completion", created: 0, model: "m-hints", choices: [{ index: 0, message: { role: "assistant", content: "After a hint." }, finish_reason: "stop" }] }))
        }
        res.writeHead(200, { "content-type": "text/event-stream" })
        res.end(chatChunks("m-hints", "After a hint.", body).join(""))
      })
      const hintsRouter = await h.router({ config: { providers: { hints: { endpoint: upstream.url, models: ["m-hints"] } } } })
      try {
        const hinted = clientOf(hintsRouter)
        const { data, response } = await hinted.chat.completions.create({ model: "m-hints", messages: [{ role: "user", content: "hi" }] }).withResponse()
        expect(response.headers.get("x-router-attempts")).toBe("hints:ok")
        expect(data.choices[0]?.message.content).toBe("After a hint.")
        const { data: stream, response: streamed } = await hinted.chat.completions
          .create({ model: "m-hints", messages: [{ role: "user", content: "hi" }], stream: true })
          .withResponse()
        expect(streamed.headers.get("x-router-attempts")).toBe("hints:ok")
        expect(await streamedText(stream)).toBe("After a hint.")
      } finally {
        await upstream.close()
      }
    })

    it("streams from an upstream that ends its SSE lines with a bare \\r, each event split across writes", async () => {
      // SSE allows `\r`, `\n` or `\r\n` line endings; a server using `\r` alone must not look silent.
      const upstream = await loopbackServer((req, res, raw) => {
        if (req.method !== "POST") return void res.writeHead(404).end()
        const body = JSON.parse(raw) as Record<string, unknown>
        const events = chatChunks(String(body.model), "Carriage returns only.", body).map((e) => e.replace(/\n/g, "\r"))
        res.writeHead(200, { "content-type": "text/event-stream" })
        const pieces = events.flatMap((e) => [e.slice(0, e.length - 1), e.slice(e.length - 1)])
        const step = (i: number): void => {
          if (i === pieces.length) return void res.end()
          res.write(pieces[i], () => setImmediate(() => step(i + 1)))
        }
        step(0)
      })
      const crRouter = await h.router({
        config: { providers: { cr: { endpoint: upstream.url, models: ["m-cr"], timeouts: { connect: 1, first_byte: 2, total: 5 } } } }
      })
      try {
        const { data: stream, response } = await clientOf(crRouter).chat.completions
          .create({ model: "m-cr", messages: [{ role: "user", content: "hi" }], stream: true })
          .withResponse()
        expect(response.headers.get("x-router-attempts")).toBe("cr:ok")
        expect(await streamedText(stream)).toBe("Carriage returns only.")
      } finally {
        await upstream.close()
      }
    })

    it("streams a whole answer from an upstream that ignores stream: true, tool calls and usage included", async () => {
      // Without this the client's stream parser would find no events in a JSON body: an empty answer.
      const upstream = await loopbackServer((req, res) => {
        if (req.method !== "POST") return void res.writeHead(404).end()
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({
          id: "chatcmpl-whole",
          object: "chat.completion",
          created: 1,
          model: "m-whole",
          choices: [{
            index: 0,
            message: { role: "assistant", content: "All at once.", tool_calls: [{ id: "call_1", type: "function", function: { name: "lookup_weather", arguments: "{\"query\":\"Oslo\"}" } }] },
            finish_reason: "tool_calls"
          }],
          usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 }
        }))
      })
      const wholeRouter = await h.router({ config: { providers: { whole: { endpoint: upstream.url, models: ["m-whole"] } } } })
      try {
        const { data: stream, response } = await clientOf(wholeRouter).chat.completions
          .create({ model: "m-whole", messages: [{ role: "user", content: "hi" }], tools, stream: true, stream_options: { include_usage: true } })
          .withResponse()
        expect(response.headers.get("content-type")).toContain("text/event-stream")
        const chunks: Array<OpenAI.Chat.Completions.ChatCompletionChunk> = []
        for await (const chunk of stream) chunks.push(chunk)
        expect(chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")).toBe("All at once.")
        expect(chunks[0]?.choices[0]?.delta.tool_calls).toEqual([{ index: 0, id: "call_1", type: "function", function: { name: "lookup_weather", arguments: "{\"query\":\"Oslo\"}" } }])
        expect(chunks[0]?.choices[0]?.finish_reason).toBe("tool_calls")
        expect(chunks[chunks.length - 1]?.usage).toEqual({ prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 })
      } finally {
        await upstream.close()
      }
    })

    it("streams without a usage chunk when none was asked for, ending with [DONE]", async () => {
      const res = await fetch(`${router.baseURL}/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "m1", messages: [{ role: "user", content: "hi" }], stream: true })
      })
      expect(res.status).toBe(200)
      const text = await res.text()
      const events = text.split("\n\n").filter((e) => e.trim() !== "")
      expect(events[events.length - 1]).toBe("data: [DONE]")
      const payloads = events.slice(0, -1).map((e) => JSON.parse(e.replace(/^data: /, "")) as OpenAI.Chat.Completions.ChatCompletionChunk)
      expect(payloads.every((p) => p.usage == null)).toBe(true)
      expect(payloads.map((p) => p.choices[0]?.delta.content ?? "").join("")).toBe("Hello from alpha!")
    })

    it("returns tool calls in a non-streamed answer", async () => {
      const res = await client.chat.completions.create({
        model: "m1",
        messages: [{ role: "user", content: "weather in Oslo" }],
        tools,
        tool_choice: "auto"
      })
      const choice = res.choices[0]
      expect(choice?.finish_reason).toBe("tool_calls")
      expect(choice?.message.content).toBeNull()
      expect(choice?.message.tool_calls).toHaveLength(1)
      const call = choice?.message.tool_calls?.[0]
      expect(call?.type).toBe("function")
      if (call?.type !== "function") throw new Error("expected a function call")
      expect(call.id).toBe("call_fake_1")
      expect(call.function.name).toBe("lookup_weather")
      expect(JSON.parse(call.function.arguments)).toEqual({ query: "weather in Oslo" })
      // The tools went upstream as sent.
      expect((lastRequest(alpha).body as { tools: unknown }).tools).toEqual(tools)
    })

    it("carries an agent's tool round trip (as Letta sends it) upstream untouched, both turns", async () => {
      const system = { role: "system" as const, content: "You are a memory-augmented agent." }
      const user = { role: "user" as const, content: "What is the weather in Oslo?", name: "human" }
      const turn1: OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming = {
        model: "m1",
        messages: [system, user],
        tools,
        tool_choice: "required",
        parallel_tool_calls: false,
        user: "agent-42",
        temperature: 0.7,
        max_completion_tokens: 512
      }
      const first = await client.chat.completions.create(turn1)
      const call = first.choices[0]?.message.tool_calls?.[0]
      if (call?.type !== "function") throw new Error("expected a function call")
      expect(lastRequest(alpha).body).toEqual(turn1)
      // The second turn: the assistant's call (content null) and the tool's result go back, streamed.
      const history: Array<OpenAI.Chat.Completions.ChatCompletionMessageParam> = [
        system,
        user,
        { role: "assistant", content: null, tool_calls: [{ id: call.id, type: "function", function: { name: call.function.name, arguments: call.function.arguments } }] },
        { role: "tool", tool_call_id: call.id, content: "{\"temperature_c\": 4, \"sky\": \"overcast\"}" }
      ]
      const stream = await client.chat.completions.create({
        model: "m1",
        messages: history,
        tools,
        tool_choice: "none",
        stream: true,
        stream_options: { include_usage: true }
      })
      let text = ""
      let usage = 0
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? ""
        usage += chunk.usage?.total_tokens ?? 0
      }
      expect(text).toBe("Hello from alpha!")
      expect(usage).toBeGreaterThan(0)
      expect(lastRequest(alpha).body).toEqual({ model: "m1", messages: history, tools, tool_choice: "none", stream: true, stream_options: { include_usage: true } })
    })

    it("streams tool calls whose pieces reassemble to the call", async () => {
      const stream = await client.chat.completions.create({
        model: "m1",
        messages: [{ role: "user", content: "weather in Bergen" }],
        tools,
        stream: true
      })
      const calls = new Map<number, { id?: string; name: string; arguments: string }>()
      let finish: string | null = null
      let deltas = 0
      for await (const chunk of stream) {
        const choice = chunk.choices[0]
        if (choice?.finish_reason) finish = choice.finish_reason
        for (const tc of choice?.delta.tool_calls ?? []) {
          deltas++
          const entry = calls.get(tc.index) ?? { name: "", arguments: "" }
          if (tc.id !== undefined) entry.id = tc.id
          entry.name += tc.function?.name ?? ""
          entry.arguments += tc.function?.arguments ?? ""
          calls.set(tc.index, entry)
        }
      }
      expect(deltas).toBeGreaterThan(1)
      expect(finish).toBe("tool_calls")
      expect([...calls.keys()]).toEqual([0])
      expect(calls.get(0)?.id).toBe("call_fake_1")
      expect(calls.get(0)?.name).toBe("lookup_weather")
      expect(JSON.parse(calls.get(0)?.arguments ?? "")).toEqual({ query: "weather in Bergen" })
    })

    it("passes fields it does not know upstream unchanged (body forwarded as is)", async () => {
      const body = {
        model: "m1",
        messages: [
          { role: "system", content: "be terse", name: "sys" },
          { role: "user", content: [{ type: "text", text: "give me json" }] }
        ],
        temperature: 0.37,
        top_p: 0.9,
        seed: 424242,
        max_tokens: 77,
        stop: ["\n\n", "END"],
        logit_bias: { "50256": -100 },
        user: "user-1234",
        response_format: {
          type: "json_schema",
          json_schema: { name: "answer", strict: true, schema: { type: "object", properties: { a: { type: "number" } } } }
        },
        venice_parameters: { include_venice_system_prompt: false, character_slug: "alan", nested: { list: [1, 2.5, null, "x"] } }
      }
      await client.chat.completions.create(body as unknown as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming)
      expect(lastRequest(alpha).body).toEqual(body)
    })

    it("keeps every unknown field when it must rewrite the model name (pinned id)", async () => {
      const extras = {
        temperature: 0,
        seed: 7,
        response_format: { type: "json_object" },
        venice_parameters: { enable_web_search: "auto", strip_thinking_response: true }
      }
      const body = { model: "beta+m2", messages: [{ role: "user", content: "hi" }], ...extras }
      const { response } = await client.chat.completions
        .create(body as unknown as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming)
        .withResponse()
      expect(response.headers.get("x-router-provider")).toBe("beta")
      expect(lastRequest(beta).body).toEqual({ ...body, model: "m2" })
    })
  })

  it("creates embeddings through the client", async () => {
    const before = requestsTo(beta, "/embeddings").length
    const { data, response } = await client.embeddings
      .create({ model: "emb-1", input: ["first text", "second text"], encoding_format: "float" })
      .withResponse()
    expect(response.headers.get("x-router-provider")).toBe("alpha")
    expect(response.headers.get("x-router-upstream-model")).toBe("emb-1")
    expect(data.object).toBe("list")
    expect(data.model).toBe("emb-1")
    expect(data.data.map((d) => d.index)).toEqual([0, 1])
    expect(data.data[0]?.embedding).toEqual(embedding("first text"))
    expect(data.data[1]?.embedding).toEqual(embedding("second text"))
    expect(lastRequest(alpha, "/embeddings").body).toEqual({ model: "emb-1", input: ["first text", "second text"], encoding_format: "float" })
    expect(requestsTo(beta, "/embeddings").length).toBe(before)

    const single = await client.embeddings.create({ model: "alpha+emb-1", input: "just one", encoding_format: "float" })
    expect(single.data).toHaveLength(1)
    expect(single.data[0]?.embedding).toEqual(embedding("just one"))
    expect(lastRequest(alpha, "/embeddings").body).toMatchObject({ model: "emb-1", input: "just one" })
  })

  it("gives the client's default base64 vectors from a backend that ignores encoding_format and sends numbers", async () => {
    // Several local servers answer with arrays of numbers whatever was asked; the official client
    // asks for base64 and decodes every vector from it.
    const asked: Array<unknown> = []
    const upstream = await loopbackServer((req, res, raw) => {
      if (req.method !== "POST") return void res.writeHead(404).end()
      const body = JSON.parse(raw) as { readonly encoding_format?: unknown }
      asked.push(body.encoding_format)
      res.writeHead(200, { "content-type": "application/json" })
      // Spaced as Python's json.dumps writes it.
      res.end(`{"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1, 2.25]}, {"object": "embedding", "index": 1, "embedding": [1e-3, 0, 3]}], "model": "emb-num", "usage": {"prompt_tokens": 4, "total_tokens": 4}}`)
    })
    const numbersRouter = await h.router({ config: { providers: { numbers: { endpoint: upstream.url, models: ["emb-num"] } } } })
    try {
      const client = clientOf(numbersRouter)
      const defaulted = await client.embeddings.create({ model: "emb-num", input: ["one", "two"] })
      expect(asked).toEqual(["base64"])
      expect(defaulted.data.map((d) => d.embedding)).toEqual([[0.5, -1, 2.25], [Math.fround(1e-3), 0, 3]])
      expect(defaulted.model).toBe("emb-num")
      expect(defaulted.usage).toEqual({ prompt_tokens: 4, total_tokens: 4 })
      // Asked for floats, the numbers pass as they came.
      const floats = await client.embeddings.create({ model: "emb-num", input: ["one", "two"], encoding_format: "float" })
      expect(floats.data.map((d) => d.embedding)).toEqual([[0.5, -1, 2.25], [1e-3, 0, 3]])
    } finally {
      await upstream.close()
    }
  })

  describe("model resolution", () => {
    it("sends a bare id to the provider with the lowest priority", async () => {
      const { response } = await client.chat.completions.create({ model: "m1", messages: [{ role: "user", content: "x" }] }).withResponse()
      expect(response.headers.get("x-router-provider")).toBe("alpha")
    })

    it("pins a provider with provider+model, even one with a higher priority number", async () => {
      const alphaBefore = requestsTo(alpha).length
      const { data, response } = await client.chat.completions
        .create({ model: "beta+m1", messages: [{ role: "user", content: "x" }] })
        .withResponse()
      expect(data.choices[0]?.message.content).toBe("Hello from beta!")
      expect(response.headers.get("x-router-provider")).toBe("beta")
      expect(response.headers.get("x-router-upstream-model")).toBe("m1")
      expect(response.headers.get("x-router-attempts")).toBe("beta:ok")
      // The upstream is asked for its own model name, not the pinned id.
      expect((lastRequest(beta).body as { model: string }).model).toBe("m1")
      expect(requestsTo(alpha)).toHaveLength(alphaBefore)
    })

    it("does not fail a pinned request over to another provider", async () => {
      beta.setBehaviour({ mode: "status", status: 500 })
      const alphaBefore = requestsTo(alpha).length
      const error = await client.chat.completions.create({ model: "beta+m1", messages: [{ role: "user", content: "x" }] }).catch((e: unknown) => e)
      expect((error as { status?: number }).status).toBe(502)
      expect(requestsTo(alpha)).toHaveLength(alphaBefore)
    })

    it("routes model ids containing '/', bare and pinned", async () => {
      const bare = await client.chat.completions
        .create({ model: "org/model-x", messages: [{ role: "user", content: "x" }] })
        .withResponse()
      expect(bare.response.headers.get("x-router-provider")).toBe("alpha")
      expect(bare.response.headers.get("x-router-upstream-model")).toBe("org/model-x")
      expect(bare.data.model).toBe("org/model-x")
      expect((lastRequest(alpha).body as { model: string }).model).toBe("org/model-x")

      const pinned = await client.chat.completions
        .create({ model: "alpha+org/model-x", messages: [{ role: "user", content: "x" }] })
        .withResponse()
      expect(pinned.response.headers.get("x-router-upstream-model")).toBe("org/model-x")
      expect((lastRequest(alpha).body as { model: string }).model).toBe("org/model-x")
    })

    it("tries an alias's targets in their configured order", async () => {
      const first = await client.chat.completions.create({ model: "chain", messages: [{ role: "user", content: "x" }] }).withResponse()
      expect(first.data.choices[0]?.message.content).toBe("Hello from beta!")
      expect(first.response.headers.get("x-router-attempts")).toBe("beta:ok")

      // When the first target fails, the next one in the alias's order serves.
      beta.setBehaviour({ mode: "status", status: 503 })
      const requestId = newRequestId("alias")
      const second = await client.chat.completions
        .create({ model: "chain", messages: [{ role: "user", content: "x" }] }, { headers: { "x-request-id": requestId } })
        .withResponse()
      expect(second.data.choices[0]?.message.content).toBe("Hello from alpha!")
      expect(second.response.headers.get("x-router-attempts")).toBe("beta:server_error,alpha:ok")
      const record = await recordOf(router, requestId)
      expect(record.model).toBe("chain")
      expect(record.provider).toBe("alpha")
    })

    it("resolves an alias to another upstream model name and rewrites the body for it", async () => {
      const { data, response } = await client.chat.completions
        .create({ model: "renamed", messages: [{ role: "user", content: "x" }], temperature: 0.5 })
        .withResponse()
      expect(response.headers.get("x-router-provider")).toBe("beta")
      expect(response.headers.get("x-router-upstream-model")).toBe("big-model")
      expect(data.model).toBe("big-model")
      expect(lastRequest(beta).body).toEqual({ model: "big-model", messages: [{ role: "user", content: "x" }], temperature: 0.5 })
    })

    it("expands a bare alias target to the providers serving it, then the next target", async () => {
      beta.setBehaviour({ mode: "reset" })
      const { data, response } = await client.chat.completions
        .create({ model: "mixed", messages: [{ role: "user", content: "x" }] })
        .withResponse()
      expect(data.choices[0]?.message.content).toBe("Hello from alpha!")
      expect(response.headers.get("x-router-attempts")).toBe("beta:connection_reset,alpha:ok")
      expect(response.headers.get("x-router-upstream-model")).toBe("org/model-x")
    })
  })
})
