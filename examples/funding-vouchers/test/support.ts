/**
 * Test support: the databases this run reaches, and an `SqlStore` over an isolated one.
 *
 * `knexSqlStore` is a stand-in until `@relay-billing/knex` ships its own `SqlStore`
 * layer (the "knexsrc" work of issue 10); the tests then take that one instead.
 */
import { Effect, Layer } from "effect"
import { SqlStore } from "@relay-billing/core"
import { KnexClient, TestDatabase } from "@relay-billing/knex"

/** Every database this run can reach (SQLite always; PostgreSQL/MySQL from the environment). */
export const targets = TestDatabase.targets()

const normalize = (dialect: SqlStore.Dialect, raw: any): SqlStore.SqlResult => {
  switch (dialect) {
    case "sqlite":
      return Array.isArray(raw) ? { rows: raw, affected: raw.length } : { rows: [], affected: Number(raw?.changes ?? 0) }
    case "postgres":
      return { rows: raw.rows ?? [], affected: Number(raw.rowCount ?? 0) }
    case "mysql": {
      const [result] = raw as [unknown]
      return Array.isArray(result)
        ? { rows: result as Array<Record<string, unknown>>, affected: result.length }
        : { rows: [], affected: Number((result as { affectedRows?: number }).affectedRows ?? 0) }
    }
  }
}

/** An `SqlStore` over the current `KnexClient` (its transaction when there is one). */
export const knexSqlStore = Layer.effect(
  SqlStore.SqlStore,
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    return SqlStore.SqlStore.of({
      id: client.id,
      dialect: client.dialect,
      table: client.table,
      execute: (operation, sql, params = []) =>
        Effect.map(client.query(operation, (db) => db.raw(sql, params as Array<any>)), (raw) => normalize(client.dialect, raw))
    })
  })
)

/** A fresh isolated database on `target` with an `SqlStore` over it (and its `KnexClient`). */
export const sqlStore = (target: TestDatabase.Target) => knexSqlStore.pipe(Layer.provideMerge(TestDatabase.layer(target)))
