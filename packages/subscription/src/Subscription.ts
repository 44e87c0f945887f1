/**
 * Wires the subscription package: its migrations and audit column. The
 * subscription is one `Source` among others: compose it with the wallet (or any
 * other source) in a `BillingSession` with `KnexBilling.sessionLayer` of
 * `@relay-billing/knex`, e.g.
 * `KnexBilling.sessionLayer({ funding: [SubscriptionSource.make(), WalletSource.make()], budgets: [TokenBudget.make()] })`;
 * the engine does overflow into the next source of the chain.
 *
 * @since 0.1.0
 */
import { Accounts, KnexBilling } from "@relay-billing/knex"
import type { Audit, Migrations } from "@relay-billing/knex"
import { subscriptionMigrations } from "./internal/schema.js"

/**
 * The plans and subscriptions tables.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrations: Migrations.MigrationSet = subscriptionMigrations

/**
 * Every migration set a subscription deployment needs, in order: the holds and
 * ledger, the accounts (`Accounts.migrations`), the plans and subscriptions.
 *
 * @since 0.1.0
 * @category migrations
 */
export const allMigrations: ReadonlyArray<Migrations.MigrationSet> = [
  KnexBilling.migrations,
  Accounts.migrations,
  subscriptionMigrations
]

/**
 * The balance the audit checks for subscriptions: `amount_used` counts up as
 * the ledger counts down. Add the other sources' columns next to it (for
 * example `[...Wallet.auditBalances, ...Subscription.auditBalances]`).
 *
 * @since 0.1.0
 * @category audit
 */
export const auditBalances: ReadonlyArray<Audit.BalanceColumn> = [
  { sourceId: "subscription", table: "subscriptions", idColumn: "id", balanceColumn: "amount_used", sign: -1 }
]

/**
 * The counter the audit proves against the holds (`accounts.used_quota`, see
 * `Accounts` of `@relay-billing/knex`): `Audit.run(balances, { counters: auditCounters })`.
 *
 * @since 0.2.0
 * @category audit
 */
export const auditCounters: Audit.CounterColumn = Accounts.auditCounters
