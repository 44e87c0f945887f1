/**
 * The testkit's conformance suite of the v2 `Source` contract, run against the
 * knex wallet and the knex token budget on every database target (one call
 * each). One migrated database per target is built lazily (a module-level
 * ManagedRuntime) and shared by every check of the file; the suite uses fresh
 * account, token and hold ids per check.
 *
 * Rewritten for v2: the two-phase suites (`fundingSourceSuite`, `budgetSuite`)
 * checked hold-id replay inside the source, which v2 moves into the engine. The
 * audit after every check is gone with them: the suite's `take`/`move` checks
 * call the source directly (no engine, so no ledger rows, on purpose), and its
 * `engine.*` checks compare the ledger with the balances themselves.
 */
import { Accounts, KnexBilling, KnexClient } from "@relay-billing/knex"
import { sourceSuite } from "@relay-billing/testkit/vitest"
import { Context, Effect, Layer, ManagedRuntime } from "effect"
import { afterAll, describe } from "vitest"
import { TokenBudget, WalletAdmin, WalletSource } from "../src/index.js"
import { migratedClient, targets } from "./support.js"

const TIMEOUT = 30_000

for (const target of targets) {
  describe(`conformance on ${target.name}`, () => {
    // One isolated, migrated database for the whole file on this target, built on first use.
    const runtime = ManagedRuntime.make(WalletAdmin.WalletAdmin.layer.pipe(Layer.provideMerge(migratedClient(target))))
    afterAll(() => runtime.dispose(), 60_000)

    const services = Effect.map(runtime.contextEffect, (ctx) => ({
      client: Context.get(ctx, KnexClient.KnexClient),
      admin: Context.get(ctx, WalletAdmin.WalletAdmin)
    }))

    /** The store's services over the shared client (cheap to build per call). */
    const harness = <S>(source: S) =>
      Effect.gen(function*() {
        const { admin, client } = yield* services
        const store = Layer.mergeAll(KnexBilling.layer, Accounts.countersLayer).pipe(
          Layer.provide(Layer.succeed(KnexClient.KnexClient, client))
        )
        return { source, store, admin }
      })

    let topUps = 0
    sourceSuite({
      name: `knex wallet (${target.name})`,
      make: () => harness(WalletSource.make()),
      seed: (h, { accountId, amount }) =>
        Effect.gen(function*() {
          yield* h.admin.createAccount({ id: accountId })
          const result = yield* h.admin.topUp({ accountId, amount, key: `fund-${accountId}-${++topUps}` })
          if (!result.applied) return yield* Effect.die(new Error(`top-up of ${accountId} was not applied`))
        }),
      timeout: TIMEOUT
    })

    sourceSuite({
      name: `knex token budget (${target.name})`,
      make: () => harness(TokenBudget.make()),
      seed: (h, { accountId, amount, subjectId }) =>
        Effect.gen(function*() {
          yield* h.admin.createAccount({ id: accountId })
          yield* h.admin.createToken({ id: subjectId, accountId, remain: amount })
        }),
      timeout: TIMEOUT
    })
  })
}
