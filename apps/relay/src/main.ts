#!/usr/bin/env node
/**
 * The `relay` executable: runs {@link Cli.run} on `process.argv` under
 * `NodeRuntime.runMain` and exits with its exit code. SIGINT/SIGTERM interrupt
 * the command (for `serve`: a graceful shutdown — drain, end the remaining
 * streams, bill them, close the database), after which the process exits with
 * code 0.
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Exit } from "effect"
import * as Cli from "./Cli.js"

NodeRuntime.runMain(Cli.run(process.argv.slice(2)), {
  disableErrorReporting: true,
  teardown: (exit, onExit) => {
    if (Exit.isSuccess(exit)) return onExit(typeof exit.value === "number" ? exit.value : 0)
    if (Cause.hasInterruptsOnly(exit.cause)) return onExit(0)
    console.error("relay: unexpected failure", Cause.pretty(exit.cause))
    onExit(1)
  }
})
