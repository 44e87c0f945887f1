import { assert, describe, layer } from "@effect/vitest"
import { AccountCounters, LowBalance } from "@relay-billing/core"
import { Effect, Layer } from "effect"
import { Accounts, KnexBilling, KnexClient, Migrations, TestDatabase } from "../src/index.js"

const database = (target: TestDatabase.Target) =>
  Accounts.layer({ lowBalance: { defaultThreshold: 777 } }).pipe(
    Layer.provideMerge(Layer.effectDiscard(Migrations.run([KnexBilling.migrations, Accounts.migrations]))),
    Layer.provideMerge(TestDatabase.layer(target))
  )

const balanceOf = (id: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const row = yield* client.query("t.balance", (db) => db(client.table("accounts")).where({ id }).first("balance"))
    return Number(row?.balance)
  })

for (const target of TestDatabase.targets()) {
  describe(`Accounts on ${target.name}`, () => {
    layer(database(target), { timeout: 60_000 })((it) => {
      it.effect("creates an account with its money at 0; a second create is AccountExists", () =>
        Effect.gen(function*() {
          const accounts = yield* Accounts.Accounts
          const created = yield* accounts.create({ id: "acc-1" })
          assert.deepStrictEqual(created, {
            id: "acc-1",
            usedQuota: 0,
            requestCount: 0,
            lowBalanceThreshold: undefined,
            splitFunding: false
          })
          assert.strictEqual(yield* balanceOf("acc-1"), 0)
          const again = yield* Effect.flip(accounts.create({ id: "acc-1", lowBalanceThreshold: 5 }))
          assert.strictEqual(again._tag, "AccountExists")
          assert.strictEqual((yield* accounts.account("acc-1")).lowBalanceThreshold, undefined)
        }))

      it.effect("bad input is InvalidInput naming the field and value, nothing written", () =>
        Effect.gen(function*() {
          const accounts = yield* Accounts.Accounts
          const error = yield* Effect.flip(accounts.create({ id: "acc-bad", lowBalanceThreshold: -1 }))
          assert.strictEqual(error._tag, "InvalidInput")
          if (error._tag === "InvalidInput") {
            assert.strictEqual(error.field, "lowBalanceThreshold")
            assert.strictEqual(error.value, "-1")
          }
          const missing = yield* Effect.flip(accounts.account("acc-bad"))
          assert.strictEqual(missing._tag, "AccountNotFound")
          const empty = yield* Effect.flip(accounts.create({ id: "" }))
          assert.strictEqual(empty._tag === "InvalidInput" ? empty.field : empty._tag, "id")
        }))

      it.effect("split funding and the low-balance threshold are the account's settings", () =>
        Effect.gen(function*() {
          const accounts = yield* Accounts.Accounts
          yield* accounts.create({ id: "acc-2" })
          assert.isFalse(yield* accounts.splitFunding("acc-2"))
          assert.isTrue((yield* accounts.setSplitFunding({ accountId: "acc-2", enabled: true })).splitFunding)
          assert.isTrue(yield* accounts.splitFunding("acc-2"))
          assert.isFalse(yield* accounts.splitFunding("nobody"))
          const policy = yield* LowBalance.LowBalance
          assert.strictEqual(yield* policy.threshold("acc-2"), 777)
          assert.strictEqual(
            (yield* accounts.setLowBalanceThreshold({ accountId: "acc-2", threshold: 50 })).lowBalanceThreshold,
            50
          )
          const unknown = yield* Effect.flip(accounts.setSplitFunding({ accountId: "nobody", enabled: true }))
          assert.strictEqual(unknown._tag, "AccountNotFound")
        }))

      it.effect("counters move together; a counter leaving ±(2^53−1) is QuotaOutOfRange and nothing is written", () =>
        Effect.gen(function*() {
          const accounts = yield* Accounts.Accounts
          const counters = yield* AccountCounters.AccountCounters
          yield* accounts.create({ id: "acc-3" })
          yield* counters.add("acc-3", { usedQuota: 120, requestCount: 1 })
          yield* counters.add("acc-3", { usedQuota: -20, requestCount: 0 })
          assert.deepStrictEqual(
            yield* Effect.map(accounts.account("acc-3"), (a) => [a.usedQuota, a.requestCount]),
            [100, 1]
          )
          const change = { usedQuota: Number.MAX_SAFE_INTEGER, requestCount: 1 }
          const checked = yield* Effect.flip(counters.check!("acc-3", change))
          assert.strictEqual(checked._tag, "QuotaOutOfRange")
          const refused = yield* Effect.flip(counters.add("acc-3", change))
          assert.strictEqual(refused._tag, "QuotaOutOfRange")
          if (refused._tag === "QuotaOutOfRange") assert.strictEqual(refused.field, "account.usedQuota")
          assert.deepStrictEqual(
            yield* Effect.map(accounts.account("acc-3"), (a) => [a.usedQuota, a.requestCount]),
            [100, 1]
          )
          // An unknown account is nothing to count.
          yield* counters.add("nobody", { usedQuota: 5, requestCount: 1 })
        }))

      it.effect("low-balance notices: at most two per account and source in the window", () =>
        Effect.gen(function*() {
          const policy = yield* LowBalance.LowBalance
          const t = 10 * LowBalance.windowMillis
          assert.isTrue(yield* policy.claim("acc-4", "wallet", t))
          assert.isTrue(yield* policy.claim("acc-4", "wallet", t + 1))
          assert.isFalse(yield* policy.claim("acc-4", "wallet", t + 2))
          assert.isTrue(yield* policy.claim("acc-4", "subscription", t + 2))
          assert.isTrue(yield* policy.claim("acc-4", "wallet", t + LowBalance.windowMillis + 1))
        }))
    })
  })
}
