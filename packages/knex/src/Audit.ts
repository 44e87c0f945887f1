/**
 * The audit: proves, from the database alone, that the ledger sums to every
 * balance, that no hold is both settled and refunded (nothing given back on a
 * settled hold, every part equal to its ledger rows), and reports pending holds
 * past their expiry. Problems are
 * reported, never thrown.
 *
 * @since 0.1.0
 */
import { Audit as CoreAudit, Hold } from "@relay-billing/core"
import type { BillingError, Source } from "@relay-billing/core"
import { Clock, Effect, Schema } from "effect"
import { partProblems } from "./internal/auditParts.js"
import { columnKey, sourceProblems } from "./internal/auditSources.js"
import { decodeRows, int } from "./internal/sql.js"
import { KnexClient } from "./KnexClient.js"

/**
 * A balance column that the ledger of `sourceId` must sum to (times `sign`).
 * Each package exports its own (the wallet: accounts and tokens).
 *
 * @since 0.1.0
 * @category models
 */
export interface BalanceColumn {
  readonly sourceId: string
  /** Unprefixed table name. */
  readonly table: string
  readonly idColumn: string
  readonly balanceColumn: string
  /** The ledger sum equals `sign × balance` (default 1; -1 for a "used" counter). */
  readonly sign?: 1 | -1
}

/**
 * The account counter the audit checks against the holds (see
 * {@link usedQuota}). The wallet package exports its own (`accounts.used_quota`).
 *
 * @since 0.2.0
 * @category models
 */
export interface CounterColumn {
  /** Unprefixed table name. */
  readonly table: string
  readonly idColumn: string
  /** The lifetime `usedQuota` column. */
  readonly usedColumn: string
}

/**
 * Options of {@link run}.
 *
 * @since 0.2.0
 * @category models
 */
export interface RunOptions {
  /** Also prove `usedQuota = settled charges − corrections` for every account (see {@link usedQuota}). */
  readonly counters?: CounterColumn
  /**
   * The registered v2 sources (a plugin's too): every column of their `audit`
   * ({@link Source.AuditColumn}) is checked against the source's ledger rows,
   * per subject: `SUM(column)` grouped by the `subject` column (a subject may
   * have several rows, e.g. voucher packs per account; none counts 0), times
   * `sign`, equals the sum of the source's ledger rows for that subject. A
   * column also given in `balances` (same source id, table and column) is
   * checked once. Their ids count as local (rows in this ledger) for the
   * late-charge checks.
   */
  readonly sources?: ReadonlyArray<Pick<Source.Source, "id" | "audit">>
}

/**
 * What the audit found.
 *
 * @since 0.1.0
 * @category models
 */
export interface AuditReport {
  readonly ok: boolean
  readonly problems: ReadonlyArray<string>
  readonly pendingPastExpiry: ReadonlyArray<string>
  readonly subjectsChecked: number
  readonly holdsChecked: number
}

/**
 * Runs the audit.
 *
 * @since 0.1.0
 * @category audit
 */
export const run = (
  balances: ReadonlyArray<BalanceColumn>,
  options: RunOptions = {}
): Effect.Effect<AuditReport, BillingError.StoreError, KnexClient> =>
  Effect.gen(function*() {
    const client = yield* KnexClient
    const now = yield* Clock.currentTimeMillis
    const problems: Array<string> = []
    let subjects = 0
    const ledger = client.table("ledger")
    for (const b of balances) {
      const sign = b.sign ?? 1
      const [sums, rows] = yield* Effect.all([
        client.query(`audit.${b.sourceId}.ledger`, (db) =>
          db(ledger).select("subject_id").sum({ total: "amount" }).where("source_id", b.sourceId).groupBy(
            "subject_id"
          )),
        client.query(`audit.${b.sourceId}.balances`, (db) =>
          db(client.table(b.table)).select({ id: b.idColumn, balance: b.balanceColumn }))
      ])
      // A value that is not a safe integer is itself a problem to report, never a throw.
      const read = (value: unknown, what: string): number | undefined => {
        try {
          return int(value, what)
        } catch {
          problems.push(`${b.sourceId}: ${what} ${String(value)} is not a safe integer`)
          return undefined
        }
      }
      yield* decodeRows(`audit.${b.sourceId}`, () => {
        const bySubject = new Map<string, number>()
        for (const s of sums as Array<Record<string, unknown>>) {
          const total = read(s["total"] ?? 0, `ledger sum of ${String(s["subject_id"])}`)
          if (total !== undefined) {
            bySubject.set(String(s["subject_id"]), total)
          } else bySubject.set(String(s["subject_id"]), Number.NaN)
        }
        for (const r of rows as Array<Record<string, unknown>>) {
          subjects++
          const id = String(r["id"])
          const balance = read(r["balance"], `${b.table}.${b.balanceColumn} of ${id}`)
          const sum = bySubject.get(id) ?? 0
          if (balance === undefined || Number.isNaN(sum)) {
            bySubject.delete(id)
            continue
          }
          bySubject.delete(id)
          if (sum !== sign * balance) {
            problems.push(`${b.sourceId} ${id}: ${b.table}.${b.balanceColumn} ${balance} but the ledger sums to ${sum}`)
          }
        }
        for (const [id, sum] of bySubject) {
          problems.push(`${b.sourceId} ${id}: ledger rows summing to ${sum} but no row in ${b.table}`)
        }
      })
    }
    // v2: the registered sources' own `audit` columns (a plugin's balances), summed per subject.
    const checked = new Set(balances.map((b) =>
      columnKey(b.sourceId, b.table, b.balanceColumn)
    ))
    const sources = options.sources ?? []
    const fromSources = yield* sourceProblems(client, sources, checked)
    problems.push(...fromSources.problems)
    subjects += fromSources.subjects
    const holds = client.table("holds")
    // Spec §6: nothing given back on a settled hold; every part's amount equals its ledger sum.
    problems.push(...(yield* partProblems(client)))
    // §6: every late charge is recorded on its expired hold and agrees with the ledger.
    problems.push(
      ...(yield* lateSettleProblems(
        new Set([
          ...balances.map((b) =>
            b.sourceId
          ),
          ...sources.map((s) => s.id)
        ])
      ))
    )
    if (options.counters) {
      problems.push(...(yield* usedQuota(options.counters)))
    }
    const [holdCount, stale] = yield* Effect.all([
      client.query("audit.holds.count", (db) => db(holds).count({ n: "*" })),
      client.query("audit.holds.expired", (db) =>
        db(holds).select("id").where("status", "pending").andWhere("expires_at", "<=", now).orderBy("expires_at"))
    ])
    const report: AuditReport = {
      ok: problems.length === 0,
      problems,
      pendingPastExpiry: (stale as Array<{ id: string }>).map((r) =>
        String(r.id)
      ),
      subjectsChecked: subjects,
      holdsChecked: int((holdCount as Array<Record<string, unknown>>)[0]?.["n"] ?? 0, "count")
    }
    return report
  })

/**
 * Proves, for every account, that its `usedQuota` equals what its settled
 * holds charged (A less what was recorded unbilled, billing-semantics §3.4)
 * less their corrections (§4.4), from the holds table alone. Returns one
 * problem per account that disagrees (naming it and both figures), and one per
 * settlement that cannot be read; never fails for a mismatch.
 *
 * @since 0.2.0
 * @category audit
 */
export const usedQuota = (
  counters: CounterColumn
): Effect.Effect<ReadonlyArray<string>, BillingError.StoreError, KnexClient> =>
  Effect.gen(function*() {
    const client = yield* KnexClient
    const [settled, accounts] = yield* Effect.all([
      client.query("audit.usedQuota.holds", (db) =>
        // Settled holds, and expired ones charged late (§6), which carry a settlement too.
        db(client.table("holds")).select("id", "account_id", "status", "settlement").whereIn("status", [
          "settled",
          "expired"
        ])
          .whereNotNull("settlement")),
      client.query("audit.usedQuota.accounts", (db) =>
        db(client.table(counters.table)).select({ id: counters.idColumn, used: counters.usedColumn }))
    ])
    const problems: Array<string> = []
    const expected = new Map<string, number>()
    for (const row of settled as Array<Record<string, unknown>>) {
      const accountId = String(row["account_id"])
      try {
        const settlement = decodeSettlement(JSON.parse(String(row["settlement"])))
        const status = String(row["status"]) === "settled" ? "settled" : "expired"
        if (!CoreAudit.countsAsCharged({ status, settlement })) {
          continue
        }
        expected.set(accountId, (expected.get(accountId) ?? 0) + Hold.stillCharged(settlement))
      } catch (cause) {
        problems.push(
          `hold ${String(row["id"])}: settlement cannot be read (${
            cause instanceof Error ? cause.message : String(cause)
          })`
        )
      }
    }
    for (const row of accounts as Array<Record<string, unknown>>) {
      const id = String(row["id"])
      const want = expected.get(id) ?? 0
      expected.delete(id)
      const used = Number(row["used"])
      if (!Number.isSafeInteger(used)) {
        problems.push(
          `account ${id}: ${counters.table}.${counters.usedColumn} ${String(row["used"])} is not a safe integer`
        )
      } else if (used !== want) {
        problems.push(
          `account ${id}: ${counters.table}.${counters.usedColumn} ${used} but its settled charges less corrections are ${want}`
        )
      }
    }
    for (const [id, want] of expected) {
      if (want !== 0) {
        problems.push(`account ${id}: settled charges less corrections ${want} but no row in ${counters.table}`)
      }
    }
    return problems
  })

const decodeSettlement = Schema.decodeUnknownSync(Hold.Settlement)

/**
 * The late-charge checks of the core audit (`Audit.lateSettleProblems` of
 * `@relay-billing/core`) over the holds that carry a late settlement or have
 * `late_settle` ledger rows; `local` are the sources whose rows this ledger
 * holds. A settlement that cannot be read is a problem, never a throw.
 *
 * @since 0.3.0
 * @category audit
 */
export const lateSettleProblems = (
  local: ReadonlySet<string>
): Effect.Effect<ReadonlyArray<string>, BillingError.StoreError, KnexClient> =>
  Effect.gen(function*() {
    const client = yield* KnexClient
    const ledger = client.table("ledger")
    const holds = client.table("holds")
    const rows = yield* client.query("audit.late.ledger", (db) =>
      db(ledger).select({ holdId: "hold_id", sourceId: "source_id", kind: "kind" }).sum({ amount: "amount" })
        .where("kind", "late_settle").groupBy("hold_id", "source_id", "kind"))
    const ids = [
      ...new Set((rows as Array<Record<string, unknown>>).map((r) =>
        String(r["holdId"])
      ))
    ]
    const late = yield* client.query("audit.late.holds", (db) =>
      db(holds).select("id", "account_id", "status", "parts", "settlement")
        .where((q) => {
          q.where("status", "expired").whereNotNull("settlement")
          if (ids.length > 0) {
            q.orWhereIn("id", ids)
          }
        }))
    const problems: Array<string> = []
    const decoded: Array<CoreAudit.HoldRow> = []
    for (const row of late as Array<Record<string, unknown>>) {
      try {
        decoded.push({
          id: String(row["id"]),
          accountId: String(row["account_id"]),
          status: Schema.decodeUnknownSync(Hold.HoldStatus)(row["status"]),
          parts: JSON.parse(String(row["parts"])),
          ...(row["settlement"] ? { settlement: decodeSettlement(JSON.parse(String(row["settlement"]))) } : {})
        })
      } catch (cause) {
        problems.push(
          `hold ${String(row["id"])}: cannot be read (${cause instanceof Error ? cause.message : String(cause)})`
        )
      }
    }
    const ledgerRows = (rows as Array<Record<string, unknown>>).map((r) => ({
      holdId: r["holdId"] === null ? undefined : String(r["holdId"]),
      sourceId: String(r["sourceId"]),
      kind: String(r["kind"]),
      amount: Number(r["amount"])
    }))
    problems.push(...CoreAudit.lateSettleProblems(decoded, ledgerRows, local))
    return problems
  })
