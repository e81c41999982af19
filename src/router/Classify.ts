/**
 * What a failed attempt means for the request, decided from the failure alone. Pure, so the table
 * in the README can be tested row by row.
 */
import type { UpstreamTransportError } from "../domain/Errors.js"

/** `return`: the request itself was refused, so no other backend would do better. */
export type StatusAction = "ok" | "return" | "failover"

/** Statuses that say the provider (its key, credits, rate or health) is the problem, not the request. */
const providerSide = new Set([401, 402, 403, 408, 429])

export const actionOfStatus = (status: number): StatusAction => {
  if (status >= 200 && status < 300) return "ok"
  if (status >= 500 || providerSide.has(status)) return "failover"
  if (status >= 400) return "return"
  // 1xx/3xx answers to an API call mean the endpoint is not what the config says it is.
  return "failover"
}

/** The outcome word used in `X-Router-Attempts` and the request record. */
export const outcomeOfStatus = (status: number): string => {
  if (status >= 200 && status < 300) return "ok"
  if (status === 401 || status === 403) return "auth_error"
  if (status === 402) return "out_of_credits"
  if (status === 429 || status === 408) return "rate_limited"
  if (status >= 500) return "server_error"
  if (status >= 400) return "client_error"
  return "bad_status"
}

export const outcomeOfTransport = (e: UpstreamTransportError): string => {
  switch (e.reason) {
    case "connect":
      return "connect_error"
    case "reset":
      return "connection_reset"
    case "timeout":
      return "timeout"
    case "protocol":
      return "protocol_error"
    case "aborted":
      return "aborted"
  }
}
