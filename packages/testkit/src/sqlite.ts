/**
 * The SQLite entry of the testkit (`@relay-billing/testkit/sqlite`): a test
 * store for sources that keep their balances in SQL. Kept apart from the main
 * entry so that the in-memory testkit never loads knex or better-sqlite3.
 *
 * @since 0.4.0
 */

/** @since 0.4.0 */
export * as SqliteStore from "./SqliteStore.js"
