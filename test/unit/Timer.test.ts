import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { deadlines, scheduler } from "../../src/router/Timer.js"

describe("deadlines (one timer for first byte and total)", () => {
  it.effect("expires on the first byte when none came", () =>
    Effect.gen(function* () {
      const fired: Array<string> = []
      deadlines(scheduler(yield* Effect.clock), 100, 1000, (w) => fired.push(w))
      yield* TestClock.adjust("99 millis")
      expect(fired).toEqual([])
      yield* TestClock.adjust("1 millis")
      expect(fired).toEqual(["first_byte"])
      yield* TestClock.adjust("1 hour")
      expect(fired).toEqual(["first_byte"])
    }))

  it.effect("after the first byte, expires at the total and not before", () =>
    Effect.gen(function* () {
      const fired: Array<string> = []
      const d = deadlines(scheduler(yield* Effect.clock), 100, 1000, (w) => fired.push(w))
      yield* TestClock.adjust("50 millis")
      d.firstByte()
      yield* TestClock.adjust("949 millis")
      expect(fired).toEqual([])
      yield* TestClock.adjust("1 millis")
      expect(fired).toEqual(["total"])
    }))

  it.effect("cancel stops both deadlines, before or after the first byte", () =>
    Effect.gen(function* () {
      const fired: Array<string> = []
      const early = deadlines(scheduler(yield* Effect.clock), 100, 1000, (w) => fired.push(`early:${w}`))
      early.cancel()
      const late = deadlines(scheduler(yield* Effect.clock), 100, 1000, (w) => fired.push(`late:${w}`))
      late.firstByte()
      yield* TestClock.adjust("500 millis")
      late.cancel()
      yield* TestClock.adjust("1 hour")
      expect(fired).toEqual([])
    }))

  it.effect("a total shorter than the first-byte limit wins", () =>
    Effect.gen(function* () {
      const fired: Array<string> = []
      deadlines(scheduler(yield* Effect.clock), 5000, 300, (w) => fired.push(w))
      yield* TestClock.adjust("300 millis")
      expect(fired).toEqual(["total"])
    }))
})
