/**
 * The subscription funding source, as a v2 `Source` (a balance mover in the
 * hold's store, over the subscriptions table). A take of `max(P, 1)` goes to
 * the soonest-expiring active subscription with room (ties by id), after a lazy
 * reset of a period that has ended; the rows are locked (`SELECT … FOR UPDATE`)
 * on PostgreSQL/MySQL and SQLite serialises writers. One reservation is drawn
 * from one subscription (split funding takes what that one has; the engine
 * goes on along the chain).
 *
 * A charge moves `amount_used` within the plan's total; what it cannot carry
 * the move answers (with the plan's `allowWalletOverflow`), and the engine
 * sends it to the next funding source of the hold's chain or records it
 * unbilled: the subscription never knows the wallet. A give-back never takes
 * the usage below 0.
 *
 * A reservation belongs to the period it was drawn from (§3.6): the take's
 * `ref` records the subscription and the start of that period. A move on a
 * reservation whose period has been reset since never changes the current
 * period's usage: an extra charge is not carried (it overflows or is
 * unbilled), and what is given back only corrects the closed period (the hold's
 * row and an `adjust` row that net to 0 on the subscription).
 *
 * It keeps no hold ids and writes no ledger rows for a hold (the engine does);
 * it writes its own period `reset` and `adjust` rows, which belong to no hold.
 *
 * @since 0.1.0
 */
import type { Source } from "@relay-billing/core"
import { isActive } from "./internal/rows.js"
import { makeSubscriptionSource } from "./internal/source.js"

/**
 * Options of the source.
 *
 * @since 0.1.0
 * @category models
 */
export interface SubscriptionOptions {
  /** Source id (default `"subscription"`). */
  readonly id?: string
  /** Time zone of calendar resets (default `"UTC"`). */
  readonly timeZone?: string
}

/**
 * Builds the subscription source.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: SubscriptionOptions = {}): Source.Source => makeSubscriptionSource(options)

/**
 * Whether a subscription row is active at `now` (status active, started, not ended).
 *
 * @since 0.1.0
 * @category predicates
 */
export { isActive }
