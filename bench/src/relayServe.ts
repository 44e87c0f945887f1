#!/usr/bin/env node
/**
 * `node bench/dist/relayServe.js`: the reference relay's `serve` (the built
 * `@relay-billing/relay`, configured through the same environment:
 * `RELAY_HOST`, `RELAY_PORT`, `RELAY_DATABASE_URL`, `RELAY_CONFIG`,
 * `RELAY_ADMIN_KEY`), with the client API billing through the bench's
 * pass-through session ({@link PassThrough}) instead of the SDK. The admin
 * API, the reaper and the audit keep the SDK's session. `pnpm bench:relay`
 * runs it next to `relay serve` to price the billing per request.
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import { Config, Server } from "@relay-billing/relay"
import { Cause, Effect, Exit } from "effect"
import * as PassThrough from "./relayPassThrough.js"

NodeRuntime.runMain(
  Effect.flatMap(Config.load(), (loaded) => Server.serve(loaded, { clientSession: PassThrough.layer })),
  {
    disableErrorReporting: true,
    teardown: (exit, onExit) => {
      if (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)) return onExit(0)
      console.error("relay (pass-through): unexpected failure", Cause.pretty(exit.cause))
      onExit(1)
    }
  }
)
