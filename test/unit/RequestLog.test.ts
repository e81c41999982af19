/**
 * Request-record retention, on a real SQLite file: records older than the retention go (at start
 * and every hour, in slices), younger ones stay, and a retention of 0 keeps everything. Time is
 * `TestClock`'s, so a month passes in a moment.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, TestClock } from "effect"
import * as RequestLog from "../../src/persistence/RequestLog.js"
import { requestLogLayer } from "./helpers.js"

const day = 86_400_000

const record = (requestId: string, createdAt: number): RequestLog.RequestRecord => ({
  requestId,
  createdAt,
  endpoint: "chat",
  model: "m",
  stream: false,
  provider: "p",
  upstreamModel: "m",
  status: 200,
  outcome: "ok",
  attempts: [],
  durationMs: 1
})

const ids = (limit = 10_000) =>
  Effect.flatMap(RequestLog.RequestLog, (log) => Effect.map(log.recent(limit), (rows) => rows.map((r) => r.request_id).sort()))

/** One turn of the event loop: the purge yields one between its slices. */
const turn = Effect.async<void>((resume) => void setImmediate(() => resume(Effect.void)))

/** The ids once `done` holds for them, checked after each turn of the event loop (at most 500). */
const idsOnce = (done: (ids: ReadonlyArray<string>) => boolean) =>
  Effect.gen(function* () {
    let now = yield* ids()
    for (let i = 0; i < 500 && !done(now); i++) {
      yield* turn
      now = yield* ids()
    }
    return now
  })

describe("RequestLog retention", () => {
  it.effect("deletes records older than the retention, hourly, however many there are, and keeps the rest", () =>
    Effect.gen(function* () {
      const log = yield* RequestLog.RequestLog
      // More old rows than one delete statement takes, so the purge has to go round.
      for (let i = 0; i < 4500; i++) log.record(record(`old-${i}`, 0))
      log.record(record("day-2", 2 * day))
      log.record(record("day-29", 29 * day))
      expect(yield* ids()).toHaveLength(4502)

      // 30 days and a bit: nothing is older than 30 days yet.
      yield* TestClock.adjust(Duration.millis(30 * day - 1))
      yield* Effect.repeatN(turn, 20)
      expect(yield* ids()).toHaveLength(4502)

      // Day 31: the day-0 records are past it; day 2 and day 29 are not.
      yield* TestClock.adjust(Duration.days(1))
      expect(yield* idsOnce((now) => now.length <= 2)).toEqual(["day-2", "day-29"])

      yield* TestClock.adjust(Duration.days(2))
      expect(yield* idsOnce((now) => now.length <= 1)).toEqual(["day-29"])
    }).pipe(Effect.provide(requestLogLayer(30))), { timeout: 30_000 })

  it.effect("keeps every record with a retention of 0", () =>
    Effect.gen(function* () {
      const log = yield* RequestLog.RequestLog
      log.record(record("ancient", 0))
      yield* TestClock.adjust(Duration.days(400))
      yield* Effect.repeatN(turn, 20)
      expect(yield* ids()).toEqual(["ancient"])
    }).pipe(Effect.provide(requestLogLayer(0))))
})
