/**
 * The SQLite test store (`@relay-billing/testkit/sqlite`): the SQL sources'
 * migrations with the store's prefix, one transaction across SQLite and the
 * in-memory journal (commit together, roll back together on a failure or a
 * defect, nested calls join), a SQL source driven by the engine, and an audit
 * that finds a column disagreeing with the ledger.
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingError, BillingSession } from "@relay-billing/core"
import { Effect, Exit, Layer } from "effect"
import { TestClock } from "effect/testing"
import { SqliteStore } from "../src/sqlite.js"
import { credits } from "./sqlite-fixtures.js"

/** Gives `accountId` a credits balance, with the ledger row that accounts for it. */
const fund = (store: SqliteStore.SqliteStore, accountId: string, amount: number) =>
  store.transaction(Effect.gen(function*() {
    yield* store.sql.execute("test.fund", `INSERT INTO ${store.sql.table("credits")} VALUES (?, ?)`, [
      accountId,
      amount
    ])
    yield* store.memory.ledger.append([{
      at: 0,
      kind: "topup",
      sourceId: "credits",
      subjectId: accountId,
      accountId,
      amount,
      balanceAfter: amount
    }])
  }))

const balanceOf = (store: SqliteStore.SqliteStore, accountId: string) =>
  Effect.map(
    store.sql.execute("test.balance", `SELECT balance FROM ${store.sql.table("credits")} WHERE account_id = ?`, [
      accountId
    ]),
    (r) => (r.rows[0] === undefined ? undefined : Number(r.rows[0]["balance"]))
  )

describe("SqliteStore", () => {
  it.effect("runs the SQL sources' migrations under the store's prefix", () =>
    Effect.gen(function*() {
      const store = yield* SqliteStore.make({ sources: [credits] })
      assert.strictEqual(store.sql.dialect, "sqlite")
      assert.strictEqual(store.sql.id, store.memory.journal.storeId)
      assert.strictEqual(store.sql.table("credits"), "billing_credits")
      const tables = yield* store.sql.execute("test.tables", "SELECT name FROM sqlite_master WHERE type = 'table'")
      assert.deepInclude(tables.rows.map((r) => r["name"]), "billing_credits")
      const other = yield* SqliteStore.make({ sources: [credits], prefix: "t_" })
      const otherTables = yield* other.sql.execute("test.tables", "SELECT name FROM sqlite_master WHERE type = 'table'")
      assert.deepInclude(otherTables.rows.map((r) => r["name"]), "t_credits")
    }))

  it.effect("a transaction commits the SQL writes and the in-memory ones together", () =>
    Effect.gen(function*() {
      const store = yield* SqliteStore.make({ sources: [credits] })
      yield* fund(store, "a", 100)
      assert.strictEqual(yield* balanceOf(store, "a"), 100)
      assert.strictEqual((yield* store.memory.ledger.entries({ sourceId: "credits" })).length, 1)
    }))

  it.effect("a failure or a defect in a transaction rolls back both", () =>
    Effect.gen(function*() {
      const store = yield* SqliteStore.make({ sources: [credits] })
      yield* fund(store, "a", 100)
      const failed = yield* Effect.exit(store.transaction(Effect.gen(function*() {
        yield* store.sql.execute("test.spend", `UPDATE ${store.sql.table("credits")} SET balance = 0`)
        yield* store.memory.createAccount("b", 50)
        return yield* new BillingError.StoreError({ operation: "test", detail: "boom" })
      })))
      assert.isTrue(Exit.isFailure(failed))
      const died = yield* Effect.exit(store.transaction(Effect.gen(function*() {
        yield* store.sql.execute("test.spend", `UPDATE ${store.sql.table("credits")} SET balance = 0`)
        yield* store.memory.createAccount("b", 50)
        return yield* Effect.die(new Error("defect"))
      })))
      assert.isTrue(Exit.isFailure(died))
      assert.strictEqual(yield* balanceOf(store, "a"), 100)
      assert.strictEqual(store.memory.snapshot().wallets["b"], undefined)
      assert.deepStrictEqual((yield* store.audit()).problems, [])
    }))

  it.effect("a nested transaction joins the outer one and rolls back with it", () =>
    Effect.gen(function*() {
      const store = yield* SqliteStore.make({ sources: [credits] })
      const exit = yield* Effect.exit(store.transaction(Effect.gen(function*() {
        yield* store.journal.transaction(fund(store, "a", 100))
        assert.strictEqual(yield* balanceOf(store, "a"), 100)
        return yield* Effect.fail("outer fails")
      })))
      assert.isTrue(Exit.isFailure(exit))
      assert.strictEqual(yield* balanceOf(store, "a"), undefined)
      assert.deepStrictEqual(yield* store.memory.ledger.entries({}), [])
    }))

  it.effect("drives a SQL source through the engine; the audit checks its column against the ledger", () =>
    Effect.gen(function*() {
      const store = yield* SqliteStore.make({ sources: [credits] })
      yield* fund(store, "a", 1_000)
      yield* store.memory.createAccount("a", 5_000)
      const context = yield* Layer.build(store.billingLayer())
      yield* Effect.gen(function*() {
        const billing = yield* BillingSession.BillingSession
        const opened = yield* billing.open({
          holdId: "h1",
          accountId: "a",
          estimate: 300,
          sources: ["credits", "wallet"]
        })
        assert.deepStrictEqual(opened.hold.parts.map((p) => p.sourceId), ["credits"])
        yield* billing.settle("h1", 250)
        const fallback = yield* billing.open({
          holdId: "h2",
          accountId: "a",
          estimate: 900,
          sources: ["credits", "wallet"]
        })
        assert.deepStrictEqual(fallback.hold.parts.map((p) => p.sourceId), ["wallet"])
        yield* billing.refund("h2")
      }).pipe(Effect.provide(context))
      assert.strictEqual(yield* balanceOf(store, "a"), 750)
      assert.strictEqual(store.memory.snapshot().wallets["a"], 5_000)
      assert.deepStrictEqual((yield* store.audit()).problems, [])
      // a column that disagrees with the ledger is found
      yield* store.sql.execute("test.tamper", `UPDATE ${store.sql.table("credits")} SET balance = balance + 1`)
      const report = yield* store.audit()
      assert.deepStrictEqual(report.problems, [
        "credits credits.balance of a: 751, but its ledger rows say 750"
      ])
    }))
  it.effect("a late settle of an expired hold on a SQL source audits clean", () =>
    Effect.gen(function*() {
      const store = yield* SqliteStore.make({ sources: [credits] })
      yield* fund(store, "a", 1_000)
      yield* store.memory.createAccount("a", 5_000)
      const context = yield* Layer.build(store.billingLayer({ holdTtlMillis: 1_000 }))
      yield* Effect.gen(function*() {
        const billing = yield* BillingSession.BillingSession
        yield* billing.open({ holdId: "h1", accountId: "a", estimate: 300, sources: ["credits"] })
        yield* TestClock.adjust("2 seconds")
        yield* billing.reapExpired()
        assert.strictEqual(yield* balanceOf(store, "a"), 1_000)
        yield* billing.settle("h1", 250)
      }).pipe(Effect.provide(context))
      assert.strictEqual(yield* balanceOf(store, "a"), 750)
      assert.deepStrictEqual((yield* store.audit()).problems, [])
      // one more late charge row than the settlement records (the column moved with it) is found
      yield* store.transaction(Effect.gen(function*() {
        yield* store.sql.execute("test.tamper", `UPDATE ${store.sql.table("credits")} SET balance = balance - 1`)
        yield* store.memory.ledger.append([{
          at: 0,
          kind: "late_settle",
          sourceId: "credits",
          subjectId: "a",
          accountId: "a",
          holdId: "h1",
          amount: -1,
          balanceAfter: 749
        }])
      }))
      assert.deepStrictEqual((yield* store.audit()).problems, [
        "hold h1: its late settlement charged 250 on funding sources but the ledger's late_settle rows take 251"
      ])
    }))
})
