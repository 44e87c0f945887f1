/**
 * End-of-run correctness: every balance, budget and counter equals what the
 * sessions that succeeded must have produced, the hold/part/ledger row counts
 * match (4 ledger rows and 2 part records per session on both sides), and the
 * SDK's audit (ledger sums = balances, hold and part statuses agree) is clean —
 * for the SDK's tables and for the raw loop's tables alike. Sessions that
 * failed (an error the side reported) are not problems here — they are
 * reported per row — but the database must reflect exactly what they left
 * behind (nothing after a failed open, the reservation after a failed settle).
 */
import { Audit, KnexClient } from "@relay-billing/knex"
import { Wallet } from "@relay-billing/wallet"
import { Effect } from "effect"
import type { Expected } from "./workload.js"
import { OPENING, tokenIdOf } from "./workload.js"

export interface Verification {
  readonly ok: boolean
  readonly problems: ReadonlyArray<string>
  readonly sessionsSettled: number
  readonly holds: number
  readonly ledgerRows: number
  readonly audit: { readonly ok: boolean; readonly subjectsChecked: number; readonly holdsChecked: number }
  /** The structure of one settled hold, its parts and ledger rows (values replaced by types). */
  readonly shape: string
}

const n = (v: unknown) => Number(v)

/** Types instead of values, recursively; JSON text columns are parsed. */
const shapeOf = (value: unknown): unknown => {
  if (value === null || value === undefined) return "null"
  if (typeof value === "string") {
    if (value.startsWith("{") || value.startsWith("[")) {
      try {
        return shapeOf(JSON.parse(value))
      } catch {
        return "string"
      }
    }
    return /^-?\d+$/.test(value) ? "int" : "string"
  }
  if (typeof value === "number" || typeof value === "bigint") return Number.isInteger(Number(value)) ? "int" : "number"
  if (typeof value === "boolean") return "bool"
  if (Array.isArray(value)) return value.map(shapeOf)
  if (typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)).map((
        [k, v]
      ) => [k, shapeOf(v)])
    )
  }
  return typeof value
}

export const verify = (
  client: KnexClient.Client,
  expected: Expected,
  accounts: ReadonlyArray<string>,
  openingLedgerRows: number
): Effect.Effect<Verification, unknown> =>
  Effect.gen(function*() {
    const knex = client.knex
    const t = client.table
    const problems: Array<string> = []
    const q = <A>(f: () => PromiseLike<A>) => Effect.promise(() => Promise.resolve(f()))
    const accountRows = yield* q(() => knex(t("accounts")).select("id", "balance", "used_quota", "request_count"))
    const tokenRows = yield* q(() => knex(t("tokens")).select("id", "remain", "used"))
    const tokens = new Map(tokenRows.map((r: Record<string, unknown>) => [String(r["id"]), r]))
    for (const id of accounts) {
      const row = accountRows.find((r: Record<string, unknown>) => r["id"] === id)
      const c = expected.charged.get(id) ?? { amount: 0, count: 0 }
      const held = expected.pending.get(id) ?? 0
      const want = { balance: OPENING - c.amount - held, used_quota: c.amount, request_count: c.count }
      if (!row) {
        problems.push(`account ${id} missing`)
        continue
      }
      for (const [k, v] of Object.entries(want)) {
        if (n(row[k]) !== v) problems.push(`account ${id}: ${k} ${String(row[k])}, expected ${v}`)
      }
      const token = tokens.get(tokenIdOf(id))
      const wantToken = { remain: OPENING - c.amount - held, used: c.amount + held }
      for (const [k, v] of Object.entries(wantToken)) {
        if (!token || n(token[k]) !== v) {
          problems.push(`token ${tokenIdOf(id)}: ${k} ${String(token?.[k])}, expected ${v}`)
        }
      }
    }
    const statuses = yield* q(() => knex(t("holds")).select("status").count({ n: "*" }).groupBy("status"))
    const byStatus = Object.fromEntries(statuses.map((r: Record<string, unknown>) => [String(r["status"]), n(r["n"])]))
    const holds = Object.values(byStatus).reduce((a: number, b) => a + (b as number), 0)
    if ((byStatus["settled"] ?? 0) !== expected.settled) {
      problems.push(`${byStatus["settled"] ?? 0} settled holds, expected ${expected.settled}`)
    }
    if ((byStatus["pending"] ?? 0) !== expected.pendingHolds) {
      problems.push(`${byStatus["pending"] ?? 0} pending holds, expected ${expected.pendingHolds}`)
    }
    // v2: the hold's own parts are the only record of them (the SDK's sources keep none).
    const partLists = yield* q(() => knex(t("holds")).select("parts"))
    const partCount = partLists.reduce(
      (sum: number, r: Record<string, unknown>) => sum + (JSON.parse(String(r["parts"])) as Array<unknown>).length,
      0
    )
    if (partCount !== 2 * holds) problems.push(`${partCount} hold parts for ${holds} holds`)
    const [ledgerCount] = yield* q(() => knex(t("ledger")).count({ n: "*" }))
    const ledgerRows = n(ledgerCount?.["n"])
    const wantLedger = openingLedgerRows + 4 * expected.settled + 2 * expected.pendingHolds
    if (ledgerRows !== wantLedger) problems.push(`${ledgerRows} ledger rows, expected ${wantLedger}`)
    const audit = yield* Audit.run(Wallet.auditBalances).pipe(Effect.provideService(KnexClient.KnexClient, client))
    for (const p of audit.problems.slice(0, 10)) problems.push(`audit: ${p}`)
    if (audit.pendingPastExpiry.length > 0) {
      problems.push(`audit: ${audit.pendingPastExpiry.length} pending holds past expiry`)
    }

    // One settled hold with its parts and ledger rows, values replaced by their types.
    const sample = yield* q(() => knex(t("holds")).where({ status: "settled" }).orderBy("created_at", "desc").first())
    let shape = "(no settled hold)"
    if (sample) {
      const parts = (JSON.parse(String(sample["parts"])) as Array<Record<string, unknown>>)
        .map((p) => ({
          source_id: p["sourceId"],
          status: sample["status"],
          subject_id: p["subjectId"],
          amount: p["amount"]
        }))
        .sort((a, b) => String(a.source_id).localeCompare(String(b.source_id)))
      const ledger = yield* q(() => knex(t("ledger")).where({ hold_id: sample.id }).orderBy(["kind", "source_id"]))
      shape = JSON.stringify({
        hold: shapeOf(sample),
        parts: parts.map((p: Record<string, unknown>) => ({
          source: p["source_id"],
          status: p["status"],
          row: shapeOf(p)
        })),
        ledger: ledger.map((l: Record<string, unknown>) => ({
          kind: l["kind"],
          source: l["source_id"],
          sign: Math.sign(n(l["amount"])),
          row: shapeOf({ ...l, seq: 0 })
        }))
      })
    }
    return {
      ok: problems.length === 0 && audit.ok,
      problems,
      sessionsSettled: expected.settled,
      holds,
      ledgerRows,
      audit: { ok: audit.ok, subjectsChecked: audit.subjectsChecked, holdsChecked: audit.holdsChecked },
      shape
    }
  })

/**
 * What a side whose sessions ran outside this process (pgbench) must have left,
 * read from its holds: a settled hold charged its settlement's `actual`, a
 * pending hold keeps its estimate reserved. `verify` then checks every balance,
 * budget, counter, the ledger row count and the audit against it — so a session
 * that wrote less than all of its rows fails the run.
 */
export const expectedFromHolds = (client: KnexClient.Client, expected: Expected): Effect.Effect<void> =>
  Effect.promise(async () => {
    const rows = await client.knex(client.table("holds")).select(
      "id",
      "account_id",
      "token_id",
      "estimate",
      "status",
      "settlement"
    )
    for (const r of rows as Array<Record<string, unknown>>) {
      const base = {
        holdId: String(r["id"]),
        accountId: String(r["account_id"]),
        tokenId: String(r["token_id"]),
        estimate: n(r["estimate"])
      }
      if (r["status"] === "settled") {
        const settlement = JSON.parse(String(r["settlement"])) as { actual: number }
        expected.settle({ ...base, actual: settlement.actual })
      } else if (r["status"] === "pending") {
        expected.keepOpen({ ...base, actual: 0 })
      }
    }
  })
