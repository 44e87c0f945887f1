/**
 * The funding-source plugin contract: where the money for a request comes from
 * (the wallet, a subscription, or a third party's source).
 *
 * A funding source reserves an amount before the upstream call, settles the
 * reservation with the actual cost afterwards, or refunds it. All three are keyed
 * by the hold id: repeating any of them must not move money again, and a refund
 * after a settle moves nothing. `@relay-billing/testkit`'s `fundingSourceSuite`
 * checks these rules against any implementation.
 *
 * @since 0.1.0
 */
import type { Effect } from "effect"
import type {
  HoldResolved,
  InsufficientFunds,
  QuotaOutOfRange,
  StoreError,
  TokenBudgetExceeded,
  TokenNotFound
} from "./BillingError.js"
import type { HoldPart } from "./Hold.js"
import type { Quota } from "./Quota.js"

/**
 * A request to reserve `amount` for the hold `holdId`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReserveRequest {
  /** The hold id (the request's idempotency key). */
  readonly holdId: string
  /** The paying account. */
  readonly accountId: string
  /** Whom the amount is taken from: the account for funding sources, the token for budgets. */
  readonly subjectId: string
  /** The amount to reserve; the source reserves exactly this (see `minimumReservation`). */
  readonly amount: Quota
  /** Free-form request metadata (model, channel, …) for ledgers and logs. */
  readonly metadata?: Readonly<Record<string, string>>
  /**
   * Split funding: the source may reserve less than `amount` (but more than 0),
   * drawing what it can, and returns what it reserved. Sources that cannot split
   * ignore it and reserve all of `amount` or fail.
   */
  readonly partial?: boolean
  /**
   * Post-consume: the work is already done, so the source records the
   * reservation even when the balance cannot cover it (the amount is 0 or the
   * source's minimum; settlement then charges the actual cost, without a floor).
   */
  readonly unconditional?: boolean
}

/**
 * What a source reserved. `amount` must equal the requested amount; `ref` is the
 * source's own reference (for example the subscription row it drew from).
 *
 * @since 0.1.0
 * @category models
 */
export interface Reservation {
  readonly amount: number
  readonly ref?: string
}

/**
 * A request to settle one reserved part with the actual cost.
 *
 * @since 0.1.0
 * @category models
 */
export interface SettleRequest {
  readonly holdId: string
  readonly accountId: string
  readonly part: HoldPart
  /** The final amount this part must carry (the reservation is adjusted by `actual − part.amount`). */
  readonly actual: Quota
}

/**
 * A request to give one reserved part back. `reason` says why:
 *
 * - `"refund"`: the hold is refunded (the request failed). The source keeps a
 *   record that the hold id was refunded, so it is never reserved again.
 * - `"expire"`: the recovery pass refunds an abandoned hold (same rule).
 * - `"release"`: the open that made this reservation failed or moved on to the
 *   next source of a fallback chain, so the hold was never recorded. The source
 *   gives the amount back and forgets the hold id: a later reserve with the same
 *   id is a fresh reservation.
 *
 * @since 0.1.0
 * @category models
 */
export interface RefundRequest {
  readonly holdId: string
  readonly accountId: string
  readonly part: HoldPart
  readonly reason: "refund" | "expire" | "release"
}

/**
 * What settling one part did: `charged` is the final amount this part carries,
 * `unbilled` the amount that could not be charged and was recorded (never
 * silently dropped), `balanceAfter` the subject's balance read in the same write.
 *
 * @since 0.1.0
 * @category models
 */
export interface PartResult {
  readonly charged: number
  readonly unbilled: number
  readonly balanceAfter?: number
}

/**
 * A request to give back `amount` of what one part of a settled hold was
 * charged (a correction, billing-semantics §4.4). Keyed by (`holdId`,
 * `correctionId`): a source outside the hold's store must make a repeat of the
 * same key move nothing and answer the first result (the engine retries a
 * correction whose own transaction failed after the source credited). A source
 * in the hold's store is protected by the hold record, written in the same
 * transaction. The engine never asks for more than the part still carries.
 *
 * @since 0.2.0
 * @category models
 */
export interface CorrectRequest {
  readonly holdId: string
  readonly correctionId: string
  readonly accountId: string
  readonly part: HoldPart
  /** What this part carried after settlement (its `charged`). */
  readonly charged: number
  /** What earlier corrections already gave back on this part. */
  readonly corrected: number
  /** What to give back now (> 0, at most `charged − corrected`). */
  readonly amount: Quota
}

/**
 * What a correction did on one part: `corrected` must equal the requested
 * amount; `balanceAfter` is the subject's balance after the credit, if known.
 *
 * @since 0.2.0
 * @category models
 */
export interface CorrectResult {
  readonly corrected: number
  readonly balanceAfter?: number
}

/**
 * A late charge on one part of an expired hold (billing-semantics §6): the
 * recovery pass gave the reservation back, then the settle arrived, so the
 * source charges `amount` afresh. The work was delivered, so there is no
 * balance condition (as for a settle's extra charge: a wallet may go negative
 * unless its policy floors at zero); what the source cannot charge it reports
 * as `unbilled` (and records, never drops). Ledger rows of kind `late_settle`.
 * Keyed by hold id: a source outside the hold's store must make a repeat move
 * nothing and answer the first result; in the hold's store, the hold record
 * written in the same transaction protects it.
 *
 * @since 0.3.0
 * @category models
 */
export interface LateSettleRequest {
  readonly holdId: string
  readonly accountId: string
  /** The part as the hold recorded it (its reservation was given back at expiry). */
  readonly part: HoldPart
  /** What this part must be charged now; `charged + unbilled` of the answer must equal it. */
  readonly amount: Quota
}

/**
 * Whether an account can currently use a source (e.g. has an active
 * subscription), and whether a fallback to the next source is allowed when this
 * one has insufficient funds (a plan's `allowWalletOverflow`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Availability {
  readonly available: boolean
  readonly allowFallback: boolean
}

/**
 * What a budget has left; an unlimited budget still counts usage.
 *
 * @since 0.5.0
 * @category models
 */
export interface Remaining {
  readonly unlimited: boolean
  readonly remaining: number
}

/**
 * Which side of a charge an external source stands on: `"funding"` pays (the
 * wallet, a subscription, a third party's source), `"budget"` caps without
 * paying (a token budget: every charge hits a budget *and* a funding source).
 *
 * @since 0.5.0
 * @category models
 */
export type ExternalRole = "funding" | "budget"

/**
 * The external two-phase contract, one shape for both roles: a source that
 * reserves before the upstream call, then settles or refunds by hold id
 * (funding sources and budgets alike; the registry's `funding` / `budgets`
 * lists say which role a source plays, `role` may say it too).
 * Members that only one role uses are optional: `minimumReservation`,
 * `availability`, `balance` and `room` are read of funding sources,
 * `remaining` of budgets.
 *
 * @since 0.5.0
 * @category models
 */
export interface ExternalSource {
  /** Unique id of the source (`"wallet"`, `"subscription"`, `"token"`, or a plugin's own). */
  readonly id: string
  /** Optional: the role the source is written for (documentation; the registry decides). */
  readonly role?: ExternalRole
  /**
   * Identity of the transactional store the source writes through. When it equals
   * the hold journal's `storeId`, the source's writes commit or roll back with the
   * hold; otherwise the engine compensates by refunding (idempotent by hold id).
   */
  readonly storeId?: string
  /** The amount this source reserves for a request of `requested` (default: `requested`). */
  readonly minimumReservation?: (requested: Quota) => Quota
  /** Whether the account can use this source now; sources without it are always available. */
  readonly availability?: (accountId: string) => Effect.Effect<Availability, StoreError>
  /** The spendable balance, used by the optional trust bypass. */
  readonly balance?: (accountId: string) => Effect.Effect<number, StoreError>
  /**
   * The most one reservation could take for the account now, read without
   * writing: for a subscription, the largest quota left in a current period (a
   * reset that is due counts as done), `Number.MAX_SAFE_INTEGER` when unlimited,
   * 0 when nothing is left or there is no active subscription. The post-consume
   * balance check asks it (and `balance` for sources without it).
   */
  readonly room?: (accountId: string) => Effect.Effect<number, StoreError>
  /** Budgets: what the subject has left (used by the optional trust bypass). */
  readonly remaining?: (subjectId: string) => Effect.Effect<Remaining, StoreError>
  /**
   * Reserves exactly `amount`, atomically; idempotent by hold id; fails typed for a hold id
   * already refunded, and with `QuotaOutOfRange` when a counter would leave ±(2^53−1).
   * A funding source short of funds fails with `InsufficientFunds`; a budget with
   * `TokenBudgetExceeded`, or `TokenNotFound` for a subject that does not belong to
   * `request.accountId` (spec §2.9), reserving nothing on an unlimited subject.
   */
  readonly reserve: (
    request: ReserveRequest
  ) => Effect.Effect<
    Reservation,
    InsufficientFunds | TokenBudgetExceeded | TokenNotFound | HoldResolved | QuotaOutOfRange | StoreError
  >
  /**
   * Adjusts the reservation to `actual`; idempotent by hold id; fails typed after a refund,
   * and with `QuotaOutOfRange` (writing nothing) when a balance would leave ±(2^53−1).
   */
  readonly settle: (request: SettleRequest) => Effect.Effect<PartResult, HoldResolved | QuotaOutOfRange | StoreError>
  /**
   * Returns exactly what was reserved; idempotent by hold id; a no-op after
   * settle. With reason `"release"` the hold id is forgotten (see {@link RefundRequest}).
   */
  readonly refund: (request: RefundRequest) => Effect.Effect<void, StoreError>
  /**
   * Optional: gives back part of a settled charge (a correction), through the
   * subject that paid, with ledger rows of kind `correction`; keyed by
   * (hold id, correction id) (see {@link CorrectRequest}). A hold charged
   * through a source without it cannot be corrected (`CorrectionUnsupported`).
   */
  readonly correct?: (request: CorrectRequest) => Effect.Effect<CorrectResult, QuotaOutOfRange | StoreError>
  /**
   * Optional: charges a part of an expired hold late (see {@link LateSettleRequest}).
   * A hold funded through a source without it records that part's share as
   * unbilled when it is settled after its expiry.
   *
   * @since 0.3.0
   */
  readonly lateSettle?: (request: LateSettleRequest) => Effect.Effect<PartResult, QuotaOutOfRange | StoreError>
}

/**
 * The funding-source plugin contract: an {@link ExternalSource} in the role
 * `"funding"`.
 *
 * @since 0.1.0
 * @category models
 */
export type FundingSource = ExternalSource

/**
 * Declares a funding source (an identity function that gives type inference and a
 * single place for documentation).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (source: FundingSource): FundingSource => source

/**
 * The amount a source reserves for a request of `requested`.
 *
 * @since 0.1.0
 * @category getters
 */
export const reservationAmount = (source: Pick<FundingSource, "minimumReservation">, requested: Quota): Quota =>
  source.minimumReservation ? source.minimumReservation(requested) : requested
