/**
 * The routing policy seam: given what a request resolved to and what it needs, the candidates in the
 * order they are tried. Health, credits and strategies plug in here in later versions; the decision
 * itself stays a pure function (`Rank.ts`) called synchronously on the request path.
 */
import { Context, Layer } from "effect"
import type { Resolution } from "../providers/Providers.js"
import { type Needs, rankByPriority, type Ranking } from "./Rank.js"

export interface PolicyService {
  readonly rank: (resolution: Resolution, needs: Needs) => Ranking
}

export class Policy extends Context.Tag("sanctum/Policy")<Policy, PolicyService>() {}

/** Candidates by priority (aliases in their configured order), unfit ones dropped with a reason. */
export const layer = Layer.succeed(Policy, Policy.of({ rank: rankByPriority }))
