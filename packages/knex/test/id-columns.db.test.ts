/**
 * Issue 8 #2: `IdColumns` declares id columns that compare byte for byte on every
 * database (a binary NO PAD collation on MySQL/MariaDB), for tables created from
 * now on; `makeBinary` converts the columns of an existing table.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect } from "effect"
import type { Knex } from "knex"
import { IdColumns, KnexClient, Migrations, TestDatabase } from "../src/index.js"

const ids = ["abc", "ABC", "abc ", "Abc", "é", "e", "e "]

const probe: Migrations.MigrationSet = {
  name: "idprobe",
  migrations: [{
    name: "0001_new_table",
    up: async (knex: Knex, context: Migrations.MigrationContext) => {
      const columns = await IdColumns.prepare(knex, context)
      await knex.schema.createTable(context.table("fresh"), (t) => {
        columns.id(t, "id").primary()
        columns.id(t, "key", 64).notNullable().unique()
      })
      // The old way: a plain varchar (the server's default collation), converted afterwards.
      await knex.schema.createTable(context.table("converted"), (t) => {
        t.string("id", 191).primary()
        t.string("other", 191).nullable()
      })
    },
    down: async (knex: Knex, { table }: Migrations.MigrationContext) => {
      await knex.schema.dropTableIfExists(table("fresh"))
      await knex.schema.dropTableIfExists(table("converted"))
    }
  }, {
    name: "0002_convert",
    up: (knex: Knex, context: Migrations.MigrationContext) =>
      IdColumns.makeBinary(knex, context, [
        { table: context.table("converted"), column: "id", length: 191, nullable: false },
        { table: context.table("converted"), column: "other", length: 191, nullable: true }
      ]),
    down: async () => {}
  }]
}

for (const target of TestDatabase.targets()) {
  describe(`IdColumns on ${target.name}`, () => {
    layer(TestDatabase.layer(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #2: ids differing only by case, a trailing space or an accent are distinct keys and match only themselves", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          yield* Migrations.run([probe])
          const collation = yield* Effect.promise(() => IdColumns.binaryCollation(client.knex, client.dialect))
          if (target.name === "mysql") assert.include(IdColumns.binaryCollations, collation)
          else assert.isUndefined(collation)
          for (const table of ["fresh", "converted"]) {
            for (const id of ids) {
              yield* client.query(
                "insert",
                (db) => db(client.table(table)).insert(table === "fresh" ? { id, key: `k-${id}` } : { id, other: id })
              )
            }
            for (const id of ids) {
              const rows = yield* client.query("select", (db) => db(client.table(table)).where({ id }).select("id"))
              assert.deepStrictEqual(rows.map((r: { id: string }) => r.id), [id], `${table}: ${JSON.stringify(id)}`)
            }
          }
          const other = yield* client.query(
            "select.other",
            (db) => db(client.table("converted")).where({ other: "abc " }).select("id")
          )
          assert.deepStrictEqual(other.map((r: { id: string }) => r.id), ["abc "])
        }))
    })
  })
}
