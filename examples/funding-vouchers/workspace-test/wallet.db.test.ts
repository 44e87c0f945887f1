/**
 * Vouchers beside the knex wallet in one knex store, through the engine, on
 * every database target: the chain ["vouchers", "wallet"] draws the pack first
 * (open 3,000 + settle 4,000 take 4,000 from a pack of 10,000 and leave the
 * wallet alone), falls through to the wallet when the pack has expired or has
 * not enough room, and a refund gives the pack back. The ledger agrees with the
 * pack table and the wallet, and the knex audit is clean.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession, Ledger, SqlStore } from "@relay-billing/core"
import { Accounts, Audit, KnexBilling, Migrations, SourceMigrations, TestDatabase } from "@relay-billing/knex"
import { TokenBudget, Wallet, WalletAdmin, WalletSource } from "@relay-billing/wallet"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { addPack, plugin } from "../src/index.js"

const vouchers = plugin.make({ id: "vouchers", table: "vouchers" })
const chain = ["vouchers", "wallet"]
const DAY = 86_400_000

/** One knex store (isolated, migrated: the SDK's tables and the vouchers table) with the engine over it. */
const billing = (target: TestDatabase.Target) => {
  const migrated = Layer.effectDiscard(
    Effect.andThen(Migrations.run(Wallet.allMigrations), SourceMigrations.run([vouchers]))
  ).pipe(Layer.provideMerge(TestDatabase.layer(target)))
  const session = KnexBilling.sessionLayer({ funding: [WalletSource.make(), vouchers], budgets: [TokenBudget.make()] })
  return Layer.merge(session, WalletAdmin.WalletAdmin.layer).pipe(Layer.provideMerge(migrated))
}

const account = (id: string, wallet: number, pack: number, expiresAt: number) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    yield* admin.createAccount({ id, balance: wallet })
    yield* addPack(yield* SqlStore.SqlStore, { accountId: id, total: pack, expiresAt })
  })

/** The wallet balance and the room left in each pack of `id` (soonest expiry first). */
const balances = (id: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlStore.SqlStore
    const wallet = yield* sql.execute("t.wallet", `SELECT balance FROM ${sql.table("accounts")} WHERE id = ?`, [id])
    const packs = yield* sql.execute(
      "t.packs",
      `SELECT total - used AS room FROM ${sql.table("vouchers")} WHERE account_id = ? ORDER BY expires_at, id`,
      [id]
    )
    return { wallet: Number(wallet.rows[0]?.["balance"]), packs: packs.rows.map((r) => Number(r["room"])) }
  })

/** The knex audit (wallet balances, counters, holds and parts) and the vouchers' ledger against their table. */
const auditClean = (id: string) =>
  Effect.gen(function*() {
    const report = yield* Audit.run(Wallet.auditBalances, { counters: Accounts.auditCounters })
    assert.deepStrictEqual(report.problems, [])
    const sql = yield* SqlStore.SqlStore
    const used = yield* sql.execute(
      "t.used",
      `SELECT SUM(used) AS n FROM ${sql.table("vouchers")} WHERE account_id = ?`,
      [
        id
      ]
    )
    const rows = yield* (yield* Ledger.Ledger).entries({ sourceId: "vouchers", subjectId: id })
    assert.strictEqual(-rows.reduce((sum, r) => sum + r.amount, 0), Number(used.rows[0]?.["n"] ?? 0))
  })

for (const target of TestDatabase.targets()) {
  describe(`vouchers with the knex wallet through the engine on ${target.name}`, () => {
    layer(billing(target), { timeout: 60_000 })((it) => {
      it.effect("open 3,000 and settle 4,000 draw on the pack of 10,000; the wallet is untouched", () =>
        Effect.gen(function*() {
          yield* account("w1", 5_000, 10_000, DAY)
          const session = yield* BillingSession.BillingSession
          const opened = yield* session.open({ holdId: "w1-h1", accountId: "w1", estimate: 3_000, sources: chain })
          assert.deepStrictEqual(opened.hold.parts.map((p) => [p.sourceId, p.amount]), [["vouchers", 3_000]])
          assert.deepStrictEqual(yield* balances("w1"), { wallet: 5_000, packs: [7_000] })
          yield* session.settle("w1-h1", 4_000)
          assert.deepStrictEqual(yield* balances("w1"), { wallet: 5_000, packs: [6_000] })
          const rows = yield* (yield* Ledger.Ledger).entries({ holdId: "w1-h1" })
          assert.deepStrictEqual(rows.map((r) => [r.sourceId, r.kind, r.amount, r.balanceAfter]), [
            ["vouchers", "reserve", -3_000, 7_000],
            ["vouchers", "settle", -1_000, 6_000]
          ])
          yield* auditClean("w1")
        }))

      it.effect("a pack that has expired falls through to the wallet", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(DAY)
          yield* account("w2", 5_000, 10_000, DAY + 60_000)
          yield* TestClock.setTime(DAY + 60_000)
          const session = yield* BillingSession.BillingSession
          const opened = yield* session.open({ holdId: "w2-h1", accountId: "w2", estimate: 1_000, sources: chain })
          assert.deepStrictEqual(opened.hold.parts.map((p) => p.sourceId), ["wallet"])
          yield* session.settle("w2-h1", 800)
          assert.deepStrictEqual(yield* balances("w2"), { wallet: 4_200, packs: [10_000] })
          yield* auditClean("w2")
        }))

      it.effect("a pack without room for the estimate falls through to the wallet; a refund gives the pack back", () =>
        Effect.gen(function*() {
          yield* account("w3", 5_000, 1_000, 10 * DAY)
          const session = yield* BillingSession.BillingSession
          const big = yield* session.open({ holdId: "w3-h1", accountId: "w3", estimate: 1_500, sources: chain })
          assert.deepStrictEqual(big.hold.parts.map((p) => p.sourceId), ["wallet"])
          const small = yield* session.open({ holdId: "w3-h2", accountId: "w3", estimate: 600, sources: chain })
          assert.deepStrictEqual(small.hold.parts.map((p) => p.sourceId), ["vouchers"])
          assert.deepStrictEqual(yield* balances("w3"), { wallet: 3_500, packs: [400] })
          yield* session.refund("w3-h2")
          yield* session.refund("w3-h2")
          yield* session.settle("w3-h1", 1_500)
          assert.deepStrictEqual(yield* balances("w3"), { wallet: 3_500, packs: [1_000] })
          yield* auditClean("w3")
        }))
    })
  })
}
