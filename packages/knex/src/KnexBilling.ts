/**
 * The knex package's migrations and its core services in one place, and a
 * `BillingSession` over one knex store with the sources it is given.
 *
 * @since 0.1.0
 */
import { BillingSession, FundingRegistry } from "@relay-billing/core"
import type { AccountCounters, BillingError, HoldJournal, Ledger, SqlStore } from "@relay-billing/core"
import { Effect, Layer } from "effect"
import * as Accounts from "./Accounts.js"
import { knexMigrations } from "./internal/schema.js"
import { KnexClient } from "./KnexClient.js"
import * as KnexJournal from "./KnexJournal.js"
import * as KnexLedger from "./KnexLedger.js"
import * as KnexSqlStore from "./KnexSqlStore.js"
import type { MigrationSet } from "./Migrations.js"

/**
 * The migrations of the holds, hold parts and ledger tables.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrations: MigrationSet = knexMigrations

/**
 * `HoldJournal`, `Ledger` and the `SqlStore` executor (for sources in the
 * hold's store) over the knex client.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<HoldJournal.HoldJournal | Ledger.Ledger | SqlStore.SqlStore, never, KnexClient> = Layer
  .mergeAll(
    KnexJournal.layer,
    KnexLedger.layer,
    KnexSqlStore.layer
  )

/**
 * Options of {@link sessionLayer}.
 *
 * @since 0.4.0
 * @category models
 */
export interface SessionOptions {
  /**
   * The funding sources, in the default order: `Source` values in this store
   * (the wallet, a subscription, a plugin's) and external two-phase sources.
   */
  readonly funding: ReadonlyArray<FundingRegistry.Funding>
  /** The budgets (the token budget). */
  readonly budgets?: ReadonlyArray<FundingRegistry.BudgetEntry>
  /** The engine's options; `splitFundingFor` defaults to the account's opt-in (`Accounts`). */
  readonly session?: BillingSession.Options
  /** The low-balance policy's options (`Accounts.makeLowBalance`). */
  readonly lowBalance?: Accounts.LowBalanceOptions
}

/**
 * A `BillingSession` over the knex client in context with the given sources:
 * the journal, ledger and executor of this store ({@link layer}), the accounts
 * (`Accounts`: counters, split-funding opt-in, low-balance policy) and a
 * registry of the sources.
 *
 * @since 0.4.0
 * @category layers
 */
export const sessionLayer = (options: SessionOptions): Layer.Layer<
  | BillingSession.BillingSession
  | HoldJournal.HoldJournal
  | Ledger.Ledger
  | SqlStore.SqlStore
  | AccountCounters.AccountCounters
  | FundingRegistry.FundingRegistry
  | Accounts.Accounts,
  BillingError.InvalidInput,
  KnexClient
> => {
  const registry = FundingRegistry.FundingRegistry.layer({
    funding: options.funding,
    ...(options.budgets ? { budgets: options.budgets } : {})
  })
  const services = Layer.mergeAll(layer, Accounts.countersLayer, Accounts.Accounts.layer, registry)
  const session = Layer.unwrap(Effect.gen(function*() {
    const client = yield* KnexClient
    return BillingSession.BillingSession.layer({
      splitFundingFor: Accounts.splitFundingFor(client),
      ...options.session
    }).pipe(Layer.provide(Accounts.lowBalanceLayer(options.lowBalance)))
  }))
  return session.pipe(Layer.provideMerge(services))
}
