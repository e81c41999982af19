/**
 * The `sanctum-router` command line. `serve` runs the daemon; flags win over the environment,
 * which wins over the config file.
 */
import { Command, Options } from "@effect/cli"
import { Effect, Layer, Option } from "effect"
import * as Daemon from "../Daemon.js"

const config = Options.text("config").pipe(
  Options.withDescription("YAML (or JSON) configuration file; default: $ROUTER_CONFIG, else none"),
  Options.optional
)
const port = Options.integer("port").pipe(Options.withDescription("port to listen on; default: $ROUTER_PORT, else 8480"), Options.optional)
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

export const root = Command.make("sanctum-router").pipe(
  Command.withDescription("Self-hosted, OpenAI-compatible inference router"),
  Command.withSubcommands([serve])
)

export const run = (version: string) => Command.run(root, { name: "sanctum-router", version })
