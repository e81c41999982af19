/**
 * The circuit breaker's state machine, driven with explicit times (it is pure: no clock involved).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Breaker from "../../src/health/Breaker.js"
import type { BreakerConfig, BreakerState } from "../../src/health/Breaker.js"

const config: BreakerConfig = {
  consecutiveFailures: 3,
  windowSize: 10,
  errorRate: 0.5,
  minimumRequests: 6,
  cooldownMs: 1_000,
  cooldownMultiplier: 2,
  maxCooldownMs: 5_000
}

/** Only the error-rate rule can open it: consecutive failures never reach this. */
const rateOnly: BreakerConfig = { ...config, consecutiveFailures: 1_000 }

const fail = (s: BreakerState, now = 0, c = config) => Breaker.onFailure(s, now, c, `failure at ${now}`)
const succeed = (s: BreakerState, c = config) => Breaker.onSuccess(s, c)

/** Plays `F` (failure) and `S` (success) in order, all at time 0. */
const play = (pattern: string, c = config, from: BreakerState = Breaker.closed): BreakerState =>
  [...pattern].reduce((s, ch) => (ch === "F" ? fail(s, 0, c) : ch === "S" ? succeed(s, c) : s), from)

/** An open circuit, tripped at `at` by consecutive failures. */
const openedAt = (at: number): BreakerState => fail(fail(fail(Breaker.closed, at), at), at)

describe("closed → open", () => {
  it("opens on the Nth consecutive failure, not the one before", () => {
    const two = play("FF")
    expect(two).toEqual({ _tag: "Closed", consecutive: 2, window: [true, true], trips: 0 })
    expect(Breaker.admit(two, 0).allowed).toBe(true)

    const three = fail(two, 500)
    expect(three).toEqual({ _tag: "Open", until: 1_500, trips: 1, reason: "failure at 500" })
    expect(Breaker.admit(three, 500)).toMatchObject({ allowed: false, probe: false })
  })

  it("a success resets the consecutive count", () => {
    const s = play("FFSFF")
    expect(s._tag).toBe("Closed")
    if (s._tag === "Closed") expect(s.consecutive).toBe(2)
    expect(fail(s)._tag).toBe("Open")
  })

  it("opens on the error rate once the window holds the minimum number of requests", () => {
    // Five failures in five: 100 %, but under the minimum of six requests.
    const five = play("FFFFF", rateOnly)
    expect(five._tag).toBe("Closed")
    // The sixth result brings the window to the minimum.
    expect(play("F", rateOnly, five)).toMatchObject({ _tag: "Open", trips: 1, until: 1_000 })
  })

  it("opens when the failure share reaches the rate, not below it", () => {
    // At each failure: 1 in 3, 2 in 5, 3 in 7 (43 %).
    const below = play("SSFSFSF", rateOnly)
    expect(below._tag).toBe("Closed")
    // 4 in 8: exactly 50 %.
    expect(play("F", rateOnly, below)._tag).toBe("Open")
  })

  it("only the newest `window` results count", () => {
    // Three old failures (never 50 % of the window), then ten successes push them out of it.
    const s = play("FSSFSSFSS" + "SSSSSSSSSS", rateOnly)
    expect(s._tag).toBe("Closed")
    if (s._tag === "Closed") expect(s.window).toEqual(Array.from({ length: 10 }, () => false))
    // One failure in the newest ten: 10 %.
    expect(play("F", rateOnly, s)._tag).toBe("Closed")
  })

  it("successes before the first failure count in the window", () => {
    // Ten successes, then F S F S F S F: the newest ten are S S S F S F S F S F, 4 failures in 10 (40 %).
    const s = play("SSSSSSSSSS" + "FSFSFSF", rateOnly)
    expect(s._tag).toBe("Closed")
    if (s._tag === "Closed") expect(s.window).toEqual([false, false, false, true, false, true, false, true, false, true])
  })

  it("a failure while open changes nothing", () => {
    const open = openedAt(0)
    expect(fail(open, 200)).toEqual(open)
  })

  it("trip opens it at once, for the given time when one is given", () => {
    expect(Breaker.trip(Breaker.closed, 100, config, "misconfigured: 401", 60_000)).toEqual({
      _tag: "Open",
      until: 60_100,
      trips: 1,
      reason: "misconfigured: 401"
    })
    expect(Breaker.trip(Breaker.closed, 100, config, "x")).toMatchObject({ until: 1_100, trips: 1 })
  })
})

describe("open → half-open → closed or open again", () => {
  it("refuses until the cooldown ends, then admits exactly one probe", () => {
    const open = openedAt(1_000)
    expect(open).toMatchObject({ _tag: "Open", until: 2_000 })

    const early = Breaker.admit(open, 1_999)
    expect(early).toEqual({ allowed: false, probe: false, state: open })

    const first = Breaker.admit(open, 2_000)
    expect(first.allowed).toBe(true)
    expect(first.probe).toBe(true)
    expect(first.state).toEqual({ _tag: "HalfOpen", trips: 1, probing: true, reason: "failure at 1000" })

    // A second request while the probe is under way is refused.
    const second = Breaker.admit(first.state, 2_001)
    expect(second).toEqual({ allowed: false, probe: false, state: first.state })
    expect(Breaker.admit(second.state, 100_000).allowed).toBe(false)
  })

  it("a successful probe closes it and forgets the trips", () => {
    // Three trips in a row: the next cooldown would be 4 s.
    const reopened = fail(Breaker.admit(fail(Breaker.admit(openedAt(0), 1_000).state, 1_000), 3_000).state, 3_000)
    expect(reopened).toMatchObject({ _tag: "Open", trips: 3, until: 7_000 })
    const probing = Breaker.admit(reopened, 7_000).state
    const closed = succeed(probing)
    expect(closed).toEqual(Breaker.closed)
    // The next trip earns the first cooldown again.
    expect(play("FFF", config, closed)).toMatchObject({ _tag: "Open", trips: 1, until: 1_000 })
  })

  it("a failed probe re-opens it with the cooldown doubled, up to the maximum", () => {
    let s = openedAt(0)
    let now = 0
    const cooldowns: Array<number> = []
    for (let i = 0; i < 5; i++) {
      if (s._tag !== "Open") throw new Error(`expected open, got ${s._tag}`)
      now = s.until
      const probe = Breaker.admit(s, now)
      expect(probe.probe).toBe(true)
      s = fail(probe.state, now)
      if (s._tag !== "Open") throw new Error(`expected open, got ${s._tag}`)
      cooldowns.push(s.until - now)
    }
    // 1 s, then 2, 4, capped at 5.
    expect(cooldowns).toEqual([2_000, 4_000, 5_000, 5_000, 5_000])
    expect(s.trips).toBe(6)
  })

  it("an abandoned probe frees the slot for the next request", () => {
    const probing = Breaker.admit(openedAt(0), 1_000).state
    expect(Breaker.admit(probing, 1_000).allowed).toBe(false)
    const freed = Breaker.onAbandoned(probing)
    expect(freed).toEqual({ _tag: "HalfOpen", trips: 1, probing: false, reason: "failure at 0" })
    const next = Breaker.admit(freed, 1_001)
    expect(next).toMatchObject({ allowed: true, probe: true, state: { _tag: "HalfOpen", probing: true } })
  })

  it("onAbandoned leaves a closed or open circuit as it is", () => {
    const closed = play("FF")
    expect(Breaker.onAbandoned(closed)).toBe(closed)
    const open = openedAt(0)
    expect(Breaker.onAbandoned(open)).toBe(open)
  })

  it("the default configuration: 5 failures, 30 s growing to at most 10 min", () => {
    const d = Breaker.defaultBreakerConfig
    const four = [1, 2, 3, 4].reduce((s) => Breaker.onFailure(s, 0, d, "x"), Breaker.closed)
    expect(four._tag).toBe("Closed")
    expect(Breaker.onFailure(four, 0, d, "x")).toMatchObject({ _tag: "Open", until: 30_000 })
    let s: BreakerState = { _tag: "HalfOpen", trips: 20, probing: true, reason: "x" }
    s = Breaker.onFailure(s, 0, d, "x")
    expect(s).toMatchObject({ _tag: "Open", until: 600_000, trips: 21 })
  })
})
