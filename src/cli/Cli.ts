/**
 * The `sanctum-router` command line. `serve` runs the daemon; flags win over the environment,
 * which wins over the config file.
 */
import { Command, HelpDoc, Options, ValidationError } from "@effect/cli"
import * as HttpServerError from "@effect/platform/HttpServerError"
import { Effect, Layer, Option } from "effect"
import { wholeNumberIn } from "../config/Settings.js"
import { startFakeServer } from "../testing/FakeServer.js"
import type { FakeBehaviour } from "../testing/Script.js"
import * as Daemon from "../Daemon.js"

/**
 * A flag taking a whole number from `min` to `max`, read as `ROUTER_PORT` is (`wholeNumberIn`).
 * `Options.integer` answers other text with "'abc' is not a integer", naming neither the flag nor
 * what it takes, and reads whatever `Number` does (`1e3`, `0x10`); a bad value here stops the
 * command with one line naming the flag, the value and the range.
 */
const wholeNumber = (name: string, min: number, max: number, expected: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("integer"),
    Options.mapEffect((raw) => {
      const n = wholeNumberIn(raw)
      return n >= min && n <= max
        ? Effect.succeed(n)
        : Effect.fail(ValidationError.invalidValue(HelpDoc.p(`sanctum-router: Invalid --${name} ${JSON.stringify(raw)}: expected ${expected}`)))
    })
  )

/** 0 asks the system for any free port, as `ROUTER_PORT=0` does. */
const portFlag = () => wholeNumber("port", 0, 65535, "a port number (0-65535)")

/** The longest delay a Node timer takes; a longer one fires at once (after 1 ms). */
const maxDelayMs = 2 ** 31 - 1

const config = Options.text("config").pipe(
  Options.withDescription("YAML (or JSON) configuration file; default: $ROUTER_CONFIG, else none"),
  Options.optional
)
const port = portFlag().pipe(Options.withDescription("port to listen on, 0-65535 (0: any free port); default: $ROUTER_PORT, else 8480"), Options.optional)
const host = Options.text("host").pipe(Options.withDescription("address to bind; default 127.0.0.1"), Options.optional)
const db = Options.text("db").pipe(
  Options.withDescription("SQLite database file; default: $ROUTER_DB_PATH, else ./data/router.db"),
  Options.optional
)

export const serve = Command.make("serve", { config, port, host, db }, (opts) =>
  Layer.launch(Daemon.layer({
    config: Option.getOrUndefined(opts.config),
    port: Option.getOrUndefined(opts.port),
    host: Option.getOrUndefined(opts.host),
    db: Option.getOrUndefined(opts.db)
  }, process.env))).pipe(Command.withDescription("Run the router daemon"))

const modes = ["ok", "slow", "status", "rate-limited", "error200", "reset", "refuse", "hang", "stall", "cut", "stall-body"] as const

/** The behaviour a `fake-provider` mode stands for. */
export const behaviourOf = (o: {
  readonly mode: (typeof modes)[number]
  readonly status: number
  readonly after: number
  readonly delayMs: number
  readonly retryAfter: number
  readonly content: string | undefined
}): FakeBehaviour => {
  const content = o.content === undefined ? {} : { content: o.content }
  switch (o.mode) {
    case "ok":
      return { mode: "ok", ...content, chunkDelayMs: o.delayMs }
    case "slow":
      return { mode: "ok", ...content, firstByteMs: o.delayMs, chunkDelayMs: o.delayMs }
    case "status":
      return { mode: "status", status: o.status, firstByteMs: o.delayMs }
    case "rate-limited":
      return { mode: "status", status: 429, retryAfter: o.retryAfter }
    case "error200":
      return { mode: "error200", code: o.status }
    case "reset":
    case "refuse":
    case "hang":
      return { mode: o.mode }
    case "stall":
    case "cut":
      return { mode: o.mode, afterChunks: o.after, ...content }
    case "stall-body":
      return { mode: "stallBody", afterBytes: o.after, ...content }
  }
}

export const fakeProvider = Command.make(
  "fake-provider",
  {
    port: portFlag().pipe(Options.withDefault(8481), Options.withDescription("port to listen on, 0-65535 (0: any free port)")),
    host: Options.text("host").pipe(Options.withDefault("127.0.0.1"), Options.withDescription("address to bind")),
    mode: Options.choice("mode", modes).pipe(
      Options.withDefault("ok"),
      Options.withDescription(
        "ok | slow (first byte and each event after --delay-ms) | status (HTTP --status) | rate-limited (429, Retry-After --retry-after) | " +
          "error200 (an error object inside a 200) | reset | refuse | hang | stall / cut (after --after events, go silent / drop the connection) | " +
          "stall-body (a whole answer's 200 and headers, --after bytes of its body, then silence)"
      )
    ),
    status: wholeNumber("status", 100, 599, "an HTTP status (100-599)").pipe(
      Options.withDefault(500),
      Options.withDescription("status for --mode status, error code for error200 (100-599)")
    ),
    after: wholeNumber("after", 0, Number.MAX_SAFE_INTEGER, "a whole number (0 or more)").pipe(
      Options.withDefault(2),
      Options.withDescription("events sent before a stall or cut (bytes of the body for stall-body)")
    ),
    delayMs: wholeNumber("delay-ms", 0, maxDelayMs, `a number of milliseconds (0-${maxDelayMs})`).pipe(
      Options.withDefault(0),
      Options.withDescription("milliseconds before the first byte and between events")
    ),
    retryAfter: wholeNumber("retry-after", 0, Number.MAX_SAFE_INTEGER, "a whole number of seconds (0 or more)").pipe(
      Options.withDefault(5),
      Options.withDescription("seconds, for --mode rate-limited")
    ),
    models: Options.text("models").pipe(Options.withDefault("fake-model"), Options.withDescription("comma-separated model ids it lists")),
    name: Options.text("name").pipe(Options.withDefault("fake"), Options.withDescription("its name, in default answers")),
    content: Options.text("content").pipe(Options.optional, Options.withDescription("the assistant's answer text"))
  },
  (o) =>
    Effect.acquireRelease(
      // A port in use (or a host that cannot be bound) stops the command with one line, as for serve.
      Effect.tryPromise({
        try: () =>
          startFakeServer({
            name: o.name,
            models: o.models.split(",").map((m) => m.trim()).filter((m) => m !== ""),
            port: o.port,
            host: o.host,
            behaviour: behaviourOf({ ...o, content: Option.getOrUndefined(o.content) })
          }),
        catch: (cause) => new HttpServerError.ServeError({ cause })
      }),
      (server) => Effect.promise(() => server.close())
    ).pipe(
      // An IPv6 host goes in brackets, or the URL printed is not one (`http://::1:9001/v1`).
      Effect.tap((server) => Effect.logInfo(`fake provider '${o.name}' (${o.mode}) listening on ${server.url.replace("127.0.0.1", o.host.includes(":") ? `[${o.host}]` : o.host)}`)),
      Effect.zipRight(Effect.never),
      Effect.scoped
    )
).pipe(Command.withDescription("Run a scripted OpenAI-compatible backend, to rehearse outages against a real config"))

export const root = Command.make("sanctum-router").pipe(
  Command.withDescription("Self-hosted, OpenAI-compatible inference router"),
  Command.withSubcommands([serve, fakeProvider])
)

export const run = (version: string) => Command.run(root, { name: "sanctum-router", version })
