import { describe, expect, it } from "@effect/vitest"
import { UpstreamTransportError } from "../../src/domain/Errors.js"
import { actionOfStatus, looksLikeJsonObject, outcomeOfStatus, outcomeOfTransport } from "../../src/router/Classify.js"

// The README's failure table, row by row: [status, action, outcome word].
const table: ReadonlyArray<readonly [number, "ok" | "return" | "failover", string]> = [
  [200, "ok", "ok"],
  [201, "ok", "ok"],
  [204, "ok", "ok"],
  [299, "ok", "ok"],
  [400, "return", "client_error"],
  [404, "return", "client_error"],
  [409, "return", "client_error"],
  [413, "return", "client_error"],
  [415, "return", "client_error"],
  [422, "return", "client_error"],
  [499, "return", "client_error"],
  [401, "failover", "auth_error"],
  [403, "failover", "auth_error"],
  [402, "failover", "out_of_credits"],
  [408, "failover", "rate_limited"],
  [429, "failover", "rate_limited"],
  [500, "failover", "server_error"],
  [502, "failover", "server_error"],
  [503, "failover", "server_error"],
  [504, "failover", "server_error"],
  [599, "failover", "server_error"],
  // 1xx/3xx answers to an API call: the endpoint is not what the config says it is.
  [100, "failover", "bad_status"],
  [301, "failover", "bad_status"],
  [304, "failover", "bad_status"]
]

describe("Classify", () => {
  describe("actionOfStatus / outcomeOfStatus", () => {
    for (const [status, action, outcome] of table) {
      it(`HTTP ${status} -> ${action} (${outcome})`, () => {
        expect(actionOfStatus(status)).toBe(action)
        expect(outcomeOfStatus(status)).toBe(outcome)
      })
    }

    it("every failover status has an outcome word other than ok and client_error", () => {
      for (let status = 100; status < 600; status++) {
        const action = actionOfStatus(status)
        const outcome = outcomeOfStatus(status)
        if (action === "ok") expect(outcome).toBe("ok")
        if (action === "return") expect(outcome).toBe("client_error")
        if (action === "failover") expect(["ok", "client_error"]).not.toContain(outcome)
      }
    })
  })

  describe("outcomeOfTransport", () => {
    const cases = [
      ["connect", "connect_error"],
      ["reset", "connection_reset"],
      ["timeout", "timeout"],
      ["protocol", "protocol_error"],
      ["aborted", "aborted"],
      ["local", "local_error"]
    ] as const
    for (const [reason, outcome] of cases) {
      it(`${reason} -> ${outcome}`, () => {
        expect(outcomeOfTransport(new UpstreamTransportError({ provider: "p", reason, detail: "d" }))).toBe(outcome)
      })
    }
  })
})

describe("looksLikeJsonObject (what a success must at least look like)", () => {
  const of = (s: string) => looksLikeJsonObject(new Uint8Array(Buffer.from(s)))
  it("accepts a JSON object, blanks around it included", () => {
    expect(of('{"id":"chatcmpl-1","choices":[]}')).toBe(true)
    expect(of('\n  {"object":"list","data":[]}\r\n')).toBe(true)
    expect(of("{}")).toBe(true)
  })
  it("refuses an empty body, HTML, a cut-off answer, an event stream, an array or a bare value", () => {
    for (const body of ["", "   ", "<html><body>502</body></html>", '{"id":"x","choices":[', "data: {\"id\":1}\n\n", "[1,2]", '"ok"', "{", "}"]) {
      expect(of(body), JSON.stringify(body)).toBe(false)
    }
  })
})
