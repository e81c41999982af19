/**
 * Runs the CLI on Node (loaded by `bin.ts`), turning start-up errors into one clear line and a
 * non-zero exit code instead of a stack trace.
 */
import { ValidationError } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer, Logger, LogLevel } from "effect"
import { readFileSync } from "node:fs"
import { logLevelOf } from "../Daemon.js"
import * as Cli from "./Cli.js"

const version = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version

const level = logLevelOf(process.env) ?? LogLevel.Info

/** One line on stderr, whatever the error: multi-line messages (config issues) are joined. */
const fail = (message: string) =>
  Effect.sync(() => {
    const [head, ...rest] = message.split("\n").map((l) => l.trim()).filter((l) => l !== "")
    process.stderr.write(`sanctum-router: ${rest.length === 0 ? head : `${head} ${rest.join("; ")}`}\n`)
    process.exitCode = 1
  })

Cli.run(version)(process.argv).pipe(
  Effect.catchIf(ValidationError.isValidationError, () => Effect.sync(() => { process.exitCode = 1 })),
  Effect.catchTags({
    ConfigFileError: (e) => fail(e.message),
    StartupError: (e) => fail(e.message),
    ServeError: (e) => fail(`cannot listen: ${String((e.cause as Error)?.message ?? e.cause)}`)
  }),
  Effect.provide(Layer.mergeAll(NodeContext.layer, Logger.pretty, Logger.minimumLogLevel(level))),
  NodeRuntime.runMain({ disableErrorReporting: false })
)
