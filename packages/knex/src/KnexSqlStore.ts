/**
 * The core `SqlStore` over the knex client: what a source in the hold's store
 * sees. Statements are plain SQL with `?` placeholders run by the client's
 * `execute`: on the driver connection of the current transaction when there is
 * one (the engine's, during `take` and `move`; prepared once per connection),
 * otherwise through knex; the answer is normalised across the drivers (rows of
 * a `SELECT` or `RETURNING`, rows changed).
 *
 * @since 0.4.0
 */
import { BillingError, SqlStore } from "@relay-billing/core"
import { Effect, Layer } from "effect"
import type { Knex } from "knex"
import { sqlResult } from "./internal/result.js"
import type { Client } from "./KnexClient.js"
import { KnexClient } from "./KnexClient.js"

/**
 * The executor over a client: `id`, `dialect` and `table` are the client's.
 *
 * @since 0.4.0
 * @category constructors
 */
export const make = (client: Client): SqlStore.SqlStore["Service"] =>
  SqlStore.SqlStore.of({
    id: client.id,
    dialect: client.dialect,
    table: client.table,
    execute: client.execute
  })

/**
 * An executor over one knex connection or transaction, outside the client's
 * transaction tracking (a migration's own transaction, for example).
 *
 * @since 0.4.0
 * @category constructors
 */
export const fromConnection = (
  db: Knex | Knex.Transaction,
  store: { readonly id: string; readonly dialect: Client["dialect"]; readonly table: (name: string) => string }
): SqlStore.SqlStore["Service"] =>
  SqlStore.SqlStore.of({
    id: store.id,
    dialect: store.dialect,
    table: store.table,
    execute: (operation, sql, params = []) =>
      Effect.tryPromise({
        try: async () => sqlResult(store.dialect, await db.raw(sql, params as ReadonlyArray<Knex.Value>)),
        catch: (cause) =>
          new BillingError.StoreError({
            operation,
            detail: cause instanceof Error ? cause.message : String(cause),
            cause
          })
      })
  })

/**
 * `SqlStore` over the knex client in context.
 *
 * @since 0.4.0
 * @category layers
 */
export const layer: Layer.Layer<SqlStore.SqlStore, never, KnexClient> = Layer.effect(
  SqlStore.SqlStore,
  Effect.gen(function*() {
    return make(yield* KnexClient)
  })
)
