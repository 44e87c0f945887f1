/**
 * Issue 10 #1/#4: the engine owns the holds. With every source in the hold's store, an open
 * writes the hold once (after the takes) and a settle through the session handle writes it once
 * (a conditional update, no read); each phase writes its ledger rows with one append. A settle
 * that finds the hold resolved already rolls its moves back and answers as the hold now is.
 */
import { assert, describe, it } from "@effect/vitest"
import { AccountCounters, BillingSession, FundingRegistry, HoldJournal, Ledger, SqlStore } from "@relay-billing/core"
import type { Source } from "@relay-billing/core"
import { Effect, Layer } from "effect"
import { InMemoryStore } from "../src/index.js"
import { assertAuditClean, expectFailure, ledgerOf } from "./fixtures.js"

const Engine = BillingSession.BillingSession

const journalCalls = (store: InMemoryStore.InMemoryStore) => ({
  get: store.faults.calls("journal.get"),
  insert: store.faults.calls("journal.insert"),
  update: store.faults.calls("journal.update"),
  append: store.faults.calls("ledger.append"),
  counters: store.faults.calls("counters.add")
})

describe("issue 10: the engine writes each hold once per phase", () => {
  it.effect("open: one insert of the whole hold, no read, one ledger append; settle: one conditional update, no read, one append", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000_000)
      yield* store.createToken("t", "a", { remain: 1_000_000 })
      const engine = yield* Engine
      const before = journalCalls(store)
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: 30_000,
        preference: "wallet_only"
      })
      const opened = journalCalls(store)
      assert.deepStrictEqual(
        {
          get: opened.get - before.get,
          insert: opened.insert - before.insert,
          update: opened.update - before.update,
          append: opened.append - before.append
        },
        { get: 0, insert: 1, update: 0, append: 1 }
      )
      yield* s.settle(12_000)
      const settled = journalCalls(store)
      assert.deepStrictEqual(
        {
          get: settled.get - opened.get,
          insert: settled.insert - opened.insert,
          update: settled.update - opened.update,
          append: settled.append - opened.append,
          counters: settled.counters - opened.counters
        },
        { get: 0, insert: 0, update: 1, append: 1, counters: 1 }
      )
      assert.deepStrictEqual(ledgerOf(store, "h1"), [
        ["token", "reserve", -30_000],
        ["wallet", "reserve", -30_000],
        ["token", "settle", 18_000],
        ["wallet", "settle", 18_000]
      ])
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("a settle through a handle whose hold was settled already rolls its moves back and answers the first settlement", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000_000)
      yield* store.createToken("t", "a", { remain: 1_000_000 })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: 30_000,
        preference: "wallet_only"
      })
      const first = yield* s.settle(12_000)
      const after = { snapshot: store.snapshot(), ledger: store.entries() }
      const again = yield* s.settle(45_000)
      assert.deepStrictEqual(again, first)
      assert.deepStrictEqual({ snapshot: store.snapshot(), ledger: store.entries() }, after)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("a settle through a handle whose hold was refunded rolls its moves back and fails with HoldResolved", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000_000)
      const engine = yield* Engine
      const s = yield* engine.open({ holdId: "h1", accountId: "a", estimate: 30_000, preference: "wallet_only" })
      yield* engine.refund("h1")
      const after = { snapshot: store.snapshot(), ledger: store.entries() }
      const error = yield* expectFailure(s.settle(12_000), "HoldResolved")
      assert.strictEqual(error.status, "refunded")
      assert.deepStrictEqual({ snapshot: store.snapshot(), ledger: store.entries() }, after)
      assert.deepStrictEqual(store.snapshot().wallets, { a: 1_000_000 })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("a replayed open that meets a shortfall (the first open took the balance) answers HoldInFlight, and moves nothing", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 30_000)
      const engine = yield* Engine
      yield* engine.open({ holdId: "h1", accountId: "a", estimate: 30_000, preference: "wallet_only" })
      const after = { snapshot: store.snapshot(), ledger: store.entries() }
      yield* expectFailure(
        engine.open({ holdId: "h1", accountId: "a", estimate: 30_000, preference: "wallet_only" }),
        "HoldInFlight"
      )
      assert.deepStrictEqual({ snapshot: store.snapshot(), ledger: store.entries() }, after)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})

describe("issue 10: a Source moves in the journal's store", () => {
  it.effect("a SqlStore of another store than the journal's fails the layer with InvalidInput naming SqlStore.id", () => {
    const main = InMemoryStore.make()
    const other = InMemoryStore.make()
    return Effect.gen(function*() {
      const error = yield* expectFailure(
        Layer.build(
          BillingSession.BillingSession.layer().pipe(
            Layer.provide(Layer.mergeAll(main.layer(), Layer.succeed(SqlStore.SqlStore, other.sql)))
          )
        ).pipe(Effect.scoped),
        "InvalidInput"
      )
      assert.strictEqual(error.field, "SqlStore.id")
      assert.strictEqual(error.value, JSON.stringify(other.id))
    })
  })
})

describe("issue 10 #3: overflow is the engine's", () => {
  it.effect("a subscription at its total sends the rest to the wallet, which (floored at zero) pays what it has; the rest is unbilled, never lost", () => {
    const store = InMemoryStore.make({ walletFloorAtZero: true })
    return Effect.gen(function*() {
      yield* store.createAccount("a", 30_000)
      yield* store.createSubscription({
        id: "s1",
        accountId: "a",
        total: 100_000,
        endAt: 10_000_000,
        allowWalletOverflow: true
      })
      const engine = yield* Engine
      const s = yield* engine.open({ holdId: "h1", accountId: "a", estimate: 60_000, preference: "subscription_only" })
      const settlement = yield* s.settle(160_000)
      assert.deepStrictEqual(settlement.parts.map((p) => [p.sourceId, p.charged, p.unbilled]), [[
        "subscription",
        130_000,
        30_000
      ]])
      assert.deepStrictEqual(store.snapshot().subscriptions, { s1: { used: 100_000, total: 100_000 } })
      assert.deepStrictEqual(store.snapshot().wallets, { a: 0 })
      assert.deepStrictEqual(store.snapshot().counters, { a: { usedQuota: 130_000, requestCount: 1 } })
      assert.deepStrictEqual(
        store.entries().filter((e) => e.holdId === "h1").map((
          e
        ) => [e.sourceId, e.kind, e.amount, e.unbilled ?? 0, e.note ?? ""]),
        [
          ["subscription", "reserve", -60_000, 0, ""],
          ["subscription", "settle", -40_000, 0, ""],
          ["wallet", "settle", -30_000, 0, "overflow of subscription"],
          ["subscription", "unbilled", 0, 30_000, ""]
        ]
      )
      // A correction gives the wallet's overflow back first, then the subscription's usage.
      yield* engine.correct({ holdId: "h1", correctionId: "c1", amount: 50_000 })
      assert.deepStrictEqual(store.snapshot().wallets, { a: 30_000 })
      assert.deepStrictEqual(store.snapshot().subscriptions, { s1: { used: 80_000, total: 100_000 } })
      assertAuditClean(store)
      assert.strictEqual(store.audit().unbilled, 30_000)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("a plan without wallet overflow records the rest unbilled and leaves the wallet alone", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000_000)
      yield* store.createSubscription({
        id: "s1",
        accountId: "a",
        total: 100_000,
        endAt: 10_000_000,
        allowWalletOverflow: false
      })
      const engine = yield* Engine
      const s = yield* engine.open({ holdId: "h1", accountId: "a", estimate: 60_000, preference: "subscription_first" })
      const settlement = yield* s.settle(160_000)
      assert.deepStrictEqual(settlement.parts.map((p) => [p.sourceId, p.charged, p.unbilled]), [[
        "subscription",
        100_000,
        60_000
      ]])
      assert.deepStrictEqual(store.snapshot().wallets, { a: 1_000_000 })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})

describe("issue 10 #4: inside a transaction the caller runs, the engine keeps the paths that cannot leave a move behind", () => {
  it.effect("a replayed open inside the caller's transaction, whose failure the caller catches and commits, moved nothing", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000_000)
      yield* store.createToken("t", "a", { remain: 1_000_000 })
      const engine = yield* Engine
      const request = {
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: 30_000,
        preference: "wallet_only"
      } as const
      yield* engine.open(request)
      const after = { snapshot: store.snapshot(), ledger: store.entries() }
      const replay = yield* store.journal.transaction(Effect.result(engine.open(request)))
      assert.strictEqual(replay._tag, "Failure")
      assert.deepStrictEqual({ snapshot: store.snapshot(), ledger: store.entries() }, after)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("a handle's settle inside the caller's transaction after a refund, caught and committed, moved nothing", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000_000)
      const engine = yield* Engine
      const s = yield* engine.open({ holdId: "h1", accountId: "a", estimate: 30_000, preference: "wallet_only" })
      yield* engine.refund("h1")
      const after = { snapshot: store.snapshot(), ledger: store.entries() }
      const settled = yield* store.journal.transaction(Effect.result(s.settle(12_000)))
      assert.strictEqual(settled._tag, "Failure")
      assert.deepStrictEqual({ snapshot: store.snapshot(), ledger: store.entries() }, after)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})

describe("issue 10: a Source that breaks the contract is refused typed, and its transaction rolls back", () => {
  const broken = (store: InMemoryStore.InMemoryStore, change: Partial<Source.Source>) =>
    BillingSession.BillingSession.layer().pipe(
      Layer.provideMerge(Layer.mergeAll(
        Layer.succeed(HoldJournal.HoldJournal, store.journal),
        Layer.succeed(AccountCounters.AccountCounters, store.counters),
        Layer.succeed(Ledger.Ledger, store.ledger),
        Layer.succeed(SqlStore.SqlStore, store.sql),
        FundingRegistry.FundingRegistry.layer({ sources: [{ ...store.wallet, ...change }, store.token] })
      ))
    )

  it.effect("a take that answers more than asked: ContractViolation, nothing taken, no hold", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000_000)
      yield* store.createToken("t", "a", { remain: 1_000_000 })
      const before = { snapshot: store.snapshot(), ledger: store.entries() }
      const engine = yield* Engine
      const error = yield* expectFailure(
        engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: 30_000, preference: "wallet_only" }),
        "ContractViolation"
      )
      assert.strictEqual(error.sourceId, "wallet")
      assert.deepStrictEqual({ snapshot: store.snapshot(), ledger: store.entries() }, before)
    }).pipe(Effect.provide(broken(store, {
      take: (req) => Effect.map(store.wallet.take(req), (t) => ({ ...t, amount: t.amount + 1 }))
    })))
  })

  it.effect("a move that answers more than asked (or the wrong sign): ContractViolation, the settle rolls back, the hold stays pending", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000_000)
      yield* store.createToken("t", "a", { remain: 1_000_000 })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: 30_000,
        preference: "wallet_only"
      })
      const before = { snapshot: store.snapshot(), ledger: store.entries() }
      const error = yield* expectFailure(s.settle(12_000), "ContractViolation")
      assert.strictEqual(error.sourceId, "wallet")
      assert.deepStrictEqual({ snapshot: store.snapshot(), ledger: store.entries() }, before)
      assert.strictEqual((yield* engine.get("h1")).status, "pending")
    }).pipe(Effect.provide(broken(store, {
      move: (req) => Effect.map(store.wallet.move(req), (m) => ({ ...m, moved: -m.moved }))
    })))
  })
})
