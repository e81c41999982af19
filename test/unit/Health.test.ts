/**
 * What failures mean for a provider's health: the classification of a refused answer (status, body,
 * Retry-After), and the health registry's states (circuit, misconfigured, out of credits, per-model
 * rate limits) and statistics. The registry is synchronous and takes the time as an argument, so
 * these tests pass times explicitly.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, HashMap, Logger, Redacted } from "effect"
import * as Resilience from "../../src/config/Resilience.js"
import type { ResilienceSettings } from "../../src/config/Resilience.js"
import { decodeConfig } from "../../src/config/ConfigFile.js"
import type { Candidate } from "../../src/domain/Provider.js"
import * as Health from "../../src/health/Health.js"
import type { Verdict } from "../../src/health/Health.js"
import { classifyRefusal, errorInBody, parseRetryAfter, statusOfErrorObject } from "../../src/router/Classify.js"
import { providerSpec } from "./helpers.js"

const candidate = (provider: string, model = "m1"): Candidate => ({ provider: providerSpec(provider, { models: ["m1", "m2"] }), upstreamModel: model })

const settings: ResilienceSettings = {
  ...Resilience.defaults,
  breaker: { ...Resilience.defaults.breaker, consecutiveFailures: 3, cooldownMs: 10_000, maxCooldownMs: 60_000 },
  defaultRetryAfterMs: 30_000,
  misconfiguredCooldownMs: 600_000,
  outOfCreditsCooldownMs: 3_600_000
}

/** A whole second, so HTTP dates (second precision) land exactly. */
const T0 = 1_700_000_000_000
const iso = (ms: number) => new Date(ms).toISOString()

/** A refused answer as the router reports it: classified from its status, body and Retry-After. */
const refused = (status: number, now: number, body = "", retryAfter?: string): Verdict => ({
  _tag: "Failed",
  classified: classifyRefusal(status, body, parseRetryAfter(retryAfter, now)),
  detail: `HTTP ${status}${body === "" ? "" : `: ${body}`}`
})

const serverError: Verdict = { _tag: "Failed", classified: { class: "transient", outcome: "server_error" }, detail: "HTTP 500" }
const ok = (ttfbMs: number, totalMs: number): Verdict => ({ _tag: "Ok", ttfbMs, totalMs })

const statusOf = (h: Health.HealthService, id: string, now: number) => h.status([id], now)[0]!

/** A registry where `a`'s circuit was opened at T0 by three server errors. */
const withOpenCircuit = () => {
  const h = Health.make(settings)
  for (let i = 0; i < 3; i++) h.report(candidate("a"), serverError, false, T0)
  return h
}

describe("Classify: what a refused answer means", () => {
  it("402, and credit messages under other statuses, are out of credits", () => {
    expect(classifyRefusal(402, "", undefined)).toEqual({ class: "credits", outcome: "out_of_credits" })
    const openAiQuota = JSON.stringify({
      error: { message: "You exceeded your current quota, please check your plan and billing details.", type: "insufficient_quota", code: "insufficient_quota" }
    })
    expect(classifyRefusal(429, openAiQuota, 5_000)).toEqual({ class: "credits", outcome: "out_of_credits" })
    expect(classifyRefusal(403, `{"error":{"message":"Your credit balance is too low"}}`, undefined).class).toBe("credits")
    expect(classifyRefusal(400, `{"error":{"message":"Insufficient balance"}}`, undefined).class).toBe("credits")
    expect(classifyRefusal(401, "out of credits", undefined).class).toBe("credits")
    // A 404 is about the request (a model name), whatever its text says.
    expect(classifyRefusal(404, "insufficient_quota", undefined).class).toBe("client_error")
  })

  it("a 400 about the context length is context_too_long; other 4xx are client errors", () => {
    for (const body of [
      `{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}`,
      "prompt is too long: 210000 tokens > 200000 maximum",
      "input exceeds the model's maximum context",
      // llama.cpp's server
      `{"error":{"code":400,"message":"request (9137 tokens) exceeds the available context size (8192 tokens), try increasing it","type":"exceed_context_size_error"}}`,
      // Ollama's
      `{"error":{"message":"input length exceeds context length","type":"api_error"}}`,
      // vLLM's newer wording
      `{"error":{"message":"The decoder prompt (length 9000) is longer than the maximum model length of 8192.","type":"BadRequestError"}}`,
      "The input (9000 tokens) is greater than the context length"
    ]) {
      expect(classifyRefusal(400, body, undefined), body).toEqual({ class: "context_too_long", outcome: "context_too_long" })
    }
    expect(classifyRefusal(400, `{"error":{"message":"temperature must be at most 2"}}`, undefined)).toEqual({ class: "client_error", outcome: "client_error" })
    // Only a 400 says the request was too long for the model.
    expect(classifyRefusal(413, "maximum context length", undefined).class).toBe("client_error")
    expect(classifyRefusal(422, "", undefined).class).toBe("client_error")
  })

  it("a 404 saying the model does not exist there is model_not_found; other 404s are client errors", () => {
    for (const body of [
      `{"error":{"message":"The model 'gpt-9' does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}`,
      // Ollama's
      `{"error":"model \"llama3.2\" not found, try pulling it first"}`,
      // vLLM's
      `{"object":"error","message":"The model \`qwen\` does not exist.","type":"NotFoundError","param":null,"code":404}`,
      "Model not found"
    ]) {
      expect(classifyRefusal(404, body, undefined), body).toEqual({ class: "client_error", outcome: "model_not_found" })
    }
    expect(classifyRefusal(404, `{"error":{"message":"File not found"}}`, undefined)).toEqual({ class: "client_error", outcome: "client_error" })
    expect(classifyRefusal(404, "<html>Not Found</html>", undefined)).toEqual({ class: "client_error", outcome: "client_error" })
    // Only a 404 says the model is missing.
    expect(classifyRefusal(400, "model not found", undefined).outcome).toBe("client_error")
  })

  it("auth, rate limits (with their Retry-After) and transient failures", () => {
    expect(classifyRefusal(401, "", undefined)).toEqual({ class: "auth", outcome: "auth_error" })
    expect(classifyRefusal(403, "forbidden", undefined)).toEqual({ class: "auth", outcome: "auth_error" })
    expect(classifyRefusal(429, "slow down", 7_000)).toEqual({ class: "rate_limited", outcome: "rate_limited", retryAfterMs: 7_000 })
    expect(classifyRefusal(408, "", undefined)).toEqual({ class: "rate_limited", outcome: "rate_limited", retryAfterMs: undefined })
    expect(classifyRefusal(500, "", undefined)).toEqual({ class: "transient", outcome: "server_error" })
    expect(classifyRefusal(503, "", undefined)).toEqual({ class: "transient", outcome: "server_error" })
    expect(classifyRefusal(302, "", undefined)).toEqual({ class: "transient", outcome: "bad_status" })
  })

  describe("parseRetryAfter", () => {
    it("reads delta-seconds, whole or decimal, trimmed", () => {
      expect(parseRetryAfter("120", T0)).toBe(120_000)
      expect(parseRetryAfter("0", T0)).toBe(0)
      expect(parseRetryAfter(" 7 ", T0)).toBe(7_000)
      expect(parseRetryAfter("1.5", T0)).toBe(1_500)
      expect(parseRetryAfter("0.25", T0)).toBe(250)
      expect(parseRetryAfter(["3", "9"], T0)).toBe(3_000)
    })

    it("reads an HTTP date as the time left until it, and a past date as 0", () => {
      expect(parseRetryAfter(new Date(T0 + 12_000).toUTCString(), T0)).toBe(12_000)
      expect(parseRetryAfter("Tue, 14 Nov 2023 22:13:40 GMT", T0)).toBe(20_000)
      expect(parseRetryAfter(new Date(T0 - 60_000).toUTCString(), T0)).toBe(0)
    })

    it("is at most a day, however far off the upstream says", () => {
      expect(parseRetryAfter("86400", T0)).toBe(86_400_000)
      expect(parseRetryAfter("999999999", T0)).toBe(86_400_000)
      expect(parseRetryAfter(new Date(T0 + 40 * 86_400_000).toUTCString(), T0)).toBe(86_400_000)
    })

    it("is undefined when absent or unreadable", () => {
      expect(parseRetryAfter(undefined, T0)).toBeUndefined()
      expect(parseRetryAfter("", T0)).toBeUndefined()
      expect(parseRetryAfter("   ", T0)).toBeUndefined()
      expect(parseRetryAfter([], T0)).toBeUndefined()
      for (const garbage of ["soon", "5 seconds", "1e3", "0x10", "Infinity", "NaN"]) {
        expect(parseRetryAfter(garbage, T0), garbage).toBeUndefined()
      }
    })

    // V8's Date.parse reads these as dates in 2001 (so "in the past": a window of 0 ms); they are
    // neither delta-seconds nor an HTTP date, so the configured default should apply.
    it("is undefined for values that are neither delta-seconds nor an HTTP date", () => {
      for (const garbage of ["-1", "foo 1", "Monday 5", "1 2"]) {
        expect(parseRetryAfter(garbage, T0), garbage).toBeUndefined()
      }
    })
  })

  describe("errorInBody", () => {
    const bytes = (s: string) => new Uint8Array(Buffer.from(s))

    it("finds the error in a body that starts with {\"error\"", () => {
      const text = `{"error":{"message":"Rate limit reached","type":"rate_limit_exceeded"}}`
      expect(errorInBody(bytes(text))).toEqual({ status: 429, text })
      const spaced = `\n  { "error" : { "message": "bad key", "code": 401 } }`
      expect(errorInBody(bytes(spaced))).toEqual({ status: 401, text: spaced })
      expect(errorInBody(bytes(`{"error":"upstream exploded"}`))?.status).toBe(500)
    })

    it("reads a view into a larger buffer from its own offset", () => {
      const whole = Buffer.from(`xxxxx{"error":{"code":"402"}}yyyy`)
      const view = new Uint8Array(whole.buffer, whole.byteOffset + 5, whole.byteLength - 9)
      expect(errorInBody(view)).toEqual({ status: 402, text: `{"error":{"code":"402"}}` })
    })

    it("finds a choice that finished with \"error\", or an error without choices, wherever the key is", () => {
      const finished = `{"id":"c","choices":[{"index":0,"message":{"content":"Hal"},"finish_reason":"error"}]}`
      expect(errorInBody(bytes(finished))).toEqual({ status: 500, text: finished })
      const beside = `{"id":"c","choices":[{"index":0,"finish_reason": "error"}],"error":{"code":429,"message":"slow down"}}`
      expect(errorInBody(bytes(beside))).toEqual({ status: 429, text: beside })
      const late = `{"id":"c","object":"chat.completion","error":{"type":"invalid_api_key"}}`
      expect(errorInBody(bytes(late))).toEqual({ status: 401, text: late })
      // The word inside an answer's text is escaped, so it is not the key: the answer stands.
      expect(errorInBody(bytes(`{"id":"c","choices":[{"message":{"content":"an \\"error\\" here"},"finish_reason":"stop"}]}`))).toBeNull()
    })

    it("is null for answers, for bodies that also carry choices, and for what is not such JSON", () => {
      expect(errorInBody(bytes(`{"id":"chatcmpl-1","error":{"message":"x"},"choices":[]}`))).toBeNull()
      expect(errorInBody(bytes(`{"error":{"message":"partial"},"choices":[{"index":0}]}`))).toBeNull()
      expect(errorInBody(bytes(`{"error":null}`))).toBeNull()
      expect(errorInBody(bytes(`{"error":{"message":"cut off`))).toBeNull()
      expect(errorInBody(bytes(`data: {"error":{}}`))).toBeNull()
      expect(errorInBody(bytes(""))).toBeNull()
    })
  })

  describe("statusOfErrorObject", () => {
    it("takes a numeric status or code in 400–599 first", () => {
      expect(statusOfErrorObject({ code: 429 })).toBe(429)
      expect(statusOfErrorObject({ status: 503, type: "rate_limit" })).toBe(503)
      expect(statusOfErrorObject({ code: "401" })).toBe(401)
      // Not an error status: read the type instead.
      expect(statusOfErrorObject({ code: 200, type: "rate_limit_error" })).toBe(429)
    })

    it("else reads its type and code", () => {
      expect(statusOfErrorObject({ type: "tokens", code: "rate_limit_exceeded" })).toBe(429)
      expect(statusOfErrorObject({ type: "authentication_error" })).toBe(401)
      expect(statusOfErrorObject({ type: "invalid_request_error", code: "invalid_api_key" })).toBe(401)
      expect(statusOfErrorObject({ type: "insufficient_quota", code: "insufficient_quota" })).toBe(402)
      expect(statusOfErrorObject({ type: "invalid_request_error", code: "context_length_exceeded" })).toBe(400)
      expect(statusOfErrorObject({ type: "invalid_request_error", code: "model_not_found" })).toBe(400)
      expect(statusOfErrorObject({ type: "server_error" })).toBe(500)
      expect(statusOfErrorObject("something broke")).toBe(500)
      expect(statusOfErrorObject(null)).toBe(500)
    })
  })
})

describe("Health: the circuit", () => {
  it("a provider never reported on is admitted and healthy", () => {
    const h = Health.make(settings)
    expect(h.admit(candidate("a"), T0)).toEqual({ ok: true, probe: false })
    expect(statusOf(h, "a", T0)).toEqual({
      id: "a",
      state: "healthy",
      circuit: { state: "closed", open_until: null, trips: 0, reason: null, consecutive_failures: 0 },
      rate_limited: [],
      model_circuits: [],
      out_of_credits_until: null,
      stats: {
        requests: 0,
        successes: 0,
        failures: 0,
        success_rate: null,
        recent_success_rate: null,
        ewma_ttfb_ms: null,
        ewma_total_ms: null,
        last_error: null,
        last_error_at: null
      },
      last_check: null
    })
  })

  it("opens after the threshold of transient failures, for that provider only", () => {
    const h = Health.make(settings)
    h.report(candidate("a"), serverError, false, T0)
    h.report(candidate("a"), serverError, false, T0)
    expect(h.admit(candidate("a"), T0).ok).toBe(true)
    expect(statusOf(h, "a", T0).circuit.consecutive_failures).toBe(2)
    h.report(candidate("a"), serverError, false, T0)
    expect(h.admit(candidate("a"), T0)).toEqual({ ok: false, outcome: "circuit_open", reason: `circuit open until ${iso(T0 + 10_000)}` })
    // Every model of the provider: the circuit is the provider's.
    expect(h.admit(candidate("a", "m2"), T0).ok).toBe(false)
    expect(h.admit(candidate("b"), T0).ok).toBe(true)
    expect(statusOf(h, "a", T0)).toMatchObject({
      state: "circuit_open",
      circuit: { state: "open", open_until: iso(T0 + 10_000), trips: 1, reason: "HTTP 500", consecutive_failures: 0 }
    })
  })

  it("after the cooldown: one probe, others refused while it runs; its success closes the circuit", () => {
    const h = withOpenCircuit()
    expect(h.admit(candidate("a"), T0 + 9_999).ok).toBe(false)
    expect(statusOf(h, "a", T0 + 10_000)).toMatchObject({ state: "half_open", circuit: { state: "half_open" } })
    expect(h.admit(candidate("a"), T0 + 10_000)).toEqual({ ok: true, probe: true })
    expect(h.admit(candidate("a"), T0 + 10_001)).toEqual({ ok: false, outcome: "circuit_open", reason: "circuit half-open, probe under way" })
    expect(h.admit(candidate("a", "m2"), T0 + 10_001).ok).toBe(false)
    h.report(candidate("a"), ok(50, 80), true, T0 + 10_050)
    expect(h.admit(candidate("a"), T0 + 10_051)).toEqual({ ok: true, probe: false })
    expect(statusOf(h, "a", T0 + 10_051)).toMatchObject({ state: "healthy", circuit: { state: "closed", trips: 0, reason: null } })
  })

  it("a failed probe re-opens it for twice the cooldown", () => {
    const h = withOpenCircuit()
    expect(h.admit(candidate("a"), T0 + 10_000).ok).toBe(true)
    h.report(candidate("a"), serverError, true, T0 + 10_000)
    expect(h.admit(candidate("a"), T0 + 29_999).ok).toBe(false)
    expect(statusOf(h, "a", T0 + 10_000).circuit).toMatchObject({ state: "open", open_until: iso(T0 + 30_000), trips: 2 })
    expect(h.admit(candidate("a"), T0 + 30_000)).toEqual({ ok: true, probe: true })
  })

  it("an abandoned probe frees the slot and counts for nothing", () => {
    const h = withOpenCircuit()
    expect(h.admit(candidate("a"), T0 + 10_000).ok).toBe(true)
    h.report(candidate("a"), { _tag: "Abandoned" }, true, T0 + 10_005)
    expect(h.admit(candidate("a"), T0 + 10_006)).toEqual({ ok: true, probe: true })
    expect(statusOf(h, "a", T0 + 10_006).stats).toMatchObject({ requests: 3, failures: 3 })
  })

  it("client errors count as the provider answering", () => {
    const h = Health.make(settings)
    h.report(candidate("a"), serverError, false, T0)
    h.report(candidate("a"), serverError, false, T0)
    h.report(candidate("a"), refused(400, T0, "bad temperature"), false, T0)
    h.report(candidate("a"), refused(400, T0, "maximum context length exceeded"), false, T0)
    h.report(candidate("a"), serverError, false, T0)
    h.report(candidate("a"), serverError, false, T0)
    expect(h.admit(candidate("a"), T0).ok).toBe(true)
    expect(statusOf(h, "a", T0)).toMatchObject({
      state: "healthy",
      circuit: { consecutive_failures: 2 },
      stats: { requests: 6, successes: 2, failures: 4 }
    })
    // And a probe answered with a client error closes the circuit.
    const open = withOpenCircuit()
    expect(open.admit(candidate("a"), T0 + 10_000).ok).toBe(true)
    open.report(candidate("a"), refused(422, T0 + 10_000), true, T0 + 10_000)
    expect(open.admit(candidate("a"), T0 + 10_000)).toEqual({ ok: true, probe: false })
  })
})

describe("Health: misconfigured and out of credits", () => {
  for (const status of [401, 403]) {
    it(`HTTP ${status} marks the provider misconfigured for misconfigured_cooldown`, () => {
      const h = Health.make(settings)
      h.report(candidate("a"), refused(status, T0, "invalid api key"), false, T0)
      const until = T0 + 600_000
      expect(h.admit(candidate("a"), T0)).toEqual({ ok: false, outcome: "misconfigured", reason: `circuit open until ${iso(until)}` })
      expect(h.admit(candidate("a", "m2"), until - 1)).toMatchObject({ ok: false, outcome: "misconfigured" })
      expect(h.admit(candidate("b"), T0).ok).toBe(true)
      expect(statusOf(h, "a", T0)).toMatchObject({
        state: "misconfigured",
        circuit: { state: "open", open_until: iso(until), trips: 1, reason: `misconfigured: HTTP ${status}: invalid api key` },
        stats: { requests: 1, successes: 0, failures: 1, success_rate: 0, last_error: `HTTP ${status}: invalid api key`, last_error_at: iso(T0) }
      })
      // Once the cooldown is over, one request checks whether it was fixed.
      expect(h.admit(candidate("a"), until)).toEqual({ ok: true, probe: true })
      expect(h.admit(candidate("a"), until)).toMatchObject({ ok: false, outcome: "misconfigured" })
      h.report(candidate("a"), ok(10, 20), true, until + 20)
      expect(statusOf(h, "a", until + 20).state).toBe("healthy")
    })
  }

  const creditCases: ReadonlyArray<readonly [string, number, string]> = [
    ["HTTP 402", 402, ""],
    ["HTTP 429 with insufficient_quota", 429, `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`]
  ]
  for (const [name, status, body] of creditCases) {
    it(`${name} marks the whole provider out of credits for out_of_credits_cooldown`, () => {
      const h = Health.make(settings)
      h.report(candidate("a"), refused(status, T0, body, "1"), false, T0)
      const until = T0 + 3_600_000
      for (const model of ["m1", "m2"]) {
        expect(h.admit(candidate("a", model), until - 1)).toEqual({ ok: false, outcome: "out_of_credits", reason: `out of credits until ${iso(until)}` })
      }
      expect(statusOf(h, "a", T0)).toMatchObject({
        state: "out_of_credits",
        out_of_credits_until: iso(until),
        // Not a rate limit, and not a breaker failure.
        rate_limited: [],
        circuit: { state: "closed", consecutive_failures: 0 },
        stats: { requests: 1, failures: 1 }
      })
      expect(h.admit(candidate("a"), until)).toEqual({ ok: true, probe: false })
      expect(statusOf(h, "a", until)).toMatchObject({ state: "healthy", out_of_credits_until: null })
    })
  }

  it("running out of credits during a probe frees the probe slot", () => {
    const h = withOpenCircuit()
    expect(h.admit(candidate("a"), T0 + 10_000).ok).toBe(true)
    h.report(candidate("a"), refused(402, T0 + 10_000), true, T0 + 10_000)
    const after = T0 + 10_000 + 3_600_000
    expect(h.admit(candidate("a"), after)).toEqual({ ok: true, probe: true })
  })
})

describe("Health: rate limits", () => {
  const cases: ReadonlyArray<readonly [string, string | undefined, number]> = [
    ["Retry-After in seconds", "7", 7_000],
    ["Retry-After as an HTTP date", new Date(T0 + 12_000).toUTCString(), 12_000],
    ["no Retry-After (the configured default)", undefined, 30_000]
  ]
  for (const [name, retryAfter, windowMs] of cases) {
    it(`a 429 with ${name} skips that provider and model until the window ends, not 1 ms sooner`, () => {
      const h = Health.make(settings)
      h.report(candidate("a"), refused(429, T0, "", retryAfter), false, T0)
      const until = T0 + windowMs
      expect(h.admit(candidate("a"), T0)).toEqual({ ok: false, outcome: "rate_limited", reason: `rate limited until ${iso(until)}` })
      expect(h.admit(candidate("a"), until - 1)).toMatchObject({ ok: false, outcome: "rate_limited" })
      // Another model of the same provider, and another provider, are still admitted.
      expect(h.admit(candidate("a", "m2"), T0)).toEqual({ ok: true, probe: false })
      expect(h.admit(candidate("b"), T0)).toEqual({ ok: true, probe: false })
      expect(statusOf(h, "a", T0)).toMatchObject({ state: "healthy", rate_limited: [{ model: "m1", until: iso(until) }] })
      expect(h.admit(candidate("a"), until)).toEqual({ ok: true, probe: false })
      expect(statusOf(h, "a", until).rate_limited).toEqual([])
    })
  }

  it("a 408 without Retry-After is a rate limit of the default length too", () => {
    const h = Health.make(settings)
    h.report(candidate("a"), refused(408, T0), false, T0)
    expect(h.admit(candidate("a"), T0 + 29_999)).toMatchObject({ ok: false, outcome: "rate_limited" })
    expect(h.admit(candidate("a"), T0 + 30_000).ok).toBe(true)
  })

  it("rate limits do not count toward the breaker", () => {
    const h = Health.make(settings)
    for (let i = 0; i < 10; i++) h.report(candidate("a", i % 2 === 0 ? "m1" : "m2"), refused(429, T0, "", "0"), false, T0)
    expect(h.admit(candidate("a"), T0)).toEqual({ ok: true, probe: false })
    expect(statusOf(h, "a", T0)).toMatchObject({
      state: "healthy",
      circuit: { state: "closed", consecutive_failures: 0, trips: 0 },
      stats: { requests: 10, failures: 10 }
    })
    h.report(candidate("a"), serverError, false, T0)
    h.report(candidate("a"), serverError, false, T0)
    h.report(candidate("a"), refused(429, T0, "", "0"), false, T0)
    expect(statusOf(h, "a", T0).circuit).toMatchObject({ state: "closed", consecutive_failures: 2 })
  })

  it("a rate limit on the probe frees the slot for another model", () => {
    const h = withOpenCircuit()
    expect(h.admit(candidate("a", "m1"), T0 + 10_000)).toEqual({ ok: true, probe: true })
    h.report(candidate("a", "m1"), refused(429, T0 + 10_000, "", "60"), true, T0 + 10_000)
    expect(h.admit(candidate("a", "m1"), T0 + 10_001)).toMatchObject({ ok: false, outcome: "rate_limited" })
    expect(h.admit(candidate("a", "m2"), T0 + 10_001)).toEqual({ ok: true, probe: true })
  })
})

describe("Health: active checks", () => {
  it("a healthy check closes an open circuit but lifts neither a rate limit nor a credit state", () => {
    const h = Health.make(settings)
    h.report(candidate("a", "m2"), refused(429, T0, "", "60"), false, T0)
    h.report(candidate("b"), refused(402, T0), false, T0)
    for (let i = 0; i < 3; i++) h.report(candidate("a"), serverError, false, T0)
    expect(h.admit(candidate("a"), T0 + 1).ok).toBe(false)

    h.reportCheck("a", { _tag: "Healthy" }, T0 + 1_000)
    h.reportCheck("b", { _tag: "Healthy" }, T0 + 1_000)
    expect(h.admit(candidate("a", "m1"), T0 + 1_000)).toEqual({ ok: true, probe: false })
    expect(h.admit(candidate("a", "m2"), T0 + 1_000)).toMatchObject({ ok: false, outcome: "rate_limited" })
    expect(h.admit(candidate("b"), T0 + 1_000)).toMatchObject({ ok: false, outcome: "out_of_credits" })
    expect(statusOf(h, "a", T0 + 1_000)).toMatchObject({
      state: "healthy",
      circuit: { state: "closed" },
      rate_limited: [{ model: "m2", until: iso(T0 + 60_000) }],
      last_check: { at: iso(T0 + 1_000), healthy: true, detail: null }
    })
  })

  it("a healthy check closes a misconfigured circuit", () => {
    const h = Health.make(settings)
    h.report(candidate("a"), refused(401, T0), false, T0)
    h.reportCheck("a", { _tag: "Healthy" }, T0 + 5)
    expect(h.admit(candidate("a"), T0 + 5)).toEqual({ ok: true, probe: false })
  })

  it("failed checks count toward the breaker; an auth failure marks the provider misconfigured", () => {
    const h = Health.make(settings)
    const down = { _tag: "Unhealthy", classified: { class: "transient", outcome: "connect_error" }, detail: "connection refused" } as const
    h.reportCheck("a", down, T0)
    h.reportCheck("a", down, T0)
    expect(h.admit(candidate("a"), T0).ok).toBe(true)
    h.reportCheck("a", down, T0)
    expect(h.admit(candidate("a"), T0)).toMatchObject({ ok: false, outcome: "circuit_open" })
    expect(statusOf(h, "a", T0)).toMatchObject({
      state: "circuit_open",
      circuit: { reason: "health check: connection refused" },
      last_check: { at: iso(T0), healthy: false, detail: "connection refused" },
      stats: { last_error: "health check: connection refused" }
    })

    h.reportCheck("b", { _tag: "Unhealthy", classified: { class: "auth", outcome: "auth_error" }, detail: "HTTP 401" }, T0)
    expect(h.admit(candidate("b"), T0 + 599_999)).toMatchObject({ ok: false, outcome: "misconfigured" })
    expect(statusOf(h, "b", T0).state).toBe("misconfigured")
  })
})

describe("Health: statistics", () => {
  it("EWMA of time to first byte and total latency, success rate and the last error", () => {
    const h = Health.make(settings)
    h.report(candidate("a"), ok(100, 400), false, T0)
    expect(statusOf(h, "a", T0).stats).toMatchObject({ ewma_ttfb_ms: 100, ewma_total_ms: 400 })
    h.report(candidate("a"), ok(200, 600), false, T0 + 1)
    // 100 + 0.2 × (200 − 100) and 400 + 0.2 × (600 − 400).
    expect(statusOf(h, "a", T0 + 1).stats).toMatchObject({ ewma_ttfb_ms: 120, ewma_total_ms: 440 })
    h.report(candidate("a"), ok(121, 441), false, T0 + 2)
    // 120.2 and 440.2, rounded.
    expect(statusOf(h, "a", T0 + 2).stats).toMatchObject({ ewma_ttfb_ms: 120, ewma_total_ms: 440 })
    h.report(candidate("a", "m2"), serverError, false, T0 + 3)
    expect(statusOf(h, "a", T0 + 3).stats).toEqual({
      requests: 4,
      successes: 3,
      failures: 1,
      success_rate: 0.75,
      recent_success_rate: 0.75,
      ewma_ttfb_ms: 120,
      ewma_total_ms: 440,
      last_error: "HTTP 500",
      last_error_at: iso(T0 + 3)
    })
    // Failures do not move the latency averages; abandoned attempts count for nothing.
    h.report(candidate("a"), { _tag: "Abandoned" }, false, T0 + 4)
    expect(statusOf(h, "a", T0 + 4).stats).toMatchObject({ requests: 4, ewma_ttfb_ms: 120 })
  })

  it("status lists the providers asked for, in that order", () => {
    const h = Health.make(settings)
    h.report(candidate("b"), ok(1, 1), false, T0)
    expect(h.status(["c", "a", "b"], T0).map((s) => [s.id, s.stats.requests])).toEqual([["c", 0], ["a", 0], ["b", 1]])
  })
})

describe("Health: what the policy reads (peek, stats)", () => {
  it("peek says why a candidate would be skipped, and changes nothing: the half-open probe is still free", () => {
    const h = withOpenCircuit()
    expect(h.peek(candidate("a"), T0 + 1)).toEqual({ outcome: "circuit_open", reason: `circuit open until ${iso(T0 + 10_000)}`, until: T0 + 10_000 })
    // After the cooldown peek lets it through, as often as asked, and admit still gets the probe.
    expect(h.peek(candidate("a"), T0 + 10_000)).toBeNull()
    expect(h.peek(candidate("a"), T0 + 10_000)).toBeNull()
    expect(h.admit(candidate("a"), T0 + 10_000)).toEqual({ ok: true, probe: true })
    expect(h.peek(candidate("a"), T0 + 10_001)).toEqual({ outcome: "circuit_open", reason: "circuit half-open, probe under way" })
    expect(h.peek(candidate("b"), T0)).toBeNull()
  })

  it("peek names a rate limit per model and a misconfigured provider", () => {
    const h = Health.make(settings)
    h.report(candidate("a", "m1"), refused(429, T0, "", "30"), false, T0)
    expect(h.peek(candidate("a", "m1"), T0 + 1)).toEqual({ outcome: "rate_limited", reason: `rate limited until ${iso(T0 + 30_000)}`, until: T0 + 30_000 })
    expect(h.peek(candidate("a", "m2"), T0 + 1)).toBeNull()
    h.report(candidate("b"), refused(401, T0), false, T0)
    expect(h.peek(candidate("b"), T0 + 1)).toMatchObject({ outcome: "misconfigured", reason: `circuit open until ${iso(T0 + 600_000)}`, until: T0 + 600_000 })
  })

  it("the success rate counts the last five minutes, from three requests on; rate limits and credits do not count", () => {
    const h = Health.make(settings)
    h.report(candidate("a"), serverError, false, T0)
    h.report(candidate("a"), refused(429, T0), false, T0)
    h.report(candidate("a"), refused(402, T0), false, T0)
    expect(h.stats("a", T0).successRate).toBeNull()
    h.report(candidate("a"), ok(100, 200), false, T0 + 1000)
    h.report(candidate("a"), ok(300, 400), false, T0 + 2000)
    expect(h.stats("a", T0 + 2000)).toEqual({ ewmaTtfbMs: 140, successRate: 2 / 3 })
    // Once the failure is older than the window, only the two successes remain: too few to judge.
    expect(h.stats("a", T0 + Health.recentWindowMs).successRate).toBeNull()
    expect(h.stats("nobody", T0)).toEqual({ ewmaTtfbMs: null, successRate: null })
  })

  it("a latency average counts only while an answer came in the last five minutes (status keeps it)", () => {
    const h = Health.make(settings)
    h.report(candidate("a"), ok(900, 1000), false, T0)
    expect(h.stats("a", T0 + Health.recentWindowMs - 1).ewmaTtfbMs).toBe(900)
    expect(h.stats("a", T0 + Health.recentWindowMs).ewmaTtfbMs).toBeNull()
    expect(statusOf(h, "a", T0 + Health.recentWindowMs).stats.ewma_ttfb_ms).toBe(900)
    h.report(candidate("a"), ok(100, 200), false, T0 + Health.recentWindowMs + 1)
    expect(h.stats("a", T0 + Health.recentWindowMs + 1).ewmaTtfbMs).toBe(740)
  })
})

describe("Resilience settings", () => {
  it.effect("the config file's sections, in seconds, become milliseconds; the rest are defaults", () =>
    Effect.gen(function* () {
      const loaded = yield* decodeConfig({
        resilience: {
          circuit_breaker: { failure_threshold: 2, window: 8, error_rate: 0.25, min_requests: 4, cooldown: 1.5, max_cooldown: 30 },
          default_retry_after: 2,
          misconfigured_cooldown: 60,
          out_of_credits_cooldown: 120,
          retries: 3,
          retry_backoff: 0.1,
          request_timeout: 45
        },
        monitoring: { health_check_interval: 15 }
      }, "test")
      expect(Resilience.fromFile(loaded.file)).toEqual({
        breaker: {
          consecutiveFailures: 2,
          windowSize: 8,
          errorRate: 0.25,
          minimumRequests: 4,
          cooldownMs: 1_500,
          cooldownMultiplier: 2,
          maxCooldownMs: 30_000
        },
        defaultRetryAfterMs: 2_000,
        misconfiguredCooldownMs: 60_000,
        outOfCreditsCooldownMs: 120_000,
        retries: 3,
        retryBackoffMs: 100,
        requestTimeoutMs: 45_000,
        healthCheckIntervalMs: 15_000,
        healthCheckTimeoutMs: Resilience.defaults.healthCheckTimeoutMs,
        healthCheckConcurrency: Resilience.defaults.healthCheckConcurrency
      })
      expect(Resilience.fromFile((yield* decodeConfig({}, "empty")).file)).toEqual(Resilience.defaults)
    }))

  it.effect("Health.layer uses the provided settings", () =>
    Effect.gen(function* () {
      const h = yield* Health.Health
      h.report(candidate("a"), refused(401, 0), false, 0)
      expect(h.admit(candidate("a"), 4_999).ok).toBe(false)
      expect(h.admit(candidate("a"), 5_000)).toEqual({ ok: true, probe: true })
    }).pipe(Effect.provide(Health.layer), Effect.provide(Resilience.layer({ ...Resilience.defaults, misconfiguredCooldownMs: 5_000 }))))
})

describe("Health: breakers of single models", () => {
  const modelDown = classifyRefusal(503, '{"error":{"message":"The model m1 is currently unavailable"}}', undefined)

  it("a server error about the model opens that model's circuit only", () => {
    expect(modelDown.modelSpecific).toBe(true)
    const h = Health.make(settings)
    for (let i = 0; i < settings.breaker.consecutiveFailures; i++) {
      h.report(candidate("a", "m1"), { _tag: "Failed", classified: modelDown, detail: "HTTP 503" }, false, T0 + i)
    }
    const refused = h.admit(candidate("a", "m1"), T0 + 10)
    expect(refused.ok).toBe(false)
    if (!refused.ok) {
      expect(refused.outcome).toBe("circuit_open")
      expect(refused.reason).toContain("for m1")
    }
    // The provider and its other models are still used.
    expect(h.admit(candidate("a", "m2"), T0 + 10)).toEqual({ ok: true, probe: false })
    const status = statusOf(h, "a", T0 + 10)
    expect(status.state).toBe("healthy")
    expect(status.model_circuits.map((m) => [m.model, m.state])).toEqual([["m1", "open"]])
  })

  it("a plain server error counts against the provider, not a model", () => {
    const plain = classifyRefusal(500, '{"error":{"message":"internal error"}}', undefined)
    expect(plain.modelSpecific).toBeUndefined()
    const h = Health.make(settings)
    for (let i = 0; i < settings.breaker.consecutiveFailures; i++) {
      h.report(candidate("a", "m1"), { _tag: "Failed", classified: plain, detail: "HTTP 500" }, false, T0 + i)
    }
    expect(h.admit(candidate("a", "m2"), T0 + 10).ok).toBe(false)
  })

  it("after the cooldown the model gets one probe; its success forgets the model's circuit", () => {
    const h = Health.make(settings)
    for (let i = 0; i < settings.breaker.consecutiveFailures; i++) {
      h.report(candidate("a", "m1"), { _tag: "Failed", classified: modelDown, detail: "HTTP 503" }, false, T0)
    }
    const later = T0 + settings.breaker.cooldownMs
    expect(h.admit(candidate("a", "m1"), later)).toEqual({ ok: true, probe: true })
    expect(h.admit(candidate("a", "m1"), later + 1).ok).toBe(false)
    h.report(candidate("a", "m1"), { _tag: "Ok", ttfbMs: 5, totalMs: 10 }, true, later + 5)
    expect(h.admit(candidate("a", "m1"), later + 6)).toEqual({ ok: true, probe: false })
    expect(statusOf(h, "a", later + 6).model_circuits).toEqual([])
  })
})

describe("Health: transitions in and out of service are told once each", () => {
  const key = "sk-SECRET-abc123def456"
  const keyed = (provider: string, model = "m1"): Candidate => ({
    provider: providerSpec(provider, { models: ["m1", "m2"], apiKey: Redacted.make(key) }),
    upstreamModel: model
  })
  const recorder = () => {
    const seen: Array<Health.Transition> = []
    return { seen, h: Health.make(settings, (t) => seen.push(t)) }
  }
  const summary = (t: Health.Transition) =>
    t._tag === "Out" ? `out ${t.provider}${t.model === null ? "" : `/${t.model}`} ${t.outcome}${t.again ? " again" : ""}` : `back ${t.provider}${t.model === null ? "" : `/${t.model}`} ${t.outcome} ${t.via}`

  it("a circuit: out when it opens, not again while open, again when a probe fails, back when one succeeds", () => {
    const { seen, h } = recorder()
    for (let i = 0; i < 3; i++) h.report(candidate("a"), serverError, false, T0)
    expect(seen.map(summary)).toEqual(["out a circuit_open"])
    expect(seen[0]).toMatchObject({ detail: "HTTP 500", until: T0 + settings.breaker.cooldownMs })
    // Requests admitted before the trip keep failing: no new line.
    for (let i = 0; i < 5; i++) h.report(candidate("a"), serverError, false, T0 + 1)
    expect(seen).toHaveLength(1)
    const probeAt = T0 + settings.breaker.cooldownMs
    expect(h.admit(candidate("a"), probeAt)).toEqual({ ok: true, probe: true })
    h.report(candidate("a"), serverError, true, probeAt)
    expect(seen.map(summary)).toEqual(["out a circuit_open", "out a circuit_open again"])
    const next = probeAt + 2 * settings.breaker.cooldownMs
    expect(h.admit(candidate("a"), next)).toEqual({ ok: true, probe: true })
    h.report(candidate("a"), ok(5, 10), true, next)
    h.report(candidate("a"), ok(5, 10), false, next + 1)
    expect(seen.map(summary)).toEqual(["out a circuit_open", "out a circuit_open again", "back a circuit_open request"])
  })

  it("a model's own circuit names the model", () => {
    const { seen, h } = recorder()
    const modelDown = classifyRefusal(503, '{"error":{"message":"The model m1 is currently unavailable"}}', undefined)
    for (let i = 0; i < 4; i++) h.report(candidate("a", "m1"), { _tag: "Failed", classified: modelDown, detail: "HTTP 503" }, false, T0)
    expect(seen.map(summary)).toEqual(["out a/m1 circuit_open"])
  })

  it("misconfigured (401/403) and out of credits (402) once each, with the upstream's message and without the key", () => {
    const { seen, h } = recorder()
    const body = `{"error":{"message":"Incorrect API key provided: ${key}"}}`
    for (let i = 0; i < 3; i++) h.report(keyed("a"), refused(401, T0, body), false, T0 + i)
    for (let i = 0; i < 3; i++) h.report(keyed("b"), refused(402, T0, `{"error":{"message":"Payment required"}}`), false, T0 + i)
    expect(seen.map(summary)).toEqual(["out a misconfigured", "out b out_of_credits"])
    expect(seen[0]).toMatchObject({ until: T0 + settings.misconfiguredCooldownMs, detail: `HTTP 401: {"error":{"message":"Incorrect API key provided: <redacted>"}}` })
    expect(seen[1]).toMatchObject({ until: T0 + settings.outOfCreditsCooldownMs, detail: `HTTP 402: {"error":{"message":"Payment required"}}` })
    // Back once the cooldown is over and a request succeeds; a health check closes a circuit too.
    // (The last 402, at T0 + 2, set the time.)
    h.report(keyed("b"), ok(5, 10), false, T0 + 1 + settings.outOfCreditsCooldownMs)
    h.report(keyed("b"), ok(5, 10), false, T0 + 2 + settings.outOfCreditsCooldownMs)
    h.report(keyed("b"), ok(5, 10), false, T0 + 3 + settings.outOfCreditsCooldownMs)
    h.reportCheck("a", { _tag: "Healthy" }, T0 + 5)
    expect(seen.slice(2).map(summary)).toEqual(["back b out_of_credits request", "back a misconfigured health_check"])
  })

  it("a key cut short at the end of a detail is blanked too", () => {
    expect(Health.withoutKey(`HTTP 401: bad key ${key.slice(0, 9)}`, Redacted.make(key))).toBe("HTTP 401: bad key <redacted>")
    expect(Health.withoutKey(`HTTP 401: ${key} and ${key}`, Redacted.make(key))).toBe("HTTP 401: <redacted> and <redacted>")
    expect(Health.withoutKey("HTTP 401", null)).toBe("HTTP 401")
  })

  it.effect("Health.layer logs a warning when a provider goes out of service and info when it is back", () => {
    const lines: Array<{ level: string; message: string; annotations: Record<string, unknown> }> = []
    const capture = Logger.make(({ annotations, logLevel, message }) => {
      lines.push({
        level: logLevel.label,
        message: (Array.isArray(message) ? message : [message]).map(String).join(" "),
        annotations: Object.fromEntries(HashMap.toEntries(annotations))
      })
    })
    return Effect.gen(function* () {
      const h = yield* Health.Health
      for (let i = 0; i < 4; i++) h.report(keyed("a"), refused(401, T0, `{"error":{"message":"bad key ${key}"}}`), false, T0 + i)
      for (let i = 0; i < 5; i++) h.report(candidate("b"), serverError, false, T0)
      h.reportCheck("b", { _tag: "Healthy" }, T0 + 1)
      expect(lines.map((l) => [l.level, l.message])).toEqual([
        ["WARN", `provider a taken out of service: misconfigured until ${iso(T0 + settings.misconfiguredCooldownMs)}: HTTP 401: {"error":{"message":"bad key <redacted>"}}`],
        ["WARN", `provider b taken out of service: circuit_open until ${iso(T0 + settings.breaker.cooldownMs)}: HTTP 500`],
        ["INFO", "provider b back in service after circuit_open (a health check succeeded)"]
      ])
      expect(lines[0]!.annotations).toEqual({ provider: "a", outcome: "misconfigured", until: iso(T0 + settings.misconfiguredCooldownMs) })
      expect(JSON.stringify(lines)).not.toContain(key)
    }).pipe(
      Effect.provide(Health.layer),
      Effect.provide(Resilience.layer(settings)),
      Effect.provide(Logger.replace(Logger.defaultLogger, capture))
    )
  })
})
