/**
 * Runs the migrations a `Source` declares (`Source.migrations`, written against
 * the `SqlStore` executor) through the knex migration runner: each source has
 * its own migrations table, `<prefix>source_<id>_migrations`, so sources never
 * share a name space and a plugin's migrations are recorded apart from the
 * SDK's. Each migration runs in knex's migration transaction (where the dialect
 * has transactional DDL).
 *
 * @since 0.4.0
 */
import type { BillingError, Source } from "@relay-billing/core"
import { Effect } from "effect"
import type { Client } from "./KnexClient.js"
import { KnexClient } from "./KnexClient.js"
import { fromConnection } from "./KnexSqlStore.js"
import * as Migrations from "./Migrations.js"

/**
 * The name of a source's migration set (its migrations table is
 * `<prefix><name>_migrations`).
 *
 * @since 0.4.0
 * @category migrations
 */
export const setName = (source: Pick<Source.Source, "id">): string => `source_${source.id}`

/**
 * A source's migrations as a knex `MigrationSet` over `client` (empty when the
 * source declares none). A migration without `down` fails its rollback, naming it.
 *
 * @since 0.4.0
 * @category migrations
 */
export const toSet = (client: Client, source: Pick<Source.Source, "id" | "migrations">): Migrations.MigrationSet => ({
  name: setName(source),
  migrations: (source.migrations ?? []).map((m): Migrations.Migration => {
    const store = (db: Parameters<typeof fromConnection>[0]) =>
      fromConnection(db, { id: client.id, dialect: client.dialect, table: client.table })
    return {
      name: m.name,
      up: (db) => Effect.runPromise(m.up(store(db))),
      down: (db) =>
        m.down
          ? Effect.runPromise(m.down(store(db)))
          : Promise.reject(new Error(`migration ${m.name} of source ${source.id} has no down`))
    }
  })
})

/**
 * Applies the pending migrations of every given source, in order (sources
 * without migrations are skipped). The report is keyed by {@link setName}.
 *
 * @since 0.4.0
 * @category migrations
 */
export const run = (
  sources: ReadonlyArray<Pick<Source.Source, "id" | "migrations">>
): Effect.Effect<Migrations.MigrationReport, BillingError.StoreError, KnexClient> =>
  Effect.gen(function*() {
    const client = yield* KnexClient
    const sets = sources.filter((s) => (s.migrations ?? []).length > 0).map((s) => toSet(client, s))
    return yield* Migrations.run(sets)
  })

/**
 * Rolls back every migration of the given sources, last source first.
 *
 * @since 0.4.0
 * @category migrations
 */
export const rollback = (
  sources: ReadonlyArray<Pick<Source.Source, "id" | "migrations">>
): Effect.Effect<void, BillingError.StoreError, KnexClient> =>
  Effect.gen(function*() {
    const client = yield* KnexClient
    const sets = sources.filter((s) => (s.migrations ?? []).length > 0).map((s) => toSet(client, s))
    return yield* Migrations.rollbackAll(sets)
  })
