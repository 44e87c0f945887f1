/**
 * `SettlementRecorder` (issue 9 #9): the host's record of a settlement is
 * written inside the settle's transaction, on every target. A settle writes
 * exactly one record (A = 0 too); a replay writes none; a settle that rolls
 * back (its record failed, or a later step of its transaction failed) leaves
 * the hold pending and writes none; a recorder over another store is refused
 * when the engine is built.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { BillingError, BillingSession, BillingSettler, SettlementRecorder } from "@relay-billing/core"
import { KnexClient, Migrations } from "@relay-billing/knex"
import { Effect, Exit, Layer } from "effect"
import type { Knex } from "knex"
import { Wallet, WalletAdmin } from "../src/index.js"
import { migratedClient, targets } from "./support.js"

const records = {
  name: "recorder-probe",
  migrations: [{
    name: "0001_records",
    up: async (knex: Knex, { table }: Migrations.MigrationContext) => {
      await knex.schema.createTable(table("records"), (t) => {
        t.string("hold_id", 191).primary()
        t.bigInteger("actual").notNullable()
        t.string("note", 191).nullable()
      })
    },
    down: async (knex: Knex, { table }: Migrations.MigrationContext) => {
      await knex.schema.dropTableIfExists(table("records"))
    }
  }]
} satisfies Migrations.MigrationSet

/** Hold ids whose record write fails (a fault between the settle and its record). */
const failing = new Set<string>()

const recorder = Layer.effect(
  SettlementRecorder.SettlementRecorder,
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    return {
      storeId: client.id,
      record: (hold, settlement) =>
        failing.has(hold.id)
          ? Effect.fail(new BillingError.StoreError({ operation: "test.record", detail: `injected for ${hold.id}` }))
          : client.query("test.record", (db) =>
            db(client.table("records")).insert({
              hold_id: hold.id,
              actual: settlement.actual,
              note: settlement.metadata?.["note"] ?? null
            })).pipe(Effect.asVoid)
    }
  })
)

const database = (target: (typeof targets)[number]) =>
  Layer.effectDiscard(Migrations.run([records])).pipe(Layer.provideMerge(migratedClient(target)))

const rowsOf = (holdId: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    return (yield* client.query("test.rows", (db) => db(client.table("records")).where({ hold_id: holdId }))) as Array<
      { readonly actual: number | string; readonly note: string | null }
    >
  })

let seq = 0
const fresh = (label: string) => `rec-${label}-${process.pid}-${++seq}`

const funded = (accountId: string) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    yield* admin.createAccount({ id: accountId, balance: 1_000 })
  })

for (const target of targets) {
  describe(`SettlementRecorder on ${target.name}`, () => {
    layer(
      Wallet.layer().pipe(Layer.provide(recorder), Layer.provideMerge(database(target))),
      { timeout: 60_000 }
    )((it) => {
      it.effect("a settle writes one record with its metadata, in its transaction; a replay writes none; A = 0 too", () =>
        Effect.gen(function*() {
          const session = yield* BillingSession.BillingSession
          const accountId = fresh("acc")
          yield* funded(accountId)
          const holdId = fresh("hold")
          const s = yield* session.open({ holdId, accountId, estimate: 100, preference: "wallet_only" })
          const settled = yield* s.settle(40, { metadata: { note: "first" } })
          assert.deepStrictEqual(settled.metadata, { note: "first" })
          assert.deepStrictEqual((yield* rowsOf(holdId)).map((r) => [Number(r.actual), r.note]), [[40, "first"]])
          // replays (same amount, another amount, through the session): the first settlement, no second row
          assert.strictEqual((yield* s.settle(40, { metadata: { note: "replay" } })).metadata?.["note"], "first")
          yield* session.settle(holdId, 40)
          assert.strictEqual((yield* rowsOf(holdId)).length, 1)
          // A = 0 is a settlement too
          const zero = fresh("zero")
          const z = yield* session.open({ holdId: zero, accountId, estimate: 10, preference: "wallet_only" })
          yield* z.settle(0)
          assert.deepStrictEqual((yield* rowsOf(zero)).map((r) => Number(r.actual)), [0])
          // a refunded hold has no record
          const refunded = fresh("refund")
          const r = yield* session.open({ holdId: refunded, accountId, estimate: 10, preference: "wallet_only" })
          yield* r.refund
          assert.strictEqual((yield* rowsOf(refunded)).length, 0)
        }))

      it.effect("a failed record rolls the settle back: the hold stays pending, nothing is charged, no record; a retry records once", () =>
        Effect.gen(function*() {
          const session = yield* BillingSession.BillingSession
          const admin = yield* WalletAdmin.WalletAdmin
          const accountId = fresh("acc")
          yield* funded(accountId)
          const holdId = fresh("fault")
          const s = yield* session.open({ holdId, accountId, estimate: 100, preference: "wallet_only" })
          failing.add(holdId)
          const exit = yield* Effect.exit(s.settle(70))
          assert.isTrue(Exit.isFailure(exit))
          assert.strictEqual((yield* session.get(holdId)).status, "pending")
          assert.strictEqual((yield* rowsOf(holdId)).length, 0)
          const account = yield* admin.account(accountId)
          assert.strictEqual(account.balance, 900)
          assert.strictEqual(account.usedQuota, 0)
          failing.delete(holdId)
          yield* s.settle(70)
          assert.strictEqual((yield* rowsOf(holdId)).length, 1)
          assert.strictEqual((yield* admin.account(accountId)).balance, 930)
        }))

      it.effect("withBilling passes its metadata, read after the work computed it, to the settle", () =>
        Effect.gen(function*() {
          const session = yield* BillingSession.BillingSession
          const accountId = fresh("acc")
          yield* funded(accountId)
          const holdId = fresh("with")
          let note = "unset"
          yield* BillingSettler.withBilling(
            session.open({ holdId, accountId, estimate: 100, preference: "wallet_only" }),
            () => Effect.sync(() => (note = "computed", { value: undefined, cost: 12 })),
            { metadata: Effect.sync(() => ({ note })) }
          )
          assert.deepStrictEqual((yield* rowsOf(holdId)).map((r) => [Number(r.actual), r.note]), [[12, "computed"]])
        }))

      it.effect("settle metadata is decoded: a non-string value is InvalidInput naming it, nothing changes", () =>
        Effect.gen(function*() {
          const session = yield* BillingSession.BillingSession
          const accountId = fresh("acc")
          yield* funded(accountId)
          const holdId = fresh("bad")
          yield* session.open({ holdId, accountId, estimate: 100, preference: "wallet_only" })
          const error = yield* Effect.flip(session.settle(holdId, 5, { metadata: { n: 5 as never } }))
          assert.strictEqual(error._tag, "InvalidInput")
          assert.strictEqual((error as BillingError.InvalidInput).field, "metadata.n")
          assert.strictEqual((yield* session.get(holdId)).status, "pending")
        }))
    })

    it.effect("a recorder over another store is refused when the engine is built", () =>
      Effect.gen(function*() {
        const other = SettlementRecorder.layer({ storeId: "elsewhere", record: () => Effect.void })
        const error = yield* Effect.flip(
          Layer.build(Wallet.layer().pipe(Layer.provide(other), Layer.provide(database(target))))
        )
        assert.strictEqual(error._tag, "InvalidInput")
        assert.strictEqual((error as BillingError.InvalidInput).field, "SettlementRecorder.storeId")
      }).pipe(Effect.scoped), 60_000)
  })
}
