/**
 * A provider's `max_connections` through the real daemon, with the official `openai` client: a
 * local server with a few slots (llama.cpp's `--parallel`) never gets more requests at once than
 * the cap, the rest wait in the router and are all answered; a request that waits as long as
 * the provider's first_byte moves on to the next candidate (outcome `busy`).
 *
 * The upstream holds every chat request until the test answers it, so what is in flight there at
 * any moment is the test's to decide, not a matter of timing.
 */
import type { ServerResponse } from "node:http"
import { afterAll, describe, expect, it } from "vitest"
import { chatChunks, chatCompletion, modelList } from "../../src/testing/Script.js"
import { attemptsOf, clientOf, harness, loopbackServer, newRequestId, recordOf } from "./helpers.js"

const h = harness()
const extraClosers: Array<() => Promise<void>> = []
afterAll(async () => {
  await h.closeAll()
  for (const close of extraClosers.splice(0)) await close()
})

/** Active health checks that run once at start and then not while a test runs. */
const quietChecks = { health_check_interval: 3_600, health_check_timeout: 3_600 }

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

interface HeldUpstream {
  readonly url: string
  /** Chat requests received so far. */
  readonly received: () => number
  /** Chat requests received and not yet answered to their end. */
  readonly inFlight: () => number
  /** The most chat requests ever in flight at once. */
  readonly maxInFlight: () => number
  /** Resolves once `n` chat requests have been received. */
  readonly arrived: (n: number) => Promise<void>
  /** Answers the oldest request still held: a whole completion echoing its last message. */
  readonly answerOldest: () => void
  /** Sends the rest of request `i`'s stream (its first content event went out on arrival). */
  readonly finishStream: (i: number) => void
}

/**
 * An upstream that holds each chat request: a plain one until `answerOldest`, a streamed one after
 * its first content event until `finishStream`. `GET /models` is answered at once.
 */
const heldUpstream = async (): Promise<HeldUpstream> => {
  const held: Array<{ readonly res: ServerResponse; readonly request: Record<string, unknown>; answered: boolean }> = []
  const waiters: Array<() => void> = []
  let inFlight = 0
  let maxInFlight = 0
  const server = await loopbackServer((req, res, raw) => {
    if (!(req.url ?? "").endsWith("/chat/completions")) {
      return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(modelList(["m1"])))
    }
    const request = JSON.parse(raw) as Record<string, unknown>
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    // Fires when the answer has been sent to its end, or the connection went.
    res.on("close", () => inFlight--)
    held.push({ res, request, answered: request.stream === true })
    if (request.stream === true) {
      res.writeHead(200, { "content-type": "text/event-stream" })
      // The role, then the first content: past the router's commit point.
      for (const event of chatChunks("m1", "streamed answer", request).slice(0, 2)) res.write(event)
    }
    for (const wake of waiters.splice(0)) wake()
  })
  extraClosers.push(server.close)
  const arrived = (n: number): Promise<void> =>
    held.length >= n ? Promise.resolve() : new Promise((resolve) => waiters.push(() => void arrived(n).then(resolve)))
  const lastMessage = (request: Record<string, unknown>) => {
    const messages = request.messages as ReadonlyArray<{ readonly content: string }>
    return messages[messages.length - 1]!.content
  }
  return {
    url: server.url,
    received: () => held.length,
    inFlight: () => inFlight,
    maxInFlight: () => maxInFlight,
    arrived,
    answerOldest: () => {
      const next = held.find((e) => !e.answered)
      if (next === undefined) throw new Error("no request is held")
      next.answered = true
      const body = JSON.stringify(chatCompletion("m1", `answer to ${lastMessage(next.request)}`, next.request))
      next.res.writeHead(200, { "content-type": "application/json" }).end(body)
    },
    finishStream: (i) => {
      const { res, request } = held[i]!
      for (const event of chatChunks("m1", "streamed answer", request).slice(2)) res.write(event)
      res.end()
    }
  }
}

describe("max_connections", () => {
  it("sends a provider at most max_connections requests at once; the rest wait in the router and all are answered", async () => {
    const local = await heldUpstream()
    const router = await h.router({
      config: { providers: { local: { endpoint: local.url, models: ["m1"], max_connections: 2 } }, monitoring: quietChecks }
    })
    const client = clientOf(router)
    const questions = ["q0", "q1", "q2", "q3", "q4"]
    const replies = Promise.allSettled(
      questions.map((q) => client.chat.completions.create({ model: "m1", messages: [{ role: "user", content: q }] }))
    )
    for (let answered = 0; answered < questions.length; answered++) {
      // The cap's worth in flight (fewer at the end), each answered while the others wait.
      await local.arrived(Math.min(answered + 2, questions.length))
      // Room for a request beyond the cap to reach the upstream, were there no cap.
      await sleep(100)
      expect(local.inFlight(), `in flight after ${answered} answers`).toBe(Math.min(2, questions.length - answered))
      local.answerOldest()
    }
    const results = await replies
    expect(results.map((r) => (r.status === "fulfilled" ? r.value.choices[0]?.message.content : String(r.reason)))).toEqual(
      questions.map((q) => `answer to ${q}`)
    )
    expect(local.received()).toBe(5)
    expect(local.maxInFlight()).toBe(2)
  })

  it("moves a request that waited first_byte for a connection on to the next candidate, as busy", async () => {
    const local = await heldUpstream()
    const spare = await h.fake({ name: "spare", models: ["m1"] })
    const router = await h.router({
      config: {
        providers: {
          local: { endpoint: local.url, models: ["m1"], priority: 1, max_connections: 1, timeouts: { first_byte: 0.5 } },
          spare: { endpoint: spare.url, models: ["m1"], priority: 2 }
        },
        monitoring: quietChecks
      }
    })
    const client = clientOf(router)
    // A stream holds local's one connection: its first event has come, its end has not.
    const stream = await client.chat.completions.create({ model: "m1", messages: [{ role: "user", content: "long" }], stream: true })
    const chunks = stream[Symbol.asyncIterator]()
    expect((await chunks.next()).value?.choices[0]?.delta.role).toBe("assistant")
    expect(local.inFlight()).toBe(1)

    const started = Date.now()
    const requestId = newRequestId("maxconn")
    const { data, response } = await client.chat.completions
      .create({ model: "m1", messages: [{ role: "user", content: "short" }] }, { headers: { "x-request-id": requestId } })
      .withResponse()
    expect(Date.now() - started).toBeGreaterThanOrEqual(450)
    expect(data.choices[0]?.message.content).toBe("Hello from spare!")
    expect(response.headers.get("x-router-attempts")).toBe("local:busy,spare:ok")
    // The record says how long it waited, and for how many connections: the cap to raise.
    expect(attemptsOf(await recordOf(router, requestId)).map((a) => [a.provider, a.outcome, a.detail])).toEqual([
      ["local", "busy", "no free connection to the provider within 500 ms (max_connections 1)"],
      ["spare", "ok", "ok"]
    ])
    // The waiting request never reached local: it waited in the router.
    expect(local.received()).toBe(1)

    local.finishStream(0)
    let text = ""
    for (let next = await chunks.next(); next.done !== true; next = await chunks.next()) text += next.value.choices[0]?.delta.content ?? ""
    expect(text).toBe("streamed answer")
  })
})
