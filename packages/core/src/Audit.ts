/**
 * Audit checks that depend only on holds and ledger rows, shared by every
 * store's audit (`@relay-billing/knex`'s `Audit`, the testkit's in-memory
 * store): pure functions that return problems, never fail.
 *
 * @since 0.3.0
 */
import type { Hold } from "./Hold.js"
import { stillCharged } from "./Hold.js"
import type { EntryKind } from "./Ledger.js"

/**
 * The fields of a ledger row the checks read.
 *
 * @since 0.3.0
 * @category models
 */
export interface LedgerRow {
  readonly holdId?: string | undefined
  readonly sourceId: string
  readonly kind: EntryKind | string
  readonly amount: number
}

/**
 * The fields of a hold the checks read.
 *
 * @since 0.3.0
 * @category models
 */
export type HoldRow = Pick<Hold, "id" | "accountId" | "status" | "parts" | "settlement">

/**
 * Whether a hold's settlement counts toward its account's `usedQuota`: a
 * settled hold's, and the late charge recorded on an expired hold (§6).
 *
 * @since 0.3.0
 * @category predicates
 */
export const countsAsCharged = (hold: Pick<Hold, "status" | "settlement">): boolean =>
  hold.settlement !== undefined &&
  (hold.status === "settled" || (hold.status === "expired" && hold.settlement.late === true))

/**
 * What each account's `usedQuota` must be: the sum, over its holds that
 * {@link countsAsCharged}, of what is still charged (A less unbilled, less
 * corrections).
 *
 * @since 0.3.0
 * @category getters
 */
export const expectedUsedQuota = (
  holds: Iterable<Pick<Hold, "accountId" | "status" | "settlement">>
): Map<string, number> => {
  const expected = new Map<string, number>()
  for (const hold of holds) {
    if (!countsAsCharged(hold) || !hold.settlement) continue
    expected.set(hold.accountId, (expected.get(hold.accountId) ?? 0) + stillCharged(hold.settlement))
  }
  return expected
}

/**
 * Proves the late charges (billing-semantics §6) consistent:
 *
 * - a `late_settle` ledger row of a hold in the store belongs to an expired
 *   hold that records a late settlement (no late charge on a pending, settled
 *   or refunded hold, and none without its record);
 * - a late settlement is recorded only on an expired hold;
 * - the late charge on the store's own funding sources (`local`) in the
 *   ledger equals what the late settlement says those parts charged (a
 *   subscription's overflow to the wallet included), and each local budget's
 *   `late_settle` rows equal what its part charged. Parts charged through
 *   sources outside the store keep their rows in their own ledgers.
 *
 * @since 0.3.0
 * @category audit
 */
export const lateSettleProblems = (
  holds: Iterable<HoldRow>,
  rows: Iterable<LedgerRow>,
  /** The sources and budgets whose ledger rows are in `rows` (parts of others are not checked). */
  local: ReadonlySet<string>
): Array<string> => {
  const problems: Array<string> = []
  const byHold = new Map<string, Map<string, number>>()
  for (const row of rows) {
    if (row.kind !== "late_settle") continue
    if (row.holdId === undefined) {
      problems.push(`a late_settle ledger row of ${row.sourceId} (${row.amount}) names no hold`)
      continue
    }
    const sums = byHold.get(row.holdId) ?? new Map<string, number>()
    sums.set(row.sourceId, (sums.get(row.sourceId) ?? 0) + row.amount)
    byHold.set(row.holdId, sums)
  }
  for (const hold of holds) {
    const late = hold.settlement?.late === true
    const sums = byHold.get(hold.id)
    if (late && hold.status !== "expired") {
      problems.push(`hold ${hold.id} is ${hold.status} but records a late settlement`)
    }
    if (!late) {
      if (sums) {
        problems.push(`hold ${hold.id} is ${hold.status} without a late settlement but has late_settle ledger rows`)
      }
      continue
    }
    const settlement = hold.settlement!
    const budgetSources = new Set(
      settlement.parts.filter((p) => p.kind === "budget" && local.has(p.sourceId)).map((p) => p.sourceId)
    )
    let fundingRows = 0
    for (const [sourceId, sum] of sums ?? []) if (!budgetSources.has(sourceId)) fundingRows += sum
    const fundingCharged = settlement.parts.reduce(
      (s, p) => (p.kind === "funding" && local.has(p.sourceId) ? s + p.charged : s),
      0
    )
    if (-fundingRows !== fundingCharged) {
      problems.push(
        `hold ${hold.id}: its late settlement charged ${fundingCharged} on funding sources but the ledger's late_settle rows take ${-fundingRows}`
      )
    }
    for (const sourceId of budgetSources) {
      const charged = settlement.parts.reduce(
        (s, p) => (p.kind === "budget" && p.sourceId === sourceId ? s + p.charged : s),
        0
      )
      const taken = -(sums?.get(sourceId) ?? 0)
      if (taken !== charged) {
        problems.push(
          `hold ${hold.id}: its late settlement charged ${charged} on ${sourceId} but the ledger's late_settle rows take ${taken}`
        )
      }
    }
  }
  // Rows naming a hold this store does not hold are left alone: a store may serve as an
  // external source of another store's holds.
  return problems
}
