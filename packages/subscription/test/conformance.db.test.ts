/**
 * The testkit's conformance suite of the v2 `Source` contract against the knex
 * SubscriptionSource, on every database target (one call). The seed creates a
 * plan and subscribes the account with total = amount; the balance is the
 * source's own (the most one reservation could take). One migrated database per
 * target (a module-level ManagedRuntime), fresh ids per check.
 *
 * Rewritten for v2: the two-phase `fundingSourceSuite` checked hold-id replay in
 * the source, which v2 moves into the engine; its per-check audit cannot run
 * with the suite's direct take/move checks (no engine, so no ledger rows, on
 * purpose); the suite's engine checks compare the ledger with the balances.
 */
import { Accounts, KnexBilling, KnexClient } from "@relay-billing/knex"
import { sourceSuite } from "@relay-billing/testkit/vitest"
import { Context, Effect, Layer, ManagedRuntime } from "effect"
import { afterAll, describe } from "vitest"
import { SubscriptionAdmin, SubscriptionSource } from "../src/index.js"
import { migratedClient, targets } from "./support.js"

const TIMEOUT = 30_000

for (const target of targets) {
  describe(`subscription conformance on ${target.name}`, () => {
    const runtime = ManagedRuntime.make(
      Layer.mergeAll(SubscriptionAdmin.SubscriptionAdmin.layer, Accounts.Accounts.layer).pipe(
        Layer.provideMerge(migratedClient(target))
      )
    )
    afterAll(() => runtime.dispose(), 60_000)

    const services = Effect.map(runtime.contextEffect, (ctx) => ({
      client: Context.get(ctx, KnexClient.KnexClient),
      admin: Context.get(ctx, SubscriptionAdmin.SubscriptionAdmin),
      accounts: Context.get(ctx, Accounts.Accounts)
    }))

    let funded = 0
    sourceSuite({
      name: `knex subscription (${target.name})`,
      make: () =>
        Effect.map(services, (s) => ({
          ...s,
          source: SubscriptionSource.make(),
          store: Layer.mergeAll(KnexBilling.layer, Accounts.countersLayer).pipe(
            Layer.provide(Layer.succeed(KnexClient.KnexClient, s.client))
          )
        })),
      seed: (h, { accountId, amount }) =>
        Effect.gen(function*() {
          const n = ++funded
          yield* h.accounts.create({ id: accountId })
          yield* h.admin.createPlan({
            id: `conf-plan-${n}`,
            name: `conformance ${n}`,
            totalAmount: amount,
            resetPeriod: "never",
            durationSeconds: 200 * 365 * 86_400
          })
          // Active from the epoch for two centuries: the suite's engine checks run under a
          // TestClock (time 0), its direct take/move checks on the real clock.
          yield* h.admin.subscribe({ id: `conf-sub-${n}`, accountId, planId: `conf-plan-${n}`, startAt: 0 })
        }),
      timeout: TIMEOUT
    })
  })
}
