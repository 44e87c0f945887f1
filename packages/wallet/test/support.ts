import type { BillingSession } from "@relay-billing/core"
import type { KnexClient } from "@relay-billing/knex"
import { Accounts, Audit, Migrations, TestDatabase } from "@relay-billing/knex"
import { Effect, Layer } from "effect"
import { Wallet } from "../src/index.js"

/** Every database this run can reach (SQLite always; PG/MySQL from the environment). */
export const targets = TestDatabase.targets()

/** An isolated database with every migration applied. */
export const migratedClient = (target: TestDatabase.Target, options?: Parameters<typeof TestDatabase.layer>[1]) =>
  Layer.effectDiscard(Migrations.run(Wallet.allMigrations)).pipe(
    Layer.provideMerge(TestDatabase.layer(target, options))
  )

/** Billing over the wallet on an isolated, migrated database. */
export const walletBilling = (target: TestDatabase.Target, options: Parameters<typeof Wallet.layer>[0] = {}) =>
  Wallet.layer(options).pipe(Layer.provideMerge(migratedClient(target)))

/** Runs the audit and fails the test with its problems if it is not clean. */
export const auditClean = Effect.gen(function*() {
  const report = yield* Audit.run(Wallet.auditBalances, { counters: Accounts.auditCounters })
  if (!report.ok) return yield* Effect.die(new Error(`audit: ${report.problems.join("; ")}`))
  return report
})

export type { BillingSession, KnexClient }
