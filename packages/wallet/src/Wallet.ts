/**
 * Wires the wallet package: the wallet source and token budget, the audit
 * columns, and a ready `BillingSession` over knex with the wallet as its
 * funding source (accounts, their counters and low-balance policy come from
 * `Accounts` of `@relay-billing/knex`).
 *
 * @since 0.1.0
 */
import type {
  AccountCounters,
  BillingError,
  BillingSession,
  FundingRegistry,
  HoldJournal,
  Ledger,
  Source,
  SqlStore
} from "@relay-billing/core"
import { Accounts, KnexBilling } from "@relay-billing/knex"
import type { Audit, KnexClient, Migrations } from "@relay-billing/knex"
import { Layer } from "effect"
import * as TokenBudget from "./TokenBudget.js"
import { WalletAdmin } from "./WalletAdmin.js"
import * as WalletSource from "./WalletSource.js"

/**
 * Every migration set a wallet-only deployment needs, in order: the holds and
 * ledger, then the accounts' tables (the wallet's balance is a column of the
 * accounts table, see `Accounts.migrations` of `@relay-billing/knex`).
 *
 * @since 0.1.0
 * @category migrations
 */
export const allMigrations: ReadonlyArray<Migrations.MigrationSet> = [KnexBilling.migrations, Accounts.migrations]

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
 * The wallet source and the token budget (v2 `Source` values: they need no
 * client, the engine hands them the store's executor).
 *
 * @since 0.1.0
 * @category constructors
 */
export const sources = (
  options: WalletSource.WalletOptions = {}
): { readonly wallet: Source.Source; readonly token: Source.Source } => ({
  wallet: WalletSource.make(options),
  token: TokenBudget.make()
})

/**
 * Everything a wallet-funded relay needs over one knex client: `BillingSession`
 * (journal, ledger, executor, accounts and a registry with the wallet and the
 * token budget, see `KnexBilling.sessionLayer`), and `WalletAdmin`. Split
 * funding is opted into per account (`Accounts.setSplitFunding`) unless
 * `session.splitFundingFor` says otherwise.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: {
    readonly wallet?: WalletSource.WalletOptions
    readonly session?: BillingSession.Options
    readonly lowBalance?: Accounts.LowBalanceOptions
  } = {}
): Layer.Layer<
  | BillingSession.BillingSession
  | WalletAdmin
  | Accounts.Accounts
  | HoldJournal.HoldJournal
  | Ledger.Ledger
  | SqlStore.SqlStore
  | AccountCounters.AccountCounters
  | FundingRegistry.FundingRegistry,
  BillingError.InvalidInput,
  KnexClient.KnexClient
> => {
  const { token, wallet } = sources(options.wallet)
  return Layer.merge(
    KnexBilling.sessionLayer({
      funding: [wallet],
      budgets: [token],
      ...(options.session ? { session: options.session } : {}),
      ...(options.lowBalance ? { lowBalance: options.lowBalance } : {})
    }),
    WalletAdmin.layer
  )
}
