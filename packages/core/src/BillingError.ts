/**
 * The typed errors of relay-billing. Each has a stable machine-readable `code`,
 * the numbers involved, and a human message. Relay handlers map `code` to the
 * error they return to their clients.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * A funding source (wallet, subscription or plugin) cannot cover the amount.
 * This is the only error on which a funding fallback happens.
 *
 * @since 0.1.0
 * @category errors
 */
export class InsufficientFunds extends Schema.TaggedError<InsufficientFunds>()("InsufficientFunds", {
  sourceId: Schema.String,
  accountId: Schema.String,
  required: Schema.Number,
  available: Schema.Number,
  reason: Schema.optionalKey(Schema.String)
}) {
  /** Stable code, shared with new-api's `insufficient_user_quota`. */
  get code(): "insufficient_user_quota" {
    return "insufficient_user_quota"
  }
  override get message(): string {
    return `insufficient funds on ${this.sourceId} for account ${this.accountId}: required ${this.required}, available ${this.available}${
      this.reason ? ` (${this.reason})` : ""
    }`
  }
}

/**
 * A limited token (API key) budget cannot cover the amount. Never falls back.
 *
 * @since 0.1.0
 * @category errors
 */
export class TokenBudgetExceeded extends Schema.TaggedError<TokenBudgetExceeded>()("TokenBudgetExceeded", {
  budgetId: Schema.String,
  tokenId: Schema.String,
  required: Schema.Number,
  remaining: Schema.Number
}) {
  /** Stable code, shared with new-api's `pre_consume_token_quota_failed`. */
  get code(): "pre_consume_token_quota_failed" {
    return "pre_consume_token_quota_failed"
  }
  override get message(): string {
    return `token ${this.tokenId} budget exceeded: required ${this.required}, remaining ${this.remaining}`
  }
}

/**
 * A public input failed validation. Nothing was changed.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidInput extends Schema.TaggedError<InvalidInput>()("InvalidInput", {
  field: Schema.String,
  value: Schema.String,
  reason: Schema.String
}) {
  /** Stable code. */
  get code(): "invalid_request" {
    return "invalid_request"
  }
  override get message(): string {
    return `invalid ${this.field}: ${this.value} (${this.reason})`
  }
  /** Renders any input value for the `value` field of the error. */
  static render(value: unknown): string {
    if (typeof value === "string") return JSON.stringify(value)
    if (typeof value === "bigint") return `${value}n`
    if (value === undefined) return "undefined"
    if (typeof value === "number" && !Number.isFinite(value)) return String(value)
    try {
      return JSON.stringify(value) ?? String(value)
    } catch {
      return String(value)
    }
  }
}

/**
 * The same hold id (idempotency key) was opened with a different account, token
 * or amount.
 *
 * @since 0.1.0
 * @category errors
 */
export class IdempotencyConflict extends Schema.TaggedError<IdempotencyConflict>()("IdempotencyConflict", {
  holdId: Schema.String,
  field: Schema.String,
  existing: Schema.String,
  requested: Schema.String
}) {
  /** Stable code. */
  get code(): "idempotency_conflict" {
    return "idempotency_conflict"
  }
  override get message(): string {
    return `hold ${this.holdId} already exists with ${this.field} ${this.existing}, requested ${this.requested}`
  }
}

/**
 * The hold is already resolved (settled, refunded or expired) and the operation
 * would move money again.
 *
 * @since 0.1.0
 * @category errors
 */
export class HoldResolved extends Schema.TaggedError<HoldResolved>()("HoldResolved", {
  holdId: Schema.String,
  /** The first outcome: `settled`, `refunded` or `expired`. */
  status: Schema.String,
  operation: Schema.String,
  /** For a settled hold: the amount it was settled with. */
  actual: Schema.optionalKey(Schema.Number)
}) {
  /** Stable code. */
  get code(): "billing_hold_resolved" {
    return "billing_hold_resolved"
  }
  override get message(): string {
    return `cannot ${this.operation} hold ${this.holdId}: it is already ${this.status}`
  }
}

/**
 * A second open of a hold id whose first open is still pending (the first
 * request is still running). The caller gets no handle to the first request's
 * hold, so a failing retry can never settle or refund it (spec §2.7).
 *
 * @since 0.2.0
 * @category errors
 */
export class HoldInFlight extends Schema.TaggedError<HoldInFlight>()("HoldInFlight", {
  holdId: Schema.String,
  /** When the first request's hold expires unless it is settled, refunded or renewed. */
  expiresAt: Schema.optionalKey(Schema.Number)
}) {
  /** Stable code. */
  get code(): "billing_hold_in_flight" {
    return "billing_hold_in_flight"
  }
  override get message(): string {
    return `hold ${this.holdId} is still pending: the request that opened it is running`
  }
}

/**
 * No account with this id. The one `AccountNotFound` of the SDK (the wallet
 * and the reference relay re-export it): one tag, one code.
 *
 * @since 0.3.0
 * @category errors
 */
export class AccountNotFound extends Schema.TaggedError<AccountNotFound>()("AccountNotFound", {
  accountId: Schema.String
}) {
  /** Stable code. */
  get code(): "account_not_found" {
    return "account_not_found"
  }
  override get message(): string {
    return `no account ${this.accountId}`
  }
}

/**
 * A token (API key) that does not exist for the account that tried to use it:
 * unknown, or owned by another account (spec §2.9). Nothing was changed.
 *
 * @since 0.2.0
 * @category errors
 */
export class TokenNotFound extends Schema.TaggedError<TokenNotFound>()("TokenNotFound", {
  tokenId: Schema.String,
  /** The account the token was used for, when known. */
  accountId: Schema.optionalKey(Schema.String)
}) {
  /** Stable code. */
  get code(): "token_not_found" {
    return "token_not_found"
  }
  override get message(): string {
    return this.accountId === undefined
      ? `no token ${this.tokenId}`
      : `no token ${this.tokenId} for account ${this.accountId}`
  }
}

/**
 * A balance or counter would leave the safe-integer range (±(2^53−1)). The
 * operation was refused before anything was written (spec §2.10).
 *
 * @since 0.2.0
 * @category errors
 */
export class QuotaOutOfRange extends Schema.TaggedError<QuotaOutOfRange>()("QuotaOutOfRange", {
  /** What would overflow, e.g. `wallet.balance`, `token.used`, `account.usedQuota`. */
  field: Schema.String,
  /** The wallet, token, account or subscription id. */
  subjectId: Schema.String,
  /** The value before the change. */
  current: Schema.Number,
  /** The signed change that was refused. */
  change: Schema.Number
}) {
  /** Stable code. */
  get code(): "billing_quota_out_of_range" {
    return "billing_quota_out_of_range"
  }
  override get message(): string {
    return `${this.field} of ${this.subjectId} would leave the safe-integer range: ${this.current} ${
      this.change < 0 ? "-" : "+"
    } ${Math.abs(this.change)}`
  }
}

/**
 * No hold with this id exists.
 *
 * @since 0.1.0
 * @category errors
 */
export class HoldNotFound extends Schema.TaggedError<HoldNotFound>()("HoldNotFound", {
  holdId: Schema.String
}) {
  /** Stable code. */
  get code(): "billing_hold_not_found" {
    return "billing_hold_not_found"
  }
  override get message(): string {
    return `no hold ${this.holdId}`
  }
}

/**
 * A persistence or driver failure, with the name of the operation that failed.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  operation: Schema.String,
  detail: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  /** Stable code. */
  get code(): "billing_store_error" {
    return "billing_store_error"
  }
  override get message(): string {
    return `store operation ${this.operation} failed: ${this.detail}`
  }
}

/**
 * No funding source or budget is registered under this id.
 *
 * @since 0.1.0
 * @category errors
 */
export class UnknownSource extends Schema.TaggedError<UnknownSource>()("UnknownSource", {
  sourceId: Schema.String,
  kind: Schema.Literals(["funding", "budget"])
}) {
  /** Stable code. */
  get code(): "billing_unknown_source" {
    return "billing_unknown_source"
  }
  override get message(): string {
    return `no ${this.kind} source registered with id ${JSON.stringify(this.sourceId)}`
  }
}

/**
 * A funding source or budget broke the plugin contract (for example it reserved
 * a different amount than it was asked for).
 *
 * @since 0.1.0
 * @category errors
 */
export class ContractViolation extends Schema.TaggedError<ContractViolation>()("ContractViolation", {
  sourceId: Schema.String,
  detail: Schema.String
}) {
  /** Stable code. */
  get code(): "billing_contract_violation" {
    return "billing_contract_violation"
  }
  override get message(): string {
    return `source ${this.sourceId} broke the funding-source contract: ${this.detail}`
  }
}

/**
 * Settlement charged some parts of a hold, then a part outside the hold's
 * transaction failed. The hold is settled (what was charged is never repeated);
 * the failed part is recorded as unbilled on the settlement.
 *
 * @since 0.1.0
 * @category errors
 */
export class SettleIncomplete extends Schema.TaggedError<SettleIncomplete>()("SettleIncomplete", {
  holdId: Schema.String,
  failedSourceId: Schema.String,
  unbilled: Schema.Number,
  /** What the failed part holds beyond its share (given back by the recovery pass). */
  overcharged: Schema.optionalKey(Schema.Number),
  detail: Schema.String
}) {
  /** Stable code. */
  get code(): "billing_settle_incomplete" {
    return "billing_settle_incomplete"
  }
  override get message(): string {
    const over = this.overcharged ? `, ${this.overcharged} overcharged until recovery finishes it` : ""
    return `hold ${this.holdId} settled, but ${this.failedSourceId} failed and ${this.unbilled} quota is unbilled${over}: ${this.detail}`
  }
}

/**
 * A correction asked to give back more than the hold still has charged (its
 * settled charge less the corrections already made). Nothing was changed.
 *
 * @since 0.2.0
 * @category errors
 */
export class CorrectionExceedsCharge extends Schema.TaggedError<CorrectionExceedsCharge>()("CorrectionExceedsCharge", {
  holdId: Schema.String,
  correctionId: Schema.String,
  /** The amount asked for. */
  amount: Schema.Number,
  /** What is still charged on the hold (the most a correction can give back). */
  remaining: Schema.Number
}) {
  /** Stable code. */
  get code(): "billing_correction_exceeds_charge" {
    return "billing_correction_exceeds_charge"
  }
  override get message(): string {
    return `correction ${this.correctionId} of hold ${this.holdId} asks for ${this.amount}, but only ${this.remaining} is still charged`
  }
}

/**
 * A part of the hold was charged through a source (or budget) that cannot
 * give back a settled charge (it has no `correct`). Nothing was changed.
 *
 * @since 0.2.0
 * @category errors
 */
export class CorrectionUnsupported extends Schema.TaggedError<CorrectionUnsupported>()("CorrectionUnsupported", {
  holdId: Schema.String,
  sourceId: Schema.String
}) {
  /** Stable code. */
  get code(): "billing_correction_unsupported" {
    return "billing_correction_unsupported"
  }
  override get message(): string {
    return `hold ${this.holdId} was charged through ${this.sourceId}, which cannot correct a settled charge`
  }
}

/**
 * Any error the SDK can return.
 *
 * @since 0.1.0
 * @category errors
 */
export type BillingError =
  | InsufficientFunds
  | TokenBudgetExceeded
  | InvalidInput
  | IdempotencyConflict
  | HoldResolved
  | HoldInFlight
  | HoldNotFound
  | TokenNotFound
  | QuotaOutOfRange
  | StoreError
  | UnknownSource
  | ContractViolation
  | SettleIncomplete
  | CorrectionExceedsCharge
  | CorrectionUnsupported
