import { Effect } from "effect"
import { BillingError } from "@relay-billing/core"
import type { KnexClient } from "@relay-billing/knex"

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
