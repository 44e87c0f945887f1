import { BillingError } from "@relay-billing/core"
import { Effect } from "effect"
import type { Knex } from "knex"
import type { Client } from "../KnexClient.js"

/** Reads an integer column (PostgreSQL returns BIGINT as a string) as a safe number. */
export const int = (value: unknown, column: string): number => {
  const n = typeof value === "number" ? value : typeof value === "bigint" ? Number(value) : Number(value)
  if (!Number.isSafeInteger(n)) throw new Error(`column ${column}: ${String(value)} is not a safe integer`)
  return n
}

/** Like `int`, for nullable columns. */
export const intOrNull = (value: unknown, column: string): number | undefined =>
  value === null || value === undefined ? undefined : int(value, column)

/** Decodes rows with `f`; a malformed row is a `StoreError` naming the operation. */
export const decodeRows = <A>(operation: string, f: () => A) =>
  Effect.try({
    try: f,
    catch: (cause) =>
      new BillingError.StoreError({ operation, detail: cause instanceof Error ? cause.message : String(cause), cause })
  })

/** Number of rows an INSERT … ON CONFLICT DO NOTHING / INSERT IGNORE inserted. */
export const insertIgnore = (
  client: Client,
  operation: string,
  table: string,
  row: Record<string, unknown>,
  conflict: string | ReadonlyArray<string>
) =>
  client.query(operation, async (db) => {
    const q = db(table).insert(row).onConflict(conflict as string).ignore().toSQL()
    const result = await db.raw(q.sql, q.bindings as ReadonlyArray<Knex.Value>)
    return affected(client, result)
  })

/** Rows changed by a raw statement, per driver. */
export const affected = (client: Client, result: unknown): number => {
  switch (client.dialect) {
    case "postgres":
      return (result as { rowCount: number }).rowCount
    case "mysql":
      return (result as [{ affectedRows: number }])[0].affectedRows
    case "sqlite":
      return (result as { changes: number }).changes
  }
}

/**
 * Applies `changes` to one row and reads `column` back in the same statement
 * where the dialect supports RETURNING (PostgreSQL, SQLite), with a read in the
 * same transaction on MySQL. Returns undefined when no row matched.
 */
export const updateReturning = (
  client: Client,
  operation: string,
  table: string,
  where: (q: Knex.QueryBuilder) => Knex.QueryBuilder,
  changes: Record<string, unknown>,
  column: string,
  key: Record<string, unknown>
) =>
  client.query(operation, async (db) => {
    if (client.dialect === "mysql") {
      const n = await where(db(table)).update(changes)
      if (n === 0) return undefined
      const row = await db(table).where(key).first(column)
      return row ? int(row[column], column) : undefined
    }
    const rows = (await where(db(table)).update(changes, [column])) as unknown as Array<Record<string, unknown>>
    const row = rows[0]
    return row ? int(row[column], column) : undefined
  })
