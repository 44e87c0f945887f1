import { assert, describe, layer } from "@effect/vitest"
import type { Hold } from "@relay-billing/core"
import { BillingError, HoldJournal, Ledger } from "@relay-billing/core"
import { Deferred, Effect, Exit, Fiber, Layer } from "effect"
import type { Knex } from "knex"
import { KnexBilling, KnexClient, KnexLedger, Migrations, TestDatabase } from "../src/index.js"

const probe = {
  name: "probe",
  migrations: [{
    name: "0001_probe",
    up: async (knex: Knex, { table }: Migrations.MigrationContext) => {
      await knex.schema.createTable(table("probe"), (t) => {
        t.string("id", 64).primary()
        t.bigInteger("n").notNullable()
      })
    },
    down: async (knex: Knex, { table }: Migrations.MigrationContext) => {
      await knex.schema.dropTableIfExists(table("probe"))
    }
  }]
} satisfies Migrations.MigrationSet

const sets = [KnexBilling.migrations, probe]

const database = (target: TestDatabase.Target) =>
  Layer.mergeAll(KnexBilling.layer).pipe(
    Layer.provideMerge(Layer.effectDiscard(Migrations.run(sets))),
    Layer.provideMerge(TestDatabase.layer(target))
  )

const count = (id: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const rows = yield* client.query("t.count", (db) => db(client.table("probe")).where({ id }))
    return rows.length
  })

const insert = (id: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    yield* client.query("t.insert", (db) => db(client.table("probe")).insert({ id, n: 1 }))
  })

const hold = (id: string, expiresAt: number, status: Hold.HoldStatus = "pending"): Hold.Hold => ({
  id,
  accountId: "acct",
  estimate: 10 as never,
  reserved: 10 as never,
  preference: "wallet_only",
  trusted: false,
  status,
  parts: [{ kind: "funding", sourceId: "wallet", subjectId: "acct", amount: 10 as never }],
  createdAt: 1,
  expiresAt
})

for (const target of TestDatabase.targets()) {
  describe(`knex on ${target.name}`, () => {
    layer(database(target), { timeout: 60_000 })((it) => {
      it.effect("a transaction commits on success", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          yield* client.transaction(insert("commit-1"))
          assert.strictEqual(yield* count("commit-1"), 1)
        }))

      it.effect("a transaction rolls back on a failure, a defect and an interruption", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const failed = yield* Effect.exit(
            client.transaction(insert("rb-fail").pipe(Effect.andThen(Effect.fail("boom"))))
          )
          assert.isTrue(Exit.isFailure(failed))
          const died = yield* Effect.exit(
            client.transaction(insert("rb-die").pipe(Effect.andThen(Effect.die(new Error("defect")))))
          )
          assert.isTrue(Exit.isFailure(died))
          const inside = yield* Deferred.make<void>()
          const fiber = yield* Effect.forkChild(
            client.transaction(
              insert("rb-int").pipe(Effect.andThen(Deferred.succeed(inside, undefined)), Effect.andThen(Effect.never))
            )
          )
          yield* Deferred.await(inside)
          yield* Fiber.interrupt(fiber)
          for (const id of ["rb-fail", "rb-die", "rb-int"]) assert.strictEqual(yield* count(id), 0, id)
        }))

      it.effect("nested transactions join the outer one (an inner write rolls back with it)", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const exit = yield* Effect.exit(client.transaction(Effect.gen(function*() {
            yield* client.transaction(insert("nested-1"))
            assert.isTrue(yield* client.inTransaction)
            return yield* Effect.fail("outer fails")
          })))
          assert.isTrue(Exit.isFailure(exit))
          assert.strictEqual(yield* count("nested-1"), 0)
          assert.isFalse(yield* client.inTransaction)
        }))

      it.effect("a driver error is a StoreError naming the operation", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const error = yield* Effect.flip(client.query("t.bad", (db) => db.raw("select * from no_such_table_xyz")))
          assert.instanceOf(error, BillingError.StoreError)
          assert.strictEqual(error.operation, "t.bad")
          assert.strictEqual(error.code, "billing_store_error")
        }))

      if (target.name === "sqlite") {
        it.effect("SQLite keeps its temporary files (group commit's savepoint sub-journal) in memory", () =>
          Effect.gen(function*() {
            const client = yield* KnexClient.KnexClient
            const rows = yield* client.query("t.pragma", (db) => db.raw("pragma temp_store"))
            // 2 = MEMORY (the default, 0, writes the sub-journal to a temporary file).
            assert.deepStrictEqual(rows, [{ temp_store: 2 }])
          }))
      }

      it.effect("migrations run once: a second run applies nothing", () =>
        Effect.gen(function*() {
          const again = yield* Migrations.run(sets)
          assert.deepStrictEqual(again, { knex: [], probe: [] })
        }))

      it.effect("journal: insert once, CAS update on status, expired oldest first, list by account", () =>
        Effect.gen(function*() {
          const journal = yield* HoldJournal.HoldJournal
          assert.isTrue(yield* journal.insert(hold("j1", 100)))
          assert.isFalse(yield* journal.insert(hold("j1", 999)))
          assert.isTrue(yield* journal.insert(hold("j2", 50)))
          assert.isTrue(yield* journal.insert(hold("j3", 5000)))
          assert.deepStrictEqual((yield* journal.get("j1"))?.expiresAt, 100)
          assert.deepStrictEqual(yield* journal.expired(1000, 10), ["j2", "j1"])
          assert.deepStrictEqual(yield* journal.expired(1000, 1), ["j2"])
          assert.isTrue(yield* journal.update({ ...hold("j1", 100), status: "refunded", resolvedAt: 7 }, "pending"))
          assert.isFalse(yield* journal.update({ ...hold("j1", 100), status: "settled" }, "pending"))
          const j1 = yield* journal.get("j1", { forUpdate: true })
          assert.strictEqual(j1?.status, "refunded")
          assert.strictEqual(j1?.resolvedAt, 7)
          assert.deepStrictEqual(j1?.parts, hold("j1", 100).parts)
          assert.deepStrictEqual(yield* journal.expired(1000, 10), ["j2"])
          assert.strictEqual((yield* journal.list({ accountId: "acct", status: "pending" })).length, 2)
          assert.isUndefined(yield* journal.get("nope"))
        }))

      it.effect("ledger: append in order, filter, and an idempotency key is unique", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const ledger = yield* Ledger.Ledger
          const row = {
            at: 1,
            kind: "topup" as const,
            sourceId: "wallet",
            subjectId: "L1",
            accountId: "L1",
            amount: 5,
            balanceAfter: 5
          }
          yield* ledger.append([row, { ...row, amount: -2, balanceAfter: 3, kind: "reserve", holdId: "h" }])
          const entries = yield* ledger.entries({ accountId: "L1" })
          assert.deepStrictEqual(entries.map((e) => [e.kind, e.amount, e.balanceAfter]), [["topup", 5, 5], [
            "reserve",
            -2,
            3
          ]])
          assert.strictEqual((yield* ledger.entries({ holdId: "h" })).length, 1)
          assert.strictEqual(Ledger.sum(entries), 3)
          yield* KnexLedger.append(client, [{ ...row, idempotencyKey: "k1" }])
          const dup = yield* Effect.flip(KnexLedger.append(client, [{ ...row, idempotencyKey: "k1" }]))
          assert.strictEqual(dup._tag, "StoreError")
        }))
    })
  })
}
