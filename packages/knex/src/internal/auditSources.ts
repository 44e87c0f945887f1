import type { BillingError, Source } from "@relay-billing/core"
import { Effect } from "effect"
import type { Client } from "../KnexClient.js"
import { decodeRows, int } from "./sql.js"

/** A source's audit columns, as `Audit.run` reads them (`Source.audit`). */
export type AuditedSource = Pick<Source.Source, "id" | "audit">

/** The columns already checked as `BalanceColumn`s, by `sourceId`, unprefixed table and column. */
export const columnKey = (sourceId: string, table: string, column: string): string =>
  `${sourceId}\u0000${table}\u0000${column}`

/**
 * The v2 `Source.audit` checks: for each declared column, per subject,
 * `SUM(column)` over the rows of `table` (the client's prefix added) grouped by
 * the `subject` column, times `sign`, equals the sum of the source's ledger rows
 * for that subject. A subject may have several rows (a plugin's voucher packs per
 * account); a subject with no row counts 0, so ledger rows summing to anything
 * else are a problem too. Columns in `skip` (see {@link columnKey}) are left out:
 * they are checked as `BalanceColumn`s already. Returns the problems (the same
 * shapes as the balance checks) and the number of subjects checked; a value that
 * is not a safe integer is a problem, never a throw.
 */
export const sourceProblems = (
  client: Client,
  sources: ReadonlyArray<AuditedSource>,
  skip: ReadonlySet<string>
): Effect.Effect<{ readonly problems: Array<string>; readonly subjects: number }, BillingError.StoreError> =>
  Effect.gen(function*() {
    const problems: Array<string> = []
    let subjects = 0
    const ledger = client.table("ledger")
    for (const source of sources) {
      const columns = (source.audit ?? []).filter((c) => !skip.has(columnKey(source.id, c.table, c.column)))
      if (columns.length === 0) continue
      const sums = yield* client.query(
        `audit.${source.id}.ledger`,
        (db) =>
          db(ledger).select("subject_id").sum({ total: "amount" }).where("source_id", source.id).groupBy("subject_id")
      )
      for (const column of columns) {
        const rows = yield* client.query(
          `audit.${source.id}.${column.table}.${column.column}`,
          (db) =>
            db(client.table(column.table)).select({ subject: column.subject }).sum({ value: column.column }).groupBy(
              column.subject
            )
        )
        const sign = column.sign ?? 1
        const where = `${column.table}.${column.column}`
        const read = (value: unknown, what: string): number | undefined => {
          try {
            return int(value ?? 0, what)
          } catch {
            problems.push(`${source.id}: ${what} ${String(value)} is not a safe integer`)
            return undefined
          }
        }
        yield* decodeRows(`audit.${source.id}`, () => {
          const bySubject = new Map<string, number>()
          for (const s of sums as Array<Record<string, unknown>>) {
            const id = String(s["subject_id"])
            bySubject.set(id, read(s["total"], `ledger sum of ${id}`) ?? Number.NaN)
          }
          for (const r of rows as Array<Record<string, unknown>>) {
            subjects++
            const id = String(r["subject"])
            const value = read(r["value"], `sum of ${where} of ${id}`)
            const sum = bySubject.get(id) ?? 0
            bySubject.delete(id)
            if (value === undefined || Number.isNaN(sum)) continue
            if (sum !== sign * value) {
              problems.push(`${source.id} ${id}: ${where} ${value} but the ledger sums to ${sum}`)
            }
          }
          for (const [id, sum] of bySubject) {
            if (!Number.isNaN(sum) && sum !== 0) {
              problems.push(`${source.id} ${id}: ledger rows summing to ${sum} but no row in ${column.table}`)
            }
          }
        })
      }
    }
    return { problems, subjects }
  })
