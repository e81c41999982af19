/**
 * The routing config: how candidates are ordered and which rules take a provider out of rotation.
 * Set in the config file's `routing` section and changed at runtime through `/admin/routing-config`.
 */

export type Strategy = "priority" | "cost" | "latency" | "weighted"

export const strategies: ReadonlyArray<Strategy> = ["priority", "cost", "latency", "weighted"]

/**
 * A provider order names each provider once: a repeat means nothing and costs every request a
 * longer list. The file and the admin API refuse one alike (a `Schema.filter` check).
 */
export const namesEachOnce = (ids: ReadonlyArray<string>): true | string => {
  const seen = new Set<string>()
  for (const id of ids) {
    if (seen.has(id)) return `names '${id}' more than once`
    seen.add(id)
  }
  return true
}

/**
 * A rule that takes a provider out of rotation before it fails: `credit_threshold` when its known
 * remaining credits fall below `value`; `health` when its success rate (0–1) falls below `value`.
 */
export interface FailoverRule {
  readonly providerId: string
  readonly condition: "credit_threshold" | "health"
  readonly value: number
}

export interface RoutingConfig {
  readonly strategy: Strategy
  /** Under `priority`, providers of equal priority are ordered by known price, cheapest first. */
  readonly costOptimization: boolean
  /** Providers tried first under `priority`, in this order; the others follow by priority. */
  readonly providerOrder: ReadonlyArray<string>
  readonly failover: ReadonlyArray<FailoverRule>
}

export const defaultRouting: RoutingConfig = { strategy: "priority", costOptimization: false, providerOrder: [], failover: [] }

/** The wire form used by the admin API and stored in the database (snake_case, as in the file). */
export interface RoutingConfigJson {
  readonly strategy: Strategy
  readonly cost_optimization: boolean
  readonly provider_order: ReadonlyArray<string>
  readonly failover: ReadonlyArray<{ readonly provider_id: string; readonly condition: "credit_threshold" | "health"; readonly value: number }>
}

export const routingToJson = (r: RoutingConfig): RoutingConfigJson => ({
  strategy: r.strategy,
  cost_optimization: r.costOptimization,
  provider_order: r.providerOrder,
  failover: r.failover.map((f) => ({ provider_id: f.providerId, condition: f.condition, value: f.value }))
})

export const routingFromJson = (j: Partial<RoutingConfigJson>): RoutingConfig => ({
  strategy: j.strategy ?? defaultRouting.strategy,
  costOptimization: j.cost_optimization ?? defaultRouting.costOptimization,
  providerOrder: j.provider_order ?? defaultRouting.providerOrder,
  failover: (j.failover ?? []).map((f) => ({ providerId: f.provider_id, condition: f.condition, value: f.value }))
})

/** Provider ids the routing config names that are not configured, or `null` when all are. */
export const unknownProviders = (r: RoutingConfig, known: ReadonlySet<string>): ReadonlyArray<string> | null => {
  const missing = [...new Set([...r.providerOrder, ...r.failover.map((f) => f.providerId)])].filter((id) => !known.has(id))
  return missing.length === 0 ? null : missing
}
