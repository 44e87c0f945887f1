/**
 * Review of group commit (issue 11): a transaction whose body swallows a failed
 * statement. On PostgreSQL a failed statement aborts the whole database
 * transaction (every later statement fails with 25P02, and COMMIT answers
 * "ROLLBACK" without an error). With group commit that transaction is shared:
 * one item that catches a `StoreError` and succeeds (as `WalletAdmin.topUp`
 * does with a unique violation, and as a plugin or event publisher may) must
 * not make its neighbours report success for writes that were never committed,
 * nor fail them.
 *
 * Invariant checked: a caller told "success" finds its write committed; the
 * item that swallowed the error is failed with a `StoreError` (its writes
 * cannot be committed) and nothing of it is left.
 */
import { assert, describe, layer } from "@effect/vitest"
import type { BillingError } from "@relay-billing/core"
import { Cause, Deferred, Effect, Exit, Fiber, Layer } from "effect"
import type { Knex } from "knex"
import { KnexClient, Migrations, TestDatabase } from "../src/index.js"

const tables = {
  name: "group-commit-review",
  migrations: [{
    name: "0001_gcr",
    up: async (knex: Knex, { table }: Migrations.MigrationContext) => {
      await knex.schema.createTable(table("gcr_rows"), (t) => {
        t.string("id", 64).primary()
      })
    },
    down: async () => {}
  }]
} satisfies Migrations.MigrationSet

const insert = (id: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    yield* client.execute("t.insert", `insert into ${client.table("gcr_rows")} (id) values (?)`, [id])
  })

/** Inserts `id` again (a unique violation) and swallows the error, as a "replay" handler would. */
const swallowDuplicate = (id: string) => insert(id).pipe(Effect.catchTag("StoreError", () => Effect.void))

const present = (ids: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const rows = yield* client.query("t.read", (db) => db(client.table("gcr_rows")).whereIn("id", [...ids]))
    return (rows as Array<{ id: string }>).map((r) => r.id).sort()
  })

const start = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.forkChild(effect, { startImmediately: true })

/** Holds one transaction open until `release`: what starts meanwhile queues behind it as the next batch. */
const holdBatch = (id: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const inside = yield* Deferred.make<void>()
    const gate = yield* Deferred.make<void>()
    const fiber = yield* start(
      client.transaction(
        insert(id).pipe(Effect.andThen(Deferred.succeed(inside, undefined)), Effect.andThen(Deferred.await(gate)))
      )
    )
    yield* Deferred.await(inside)
    return { release: Effect.andThen(Deferred.succeed(gate, undefined), Fiber.join(fiber)) }
  })

const isStoreError = (exit: Exit.Exit<unknown, unknown>) =>
  Exit.isFailure(exit) &&
  Cause.findErrorOption(exit.cause).pipe((o) =>
    o._tag === "Some" && (o.value as BillingError.StoreError)._tag === "StoreError"
  )

const database = (target: TestDatabase.Target, groupCommit: boolean) =>
  Layer.effectDiscard(Migrations.run([tables])).pipe(
    Layer.provideMerge(TestDatabase.layer(target, { groupCommit }))
  )

for (const target of TestDatabase.targets()) {
  describe(`a transaction that swallows a failed statement, on ${target.name}`, () => {
    layer(database(target, true), { timeout: 60_000 })((it) => {
      it.effect("group commit: a neighbour BEFORE the swallowing item commits what it was told committed", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          yield* client.transaction(insert("b-dup"))
          const first = yield* holdBatch("b-0")
          const innocent = yield* start(client.transaction(insert("b-ok")))
          const swallower = yield* start(client.transaction(
            Effect.andThen(insert("b-mine"), swallowDuplicate("b-dup"))
          ))
          yield* first.release
          const ok = yield* Fiber.await(innocent)
          const bad = yield* Fiber.await(swallower)
          const rows = yield* present(["b-ok", "b-mine"])
          // Whoever was told success finds its row.
          if (Exit.isSuccess(ok)) assert.include(rows, "b-ok", "told committed, but its row is not there")
          if (Exit.isSuccess(bad)) assert.include(rows, "b-mine", "told committed, but its row is not there")
          // The innocent neighbour is not failed by the other's swallowed error.
          assert.isTrue(Exit.isSuccess(ok), `the innocent neighbour failed: ${String(ok)}`)
          if (client.dialect === "postgres") {
            // Its transaction was aborted: it cannot have committed, and must say so.
            assert.isTrue(isStoreError(bad), String(bad))
          }
        }))

      it.effect("group commit: a neighbour AFTER the swallowing item is not failed by it", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          yield* client.transaction(insert("a-dup"))
          const first = yield* holdBatch("a-0")
          const swallower = yield* start(client.transaction(
            Effect.andThen(insert("a-mine"), swallowDuplicate("a-dup"))
          ))
          const innocent = yield* start(client.transaction(insert("a-ok")))
          yield* first.release
          const ok = yield* Fiber.await(innocent)
          const bad = yield* Fiber.await(swallower)
          const rows = yield* present(["a-ok", "a-mine"])
          if (Exit.isSuccess(ok)) assert.include(rows, "a-ok", "told committed, but its row is not there")
          if (Exit.isSuccess(bad)) assert.include(rows, "a-mine", "told committed, but its row is not there")
          assert.isTrue(Exit.isSuccess(ok), `the innocent neighbour failed: ${String(ok)}`)
          if (client.dialect === "postgres") assert.isTrue(isStoreError(bad), String(bad))
        }))

      it.effect("group commit: an item that ends the transaction under its neighbours and succeeds is failed; the neighbours' writes are not lost", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const first = yield* holdBatch("r-0")
          const innocent = yield* start(client.transaction(insert("r-ok")))
          // As SQLite does on RAISE(ROLLBACK) or a full disk, under code that caught the error.
          const ender = yield* start(client.transaction(Effect.gen(function*() {
            yield* insert("r-mine")
            yield* client.query("t.rollback", (db) => db.raw("rollback"))
            // MySQL: InnoDB's deadlock rollback comes with a failed statement (caught here).
            if (client.dialect === "mysql") yield* swallowDuplicate("r-0")
            // Its code goes on: this write must not commit on its own (autocommit) — refused.
            yield* insert("r-mine-2").pipe(Effect.catchTag("StoreError", () => Effect.void))
            yield* client.query("t.insert", (db) => db(client.table("gcr_rows")).insert({ id: "r-mine-3" })).pipe(
              Effect.catchTag("StoreError", () => Effect.void)
            )
          })))
          const after = yield* start(client.transaction(insert("r-after")))
          yield* first.release
          const exits = {
            ok: yield* Fiber.await(innocent),
            bad: yield* Fiber.await(ender),
            after: yield* Fiber.await(after)
          }
          const rows = yield* present(["r-ok", "r-mine", "r-mine-2", "r-mine-3", "r-after"])
          if (Exit.isSuccess(exits.ok)) assert.include(rows, "r-ok", "told committed, but its row is not there")
          if (Exit.isSuccess(exits.after)) assert.include(rows, "r-after", "told committed, but its row is not there")
          assert.isTrue(Exit.isSuccess(exits.ok), `the innocent neighbour failed: ${String(exits.ok)}`)
          assert.isTrue(Exit.isSuccess(exits.after), `the neighbour after it failed: ${String(exits.after)}`)
          assert.isTrue(isStoreError(exits.bad), String(exits.bad))
          assert.notInclude(rows, "r-mine")
          assert.notInclude(rows, "r-mine-2", "a write after the transaction ended committed on its own")
          assert.notInclude(rows, "r-mine-3", "a write after the transaction ended committed on its own")
        }))
    })

    layer(database(target, false), { timeout: 60_000 })((it) => {
      it.effect("without group commit: success is never reported for a transaction that did not commit", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          yield* client.transaction(insert("s-dup"))
          const exit = yield* Effect.exit(client.transaction(
            Effect.andThen(insert("s-mine"), swallowDuplicate("s-dup"))
          ))
          const rows = yield* present(["s-mine"])
          if (Exit.isSuccess(exit)) assert.include(rows, "s-mine", "told committed, but its row is not there")
          if (client.dialect === "postgres") assert.isTrue(isStoreError(exit), String(exit))
        }))
    })
  })
}
