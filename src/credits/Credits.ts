/**
 * What the router knows about each provider's credits: whether it said it is out of them (a 402
 * or an insufficient-quota error, kept by `Health`), and the remaining balance when something has
 * reported one. The policy reads it through `peek` only, so how balances are learned (polling a
 * provider's balance endpoint, counting usage) can change without touching the policy.
 */
import { Context, Effect, Layer } from "effect"
import { Health, type HealthService } from "../health/Health.js"
import type { CreditState } from "../policy/Rank.js"

export interface CreditsService {
  /** The provider's credit state now; reading it changes nothing. */
  readonly peek: (providerId: string, now: number) => CreditState
  /** Records a provider's known remaining balance (USD); `null` forgets it. */
  readonly reportBalance: (providerId: string, remaining: number | null) => void
  /** Known balances, for status pages. */
  readonly balances: () => ReadonlyMap<string, number>
}

export class Credits extends Context.Tag("sanctum/Credits")<Credits, CreditsService>() {}

const iso = (ms: number) => new Date(ms).toISOString()

export const make = (health: HealthService): CreditsService => {
  const balances = new Map<string, number>()
  return {
    peek: (id, now) => {
      const until = health.outOfCreditsUntil(id, now)
      const remaining = balances.get(id) ?? null
      if (until !== null) return { exhausted: `credits exhausted until ${iso(until)}`, remaining }
      if (remaining !== null && remaining <= 0) return { exhausted: "credits exhausted", remaining }
      return { exhausted: null, remaining }
    },
    reportBalance: (id, remaining) => {
      if (remaining === null) balances.delete(id)
      else balances.set(id, remaining)
    },
    balances: () => balances
  }
}

/** Credits over the daemon's `Health` registry. */
export const layer = Layer.effect(Credits, Effect.map(Health, (health) => Credits.of(make(health))))
