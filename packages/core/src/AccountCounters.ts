/**
 * Per-account usage counters (`usedQuota`, `requestCount`), moved by the engine
 * in the same transaction as the settlement so they never drift from the ledger.
 *
 * @since 0.1.0
 */
import { Context } from "effect"
import type { Effect } from "effect"
import type { QuotaOutOfRange, StoreError } from "./BillingError.js"

/**
 * A change of the counters.
 *
 * @since 0.1.0
 * @category models
 */
export interface CounterChange {
  readonly usedQuota: number
  readonly requestCount: number
}

/**
 * The counters service.
 *
 * @since 0.1.0
 * @category services
 */
export class AccountCounters extends Context.Service<AccountCounters, {
  /** Adds `change`; fails with `QuotaOutOfRange` (nothing written) when a counter would leave ±(2^53−1). */
  readonly add: (accountId: string, change: CounterChange) => Effect.Effect<void, QuotaOutOfRange | StoreError>
  /**
   * Read only: fails with `QuotaOutOfRange` when `add(accountId, change)` would,
   * writes nothing. Optional; the engine calls it before charging a source
   * outside the hold's store, whose charge could not be undone if the counters
   * then refused it.
   */
  readonly check?: (accountId: string, change: CounterChange) => Effect.Effect<void, QuotaOutOfRange | StoreError>
}>()("@relay-billing/core/AccountCounters") {}
