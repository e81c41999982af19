#!/usr/bin/env node
// npm run bench: the router's added latency and throughput, measured against a direct call to the
// upstream and a bare pass-through proxy in the same run, so machine noise hits all three alike.
//
//   BENCH_SECONDS   seconds measured per target and concurrency (default 6)
//   BENCH_ROUNDS    rounds the seconds are split into, targets interleaved (default 3)
//   BENCH_WARMUP    warm-up seconds per target before the first level (default 5; 1 before later ones)
//   BENCH_CONCURRENCY  comma-separated concurrency levels (default 1,32)
//
// The targets: p50 added ≤ 250 µs at concurrency 1, and at concurrency 32 a throughput of at least
// 0.4 of the bare baseline's.
import { fork, spawn } from "node:child_process"
import { mkdtempSync, writeFileSync, rmSync, existsSync, readFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join, dirname } from "node:path"
import { fileURLToPath } from "node:url"
import { Pool } from "undici"

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, "..")
const seconds = Number(process.env.BENCH_SECONDS ?? 6)
// Five seconds because that is how long V8 takes to finish optimising the router under load: traced
// here, its optimising compiler finished 114, 119, 72, 22 and 12 functions in the first five seconds
// and almost none after, so a 1 s warm-up measured the first round partly on code not yet
// optimised. A daemon runs warm; later levels find all three targets warm already.
const warmup = Number(process.env.BENCH_WARMUP ?? 5)

const children = []
const cleanup = () => { for (const c of children) c.kill("SIGTERM") }
process.on("exit", cleanup)
process.on("SIGINT", () => process.exit(130))

const forkServer = (file, env) => new Promise((resolve, reject) => {
  const child = fork(join(here, file), [], { env: { ...process.env, ...env }, stdio: ["ignore", "inherit", "inherit", "ipc"] })
  children.push(child)
  child.once("message", (m) => resolve(m.port))
  child.once("exit", (code) => reject(new Error(`${file} exited with ${code}`)))
})

const freePort = () => new Promise((resolve) => {
  const s = createServer()
  s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)) })
})

const waitHealthy = async (port, child) => {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`router exited with ${child.exitCode}`)
    try {
      const r = await fetch(`http://127.0.0.1:${port}/health`)
      if (r.ok) return
    } catch {}
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error("router did not become healthy")
}

const startRouter = async (upstreamPort) => {
  const bin = join(root, "dist", "cli", "bin.js")
  if (!existsSync(bin)) throw new Error("dist/ is missing: run `npm install` (or `npm run build`) first")
  const dir = mkdtempSync(join(tmpdir(), "sanctum-bench-"))
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }))
  const config = join(dir, "router.yaml")
  writeFileSync(config, JSON.stringify({
    providers: { bench: { endpoint: `http://127.0.0.1:${upstreamPort}/v1`, models: ["bench-model"], priority: 1 } }
  }))
  const port = await freePort()
  const child = spawn(process.execPath, [bin, "serve", "--config", config, "--port", String(port), "--db", join(dir, "router.db")], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, ROUTER_CLIENT_KEY: "", ROUTER_ADMIN_KEY: "" }
  })
  children.push(child)
  await waitHealthy(port, child)
  routerPid = child.pid
  return port
}

let routerPid
/** Resident memory of the router process in MiB (Linux), or null where /proc is not there. */
const routerRssMiB = () => {
  try {
    const kb = Number(readFileSync(`/proc/${routerPid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)?.[1])
    return Number.isFinite(kb) ? kb / 1024 : null
  } catch {
    return null
  }
}

const body = JSON.stringify({
  model: "bench-model",
  messages: [{ role: "system", content: "You are terse." }, { role: "user", content: "Say hello." }],
  temperature: 0.2
})

// Closed-loop load: `concurrency` workers, each sends its next request when the last one is answered.
const run = async (port, concurrency, durationS) => {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: concurrency, pipelining: 1 })
  const latencies = []
  let errors = 0
  const deadline = performance.now() + durationS * 1000
  const worker = async () => {
    while (performance.now() < deadline) {
      const t0 = process.hrtime.bigint()
      try {
        const r = await pool.request({
          method: "POST", path: "/v1/chat/completions",
          headers: { "content-type": "application/json" }, body
        })
        await r.body.arrayBuffer()
        if (r.statusCode !== 200) errors++
      } catch { errors++ }
      latencies.push(Number(process.hrtime.bigint() - t0) / 1000)
    }
  }
  const started = performance.now()
  await Promise.all(Array.from({ length: concurrency }, worker))
  const elapsed = (performance.now() - started) / 1000
  await pool.close()
  return { latencies, elapsed, errors }
}

/**
 * Rounds interleave the targets (direct, baseline, router, direct, …) so that a noisy moment on the
 * machine lands on all of them alike; each target's samples are merged across rounds.
 */
const rounds = Number(process.env.BENCH_ROUNDS ?? 3)
const levels = (process.env.BENCH_CONCURRENCY ?? "1,32").split(",").map(Number)

const merge = (parts) => {
  const latencies = parts.flatMap((p) => p.latencies).sort((a, b) => a - b)
  const elapsed = parts.reduce((s, p) => s + p.elapsed, 0)
  const pct = (q) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))] ?? NaN
  return { rps: latencies.length / elapsed, p50: pct(0.5), p99: pct(0.99), errors: parts.reduce((s, p) => s + p.errors, 0), n: latencies.length }
}

const fmt = (n) => n.toFixed(0).padStart(7)
const main = async () => {
  const upstreamPort = await forkServer("bench-upstream.mjs", {})
  const baselinePort = await forkServer("bench-baseline.mjs", { UPSTREAM_PORT: String(upstreamPort) })
  const routerPort = await startRouter(upstreamPort)
  const targets = { direct: upstreamPort, baseline: baselinePort, router: routerPort }
  console.log(`sanctum-router bench: ${seconds}s per target in ${rounds} interleaved rounds after ${warmup}s warm-up, node ${process.version}`)
  // The router's busy polling (README, Performance) is on by default; ROUTER_BUSY_POLL_US=0 measures it off.
  console.log(`router busy polling: ${process.env.ROUTER_BUSY_POLL_US?.trim() ? `${process.env.ROUTER_BUSY_POLL_US.trim()} µs (ROUTER_BUSY_POLL_US)` : "500 µs (the default)"}`)
  const report = {}
  for (const [level, concurrency] of levels.entries()) {
    for (const port of Object.values(targets)) await run(port, concurrency, level === 0 ? warmup : Math.min(warmup, 1))
    const parts = Object.fromEntries(Object.keys(targets).map((name) => [name, []]))
    for (let round = 0; round < rounds; round++) {
      for (const [name, port] of Object.entries(targets)) parts[name].push(await run(port, concurrency, seconds / rounds))
    }
    const results = Object.fromEntries(Object.entries(parts).map(([name, p]) => [name, merge(p)]))
    report[concurrency] = results
    console.log(`\nconcurrency ${concurrency}`)
    console.log("target       req/s   p50 µs   p99 µs  added p50  added p99  share of direct  errors")
    for (const [name, r] of Object.entries(results)) {
      const addedP50 = name === "direct" ? "" : fmt(r.p50 - results.direct.p50)
      const addedP99 = name === "direct" ? "" : fmt(r.p99 - results.direct.p99)
      console.log(`${name.padEnd(9)} ${fmt(r.rps)}  ${fmt(r.p50)}  ${fmt(r.p99)}    ${addedP50.padStart(7)}    ${addedP99.padStart(7)}  ${(r.rps / results.direct.rps).toFixed(2).padStart(15)}  ${String(r.errors).padStart(6)}`)
    }
  }
  const c1 = report[1], c32 = report[32]
  console.log("")
  if (c1) {
    console.log(`router added p50 at c=1: ${(c1.router.p50 - c1.direct.p50).toFixed(0)} µs (target ≤ 250)`)
    // The part of it that is the router's own work: what a bare proxy would not cost on this machine.
    console.log(`router p50 above the bare baseline at c=1: ${(c1.router.p50 - c1.baseline.p50).toFixed(0)} µs`)
  }
  if (c32) console.log(`router throughput at c=32: ${(c32.router.rps / c32.baseline.rps).toFixed(2)} of the bare baseline's (target ≥ 0.40)`)
  const rss = routerRssMiB()
  if (rss !== null) console.log(`router resident memory after the run: ${rss.toFixed(0)} MiB`)
  const errors = Object.values(report).flatMap((r) => Object.values(r)).reduce((n, r) => n + r.errors, 0)
  if (errors > 0) { console.error(`${errors} requests failed`); process.exitCode = 1 }
}

main().catch((e) => { console.error(e); process.exitCode = 1 }).finally(cleanup)
