import { assert, describe, layer } from "@effect/vitest"
import { SqlStore } from "@relay-billing/core"
import type { Source } from "@relay-billing/core"
import { Effect, Exit, Layer } from "effect"
import { KnexBilling, KnexClient, Migrations, SourceMigrations, TestDatabase } from "../src/index.js"

// A plugin-style source that only declares its table, written against the SqlStore executor.
const counters: Pick<Source.Source, "id" | "migrations"> = {
  id: "counters",
  migrations: [{
    name: "0001_counters",
    up: (sql) =>
      sql.execute(
        "counters.create",
        `create table ${sql.table("counters")} (id varchar(64) primary key, n bigint not null)`
      ),
    down: (sql) => sql.execute("counters.drop", `drop table ${sql.table("counters")}`)
  }]
}

const database = (target: TestDatabase.Target) =>
  KnexBilling.layer.pipe(
    Layer.provideMerge(Layer.effectDiscard(Migrations.run([KnexBilling.migrations]))),
    Layer.provideMerge(TestDatabase.layer(target))
  )

const num = (v: unknown) => Number(v)

for (const target of TestDatabase.targets()) {
  describe(`KnexSqlStore on ${target.name}`, () => {
    layer(database(target), { timeout: 60_000 })((it) => {
      it.effect("runs a source's migrations once, in its own migrations table", () =>
        Effect.gen(function*() {
          const first = yield* SourceMigrations.run([counters, { id: "none" }])
          assert.deepStrictEqual(first, { source_counters: ["0001_counters"] })
          const again = yield* SourceMigrations.run([counters])
          assert.deepStrictEqual(again, { source_counters: [] })
          const client = yield* KnexClient.KnexClient
          assert.isTrue(
            yield* client.query("t", (db) => db.schema.hasTable(client.table("source_counters_migrations")))
          )
        }))

      it.effect("identity, dialect and prefix are the client's", () =>
        Effect.gen(function*() {
          const sql = yield* SqlStore.SqlStore
          const client = yield* KnexClient.KnexClient
          assert.strictEqual(sql.id, client.id)
          assert.strictEqual(sql.dialect, target.name)
          assert.strictEqual(sql.table("counters"), "billing_counters")
        }))

      it.effect("answers affected rows for writes and rows for reads", () =>
        Effect.gen(function*() {
          const sql = yield* SqlStore.SqlStore
          const t = sql.table("counters")
          const inserted = yield* sql.execute("t.insert", `insert into ${t} (id, n) values (?, ?), (?, ?)`, [
            "a",
            1,
            "b",
            2
          ])
          assert.strictEqual(inserted.affected, 2)
          const updated = yield* sql.execute("t.update", `update ${t} set n = n + ? where n >= ?`, [10, 2])
          assert.strictEqual(updated.affected, 1)
          const none = yield* sql.execute("t.update", `update ${t} set n = n + ? where id = ?`, [1, "missing"])
          assert.strictEqual(none.affected, 0)
          const read = yield* sql.execute("t.select", `select id, n from ${t} order by id`)
          assert.deepStrictEqual(read.rows.map((r) => [r["id"], num(r["n"])]), [["a", 1], ["b", 12]])
          if (sql.dialect !== "mysql") {
            const returned = yield* sql.execute("t.returning", `update ${t} set n = n - ? where id = ? returning n`, [
              5,
              "b"
            ])
            assert.deepStrictEqual(returned.rows.map((r) => num(r["n"])), [7])
            assert.strictEqual(returned.affected, 1)
          }
          yield* sql.execute("t.cleanup", `delete from ${t}`)
        }))

      it.effect("runs inside the client's current transaction (rolled back with it)", () =>
        Effect.gen(function*() {
          const sql = yield* SqlStore.SqlStore
          const client = yield* KnexClient.KnexClient
          const t = sql.table("counters")
          const exit = yield* Effect.exit(client.transaction(Effect.gen(function*() {
            yield* sql.execute("t.insert", `insert into ${t} (id, n) values (?, ?)`, ["tx", 1])
            const inside = yield* sql.execute("t.select", `select n from ${t} where id = ?`, ["tx"])
            assert.strictEqual(inside.rows.length, 1)
            return yield* Effect.fail("abort" as const)
          })))
          assert.isTrue(Exit.isFailure(exit))
          const after = yield* sql.execute("t.select", `select n from ${t} where id = ?`, ["tx"])
          assert.strictEqual(after.rows.length, 0)
        }))

      it.effect("a failing statement is a StoreError naming the operation", () =>
        Effect.gen(function*() {
          const sql = yield* SqlStore.SqlStore
          const error = yield* Effect.flip(sql.execute("t.broken", "select * from no_such_table_here"))
          assert.strictEqual(error._tag, "StoreError")
          assert.strictEqual(error.operation, "t.broken")
        }))

      it.effect("rolls a source's migrations back", () =>
        Effect.gen(function*() {
          yield* SourceMigrations.rollback([counters])
          const client = yield* KnexClient.KnexClient
          assert.isFalse(yield* client.query("t", (db) => db.schema.hasTable(client.table("counters"))))
          assert.deepStrictEqual(yield* SourceMigrations.run([counters]), { source_counters: ["0001_counters"] })
        }))
    })
  })
}
