import { BillingError, Quota } from "@relay-billing/core"
import type { SqlStore } from "@relay-billing/core"
import { Effect } from "effect"

type Sql = SqlStore.SqlStore["Service"]

/** An integer column as a safe number (PostgreSQL answers BIGINT as a string). */
export const num = (
  value: unknown,
  column: string,
  operation: string
): Effect.Effect<number, BillingError.StoreError> => {
  const n = typeof value === "bigint" ? Number(value) : Number(value)
  return Number.isSafeInteger(n)
    ? Effect.succeed(n)
    : Effect.fail(
      new BillingError.StoreError({ operation, detail: `${column}: ${String(value)} is not a safe integer` })
    )
}

/**
 * `UPDATE table SET … WHERE id = ? AND …` reading `columns` after it: one
 * statement with `RETURNING` (PostgreSQL, SQLite); on MySQL the UPDATE and a
 * read of the row it changed, in the same transaction. `undefined` when no row
 * matched. The `where` text is ANDed after `id = ?`; `params` are the SET's
 * then the WHERE's.
 */
export const updateReturning = (
  sql: Sql,
  operation: string,
  input: {
    readonly table: string
    readonly set: string
    readonly setParams: ReadonlyArray<unknown>
    readonly id: string
    readonly where?: string
    readonly whereParams?: ReadonlyArray<unknown>
    readonly columns: ReadonlyArray<string>
  }
): Effect.Effect<Record<string, unknown> | undefined, BillingError.StoreError> => {
  const where = `id = ?${input.where ? ` and ${input.where}` : ""}`
  const params = [...input.setParams, input.id, ...(input.whereParams ?? [])]
  const update = `update ${input.table} set ${input.set} where ${where}`
  if (sql.dialect === "mysql") {
    return Effect.flatMap(sql.execute(operation, update, params), (r) =>
      r.affected === 0
        ? Effect.succeed(undefined)
        : Effect.map(
          sql.execute(operation, `select ${input.columns.join(", ")} from ${input.table} where id = ?`, [input.id]),
          (read) => read.rows[0]
        ))
  }
  return Effect.map(
    sql.execute(operation, `${update} returning ${input.columns.join(", ")}`, params),
    (r) => r.rows[0]
  )
}

/** Reads one row's columns by id (locked until the transaction ends when `lock`, where the dialect locks rows). */
export const readRow = (
  sql: Sql,
  operation: string,
  table: string,
  id: string,
  columns: ReadonlyArray<string>,
  lock = false
): Effect.Effect<Record<string, unknown> | undefined, BillingError.StoreError> =>
  Effect.map(
    sql.execute(
      operation,
      `select ${columns.join(", ")} from ${table} where id = ?${lock && sql.dialect !== "sqlite" ? " for update" : ""}`,
      [id]
    ),
    (r) => r.rows[0]
  )

/**
 * The SQL condition (and its parameter) that keeps `column + change` within
 * ±(2^53−1), so an out-of-range change matches no row (spec §2.10); `undefined`
 * for a change of 0.
 */
export const inRange = (column: string, change: number): { readonly sql: string; readonly param: number } | undefined =>
  change > 0
    ? { sql: `${column} <= ?`, param: Number.MAX_SAFE_INTEGER - change }
    : change < 0
    ? { sql: `${column} >= ?`, param: Number.MIN_SAFE_INTEGER - change }
    : undefined

/** ANDs the conditions that are present, with their parameters in order. */
export const conditions = (
  parts: ReadonlyArray<{ readonly sql: string; readonly param?: unknown } | undefined>
): { readonly where: string; readonly whereParams: ReadonlyArray<unknown> } => {
  const present = parts.filter((p): p is { readonly sql: string; readonly param?: unknown } => p !== undefined)
  return {
    where: present.map((p) => p.sql).join(" and "),
    whereParams: present.flatMap((p) => ("param" in p && p.param !== undefined ? [p.param] : []))
  }
}

/**
 * `QuotaOutOfRange` for the first checked column whose `current + change`
 * leaves ±(2^53−1); `undefined` when every one stays inside.
 */
export const outOfRange = (
  row: Record<string, unknown>,
  subjectId: string,
  checks: ReadonlyArray<{ readonly column: string; readonly field: string; readonly change: number }>
): BillingError.QuotaOutOfRange | undefined => {
  for (const check of checks) {
    const current = Number(row[check.column])
    if (!Quota.inSafeRange(current, check.change)) {
      return new BillingError.QuotaOutOfRange({ field: check.field, subjectId, current, change: check.change })
    }
  }
  return undefined
}
