/**
 * The durable record of one reservation: a hold with one part per funding
 * source and one for the token budget. A hold resolves at most once:
 * `pending → settled | refunded | expired`.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import { Name as PreferenceName } from "./Preference.js"
import { Quota } from "./Quota.js"

/**
 * @since 0.1.0
 * @category schemas
 */
export const HoldStatus = Schema.Literals(["pending", "settled", "refunded", "expired"])

/**
 * @since 0.1.0
 * @category models
 */
export type HoldStatus = typeof HoldStatus.Type

/**
 * Whether a part was reserved on a funding source (money) or on a budget (a cap).
 *
 * @since 0.1.0
 * @category schemas
 */
export const PartKind = Schema.Literals(["funding", "budget"])

/**
 * @since 0.1.0
 * @category models
 */
export type PartKind = typeof PartKind.Type

/**
 * What one source reserved for a hold. `subjectId` is the account (funding) or
 * token (budget) the amount was taken from; `ref` is source-specific (for
 * example the subscription row that was drawn from).
 *
 * @since 0.1.0
 * @category schemas
 */
export const HoldPart = Schema.Struct({
  kind: PartKind,
  sourceId: Schema.String,
  subjectId: Schema.String,
  amount: Quota,
  ref: Schema.optionalKey(Schema.String)
})

/**
 * @since 0.1.0
 * @category models
 */
export type HoldPart = typeof HoldPart.Type

/**
 * What settlement did to one part: `charged` is the final amount taken by this
 * part (the reservation plus the settlement delta); `unbilled` is what could not
 * be charged and was recorded instead of silently dropped.
 *
 * @since 0.1.0
 * @category schemas
 */
export const PartSettlement = Schema.Struct({
  kind: PartKind,
  sourceId: Schema.String,
  subjectId: Schema.String,
  reserved: Quota,
  charged: Schema.Number,
  unbilled: Quota,
  balanceAfter: Schema.optionalKey(Schema.Number)
})

/**
 * @since 0.1.0
 * @category models
 */
export type PartSettlement = typeof PartSettlement.Type

/**
 * What one correction gave back on one part of a settled hold.
 *
 * @since 0.2.0
 * @category schemas
 */
export const CorrectionPart = Schema.Struct({
  kind: PartKind,
  sourceId: Schema.String,
  subjectId: Schema.String,
  /** What this part got back. */
  amount: Quota,
  balanceAfter: Schema.optionalKey(Schema.Number)
})

/**
 * @since 0.2.0
 * @category models
 */
export type CorrectionPart = typeof CorrectionPart.Type

/**
 * A correction of a settled hold (billing-semantics §4.4): part or all of the
 * charge given back, keyed by its own id. Recorded on the settlement, in the
 * transaction that moved the balances, so a repeat with the same id returns it.
 *
 * @since 0.2.0
 * @category schemas
 */
export const Correction = Schema.Struct({
  /** The correction id (its idempotency key, unique per hold). */
  id: Schema.String,
  /** What was given back (the account's `usedQuota` went down by this much). */
  amount: Quota,
  /** What each part got back: funding parts last charged first, then the token. */
  parts: Schema.Array(CorrectionPart),
  /** What is still charged on the hold after this correction. */
  remaining: Quota,
  correctedAt: Schema.Number
})

/**
 * @since 0.2.0
 * @category models
 */
export type Correction = typeof Correction.Type

/**
 * The result of settling a hold, stored on the hold so that a repeated settle
 * returns exactly the first result (with the corrections made since, if any).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Settlement = Schema.Struct({
  holdId: Schema.String,
  actual: Quota,
  reserved: Quota,
  delta: Schema.Number,
  parts: Schema.Array(PartSettlement),
  settledAt: Schema.Number,
  /**
   * An external part was charged and a later part failed: the failed part kept
   * its reservation. `unbilled` is what it should have charged on top,
   * `overcharged` what it holds beyond its share. The recovery pass finishes it.
   */
  incomplete: Schema.optionalKey(Schema.Struct({
    sourceId: Schema.String,
    unbilled: Quota,
    overcharged: Schema.optionalKey(Quota),
    detail: Schema.String
  })),
  /** Corrections made after the settlement, in order (§4.4). */
  corrections: Schema.optionalKey(Schema.Array(Correction)),
  /**
   * What the caller passed to the settle that settled the hold (e.g. token
   * counts), for its `SettlementRecorder`; absent when none was passed.
   */
  metadata: Schema.optionalKey(Schema.Record(Schema.String, Schema.String)),
  /**
   * A late charge (billing-semantics §6): the settle arrived after the recovery
   * pass had expired the hold and given its reservation back, so the actual
   * cost was charged afresh (ledger kind `late_settle`, `reserved` 0). The hold
   * stays `expired` and carries this settlement.
   *
   * @since 0.3.0
   */
  late: Schema.optionalKey(Schema.Boolean)
})

/**
 * @since 0.1.0
 * @category models
 */
export type Settlement = typeof Settlement.Type

/**
 * A hold (the durable reservation of one request).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Hold = Schema.Struct({
  id: Schema.String,
  accountId: Schema.String,
  tokenId: Schema.optionalKey(Schema.String),
  /** The estimate P the caller asked to reserve. */
  estimate: Quota,
  /** What the funding sources actually reserved (may exceed P, e.g. a subscription's minimum of 1). */
  reserved: Quota,
  /** The preference name the hold was opened with (a built-in or a configured custom one). */
  preference: PreferenceName,
  trusted: Schema.Boolean,
  status: HoldStatus,
  parts: Schema.Array(HoldPart),
  createdAt: Schema.Number,
  expiresAt: Schema.Number,
  resolvedAt: Schema.optionalKey(Schema.Number),
  settlement: Schema.optionalKey(Settlement),
  metadata: Schema.optionalKey(Schema.Record(Schema.String, Schema.String))
})

/**
 * @since 0.1.0
 * @category models
 */
export type Hold = typeof Hold.Type

/**
 * The funding parts of a hold, in the order they were reserved.
 *
 * @since 0.1.0
 * @category getters
 */
export const fundingParts = (hold: Hold): ReadonlyArray<HoldPart> => hold.parts.filter((p) => p.kind === "funding")

/**
 * The budget parts of a hold (token budgets).
 *
 * @since 0.1.0
 * @category getters
 */
export const budgetParts = (hold: Hold): ReadonlyArray<HoldPart> => hold.parts.filter((p) => p.kind === "budget")

/**
 * What a settlement charged the account: the actual cost less what its funding
 * parts recorded as unbilled (billing-semantics §3.4). This is what the
 * account's `usedQuota` grows by at settlement.
 *
 * @since 0.2.0
 * @category getters
 */
export const charged = (settlement: Settlement): number =>
  settlement.actual -
  settlement.parts.reduce((sum, p) => (p.kind === "funding" ? sum + p.unbilled : sum), 0)

/**
 * The sum of a settlement's corrections.
 *
 * @since 0.2.0
 * @category getters
 */
export const corrected = (settlement: Settlement): number =>
  (settlement.corrections ?? []).reduce((sum, c) => sum + c.amount, 0)

/**
 * What is still charged after the corrections: `charged − corrected`. The sum
 * of this over an account's settled holds is what its `usedQuota` must equal.
 *
 * @since 0.2.0
 * @category getters
 */
export const stillCharged = (settlement: Settlement): number => charged(settlement) - corrected(settlement)
