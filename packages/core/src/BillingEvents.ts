/**
 * Billing events for the host app: settled, refunded, expired holds and
 * low-balance warnings. Publishing never blocks or fails a billing operation;
 * by default events are dropped.
 *
 * @since 0.1.0
 */
import { Context, Data, Effect } from "effect"
import type { Hold, Settlement } from "./Hold.js"

/**
 * An event published after a billing transaction committed.
 *
 * @since 0.1.0
 * @category models
 */
export type BillingEvent = Data.TaggedEnum<{
  Settled: { readonly hold: Hold; readonly settlement: Settlement }
  Refunded: { readonly hold: Hold; readonly refunded: number }
  Expired: { readonly hold: Hold; readonly refunded: number }
  LowBalance: {
    readonly accountId: string
    readonly sourceId: string
    readonly subjectId: string
    readonly balance: number
    readonly threshold: number
  }
}>

/**
 * Constructors for {@link BillingEvent}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const BillingEvent = Data.taggedEnum<BillingEvent>()

/**
 * The publisher the host plugs in.
 *
 * @since 0.1.0
 * @category models
 */
export interface Publisher {
  readonly publish: (event: BillingEvent) => Effect.Effect<void>
}

/**
 * The events service; defaults to a publisher that drops every event.
 *
 * @since 0.1.0
 * @category services
 */
export const BillingEvents = Context.Reference<Publisher>("@relay-billing/core/BillingEvents", {
  defaultValue: () => ({ publish: () => Effect.void })
})
