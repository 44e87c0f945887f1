/**
 * Adversarial review of engine v2 (issue 10): scenarios that try to make the engine lose,
 * double-count or give away quota.
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { InMemoryStore } from "../src/index.js"
import { assertAuditClean } from "./fixtures.js"

const Engine = BillingSession.BillingSession

describe("review: corrections after overflow", () => {
  it.effect("a correction over two parts of one source (split over two subscriptions) gives the wallet's overflow back once", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 100_000)
      yield* store.createSubscription({
        id: "s1",
        accountId: "a",
        total: 50_000,
        endAt: 10_000_000,
        allowWalletOverflow: true
      })
      yield* store.createSubscription({
        id: "s2",
        accountId: "a",
        total: 50_000,
        endAt: 20_000_000,
        allowWalletOverflow: true
      })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        estimate: 80_000,
        preference: "subscription_only",
        split: true
      })
      const settlement = yield* s.settle(120_000)
      // s2 is capped at its total: 20,000 of its 40,000 more overflow into the wallet.
      assert.deepStrictEqual(settlement.parts.map((p) => [p.subjectId, p.charged, p.unbilled]), [
        ["s1", 50_000, 0],
        ["s2", 70_000, 0]
      ])
      assert.deepStrictEqual(store.snapshot().wallets, { a: 80_000 })
      yield* engine.correct({ holdId: "h1", correctionId: "c1", amount: 120_000 })
      // A full correction undoes the whole charge: every balance is back where it started.
      assert.deepStrictEqual(store.snapshot().wallets, { a: 100_000 })
      assert.deepStrictEqual(store.snapshot().subscriptions, {
        s1: { used: 0, total: 50_000 },
        s2: { used: 0, total: 50_000 }
      })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("a late charge of an expired split hold that overflows from both subscriptions, then a full correction, restores every balance", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 100_000)
      yield* store.createSubscription({
        id: "s1",
        accountId: "a",
        total: 50_000,
        endAt: 10_000_000,
        allowWalletOverflow: true
      })
      yield* store.createSubscription({
        id: "s2",
        accountId: "a",
        total: 50_000,
        endAt: 20_000_000,
        allowWalletOverflow: true
      })
      const engine = yield* Engine
      yield* engine.open({
        holdId: "h1",
        accountId: "a",
        estimate: 80_000,
        preference: "subscription_only",
        split: true,
        ttlMillis: 60_000
      })
      yield* TestClock.adjust(61_000)
      const reaped = yield* engine.reapExpired()
      assert.strictEqual(reaped.expired, 1)
      // Meanwhile another request uses 30,000 of s1: the late charge of s1's 50,000 share is capped at 20,000.
      const other = yield* engine.open({
        holdId: "h2",
        accountId: "a",
        estimate: 30_000,
        preference: "subscription_only"
      })
      yield* other.settle(30_000)
      const late = yield* engine.settle("h1", 120_000)
      assert.strictEqual(late.late, true)
      assert.deepStrictEqual(store.snapshot().subscriptions, {
        s1: { used: 50_000, total: 50_000 },
        s2: { used: 50_000, total: 50_000 }
      })
      // s1 carried 20,000 of its 50,000, s2 50,000 of its 70,000: 30,000 + 20,000 overflow into the wallet.
      assert.deepStrictEqual(store.snapshot().wallets, { a: 50_000 })
      yield* engine.correct({ holdId: "h1", correctionId: "c1", amount: 120_000 })
      assert.deepStrictEqual(store.snapshot().wallets, { a: 100_000 })
      assert.deepStrictEqual(store.snapshot().subscriptions, {
        s1: { used: 30_000, total: 50_000 },
        s2: { used: 0, total: 50_000 }
      })
      assert.deepStrictEqual(store.snapshot().counters, { a: { usedQuota: 30_000, requestCount: 2 } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})
