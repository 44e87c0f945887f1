import { Effect } from "effect"
import type { BillingError } from "@relay-billing/core"
import type { Client } from "../KnexClient.js"
import { decodeRows, int } from "./sql.js"

/** Ledger kinds that give a reservation back. */
const giveBackKinds = ["refund", "expire"]
/** Ledger kinds that take (`reserve`) or undo (`release`, a failed open) a reservation. */
const reservationKinds = ["reserve", "release"]

const key = (sourceId: string, holdId: string) => `${sourceId}\u0000${holdId}`

/**
 * Audit checks of spec §6 ("the audit also proves") over the hold journal, the
 * per-source part records and the ledger:
 *
 * - no `refund`/`expire` ledger row on a settled hold (nor on a part that is
 *   still reserved or settled);
 * - every part's recorded amount equals its ledger sum: the part record's
 *   amount is what its `reserve` rows took (net of `release` rows), the
 *   hold's own copy of the part says the same amount, and what its `refund` /
 *   `expire` rows gave back never exceeds it.
 *
 * Each problem names the hold, and the source for a part.
 */
export const partProblems = (client: Client): Effect.Effect<Array<string>, BillingError.StoreError> =>
  Effect.gen(function*() {
    const ledger = client.table("ledger")
    const [sums, parts, holds] = yield* Effect.all([
      client.query("audit.parts.ledger", (db) =>
        db(ledger)
          .select({ sourceId: "source_id", holdId: "hold_id", kind: "kind" })
          .sum({ total: "amount" })
          .count({ n: "*" })
          .whereNotNull("hold_id")
          .whereIn("kind", [...giveBackKinds, ...reservationKinds])
          .groupBy("source_id", "hold_id", "kind")),
      client.query("audit.parts.records", (db) =>
        db(client.table("hold_parts")).select({ sourceId: "source_id", holdId: "hold_id", amount: "amount", status: "status" })),
      client.query("audit.parts.holds", (db) => db(client.table("holds")).select({ id: "id", status: "status", parts: "parts" }))
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
        for (const p of Array.isArray(recorded) ? recorded : []) holdParts.set(key(String(p.sourceId), id), Number(p.amount))
      }
      // (i) Nothing was given back on a settled hold, whatever the source.
      for (const [k, entry] of byPart) {
        const [sourceId, holdId] = k.split("\u0000") as [string, string]
        if (entry.backRows > 0 && holdStatus.get(holdId) === "settled") {
          problems.push(
            `hold ${holdId} is settled but the ledger has ${[...entry.kinds].join("/")} rows of ${sourceId} giving back ${entry.back}`
          )
        }
      }
      // (ii) Every part's recorded amount equals its ledger sum.
      for (const p of parts as Array<Record<string, unknown>>) {
        const sourceId = String(p["sourceId"])
        const holdId = String(p["holdId"])
        const amount = int(p["amount"], `hold_parts.amount of ${sourceId} ${holdId}`)
        const status = String(p["status"])
        const entry = byPart.get(key(sourceId, holdId)) ?? { reserved: 0, back: 0, backRows: 0, kinds: new Set<string>() }
        if (-entry.reserved !== amount) {
          problems.push(`hold ${holdId} part ${sourceId}: recorded amount ${amount} but its reserve rows in the ledger sum to ${-entry.reserved}`)
        }
        const copy = holdParts.get(key(sourceId, holdId))
        if (copy !== undefined && copy !== amount) {
          problems.push(`hold ${holdId} part ${sourceId}: the hold records ${copy} but the part record says ${amount}`)
        }
        if (entry.backRows > 0 && status !== "refunded") {
          problems.push(`hold ${holdId} part ${sourceId} is ${status} but the ledger gives back ${entry.back} for it`)
        }
        if (entry.back > amount || entry.back < 0) {
          problems.push(`hold ${holdId} part ${sourceId}: the ledger gives back ${entry.back}, more than the ${amount} reserved`)
        }
      }
      return problems
    })
  })
