/**
 * The knex package's migrations and its core services in one place.
 *
 * @since 0.1.0
 */
import { Layer } from "effect"
import type { HoldJournal, Ledger, SqlStore } from "@relay-billing/core"
import { knexMigrations } from "./internal/schema.js"
import type { KnexClient } from "./KnexClient.js"
import * as KnexJournal from "./KnexJournal.js"
import * as KnexLedger from "./KnexLedger.js"
import * as KnexSqlStore from "./KnexSqlStore.js"
import type { MigrationSet } from "./Migrations.js"

/**
 * The migrations of the holds, hold parts and ledger tables.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrations: MigrationSet = knexMigrations

/**
 * `HoldJournal`, `Ledger` and the `SqlStore` executor (for sources in the
 * hold's store) over the knex client.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<HoldJournal.HoldJournal | Ledger.Ledger | SqlStore.SqlStore, never, KnexClient> =
  Layer.mergeAll(
    KnexJournal.layer,
    KnexLedger.layer,
    KnexSqlStore.layer
  )
