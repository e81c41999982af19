/**
 * The YAML file's pure parts: `${VAR}` substitution, validation messages (file, key path, reason),
 * reading and parsing, and the conversion to provider and alias specs with their defaults.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Redacted } from "effect"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll } from "vitest"
import {
  aliasTargetError,
  checkAliasTargets,
  aliasSpecs,
  type ConfigFile,
  ConfigFileError,
  configState,
  decodeConfig,
  loadConfigFile,
  providerSpecs,
  substituteEnv
} from "../../src/config/ConfigFile.js"
import { removeDir, tempDir } from "./support.js"

/** The error of a config that must be refused. */
const refused = (document: unknown, env: Record<string, string> = {}, path = "/etc/sanctum/router.yaml") =>
  Effect.gen(function* () {
    const result = yield* Effect.either(decodeConfig(document, path, env))
    if (Either.isRight(result)) throw new Error(`expected the config to be refused, got ${JSON.stringify(result.right.file)}`)
    return result.left
  })

/** The decoded file of a config that must be accepted. */
const accepted = (document: unknown, env: Record<string, string> = {}) => decodeConfig(document, "router.yaml", env)

/** The issue lines of a validation message (everything after the first line). */
const issueLines = (message: string) => message.split("\n").slice(1).map((l) => l.trim()).filter((l) => l !== "")

describe("substituteEnv", () => {
  it("replaces ${VAR} with the variable's value, several per string", () => {
    const missing: Array<string> = []
    const out = substituteEnv("${SCHEME}://${HOST}:8080/v1", { SCHEME: "https", HOST: "api.example" }, missing)
    expect(out).toBe("https://api.example:8080/v1")
    expect(missing).toEqual([])
  })

  it("uses ${VAR:-default} when the variable is unset or empty, and the value when it is set", () => {
    const missing: Array<string> = []
    expect(substituteEnv("${A:-fallback}", {}, missing)).toBe("fallback")
    expect(substituteEnv("${A:-fallback}", { A: "" }, missing)).toBe("fallback")
    expect(substituteEnv("${A:-fallback}", { A: "set" }, missing)).toBe("set")
    expect(substituteEnv("${A:-}", {}, missing)).toBe("")
    expect(substituteEnv("${URL:-http://localhost:11434/v1}", {}, missing)).toBe("http://localhost:11434/v1")
    expect(missing).toEqual([])
  })

  it("reports each unset variable with the key path where it was used, and substitutes an empty string", () => {
    const missing: Array<string> = []
    const out = substituteEnv(
      {
        providers: { venice: { endpoint: "https://api.venice.ai/api/v1", api_key: "${VENICE_API_KEY}" } },
        aliases: { fast: ["venice+m", "${FALLBACK_MODEL}"] }
      },
      {},
      missing
    )
    expect(out).toEqual({
      providers: { venice: { endpoint: "https://api.venice.ai/api/v1", api_key: "" } },
      aliases: { fast: ["venice+m", ""] }
    })
    expect(missing).toEqual(["VENICE_API_KEY (providers.venice.api_key)", "FALLBACK_MODEL (aliases.fast[1])"])
  })

  it("treats a variable set to an empty string as missing", () => {
    const missing: Array<string> = []
    expect(substituteEnv({ k: "${EMPTY}" }, { EMPTY: "" }, missing)).toEqual({ k: "" })
    expect(missing).toEqual(["EMPTY (k)"])
  })

  it("leaves numbers, booleans, null, keys and text without ${...} alone", () => {
    const missing: Array<string> = []
    const doc = { "${KEY}": 1, n: 42, b: true, z: null, plain: "$HOME and ${ not a ref } and $${", list: [1, false] }
    expect(substituteEnv(doc, { KEY: "x", HOME: "/root" }, missing)).toEqual(doc)
    expect(missing).toEqual([])
  })

  it("does not substitute again inside a substituted value", () => {
    const missing: Array<string> = []
    expect(substituteEnv("${A}", { A: "${B}", B: "nope" }, missing)).toBe("${B}")
    expect(missing).toEqual([])
  })

  it("does not modify its input", () => {
    const doc = { providers: { p: { api_key: "${K}" } } }
    substituteEnv(doc, { K: "secret" }, [])
    expect(doc.providers.p.api_key).toBe("${K}")
  })
})

describe("decodeConfig", () => {
  it.effect("accepts an empty document, null sections and unknown top-level sections", () =>
    Effect.gen(function* () {
      expect((yield* accepted(null)).file).toEqual({})
      expect((yield* accepted({ providers: null, aliases: null, server: null })).file.providers).toBeNull()
      // `monitoring` and `routing` became known sections; these two are still unknown.
      const loaded = yield* accepted({ monitoring: { enabled: true }, credits: { threshold: 5 }, logging: { level: "x" } })
      expect(providerSpecs(loaded.file)).toEqual([])
    }))

  it.effect("refuses an unknown routing strategy, naming it", () =>
    Effect.gen(function* () {
      const error = yield* refused({ routing: { strategy: "fastest" } })
      expect(error.message).toContain("routing.strategy")
      expect(error.message).toContain("fastest")
    }))

  it.effect("refuses a health failover rule whose value is not a success rate from 0 to 1", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { p: { endpoint: "http://127.0.0.1:1/v1" } }, routing: { failover: [{ provider_id: "p", condition: "health", value: 50 }] } })
      expect(error.message).toContain("routing.failover[0].value")
      expect(error.message).toContain("success rate from 0 to 1")
      const ok = yield* accepted({ providers: { p: { endpoint: "http://127.0.0.1:1/v1" } }, routing: { failover: [{ provider_id: "p", condition: "credit_threshold", value: 50 }] } })
      expect(ok.file.routing?.failover?.[0]?.value).toBe(50)
    }))

  it.effect("substitutes the environment before validating, and lists missing variables", () =>
    Effect.gen(function* () {
      const loaded = yield* accepted(
        { providers: { venice: { endpoint: "${VENICE_URL:-https://api.venice.ai/api/v1}", api_key: "${VENICE_API_KEY}" } } }
      )
      expect(loaded.file.providers?.venice?.endpoint).toBe("https://api.venice.ai/api/v1")
      expect(loaded.missingEnv).toEqual(["VENICE_API_KEY (providers.venice.api_key)"])
      // A provider whose key variable is unset still loads, without a key.
      expect(providerSpecs(loaded.file)[0]?.apiKey).toBeNull()
    }))

  it.effect("fails with a ConfigFileError carrying the file's path", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { a: { endpoint: 42 } } }, {}, "/srv/router.yaml")
      expect(error).toBeInstanceOf(ConfigFileError)
      expect(error._tag).toBe("ConfigFileError")
      expect(error.path).toBe("/srv/router.yaml")
      expect(error.message).toContain("/srv/router.yaml")
    }))

  it.effect("names the key path and the problem of a value of the wrong type (providers.venice.priority)", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { venice: { endpoint: "https://api.venice.ai/api/v1", priority: "high" } } })
      expect(error.message).toContain("/etc/sanctum/router.yaml")
      expect(error.message).toMatch(/providers\.venice\.priority: .*"high"/)
    }))

  it.effect("refuses an endpoint with a query string, a fragment or a user and password, which would be lost", () =>
    Effect.gen(function* () {
      const query = yield* refused({ providers: { azure: { endpoint: "https://x.example/openai?api-version=2024-06-01" } } })
      expect(query.message).toMatch(/providers\.azure\.endpoint: must be a base URL without a query string or fragment/)
      const fragment = yield* refused({ providers: { p: { endpoint: "https://x.example/v1#top" } } })
      expect(fragment.message).toMatch(/providers\.p\.endpoint: must be a base URL without a query string or fragment/)
      const credentials = yield* refused({ providers: { p: { endpoint: "https://user:hunter2@x.example/v1" } } })
      expect(credentials.message).toMatch(/providers\.p\.endpoint: must not carry a user or password \(put the provider's key in api_key\)/)
      // The password itself is not repeated in the message.
      expect(credentials.message).not.toContain("hunter2")
    }))

  it.effect("does not repeat an endpoint's query string or credentials, where a key would sit", () =>
    Effect.gen(function* () {
      const query = yield* refused({ providers: { a: { endpoint: "https://x.example/v1?key=sk-query-secret" } } })
      expect(issueLines(query.message)).toEqual([
        "providers.a.endpoint: must be a base URL without a query string or fragment (the router appends /chat/completions and the like to it), got 'https://x.example/v1?…'"
      ])
      // Not a URL at all (no scheme): still cut at the query.
      const bare = yield* refused({ providers: { a: { endpoint: "x.example/v1?key=sk-bare-secret" } } })
      expect(issueLines(bare.message)).toEqual(["providers.a.endpoint: must be an http:// or https:// URL, got 'x.example/v1?…'"])
      const scheme = yield* refused({ providers: { a: { endpoint: "ftp://me:sk-ftp-secret@x.example/v1" } } })
      expect(issueLines(scheme.message)).toEqual(["providers.a.endpoint: must be an http:// or https:// URL, got 'ftp://…@x.example/v1'"])
    }))

  it.effect("names a word outside a fixed set once, with the words to choose from", () =>
    Effect.gen(function* () {
      const error = yield* refused({
        providers: { a: { endpoint: "https://x.example/v1", provider_type: "venicex" } },
        routing: { strategy: "fastest" }
      })
      expect(issueLines(error.message)).toEqual([
        `routing.strategy: Expected one of "priority", "cost", "latency", "weighted", actual "fastest"`,
        `providers.a.provider_type: Expected one of "venice", "featherless", "openai_compat", actual "venicex"`
      ])
    }))

  it.effect("refuses a key of digits alone (a YAML number) without printing it", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { a: { endpoint: "https://x.example/v1", api_key: 1234567890123 } } })
      expect(error.message).toContain("providers.a.api_key: must be a string (in YAML, quote a key made of digits alone)")
      expect(error.message).not.toContain("1234567890123")
    }))

  it.effect("refuses a priority that is not an integer", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { venice: { endpoint: "https://x.example/v1", priority: 1.5 } } })
      expect(error.message).toMatch(/providers\.venice\.priority: .*integer/)
    }))

  // One wrong value should give one issue line, about that value: not the alternatives of every
  // optional or nullable field around it ("Expected undefined", "Expected null, actual {...}").
  it.effect("reports only the failing key, without 'Expected undefined' / 'Expected null' noise from optional fields", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { venice: { endpoint: "https://api.venice.ai/api/v1", priority: "high" } } })
      const lines = issueLines(error.message)
      expect(lines).toHaveLength(1)
      expect(lines[0]).toMatch(/^providers\.venice\.priority: /)
      expect(error.message).not.toContain("Expected undefined")
      expect(error.message).not.toContain("Expected null")
    }))

  // The message goes to stderr and logs; a substituted provider key must never be echoed in it.
  it.effect("never echoes a provider's api_key in the error message", () =>
    Effect.gen(function* () {
      const error = yield* refused(
        { providers: { venice: { endpoint: "https://api.venice.ai/api/v1", api_key: "${VENICE_API_KEY}", priority: "high" } } },
        { VENICE_API_KEY: "sk-venice-DO-NOT-PRINT-1234" }
      )
      expect(error.message).toContain("providers.venice.priority")
      expect(error.message).not.toContain("sk-venice-DO-NOT-PRINT-1234")
    }))

  // A list of providers (the shape other routers use) is a plausible mistake; the message must
  // not print the entries, which carry substituted keys.
  it.effect("never echoes an api_key when a whole section has the wrong shape (providers written as a list)", () =>
    Effect.gen(function* () {
      const error = yield* refused(
        { providers: [{ id: "venice", endpoint: "https://api.venice.ai/api/v1", api_key: "${VENICE_API_KEY}" }] },
        { VENICE_API_KEY: "sk-venice-DO-NOT-PRINT-5678" }
      )
      expect(error.message).toContain("providers")
      expect(error.message).not.toContain("sk-venice-DO-NOT-PRINT-5678")
    }))

  it.effect("never echoes an api_key when one provider has the wrong shape (a list instead of a mapping)", () =>
    Effect.gen(function* () {
      const error = yield* refused(
        { providers: { venice: [{ endpoint: "https://api.venice.ai/api/v1", api_key: "${VENICE_API_KEY}" }] } },
        { VENICE_API_KEY: "sk-venice-DO-NOT-PRINT-9012" }
      )
      expect(error.message).toContain("providers.venice")
      expect(error.message).not.toContain("sk-venice-DO-NOT-PRINT-9012")
    }))

  it.effect("says briefly what a wrong-shaped section should be, without dumping the schema", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: [{ id: "venice", endpoint: "https://api.venice.ai/api/v1" }] })
      const lines = issueLines(error.message)
      expect(lines.length).toBeGreaterThan(0)
      expect(lines[0]).toMatch(/^providers: /)
      expect(error.message).not.toContain("readonly")
      for (const line of lines) expect(line.length).toBeLessThan(200)
    }))

  it.effect("refuses a provider id with a space, naming `providers.bad id` and the name rule", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { "bad id": { endpoint: "https://x.example/v1" } } })
      expect(error.message).toContain("providers.bad id")
      expect(error.message).toMatch(/letter|digit/)
    }))

  it.effect("refuses a provider id containing '+' (it would break provider+model ids)", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { "a+b": { endpoint: "https://x.example/v1" } } })
      expect(error.message).toContain("providers.a+b")
    }))

  it.effect("refuses an alias name with a space, naming `aliases.<name>`", () =>
    Effect.gen(function* () {
      const error = yield* refused({ aliases: { "my alias": "some-model" } })
      expect(error.message).toContain("aliases.my alias")
    }))

  it.effect("accepts ids with letters, digits, '_', '.', ':' and '-'", () =>
    Effect.gen(function* () {
      const loaded = yield* accepted({
        providers: { "Local_1.gpu:a-b": { endpoint: "http://127.0.0.1:1/v1" } },
        aliases: { "fast.v2:x-y_z": "Local_1.gpu:a-b+m" }
      })
      expect(providerSpecs(loaded.file).map((p) => p.id)).toEqual(["Local_1.gpu:a-b"])
      expect(aliasSpecs(loaded.file).map((a) => a.name)).toEqual(["fast.v2:x-y_z"])
    }))

  // Alias targets are checked against every known provider, the database's API-created ones too,
  // so the check runs at start-up (see Startup.test.ts), not in decodeConfig.
  it.effect("refuses an alias target pinned to an unknown provider (string and list forms)", () =>
    Effect.gen(function* () {
      const providers = { venice: { endpoint: "https://api.venice.ai/api/v1" } }
      const known = new Set(["venice"])
      const single = yield* accepted({ providers, aliases: { fast: "veniec+llama-3.3-70b" } })
      const singleProblem = checkAliasTargets(single.file, known)
      expect(singleProblem).toContain("aliases.fast")
      expect(singleProblem).toContain("unknown provider 'veniec'")
      expect(aliasTargetError("/etc/sanctum/router.yaml", singleProblem!).message).toContain("/etc/sanctum/router.yaml")
      const list = yield* accepted({ providers, aliases: { fast: ["venice+llama-3.3-70b", "nope+m"] } })
      const listProblem = checkAliasTargets(list.file, known)
      expect(listProblem).toContain("aliases.fast[1]")
      expect(listProblem).toContain("unknown provider 'nope'")
      expect(checkAliasTargets(list.file, new Set(["venice", "nope"]))).toBeNull()
    }))

  it.effect("accepts bare model ids as alias targets without checking them", () =>
    Effect.gen(function* () {
      const loaded = yield* accepted({ aliases: { smart: ["gpt-4o", "meta-llama/Llama-3.3-70B-Instruct"] } })
      expect(aliasSpecs(loaded.file)).toEqual([
        { name: "smart", targets: ["gpt-4o", "meta-llama/Llama-3.3-70B-Instruct"], hedgeAfterMs: null, strategy: null, source: "file" }
      ])
    }))

  it.effect("refuses an endpoint that is not an http(s) URL", () =>
    Effect.gen(function* () {
      const notUrl = yield* refused({ providers: { a: { endpoint: "api.venice.ai/v1" } } })
      expect(notUrl.message).toMatch(/providers\.a\.endpoint: .*http:\/\/ or https:\/\/ URL.*api\.venice\.ai\/v1/)
      const ftp = yield* refused({ providers: { a: { endpoint: "ftp://files.example/v1" } } })
      expect(ftp.message).toContain("providers.a.endpoint")
      // An unset variable makes the endpoint relative, which is reported against the endpoint.
      const unset = yield* refused({ providers: { a: { endpoint: "${BASE_URL}/v1" } } })
      expect(unset.message).toContain("providers.a.endpoint")
    }))

  it.effect("refuses a provider without an endpoint", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { a: { models: ["m"] } } })
      expect(error.message).toMatch(/providers\.a\.endpoint: .*missing/)
    }))

  it.effect("refuses timeouts that are zero or negative, naming each one", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { a: { endpoint: "https://x.example/v1", timeouts: { connect: 0, total: -5 } } } })
      expect(error.message).toMatch(/providers\.a\.timeouts\.connect: must be a positive number of seconds/)
      expect(error.message).toMatch(/providers\.a\.timeouts\.total: must be a positive number of seconds/)
      expect(error.message).not.toContain("providers.a.timeouts.first_byte")
    }))

  it.effect("refuses infinite numbers (YAML's .inf, or 1e400), naming each: JSON would store them as null", () =>
    Effect.gen(function* () {
      const error = yield* refused({
        providers: {
          a: {
            endpoint: "https://x.example/v1",
            timeouts: { first_byte: Number.POSITIVE_INFINITY },
            weight: Number.POSITIVE_INFINITY,
            model_overrides: { m: { pricing: { input: Number.POSITIVE_INFINITY, output: 1 } } }
          }
        },
        routing: { failover: [{ provider_id: "a", condition: "credit_threshold", value: Number.POSITIVE_INFINITY }] }
      })
      const lines = issueLines(error.message)
      expect(lines).toContainEqual(expect.stringMatching(/^providers\.a\.timeouts\.first_byte: /))
      expect(lines).toContainEqual(expect.stringMatching(/^providers\.a\.weight: /))
      expect(lines).toContainEqual(expect.stringMatching(/^providers\.a\.model_overrides\.m\.pricing\.input: /))
      expect(lines).toContainEqual(expect.stringMatching(/^routing\.failover\[0\]\.value: /))
      expect(lines).toHaveLength(4)
    }))

  it.effect("refuses a max_connections that is not a positive integer, naming it", () =>
    Effect.gen(function* () {
      const error = yield* refused({
        providers: {
          zero: { endpoint: "http://127.0.0.1:8080/v1", max_connections: 0 },
          negative: { endpoint: "http://127.0.0.1:8080/v1", max_connections: -2 },
          fraction: { endpoint: "http://127.0.0.1:8080/v1", max_connections: 2.5 },
          text: { endpoint: "http://127.0.0.1:8080/v1", max_connections: "four" }
        }
      })
      expect(error.message.split("\n")[0]).toContain("/etc/sanctum/router.yaml")
      const lines = issueLines(error.message)
      expect(lines).toContainEqual(expect.stringMatching(/^providers\.zero\.max_connections: must be a positive integer/))
      expect(lines).toContainEqual(expect.stringMatching(/^providers\.negative\.max_connections: must be a positive integer/))
      expect(lines).toContainEqual(expect.stringMatching(/^providers\.fraction\.max_connections: must be an integer/))
      expect(lines).toContainEqual(expect.stringMatching(/^providers\.text\.max_connections: .*"four"/))
      expect(lines).toHaveLength(4)
    }))

  it.effect("accepts max_connections as a number or as text from ${VAR} substitution", () =>
    Effect.gen(function* () {
      const loaded = yield* accepted(
        { providers: { llama: { endpoint: "http://127.0.0.1:8080/v1", max_connections: "${LLAMA_SLOTS:-4}" } } },
        { LLAMA_SLOTS: "2" }
      )
      expect(providerSpecs(loaded.file)[0]?.maxConnections).toBe(2)
      const plain = yield* accepted({ providers: { llama: { endpoint: "http://127.0.0.1:8080/v1", max_connections: 4 } } })
      expect(providerSpecs(plain.file)[0]?.maxConnections).toBe(4)
    }))

  it.effect("refuses an unknown provider_type", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { a: { endpoint: "https://x.example/v1", provider_type: "openai" } } })
      expect(error.message).toContain("providers.a.provider_type")
      expect(error.message).toContain("\"openai\"")
    }))

  it.effect("refuses models given as a string instead of a list", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { a: { endpoint: "https://x.example/v1", models: "m1" } } })
      expect(error.message).toContain("providers.a.models")
    }))

  it.effect("refuses capability flags that are not booleans", () =>
    Effect.gen(function* () {
      const error = yield* refused({ providers: { a: { endpoint: "https://x.example/v1", supports_tools: "yes" } } })
      expect(error.message).toContain("providers.a.supports_tools")
    }))

  it.effect("refuses an out-of-range server.port and a non-positive server.max_body_bytes", () =>
    Effect.gen(function* () {
      const port = yield* refused({ server: { port: 70000 } })
      expect(port.message).toMatch(/server\.port: .*70000/)
      const body = yield* refused({ server: { max_body_bytes: 0 } })
      expect(body.message).toContain("server.max_body_bytes")
      const retention = yield* refused({ server: { request_retention_days: -3 } })
      expect(retention.message).toMatch(/server\.request_retention_days: .*-3/)
      const drain = yield* refused({ server: { drain_timeout: -1 } })
      expect(drain.message).toMatch(/server\.drain_timeout: .*seconds.*-1/)
    }))

  it.effect("refuses a server.busy_poll_us outside 0-100000 or not a whole number, naming the key", () =>
    Effect.gen(function* () {
      for (const bad of [-1, 100_001, 2.5, "soon"]) {
        const error = yield* refused({ server: { busy_poll_us: bad } })
        expect(error.message).toMatch(/server\.busy_poll_us: .*/)
      }
      const negative = yield* refused({ server: { busy_poll_us: -1 } })
      expect(negative.message).toContain("microseconds (0-100000, 0 turns busy polling off), got -1")
    }))

  it.effect("reports every invalid key, not only the first", () =>
    Effect.gen(function* () {
      const error = yield* refused({
        server: { port: -1 },
        providers: { a: { endpoint: "nope" }, b: { endpoint: "https://x.example/v1", priority: "x" } }
      })
      expect(error.message).toContain("server.port")
      expect(error.message).toContain("providers.a.endpoint")
      expect(error.message).toContain("providers.b.priority")
    }))
})

describe("loadConfigFile", () => {
  const dir = tempDir()
  afterAll(() => removeDir(dir))
  const write = (name: string, text: string) => {
    const path = join(dir, name)
    writeFileSync(path, text)
    return path
  }

  it.effect("reads YAML with ${VAR} substitution", () =>
    Effect.gen(function* () {
      const path = write("ok.yaml", [
        "server:",
        "  port: 9123",
        "providers:",
        "  venice:",
        "    endpoint: https://api.venice.ai/api/v1",
        "    api_key: ${VENICE_API_KEY}",
        "    provider_type: venice",
        "    models: [llama-3.3-70b]",
        "aliases:",
        "  fast: venice+llama-3.3-70b",
        ""
      ].join("\n"))
      const loaded = yield* loadConfigFile(path, { VENICE_API_KEY: "sk-v" })
      expect(loaded.path).toBe(path)
      expect(loaded.missingEnv).toEqual([])
      expect(loaded.file.server?.port).toBe(9123)
      const [venice] = providerSpecs(loaded.file)
      expect(venice?.type).toBe("venice")
      expect(venice && venice.apiKey && Redacted.value(venice.apiKey)).toBe("sk-v")
    }))

  it.effect("reads a JSON file (JSON is YAML)", () =>
    Effect.gen(function* () {
      const path = write("ok.json", JSON.stringify({ providers: { p: { endpoint: "http://127.0.0.1:9/v1", models: ["m"] } } }))
      const loaded = yield* loadConfigFile(path, {})
      expect(providerSpecs(loaded.file).map((p) => [p.id, p.models])).toEqual([["p", ["m"]]])
    }))

  it.effect("keeps a substituted value with YAML-special characters intact", () =>
    Effect.gen(function* () {
      const path = write("special.yaml", "providers:\n  p:\n    endpoint: http://127.0.0.1:9/v1\n    api_key: ${KEY}\n")
      const loaded = yield* loadConfigFile(path, { KEY: "a: b # c, [d] {e}" })
      expect(loaded.file.providers?.p?.api_key).toBe("a: b # c, [d] {e}")
    }))

  it.effect("refuses invalid YAML with a message naming the file and the line", () =>
    Effect.gen(function* () {
      const path = write("bad.yaml", "providers:\n  p:\n    endpoint: [unclosed\n")
      const error = yield* Effect.flip(loadConfigFile(path, {}))
      expect(error).toBeInstanceOf(ConfigFileError)
      expect(error.path).toBe(path)
      expect(error.message.split("\n")[0]).toContain(path)
      expect(error.message).toContain("not valid YAML")
      expect(error.message).toMatch(/line \d+/)
    }))

  it.effect("refuses a provider defined twice (duplicate YAML keys)", () =>
    Effect.gen(function* () {
      const path = write("dup.yaml", [
        "providers:",
        "  p:",
        "    endpoint: http://127.0.0.1:1/v1",
        "  p:",
        "    endpoint: http://127.0.0.1:2/v1",
        ""
      ].join("\n"))
      const error = yield* Effect.flip(loadConfigFile(path, {}))
      expect(error.message).toContain(path)
    }))

  it.effect("refuses a missing file with a message naming it", () =>
    Effect.gen(function* () {
      const path = join(dir, "does-not-exist.yaml")
      const error = yield* Effect.flip(loadConfigFile(path, {}))
      expect(error.path).toBe(path)
      expect(error.message).toContain(path)
      expect(error.message).toContain("cannot read config file")
    }))

  it.effect("validates what it read, naming the file and the key path", () =>
    Effect.gen(function* () {
      const path = write("invalid.yaml", "providers:\n  venice:\n    endpoint: https://api.venice.ai/api/v1\n    priority: high\n")
      const error = yield* Effect.flip(loadConfigFile(path, {}))
      expect(error.message).toContain(path)
      expect(error.message).toContain("providers.venice.priority")
    }))
})

describe("providerSpecs and aliasSpecs", () => {
  const file = (providers: NonNullable<ConfigFile["providers"]>, aliases?: ConfigFile["aliases"]): ConfigFile =>
    aliases === undefined ? { providers } : { providers, aliases }

  it("fills the defaults: openai_compat, priority 100, discovered models, unknown capabilities, 5/60/600 s, 256 connections", () => {
    const [spec] = providerSpecs(file({ p: { endpoint: "https://x.example/v1" } }))
    expect(spec).toEqual({
      id: "p",
      endpoint: "https://x.example/v1",
      apiKey: null,
      type: "openai_compat",
      models: null,
      priority: 100,
      supportsTools: null,
      supportsStreaming: null,
      supportsMultimodal: null,
      timeouts: { connectMs: 5_000, firstByteMs: 60_000, idleMs: 30_000, totalMs: 600_000 },
      maxConnections: 256,
      hedgeAfterMs: null,
      weight: 1,
      modelOverrides: {},
      source: "file"
    })
  })

  it("keeps what the file says, converting timeouts from seconds to milliseconds", () => {
    const [spec] = providerSpecs(file({
      v: {
        endpoint: "https://api.venice.ai/api/v1/",
        api_key: "sk-venice",
        provider_type: "venice",
        models: ["a", "b"],
        priority: 5,
        supports_tools: false,
        supports_streaming: true,
        supports_multimodal: false,
        timeouts: { connect: 1.5, first_byte: 20, total: 120 },
        max_connections: 4
      }
    }))
    expect(spec).toMatchObject({
      id: "v",
      endpoint: "https://api.venice.ai/api/v1",
      type: "venice",
      models: ["a", "b"],
      priority: 5,
      supportsTools: false,
      supportsStreaming: true,
      supportsMultimodal: false,
      timeouts: { connectMs: 1_500, firstByteMs: 20_000, idleMs: 30_000, totalMs: 120_000 },
      maxConnections: 4
    })
  })

  it("defaults each missing timeout separately, and treats `timeouts: null` and `models: null` as omitted", () => {
    const [partial, nulls] = providerSpecs(file({
      a: { endpoint: "https://x.example/v1", timeouts: { first_byte: 30 } },
      b: { endpoint: "https://x.example/v1", timeouts: null, models: null }
    }))
    expect(partial?.timeouts).toEqual({ connectMs: 5_000, firstByteMs: 30_000, idleMs: 30_000, totalMs: 600_000 })
    expect(nulls?.timeouts).toEqual({ connectMs: 5_000, firstByteMs: 60_000, idleMs: 30_000, totalMs: 600_000 })
    expect(nulls?.models).toBeNull()
  })

  it("wraps the api_key so it never prints, and treats an empty key as none", () => {
    const [withKey, emptyKey, nullKey] = providerSpecs(file({
      a: { endpoint: "https://x.example/v1", api_key: "sk-secret-123" },
      b: { endpoint: "https://x.example/v1", api_key: "" },
      c: { endpoint: "https://x.example/v1", api_key: null }
    }))
    expect(withKey?.apiKey).not.toBeNull()
    expect(Redacted.value(withKey!.apiKey!)).toBe("sk-secret-123")
    expect(String(withKey?.apiKey)).not.toContain("sk-secret-123")
    expect(JSON.stringify(withKey)).not.toContain("sk-secret-123")
    expect(emptyKey?.apiKey).toBeNull()
    expect(nullKey?.apiKey).toBeNull()
  })

  it("strips every trailing slash of the endpoint", () => {
    const [spec] = providerSpecs(file({ p: { endpoint: "http://127.0.0.1:8000/v1///" } }))
    expect(spec?.endpoint).toBe("http://127.0.0.1:8000/v1")
  })

  it("turns a single alias target into a one-element chain and keeps list order", () => {
    const f = file({ p: { endpoint: "https://x.example/v1" } }, { one: "p+m", chain: ["p+m2", "m3", "p+m1"] })
    expect(aliasSpecs(f)).toEqual([
      { name: "one", targets: ["p+m"], hedgeAfterMs: null, strategy: null, source: "file" },
      { name: "chain", targets: ["p+m2", "m3", "p+m1"], hedgeAfterMs: null, strategy: null, source: "file" }
    ])
    expect(configState(f).aliases).toEqual(aliasSpecs(f))
    expect(configState(f).providers.map((p) => p.id)).toEqual(["p"])
  })
})
