/**
 * What the soak probe reads from the relay's database after the burst (its
 * own knex connection, read-only): holds, ledger rows and request logs, and
 * the pending holds (during the wait for the reaper, and right after the
 * SIGKILL).
 *
 * @since 0.1.0
 */
import type { Knex } from "knex"
import type { HoldRow, LedgerRow, LogRow } from "./SoakChecks.js"

/** The relay's table prefix (the knex package's default; the relay sets no other). */
export const PREFIX = "billing_"

/** Ids of the holds pending now. */
export const pendingHolds = async (db: Knex): Promise<ReadonlySet<string>> => {
  const rows: Array<Record<string, unknown>> = await db(`${PREFIX}holds`).where({ status: "pending" }).select("id")
  return new Set(rows.map((r) => String(r["id"])))
}

/** The funding charges a hold's settlement records (`undefined` when it has none). */
const settlementCharge = (text: unknown): number | undefined => {
  if (text === null || text === undefined || text === "") return undefined
  const s = JSON.parse(String(text)) as { actual?: number; parts?: Array<{ kind?: string; charged?: number }> }
  const funding = (s.parts ?? []).filter((p) => p.kind === "funding")
  return funding.length > 0 ? funding.reduce((sum, p) => sum + Number(p.charged ?? 0), 0) : Number(s.actual ?? 0)
}

/** Every hold, ledger row and request-log row. */
export const read = async (db: Knex): Promise<{
  readonly holds: ReadonlyArray<HoldRow>
  readonly ledger: ReadonlyArray<LedgerRow>
  readonly logs: ReadonlyArray<LogRow>
}> => {
  const holds: Array<Record<string, unknown>> = await db(`${PREFIX}holds`).select(
    "id",
    "account_id",
    "token_id",
    "status",
    "reserved",
    "settlement"
  )
  const ledger: Array<Record<string, unknown>> = await db(`${PREFIX}ledger`).select(
    "hold_id",
    "source_id",
    "kind",
    "amount"
  )
  const logs: Array<Record<string, unknown>> = await db(`${PREFIX}relay_logs`).select("request_id", "quota")
  return {
    holds: holds.map((r) => ({
      id: String(r["id"]),
      accountId: String(r["account_id"]),
      tokenId: r["token_id"] === null ? null : String(r["token_id"]),
      status: String(r["status"]),
      reserved: Number(r["reserved"]),
      settledCharge: settlementCharge(r["settlement"])
    })),
    ledger: ledger.map((r) => ({
      holdId: r["hold_id"] === null ? null : String(r["hold_id"]),
      sourceId: String(r["source_id"]),
      kind: String(r["kind"]),
      amount: Number(r["amount"])
    })),
    logs: logs.map((r) => ({ requestId: String(r["request_id"]), quota: Number(r["quota"]) }))
  }
}
