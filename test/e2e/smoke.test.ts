import OpenAI from "openai"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type FakeServer, startFakeServer } from "../../src/testing/FakeServer.js"
import { type RouterUnderTest, startRouter } from "../kit/TestRouter.js"

describe("smoke", () => {
  let fake: FakeServer
  let router: RouterUnderTest
  beforeAll(async () => {
    fake = await startFakeServer({ name: "alpha", models: ["m1"] })
    router = await startRouter({ config: { providers: { alpha: { endpoint: fake.url, models: ["m1"] } } } })
  })
  afterAll(async () => {
    await router?.close()
    await fake?.close()
  })

  it("answers a chat completion through the openai client", async () => {
    const client = new OpenAI({ baseURL: router.baseURL, apiKey: "unused" })
    const res = await client.chat.completions.create({ model: "m1", messages: [{ role: "user", content: "hi" }] })
    expect(res.choices[0]?.message.content).toBe("Hello from alpha!")
    const records = await router.records()
    expect(records[0]?.provider).toBe("alpha")
  })
})
