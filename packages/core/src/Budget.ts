/**
 * Budgets: caps that are not money, such as a token (API key) budget. A budget
 * has the same reserve / settle / refund shape as a funding source; every charge
 * hits the budget *and* a funding source.
 *
 * @since 0.1.0
 */
import type { Effect } from "effect"
import type { HoldResolved, QuotaOutOfRange, StoreError, TokenBudgetExceeded, TokenNotFound } from "./BillingError.js"
import type {
  CorrectRequest,
  CorrectResult,
  LateSettleRequest,
  PartResult,
  RefundRequest,
  Reservation,
  ReserveRequest,
  SettleRequest
} from "./FundingSource.js"

/**
 * What a budget has left; an unlimited budget still counts usage.
 *
 * @since 0.1.0
 * @category models
 */
export interface Remaining {
  readonly unlimited: boolean
  readonly remaining: number
}

/**
 * The budget contract. Unlimited subjects reserve nothing but still move their
 * counters at settlement.
 *
 * @since 0.1.0
 * @category models
 */
export interface Budget {
  /** Unique id of the budget (`"token"` for API-key budgets). */
  readonly id: string
  /** See `FundingSource.storeId`. */
  readonly storeId?: string
  /** What the subject has left (used by the optional trust bypass). */
  readonly remaining?: (subjectId: string) => Effect.Effect<Remaining, StoreError>
  /**
   * Reserves `amount` on the subject (nothing on an unlimited one); idempotent by
   * hold id. A subject that does not belong to `request.accountId` fails with
   * `TokenNotFound` for that account and changes nothing (spec §2.9).
   */
  readonly reserve: (
    request: ReserveRequest
  ) => Effect.Effect<Reservation, TokenBudgetExceeded | TokenNotFound | HoldResolved | QuotaOutOfRange | StoreError>
  /** Moves the subject to `actual`; idempotent by hold id; `QuotaOutOfRange` (nothing written) out of ±(2^53−1). */
  readonly settle: (request: SettleRequest) => Effect.Effect<PartResult, HoldResolved | QuotaOutOfRange | StoreError>
  /** Returns what was reserved; idempotent by hold id; a no-op after settle. */
  readonly refund: (request: RefundRequest) => Effect.Effect<void, StoreError>
  /**
   * Optional: gives back part of a settled charge on the subject (a
   * correction: `remain` up, `used` down); keyed by (hold id, correction id).
   * See `FundingSource.CorrectRequest`.
   */
  readonly correct?: (request: CorrectRequest) => Effect.Effect<CorrectResult, QuotaOutOfRange | StoreError>
  /**
   * Optional: charges the subject late for an expired hold (`remain` down,
   * `used` up, ledger kind `late_settle`); see `FundingSource.LateSettleRequest`.
   *
   * @since 0.3.0
   */
  readonly lateSettle?: (request: LateSettleRequest) => Effect.Effect<PartResult, QuotaOutOfRange | StoreError>
}

/**
 * Declares a budget.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (budget: Budget): Budget => budget
