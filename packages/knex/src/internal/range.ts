import { BillingError, Quota } from "@relay-billing/core"
import { Effect } from "effect"
import type { Client } from "../KnexClient.js"

/** One column a bounded update checks, and the field its `QuotaOutOfRange` names. */
export interface RangeCheck {
  readonly column: string
  readonly field: string
  readonly change: number
}

/**
 * After an UPDATE bounded to the rows where each `column + change` stays within
 * ±(2^53−1) matched no row: fails with
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
