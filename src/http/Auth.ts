/**
 * Key checks for `/v1/*` (client key) and `/admin/*` (admin key). Keys are compared as SHA-256
 * digests with `timingSafeEqual`, so neither the key's content nor its length leaks through timing.
 */
import { Redacted } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import type { IncomingHttpHeaders } from "node:http"
import { Unauthorized } from "../domain/Errors.js"
import { callerKeyPrefix, sessionIdPrefix } from "../policy/Rank.js"

const digest = (s: string) => createHash("sha256").update(s).digest()

/** The key a caller presented: `Authorization: Bearer …`, else `X-API-Key`. */
export const presentedKey = (headers: IncomingHttpHeaders): string | undefined => {
  const auth = headers.authorization
  if (typeof auth === "string" && auth.length > 7 && auth.slice(0, 7).toLowerCase() === "bearer ") return auth.slice(7).trim()
  const apiKey = headers["x-api-key"]
  return typeof apiKey === "string" && apiKey !== "" ? apiKey : undefined
}

/** A check for one key. With no key configured it accepts everything (or nothing, for admin). */
export interface KeyCheck {
  /** `null` when the caller may pass. */
  readonly check: (headers: IncomingHttpHeaders) => Unauthorized | null
}

const check = (expected: Buffer, what: string) => (headers: IncomingHttpHeaders): Unauthorized | null => {
  const key = presentedKey(headers)
  if (key === undefined) {
    return new Unauthorized({ message: `Missing ${what}: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'` })
  }
  return timingSafeEqual(digest(key), expected) ? null : new Unauthorized({ message: `Incorrect ${what} provided` })
}

/** `/v1/*`: open when no client key is set (start-up refuses that unless bound to loopback). */
export const clientKeyCheck = (key: Redacted.Redacted<string> | null): KeyCheck => ({
  check: key === null ? () => null : check(digest(Redacted.value(key)), "API key")
})

/** `/admin/*`: closed to everyone while no admin key is set; the client key never opens it. */
export const adminKeyCheck = (key: Redacted.Redacted<string> | null): KeyCheck => ({
  check: key === null
    ? () => new Unauthorized({ message: "The admin API is disabled: set ROUTER_ADMIN_KEY to enable it" })
    : check(digest(Redacted.value(key)), "admin key")
})

/** Longer session ids are kept as a hash: cutting them short would merge sessions sharing a prefix. */
const maxSessionIdLength = 256

const longSessionId = (id: string): string => `sha256:${createHash("sha256").update(id).digest("hex")}`

/**
 * Who a request belongs to, for session pins (`/admin/override`): its `X-Router-Session-Id` (past
 * 256 characters, its hash), else a hash of the key it presented (never the key itself), else
 * `null`. The two kinds are prefixed so a session id can never pass for a key's hash. The
 * `weighted` strategy takes only the session id from it (see `Rank.weightedKey`): every caller
 * presents the same client key.
 */
export const sessionKeyOf = (headers: IncomingHttpHeaders): string | null => {
  const id = headers["x-router-session-id"]
  if (typeof id === "string") {
    const trimmed = id.trim()
    if (trimmed !== "") return `${sessionIdPrefix}${trimmed.length <= maxSessionIdLength ? trimmed : longSessionId(trimmed)}`
  }
  const key = presentedKey(headers)
  if (key === undefined) return null
  let hashed = hashedKeys.get(key)
  if (hashed === undefined) {
    // A client sends the same few keys again and again: hash each once (~1 µs), within a bound.
    if (hashedKeys.size >= 1024) hashedKeys.clear()
    hashed = `${callerKeyPrefix}${createHash("sha256").update(key).digest("hex").slice(0, 32)}`
    hashedKeys.set(key, hashed)
  }
  return hashed
}

const hashedKeys = new Map<string, string>()
