/**
 * Dialect-portable statements for sources that persist through the knex client:
 * an INSERT that ignores a conflict and reports whether it inserted, and an
 * UPDATE that reads a column back in the same statement where the dialect has
 * RETURNING (PostgreSQL, SQLite) and with a read in the same transaction on
 * MySQL. Both go through the current transaction.
 *
 * @since 0.1.0
 */
import type { BillingError } from "@relay-billing/core"
import type { Effect } from "effect"
import type { Knex } from "knex"
import * as sql from "./internal/sql.js"
import type { Client } from "./KnexClient.js"

/**
 * Inserts `row` unless a row with the same `conflict` key exists; returns the
 * number of rows inserted (0 or 1).
 *
 * @since 0.1.0
 * @category statements
 */
export const insertIgnore: (
  client: Client,
  operation: string,
  table: string,
  row: Record<string, unknown>,
  conflict: string | ReadonlyArray<string>
) => Effect.Effect<number, BillingError.StoreError> = sql.insertIgnore

/**
 * Applies `changes` to the rows `where` selects (one row, identified by `key`)
 * and returns `column` after the change, or `undefined` when no row matched.
 *
 * @since 0.1.0
 * @category statements
 */
export const updateReturning: (
  client: Client,
  operation: string,
  table: string,
  where: (q: Knex.QueryBuilder) => Knex.QueryBuilder,
  changes: Record<string, unknown>,
  column: string,
  key: Record<string, unknown>
) => Effect.Effect<number | undefined, BillingError.StoreError> = sql.updateReturning
