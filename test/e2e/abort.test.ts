/**
 * A client that hangs up: the router must close its upstream call at once (the provider stops
 * generating and billing) and record the request as `client_closed`.
 */
import OpenAI from "openai"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { FakeServer } from "../../src/testing/FakeServer.js"
import type { RouterUnderTest } from "../kit/TestRouter.js"
import { harness, newRequestId, recordOf, until } from "./helpers.js"

const longContent = Array.from({ length: 60 }, (_, i) => `word${i}`).join(" ")

describe("client abort", () => {
  const h = harness()
  afterAll(() => h.closeAll())

  let slow: FakeServer
  let router: RouterUnderTest
  beforeAll(async () => {
    slow = await h.fake({ name: "slow", behaviour: { mode: "ok", content: longContent, chunkDelayMs: 200 } })
    router = await h.router({ config: { providers: { slow: { endpoint: slow.url, models: ["m1"] } } } })
  })

  it("closes the upstream call when the client aborts a stream, and records client_closed", async () => {
    const client = new OpenAI({ baseURL: router.baseURL, apiKey: "unused", maxRetries: 0 })
    const controller = new AbortController()
    const requestId = newRequestId("abort")
    const stream = await client.chat.completions.create(
      { model: "m1", messages: [{ role: "user", content: "talk a lot" }], stream: true },
      { signal: controller.signal, headers: { "x-request-id": requestId } }
    )
    const started = Date.now()
    const iterator = stream[Symbol.asyncIterator]()
    const first = await iterator.next()
    expect(first.done).toBe(false)
    expect(first.value?.choices[0]?.delta.role).toBe("assistant")
    controller.abort()

    // The upstream sees its connection closed: no waiting for the 60 × 200 ms answer to finish.
    const aborted = await slow.waitForAbort()
    expect(aborted.path).toBe("/chat/completions")
    expect(aborted.completed).toBe(false)
    expect(aborted.headers["x-request-id"]).toBe(requestId)
    expect(Date.now() - started).toBeLessThan(5_000)

    const record = await recordOf(router, requestId)
    expect(record).toMatchObject({ provider: "slow", outcome: "client_closed", stream: 1, model: "m1" })
  })
})

describe("client abort before the answer starts", () => {
  const h = harness()
  afterAll(() => h.closeAll())

  it("closes the upstream call of a request still waiting for its first byte", async () => {
    const hanging = await h.fake({ name: "hanging", behaviour: { mode: "hang" } })
    const router = await h.router({ config: { providers: { hanging: { endpoint: hanging.url, models: ["m1"], timeouts: { first_byte: 30 } } } } })
    const controller = new AbortController()
    const requestId = newRequestId("abort-early")
    const pending = fetch(`${router.baseURL}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": requestId },
      body: JSON.stringify({ model: "m1", messages: [{ role: "user", content: "x" }] }),
      signal: controller.signal
    }).catch((e: unknown) => e)
    // Abort once the upstream has the request (the fake records it on arrival).
    await until(() => hanging.requests.some((r) => r.path === "/chat/completions"))
    controller.abort()
    expect(await pending).toBeInstanceOf(Error)
    const aborted = await hanging.waitForAbort()
    expect(aborted.path).toBe("/chat/completions")

    // Recorded as well, though no answer was given: nginx's 499 for a client that closed first.
    const record = await recordOf(router, requestId)
    expect(record).toMatchObject({ provider: null, outcome: "client_closed", status: 499, stream: 0, model: "m1" })
    expect(record.error).toBe("the client closed the connection before the answer")
  })
})
