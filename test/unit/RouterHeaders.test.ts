/**
 * The router's own response headers: always valid header values (visible ASCII), whatever the ids
 * an upstream's model list put in them.
 */
import { describe, expect, it } from "@effect/vitest"
import { validateHeaderValue } from "node:http"
import { routerHeaders } from "../../src/http/FastLane.js"
import type { JsonReply } from "../../src/router/Router.js"

const reply = (provider: string, upstreamModel: string): JsonReply => ({
  _tag: "Json",
  provider,
  upstreamModel,
  attempts: [{ provider, upstreamModel, outcome: "ok", detail: "ok", status: 200, durationMs: 1 }],
  status: 200,
  contentType: "application/json",
  body: new Uint8Array()
})

describe("routerHeaders", () => {
  it("passes plain ids through and percent-encodes any other, lone UTF-16 halves included", () => {
    const plain = routerHeaders(reply("venice", "llama-3.3-70b"), "req-1", {})
    expect(plain).toMatchObject({ "x-request-id": "req-1", "x-router-provider": "venice", "x-router-upstream-model": "llama-3.3-70b", "x-router-attempts": "venice:ok" })
    const odd = routerHeaders(reply("p", "modèle-\ud800-😀"), "req-2", {})
    expect(odd["x-router-upstream-model"]).toBe("mod%C3%A8le-%EF%BF%BD-%F0%9F%98%80")
    for (const [name, value] of Object.entries(odd)) expect(() => validateHeaderValue(name, String(value))).not.toThrow()
  })
})
