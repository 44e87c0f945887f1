/**
 * Review of the driver-level executor (issue 11): statements stay prepared per
 * connection, so a schema change made while the client is live (a migration
 * run by a newer instance of the relay, a column added to a plugin's table)
 * must not leave the prepared statements of this client failing. PostgreSQL
 * refuses to run a prepared `select *` whose result columns changed ("cached
 * plan must not change result type"); the subscription source reads with
 * `select *`. The statement is renamed on its connection and the transaction
 * run again, like a deadlock.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { KnexClient, TestDatabase } from "../src/index.js"

for (const target of TestDatabase.targets()) {
  describe(`a schema change while the client is live, on ${target.name}`, () => {
    // One connection: the statement prepared before the change is the one used after it.
    layer(TestDatabase.layer(target, { poolMax: 1 }), { timeout: 60_000 })((it) => {
      it.effect("a prepared select * still runs after a column is added to its table", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const table = client.table("review_live_schema")
          yield* client.query("t.create", (db) =>
            db.schema.createTable(table, (t) => {
              t.string("id", 64).primary()
              t.integer("n").notNullable()
            }))
          yield* client.query("t.seed", (db) => db(table).insert({ id: "a", n: 1 }))
          const read = client.transaction(client.execute("t.read", `select * from ${table} where id = ?`, ["a"]))
          const before = yield* read
          assert.deepStrictEqual(before.rows.map((r) => Number(r["n"])), [1])
          // A migration of a newer version, run while this client is serving.
          yield* client.query("t.alter", (db) =>
            db.schema.alterTable(table, (t) => {
              t.integer("m").nullable()
            }))
          // PostgreSQL: the first run is refused and the transaction runs again (after the retry's delay).
          const fiber = yield* Effect.forkChild(read)
          // Moves the test clock on until the retried transaction ends (its first run waits on I/O).
          while (fiber.pollUnsafe() === undefined) {
            yield* TestClock.adjust("100 millis")
            yield* Effect.yieldNow
          }
          const after = yield* Fiber.join(fiber)
          assert.deepStrictEqual(after.rows.map((r) => Number(r["n"])), [1])
          assert.property(after.rows[0], "m")
        }))
    })
  })
}
