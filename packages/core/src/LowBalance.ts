/**
 * Low-balance warnings. After a settle, when the paying source's balance (read
 * in the settle transaction) is below the account's threshold, the engine
 * publishes one `LowBalance` event — at most `perWindow` (2) per account and
 * source per `windowMillis` (10 minutes). The policy supplies the threshold and
 * the rate limit; the default keeps both in memory (one process), the wallet
 * package provides one backed by the database (across processes).
 *
 * @since 0.1.0
 */
import { Context, Effect } from "effect"
import type { StoreError } from "./BillingError.js"

/**
 * The default threshold, in quota.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultThreshold = 1_000

/**
 * At most this many warnings per account and source per window.
 *
 * @since 0.1.0
 * @category constants
 */
export const perWindow = 2

/**
 * The rate-limit window.
 *
 * @since 0.1.0
 * @category constants
 */
export const windowMillis = 10 * 60 * 1000

/**
 * The policy.
 *
 * @since 0.1.0
 * @category models
 */
export interface Policy {
  /** The account's threshold. */
  readonly threshold: (accountId: string) => Effect.Effect<number, StoreError>
  /**
   * Records one warning for (account, source) at `now` if fewer than
   * `perWindow` were recorded in the `windowMillis` before it; `false` otherwise.
   */
  readonly claim: (accountId: string, sourceId: string, now: number) => Effect.Effect<boolean, StoreError>
  /**
   * Optional: a value no account's `threshold` exceeds (a ceiling over every
   * account). When the paying balance is at or above it, the engine skips
   * `threshold` (no warning is possible), so a policy that reads thresholds from
   * a store does not read one on the settle path of a healthy account.
   * Absent: `threshold` is asked after every settle that charged a funding source.
   */
  readonly ceiling?: Effect.Effect<number, StoreError>
}

/**
 * A policy that keeps the rate limit in this process, with a fixed threshold
 * (or one per account from `thresholds`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const inMemory = (
  options: { readonly threshold?: number; readonly thresholds?: (accountId: string) => number | undefined } = {}
): Policy => {
  const sent = new Map<string, Array<number>>()
  return {
    threshold: (accountId) =>
      Effect.sync(() => options.thresholds?.(accountId) ?? options.threshold ?? defaultThreshold),
    claim: (accountId, sourceId, now) =>
      Effect.sync(() => {
        const key = `${accountId}\u0000${sourceId}`
        const recent = (sent.get(key) ?? []).filter((t) => t > now - windowMillis)
        if (recent.length >= perWindow) {
          sent.set(key, recent)
          return false
        }
        recent.push(now)
        sent.set(key, recent)
        return true
      })
  }
}

/**
 * The policy service (default: {@link inMemory} with the default threshold).
 *
 * @since 0.1.0
 * @category services
 */
export const LowBalance = Context.Reference<Policy>("@relay-billing/core/LowBalance", {
  defaultValue: () => inMemory()
})
