/**
 * `sanctum-router fake-provider`: the scripted backend as a standalone server, for rehearsing
 * outages against a real config. Run as a child process, as an operator would.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import OpenAI from "openai"
import { afterEach, describe, expect, it } from "vitest"
import { startRouter } from "../kit/TestRouter.js"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const bin = join(root, "dist/cli/bin.js")
const children = new Set<ChildProcess>()
afterEach(() => {
  for (const c of children) c.kill("SIGKILL")
  children.clear()
})

/** Starts a fake provider on an ephemeral port and resolves with its API root URL. */
const fake = (args: ReadonlyArray<string>): Promise<string> =>
  new Promise((resolveUrl, reject) => {
    const child = spawn(process.execPath, [bin, "fake-provider", "--port", "0", ...args], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    children.add(child)
    let out = ""
    const onData = (d: Buffer) => {
      out += d.toString()
      const m = out.match(/listening on (http:\/\/(?:127\.0\.0\.1|\[::1\]):\d+\/v1)/)
      if (m !== null) resolveUrl(m[1]!)
    }
    child.stdout.on("data", onData)
    child.stderr.on("data", onData)
    child.once("exit", (code) => reject(new Error(`fake-provider exited with ${code}: ${out}`)))
  })

const body = JSON.stringify({ model: "fake-model", messages: [{ role: "user", content: "hi" }] })

describe("sanctum-router fake-provider", () => {
  it("answers like an OpenAI-compatible backend in ok mode, with the given content", async () => {
    const url = await fake(["--mode", "ok", "--content", "rehearsal", "--models", "a,b"])
    const models = (await (await fetch(`${url}/models`)).json()) as { data: Array<{ id: string }> }
    expect(models.data.map((m) => m.id)).toEqual(["a", "b"])
    const res = await fetch(`${url}/chat/completions`, { method: "POST", body, headers: { "content-type": "application/json" } })
    expect(res.status).toBe(200)
    expect(((await res.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]?.message.content).toBe("rehearsal")
  })

  it("prints a URL that works for an IPv6 host too (in brackets)", async () => {
    const url = await fake(["--host", "::1", "--models", "v6"])
    expect(url).toMatch(/^http:\/\/\[::1\]:\d+\/v1$/)
    const models = (await (await fetch(`${url}/models`)).json()) as { data: Array<{ id: string }> }
    expect(models.data.map((m) => m.id)).toEqual(["v6"])
  })

  it("fails with the given status, and rate-limits with Retry-After", async () => {
    const failing = await fake(["--mode", "status", "--status", "503"])
    expect((await fetch(`${failing}/chat/completions`, { method: "POST", body })).status).toBe(503)
    const limited = await fake(["--mode", "rate-limited", "--retry-after", "7"])
    const res = await fetch(`${limited}/chat/completions`, { method: "POST", body })
    expect(res.status).toBe(429)
    expect(res.headers.get("retry-after")).toBe("7")
  })

  it("sends an error object inside a 200 in error200 mode", async () => {
    const url = await fake(["--mode", "error200", "--status", "429"])
    const res = await fetch(`${url}/chat/completions`, { method: "POST", body })
    expect(res.status).toBe(200)
    expect(((await res.json()) as { error: { code: number } }).error.code).toBe(429)
  })

  it("sends a whole answer's status and headers and then part of its body in stall-body mode, and goes silent", async () => {
    const url = await fake(["--mode", "stall-body", "--after", "10"])
    const res = await fetch(`${url}/chat/completions`, { method: "POST", body, headers: { "content-type": "application/json" } })
    expect(res.status).toBe(200)
    expect(res.headers.get("content-type")).toContain("application/json")
    const reader = res.body!.getReader()
    const first = await reader.read()
    expect(new TextDecoder().decode(first.value)).toBe('{"id":"cha')
    // Nothing more comes: the next read is still pending when the first is long done.
    const next = await Promise.race([reader.read().then(() => "more"), new Promise((r) => setTimeout(() => r("silent"), 300))])
    expect(next).toBe("silent")
    await reader.cancel()
  })

  it("lets an operator rehearse a failover against a real router config", async () => {
    const down = await fake(["--mode", "error200", "--status", "503", "--name", "down"])
    const up = await fake(["--mode", "ok", "--name", "up"])
    const router = await startRouter({
      config: {
        providers: {
          down: { endpoint: down, models: ["fake-model"], priority: 1 },
          up: { endpoint: up, models: ["fake-model"], priority: 2 }
        }
      }
    })
    try {
      const client = new OpenAI({ baseURL: router.baseURL, apiKey: "unused", maxRetries: 0 })
      const { data, response } = await client.chat.completions.create({ model: "fake-model", messages: [{ role: "user", content: "hi" }] }).withResponse()
      expect(data.choices[0]?.message.content).toBe("Hello from up!")
      expect(response.headers.get("x-router-attempts")).toBe("down:server_error,up:ok")
    } finally {
      await router.close()
    }
  })
})
