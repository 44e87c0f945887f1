/**
 * The example cases of billing-semantics.md §8 (with our own numbers where the
 * spec says they are illustrative), idempotency (§2.7, §3.1, §4.1), input
 * validation, the trust bypass (§2.8), preferences (§2.1) and events.
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { InMemoryStore } from "../src/index.js"
import {
  assertAuditClean,
  capturingEvents,
  countEvents,
  expectFailure,
  ledgerOf,
  walletBalancesSeen
} from "./fixtures.js"

const Engine = BillingSession.BillingSession

// Fixture of cases 1–7: wallet W0, limited token R0, estimate P.
const W0 = 2_000_000
const R0 = 1_500_000
const P = 40_000

const walletAndToken = (store: InMemoryStore.InMemoryStore, wallet = W0, remain = R0) =>
  Effect.gen(function*() {
    yield* store.createAccount("a", wallet)
    yield* store.createToken("t", "a", { remain })
  })

describe("§8 example cases", () => {
  it.effect("case 1: wallet_only, A < P → funding −A, token −A, counters +A", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      assert.strictEqual(s.preConsumed, P)
      assert.deepStrictEqual(store.snapshot().wallets, { a: W0 - P })
      assert.deepStrictEqual(store.snapshot().tokens, { t: { remain: R0 - P, used: P } })
      assert.deepStrictEqual(store.snapshot().holds, { h1: "pending" })

      const settlement = yield* s.settle(17_000)
      assert.strictEqual(settlement.actual, 17_000)
      assert.strictEqual(settlement.reserved, P)
      assert.strictEqual(settlement.delta, 17_000 - P)
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.wallets, { a: W0 - 17_000 })
      assert.deepStrictEqual(snap.tokens, { t: { remain: R0 - 17_000, used: 17_000 } })
      assert.deepStrictEqual(snap.counters, { a: { usedQuota: 17_000, requestCount: 1 } })
      assert.deepStrictEqual(snap.holds, { h1: "settled" })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("case 2: wallet_only, A > P → the extra is charged at settlement", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      const settlement = yield* s.settle(65_000)
      assert.strictEqual(settlement.delta, 65_000 - P)
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.wallets, { a: W0 - 65_000 })
      assert.deepStrictEqual(snap.tokens, { t: { remain: R0 - 65_000, used: 65_000 } })
      assert.deepStrictEqual(snap.counters, { a: { usedQuota: 65_000, requestCount: 1 } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("case 3: wallet below P → InsufficientFunds, nothing changes (and a balance of 0 is always insufficient)", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store, 25_000)
      yield* store.createAccount("zero", 0)
      yield* store.createToken("tz", "zero", { remain: R0 })
      const engine = yield* Engine
      const before = store.snapshot()
      const error = yield* expectFailure(
        engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "wallet_only" }),
        "InsufficientFunds"
      )
      assert.strictEqual(error.sourceId, "wallet")
      assert.strictEqual(error.required, P)
      assert.strictEqual(error.available, 25_000)
      // A zero balance cannot even reserve an estimate of 0.
      yield* expectFailure(
        engine.open({ holdId: "h2", accountId: "zero", tokenId: "tz", estimate: 0, preference: "wallet_only" }),
        "InsufficientFunds"
      )
      assert.deepStrictEqual(store.snapshot(), before)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("case 4: token budget below P → TokenBudgetExceeded; with wallet_first and an active subscription it does not fall back", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store, W0, 15_000)
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 5_000_000, endAt: 10_000_000 })
      const engine = yield* Engine
      const before = store.snapshot()
      const error = yield* expectFailure(
        engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "wallet_only" }),
        "TokenBudgetExceeded"
      )
      assert.strictEqual(error.tokenId, "t")
      assert.strictEqual(error.required, P)
      assert.strictEqual(error.remaining, 15_000)
      yield* expectFailure(
        engine.open({ holdId: "h2", accountId: "a", tokenId: "t", estimate: P, preference: "wallet_first" }),
        "TokenBudgetExceeded"
      )
      assert.strictEqual(store.faults.calls("subscription.reserve"), 0)
      assert.strictEqual(store.faults.calls("wallet.reserve"), 0)
      assert.deepStrictEqual(store.snapshot(), before)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("case 5 (new-api bug 1): the wallet write fails after the token debit → token, wallet unchanged, no pending hold", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store, W0, 3_000_000)
      const engine = yield* Engine
      store.faults.failNext("wallet.reserve")
      const error = yield* expectFailure(
        engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "wallet_only" }),
        "StoreError"
      )
      assert.strictEqual(error.operation, "wallet.reserve")
      assert.strictEqual(store.faults.calls("token.reserve"), 1)
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.tokens, { t: { remain: 3_000_000, used: 0 } })
      assert.deepStrictEqual(snap.wallets, { a: W0 })
      assert.deepStrictEqual(snap.holds, {})
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("case 6: every upstream attempt fails after the open → refund restores wallet and token, counters unchanged", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      const result = yield* s.refund
      assert.deepStrictEqual(result, { holdId: "h1", status: "refunded", refunded: P })
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.wallets, { a: W0 })
      assert.deepStrictEqual(snap.tokens, { t: { remain: R0, used: 0 } })
      assert.deepStrictEqual(snap.counters, { a: { usedQuota: 0, requestCount: 0 } })
      assert.deepStrictEqual(snap.holds, { h1: "refunded" })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("case 7: refund twice credits once; settle then refund leaves the settled balance", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      const engine = yield* Engine
      const s1 = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      assert.strictEqual((yield* s1.refund).refunded, P)
      assert.deepStrictEqual(yield* s1.refund, { holdId: "h1", status: "refunded", refunded: 0 })
      assert.deepStrictEqual(store.snapshot().wallets, { a: W0 })
      assert.deepStrictEqual(store.snapshot().tokens, { t: { remain: R0, used: 0 } })

      const s2 = yield* engine.open({
        holdId: "h2",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      yield* s2.settle(17_000)
      assert.deepStrictEqual(yield* s2.refund, { holdId: "h2", status: "settled", refunded: 0 })
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.wallets, { a: W0 - 17_000 })
      assert.deepStrictEqual(snap.tokens, { t: { remain: R0 - 17_000, used: 17_000 } })
      assert.deepStrictEqual(snap.holds, { h1: "refunded", h2: "settled" })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("case 8: subscription_first with room → subscription used +A, wallet untouched, token −A", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 2_000_000, used: 250_000, endAt: 10_000_000 })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "subscription_first"
      })
      assert.deepStrictEqual(store.snapshot().subscriptions, { s1: { used: 250_000 + P, total: 2_000_000 } })
      yield* s.settle(17_000)
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.subscriptions, { s1: { used: 267_000, total: 2_000_000 } })
      assert.deepStrictEqual(snap.wallets, { a: W0 })
      assert.deepStrictEqual(snap.tokens, { t: { remain: R0 - 17_000, used: 17_000 } })
      assert.deepStrictEqual(snap.counters, { a: { usedQuota: 17_000, requestCount: 1 } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  describe("case 9 (new-api bugs 2 and 3): P = 0 on a subscription reserves 1 on the subscription and 1 on the token", () => {
    const openZero = (store: InMemoryStore.InMemoryStore) =>
      Effect.gen(function*() {
        yield* walletAndToken(store, W0, 700_000)
        yield* store.createSubscription({ id: "s1", accountId: "a", total: 3_000_000, used: 0, endAt: 10_000_000 })
        const engine = yield* Engine
        const s = yield* engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: 0 })
        assert.strictEqual(s.preConsumed, 1)
        assert.strictEqual(s.hold.reserved, 1)
        assert.deepStrictEqual(
          s.hold.parts.map((p) => [p.kind, p.sourceId, p.amount]),
          [["funding", "subscription", 1], ["budget", "token", 1]]
        )
        assert.deepStrictEqual(store.snapshot().subscriptions, { s1: { used: 1, total: 3_000_000 } })
        assert.deepStrictEqual(store.snapshot().tokens, { t: { remain: 699_999, used: 1 } })
        return s
      })

    it.effect("A = 1 → subscription used 1 (not 2), token charged 1", () => {
      const store = InMemoryStore.make()
      return Effect.gen(function*() {
        const s = yield* openZero(store)
        const settlement = yield* s.settle(1)
        assert.strictEqual(settlement.delta, 0)
        const snap = store.snapshot()
        assert.deepStrictEqual(snap.subscriptions, { s1: { used: 1, total: 3_000_000 } })
        assert.deepStrictEqual(snap.tokens, { t: { remain: 699_999, used: 1 } })
        assert.deepStrictEqual(snap.wallets, { a: W0 })
        assert.deepStrictEqual(snap.counters, { a: { usedQuota: 1, requestCount: 1 } })
        assertAuditClean(store)
      }).pipe(Effect.provide(store.billingLayer()))
    })

    it.effect("A = 0 → subscription used 0 and the token unit given back", () => {
      const store = InMemoryStore.make()
      return Effect.gen(function*() {
        const s = yield* openZero(store)
        const settlement = yield* s.settle(0)
        assert.strictEqual(settlement.delta, -1)
        const snap = store.snapshot()
        assert.deepStrictEqual(snap.subscriptions, { s1: { used: 0, total: 3_000_000 } })
        assert.deepStrictEqual(snap.tokens, { t: { remain: 700_000, used: 0 } })
        assert.deepStrictEqual(snap.holds, { h1: "settled" })
        assertAuditClean(store)
      }).pipe(Effect.provide(store.billingLayer()))
    })

    it.effect("failed request → refund leaves subscription used 0 and the hold refunded", () => {
      const store = InMemoryStore.make()
      return Effect.gen(function*() {
        const s = yield* openZero(store)
        const result = yield* s.refund
        assert.deepStrictEqual(result, { holdId: "h1", status: "refunded", refunded: 1 })
        const snap = store.snapshot()
        assert.deepStrictEqual(snap.subscriptions, { s1: { used: 0, total: 3_000_000 } })
        assert.deepStrictEqual(snap.tokens, { t: { remain: 700_000, used: 0 } })
        assert.deepStrictEqual(snap.holds, { h1: "refunded" })
        assertAuditClean(store)
      }).pipe(Effect.provide(store.billingLayer()))
    })
  })

  it.effect("case 10: subscription_first, subscription short (overflow allowed) → falls back to the wallet with one net token reservation", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      yield* store.createSubscription({
        id: "s1",
        accountId: "a",
        total: 2_000_000,
        used: 1_980_000,
        endAt: 10_000_000,
        allowWalletOverflow: true
      })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "subscription_first"
      })
      assert.deepStrictEqual(s.hold.parts.map((p) => [p.kind, p.sourceId, p.amount]), [["funding", "wallet", P], [
        "budget",
        "token",
        P
      ]])
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.subscriptions, { s1: { used: 1_980_000, total: 2_000_000 } })
      assert.deepStrictEqual(snap.wallets, { a: W0 - P })
      assert.deepStrictEqual(snap.tokens, { t: { remain: R0 - P, used: P } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("case 11: subscription_only with a short subscription → InsufficientFunds on the subscription, nothing changes", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      yield* store.createSubscription({
        id: "s1",
        accountId: "a",
        total: 2_000_000,
        used: 1_980_000,
        endAt: 10_000_000,
        allowWalletOverflow: true
      })
      const engine = yield* Engine
      const before = store.snapshot()
      const error = yield* expectFailure(
        engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "subscription_only" }),
        "InsufficientFunds"
      )
      assert.strictEqual(error.sourceId, "subscription")
      assert.strictEqual(error.required, P)
      assert.strictEqual(error.available, 20_000)
      assert.strictEqual(store.faults.calls("wallet.reserve"), 0)
      assert.deepStrictEqual(store.snapshot(), before)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("case 12: unlimited plan (total 0) takes any actual cost without error", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store, W0, 50_000_000)
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 0, used: 5_000, endAt: 10_000_000 })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "subscription_first"
      })
      const settlement = yield* s.settle(12_345_678)
      assert.deepStrictEqual(settlement.parts.map((p) => [p.sourceId, p.charged, p.unbilled]), [
        ["subscription", 12_345_678, 0],
        ["token", 12_345_678, 0]
      ])
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.subscriptions, { s1: { used: 5_000 + 12_345_678, total: 0 } })
      assert.deepStrictEqual(snap.wallets, { a: W0 })
      assert.deepStrictEqual(snap.counters, { a: { usedQuota: 12_345_678, requestCount: 1 } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  describe("case 13: settlement beyond the subscription total", () => {
    it.effect("overflow allowed → the subscription fills up and the rest goes to the wallet", () => {
      const store = InMemoryStore.make()
      return Effect.gen(function*() {
        yield* walletAndToken(store)
        yield* store.createSubscription({
          id: "s1",
          accountId: "a",
          total: 150_000,
          endAt: 10_000_000,
          allowWalletOverflow: true
        })
        const engine = yield* Engine
        const s = yield* engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: 90_000 })
        assert.strictEqual(s.hold.parts[0]?.sourceId, "subscription")
        const settlement = yield* s.settle(230_000)
        assert.strictEqual(settlement.parts[0]?.charged, 230_000)
        assert.strictEqual(settlement.parts[0]?.unbilled, 0)
        const snap = store.snapshot()
        assert.deepStrictEqual(snap.subscriptions, { s1: { used: 150_000, total: 150_000 } })
        assert.deepStrictEqual(snap.wallets, { a: W0 - 80_000 })
        assert.deepStrictEqual(snap.tokens, { t: { remain: R0 - 230_000, used: 230_000 } })
        assert.strictEqual(store.audit().unbilled, 0)
        assertAuditClean(store)
      }).pipe(Effect.provide(store.billingLayer()))
    })

    it.effect("overflow not allowed → the subscription fills up and the rest is recorded unbilled, never lost", () => {
      const store = InMemoryStore.make()
      return Effect.gen(function*() {
        yield* walletAndToken(store)
        yield* store.createSubscription({
          id: "s1",
          accountId: "a",
          total: 150_000,
          endAt: 10_000_000,
          allowWalletOverflow: false
        })
        const engine = yield* Engine
        const s = yield* engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: 90_000 })
        const settlement = yield* s.settle(230_000)
        assert.strictEqual(settlement.parts[0]?.unbilled, 80_000)
        assert.strictEqual(settlement.parts[0]?.charged, 150_000)
        const snap = store.snapshot()
        assert.deepStrictEqual(snap.subscriptions, { s1: { used: 150_000, total: 150_000 } })
        assert.deepStrictEqual(snap.wallets, { a: W0 })
        assert.strictEqual(store.audit().unbilled, 80_000)
        assert.deepStrictEqual(
          store.entries().filter((e) => e.kind === "unbilled").map((e) => [e.holdId, e.unbilled]),
          [["h1", 80_000]]
        )
        assertAuditClean(store)
      }).pipe(Effect.provide(store.billingLayer()))
    })
  })

  describe("case 14: two active subscriptions, soonest expiry with room wins, never split", () => {
    const twoPlans = (store: InMemoryStore.InMemoryStore, xUsed: number) =>
      Effect.gen(function*() {
        yield* walletAndToken(store)
        yield* store.createSubscription({ id: "x", accountId: "a", total: 100_000, used: xUsed, endAt: 5_000_000 })
        yield* store.createSubscription({ id: "y", accountId: "a", total: 300_000, used: 0, endAt: 9_000_000 })
      })

    it.effect("X (sooner) has 8,000 left → Y is used", () => {
      const store = InMemoryStore.make()
      return Effect.gen(function*() {
        yield* twoPlans(store, 92_000)
        const engine = yield* Engine
        const s = yield* engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P })
        assert.strictEqual(s.hold.parts[0]?.ref, "y")
        assert.deepStrictEqual(store.snapshot().subscriptions, {
          x: { used: 92_000, total: 100_000 },
          y: { used: P, total: 300_000 }
        })
        assert.deepStrictEqual(store.snapshot().wallets, { a: W0 })
        assertAuditClean(store)
      }).pipe(Effect.provide(store.billingLayer()))
    })

    it.effect("X (sooner) has 60,000 left → X is used", () => {
      const store = InMemoryStore.make()
      return Effect.gen(function*() {
        yield* twoPlans(store, 40_000)
        const engine = yield* Engine
        const s = yield* engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P })
        assert.strictEqual(s.hold.parts[0]?.ref, "x")
        assert.deepStrictEqual(store.snapshot().subscriptions, {
          x: { used: 40_000 + P, total: 100_000 },
          y: { used: 0, total: 300_000 }
        })
        assertAuditClean(store)
      }).pipe(Effect.provide(store.billingLayer()))
    })
  })

  describe("case 15: crash after open → the recovery pass refunds at expiry", () => {
    it.effect("restores wallet and token, marks expired; running it twice changes nothing", () => {
      const store = InMemoryStore.make()
      return Effect.gen(function*() {
        yield* walletAndToken(store)
        const engine = yield* Engine
        yield* engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "wallet_only" })
        // Before expiry the pass leaves the hold alone.
        yield* TestClock.adjust("9 minutes")
        assert.deepStrictEqual(yield* engine.reapExpired(), { examined: 0, expired: 0, refunded: 0, failures: [] })
        assert.deepStrictEqual(store.snapshot().holds, { h1: "pending" })
        assert.deepStrictEqual(store.snapshot().wallets, { a: W0 - P })

        yield* TestClock.adjust("2 minutes")
        assert.deepStrictEqual(yield* engine.reapExpired(), { examined: 1, expired: 1, refunded: P, failures: [] })
        const after = store.snapshot()
        assert.deepStrictEqual(after.wallets, { a: W0 })
        assert.deepStrictEqual(after.tokens, { t: { remain: R0, used: 0 } })
        assert.deepStrictEqual(after.holds, { h1: "expired" })
        assert.deepStrictEqual(ledgerOf(store, "h1").filter(([, kind]) => kind === "expire"), [
          ["token", "expire", P],
          ["wallet", "expire", P]
        ])

        assert.deepStrictEqual(yield* engine.reapExpired(), { examined: 0, expired: 0, refunded: 0, failures: [] })
        assert.deepStrictEqual(store.snapshot(), after)
        // §6 (issue 9): a settle that still arrives for the expired hold is not free: it is
        // charged late (once) and the hold stays expired.
        const late = yield* engine.settle("h1", 10_000)
        assert.strictEqual(late.late, true)
        assert.deepStrictEqual(store.snapshot(), {
          ...after,
          wallets: { a: W0 - 10_000 },
          tokens: { t: { remain: R0 - 10_000, used: 10_000 } },
          counters: { a: { usedQuota: 10_000, requestCount: 1 } }
        })
        assertAuditClean(store)
      }).pipe(Effect.provide(store.billingLayer()))
    })

    it.effect("respects holdTtlMillis and expires each hold exactly once under concurrent passes", () => {
      const store = InMemoryStore.make()
      return Effect.gen(function*() {
        yield* walletAndToken(store)
        const engine = yield* Engine
        for (const id of ["h1", "h2", "h3"]) {
          yield* engine.open({ holdId: id, accountId: "a", tokenId: "t", estimate: P, preference: "wallet_only" })
        }
        yield* TestClock.adjust("59 seconds")
        assert.strictEqual((yield* engine.reapExpired()).expired, 0)
        yield* TestClock.adjust("1 second")
        const reports = yield* Effect.all([engine.reapExpired(), engine.reapExpired(), engine.reapExpired()], {
          concurrency: "unbounded"
        })
        assert.strictEqual(reports.reduce((n, r) => n + r.expired, 0), 3)
        assert.strictEqual(reports.reduce((n, r) => n + r.refunded, 0), 3 * P)
        assert.deepStrictEqual(store.snapshot().wallets, { a: W0 })
        assert.deepStrictEqual(store.snapshot().tokens, { t: { remain: R0, used: 0 } })
        assert.deepStrictEqual(store.snapshot().holds, { h1: "expired", h2: "expired", h3: "expired" })
        assertAuditClean(store)
      }).pipe(Effect.provide(store.billingLayer({ holdTtlMillis: 60_000 })))
    })
  })

  describe("case 16: concurrent opens never overdraw the wallet", () => {
    it.effect("W 50,000, two concurrent opens of 35,000 → exactly one succeeds, W never below 15,000", () => {
      const store = InMemoryStore.make()
      return Effect.gen(function*() {
        yield* store.createAccount("a", 50_000)
        yield* store.createToken("t", "a", { unlimited: true })
        const engine = yield* Engine
        const results = yield* Effect.all(
          ["h1", "h2"].map((id) =>
            Effect.result(
              engine.open({ holdId: id, accountId: "a", tokenId: "t", estimate: 35_000, preference: "wallet_only" })
            )
          ),
          { concurrency: "unbounded" }
        )
        const ok = results.filter((r) => r._tag === "Success")
        const failed = results.flatMap((r) => r._tag === "Failure" ? [r.failure._tag] : [])
        assert.strictEqual(ok.length, 1)
        assert.deepStrictEqual(failed, ["InsufficientFunds"])
        assert.deepStrictEqual(store.snapshot().wallets, { a: 15_000 })
        assert.strictEqual(Math.min(...walletBalancesSeen(store, "a")), 15_000)
        assert.deepStrictEqual(Object.values(store.snapshot().holds), ["pending"])
        assertAuditClean(store)
      }).pipe(Effect.provide(store.billingLayer()))
    })

    it.effect("64 concurrent opens where W affords exactly 23 → exactly 23 succeed, the rest InsufficientFunds, W never < 0", () => {
      const store = InMemoryStore.make()
      const N = 23
      const each = 7_000
      return Effect.gen(function*() {
        yield* store.createAccount("a", N * each)
        yield* store.createToken("t", "a", { unlimited: true })
        const engine = yield* Engine
        const results = yield* Effect.all(
          Array.from({ length: 64 }, (_, i) =>
            Effect.result(
              engine.open({ holdId: `h${i}`, accountId: "a", tokenId: "t", estimate: each, preference: "wallet_only" })
            )),
          { concurrency: "unbounded" }
        )
        const ok = results.filter((r) => r._tag === "Success")
        const failedTags = new Set(results.flatMap((r) => r._tag === "Failure" ? [r.failure._tag] : []))
        assert.strictEqual(ok.length, N)
        assert.deepStrictEqual([...failedTags], ["InsufficientFunds"])
        assert.deepStrictEqual(store.snapshot().wallets, { a: 0 })
        assert.isTrue(walletBalancesSeen(store, "a").every((b) => b >= 0))
        const holds = Object.values(store.snapshot().holds)
        assert.strictEqual(holds.length, N)
        assert.isTrue(holds.every((h) => h === "pending"))
        assertAuditClean(store)
      }).pipe(Effect.provide(store.billingLayer()))
    })
  })
})

describe("idempotency (§2.7, §3.1, §4.1)", () => {
  // Updated for issue 8 #3 (§2.7 now): a second open of a pending hold is HoldInFlight, never a replayed handle.
  it.effect("opening the same id twice debits once; while the first is pending the second is HoldInFlight (also when concurrent)", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      const engine = yield* Engine
      const request = { holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "wallet_only" }
      const first = yield* engine.open(request)
      const second = yield* expectFailure(engine.open(request), "HoldInFlight")
      assert.deepStrictEqual([second.holdId, second.expiresAt], ["h1", first.hold.expiresAt])
      assert.deepStrictEqual(store.snapshot().wallets, { a: W0 - P })
      assert.deepStrictEqual(store.snapshot().tokens, { t: { remain: R0 - P, used: P } })

      const concurrent = yield* Effect.all(
        Array.from({ length: 8 }, () => Effect.result(engine.open({ ...request, holdId: "h2" }))),
        { concurrency: "unbounded" }
      )
      const opened = concurrent.flatMap((r) => r._tag === "Success" ? [r.success] : [])
      assert.strictEqual(opened.length, 1)
      assert.isTrue(opened.every((s) => s.hold.id === "h2" && s.hold.reserved === P))
      assert.deepStrictEqual(
        concurrent.flatMap((r) => r._tag === "Failure" ? [r.failure._tag] : []),
        Array(7).fill("HoldInFlight")
      )
      assert.deepStrictEqual(store.snapshot().wallets, { a: W0 - 2 * P })
      assert.deepStrictEqual(ledgerOf(store, "h2"), [["token", "reserve", -P], ["wallet", "reserve", -P]])
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("the same id with a different amount, account or token → IdempotencyConflict naming the field", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      yield* store.createAccount("b", W0)
      yield* store.createToken("t2", "a", { remain: R0 })
      const engine = yield* Engine
      yield* engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "wallet_only" })
      const before = store.snapshot()

      const amount = yield* expectFailure(
        engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P + 1, preference: "wallet_only" }),
        "IdempotencyConflict"
      )
      assert.deepStrictEqual([amount.field, amount.existing, amount.requested], ["estimate", String(P), String(P + 1)])

      const account = yield* expectFailure(
        engine.open({ holdId: "h1", accountId: "b", tokenId: "t", estimate: P, preference: "wallet_only" }),
        "IdempotencyConflict"
      )
      assert.deepStrictEqual([account.field, account.existing, account.requested], ["accountId", "a", "b"])

      const token = yield* expectFailure(
        engine.open({ holdId: "h1", accountId: "a", tokenId: "t2", estimate: P, preference: "wallet_only" }),
        "IdempotencyConflict"
      )
      assert.deepStrictEqual([token.field, token.existing, token.requested], ["tokenId", "t", "t2"])

      assert.deepStrictEqual(store.snapshot(), before)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("opening an id already settled or refunded → HoldResolved, never a new debit", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      const engine = yield* Engine
      const req = (holdId: string) => ({ holdId, accountId: "a", tokenId: "t", estimate: P, preference: "wallet_only" })
      yield* Effect.flatMap(engine.open(req("settled")), (s) => s.settle(17_000))
      yield* Effect.flatMap(engine.open(req("refunded")), (s) => s.refund)
      const before = store.snapshot()
      const settled = yield* expectFailure(engine.open(req("settled")), "HoldResolved")
      assert.deepStrictEqual([settled.status, settled.operation], ["settled", "open"])
      const refunded = yield* expectFailure(engine.open(req("refunded")), "HoldResolved")
      assert.deepStrictEqual([refunded.status, refunded.operation], ["refunded", "open"])
      assert.deepStrictEqual(store.snapshot(), before)
      assert.deepStrictEqual(store.snapshot().wallets, { a: W0 - 17_000 })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("settling twice returns the first result and charges once, even with a different amount", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      const first = yield* s.settle(17_000)
      const after = store.snapshot()
      const again = yield* engine.settle("h1", 17_000)
      const different = yield* s.settle(99_000)
      assert.deepStrictEqual(again, first)
      assert.deepStrictEqual(different, first)
      assert.deepStrictEqual(store.snapshot(), after)
      assert.deepStrictEqual(after.counters, { a: { usedQuota: 17_000, requestCount: 1 } })
      assert.deepStrictEqual(after.wallets, { a: W0 - 17_000 })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("settle after refund → HoldResolved and no money moves; refund after settle is a no-op", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      const engine = yield* Engine
      const s1 = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      yield* s1.refund
      const refunded = store.snapshot()
      const error = yield* expectFailure(s1.settle(17_000), "HoldResolved")
      assert.deepStrictEqual([error.holdId, error.status, error.operation], ["h1", "refunded", "settle"])
      assert.deepStrictEqual(store.snapshot(), refunded)
      assert.deepStrictEqual(refunded.counters, { a: { usedQuota: 0, requestCount: 0 } })

      const s2 = yield* engine.open({
        holdId: "h2",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      yield* s2.settle(17_000)
      const settled = store.snapshot()
      assert.deepStrictEqual(yield* engine.refund("h2"), { holdId: "h2", status: "settled", refunded: 0 })
      assert.deepStrictEqual(store.snapshot(), settled)
      assert.isFalse(yield* s2.needsRefund)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("settle or refund of an unknown id → HoldNotFound", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      const engine = yield* Engine
      const before = store.snapshot()
      assert.strictEqual((yield* expectFailure(engine.settle("nope", 10), "HoldNotFound")).holdId, "nope")
      assert.strictEqual((yield* expectFailure(engine.refund("nope"), "HoldNotFound")).holdId, "nope")
      yield* expectFailure(engine.get("nope"), "HoldNotFound")
      assert.deepStrictEqual(store.snapshot(), before)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})

describe("bad input → InvalidInput naming the field and showing the value, nothing changed", () => {
  const base = { holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "wallet_only" }
  const openCases: ReadonlyArray<readonly [string, Record<string, unknown>, string, string]> = [
    ["negative estimate", { estimate: -1 }, "estimate", "-1"],
    ["fractional estimate", { estimate: 2.5 }, "estimate", "2.5"],
    ["NaN estimate", { estimate: Number.NaN }, "estimate", "NaN"],
    ["estimate above MAX_SAFE_INTEGER", { estimate: Number.MAX_SAFE_INTEGER + 1 }, "estimate", "9007199254740992"],
    ["infinite estimate", { estimate: Number.POSITIVE_INFINITY }, "estimate", "Infinity"],
    ["empty holdId", { holdId: "" }, "holdId", "\"\""],
    ["empty accountId", { accountId: "" }, "accountId", "\"\""]
  ]
  for (const [name, patch, field, value] of openCases) {
    it.effect(`open with ${name}`, () => {
      const store = InMemoryStore.make()
      return Effect.gen(function*() {
        yield* walletAndToken(store)
        const engine = yield* Engine
        const before = store.snapshot()
        const error = yield* expectFailure(
          engine.open({ ...base, ...patch } as unknown as BillingSession.OpenRequest),
          "InvalidInput"
        )
        assert.strictEqual(error.field, field)
        assert.strictEqual(error.value, value)
        assert.deepStrictEqual(store.snapshot(), before)
        assert.deepStrictEqual(before.holds, {})
      }).pipe(Effect.provide(store.billingLayer()))
    })
  }

  const settleCases: ReadonlyArray<readonly [string, number, string]> = [
    ["negative actual", -5, "-5"],
    ["fractional actual", 0.5, "0.5"],
    ["NaN actual", Number.NaN, "NaN"],
    ["actual above MAX_SAFE_INTEGER", 2 ** 60, String(2 ** 60)]
  ]
  for (const [name, actual, value] of settleCases) {
    it.effect(`settle with ${name}`, () => {
      const store = InMemoryStore.make()
      return Effect.gen(function*() {
        yield* walletAndToken(store)
        const engine = yield* Engine
        const s = yield* engine.open(base)
        const before = store.snapshot()
        const error = yield* expectFailure(s.settle(actual), "InvalidInput")
        assert.strictEqual(error.field, "actual")
        assert.strictEqual(error.value, value)
        yield* expectFailure(engine.settle("h1", actual), "InvalidInput")
        assert.deepStrictEqual(store.snapshot(), before)
        assert.deepStrictEqual(before.holds, { h1: "pending" })
      }).pipe(Effect.provide(store.billingLayer()))
    })
  }
})

describe("trust bypass (§2.8)", () => {
  const threshold = 5_000_000
  const rich = (store: InMemoryStore.InMemoryStore, wallet: number, token: { remain?: number; unlimited?: boolean }) =>
    Effect.gen(function*() {
      yield* store.createAccount("a", wallet)
      yield* store.createToken("t", "a", token)
    })

  it.effect("is off by default: a rich account still reserves P", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* rich(store, 50_000_000, { unlimited: true })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      assert.isFalse(s.hold.trusted)
      assert.strictEqual(s.preConsumed, P)
      assert.deepStrictEqual(store.snapshot().wallets, { a: 50_000_000 - P })
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("on: wallet and token strictly above the threshold → 0 reserved; settle charges the full A", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* rich(store, threshold + 1, { remain: threshold + 1 })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      assert.isTrue(s.hold.trusted)
      assert.strictEqual(s.preConsumed, 0)
      assert.strictEqual(s.hold.reserved, 0)
      assert.deepStrictEqual(store.snapshot().wallets, { a: threshold + 1 })
      assert.deepStrictEqual(store.snapshot().tokens, { t: { remain: threshold + 1, used: 0 } })
      const settlement = yield* s.settle(17_000)
      assert.strictEqual(settlement.delta, 17_000)
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.wallets, { a: threshold + 1 - 17_000 })
      assert.deepStrictEqual(snap.tokens, { t: { remain: threshold + 1 - 17_000, used: 17_000 } })
      assert.deepStrictEqual(snap.counters, { a: { usedQuota: 17_000, requestCount: 1 } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer({ trustBypass: { threshold } })))
  })

  it.effect("on: an unlimited token counts as above the threshold", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* rich(store, threshold + 1, { unlimited: true })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      assert.isTrue(s.hold.trusted)
      assert.strictEqual(s.preConsumed, 0)
      yield* s.settle(17_000)
      assert.deepStrictEqual(store.snapshot().wallets, { a: threshold + 1 - 17_000 })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer({ trustBypass: { threshold } })))
  })

  it.effect("on: a balance exactly at the threshold, or a token at the threshold, is not trusted", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* rich(store, threshold, { unlimited: true })
      yield* store.createAccount("b", threshold + 1)
      yield* store.createToken("tb", "b", { remain: threshold })
      const engine = yield* Engine
      const atWallet = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      assert.isFalse(atWallet.hold.trusted)
      assert.strictEqual(atWallet.preConsumed, P)
      const atToken = yield* engine.open({
        holdId: "h2",
        accountId: "b",
        tokenId: "tb",
        estimate: P,
        preference: "wallet_only"
      })
      assert.isFalse(atToken.hold.trusted)
      assert.strictEqual(atToken.preConsumed, P)
      assert.deepStrictEqual(store.snapshot().wallets, { a: threshold - P, b: threshold + 1 - P })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer({ trustBypass: { threshold } })))
  })

  it.effect("on: never for the subscription, and force: true disables it", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* rich(store, 50_000_000, { unlimited: true })
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 0, endAt: 10_000_000 })
      const engine = yield* Engine
      const viaSub = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "subscription_first"
      })
      assert.strictEqual(viaSub.hold.parts[0]?.sourceId, "subscription")
      assert.isFalse(viaSub.hold.trusted)
      assert.strictEqual(viaSub.preConsumed, P)
      const forced = yield* engine.open({
        holdId: "h2",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only",
        force: true
      })
      assert.isFalse(forced.hold.trusted)
      assert.strictEqual(forced.preConsumed, P)
      assert.deepStrictEqual(store.snapshot().wallets, { a: 50_000_000 - P })
      assert.deepStrictEqual(store.snapshot().subscriptions, { s1: { used: P, total: 0 } })
      yield* forced.settle(60_000)
      assert.deepStrictEqual(store.snapshot().wallets, { a: 50_000_000 - 60_000 })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer({ trustBypass: { threshold } })))
  })

  it.effect("a trusted (0 reserved) hold refunds nothing and still ends refunded (§4.2)", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* rich(store, 50_000_000, { unlimited: true })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      assert.isTrue(s.hold.trusted)
      const before = store.snapshot()
      assert.deepStrictEqual(yield* s.refund, { holdId: "h1", status: "refunded", refunded: 0 })
      assert.deepStrictEqual(store.snapshot().wallets, before.wallets)
      assert.deepStrictEqual(store.snapshot().holds, { h1: "refunded" })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer({ trustBypass: { threshold } })))
  })
})

describe("preferences (§2.1)", () => {
  const withPlan = (
    store: InMemoryStore.InMemoryStore,
    plan: { used?: number; allowWalletOverflow?: boolean; status?: "active" | "expired" | "cancelled" }
  ) =>
    Effect.gen(function*() {
      yield* walletAndToken(store)
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 1_000_000, endAt: 10_000_000, ...plan })
    })
  const sourceOf = (s: BillingSession.Session) => s.hold.parts.find((p) => p.kind === "funding")?.sourceId

  it.effect("wallet_only uses the wallet even with an active subscription", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* withPlan(store, {})
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      assert.strictEqual(sourceOf(s), "wallet")
      assert.strictEqual(s.hold.preference, "wallet_only")
      assert.deepStrictEqual(store.snapshot().subscriptions, { s1: { used: 0, total: 1_000_000 } })
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("subscription_only uses the subscription, and never the wallet", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* withPlan(store, {})
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "subscription_only"
      })
      assert.strictEqual(sourceOf(s), "subscription")
      assert.deepStrictEqual(store.snapshot().wallets, { a: W0 })
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("empty, unknown and padded values normalise (default subscription_first)", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* withPlan(store, {})
      const engine = yield* Engine
      const empty = yield* engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "" })
      const unknown = yield* engine.open({
        holdId: "h2",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "cheapest"
      })
      const omitted = yield* engine.open({ holdId: "h3", accountId: "a", tokenId: "t", estimate: P })
      const padded = yield* engine.open({
        holdId: "h4",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "  wallet_only \n"
      })
      assert.deepStrictEqual([empty, unknown, omitted].map((s) => [s.hold.preference, sourceOf(s)]), [
        ["subscription_first", "subscription"],
        ["subscription_first", "subscription"],
        ["subscription_first", "subscription"]
      ])
      assert.deepStrictEqual([padded.hold.preference, sourceOf(padded)], ["wallet_only", "wallet"])
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("subscription_first with no active subscription goes straight to the wallet", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* withPlan(store, { status: "expired" })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "subscription_first"
      })
      assert.strictEqual(sourceOf(s), "wallet")
      assert.strictEqual(store.faults.calls("subscription.reserve"), 0)
      assert.strictEqual(store.faults.calls("token.reserve"), 1)
      assert.deepStrictEqual(ledgerOf(store, "h1"), [["token", "reserve", -P], ["wallet", "reserve", -P]])
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("subscription_first falls back only on InsufficientFunds: a StoreError from the subscription does NOT fall back", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* withPlan(store, {})
      const engine = yield* Engine
      const before = store.snapshot()
      store.faults.failNext("subscription.reserve")
      const error = yield* expectFailure(
        engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "subscription_first" }),
        "StoreError"
      )
      assert.strictEqual(error.operation, "subscription.reserve")
      assert.strictEqual(store.faults.calls("wallet.reserve"), 0)
      assert.deepStrictEqual(store.snapshot(), before)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("a token budget failure never falls back (subscription_first)", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", W0)
      yield* store.createToken("t", "a", { remain: P - 1 })
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 1_000_000, endAt: 10_000_000 })
      const engine = yield* Engine
      const before = store.snapshot()
      yield* expectFailure(
        engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "subscription_first" }),
        "TokenBudgetExceeded"
      )
      assert.strictEqual(store.faults.calls("token.reserve"), 1)
      assert.strictEqual(store.faults.calls("subscription.reserve"), 0)
      assert.strictEqual(store.faults.calls("wallet.reserve"), 0)
      assert.deepStrictEqual(store.snapshot(), before)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("a plan with allowWalletOverflow = false blocks the fallback to the wallet", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* withPlan(store, { used: 990_000, allowWalletOverflow: false })
      const engine = yield* Engine
      const before = store.snapshot()
      const error = yield* expectFailure(
        engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "subscription_first" }),
        "InsufficientFunds"
      )
      assert.strictEqual(error.sourceId, "subscription")
      assert.strictEqual(store.faults.calls("wallet.reserve"), 0)
      assert.deepStrictEqual(store.snapshot(), before)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("wallet_first uses the wallet when it has room", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* withPlan(store, {})
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_first"
      })
      assert.strictEqual(sourceOf(s), "wallet")
      assert.deepStrictEqual(store.snapshot().subscriptions, { s1: { used: 0, total: 1_000_000 } })
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("wallet_first falls back to the subscription on InsufficientFunds (playground, no token)", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 10_000)
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 1_000_000, endAt: 10_000_000 })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        estimate: P,
        preference: "wallet_first",
        playground: true
      })
      assert.strictEqual(sourceOf(s), "subscription")
      assert.deepStrictEqual(store.snapshot().wallets, { a: 10_000 })
      assert.deepStrictEqual(store.snapshot().subscriptions, { s1: { used: P, total: 1_000_000 } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("wallet_first falls back to the subscription on InsufficientFunds (with a token budget)", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* walletAndToken(store, 10_000)
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 1_000_000, endAt: 10_000_000 })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_first"
      })
      assert.strictEqual(sourceOf(s), "subscription")
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.wallets, { a: 10_000 })
      assert.deepStrictEqual(snap.subscriptions, { s1: { used: P, total: 1_000_000 } })
      assert.deepStrictEqual(snap.tokens, { t: { remain: R0 - P, used: P } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})

describe("events", () => {
  it.effect("Settled, Refunded and Expired are each published exactly once", () => {
    const store = InMemoryStore.make()
    const { events, layer } = capturingEvents()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      const engine = yield* Engine
      const req = (holdId: string) => ({ holdId, accountId: "a", tokenId: "t", estimate: P, preference: "wallet_only" })

      const settled = yield* engine.open(req("settled"))
      yield* settled.settle(17_000)
      yield* settled.settle(17_000)
      yield* settled.refund

      const refunded = yield* engine.open(req("refunded"))
      yield* refunded.refund
      yield* engine.refund("refunded")
      yield* expectFailure(refunded.settle(1), "HoldResolved")

      yield* engine.open(req("expired"))
      yield* TestClock.adjust("11 minutes")
      yield* engine.reapExpired()
      yield* engine.reapExpired()
      yield* engine.refund("expired")

      assert.deepStrictEqual(events.map((e) => e._tag), ["Settled", "Refunded", "Expired"])
      assert.strictEqual(countEvents(events, "Settled", "settled"), 1)
      assert.strictEqual(countEvents(events, "Refunded", "refunded"), 1)
      assert.strictEqual(countEvents(events, "Expired", "expired"), 1)
      const [s, r, x] = events
      assert.isTrue(s?._tag === "Settled" && s.settlement.actual === 17_000 && s.hold.status === "settled")
      assert.isTrue(r?._tag === "Refunded" && r.refunded === P && r.hold.status === "refunded")
      assert.isTrue(x?._tag === "Expired" && x.refunded === P && x.hold.status === "expired")
    }).pipe(Effect.provide(store.billingLayer().pipe(Layer.provide(layer))))
  })

  it.effect("a failed settle (rolled back) publishes nothing; its successful retry publishes once", () => {
    const store = InMemoryStore.make()
    const { events, layer } = capturingEvents()
    return Effect.gen(function*() {
      yield* walletAndToken(store)
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      store.faults.failNext("counters.add")
      yield* expectFailure(s.settle(17_000), "StoreError")
      assert.deepStrictEqual(events, [])
      yield* s.settle(17_000)
      assert.deepStrictEqual(events.map((e) => e._tag), ["Settled"])
    }).pipe(Effect.provide(store.billingLayer().pipe(Layer.provide(layer))))
  })
})
