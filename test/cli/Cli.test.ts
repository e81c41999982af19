/**
 * The `sanctum-router` executable, run as a child process exactly as an operator would: flags over
 * environment over file, clean one-line start-up failures, and prompt shutdown on signals.
 * Every child gets a controlled environment (no inherited ROUTER_* variables) and is killed by pid
 * if a test leaves it running.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { Agent, get } from "node:http"
import { createServer, type Server } from "node:net"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { freePort, getJson, removeDir, tempDir } from "../config/support.js"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const bin = join(root, "dist/cli/bin.js")
const version = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string }).version

/** The environment every child starts from: enough to run node, nothing of ours. */
const baseEnv = (): Record<string, string> => ({
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  HOME: process.env.HOME ?? "/tmp",
  NO_COLOR: "1"
})

const stripAnsi = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, "")
const lines = (s: string) => stripAnsi(s).split("\n").map((l) => l.trimEnd()).filter((l) => l.trim() !== "")
const stackTrace = /^\s+at\s|\.(ts|js):\d+:\d+/m

interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

interface Running {
  readonly child: ChildProcess
  readonly stdout: () => string
  readonly stderr: () => string
  readonly exited: Promise<Exit>
  /** Resolves with the port of the 'Listening on http://HOST:PORT' log line. */
  readonly listening: (timeoutMs?: number) => Promise<number>
}

const children = new Set<ChildProcess>()
const dirs: Array<string> = []

interface RunOptions {
  readonly env?: Record<string, string>
  readonly cwd?: string
}

/**
 * Starts the binary. Children are killed by `afterEach` unless `ownedByCaller` (then the caller
 * waits for the exit itself: concurrent tests must not kill each other's children).
 */
const run = (args: ReadonlyArray<string>, options: RunOptions = {}, ownedByCaller = false): Running => {
  const child = spawn(process.execPath, [bin, ...args], {
    cwd: options.cwd ?? workDir(),
    env: { ...baseEnv(), ...options.env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  if (!ownedByCaller) children.add(child)
  let out = ""
  let err = ""
  const waiters: Array<() => void> = []
  const notify = () => {
    for (const w of waiters.splice(0)) w()
  }
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    out += d
    notify()
  })
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    err += d
    notify()
  })
  const exited = new Promise<Exit>((res) =>
    child.once("exit", (code, signal) => {
      children.delete(child)
      // Let the pipes drain before anyone reads the output.
      setImmediate(() => {
        res({ code, signal })
        notify()
      })
    })
  )
  let done = false
  void exited.then(() => (done = true))
  const listening = (timeoutMs = 15_000) =>
    new Promise<number>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`no 'Listening on' line within ${timeoutMs} ms\nstdout: ${out}\nstderr: ${err}`)), timeoutMs)
      const check = () => {
        const m = /Listening on http:\/\/(?:\[[^\]]+\]|[^:\s/]+):(\d+)/.exec(stripAnsi(out + err))
        if (m !== null) {
          clearTimeout(timer)
          res(Number(m[1]))
        } else if (done) {
          clearTimeout(timer)
          rej(new Error(`exited before listening\nstdout: ${out}\nstderr: ${err}`))
        } else waiters.push(check)
      }
      check()
    })
  return { child, stdout: () => out, stderr: () => err, exited, listening }
}

/** Runs to completion (start-up failures, --help); fails the test if it takes longer than `timeoutMs`. */
const runToExit = async (args: ReadonlyArray<string>, options: RunOptions = {}, timeoutMs = 15_000) => {
  const r = run(args, options, true)
  const started = Date.now()
  try {
    const exit = await withTimeout(r.exited, timeoutMs, () => `did not exit within ${timeoutMs} ms\nstdout: ${r.stdout()}\nstderr: ${r.stderr()}`)
    return { ...exit, stdout: r.stdout(), stderr: r.stderr(), ms: Date.now() - started }
  } finally {
    if (r.child.pid !== undefined && r.child.exitCode === null && r.child.signalCode === null) process.kill(r.child.pid, "SIGKILL")
  }
}

const withTimeout = <A>(p: Promise<A>, ms: number, message: () => string): Promise<A> =>
  new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(message())), ms)
    p.then((a) => {
      clearTimeout(timer)
      res(a)
    }, (e) => {
      clearTimeout(timer)
      rej(e)
    })
  })

const workDir = () => {
  const d = tempDir("sanctum-cli-")
  dirs.push(d)
  return d
}

const writeConfig = (dir: string, name: string, text: string) => {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}

/** Sends a signal and waits for the exit, measuring how long it took. */
const stopWith = async (r: Running, signal: NodeJS.Signals) => {
  const started = Date.now()
  r.child.kill(signal)
  const exit = await withTimeout(r.exited, 10_000, () => `did not exit within 10 s of ${signal}\nstdout: ${r.stdout()}\nstderr: ${r.stderr()}`)
  return { ...exit, ms: Date.now() - started }
}

beforeAll(() => {
  // `npm test` builds first; a direct `vitest run test/cli` may not have.
  if (!existsSync(bin)) execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.json")], { cwd: root })
}, 120_000)

afterEach(() => {
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, "SIGKILL")
  }
  children.clear()
})

afterAll(() => {
  for (const d of dirs.splice(0)) removeDir(d)
})

/** Runs `f` once, on first use, and shares the result: several tests read one child's output. */
const once = <A>(f: () => Promise<A>): (() => Promise<A>) => {
  let p: Promise<A> | undefined
  return () => (p ??= f())
}

const modelIdsAt = async (port: number) => {
  const res = await getJson(`http://127.0.0.1:${port}/v1/models`)
  return (res.body as { data: Array<{ id: string }> }).data.map((m) => m.id).sort()
}

describe("help", () => {
  it("`npx sanctum-router --help` works from the project directory and lists serve with its flags", async () => {
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((res, rej) => {
      // Offline: the package must resolve to this project's own bin, never to the registry.
      const child = spawn("npx", ["sanctum-router", "--help"], {
        cwd: root,
        env: { ...baseEnv(), npm_config_offline: "true", npm_config_update_notifier: "false", npm_config_fund: "false" },
        stdio: ["ignore", "pipe", "pipe"]
      })
      children.add(child)
      let stdout = ""
      let stderr = ""
      child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
      child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
      child.once("error", rej)
      child.once("close", (code) => {
        children.delete(child)
        res({ code, stdout, stderr })
      })
    })
    expect(out.code, out.stderr).toBe(0)
    const text = stripAnsi(out.stdout)
    expect(text).toContain("sanctum-router")
    expect(text).toContain(version)
    expect(text).toMatch(/serve \[--config text\] \[--port integer\] \[--host text\] \[--db text\]/)
  })
})

describe("serve: a running daemon", () => {
  it("starts with no config file on an empty database, serves /health and an empty /v1/models, and stops promptly on SIGTERM with a keep-alive connection open", async () => {
    const dir = workDir()
    const r = run(["serve", "--port", "0", "--db", join(dir, "r.db")], { cwd: dir })
    const port = await r.listening()
    const url = `http://127.0.0.1:${port}`
    expect(await getJson(`${url}/health`)).toMatchObject({ status: 200, body: { status: "ok" } })
    expect(await getJson(`${url}/v1/models`)).toMatchObject({ status: 200, body: { object: "list", data: [] } })
    expect((await getJson(`${url}/admin/anything`)).status).toBe(401)
    const agent = new Agent({ keepAlive: true })
    try {
      // An idle keep-alive connection must not hold shutdown up.
      await new Promise<void>((res, rej) => {
        get({ host: "127.0.0.1", port, path: "/health", agent }, (response) => {
          response.resume()
          response.on("end", () => res())
        }).on("error", rej)
      })
      const exit = await stopWith(r, "SIGTERM")
      expect(exit.signal).toBeNull()
      expect([0, 130, 143]).toContain(exit.code)
      expect(exit.ms).toBeLessThan(3_000)
      expect(stackTrace.test(r.stderr())).toBe(false)
    } finally {
      agent.destroy()
    }
  })

  it("serves the providers of the --config file, and stops on SIGINT (Ctrl-C)", async () => {
    const dir = workDir()
    const config = writeConfig(dir, "router.yaml", "providers:\n  local:\n    endpoint: http://127.0.0.1:9/v1\n    models: [m1]\naliases:\n  fast: local+m1\n")
    const r = run(["serve", "--config", config, "--port", "0", "--db", join(dir, "r.db")], { cwd: dir })
    const port = await r.listening()
    expect(await modelIdsAt(port)).toEqual(["fast", "local+m1", "m1"])
    const exit = await stopWith(r, "SIGINT")
    expect(exit.signal).toBeNull()
    expect([0, 130]).toContain(exit.code)
    expect(exit.ms).toBeLessThan(3_000)
  })
})

describe("serve: flags over environment over file", () => {
  it("--port, --config, --db and --host each win over ROUTER_PORT, ROUTER_CONFIG, ROUTER_DB_PATH and ROUTER_HOST", async () => {
    const [envPort, flagPort] = [await freePort(), await freePort()]
    const dir = workDir()
    const fromEnv = writeConfig(dir, "env.yaml", "providers:\n  envp:\n    endpoint: http://127.0.0.1:9/v1\n    models: [env-model]\n")
    const fromFlag = writeConfig(dir, "flag.yaml", "providers:\n  flagp:\n    endpoint: http://127.0.0.1:9/v1\n    models: [flag-model]\n")
    const r = run(
      ["serve", "--config", fromFlag, "--port", String(flagPort), "--db", join(dir, "flag", "r.db"), "--host", "127.0.0.1"],
      {
        cwd: dir,
        env: { ROUTER_PORT: String(envPort), ROUTER_CONFIG: fromEnv, ROUTER_DB_PATH: join(dir, "env", "r.db"), ROUTER_HOST: "0.0.0.0" }
      }
    )
    expect(await r.listening()).toBe(flagPort)
    expect(await modelIdsAt(flagPort)).toEqual(["flag-model", "flagp+flag-model"])
    expect(existsSync(join(dir, "flag", "r.db"))).toBe(true)
    expect(existsSync(join(dir, "env"))).toBe(false)
    // ROUTER_HOST=0.0.0.0 without a client key would have been refused: the --host flag won.
  })

  it("ROUTER_PORT, ROUTER_CONFIG and ROUTER_DB_PATH are used without flags, ROUTER_PORT over the file's server.port", async () => {
    const [filePort, envPort] = [await freePort(), await freePort()]
    const dir = workDir()
    const config = writeConfig(dir, "router.yaml", `server:\n  port: ${filePort}\nproviders:\n  envp:\n    endpoint: http://127.0.0.1:9/v1\n    models: [env-model]\n`)
    const r = run(["serve"], { cwd: dir, env: { ROUTER_PORT: String(envPort), ROUTER_CONFIG: config, ROUTER_DB_PATH: join(dir, "env", "r.db") } })
    expect(await r.listening()).toBe(envPort)
    expect(await modelIdsAt(envPort)).toEqual(["env-model", "envp+env-model"])
    expect(existsSync(join(dir, "env", "r.db"))).toBe(true)
  })

  it("the file's server.port is used when neither flag nor environment gives one, and the database defaults to ./data/router.db", async () => {
    const filePort = await freePort()
    const dir = workDir()
    const config = writeConfig(dir, "router.yaml", `server:\n  port: ${filePort}\n  host: 127.0.0.1\n`)
    const r = run(["serve", "--config", config], { cwd: dir })
    expect(await r.listening()).toBe(filePort)
    expect(existsSync(join(dir, "data", "router.db"))).toBe(true)
  })
})

describe.concurrent("serve: start-up failures exit non-zero with one clear line", () => {
  // One child for the invalid-value tests, which read different things from its output.
  const invalidValue = once(async () => {
    const dir = workDir()
    const config = writeConfig(dir, "bad.yaml", "providers:\n  venice:\n    endpoint: https://api.venice.ai/api/v1\n    priority: high\n")
    const result = await runToExit(["serve", "--config", config, "--port", "0", "--db", join(dir, "r.db")], { cwd: dir })
    return { ...result, dir, config }
  })

  it("an invalid value: names the file, the key path and the problem, without a stack trace, before touching the database", async ({ expect }) => {
    const r = await invalidValue()
    expect(r.code).toBe(1)
    const err = lines(r.stderr)
    expect(err[0]).toMatch(/^sanctum-router: /)
    expect(err[0]).toContain(r.config)
    expect(r.stderr).toContain("providers.venice.priority")
    expect(r.stderr).toContain("\"high\"")
    expect(stackTrace.test(r.stderr + r.stdout)).toBe(false)
    expect(existsSync(join(r.dir, "r.db"))).toBe(false)
  })

  it("an invalid value: the whole report is ONE line on stderr", async ({ expect }) => {
    const r = await invalidValue()
    expect(r.code).toBe(1)
    const err = lines(r.stderr)
    expect(err, r.stderr).toHaveLength(1)
    expect(err[0]).toContain(r.config)
    expect(err[0]).toContain("providers.venice.priority")
  })

  it("an invalid config never prints a provider key substituted from the environment", async ({ expect }) => {
    const dir = workDir()
    // A list of providers instead of a mapping: a plausible mistake when porting another router's config.
    const config = writeConfig(dir, "list.yaml", [
      "providers:",
      "  - id: venice",
      "    endpoint: https://api.venice.ai/api/v1",
      "    api_key: ${VENICE_API_KEY}",
      ""
    ].join("\n"))
    const secret = "sk-venice-CLI-SECRET-3141"
    const r = await runToExit(["serve", "--config", config, "--port", "0", "--db", join(dir, "r.db")], { cwd: dir, env: { VENICE_API_KEY: secret } })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(config)
    expect(r.stderr + r.stdout).not.toContain(secret)
  })

  it("invalid YAML: names the file and the line, on one line, without a stack trace", async ({ expect }) => {
    const dir = workDir()
    const config = writeConfig(dir, "broken.yaml", "providers:\n  p: [\n    unclosed\n")
    const r = await runToExit(["serve", "--config", config, "--port", "0", "--db", join(dir, "r.db")], { cwd: dir })
    expect(r.code).toBe(1)
    const err = lines(r.stderr)
    expect(err, r.stderr).toHaveLength(1)
    expect(err[0]).toMatch(/^sanctum-router: /)
    expect(err[0]).toContain(config)
    expect(err[0]).toMatch(/line \d+/)
    expect(stackTrace.test(r.stderr + r.stdout)).toBe(false)
  })

  it("--port 99999: one line naming the port, promptly", async ({ expect }) => {
    const dir = workDir()
    const r = await runToExit(["serve", "--port", "99999", "--db", join(dir, "r.db")], { cwd: dir })
    expect(r.code).toBe(1)
    const err = lines(r.stderr)
    expect(err, r.stderr).toHaveLength(1)
    expect(err[0]).toMatch(/^sanctum-router: .*99999/)
    expect(stackTrace.test(r.stderr + r.stdout)).toBe(false)
    expect(existsSync(join(dir, "r.db"))).toBe(false)
  })

  // Text, negative, a fraction, an exponent (which `Number` would read), above 65535, empty.
  for (const value of ["abc", "-1", "0.5", "1e3", "65536", ""]) {
    it(`--port ${JSON.stringify(value)}: one line naming the flag, the value and the range, before touching the database`, async ({ expect }) => {
      const dir = workDir()
      const r = await runToExit(["serve", "--port", value, "--db", join(dir, "r.db")], { cwd: dir })
      expect(r.code).toBe(1)
      expect(lines(r.stderr), r.stderr).toEqual([`sanctum-router: Invalid --port ${JSON.stringify(value)}: expected a port number (0-65535)`])
      expect(stackTrace.test(r.stderr + r.stdout)).toBe(false)
      expect(existsSync(join(dir, "r.db"))).toBe(false)
    })
  }

  it("ROUTER_PORT=99999: one line on stderr naming ROUTER_PORT", async ({ expect }) => {
    const dir = workDir()
    const r = await runToExit(["serve", "--db", join(dir, "r.db")], { cwd: dir, env: { ROUTER_PORT: "99999" } })
    expect(r.code).toBe(1)
    const err = lines(r.stderr)
    expect(err, `stderr: ${r.stderr}\nstdout: ${r.stdout}`).toHaveLength(1)
    expect(err[0]).toMatch(/^sanctum-router: .*ROUTER_PORT/)
  })

  it("--host 0.0.0.0 without ROUTER_CLIENT_KEY: one line saying why", async ({ expect }) => {
    const dir = workDir()
    const r = await runToExit(["serve", "--host", "0.0.0.0", "--port", "0", "--db", join(dir, "r.db")], { cwd: dir })
    expect(r.code).toBe(1)
    const err = lines(r.stderr)
    expect(err, r.stderr).toHaveLength(1)
    expect(err[0]).toMatch(/^sanctum-router: /)
    expect(err[0]).toContain("0.0.0.0")
    expect(err[0]).toContain("ROUTER_CLIENT_KEY")
    expect(existsSync(join(dir, "r.db"))).toBe(false)
  })

  it("a port already in use: one line saying it cannot listen", async ({ expect }) => {
    const blocker: Server = createServer()
    const port = await new Promise<number>((res) => blocker.listen(0, "127.0.0.1", () => res((blocker.address() as { port: number }).port)))
    try {
      const dir = workDir()
      const r = await runToExit(["serve", "--port", String(port), "--db", join(dir, "r.db")], { cwd: dir })
      expect(r.code).toBe(1)
      const err = lines(r.stderr)
      expect(err, r.stderr).toHaveLength(1)
      expect(err[0]).toMatch(/^sanctum-router: .*listen/)
      expect(err[0]).toContain(String(port))
      expect(stackTrace.test(r.stderr + r.stdout)).toBe(false)
    } finally {
      await new Promise<void>((res) => blocker.close(() => res()))
    }
  })
})

describe("fake-provider: a port it cannot listen on", () => {
  it("a port already in use: one line saying it cannot listen, as serve says it", async ({ expect }) => {
    const blocker: Server = createServer()
    const port = await new Promise<number>((res) => blocker.listen(0, "127.0.0.1", () => res((blocker.address() as { port: number }).port)))
    try {
      const r = await runToExit(["fake-provider", "--port", String(port)])
      expect(r.code).toBe(1)
      const err = lines(r.stderr)
      expect(err, r.stderr).toHaveLength(1)
      expect(err[0]).toMatch(/^sanctum-router: cannot listen: .*EADDRINUSE/)
      expect(err[0]).toContain(String(port))
      expect(stackTrace.test(r.stderr + r.stdout)).toBe(false)
    } finally {
      await new Promise<void>((res) => blocker.close(() => res()))
    }
  })
})

describe.concurrent("fake-provider: a bad number in a flag stops it with one line naming the flag", () => {
  for (const [flag, value, expected] of [
    ["--port", "abc", "a port number (0-65535)"],
    ["--port", "70000", "a port number (0-65535)"],
    ["--status", "42", "an HTTP status (100-599)"],
    ["--status", "5xx", "an HTTP status (100-599)"],
    ["--after", "-1", "a whole number (0 or more)"],
    ["--delay-ms", "1.5", "a number of milliseconds (0-2147483647)"],
    ["--delay-ms", "9999999999", "a number of milliseconds (0-2147483647)"],
    ["--retry-after", "soon", "a whole number of seconds (0 or more)"]
  ] as const) {
    it(`${flag} ${value}`, async ({ expect }) => {
      const r = await runToExit(["fake-provider", ...(flag === "--port" ? [] : ["--port", "0"]), flag, value])
      expect(r.code).toBe(1)
      expect(lines(r.stderr), r.stderr).toEqual([`sanctum-router: Invalid ${flag} ${JSON.stringify(value)}: expected ${expected}`])
      expect(stackTrace.test(r.stderr + r.stdout)).toBe(false)
    })
  }
})
