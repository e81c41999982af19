/**
 * Pure policy decisions: what a request needs, which candidates can serve it, and in what order
 * they are tried. No I/O and no randomness, so the same inputs always give the same order.
 */
import type { ChatCompletionRequest } from "../domain/OpenAi.js"
import { byPriority, type Candidate } from "../domain/Provider.js"
import type { Resolution } from "../providers/Providers.js"

/** What a request needs from a backend, derived from the request alone. */
export interface Needs {
  readonly stream: boolean
  readonly tools: boolean
  readonly vision: boolean
}

export const noNeeds: Needs = { stream: false, tools: false, vision: false }

const hasImagePart = (content: unknown): boolean => {
  if (!Array.isArray(content)) return false
  for (const part of content) {
    const type = (part as { type?: unknown })?.type
    if (type === "image_url" || type === "input_image" || type === "image") return true
  }
  return false
}

export const needsOfChat = (request: ChatCompletionRequest): Needs => {
  let vision = false
  for (const m of request.messages) {
    if (hasImagePart(m.content)) {
      vision = true
      break
    }
  }
  return {
    stream: request.stream === true,
    tools: request.tools !== undefined && request.tools !== null && request.tools.length > 0,
    vision
  }
}

export interface Dropped {
  readonly candidate: Candidate
  readonly reason: string
}

export interface Ranking {
  /** Candidates in the order they are tried. */
  readonly ranked: ReadonlyArray<Candidate>
  readonly dropped: ReadonlyArray<Dropped>
}

/** Why a candidate cannot serve these needs, or `null` when it can. Unknown capabilities pass. */
export const unfit = (c: Candidate, needs: Needs): string | null => {
  if (needs.stream && c.provider.supportsStreaming === false) return "does not support streaming"
  if (needs.tools && c.provider.supportsTools === false) return "does not support tools"
  if (needs.vision && c.provider.supportsMultimodal === false) return "does not support images"
  return null
}

const none: ReadonlyArray<Dropped> = []

export const gate = (candidates: ReadonlyArray<Candidate>, needs: Needs): Ranking => {
  const ranked: Array<Candidate> = []
  const dropped: Array<Dropped> = []
  for (const c of candidates) {
    const reason = unfit(c, needs)
    if (reason === null) ranked.push(c)
    else dropped.push({ candidate: c, reason })
  }
  return { ranked, dropped }
}

export { byPriority }

/** The foundation's strategy: an alias keeps its configured order, anything else goes by priority. */
export const rankByPriority = (resolution: Resolution, needs: Needs): Ranking => {
  const candidates = resolution.candidates
  // The common case, a pinned or single-provider model that fits: nothing to sort or copy.
  if (candidates.length === 1 && unfit(candidates[0]!, needs) === null) return { ranked: candidates, dropped: none }
  const { ranked, dropped } = gate(candidates, needs)
  return { ranked: resolution.kind === "alias" ? ranked : [...ranked].sort(byPriority), dropped }
}
