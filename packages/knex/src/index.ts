/**
 * relay-billing on knex: client, transactions, migrations, durable hold journal
 * and ledger, audit, on SQLite, PostgreSQL and MySQL.
 *
 * @since 0.1.0
 */

/** @since 0.4.0 */
export * as Accounts from "./Accounts.js"
/** @since 0.1.0 */
export * as Audit from "./Audit.js"
/** @since 0.2.0 */
export * as IdColumns from "./IdColumns.js"
/** @since 0.1.0 */
export * as KnexBilling from "./KnexBilling.js"
/** @since 0.1.0 */
export * as KnexClient from "./KnexClient.js"
/** @since 0.1.0 */
export * as KnexJournal from "./KnexJournal.js"
/** @since 0.1.0 */
export * as KnexLedger from "./KnexLedger.js"
/** @since 0.4.0 */
export * as KnexSqlStore from "./KnexSqlStore.js"
/** @since 0.1.0 */
export * as Migrations from "./Migrations.js"
/** @since 0.4.0 */
export * as SourceMigrations from "./SourceMigrations.js"
/** @since 0.1.0 */
export * as Statements from "./Statements.js"
/** @since 0.1.0 */
export * as TestDatabase from "./TestDatabase.js"
