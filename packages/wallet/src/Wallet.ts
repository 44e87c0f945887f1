/**
 * Wires the wallet package: its migrations, the wallet source and token budget,
 * the account counters, the audit columns, and a ready `BillingSession` over
 * knex with the wallet as its funding source.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { AccountCounters, BillingSession, FundingRegistry } from "@relay-billing/core"
import type { BillingError, Budget, FundingSource, HoldJournal, Ledger } from "@relay-billing/core"
import { KnexBilling, KnexClient } from "@relay-billing/knex"
import type { Audit, Migrations } from "@relay-billing/knex"
import { refuseOutOfRange, withinRange } from "./internal/rows.js"
import { walletMigrations } from "./internal/schema.js"
import * as TokenBudget from "./TokenBudget.js"
import { WalletAdmin } from "./WalletAdmin.js"
import * as WalletLowBalance from "./WalletLowBalance.js"
import * as WalletSource from "./WalletSource.js"

/**
 * The accounts and tokens tables.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrations: Migrations.MigrationSet = walletMigrations

/**
 * Every migration set a wallet-only deployment needs, in order.
 *
 * @since 0.1.0
 * @category migrations
 */
export const allMigrations: ReadonlyArray<Migrations.MigrationSet> = [KnexBilling.migrations, walletMigrations]

/**
 * The balances the audit checks: wallet balances and token budgets.
 *
 * @since 0.1.0
 * @category audit
 */
export const auditBalances: ReadonlyArray<Audit.BalanceColumn> = [
  { sourceId: "wallet", table: "accounts", idColumn: "id", balanceColumn: "balance" },
  { sourceId: "token", table: "tokens", idColumn: "id", balanceColumn: "remain" }
]

/**
 * The counter the audit proves against the holds: `accounts.used_quota` must
 * equal each account's settled charges less corrections
 * (`Audit.run(balances, { counters: auditCounters })`).
 *
 * @since 0.2.0
 * @category audit
 */
export const auditCounters: Audit.CounterColumn = { table: "accounts", idColumn: "id", usedColumn: "used_quota" }

/**
 * `usedQuota` / `requestCount` on the accounts table.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeCounters = (client: KnexClient.Client): AccountCounters.AccountCounters["Service"] =>
  AccountCounters.AccountCounters.of({
    add: (accountId, change) =>
      change.usedQuota === 0 && change.requestCount === 0 ? Effect.void : client.query("wallet.counters", (db) =>
        withinRange(
          withinRange(db(client.table("accounts")).where({ id: accountId }), "used_quota", change.usedQuota),
          "request_count",
          change.requestCount
        ).update({
          used_quota: db.raw("used_quota + ?", [change.usedQuota]),
          request_count: db.raw("request_count + ?", [change.requestCount])
        })).pipe(
          // No row: an unknown account (nothing to count), or a counter would leave ±(2^53−1).
          Effect.flatMap((changed) =>
            Number(changed) > 0 ? Effect.void : refuseOutOfRange(client, client.table("accounts"), [
              { column: "used_quota", field: "account.usedQuota", change: change.usedQuota },
              { column: "request_count", field: "account.requestCount", change: change.requestCount }
            ], accountId, "wallet.counters").pipe(Effect.asVoid)
          )
        ),
    // Read only: what `add` would refuse (an unknown account is nothing to count).
    check: (accountId, change) =>
      refuseOutOfRange(client, client.table("accounts"), [
        { column: "used_quota", field: "account.usedQuota", change: change.usedQuota },
        { column: "request_count", field: "account.requestCount", change: change.requestCount }
      ], accountId, "wallet.counters.check", true).pipe(Effect.asVoid)
  })

/**
 * The wallet source and the token budget over the client in context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const sources = (
  options: WalletSource.WalletOptions = {}
): Effect.Effect<{ readonly wallet: FundingSource.FundingSource; readonly token: Budget.Budget }, never, KnexClient.KnexClient> =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    return { wallet: WalletSource.make(client, options), token: TokenBudget.make(client) }
  })

/**
 * The account counters over the client in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const countersLayer: Layer.Layer<AccountCounters.AccountCounters, never, KnexClient.KnexClient> = Layer.effect(
  AccountCounters.AccountCounters,
  Effect.gen(function*() {
    return makeCounters(yield* KnexClient.KnexClient)
  })
)

/**
 * Everything a wallet-funded relay needs over one knex client: `BillingSession`
 * (journal, ledger, counters and a registry with the wallet and token budget),
 * and `WalletAdmin`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: {
    readonly wallet?: WalletSource.WalletOptions
    readonly session?: BillingSession.Options
    readonly lowBalance?: WalletLowBalance.Options
  } = {}
): Layer.Layer<
  | BillingSession.BillingSession
  | WalletAdmin
  | HoldJournal.HoldJournal
  | Ledger.Ledger
  | AccountCounters.AccountCounters
  | FundingRegistry.FundingRegistry,
  BillingError.InvalidInput,
  KnexClient.KnexClient
> => {
  const registry = FundingRegistry.FundingRegistry.layerEffect(
    Effect.map(sources(options.wallet), (s) => ({ funding: [s.wallet], budgets: [s.token] }))
  )
  const services = Layer.mergeAll(KnexBilling.layer, countersLayer, registry, WalletAdmin.layer)
  return sessionLayer(options).pipe(Layer.provideMerge(services))
}

/**
 * The `BillingSession` over the knex client with the wallet package's defaults:
 * the database-backed low-balance policy, and split funding opted into per
 * account (`WalletAdmin.setSplitFunding`) unless `session.splitFundingFor` says
 * otherwise. Needs the journal, registry and counters.
 *
 * @since 0.1.0
 * @category layers
 */
export const sessionLayer = (
  options: { readonly session?: BillingSession.Options; readonly lowBalance?: WalletLowBalance.Options } = {}
): Layer.Layer<
  BillingSession.BillingSession,
  BillingError.InvalidInput,
  KnexClient.KnexClient | HoldJournal.HoldJournal | FundingRegistry.FundingRegistry | AccountCounters.AccountCounters
> =>
  Layer.unwrap(Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const session: BillingSession.Options = {
      splitFundingFor: (accountId) =>
        client.query("wallet.splitFunding", (db) =>
          db(client.table("accounts")).where({ id: accountId }).first("split_funding")).pipe(
            Effect.map((row) => Boolean(row?.split_funding))
          ),
      ...options.session
    }
    return BillingSession.BillingSession.layer(session).pipe(
      Layer.provide(WalletLowBalance.layer(options.lowBalance))
    )
  }))
