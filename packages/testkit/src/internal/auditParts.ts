import type { State } from "./state.js"
import { partKey } from "./state.js"

/** Ledger kinds that give a reservation back. */
const giveBackKinds = new Set(["refund", "expire"])
/** Ledger kinds that take (`reserve`) or undo (`release`, a failed open) a reservation. */
const reservationKinds = new Set(["reserve", "release"])

/**
 * The in-memory store's version of the knex audit's part checks (spec §6, "the
 * audit also proves"):
 *
 * - no `refund`/`expire` ledger row on a settled hold (nor on a part that is
 *   still reserved or settled);
 * - every part's recorded amount equals its ledger sum: the part record's
 *   amount is what its `reserve` rows took (net of `release` rows), the hold's
 *   own copy of the part says the same amount, and what its `refund`/`expire`
 *   rows gave back never exceeds it.
 *
 * A part of one of the store's own `Source`s (ids in `local`, with rows in
 * this ledger: a part without any was reserved by an external source of the
 * same id) has no record but the hold's: its amount must equal what its
 * `reserve` rows took net of `release` rows, and a source the hold has no part
 * of (a fallback attempt, a failed open) must net to 0.
 *
 * Each problem names the hold, and the source for a part.
 */
export const partProblems = (state: State, local: ReadonlySet<string> = new Set()): Array<string> => {
  const problems: Array<string> = []
  const byPart = new Map<string, { reserved: number; back: number; backRows: number; kinds: Set<string> }>()
  for (const e of state.ledger) {
    if (e.holdId === undefined || !(giveBackKinds.has(e.kind) || reservationKinds.has(e.kind))) continue
    const k = partKey(e.sourceId, e.holdId)
    const entry = byPart.get(k) ?? { reserved: 0, back: 0, backRows: 0, kinds: new Set<string>() }
    if (reservationKinds.has(e.kind)) entry.reserved += e.amount
    else {
      entry.back += e.amount
      entry.backRows++
      entry.kinds.add(e.kind)
    }
    byPart.set(k, entry)
  }
  for (const [k, entry] of byPart) {
    const [sourceId, holdId] = k.split("\u0000") as [string, string]
    if (entry.backRows > 0 && state.holds.get(holdId)?.status === "settled") {
      problems.push(
        `hold ${holdId} is settled but the ledger has ${
          [...entry.kinds].join("/")
        } rows of ${sourceId} giving back ${entry.back}`
      )
    }
  }
  // The hold's parts by (source, hold), summed: split funding may draw several parts of one
  // `Source` (one per subscription), whose ledger rows the checks below take together.
  const copies = new Map<string, number>()
  for (const hold of state.holds.values()) {
    for (const p of hold.parts) {
      const k = partKey(p.sourceId, hold.id)
      copies.set(k, (copies.get(k) ?? 0) + p.amount)
    }
  }
  for (const [k, part] of state.parts) {
    const [sourceId, holdId] = k.split("\u0000") as [string, string]
    const entry = byPart.get(k) ?? { reserved: 0, back: 0, backRows: 0, kinds: new Set<string>() }
    if (-entry.reserved !== part.amount) {
      problems.push(
        `hold ${holdId} part ${sourceId}: recorded amount ${part.amount} but its reserve rows in the ledger sum to ${-entry
          .reserved}`
      )
    }
    const copy = copies.get(k)
    if (copy !== undefined && copy !== part.amount) {
      problems.push(`hold ${holdId} part ${sourceId}: the hold records ${copy} but the part record says ${part.amount}`)
    }
    if (entry.backRows > 0 && part.status !== "refunded") {
      problems.push(`hold ${holdId} part ${sourceId} is ${part.status} but the ledger gives back ${entry.back} for it`)
    }
    if (entry.back > part.amount || entry.back < 0) {
      problems.push(
        `hold ${holdId} part ${sourceId}: the ledger gives back ${entry.back}, more than the ${part.amount} reserved`
      )
    }
  }
  // The store's own sources: the hold's part is the only record.
  const empty = () => ({ reserved: 0, back: 0, backRows: 0, kinds: new Set<string>() })
  for (const [k, entry] of byPart) {
    const [sourceId, holdId] = k.split("\u0000") as [string, string]
    if (!local.has(sourceId) || state.parts.has(k) || copies.has(k)) continue
    if (entry.reserved !== 0) {
      problems.push(
        `hold ${holdId}: the ledger nets ${-entry
          .reserved} reserved on ${sourceId}, but the hold has no ${sourceId} part`
      )
    }
  }
  for (const hold of state.holds.values()) {
    for (const sourceId of new Set(hold.parts.map((p) => p.sourceId))) {
      const k = partKey(sourceId, hold.id)
      // A part with no row in this ledger was reserved elsewhere (an external source of the same id).
      if (!local.has(sourceId) || state.parts.has(k) || !byPart.has(k)) continue
      const entry = byPart.get(k) ?? empty()
      const amount = copies.get(k) ?? 0
      if (-entry.reserved !== amount) {
        problems.push(
          `hold ${hold.id} part ${sourceId}: the hold records ${amount} but its reserve rows in the ledger sum to ${-entry
            .reserved}`
        )
      }
      if (entry.backRows > 0 && hold.status === "pending") {
        problems.push(`hold ${hold.id} part ${sourceId} is pending but the ledger gives back ${entry.back} for it`)
      }
      if (entry.back > amount || entry.back < 0) {
        problems.push(
          `hold ${hold.id} part ${sourceId}: the ledger gives back ${entry.back}, more than the ${amount} reserved`
        )
      }
    }
  }
  return problems
}
