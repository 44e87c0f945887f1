/**
 * Test support: the databases this run reaches, and an `SqlStore` (with its
 * `KnexClient`) over an isolated one.
 */
import { KnexSqlStore, TestDatabase } from "@relay-billing/knex"
import { Layer } from "effect"

/** Every database this run can reach (SQLite always; PostgreSQL/MySQL from the environment). */
export const targets = TestDatabase.targets()

/** A fresh isolated database on `target` with the knex `SqlStore` over it (and its `KnexClient`). */
export const sqlStore = (target: TestDatabase.Target) =>
  KnexSqlStore.layer.pipe(Layer.provideMerge(TestDatabase.layer(target)))
