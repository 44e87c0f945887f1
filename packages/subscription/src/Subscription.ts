/**
 * Wires the subscription package: migrations, audit columns, and a ready
 * `BillingSession` funded by subscriptions and the wallet (with token budgets)
 * over one knex client.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { FundingRegistry } from "@relay-billing/core"
import type { BillingError, BillingSession } from "@relay-billing/core"
import type { AccountCounters, HoldJournal, Ledger } from "@relay-billing/core"
import { Accounts, KnexBilling, KnexClient } from "@relay-billing/knex"
import type { Audit, Migrations } from "@relay-billing/knex"
import { Wallet, WalletAdmin } from "@relay-billing/wallet"
import type { WalletSource } from "@relay-billing/wallet"
import { subscriptionMigrations } from "./internal/schema.js"
import { SubscriptionAdmin, make as makeAdmin } from "./SubscriptionAdmin.js"
import * as SubscriptionSource from "./SubscriptionSource.js"

/**
 * The plans and subscriptions tables.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrations: Migrations.MigrationSet = subscriptionMigrations

/**
 * Every migration set a wallet + subscription deployment needs, in order.
 *
 * @since 0.1.0
 * @category migrations
 */
export const allMigrations: ReadonlyArray<Migrations.MigrationSet> = [...Wallet.allMigrations, subscriptionMigrations]

/**
 * The balances the audit checks: wallets, token budgets and subscription usage.
 *
 * @since 0.1.0
 * @category audit
 */
export const auditBalances: ReadonlyArray<Audit.BalanceColumn> = [
  ...Wallet.auditBalances,
  { sourceId: "subscription", table: "subscriptions", idColumn: "id", balanceColumn: "amount_used", sign: -1 }
]

/**
 * The counter the audit proves against the holds (`accounts.used_quota`, see
 * `Accounts` of `@relay-billing/knex`): `Audit.run(auditBalances, { counters: auditCounters })`.
 *
 * @since 0.2.0
 * @category audit
 */
export const auditCounters: Audit.CounterColumn = Accounts.auditCounters

/**
 * Options of the combined layer.
 *
 * @since 0.1.0
 * @category models
 */
export interface LayerOptions {
  readonly wallet?: WalletSource.WalletOptions
  readonly subscription?: SubscriptionSource.SubscriptionOptions
  readonly session?: BillingSession.Options
  readonly lowBalance?: Accounts.LowBalanceOptions
}

/**
 * `BillingSession` funded by subscriptions and the wallet (token budgets too),
 * plus `WalletAdmin`, `Accounts` and `SubscriptionAdmin`, over the knex client in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: LayerOptions = {}): Layer.Layer<
  | BillingSession.BillingSession
  | WalletAdmin.WalletAdmin
  | Accounts.Accounts
  | SubscriptionAdmin
  | HoldJournal.HoldJournal
  | Ledger.Ledger
  | AccountCounters.AccountCounters
  | FundingRegistry.FundingRegistry,
  BillingError.InvalidInput,
  KnexClient.KnexClient
> => {
  const registry = FundingRegistry.FundingRegistry.layerEffect(
    Effect.gen(function*() {
      const client = yield* KnexClient.KnexClient
      const { token, wallet } = yield* Wallet.sources(options.wallet)
      return { funding: [SubscriptionSource.make(client, options.subscription), wallet], budgets: [token] }
    })
  )
  const admin = Layer.effect(
    SubscriptionAdmin,
    Effect.gen(function*() {
      const client = yield* KnexClient.KnexClient
      return makeAdmin(client, options.subscription?.timeZone !== undefined ? { timeZone: options.subscription.timeZone } : {})
    })
  )
  const services = Layer.mergeAll(
    KnexBilling.layer,
    Accounts.countersLayer,
    Accounts.Accounts.layer,
    registry,
    WalletAdmin.WalletAdmin.layer,
    admin
  )
  return Wallet.sessionLayer({
    ...(options.session ? { session: options.session } : {}),
    ...(options.lowBalance ? { lowBalance: options.lowBalance } : {})
  }).pipe(Layer.provideMerge(services))
}
