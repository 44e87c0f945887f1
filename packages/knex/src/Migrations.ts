/**
 * Migrations shipped inside packages. Each package exports a {@link MigrationSet}
 * (its migrations as code, run through a knex `migrationSource` with the
 * package's own migrations table, prefixed); {@link run} applies every set the
 * host installed, in order. It is safe to run from several processes at once:
 * the lock table and its single row are created idempotently first, knex's
 * migration lock then serialises the runs, and a process that finds the lock
 * taken waits and retries.
 *
 * @since 0.1.0
 */
import type { BillingError } from "@relay-billing/core"
import { Effect, Schedule } from "effect"
import type { Knex } from "knex"
import { insertIgnore } from "./internal/sql.js"
import { KnexClient } from "./KnexClient.js"
import type { Dialect } from "./KnexClient.js"

/**
 * What a migration sees.
 *
 * @since 0.1.0
 * @category models
 */
export interface MigrationContext {
  readonly prefix: string
  readonly dialect: Dialect
  /** The prefixed name of a table. */
  readonly table: (name: string) => string
}

/**
 * One migration.
 *
 * @since 0.1.0
 * @category models
 */
export interface Migration {
  readonly name: string
  readonly up: (knex: Knex, context: MigrationContext) => Promise<void>
  readonly down: (knex: Knex, context: MigrationContext) => Promise<void>
}

/**
 * The migrations of one package; `name` names its migrations table
 * (`<prefix><name>_migrations`).
 *
 * @since 0.1.0
 * @category models
 */
export interface MigrationSet {
  readonly name: string
  readonly migrations: ReadonlyArray<Migration>
}

/**
 * What {@link run} applied: the names of the migrations run, per set.
 *
 * @since 0.1.0
 * @category models
 */
export type MigrationReport = Record<string, ReadonlyArray<string>>

const migrationSource = (set: MigrationSet, context: MigrationContext): Knex.MigrationSource<Migration> => ({
  getMigrations: () => Promise.resolve([...set.migrations]),
  getMigrationName: (m) => m.name,
  getMigration: (m) =>
    Promise.resolve({
      up: (k: Knex) => m.up(k, context),
      down: (k: Knex) => m.down(k, context)
    })
})

/** knex's lock table (same shape as knex creates) with exactly one row, index 1. */
const ensureLockRow = (client: KnexClient["Service"], lockTable: string) =>
  Effect.gen(function*() {
    const exists = yield* client.query("migrate.lock.exists", (db) => db.schema.hasTable(lockTable))
    if (!exists) {
      // A concurrent creator makes this fail; the retry then finds the table.
      yield* client.query("migrate.lock.create", (db) =>
        db.schema.createTable(lockTable, (t) => {
          t.increments("index").primary()
          t.integer("is_locked")
        }))
    }
    yield* insertIgnore(client, "migrate.lock.row", lockTable, { index: 1, is_locked: 0 }, "index")
    // Repair a table left with extra unlocked rows by an earlier race.
    yield* client.query("migrate.lock.repair", (db) =>
      db(lockTable).whereNot("index", 1).andWhere("is_locked", 0).delete())
  })

/**
 * Applies every set's pending migrations, in order.
 *
 * @since 0.1.0
 * @category migrations
 */
export const run = (
  sets: ReadonlyArray<MigrationSet>
): Effect.Effect<MigrationReport, BillingError.StoreError, KnexClient> =>
  Effect.gen(function*() {
    const client = yield* KnexClient
    const context: MigrationContext = { prefix: client.prefix, dialect: client.dialect, table: client.table }
    const report: Record<string, ReadonlyArray<string>> = {}
    for (const set of sets) {
      const tableName = `${client.prefix}${set.name}_migrations`
      // knex creates its lock table and lock row by checking, then inserting: processes
      // starting together can insert several rows, after which knex's lock (which wants
      // exactly one row to change) can never be taken again. Create both idempotently first.
      yield* ensureLockRow(client, `${tableName}_lock`).pipe(
        Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 20 })
      )
      // Another process holding the lock (or creating the migrations table at the same
      // moment) makes knex fail at once; wait and try again, the second run is a no-op.
      const [, applied] = yield* client.query(
        `migrate.${set.name}`,
        () =>
          client.knex.migrate.latest({ migrationSource: migrationSource(set, context), tableName }) as Promise<
            [number, Array<string>]
          >
      ).pipe(Effect.retry({ schedule: Schedule.spaced("200 millis"), times: 50 }))
      report[set.name] = applied
    }
    return report
  })

/**
 * Rolls back every migration of the given sets, last set first (for tests and
 * uninstalling).
 *
 * @since 0.1.0
 * @category migrations
 */
export const rollbackAll = (
  sets: ReadonlyArray<MigrationSet>
): Effect.Effect<void, BillingError.StoreError, KnexClient> =>
  Effect.gen(function*() {
    const client = yield* KnexClient
    const context: MigrationContext = { prefix: client.prefix, dialect: client.dialect, table: client.table }
    for (const set of [...sets].reverse()) {
      const tableName = `${client.prefix}${set.name}_migrations`
      yield* client.query(
        `migrate.rollback.${set.name}`,
        () => client.knex.migrate.rollback({ migrationSource: migrationSource(set, context), tableName }, true)
      )
    }
  })
