/**
 * Quota: the integer money unit of relay-billing.
 *
 * Every amount that crosses a public boundary of the SDK is decoded with the
 * {@link Quota} schema: a non-negative, safe integer. Balances may go negative
 * only through settlement, never through an input.
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import { InvalidInput, QuotaOutOfRange } from "./BillingError.js"

/**
 * A non-negative safe integer number of quota units (default 500,000 quota = 1 USD).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Quota = Schema.Int.check(
  Schema.isGreaterThanOrEqualTo(0),
  Schema.isLessThanOrEqualTo(Number.MAX_SAFE_INTEGER)
).pipe(Schema.brand("Quota"))

/**
 * The branded type of a decoded quota amount.
 *
 * @since 0.1.0
 * @category models
 */
export type Quota = typeof Quota.Type

/**
 * A signed safe integer (a balance, or a signed ledger amount).
 *
 * @since 0.1.0
 * @category schemas
 */
export const SignedQuota = Schema.Int.check(
  Schema.isGreaterThanOrEqualTo(Number.MIN_SAFE_INTEGER),
  Schema.isLessThanOrEqualTo(Number.MAX_SAFE_INTEGER)
)

/**
 * Default number of quota units in one US dollar (display only).
 *
 * @since 0.1.0
 * @category constants
 */
export const QUOTA_PER_USD = 500_000

/**
 * True when `value` is a valid quota amount (non-negative safe integer).
 *
 * @since 0.1.0
 * @category guards
 */
export const isQuota = (value: unknown): value is Quota =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0

/**
 * Decodes `value` as a quota amount for the input field `field`, failing with an
 * {@link InvalidInput} error that names the field and the value.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode = (field: string, value: unknown): Effect.Effect<Quota, InvalidInput> =>
  isQuota(value)
    ? Effect.succeed(normalize(value))
    : Effect.fail(
      new InvalidInput({
        field,
        value: InvalidInput.render(value),
        reason: "expected a non-negative safe integer number of quota units"
      })
    )

/**
 * Normalises `-0` to `0` (a decoded amount is stored and compared as `0`).
 *
 * @since 0.2.0
 * @category decoding
 */
export const normalize = <N extends number>(value: N): N => (value === 0 ? 0 : value) as N

/**
 * True when `current + change` stays within ±(2^53−1).
 *
 * @since 0.2.0
 * @category guards
 */
export const inSafeRange = (current: number, change: number): boolean => Number.isSafeInteger(current + change)

/**
 * `current + change`, or a {@link QuotaOutOfRange} naming `field` and `subjectId`
 * when the result would leave the safe-integer range. Sources call it before
 * writing a balance or counter, so a refused change writes nothing.
 *
 * @since 0.2.0
 * @category guards
 */
export const addInRange = (
  field: string,
  subjectId: string,
  current: number,
  change: number
): Effect.Effect<number, QuotaOutOfRange> =>
  inSafeRange(current, change)
    ? Effect.succeed(current + change)
    : Effect.fail(new QuotaOutOfRange({ field, subjectId, current, change }))

/**
 * Formats a quota amount as US dollars (display only; never used for arithmetic).
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatUsd = (quota: number, quotaPerUsd: number = QUOTA_PER_USD): string =>
  `$${(quota / quotaPerUsd).toFixed(6)}`
