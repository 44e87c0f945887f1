/**
 * Issue 8 review: adversarial tests where the issue 8 features meet (external
 * sources × post-consume charge, external sources × corrections).
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { InMemoryStore } from "../src/index.js"
import { assertAuditClean, composedLayer, expectFailure } from "./fixtures.js"

const Engine = BillingSession.BillingSession

const W = 1_000_000
const R = 800_000
const C = 7_000

/** The journal, counters and token live in `main`; the funding source "credits" in `ext`. */
const externalWallet = () => {
  const main = InMemoryStore.make()
  const ext = InMemoryStore.make({ ids: { wallet: "credits" } })
  const layer = composedLayer(main, { funding: [ext.external.wallet], budgets: [main.token] })
  const setup = Effect.gen(function*() {
    yield* main.createAccount("a", 0)
    yield* main.createToken("t", "a", { remain: R })
    yield* ext.createAccount("a", W)
  })
  return { main, ext, layer, setup }
}

const chargeRequest = { holdId: "c1", accountId: "a", tokenId: "t", estimate: 0, sources: ["credits"] }

describe("issue 8 review: post-consume charge through a source outside the hold's store", () => {
  it.effect("issue 8 review: charge(7,000) whose counters fail after the external charge is recorded; the recovery pass finishes it", () => {
    const { ext, layer, main, setup } = externalWallet()
    return Effect.gen(function*() {
      yield* setup
      const engine = yield* Engine
      main.faults.failNext("counters.add")
      yield* expectFailure(engine.charge(chargeRequest, C), "StoreError")
      // The external source was charged: the hold and its settle intent must say so.
      const hold = yield* engine.get("c1")
      assert.strictEqual(hold.status, "pending")
      yield* TestClock.adjust("11 minutes")
      const report = yield* engine.reapExpired()
      assert.deepStrictEqual(report.failures, [])
      const settled = yield* engine.get("c1")
      assert.strictEqual(settled.status, "settled")
      assert.strictEqual(settled.settlement?.actual, C)
      assert.deepStrictEqual(ext.snapshot().wallets, { a: W - C })
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R - C, used: C } })
      assert.deepStrictEqual(main.snapshot().counters, { a: { usedQuota: C, requestCount: 1 } })
      assertAuditClean(main)
      assertAuditClean(ext)
    }).pipe(Effect.provide(layer))
  })

  it.effect("issue 8 review: a retried charge with the same amount finishes it; another amount is an IdempotencyConflict", () => {
    const { ext, layer, main, setup } = externalWallet()
    return Effect.gen(function*() {
      yield* setup
      const engine = yield* Engine
      main.faults.failNext("counters.add")
      yield* expectFailure(engine.charge(chargeRequest, C), "StoreError")
      const conflict = yield* expectFailure(engine.charge(chargeRequest, 9_000), "IdempotencyConflict")
      assert.strictEqual(conflict.field, "actual")
      const settlement = yield* engine.charge(chargeRequest, C)
      assert.strictEqual(settlement.actual, C)
      assert.strictEqual((yield* engine.charge(chargeRequest, C)).actual, C)
      yield* expectFailure(engine.charge(chargeRequest, 9_000), "IdempotencyConflict")
      assert.deepStrictEqual(ext.snapshot().wallets, { a: W - C })
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R - C, used: C } })
      assert.deepStrictEqual(main.snapshot().counters, { a: { usedQuota: C, requestCount: 1 } })
      assertAuditClean(main)
      assertAuditClean(ext)
    }).pipe(Effect.provide(layer))
  })

  it.effect("issue 8 review: charge through an external source without faults charges once; a repeat replays", () => {
    const { ext, layer, main, setup } = externalWallet()
    return Effect.gen(function*() {
      yield* setup
      const engine = yield* Engine
      assert.strictEqual((yield* engine.charge(chargeRequest, C)).actual, C)
      assert.strictEqual((yield* engine.charge(chargeRequest, C)).actual, C)
      assert.deepStrictEqual(ext.snapshot().wallets, { a: W - C })
      assert.deepStrictEqual(main.snapshot().counters, { a: { usedQuota: C, requestCount: 1 } })
      assertAuditClean(main)
      assertAuditClean(ext)
    }).pipe(Effect.provide(layer))
  })
})

describe("issue 8 review: QuotaOutOfRange meets a source outside the hold's store", () => {
  it.effect("issue 8 review: a settle(100) that would take usedQuota past 2^53−1 is refused typed before the external source is charged; the refund gives 10 back", () => {
    const main = InMemoryStore.make()
    const ext = InMemoryStore.make({ ids: { wallet: "credits" } })
    const layer = composedLayer(main, { funding: [ext.external.wallet], budgets: [main.token] })
    const MAX = Number.MAX_SAFE_INTEGER
    return Effect.gen(function*() {
      yield* main.createAccount("a", 0)
      yield* ext.createAccount("a", MAX)
      const engine = yield* Engine
      const first = yield* engine.open({ holdId: "h1", accountId: "a", estimate: 10, sources: ["credits"] })
      yield* first.settle(MAX - 5)
      yield* ext.topUp("a", W, "top-up")
      const second = yield* engine.open({ holdId: "h2", accountId: "a", estimate: 10, sources: ["credits"] })
      const before = ext.snapshot().wallets
      const error = yield* expectFailure(second.settle(100), "QuotaOutOfRange")
      assert.strictEqual(error.field, "account.usedQuota")
      // Nothing moved: the external wallet still holds the reservation only, and the hold can be refunded.
      assert.deepStrictEqual(ext.snapshot().wallets, before)
      assert.deepStrictEqual(yield* engine.refund("h2"), { holdId: "h2", status: "refunded", refunded: 10 })
      assert.deepStrictEqual(ext.snapshot().wallets, { a: MAX - (MAX - 5) + W })
      assert.deepStrictEqual(main.snapshot().counters, { a: { usedQuota: MAX - 5, requestCount: 1 } })
      yield* TestClock.adjust("11 minutes")
      assert.deepStrictEqual((yield* engine.reapExpired()).failures, [])
      assertAuditClean(main)
      assertAuditClean(ext)
    }).pipe(Effect.provide(layer))
  })
})

describe("issue 8 review: corrections stay within the safe-integer range", () => {
  it.effect("issue 8 review: a correction that would take the in-memory wallet past 2^53−1 is refused typed (QuotaOutOfRange), nothing written", () => {
    const store = InMemoryStore.make()
    const MAX = Number.MAX_SAFE_INTEGER
    return Effect.gen(function*() {
      yield* store.createAccount("a", MAX - 5)
      const engine = yield* Engine
      const session = yield* engine.open({ holdId: "h", accountId: "a", estimate: 10 })
      yield* session.settle(10)
      yield* store.topUp("a", 15, "top-up")
      assert.deepStrictEqual(store.snapshot().wallets, { a: MAX })
      const error = yield* expectFailure(
        engine.correct({ holdId: "h", correctionId: "c1", amount: 10 }),
        "QuotaOutOfRange"
      )
      assert.strictEqual(error.field, "wallet.balance")
      assert.deepStrictEqual(store.snapshot().wallets, { a: MAX })
      assert.deepStrictEqual(store.snapshot().counters, { a: { usedQuota: 10, requestCount: 1 } })
      assert.deepStrictEqual((yield* engine.get("h")).settlement?.corrections ?? [], [])
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 review: a correction that takes a token back to exactly 2^53−1 is accepted (the bound is inclusive)", () => {
    const store = InMemoryStore.make()
    const MAX = Number.MAX_SAFE_INTEGER
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000)
      yield* store.createToken("t", "a", { remain: MAX })
      const engine = yield* Engine
      const session = yield* engine.open({ holdId: "h", accountId: "a", tokenId: "t", estimate: 10 })
      yield* session.settle(10)
      assert.deepStrictEqual(store.snapshot().tokens, { t: { remain: MAX - 10, used: 10 } })
      const ok = yield* engine.correct({ holdId: "h", correctionId: "c1", amount: 10 })
      assert.strictEqual(ok.amount, 10)
      assert.deepStrictEqual(store.snapshot().tokens, { t: { remain: MAX, used: 0 } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})

describe("issue 8 review: a correction meets an incomplete external settlement", () => {
  const splitHold = () => {
    const main = InMemoryStore.make()
    const extA = InMemoryStore.make({ ids: { wallet: "credits-a" } })
    const extB = InMemoryStore.make({ ids: { wallet: "credits-b" } })
    const layer = composedLayer(main, { funding: [extA.external.wallet, extB.external.wallet], budgets: [main.token] })
    const setup = Effect.gen(function*() {
      yield* main.createAccount("a", 0)
      yield* main.createToken("t", "a", { remain: R })
      yield* extA.createAccount("a", 20_000)
      yield* extB.createAccount("a", 30_000)
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: 50_000,
        sources: ["credits-a", "credits-b"],
        split: true
      })
      // 20,000 + 30,000 reserved, settle(10,000): credits-a charges 10,000, credits-b fails once.
      extB.faults.failNext("credits-b.settle")
      yield* expectFailure(s.settle(10_000), "SettleIncomplete")
      return engine
    })
    return { main, extA, extB, layer, setup }
  }

  it.effect("issue 8 review: correct(10,000) before recovery finishes the settle first and credits credits-a (which charged), never credits-b (which charged nothing)", () => {
    const { extA, extB, layer, main, setup } = splitHold()
    return Effect.gen(function*() {
      const engine = yield* setup
      const correction = yield* engine.correct({ holdId: "h1", correctionId: "c1", amount: 10_000 })
      assert.deepStrictEqual(correction.parts.map((p) => [p.sourceId, p.amount]), [["credits-a", 10_000], [
        "token",
        10_000
      ]])
      assert.deepStrictEqual([extA.snapshot().wallets, extB.snapshot().wallets], [{ a: 20_000 }, { a: 30_000 }])
      yield* engine.reapExpired()
      assert.deepStrictEqual([extA.snapshot().wallets, extB.snapshot().wallets], [{ a: 20_000 }, { a: 30_000 }])
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R, used: 0 } })
      assert.deepStrictEqual(main.snapshot().counters, { a: { usedQuota: 0, requestCount: 1 } })
      assertAuditClean(main)
      assertAuditClean(extA)
      assertAuditClean(extB)
    }).pipe(Effect.provide(layer))
  })

  it.effect("issue 8 review: while the failed part still cannot be settled, correct fails typed and moves nothing", () => {
    const { extA, extB, layer, main, setup } = splitHold()
    return Effect.gen(function*() {
      const engine = yield* setup
      extB.faults.failAlways("credits-b.settle")
      const error = yield* expectFailure(
        engine.correct({ holdId: "h1", correctionId: "c1", amount: 10_000 }),
        "StoreError"
      )
      assert.strictEqual(error.operation, "correct.incomplete")
      assert.deepStrictEqual([extA.snapshot().wallets, extB.snapshot().wallets], [{ a: 10_000 }, { a: 0 }])
      assert.deepStrictEqual(main.snapshot().counters, { a: { usedQuota: 10_000, requestCount: 1 } })
      extB.faults.clear()
      const correction = yield* engine.correct({ holdId: "h1", correctionId: "c1", amount: 10_000 })
      assert.deepStrictEqual(correction.parts.map((p) => [p.sourceId, p.amount]), [["credits-a", 10_000], [
        "token",
        10_000
      ]])
      assert.deepStrictEqual([extA.snapshot().wallets, extB.snapshot().wallets], [{ a: 20_000 }, { a: 30_000 }])
      assertAuditClean(main)
      assertAuditClean(extA)
      assertAuditClean(extB)
    }).pipe(Effect.provide(layer))
  })
})
