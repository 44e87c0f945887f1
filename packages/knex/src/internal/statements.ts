/**
 * SQL texts of the billing hot path, written once per dialect and table (no
 * query builder per call): the client's `execute` runs them on the driver
 * connection of the engine's transaction, prepared once per connection.
 *
 * @internal
 */
import type { Dialect } from "./url.js"

/** A quoted identifier, as knex quotes it (`"name"`; `` `name` `` on MySQL). */
export const ident = (dialect: Dialect, name: string): string =>
  dialect === "mysql" ? `\`${name.replaceAll("`", "``")}\`` : `"${name.replaceAll("\"", "\"\"")}"`

/** `(?, ?, …)` for `n` values. */
export const placeholders = (n: number): string => `(${Array.from({ length: n }, () => "?").join(", ")})`

/**
 * `INSERT … ON CONFLICT (key) DO NOTHING` (SQLite, PostgreSQL) / `INSERT IGNORE`
 * (MySQL) of one row of `columns`: what `.onConflict(key).ignore()` builds.
 */
export const insertIgnoreSql = (
  dialect: Dialect,
  table: string,
  columns: ReadonlyArray<string>,
  conflict: ReadonlyArray<string>
): string => {
  const cols = columns.map((c) => ident(dialect, c)).join(", ")
  const values = placeholders(columns.length)
  return dialect === "mysql"
    ? `insert ignore into ${ident(dialect, table)} (${cols}) values ${values}`
    : `insert into ${ident(dialect, table)} (${cols}) values ${values} on conflict (${
      conflict.map((c) => ident(dialect, c)).join(", ")
    }) do nothing`
}

/** `INSERT INTO table (columns) VALUES (…), (…)` for `rows` rows. */
export const insertRowsSql = (dialect: Dialect, table: string, columns: ReadonlyArray<string>, rows: number): string =>
  `insert into ${ident(dialect, table)} (${columns.map((c) => ident(dialect, c)).join(", ")}) values ${
    Array.from({ length: rows }, () => placeholders(columns.length)).join(", ")
  }`

/** Memoises `f` by its key (the texts of one layer are a handful). */
export const memo = <K, A>(f: (key: K) => A): (key: K) => A => {
  const cache = new Map<K, A>()
  return (key) => {
    let value = cache.get(key)
    if (value === undefined) {
      value = f(key)
      cache.set(key, value)
    }
    return value
  }
}
