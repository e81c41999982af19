/**
 * The fast lane's inline scheduler: woken fibers continue in the waking callback, yet a long run
 * still gives the event loop a turn and nested wake-ups do not grow the stack without bound.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Runtime } from "effect"
import { inline } from "../../src/http/FastLane.js"

const runFork = Runtime.runFork(Runtime.defaultRuntime)
const fork = <A, E>(effect: Effect.Effect<A, E>) => runFork(effect, { scheduler: inline })

describe("FastLane.inline", () => {
  it("a fiber woken by a callback continues inside that callback", async () => {
    let wake: (() => void) | undefined
    const steps: Array<string> = []
    const fiber = fork(
      Effect.async<void>((resume) => {
        wake = () => resume(Effect.void)
      }).pipe(Effect.tap(() => Effect.sync(() => steps.push("fiber continued"))))
    )
    await new Promise((r) => setImmediate(r))
    wake!()
    steps.push("callback returned")
    expect(steps).toEqual(["fiber continued", "callback returned"])
    await Effect.runPromise(Fiber.join(fiber))
  })

  it("a long synchronous run yields to the event loop", async () => {
    let ticks = 0
    const timer = setInterval(() => ticks++, 0)
    const fiber = fork(Effect.forEach(Array.from({ length: 200_000 }, (_, i) => i), (i) => Effect.sync(() => i * 2), { discard: true }))
    await Effect.runPromise(Fiber.join(fiber))
    clearInterval(timer)
    // Every 2,048 steps the fiber went to setImmediate, so the interval got turns in between.
    expect(ticks).toBeGreaterThan(0)
  })

  it("a chain of fibers each waking the next does not overflow the stack", async () => {
    const n = 5_000
    const gates = await Effect.runPromise(Effect.forEach(Array.from({ length: n + 1 }), () => Deferred.make<void>()))
    const fibers = gates.slice(0, n).map((gate, i) => fork(Effect.zipRight(Deferred.await(gate), Deferred.succeed(gates[i + 1]!, undefined))))
    await new Promise((r) => setImmediate(r))
    Effect.runSync(Deferred.succeed(gates[0]!, undefined))
    await Effect.runPromise(Deferred.await(gates[n]!))
    await Effect.runPromise(Fiber.joinAll(fibers))
  })
})
