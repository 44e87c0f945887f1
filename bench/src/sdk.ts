/**
 * The SDK side: `BillingSession.open` then `session.settle(actual)`, through
 * `Wallet.layer()` over a `KnexClient` (token budget + wallet funding, the
 * `wallet_only` preference), exactly as a relay handler would call it.
 */
import { BillingSession } from "@relay-billing/core"
import type { BillingError } from "@relay-billing/core"
import { KnexClient } from "@relay-billing/knex"
import { Wallet } from "@relay-billing/wallet"
import { Context, Effect, Layer } from "effect"
import type { Scope } from "effect"
import type { SessionInput } from "./workload.js"

export type Billing = BillingSession.BillingSession["Service"]

/** Builds `Wallet.layer()` over `client` in the current scope and returns the engine. */
export const makeBilling = (
  client: KnexClient.Client
): Effect.Effect<Billing, BillingError.InvalidInput, Scope.Scope> =>
  Effect.map(
    Layer.build(Wallet.layer().pipe(Layer.provide(Layer.succeed(KnexClient.KnexClient, client)))),
    (context) => Context.get(context, BillingSession.BillingSession)
  )

/** One session; `state.opened` is set once open has committed. */
export const sdkSession = (
  billing: Billing,
  input: SessionInput,
  state: { opened: boolean },
  phase?: (phase: "open" | "settle") => void
) =>
  Effect.gen(function*() {
    if (phase) phase("open")
    const session = yield* billing.open({
      holdId: input.holdId,
      accountId: input.accountId,
      tokenId: input.tokenId,
      estimate: input.estimate,
      preference: "wallet_only"
    })
    state.opened = true
    if (phase) phase("settle")
    yield* session.settle(input.actual)
  })
