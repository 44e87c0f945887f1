/**
 * Issue 8 #14, #15 and the usedQuota part of #10 on the in-memory store:
 * corrections of a settled charge (billing-semantics §4.4), `usedQuota`
 * growing by what was charged (§3.4), and the audit proving
 * `usedQuota = settled charges − corrections` (§6).
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { InMemoryStore } from "../src/index.js"
import { assertAuditClean, composedLayer, expectFailure, ledgerOf } from "./fixtures.js"

const Engine = BillingSession.BillingSession

/** Ledger rows of kind `correction` of one hold, as `[sourceId, amount]`. */
const corrections = (store: InMemoryStore.InMemoryStore, holdId: string) =>
  ledgerOf(store, holdId).filter(([, kind]) => kind === "correction").map(([source, , amount]) => [source, amount])

describe("issue 8 #14: corrections of a settled charge", () => {
  it.effect("issue 8 #14: a correction gives part of a settled charge back to the wallet and the token; usedQuota goes down, requestCount stays", () => {
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
      yield* s.settle(12_000)
      const result = yield* engine.correct({ holdId: "h1", correctionId: "support-1", amount: 5_000 })
      assert.strictEqual(result.holdId, "h1")
      assert.strictEqual(result.id, "support-1")
      assert.strictEqual(result.amount, 5_000)
      assert.strictEqual(result.remaining, 7_000)
      assert.deepStrictEqual(
        result.parts.map((p) => [p.kind, p.sourceId, p.subjectId, p.amount, p.balanceAfter]),
        [["funding", "wallet", "a", 5_000, 993_000], ["budget", "token", "t", 5_000, 993_000]]
      )
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.wallets, { a: 993_000 })
      assert.deepStrictEqual(snap.tokens, { t: { remain: 993_000, used: 7_000 } })
      assert.deepStrictEqual(snap.counters, { a: { usedQuota: 7_000, requestCount: 1 } })
      assert.deepStrictEqual(corrections(store, "h1"), [["token", 5_000], ["wallet", 5_000]])
      const hold = yield* engine.get("h1")
      assert.strictEqual(hold.status, "settled")
      assert.deepStrictEqual(hold.settlement?.corrections?.map((c) => [c.id, c.amount]), [["support-1", 5_000]])
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #14: the same correction id and amount returns the first result and moves nothing; another amount is an IdempotencyConflict", () => {
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
      yield* s.settle(12_000)
      const first = yield* engine.correct({ holdId: "h1", correctionId: "c1", amount: 4_000 })
      const after = store.snapshot()
      yield* TestClock.adjust(1_000)
      const again = yield* engine.correct({ holdId: "h1", correctionId: "c1", amount: 4_000 })
      assert.deepStrictEqual(again, first)
      assert.deepStrictEqual(store.snapshot(), after)
      const conflict = yield* expectFailure(
        engine.correct({ holdId: "h1", correctionId: "c1", amount: 4_001 }),
        "IdempotencyConflict"
      )
      assert.strictEqual(conflict.existing, "4000")
      assert.strictEqual(conflict.requested, "4001")
      assert.strictEqual(conflict.code, "idempotency_conflict")
      assert.deepStrictEqual(store.snapshot(), after)
      assert.deepStrictEqual(corrections(store, "h1"), [["token", 4_000], ["wallet", 4_000]])
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #14: a correction never exceeds what is still charged (typed, naming the amount and what is left)", () => {
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
      yield* s.settle(12_000)
      yield* engine.correct({ holdId: "h1", correctionId: "c1", amount: 5_000 })
      const before = store.snapshot()
      const error = yield* expectFailure(
        engine.correct({ holdId: "h1", correctionId: "c2", amount: 7_001 }),
        "CorrectionExceedsCharge"
      )
      assert.strictEqual(error.amount, 7_001)
      assert.strictEqual(error.remaining, 7_000)
      assert.strictEqual(error.code, "billing_correction_exceeds_charge")
      assert.match(error.message, /7001.*7000/)
      assert.deepStrictEqual(store.snapshot(), before)
      const all = yield* engine.correct({ holdId: "h1", correctionId: "c2", amount: 7_000 })
      assert.strictEqual(all.remaining, 0)
      assert.deepStrictEqual(store.snapshot().wallets, { a: 1_000_000 })
      assert.deepStrictEqual(store.snapshot().tokens, { t: { remain: 1_000_000, used: 0 } })
      assert.deepStrictEqual(store.snapshot().counters, { a: { usedQuota: 0, requestCount: 1 } })
      const none = yield* expectFailure(
        engine.correct({ holdId: "h1", correctionId: "c3", amount: 1 }),
        "CorrectionExceedsCharge"
      )
      assert.strictEqual(none.remaining, 0)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #14: only a settled hold can be corrected: pending, refunded and expired are HoldResolved, an unknown id HoldNotFound", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000_000)
      const engine = yield* Engine
      yield* engine.open({
        holdId: "pending",
        accountId: "a",
        estimate: 10_000,
        preference: "wallet_only",
        ttlMillis: 1_000_000
      })
      const r = yield* engine.open({
        holdId: "refunded",
        accountId: "a",
        estimate: 10_000,
        preference: "wallet_only",
        ttlMillis: 1_000_000
      })
      yield* r.refund
      yield* engine.open({
        holdId: "expired",
        accountId: "a",
        estimate: 10_000,
        preference: "wallet_only",
        ttlMillis: 10
      })
      yield* TestClock.adjust(100)
      yield* engine.reapExpired()
      const before = store.snapshot()
      for (
        const [holdId, status] of [["pending", "pending"], ["refunded", "refunded"], ["expired", "expired"]] as const
      ) {
        const error = yield* expectFailure(engine.correct({ holdId, correctionId: "c", amount: 1 }), "HoldResolved")
        assert.strictEqual(error.status, status)
        assert.strictEqual(error.operation, "correct")
      }
      yield* expectFailure(engine.correct({ holdId: "nope", correctionId: "c", amount: 1 }), "HoldNotFound")
      assert.deepStrictEqual(store.snapshot(), before)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #14: bad input is an InvalidInput naming the field, and changes nothing", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000_000)
      const engine = yield* Engine
      const s = yield* engine.open({ holdId: "h1", accountId: "a", estimate: 10_000, preference: "wallet_only" })
      yield* s.settle(10_000)
      const before = store.snapshot()
      const cases: ReadonlyArray<readonly [Record<string, unknown>, string, string]> = [
        [{ holdId: "h1", correctionId: "c", amount: 0 }, "amount", "0"],
        [{ holdId: "h1", correctionId: "c", amount: -5 }, "amount", "-5"],
        [{ holdId: "h1", correctionId: "c", amount: 1.5 }, "amount", "1.5"],
        [
          { holdId: "h1", correctionId: "c", amount: Number.MAX_SAFE_INTEGER + 2 },
          "amount",
          String(Number.MAX_SAFE_INTEGER + 2)
        ],
        [{ holdId: "h1", correctionId: "", amount: 1 }, "correctionId", "\"\""],
        [{ holdId: "h1", amount: 1 }, "correctionId", "undefined"]
      ]
      for (const [input, field, value] of cases) {
        const error = yield* expectFailure(
          engine.correct(input as unknown as BillingSession.CorrectRequest),
          "InvalidInput"
        )
        assert.strictEqual(error.field, field, JSON.stringify(input))
        assert.strictEqual(error.value, value, JSON.stringify(input))
      }
      assert.deepStrictEqual(store.snapshot(), before)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #14: split funding is credited last charged first (the wallet, then the subscription)", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 30_000)
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 20_000, endAt: 10_000_000 })
      const engine = yield* Engine
      const s = yield* engine.open({ holdId: "h1", accountId: "a", estimate: 50_000, split: true })
      assert.deepStrictEqual(s.hold.parts.map((p) => [p.sourceId, p.amount]), [["subscription", 20_000], [
        "wallet",
        30_000
      ]])
      yield* s.settle(50_000)
      const result = yield* engine.correct({ holdId: "h1", correctionId: "dispute", amount: 35_000 })
      assert.deepStrictEqual(result.parts.map((p) => [p.sourceId, p.amount]), [["wallet", 30_000], [
        "subscription",
        5_000
      ]])
      assert.deepStrictEqual(store.snapshot().wallets, { a: 30_000 })
      assert.deepStrictEqual(store.snapshot().subscriptions, { s1: { used: 15_000, total: 20_000 } })
      assert.deepStrictEqual(store.snapshot().counters, { a: { usedQuota: 15_000, requestCount: 1 } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #14: a subscription's overflow charged to the wallet is given back first, then the subscription's usage", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000_000)
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 100_000, endAt: 10_000_000 })
      const engine = yield* Engine
      const s = yield* engine.open({ holdId: "h1", accountId: "a", estimate: 60_000, preference: "subscription_only" })
      yield* s.settle(160_000)
      assert.deepStrictEqual(store.snapshot().wallets, { a: 940_000 })
      yield* engine.correct({ holdId: "h1", correctionId: "c1", amount: 70_000 })
      assert.deepStrictEqual(store.snapshot().wallets, { a: 1_000_000 })
      assert.deepStrictEqual(store.snapshot().subscriptions, { s1: { used: 90_000, total: 100_000 } })
      assert.deepStrictEqual(corrections(store, "h1"), [["wallet", 60_000], ["subscription", 10_000]])
      assert.deepStrictEqual(store.snapshot().counters, { a: { usedQuota: 90_000, requestCount: 1 } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #14: a hold charged through a source without `correct` is refused typed, and nothing changes", () => {
    const main = InMemoryStore.make()
    const { correct: _dropped, ...plain } = main.external.wallet
    return Effect.gen(function*() {
      yield* main.createAccount("a", 1_000_000)
      yield* main.createToken("t", "a", { remain: 1_000_000 })
      const engine = yield* Engine
      const s = yield* engine.open({
        holdId: "h1",
        accountId: "a",
        tokenId: "t",
        estimate: 30_000,
        preference: "wallet_only"
      })
      yield* s.settle(12_000)
      const before = main.snapshot()
      const error = yield* expectFailure(
        engine.correct({ holdId: "h1", correctionId: "c1", amount: 1_000 }),
        "CorrectionUnsupported"
      )
      assert.strictEqual(error.sourceId, "wallet")
      assert.strictEqual(error.code, "billing_correction_unsupported")
      assert.deepStrictEqual(main.snapshot(), before)
      assert.deepStrictEqual(corrections(main, "h1"), [])
      assertAuditClean(main)
    }).pipe(Effect.provide(composedLayer(main, { funding: [plain], budgets: [main.token] })))
  })

  it.effect("issue 8 #14: an external source credited before the hold's transaction failed is not credited twice by the retry", () => {
    const main = InMemoryStore.make()
    const ext = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* main.createAccount("a", 0)
      yield* ext.createAccount("a", 1_000_000)
      const engine = yield* Engine
      const s = yield* engine.open({ holdId: "h1", accountId: "a", estimate: 30_000, preference: "wallet_only" })
      yield* s.settle(12_000)
      main.faults.failNext("journal.update")
      yield* expectFailure(engine.correct({ holdId: "h1", correctionId: "c1", amount: 2_000 }), "StoreError")
      // The external wallet was credited; the hold records nothing yet.
      assert.deepStrictEqual(ext.snapshot().wallets, { a: 990_000 })
      assert.strictEqual((yield* engine.get("h1")).settlement?.corrections, undefined)
      const retried = yield* engine.correct({ holdId: "h1", correctionId: "c1", amount: 2_000 })
      assert.strictEqual(retried.remaining, 10_000)
      assert.deepStrictEqual(ext.snapshot().wallets, { a: 990_000 })
      assert.deepStrictEqual(main.snapshot().counters, { a: { usedQuota: 10_000, requestCount: 1 } })
    }).pipe(Effect.provide(composedLayer(main, { funding: [ext.external.wallet], budgets: [main.token] })))
  })
})

describe("issue 8 #15: usedQuota grows by what was charged", () => {
  it.effect("issue 8 #15: a settle with unbilled overflow adds A less the unbilled amount to usedQuota", () => {
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
      const s = yield* engine.open({ holdId: "h1", accountId: "a", estimate: 60_000, preference: "subscription_only" })
      const settlement = yield* s.settle(160_000)
      assert.strictEqual(settlement.parts[0]!.unbilled, 60_000)
      assert.deepStrictEqual(store.snapshot().counters, { a: { usedQuota: 100_000, requestCount: 1 } })
      assert.deepStrictEqual(store.snapshot().wallets, { a: 1_000_000 })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})

describe("issue 8 #10: the audit proves usedQuota = settled charges − corrections", () => {
  it.effect("issue 8 #10: usedQuota += 5000 written behind the engine's back is reported, naming the account", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000_000)
      yield* store.createAccount("b", 1_000_000)
      const engine = yield* Engine
      const s = yield* engine.open({ holdId: "h1", accountId: "a", estimate: 30_000, preference: "wallet_only" })
      yield* s.settle(12_000)
      yield* engine.correct({ holdId: "h1", correctionId: "c1", amount: 2_000 })
      assertAuditClean(store)
      yield* store.counters.add("a", { usedQuota: 5_000, requestCount: 0 })
      const problems = store.audit().problems
      assert.strictEqual(problems.length, 1, problems.join("; "))
      assert.match(problems[0]!, /account a: usedQuota 15000 .* 10000/)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})
