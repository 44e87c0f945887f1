#!/usr/bin/env node
/**
 * The `relay` executable: runs {@link Cli.run} on `process.argv` and exits
 * with its exit code. SIGINT/SIGTERM interrupt the command (for `serve`: a
 * graceful shutdown), after which the process exits with code 0.
 *
 * @since 0.1.0
 */
import { Effect, Exit, Fiber } from "effect"
import * as Cli from "./Cli.js"

const fiber = Effect.runFork(Cli.run(process.argv.slice(2)))
const stop = () => {
  Effect.runFork(Fiber.interrupt(fiber))
}
process.once("SIGINT", stop)
process.once("SIGTERM", stop)
// `join` also observes a fiber that completed synchronously inside `runFork`
void Effect.runPromiseExit(Fiber.join(fiber)).then((exit) => {
  process.off("SIGINT", stop)
  process.off("SIGTERM", stop)
  process.exitCode = Exit.isSuccess(exit) ? exit.value : Exit.hasInterrupts(exit) ? 0 : 1
  if (Exit.isFailure(exit) && !Exit.hasInterrupts(exit)) console.error("relay: unexpected failure", exit.cause)
})
