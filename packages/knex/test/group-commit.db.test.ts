/**
 * Group commit (issue 11, item 3), on every target: concurrent top-level
 * transactions of one client run as savepointed items of one database
 * transaction, committed once.
 *
 * Each test holds a first transaction open on a gate (it is a batch of its
 * own), queues the items of the next batch behind it, then opens the gate:
 * those items run together, one after another, in one transaction (checked on
 * PostgreSQL and MySQL by the transaction id each item sees). The tests then
 * check who committed:
 *
 * - a failing, a dying and an interrupted item leave nothing; their neighbours commit;
 * - an item interrupted while it waits in the queue never runs, and the batch goes on;
 * - a failed COMMIT (a deferred constraint, checked only at COMMIT: PostgreSQL and
 *   SQLite; MySQL has none) fails every item of the batch with a `StoreError`, leaves
 *   nothing of it, and the callers can retry;
 * - a batch whose transaction is lost under it (the server rolled it back, as InnoDB
 *   does on a deadlock) runs again the items that had succeeded, and the others later;
 * - an item that outlives `itemTimeoutMillis` (the test clock) is rolled back to its
 *   savepoint and run again alone, and its neighbours are not held.
 */
import { assert, describe, layer } from "@effect/vitest"
import type { BillingError } from "@relay-billing/core"
import { Cause, Deferred, Effect, Exit, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import type { Knex } from "knex"
import { KnexClient, Migrations, TestDatabase } from "../src/index.js"

const tables = {
  name: "group-commit-test",
  migrations: [{
    name: "0001_gc",
    up: async (knex: Knex, { table }: Migrations.MigrationContext) => {
      await knex.schema.createTable(table("gc_rows"), (t) => {
        t.string("id", 64).primary()
      })
      await knex.schema.createTable(table("gc_parent"), (t) => {
        t.string("id", 64).primary()
      })
      const client = String(knex.client.config.client)
      if (client.includes("pg")) {
        // A constraint checked only at COMMIT: any row in gc_poison makes the COMMIT fail.
        await knex.schema.createTable(table("gc_poison"), (t) => {
          t.string("id", 64).primary()
        })
        await knex.raw(
          `create function ${table("gc_reject")}() returns trigger language plpgsql as
           $$ begin raise exception 'injected commit failure'; end $$`
        )
        await knex.raw(
          `create constraint trigger ${table("gc_poison_check")} after insert on ${table("gc_poison")}
           deferrable initially deferred for each row execute function ${table("gc_reject")}()`
        )
      } else if (client.includes("sqlite")) {
        // A deferred foreign key, checked at COMMIT (foreign keys are switched on by the test).
        await knex.raw(
          `create table ${table("gc_poison")} (id varchar(64) primary key, parent_id varchar(64)
           references ${table("gc_parent")}(id) deferrable initially deferred)`
        )
      }
    },
    down: async () => {}
  }]
} satisfies Migrations.MigrationSet

const ITEM_TIMEOUT = 50

const database = (target: TestDatabase.Target) =>
  Layer.effectDiscard(Migrations.run([tables])).pipe(
    Layer.provideMerge(TestDatabase.layer(target, { groupCommit: { itemTimeoutMillis: ITEM_TIMEOUT } }))
  )

const insert = (table: string, id: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    yield* client.query("t.insert", (db) => db(client.table(table)).insert({ id }))
  })

const present = (ids: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const rows = yield* client.query("t.read", (db) => db(client.table("gc_rows")).whereIn("id", [...ids]))
    return (rows as Array<{ id: string }>).map((r) => r.id).sort()
  })

/** The id of the database transaction the current item runs in (PostgreSQL, MySQL; SQLite: none). */
const transactionId = Effect.gen(function*() {
  const client = yield* KnexClient.KnexClient
  if (client.dialect === "postgres") {
    const r = yield* client.query("t.txid", (db) => db.raw("select txid_current() as id"))
    return String((r as { rows: Array<{ id: unknown }> }).rows[0]!.id)
  }
  if (client.dialect === "mysql") {
    const r = yield* client.query("t.txid", (db) =>
      db.raw(
        "select trx_id as id from information_schema.innodb_trx where trx_mysql_thread_id = connection_id()"
      ))
    return String((r as [Array<{ id: unknown }>])[0][0]!.id)
  }
  return "sqlite"
})

/** Starts `effect` on a child fiber that runs until it is queued (its first wait). */
const start = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.forkChild(effect, { startImmediately: true })

/**
 * Holds one transaction open until `release`: what is started meanwhile queues
 * behind it and runs as the next batch.
 */
const holdBatch = (id: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const inside = yield* Deferred.make<void>()
    const gate = yield* Deferred.make<void>()
    const fiber = yield* start(
      client.transaction(
        insert("gc_rows", id).pipe(
          Effect.andThen(Deferred.succeed(inside, undefined)),
          Effect.andThen(Deferred.await(gate))
        )
      )
    )
    yield* Deferred.await(inside)
    return {
      release: Effect.andThen(Deferred.succeed(gate, undefined), Fiber.join(fiber))
    }
  })

const isStoreError = (exit: Exit.Exit<unknown, unknown>, operation: string) =>
  Exit.isFailure(exit) &&
  Cause.findErrorOption(exit.cause).pipe((o) =>
    o._tag === "Some" && (o.value as BillingError.StoreError)._tag === "StoreError" &&
    (o.value as BillingError.StoreError).operation === operation
  )

for (const target of TestDatabase.targets()) {
  describe(`group commit on ${target.name}`, () => {
    layer(database(target), { timeout: 60_000 })((it) => {
      it.effect("one batch: a failing, a dying and an interrupted item leave nothing, their neighbours commit", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const first = yield* holdBatch("f-0")
          const running = yield* Deferred.make<void>()
          const ok1 = yield* start(client.transaction(Effect.andThen(insert("gc_rows", "f-ok1"), transactionId)))
          const failing = yield* start(
            client.transaction(insert("gc_rows", "f-fail").pipe(Effect.andThen(Effect.fail("boom" as const))))
          )
          const dying = yield* start(
            client.transaction(insert("gc_rows", "f-die").pipe(Effect.andThen(Effect.die(new Error("defect")))))
          )
          const interrupted = yield* start(
            client.transaction(
              insert("gc_rows", "f-int").pipe(
                Effect.andThen(Deferred.succeed(running, undefined)),
                Effect.andThen(Effect.never)
              )
            )
          )
          const ok2 = yield* start(client.transaction(Effect.andThen(insert("gc_rows", "f-ok2"), transactionId)))
          yield* first.release
          // The interrupted item is running inside the batch; interrupting it rolls it back.
          yield* Deferred.await(running)
          yield* Fiber.interrupt(interrupted)
          const [t1, t2] = [yield* Fiber.join(ok1), yield* Fiber.join(ok2)]
          assert.strictEqual(t1, t2, "the two neighbours ran in one database transaction")
          const failed = yield* Fiber.await(failing)
          assert.isTrue(Exit.isFailure(failed) && Cause.hasFails(failed.cause))
          const died = yield* Fiber.await(dying)
          assert.isTrue(Exit.isFailure(died) && Cause.hasDies(died.cause))
          const stopped = yield* Fiber.await(interrupted)
          assert.isTrue(Exit.isFailure(stopped) && Cause.hasInterrupts(stopped.cause))
          assert.deepStrictEqual(yield* present(["f-0", "f-ok1", "f-fail", "f-die", "f-int", "f-ok2"]), [
            "f-0",
            "f-ok1",
            "f-ok2"
          ])
        }))

      it.effect("an item interrupted while queued never runs; the batch goes on without it", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const first = yield* holdBatch("q-0")
          const ran = { queued: false }
          const queued = yield* start(client.transaction(Effect.andThen(
            Effect.sync(() => {
              ran.queued = true
            }),
            insert("gc_rows", "q-gone")
          )))
          const after = yield* start(client.transaction(insert("gc_rows", "q-ok")))
          yield* Fiber.interrupt(queued)
          yield* first.release
          yield* Fiber.join(after)
          assert.isFalse(ran.queued)
          assert.deepStrictEqual(yield* present(["q-0", "q-gone", "q-ok"]), ["q-0", "q-ok"])
          // The client is still usable, alone and in a batch.
          yield* client.transaction(insert("gc_rows", "q-next"))
          assert.deepStrictEqual(yield* present(["q-next"]), ["q-next"])
        }))

      it.effect("a nested transaction joins its item, and rolls back with it", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const first = yield* holdBatch("n-0")
          const nested = yield* start(client.transaction(Effect.gen(function*() {
            yield* insert("gc_rows", "n-outer")
            yield* client.transaction(insert("gc_rows", "n-inner"))
            return yield* Effect.fail("after the nested one" as const)
          })))
          const neighbour = yield* start(client.transaction(client.transaction(insert("gc_rows", "n-ok"))))
          yield* first.release
          assert.isTrue(Exit.isFailure(yield* Fiber.await(nested)))
          yield* Fiber.join(neighbour)
          assert.deepStrictEqual(yield* present(["n-0", "n-outer", "n-inner", "n-ok"]), ["n-0", "n-ok"])
        }))

      if (target.name !== "mysql") {
        it.effect("a failed COMMIT fails every item of the batch, commits nothing of it, and the callers can retry", () =>
          Effect.gen(function*() {
            const client = yield* KnexClient.KnexClient
            if (client.dialect === "sqlite") yield* client.query("t.fk", (db) => db.raw("pragma foreign_keys = on"))
            const first = yield* holdBatch("c-0")
            const a = yield* start(client.transaction(insert("gc_rows", "c-a")))
            // PostgreSQL: the trigger fires on any row; SQLite: a row whose parent does not exist.
            const poisonRow = client.dialect === "postgres" ? { id: "p" } : { id: "p", parent_id: "none" }
            const poison = yield* start(client.transaction(
              client.query("t.poison", (db) => db(client.table("gc_poison")).insert(poisonRow))
            ))
            const b = yield* start(client.transaction(insert("gc_rows", "c-b")))
            yield* first.release
            const exits = [yield* Fiber.await(a), yield* Fiber.await(poison), yield* Fiber.await(b)]
            for (const exit of exits) assert.isTrue(isStoreError(exit, "transaction.commit"), String(exit))
            assert.deepStrictEqual(yield* present(["c-0", "c-a", "c-b"]), ["c-0"])
            const poisoned = yield* client.query("t.read", (db) => db(client.table("gc_poison")))
            assert.strictEqual((poisoned as Array<unknown>).length, 0)
            // The callers retry without the poison: both commit, together.
            const again = yield* holdBatch("c-1")
            const ra = yield* start(client.transaction(Effect.andThen(insert("gc_rows", "c-a"), transactionId)))
            const rb = yield* start(client.transaction(Effect.andThen(insert("gc_rows", "c-b"), transactionId)))
            yield* again.release
            assert.strictEqual(yield* Fiber.join(ra), yield* Fiber.join(rb))
            assert.deepStrictEqual(yield* present(["c-0", "c-1", "c-a", "c-b"]), ["c-0", "c-1", "c-a", "c-b"])
          }))
      }

      it.effect("a batch whose transaction is lost (MySQL's deadlock rollback): the items that had succeeded run again, the rest wait their turn", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const first = yield* holdBatch("l-0")
          const runs = { before: 0, after: 0 }
          const before = yield* start(client.transaction(Effect.andThen(
            Effect.sync(() => runs.before++),
            insert("gc_rows", "l-before")
          )))
          // Ends the batch's transaction under everyone's feet, as InnoDB does on a deadlock,
          // then fails: its savepoint is gone, so the batch cannot go on.
          const loser = yield* start(client.transaction(Effect.gen(function*() {
            yield* insert("gc_rows", "l-loser")
            yield* client.query("t.rollback", (db) => db.raw("rollback"))
            return yield* Effect.fail("deadlock" as const)
          })))
          const after = yield* start(client.transaction(Effect.andThen(
            Effect.sync(() => runs.after++),
            insert("gc_rows", "l-after")
          )))
          yield* first.release
          assert.isTrue(Exit.isFailure(yield* Fiber.await(loser)))
          yield* Fiber.join(before)
          yield* Fiber.join(after)
          assert.deepStrictEqual(runs, { before: 2, after: 1 })
          assert.deepStrictEqual(yield* present(["l-0", "l-before", "l-loser", "l-after"]), [
            "l-0",
            "l-after",
            "l-before"
          ])
        }))

      it.effect("an item that outlives itemTimeoutMillis is rolled back and run again alone; its neighbours commit", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const first = yield* holdBatch("s-0")
          const stuck = yield* Deferred.make<void>()
          let attempts = 0
          const slow = yield* start(client.transaction(Effect.gen(function*() {
            attempts++
            yield* insert("gc_rows", `s-slow-${attempts}`)
            if (attempts === 1) {
              yield* Deferred.succeed(stuck, undefined)
              yield* Effect.never
            }
            return attempts
          })))
          const neighbour = yield* start(client.transaction(insert("gc_rows", "s-ok")))
          yield* first.release
          yield* Deferred.await(stuck)
          yield* TestClock.adjust(ITEM_TIMEOUT * 2)
          assert.strictEqual(yield* Fiber.join(slow), 2)
          yield* Fiber.join(neighbour)
          assert.deepStrictEqual(yield* present(["s-0", "s-slow-1", "s-slow-2", "s-ok"]), ["s-0", "s-ok", "s-slow-2"])
        }))
    })
  })
}
