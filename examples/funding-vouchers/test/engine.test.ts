/**
 * Vouchers beside the wallet through the engine, on the testkit's SQLite test
 * store (the wallet is the store's in-memory one): the chain ["vouchers",
 * "wallet"] draws the pack first, falls through to the wallet when the pack is
 * used up or expired, and a settle's charge beyond the pack is never lost; the
 * ledger and the audit agree with the pack table after every step. Plain vitest,
 * so it runs wherever the published packages are installed.
 */
import { BillingSession } from "@relay-billing/core"
import type { Hold } from "@relay-billing/core"
import { SqliteStore } from "@relay-billing/testkit/sqlite"
import { Effect, Layer } from "effect"
import type { Scope } from "effect"
import { TestClock } from "effect/testing"
import { describe, expect, it } from "vitest"
import { addPack, plugin } from "../src/index.js"

const chain = ["vouchers", "wallet"]
/** What a settlement left unbilled, over its parts. */
const unbilled = (settlement: Hold.Settlement) => settlement.parts.reduce((sum, p) => sum + p.unbilled, 0)
/** Runs a test program with a TestClock (starting at 0) and a scope for the store. */
const test = <A, E>(program: Effect.Effect<A, E, Scope.Scope>) =>
  Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(TestClock.layer())))

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
    expect(report.problems).toEqual([])
  })

describe("vouchers with the wallet through the engine (SQLite test store)", () => {
  it("open 3,000 and settle 4,000 draw on the pack of 10,000; the wallet is untouched", () =>
    test(Effect.gen(function*() {
      const { billing, store } = yield* setup("acct", 5_000, 10_000, 86_400_000)
      const settlement = yield* Effect.gen(function*() {
        const session = yield* BillingSession.BillingSession
        const opened = yield* session.open({ holdId: "h1", accountId: "acct", estimate: 3_000, sources: chain })
        expect(opened.hold.parts.map((p) => [p.sourceId, p.amount])).toEqual([["vouchers", 3_000]])
        expect(yield* packs(store, "acct")).toEqual([7_000])
        return yield* session.settle("h1", 4_000)
      }).pipe(Effect.provide(billing))
      expect([settlement.actual, unbilled(settlement)]).toEqual([4_000, 0])
      expect(yield* packs(store, "acct")).toEqual([6_000])
      expect(store.memory.snapshot().wallets["acct"]).toBe(5_000)
      expect(store.memory.snapshot().counters["acct"]).toEqual({ usedQuota: 4_000, requestCount: 1 })
      const rows = yield* store.memory.ledger.entries({ sourceId: "vouchers" })
      expect(rows.map((r) => [r.kind, r.amount, r.balanceAfter, r.holdId])).toEqual([
        ["reserve", -3_000, 7_000, "h1"],
        ["settle", -1_000, 6_000, "h1"]
      ])
      yield* auditClean(store)
    })))

  it("a pack that has expired falls through to the wallet", () =>
    test(Effect.gen(function*() {
      const { billing, store } = yield* setup("acct", 5_000, 10_000, 60_000)
      yield* TestClock.setTime(60_000)
      yield* Effect.gen(function*() {
        const session = yield* BillingSession.BillingSession
        const opened = yield* session.open({ holdId: "h2", accountId: "acct", estimate: 1_000, sources: chain })
        expect(opened.hold.parts.map((p) => [p.sourceId, p.amount])).toEqual([["wallet", 1_000]])
        yield* session.settle("h2", 800)
      }).pipe(Effect.provide(billing))
      expect(yield* packs(store, "acct")).toEqual([10_000])
      expect(store.memory.snapshot().wallets["acct"]).toBe(4_200)
      yield* auditClean(store)
    })))

  it("a settle beyond what the pack has left: the pack carries its room, the rest is never lost", () =>
    test(Effect.gen(function*() {
      const { billing, store } = yield* setup("acct", 5_000, 1_000, 86_400_000)
      yield* Effect.gen(function*() {
        const session = yield* BillingSession.BillingSession
        yield* session.open({ holdId: "h3", accountId: "acct", estimate: 800, sources: chain })
        const settlement = yield* session.settle("h3", 1_500)
        expect(settlement.actual).toBe(1_500)
        // the pack carries the 1,000 it had; the 500 it could not is sent on to the wallet
        // (an overflow) or recorded unbilled, never dropped (billing semantics §3.2)
        expect(yield* packs(store, "acct")).toEqual([0])
        const wallet = store.memory.snapshot().wallets["acct"]!
        expect(5_000 - wallet + unbilled(settlement)).toBe(500)
        expect(store.memory.snapshot().counters["acct"]).toEqual({
          usedQuota: 1_500 - unbilled(settlement),
          requestCount: 1
        })
        // the pack is used up: the next open goes to the wallet, and its refund gives the wallet back
        const next = yield* session.open({ holdId: "h4", accountId: "acct", estimate: 300, sources: chain })
        expect(next.hold.parts.map((p) => p.sourceId)).toEqual(["wallet"])
        yield* session.refund("h4")
        expect(store.memory.snapshot().wallets["acct"]).toBe(wallet)
        // a refund of a hold on a pack gives the pack back
        yield* addPack(store.sql, { accountId: "acct", total: 2_000, expiresAt: 86_400_000 })
        yield* session.open({ holdId: "h5", accountId: "acct", estimate: 700, sources: chain })
        expect(yield* packs(store, "acct")).toEqual([0, 1_300])
        yield* session.refund("h5")
        expect(yield* packs(store, "acct")).toEqual([0, 2_000])
      }).pipe(Effect.provide(billing))
      const rows = yield* store.memory.ledger.entries({ sourceId: "vouchers", holdId: "h5" })
      expect(rows.map((r) => [r.kind, r.amount])).toEqual([["reserve", -700], ["refund", 700]])
      yield* auditClean(store)
    })))
})
