/**
 * Billing preference: which funding source pays first, and whether another may
 * take over when the first has insufficient funds.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * The four preferences of the spec (§2.1).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Preference = Schema.Literals(["subscription_first", "wallet_first", "subscription_only", "wallet_only"])

/**
 * @since 0.1.0
 * @category models
 */
export type Preference = typeof Preference.Type

/**
 * The preference used for empty or unknown values.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultPreference: Preference = "subscription_first"

/**
 * Normalises a user-supplied preference: trims it, and maps empty or unknown
 * values to {@link defaultPreference}, as new-api does.
 *
 * @since 0.1.0
 * @category constructors
 */
export const normalize = (value: string | undefined | null): Preference => {
  const trimmed = (value ?? "").trim()
  switch (trimmed) {
    case "subscription_first":
    case "wallet_first":
    case "subscription_only":
    case "wallet_only":
      return trimmed
    default:
      return defaultPreference
  }
}
