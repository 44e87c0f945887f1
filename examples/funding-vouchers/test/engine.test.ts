/**
 * Vouchers beside the in-memory wallet, through the engine, on the testkit's
 * SQLite test store: the chain ["vouchers", "wallet"] draws the pack first,
 * falls through to the wallet when the pack is used up or expired, and a
 * settle's charge beyond the pack is never lost; the ledger and the audit agree
 * with the pack's table after every step.
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import type { Hold } from "@relay-billing/core"
import { SqliteStore } from "@relay-billing/testkit/sqlite"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { addPack, plugin } from "../src/index.js"

const chain = ["vouchers", "wallet"]
/** What a settlement left unbilled, over its parts. */
const unbilled = (settlement: Hold.Settlement) => settlement.parts.reduce((sum, p) => sum + p.unbilled, 0)

const vouchers = plugin.make({ id: "vouchers", table: "vouchers" })

/** A store with vouchers, `accountId`'s wallet of `wallet` and a pack of `pack` expiring at `expiresAt`. */
const setup = (accountId: string, wallet: number, pack: number, expiresAt: number) =>
  Effect.gen(function*() {
    const store = yield* SqliteStore.make({ sources: [vouchers] })
    yield* store.memory.createAccount(accountId, wallet)
    yield* addPack(store.sql, { accountId, total: pack, expiresAt })
    const context = yield* Layer.build(store.billingLayer())
    return { store, billing: Layer.succeedContext(context) }
  })

/** What is left in `accountId`'s packs (expired or not), soonest expiry first. */
const packs = (store: SqliteStore.SqliteStore, accountId: string) =>
  Effect.map(
    store.sql.execute(
      "test.packs",
      `SELECT total - used AS room FROM ${store.sql.table("vouchers")} WHERE account_id = ? ORDER BY expires_at, id`,
      [accountId]
    ),
    (r) => r.rows.map((row) => Number(row["room"]))
  )

const auditClean = (store: SqliteStore.SqliteStore) =>
  Effect.gen(function*() {
    const report = yield* store.audit()
    assert.deepStrictEqual(report.problems, [])
  })

describe("vouchers with the wallet through the engine (SQLite test store)", () => {
  it.effect("open 3,000 and settle 4,000 draw on the pack of 10,000; the wallet is untouched", () =>
    Effect.gen(function*() {
      const { billing, store } = yield* setup("acct", 5_000, 10_000, 86_400_000)
      const session = yield* Effect.gen(function*() {
        const billingSession = yield* BillingSession.BillingSession
        const opened = yield* billingSession.open({ holdId: "h1", accountId: "acct", estimate: 3_000, sources: chain })
        assert.deepStrictEqual(opened.hold.parts.map((p) => [p.sourceId, p.amount]), [["vouchers", 3_000]])
        assert.deepStrictEqual(yield* packs(store, "acct"), [7_000])
        const settlement = yield* billingSession.settle("h1", 4_000)
        assert.strictEqual(settlement.actual, 4_000)
        return settlement
      }).pipe(Effect.provide(billing))
      assert.strictEqual(unbilled(session), 0)
      assert.deepStrictEqual(yield* packs(store, "acct"), [6_000])
      assert.strictEqual(store.memory.snapshot().wallets["acct"], 5_000)
      assert.deepStrictEqual(store.memory.snapshot().counters["acct"], { usedQuota: 4_000, requestCount: 1 })
      const rows = yield* store.memory.ledger.entries({ sourceId: "vouchers" })
      assert.deepStrictEqual(rows.map((r) => [r.kind, r.amount, r.balanceAfter, r.holdId]), [
        ["reserve", -3_000, 7_000, "h1"],
        ["settle", -1_000, 6_000, "h1"]
      ])
      yield* auditClean(store)
    }))

  it.effect("a pack that has expired falls through to the wallet", () =>
    Effect.gen(function*() {
      const { billing, store } = yield* setup("acct", 5_000, 10_000, 60_000)
      yield* TestClock.setTime(60_000)
      yield* Effect.gen(function*() {
        const billingSession = yield* BillingSession.BillingSession
        const opened = yield* billingSession.open({ holdId: "h2", accountId: "acct", estimate: 1_000, sources: chain })
        assert.deepStrictEqual(opened.hold.parts.map((p) => [p.sourceId, p.amount]), [["wallet", 1_000]])
        yield* billingSession.settle("h2", 800)
      }).pipe(Effect.provide(billing))
      assert.deepStrictEqual(yield* packs(store, "acct"), [10_000])
      assert.strictEqual(store.memory.snapshot().wallets["acct"], 4_200)
      yield* auditClean(store)
    }))

  it.effect("a settle beyond what the pack has left: the pack carries its room, the rest is never lost", () =>
    Effect.gen(function*() {
      const { billing, store } = yield* setup("acct", 5_000, 1_000, 86_400_000)
      yield* Effect.gen(function*() {
        const billingSession = yield* BillingSession.BillingSession
        yield* billingSession.open({ holdId: "h3", accountId: "acct", estimate: 800, sources: chain })
        const settlement = yield* billingSession.settle("h3", 1_500)
        assert.strictEqual(settlement.actual, 1_500)
        // the pack carries the 1,000 it had; the 500 it could not is sent on to the wallet
        // (an overflow) or recorded unbilled, never dropped (billing semantics §3.2)
        assert.deepStrictEqual(yield* packs(store, "acct"), [0])
        const wallet = store.memory.snapshot().wallets["acct"]!
        assert.strictEqual(5_000 - wallet + unbilled(settlement), 500)
        assert.deepStrictEqual(store.memory.snapshot().counters["acct"], {
          usedQuota: 1_500 - unbilled(settlement),
          requestCount: 1
        })
        // the pack is used up: the next open goes to the wallet, and its refund gives the wallet back
        const next = yield* billingSession.open({ holdId: "h4", accountId: "acct", estimate: 300, sources: chain })
        assert.deepStrictEqual(next.hold.parts.map((p) => p.sourceId), ["wallet"])
        yield* billingSession.refund("h4")
        assert.strictEqual(store.memory.snapshot().wallets["acct"], wallet)
        // a refund of a hold on a pack gives the pack back
        yield* addPack(store.sql, { accountId: "acct", total: 2_000, expiresAt: 86_400_000 })
        yield* billingSession.open({ holdId: "h5", accountId: "acct", estimate: 700, sources: chain })
        assert.deepStrictEqual(yield* packs(store, "acct"), [0, 1_300])
        yield* billingSession.refund("h5")
        assert.deepStrictEqual(yield* packs(store, "acct"), [0, 2_000])
      }).pipe(Effect.provide(billing))
      const rows = yield* store.memory.ledger.entries({ sourceId: "vouchers", holdId: "h5" })
      assert.deepStrictEqual(rows.map((r) => [r.kind, r.amount]), [["reserve", -700], ["refund", 700]])
      yield* auditClean(store)
    }))
})
