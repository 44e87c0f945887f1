import type { BillingError } from "@relay-billing/core"
import { Effect } from "effect"
import type { Client } from "../KnexClient.js"
import { decodeRows, int } from "./sql.js"

/** Ledger kinds that give a reservation back. */
const giveBackKinds = ["refund", "expire"]
/** Ledger kinds that take (`reserve`) or undo (`release`, a failed open) a reservation. */
const reservationKinds = ["reserve", "release"]

const key = (sourceId: string, holdId: string) => `${sourceId}\u0000${holdId}`

/**
 * Audit checks of spec §6 ("the audit also proves") over the hold journal and
 * the ledger. The hold's parts are the only record of a reservation (v2: the
 * sources keep none):
 *
 * - no `refund`/`expire` ledger row on a settled hold;
 * - every part with rows in this ledger (a part of a source in this store)
 *   equals its ledger sum: the hold's amount is what its `reserve` rows took
 *   (net of `release` rows), nothing is given back while the hold is pending,
 *   and what its `refund` / `expire` rows gave back never exceeds it;
 * - a source the hold has no part of (a fallback attempt, a failed open) nets
 *   its `reserve` and `release` rows to 0.
 *
 * A part with no row in this ledger was reserved by an external source. Each
 * problem names the hold, and the source for a part.
 */
export const partProblems = (client: Client): Effect.Effect<Array<string>, BillingError.StoreError> =>
  Effect.gen(function*() {
    const ledger = client.table("ledger")
    const [sums, holds] = yield* Effect.all([
      client.query("audit.parts.ledger", (db) =>
        db(ledger)
          .select({ sourceId: "source_id", holdId: "hold_id", kind: "kind" })
          .sum({ total: "amount" })
          .count({ n: "*" })
          .whereNotNull("hold_id")
          .whereIn("kind", [...giveBackKinds, ...reservationKinds])
          .groupBy("source_id", "hold_id", "kind")),
      client.query(
        "audit.parts.holds",
        (db) => db(client.table("holds")).select({ id: "id", status: "status", parts: "parts" })
      )
    ])
    return yield* decodeRows("audit.parts", () => {
      const problems: Array<string> = []
      /** (source, hold) → net reserved (negative), given back, number of give-back rows and their kinds. */
      const byPart = new Map<string, { reserved: number; back: number; backRows: number; kinds: Set<string> }>()
      for (const s of sums as Array<Record<string, unknown>>) {
        const k = key(String(s["sourceId"]), String(s["holdId"]))
        const entry = byPart.get(k) ?? { reserved: 0, back: 0, backRows: 0, kinds: new Set<string>() }
        const kind = String(s["kind"])
        const total = int(s["total"] ?? 0, `ledger sum of ${kind} rows`)
        if (reservationKinds.includes(kind)) entry.reserved += total
        else {
          entry.back += total
          entry.backRows += int(s["n"], "count")
          entry.kinds.add(kind)
        }
        byPart.set(k, entry)
      }
      const holdStatus = new Map<string, string>()
      const holdParts = new Map<string, number>()
      for (const h of holds as Array<Record<string, unknown>>) {
        const id = String(h["id"])
        holdStatus.set(id, String(h["status"]))
        let recorded: Array<{ sourceId?: unknown; amount?: unknown }> = []
        try {
          recorded = JSON.parse(String(h["parts"])) as typeof recorded
        } catch {
          problems.push(`hold ${id}: its parts are not valid JSON`)
        }
        for (const p of Array.isArray(recorded) ? recorded : []) {
          const k = key(String(p.sourceId), id)
          holdParts.set(k, (holdParts.get(k) ?? 0) + Number(p.amount))
        }
      }
      for (const [k, entry] of byPart) {
        const [sourceId, holdId] = k.split("\u0000") as [string, string]
        const status = holdStatus.get(holdId)
        // (i) Nothing was given back on a settled hold, whatever the source.
        if (entry.backRows > 0 && status === "settled") {
          problems.push(
            `hold ${holdId} is settled but the ledger has ${
              [...entry.kinds].join("/")
            } rows of ${sourceId} giving back ${entry.back}`
          )
        }
        const amount = holdParts.get(k)
        if (amount === undefined) {
          // No part of this source on the hold (or no hold): what was taken was released.
          if (entry.reserved !== 0) {
            problems.push(
              `hold ${holdId}: the ledger nets ${-entry
                .reserved} reserved on ${sourceId}, but the hold has no ${sourceId} part`
            )
          }
          continue
        }
        // (ii) Every part's amount equals its ledger sum.
        if (-entry.reserved !== amount) {
          problems.push(
            `hold ${holdId} part ${sourceId}: the hold records ${amount} but its reserve rows in the ledger sum to ${-entry
              .reserved}`
          )
        }
        if (entry.backRows > 0 && status === "pending") {
          problems.push(`hold ${holdId} part ${sourceId} is pending but the ledger gives back ${entry.back} for it`)
        }
        if (entry.back > amount || entry.back < 0) {
          problems.push(
            `hold ${holdId} part ${sourceId}: the ledger gives back ${entry.back}, more than the ${amount} reserved`
          )
        }
      }
      return problems
    })
  })
