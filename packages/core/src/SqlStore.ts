/**
 * The transactional store as a source in it sees it: a SQL executor bound to
 * the engine's transaction, with the dialect and the table prefix.
 *
 * Implemented by `@relay-billing/knex` (SQLite, PostgreSQL, MySQL/MariaDB) and
 * by `@relay-billing/testkit`'s SQLite test store. A plugin writes portable SQL
 * with `?` placeholders and branches on `dialect` where the dialects differ
 * (`RETURNING` exists on SQLite and PostgreSQL, not on MySQL).
 *
 * @since 0.4.0
 */
import { Context } from "effect"
import type { Effect } from "effect"
import type { StoreError } from "./BillingError.js"

/**
 * The SQL dialects the SDK supports.
 *
 * @since 0.4.0
 * @category models
 */
export type Dialect = "sqlite" | "postgres" | "mysql"

/**
 * What a statement returned: its rows (for a `SELECT` or a `RETURNING`
 * clause) and the number of rows it changed.
 *
 * @since 0.4.0
 * @category models
 */
export interface SqlResult {
  readonly rows: ReadonlyArray<Record<string, unknown>>
  readonly affected: number
}

/**
 * The executor service.
 *
 * @since 0.4.0
 * @category services
 */
export class SqlStore extends Context.Service<SqlStore, {
  /** Identity of the store (equal to the `HoldJournal`'s `storeId`). */
  readonly id: string
  readonly dialect: Dialect
  /** The physical name of a table: the store's prefix + `name` (for example `billing_vouchers`). */
  readonly table: (name: string) => string
  /**
   * Runs one statement with `?` placeholders, in the current transaction when
   * there is one (the engine's, during `take` and `move`), otherwise on its own.
   * `operation` names it in a `StoreError`.
   */
  readonly execute: (
    operation: string,
    sql: string,
    params?: ReadonlyArray<unknown>
  ) => Effect.Effect<SqlResult, StoreError>
}>()("@relay-billing/core/SqlStore") {}
