import { Effect } from "effect"
import { BillingError, Quota } from "@relay-billing/core"
import type { KnexClient } from "@relay-billing/knex"
import type { Knex } from "knex"

/** Reads one integer column of one row (locked until the transaction ends when `lock`). */
export const readBalance = (
  client: KnexClient.Client,
  table: string,
  column: string,
  id: string,
  operation: string,
  lock = false
) =>
  client.query(operation, (db) => {
    const q = db(table).where({ id }).first(column)
    return lock && client.dialect !== "sqlite" ? q.forUpdate() : q
  }).pipe(
    Effect.flatMap((row) =>
      Effect.try({
        try: () => {
          if (!row) return undefined
          const n = Number(row[column])
          if (!Number.isSafeInteger(n)) throw new Error(`${table}.${column} of ${id} is not a safe integer: ${row[column]}`)
          return n
        },
        catch: (cause) => new BillingError.StoreError({ operation, detail: String(cause), cause })
      })
    )
  )

/** The hold was already refunded at this source. */
export const resolved = (holdId: string, operation: string) =>
  new BillingError.HoldResolved({ holdId, status: "refunded", operation })

/**
 * Narrows an UPDATE to the rows where `column + change` stays within
 * ±(2^53−1), so an out-of-range change matches no row and writes nothing
 * (spec §2.10). `change` is a difference of quotas, so the bound is exact.
 */
export const withinRange = (q: Knex.QueryBuilder, column: string, change: number): Knex.QueryBuilder =>
  change > 0
    ? q.andWhere(column, "<=", Number.MAX_SAFE_INTEGER - change)
    : change < 0
    ? q.andWhere(column, ">=", Number.MIN_SAFE_INTEGER - change)
    : q

/**
 * After an UPDATE bounded by {@link withinRange} matched no row: fails with
 * `QuotaOutOfRange` (naming `field`, the row and its current value) when a
 * checked column is out of range, and succeeds with `undefined` when the row
 * does not exist. A row in range is a `StoreError` (the UPDATE had no other
 * condition), unless `otherConditions` says the UPDATE had some (then
 * `undefined`: the caller explains the miss).
 */
export const refuseOutOfRange = (
  client: KnexClient.Client,
  table: string,
  checks: ReadonlyArray<{ readonly column: string; readonly field: string; readonly change: number }>,
  id: string,
  operation: string,
  otherConditions = false
): Effect.Effect<undefined, BillingError.QuotaOutOfRange | BillingError.StoreError> =>
  client.query(operation, (db) => db(table).where({ id }).first(...checks.map((c) => c.column))).pipe(
    Effect.flatMap((row): Effect.Effect<undefined, BillingError.QuotaOutOfRange | BillingError.StoreError> => {
      if (!row) return Effect.succeed(undefined)
      for (const check of checks) {
        const current = Number(row[check.column])
        if (!Quota.inSafeRange(current, check.change)) {
          return Effect.fail(
            new BillingError.QuotaOutOfRange({ field: check.field, subjectId: id, current, change: check.change })
          )
        }
      }
      return otherConditions ? Effect.succeed(undefined) : Effect.fail(
        new BillingError.StoreError({ operation, detail: `${table} ${id}: a bounded update matched no row` })
      )
    })
  )
