/**
 * The knex audit checks a plugin source's declared `audit` columns (v2
 * `Source.audit`): the vouchers declare `used` (sign -1) per `account_id`, and an
 * account may hold several packs, so `SUM(used)` grouped by account must equal
 * minus the vouchers' ledger rows of that account. On every database target: a
 * clean run after holds that drew on two packs of one account, then a tampered
 * `used`, a pack no ledger row accounts for and ledger rows whose packs are gone,
 * each reported with the source, the subject and both figures (and clean again
 * once repaired). Without `sources`, the audit never looks at the vouchers table.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession, SqlStore } from "@relay-billing/core"
import { Accounts, Audit, KnexBilling, Migrations, SourceMigrations, TestDatabase } from "@relay-billing/knex"
import { TokenBudget, Wallet, WalletAdmin, WalletSource } from "@relay-billing/wallet"
import { Effect, Layer } from "effect"
import { addPack, plugin } from "../src/index.js"

const vouchers = plugin.make({ id: "vouchers", table: "vouchers" })
const wallet = WalletSource.make()
const chain = ["vouchers", "wallet"]
const DAY = 86_400_000

/** One knex store (isolated, migrated: the SDK's tables and the vouchers table) with the engine over it. */
const billing = (target: TestDatabase.Target) => {
  const migrated = Layer.effectDiscard(
    Effect.andThen(Migrations.run(Wallet.allMigrations), SourceMigrations.run([vouchers]))
  ).pipe(Layer.provideMerge(TestDatabase.layer(target)))
  const session = KnexBilling.sessionLayer({ funding: [wallet, vouchers], budgets: [TokenBudget.make()] })
  return Layer.merge(session, WalletAdmin.WalletAdmin.layer).pipe(Layer.provideMerge(migrated))
}

/** The audit as the relay runs it: the built-in balance columns plus the registered sources' own. */
const audit = Audit.run(Wallet.auditBalances, { counters: Accounts.auditCounters, sources: [wallet, vouchers] })

/** Runs `statement` on the vouchers table (`{t}` is its prefixed name). */
const tamper = (statement: string, params: Array<unknown> = []) =>
  Effect.gen(function*() {
    const sql = yield* SqlStore.SqlStore
    yield* sql.execute("test.tamper", statement.replaceAll("{t}", sql.table("vouchers")), params)
  })

for (const target of TestDatabase.targets()) {
  describe(`the knex audit checks the vouchers' audit columns on ${target.name}`, () => {
    layer(billing(target), { timeout: 60_000 })((it) => {
      it.effect("holds over two packs of one account: clean, and the account's packs are checked as one subject", () =>
        Effect.gen(function*() {
          const admin = yield* WalletAdmin.WalletAdmin
          const sql = yield* SqlStore.SqlStore
          yield* admin.createAccount({ id: "a1", balance: 5_000 })
          yield* addPack(sql, { accountId: "a1", total: 1_000, expiresAt: DAY })
          yield* addPack(sql, { accountId: "a1", total: 10_000, expiresAt: 2 * DAY })
          const session = yield* BillingSession.BillingSession
          // 800 from the first pack; 500 does not fit its 200 left: the second pack.
          yield* session.open({ holdId: "a1-h1", accountId: "a1", estimate: 800, sources: chain })
          yield* session.settle("a1-h1", 800)
          const second = yield* session.open({ holdId: "a1-h2", accountId: "a1", estimate: 500, sources: chain })
          assert.deepStrictEqual(second.hold.parts.map((p) => [p.sourceId, p.amount]), [["vouchers", 500]])
          yield* session.settle("a1-h2", 600)
          yield* session.open({ holdId: "a1-h3", accountId: "a1", estimate: 300, sources: chain })
          yield* session.refund("a1-h3")
          const used = yield* sql.execute("t.used", `SELECT used FROM ${sql.table("vouchers")} ORDER BY id`)
          assert.deepStrictEqual(used.rows.map((r) => Number(r["used"])), [800, 600])
          const report = yield* audit
          assert.deepStrictEqual(report.problems, [])
          assert.isTrue(report.ok)
          // The wallet's account row and the vouchers' one subject (two packs).
          assert.strictEqual(report.subjectsChecked, 2)
        }))

      it.effect("a tampered used is reported with the account's sum and the ledger's", () =>
        Effect.gen(function*() {
          yield* tamper("UPDATE {t} SET used = used + 7 WHERE account_id = ? AND total = ?", ["a1", 10_000])
          const report = yield* audit
          assert.isFalse(report.ok)
          assert.deepStrictEqual(report.problems, ["vouchers a1: vouchers.used 1407 but the ledger sums to -1400"])
          // The audit without the sources does not look at the vouchers table.
          const without = yield* Audit.run(Wallet.auditBalances, { counters: Accounts.auditCounters })
          assert.deepStrictEqual(without.problems, [])
          yield* tamper("UPDATE {t} SET used = used - 7 WHERE account_id = ? AND total = ?", ["a1", 10_000])
          assert.deepStrictEqual((yield* audit).problems, [])
        }))

      it.effect("a pack used with no ledger row, and ledger rows whose packs are gone, are reported", () =>
        Effect.gen(function*() {
          yield* tamper("INSERT INTO {t} (account_id, total, used, expires_at) VALUES (?, ?, ?, ?)", [
            "ghost",
            100,
            40,
            DAY
          ])
          assert.deepStrictEqual((yield* audit).problems, ["vouchers ghost: vouchers.used 40 but the ledger sums to 0"])
          yield* tamper("DELETE FROM {t} WHERE account_id = ?", ["ghost"])
          const sql = yield* SqlStore.SqlStore
          const packs = yield* sql.execute(
            "t.packs",
            `SELECT id, account_id, total, used, expires_at FROM ${sql.table("vouchers")} ORDER BY id`
          )
          yield* tamper("DELETE FROM {t} WHERE account_id = ?", ["a1"])
          assert.deepStrictEqual((yield* audit).problems, [
            "vouchers a1: ledger rows summing to -1400 but no row in vouchers"
          ])
          for (const r of packs.rows) {
            yield* tamper("INSERT INTO {t} (id, account_id, total, used, expires_at) VALUES (?, ?, ?, ?, ?)", [
              Number(r["id"]),
              String(r["account_id"]),
              Number(r["total"]),
              Number(r["used"]),
              Number(r["expires_at"])
            ])
          }
          assert.deepStrictEqual((yield* audit).problems, [])
        }))
    })
  })
}
