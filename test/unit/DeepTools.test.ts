/**
 * A `tools` value nested deeper than the stack allows: validation never walks it, but the prompt
 * estimate serializes it. Wherever the estimate is needed the answer is the documented 400, never a
 * defect (a 500, or an empty answer from the admin API).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { InvalidRequest, UpstreamRejected } from "../../src/domain/Errors.js"
import * as Router from "../../src/router/Router.js"
import { FakeUpstream } from "../../src/testing/FakeUpstream.js"
import { chat, endpoint, failureOf, routerWith } from "./helpers.js"

const depth = 100_000
const deepTools = () => JSON.parse("[".repeat(depth) + "]".repeat(depth)) as Array<unknown>

/** `a` knows its context window, so the policy's gate needs the prompt estimate. */
const known = {
  providers: {
    a: { endpoint: endpoint("a"), models: ["m"], model_overrides: { m: { context_length: 8192 } } }
  }
}
/** Nothing is known about `u`'s window: only explain (or a context refusal) asks for the estimate. */
const unknown = {
  providers: {
    u: { endpoint: endpoint("u"), models: ["m"], priority: 1 },
    v: { endpoint: endpoint("v"), models: ["m"], priority: 2 }
  }
}

const calls = Effect.flatMap(FakeUpstream, (f) => f.calls)

const expectTooDeep = (e: unknown) => {
  expect((e as { _tag: string })._tag).toBe("InvalidRequest")
  expect((e as InvalidRequest).code).toBe("invalid_json")
  expect((e as InvalidRequest).message).toContain("nested too deeply")
}

describe("a deeply nested tools array", () => {
  it.effect("is a 400 for chat, plain and streamed, when a known context window needs the estimate", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      for (const stream of [false, true]) {
        expectTooDeep(yield* failureOf(router.chat({ request: chat("m", { tools: deepTools(), stream }) })))
      }
      expect(yield* calls).toEqual([])
    }).pipe(Effect.provide(routerWith(known))))

  for (const [name, config] of [["known", known], ["unknown", unknown]] as const) {
    it.effect(`is a 400 for explain, which always shows the estimate (context window ${name})`, () =>
      Effect.gen(function* () {
        const router = yield* Router.Router
        expectTooDeep(yield* failureOf(router.explain({ endpoint: "chat", request: chat("m", { tools: deepTools() }) })))
      }).pipe(Effect.provide(routerWith(config))))
  }

  it.effect("after a context refusal with no window known anywhere, the refusal is returned (no estimate needed)", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      // The client's bytes, as the HTTP edge passes them: forwarded as they are, never serialized.
      const rawText = `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":${"[".repeat(depth)}${"]".repeat(depth)}}`
      const e = yield* failureOf(router.chat({ request: JSON.parse(rawText), raw: new Uint8Array(Buffer.from(rawText)) }))
      expect(e._tag).toBe("UpstreamRejected")
      expect((e as UpstreamRejected).attempts.map((a) => `${a.provider}:${a.outcome}`)).toEqual(["u:context_too_long"])
    }).pipe(Effect.provide(routerWith(unknown, {
      u: { behaviour: { mode: "status", status: 400, body: { error: { message: "This model's maximum context length is 8192 tokens", type: "invalid_request_error", param: null, code: "context_length_exceeded" } } } }
    }))))
})
