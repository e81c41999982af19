/**
 * Shutdown with requests still open: after `ROUTER_DRAIN_TIMEOUT` the router answers them itself,
 * a 503 `shutting_down` before an answer began and a last `stream_interrupted` event in a stream,
 * rather than closing their connections under them, and records the cut streams as `shutdown`.
 */
import OpenAI, { APIError } from "openai"
import { rmSync } from "node:fs"
import { afterAll, describe, expect, it } from "vitest"
import { startRouter } from "../kit/TestRouter.js"
import { harness, newRequestId, recordOf, until } from "./helpers.js"

/** A request's record, read by a router started again on the stopped one's directory (then removed). */
const recordAfterRestart = async (config: object, dir: string, requestId: string) => {
  const again = await startRouter({ config, dir })
  try {
    return await recordOf(again, requestId)
  } finally {
    await again.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

const longContent = Array.from({ length: 60 }, (_, i) => `word${i}`).join(" ")

describe("shutdown with requests in flight", () => {
  const h = harness()
  afterAll(() => h.closeAll())

  const clientFor = (baseURL: string) => new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 15_000 })

  it("answers a request still waiting for its upstream with an OpenAI-shaped 503 shutting_down", async () => {
    const hanging = await h.fake({ name: "hanging", behaviour: { mode: "hang" } })
    const config = { providers: { hanging: { endpoint: hanging.url, models: ["m1"], timeouts: { first_byte: 60 } } } }
    const router = await startRouter({ config, env: { ROUTER_DRAIN_TIMEOUT: "0.2" } })
    const requestId = newRequestId("shutdown-early")
    const answer = clientFor(router.baseURL).chat.completions
      .create({ model: "m1", messages: [{ role: "user", content: "x" }] }, { headers: { "x-request-id": requestId } })
      .then(() => null, (e: unknown) => e)
    await until(() => hanging.requests.some((r) => r.path === "/chat/completions"))
    const started = Date.now()
    await router.close({ keepDir: true })
    const error = await answer
    expect(error).toBeInstanceOf(APIError)
    expect((error as APIError).status).toBe(503)
    expect((error as APIError).error).toEqual({
      message: "The router is shutting down and did not finish this request; send it again",
      type: "server_error",
      param: null,
      code: "shutting_down"
    })
    // The upstream call was closed too, not left generating.
    const call = hanging.requests.find((r) => r.path === "/chat/completions")
    await until(() => call?.aborted === true)
    expect(call).toMatchObject({ aborted: true, completed: false })
    expect(Date.now() - started).toBeLessThan(5_000)

    expect(await recordAfterRestart(config, router.dir, requestId)).toMatchObject({ provider: null, outcome: "shutdown", status: 503, stream: 0 })
  })

  it("ends a stream under way with a last stream_interrupted event, and records it as shutdown", async () => {
    const slow = await h.fake({ name: "slow", behaviour: { mode: "ok", content: longContent, chunkDelayMs: 100 } })
    const config = { providers: { slow: { endpoint: slow.url, models: ["m1"] } } }
    const router = await startRouter({ config, env: { ROUTER_DRAIN_TIMEOUT: "0.3" } })
    const requestId = newRequestId("shutdown")
    const stream = await clientFor(router.baseURL).chat.completions.create(
      { model: "m1", messages: [{ role: "user", content: "talk a lot" }], stream: true },
      { headers: { "x-request-id": requestId } }
    )
    const closed = router.close({ keepDir: true })
    let text = ""
    const error = await (async () => {
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ""
      return null
    })().catch((e: unknown) => e)
    await closed
    // Some of the answer arrived during the drain, then the router's own last event.
    expect(text.length).toBeGreaterThan(0)
    expect(text.length).toBeLessThan(longContent.length)
    expect(error).toBeInstanceOf(APIError)
    expect((error as APIError).message).toContain("The router is shutting down")
    expect((await slow.waitForAbort()).completed).toBe(false)

    expect(await recordAfterRestart(config, router.dir, requestId)).toMatchObject({ provider: "slow", outcome: "shutdown", stream: 1 })
  })
})
