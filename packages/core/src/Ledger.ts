/**
 * The append-only ledger: one row for every balance change, written in the same
 * transaction as the change, with the signed amount and the balance after it.
 *
 * @since 0.1.0
 */
import { Context, Schema } from "effect"
import type { Effect } from "effect"
import type { StoreError } from "./BillingError.js"

/**
 * What caused a ledger row. `late_settle` is a late charge: the actual cost of
 * a hold settled after the recovery pass expired it (billing-semantics §6).
 *
 * @since 0.1.0
 * @category schemas
 */
export const EntryKind = Schema.Literals([
  "reserve",
  "settle",
  "refund",
  "release",
  "expire",
  "topup",
  "adjust",
  "reset",
  "unbilled",
  "correction",
  "late_settle"
])

/**
 * @since 0.1.0
 * @category models
 */
export type EntryKind = typeof EntryKind.Type

/**
 * One ledger row. `amount` is the signed change of the subject's balance (an
 * `unbilled` row has amount 0 and the unbilled quota in `unbilled`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const LedgerEntry = Schema.Struct({
  id: Schema.String,
  at: Schema.Number,
  kind: EntryKind,
  /** The source or budget that moved (`wallet`, `token`, `subscription`, a plugin id). */
  sourceId: Schema.String,
  /** Whose balance moved: account id, token id or subscription id. */
  subjectId: Schema.String,
  accountId: Schema.String,
  holdId: Schema.optionalKey(Schema.String),
  amount: Schema.Number,
  balanceAfter: Schema.Number,
  unbilled: Schema.optionalKey(Schema.Number),
  note: Schema.optionalKey(Schema.String)
})

/**
 * @since 0.1.0
 * @category models
 */
export type LedgerEntry = typeof LedgerEntry.Type

/**
 * A ledger row to append; the store assigns its `id` (in append order).
 *
 * @since 0.1.0
 * @category models
 */
export type NewLedgerEntry = Omit<LedgerEntry, "id">

/**
 * A ledger query; every field narrows the result.
 *
 * @since 0.1.0
 * @category models
 */
export interface LedgerFilter {
  readonly accountId?: string
  readonly subjectId?: string
  readonly sourceId?: string
  readonly holdId?: string
}

/**
 * The ledger service.
 *
 * @since 0.1.0
 * @category services
 */
export class Ledger extends Context.Service<Ledger, {
  readonly append: (entries: ReadonlyArray<NewLedgerEntry>) => Effect.Effect<void, StoreError>
  readonly entries: (filter: LedgerFilter) => Effect.Effect<ReadonlyArray<LedgerEntry>, StoreError>
}>()("@relay-billing/core/Ledger") {}

/**
 * Sum of the signed amounts of `entries` (what the balance must equal, given a
 * zero starting balance).
 *
 * @since 0.1.0
 * @category getters
 */
export const sum = (entries: ReadonlyArray<LedgerEntry>): number => entries.reduce((acc, e) => acc + e.amount, 0)
