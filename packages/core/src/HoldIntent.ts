/**
 * Intents: the durable record the engine writes before it calls a source
 * outside the hold's store (an *external* source, whose writes do not roll back
 * with the hold's transaction), and whose outcome it records afterwards.
 * Recovery (`BillingSession.reapExpired`) finishes or undoes every intent still
 * pending, by hold id, with the sources' own idempotency.
 *
 * A hold has at most two intents, keyed by `(holdId, phase)`:
 *
 * - `open` (step `reserve`): written before the open transaction, marked done in
 *   that transaction when the hold commits. A pending one whose hold does not
 *   exist is undone after `dueAt`: every external target is released by hold id.
 * - `resolve` (step `settle`, `refund` or `expire`): the first one recorded for
 *   a hold decides how it resolves. A settle records its `amount` (the actual
 *   cost); a retry with another amount completes the recorded one. Marked done
 *   in the transaction that records the hold's final state.
 * - `late` (step `settle`, since 0.3.0): a late charge of an expired hold with
 *   an external part (billing-semantics §6), recorded before the charge
 *   reaches that source; the first recorded amount wins. Marked done in the
 *   transaction that records the late settlement; recovery charges a pending
 *   one again (the sources' `lateSettle` is idempotent by hold id).
 *
 * @since 0.2.0
 */
import { Schema } from "effect"
import { PartKind } from "./Hold.js"
import { Quota } from "./Quota.js"

/**
 * @since 0.2.0
 * @category schemas
 */
export const IntentPhase = Schema.Literals(["open", "resolve", "late"])

/**
 * @since 0.2.0
 * @category models
 */
export type IntentPhase = typeof IntentPhase.Type

/**
 * What the engine is about to do: reserve (open), settle, refund or expire.
 *
 * @since 0.2.0
 * @category schemas
 */
export const IntentStep = Schema.Literals(["reserve", "settle", "refund", "expire"])

/**
 * @since 0.2.0
 * @category models
 */
export type IntentStep = typeof IntentStep.Type

/**
 * An external source (or budget) an intent may call.
 *
 * @since 0.2.0
 * @category schemas
 */
export const IntentTarget = Schema.Struct({ kind: PartKind, sourceId: Schema.String })

/**
 * @since 0.2.0
 * @category models
 */
export type IntentTarget = typeof IntentTarget.Type

/**
 * One intent.
 *
 * @since 0.2.0
 * @category schemas
 */
export const HoldIntent = Schema.Struct({
  holdId: Schema.String,
  phase: IntentPhase,
  step: IntentStep,
  accountId: Schema.String,
  tokenId: Schema.optionalKey(Schema.String),
  /** `reserve`: the estimate; `settle`: the actual cost; `refund`/`expire`: what the hold reserved. */
  amount: Quota,
  /** The external sources and budgets the step may call (an open releases them on recovery). */
  targets: Schema.Array(IntentTarget),
  status: Schema.Literals(["pending", "done"]),
  /** How the intent ended (`committed`, `released`, `settled`, `refunded`, `expired`, …). */
  outcome: Schema.optionalKey(Schema.String),
  createdAt: Schema.Number,
  /** Recovery leaves a pending intent alone before this time (an open may still be running). */
  dueAt: Schema.Number
})

/**
 * @since 0.2.0
 * @category models
 */
export type HoldIntent = typeof HoldIntent.Type
