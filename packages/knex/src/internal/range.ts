import { BillingError, Quota } from "@relay-billing/core"
import { Effect } from "effect"
import type { Knex } from "knex"
import type { Client } from "../KnexClient.js"

/**
 * Narrows an UPDATE to the rows where `column + change` stays within
 * ±(2^53−1), so an out-of-range change matches no row and writes nothing
 * (spec §2.10).
 */
export const withinRange = (q: Knex.QueryBuilder, column: string, change: number): Knex.QueryBuilder =>
  change > 0
    ? q.andWhere(column, "<=", Number.MAX_SAFE_INTEGER - change)
    : change < 0
    ? q.andWhere(column, ">=", Number.MIN_SAFE_INTEGER - change)
    : q

/** One column a bounded update checks, and the field its `QuotaOutOfRange` names. */
export interface RangeCheck {
  readonly column: string
  readonly field: string
  readonly change: number
}

/**
 * After an UPDATE bounded by {@link withinRange} matched no row: fails with
 * `QuotaOutOfRange` when a checked column is out of range, and succeeds with
 * `undefined` when the row does not exist. A row in range is a `StoreError`
 * unless `otherConditions` says the UPDATE had other conditions.
 */
export const refuseOutOfRange = (
  client: Client,
  table: string,
  checks: ReadonlyArray<RangeCheck>,
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
