/**
 * Issue 8 #4 and #5: funding sources OUTSIDE the hold's store (here: other
 * in-memory stores). Their writes do not roll back with the hold's transaction,
 * so the engine records its intent before calling them and recovery finishes
 * (or undoes) whatever a failure or a crash left half done.
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingError, BillingSession } from "@relay-billing/core"
import type { FundingSource } from "@relay-billing/core"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { InMemoryStore } from "../src/index.js"
import { assertAuditClean, composedLayer, expectFailure, ledgerOf } from "./fixtures.js"

const Engine = BillingSession.BillingSession

const W = 1_000_000
const R = 800_000
const P = 20_000
const A = 12_000

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

const openCredits = (holdId: string, estimate = P) =>
  Effect.gen(function*() {
    const engine = yield* Engine
    return yield* engine.open({ holdId, accountId: "a", tokenId: "t", estimate, sources: ["credits"] })
  })

describe("issue 8 #4a: the external source charged, then the engine's own write failed", () => {
  it.effect("issue 8 #4a: counters.add fails after the external settle → the hold ends settled with 12,000, a refund cannot undo it", () => {
    const { ext, layer, main, setup } = externalWallet()
    return Effect.gen(function*() {
      yield* setup
      const engine = yield* Engine
      yield* openCredits("h1")
      main.faults.failNext("counters.add")
      const error = yield* expectFailure(engine.settle("h1", A), "StoreError")
      assert.strictEqual(error.operation, "counters.add")
      // withBilling refunds after a failed settle: the recorded settle is finished instead.
      const refund = yield* engine.refund("h1")
      assert.deepStrictEqual(refund, { holdId: "h1", status: "settled", refunded: 0 })
      assert.deepStrictEqual(ext.snapshot().wallets, { a: W - A })
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R - A, used: A } })
      assert.deepStrictEqual(main.snapshot().counters, { a: { usedQuota: A, requestCount: 1 } })
      const hold = yield* engine.get("h1")
      assert.strictEqual(hold.status, "settled")
      assert.strictEqual(hold.settlement?.actual, A)
      assert.strictEqual(ext.faults.calls("credits.refund"), 0)
      assertAuditClean(main)
      assertAuditClean(ext)
    }).pipe(Effect.provide(layer))
  })

  it.effect("issue 8 #4a: the journal write fails after the external settle → the reaper settles the hold with 12,000 instead of expiring it", () => {
    const { ext, layer, main, setup } = externalWallet()
    return Effect.gen(function*() {
      yield* setup
      const engine = yield* Engine
      yield* openCredits("h1")
      main.faults.failNext("journal.update")
      yield* expectFailure(engine.settle("h1", A), "StoreError")
      assert.deepStrictEqual(ext.snapshot().wallets, { a: W - A })
      yield* TestClock.adjust("11 minutes")
      const report = yield* engine.reapExpired()
      assert.deepStrictEqual(report.failures, [])
      assert.strictEqual(report.expired, 0)
      const hold = yield* engine.get("h1")
      assert.strictEqual(hold.status, "settled")
      assert.strictEqual(hold.settlement?.actual, A)
      assert.deepStrictEqual(ext.snapshot().wallets, { a: W - A })
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R - A, used: A } })
      assert.deepStrictEqual(main.snapshot().counters, { a: { usedQuota: A, requestCount: 1 } })
      assertAuditClean(main)
      assertAuditClean(ext)
    }).pipe(Effect.provide(layer))
  })
})

describe("issue 8 #4b: a retried settle with another amount", () => {
  it.effect("issue 8 #4b: settle(45,000) after a failed settle(12,000) completes 12,000 and fails with IdempotencyConflict on actual", () => {
    const { ext, layer, main, setup } = externalWallet()
    return Effect.gen(function*() {
      yield* setup
      const engine = yield* Engine
      yield* openCredits("h1")
      main.faults.failNext("counters.add")
      yield* expectFailure(engine.settle("h1", A), "StoreError")
      const conflict = yield* expectFailure(engine.settle("h1", 45_000), "IdempotencyConflict")
      assert.deepStrictEqual(
        { field: conflict.field, existing: conflict.existing, requested: conflict.requested },
        { field: "actual", existing: String(A), requested: "45000" }
      )
      // Wallet, token and counters all say 12,000.
      assert.deepStrictEqual(ext.snapshot().wallets, { a: W - A })
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R - A, used: A } })
      assert.deepStrictEqual(main.snapshot().counters, { a: { usedQuota: A, requestCount: 1 } })
      assert.strictEqual((yield* engine.get("h1")).settlement?.actual, A)
      // The recorded amount answers with the settlement.
      assert.strictEqual((yield* engine.settle("h1", A)).actual, A)
      assertAuditClean(main)
      assertAuditClean(ext)
    }).pipe(Effect.provide(layer))
  })

  it.effect("issue 8 #4b: a refund recorded first decides the hold: a later settle fails HoldResolved and moves nothing", () => {
    const { ext, layer, main, setup } = externalWallet()
    return Effect.gen(function*() {
      yield* setup
      const engine = yield* Engine
      yield* openCredits("h1")
      main.faults.failNext("journal.update")
      yield* expectFailure(engine.refund("h1"), "StoreError")
      const resolved = yield* expectFailure(engine.settle("h1", A), "HoldResolved")
      assert.strictEqual(resolved.status, "refunded")
      assert.strictEqual((yield* engine.get("h1")).status, "refunded")
      assert.deepStrictEqual(ext.snapshot().wallets, { a: W })
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R, used: 0 } })
      assert.deepStrictEqual(main.snapshot().counters, { a: { usedQuota: 0, requestCount: 0 } })
      assertAuditClean(main)
      assertAuditClean(ext)
    }).pipe(Effect.provide(layer))
  })
})

describe("issue 8 #4c: split funding over two external sources", () => {
  it.effect("issue 8 #4c: 20,000 + 30,000, settle(10,000), the second settle fails once → incomplete says 30,000 overcharged and the reaper gives it back", () => {
    const main = InMemoryStore.make()
    const extA = InMemoryStore.make({ ids: { wallet: "credits-a" } })
    const extB = InMemoryStore.make({ ids: { wallet: "credits-b" } })
    const layer = composedLayer(main, { funding: [extA.external.wallet, extB.external.wallet], budgets: [main.token] })
    return Effect.gen(function*() {
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
      assert.deepStrictEqual(s.hold.parts.map((p) => [p.sourceId, p.amount]), [["credits-a", 20_000], [
        "credits-b",
        30_000
      ], [
        "token",
        50_000
      ]])
      extB.faults.failNext("credits-b.settle")
      const error = yield* expectFailure(s.settle(10_000), "SettleIncomplete")
      assert.strictEqual(error.failedSourceId, "credits-b")
      // The truth: credits-b still holds 30,000 that the customer does not owe.
      assert.strictEqual(error.overcharged, 30_000)
      const hold = yield* engine.get("h1")
      assert.strictEqual(hold.settlement?.incomplete?.overcharged, 30_000)
      assert.deepStrictEqual([extA.snapshot().wallets, extB.snapshot().wallets], [{ a: 10_000 }, { a: 0 }])

      // The recovery pass finishes the recorded settle.
      const report = yield* engine.reapExpired()
      assert.deepStrictEqual(report.failures, [])
      assert.deepStrictEqual([extA.snapshot().wallets, extB.snapshot().wallets], [{ a: 10_000 }, { a: 30_000 }])
      const done = yield* engine.get("h1")
      assert.strictEqual(done.status, "settled")
      assert.isUndefined(done.settlement?.incomplete)
      assert.deepStrictEqual(done.settlement?.parts.map((p) => [p.sourceId, p.charged]), [["credits-a", 10_000], [
        "credits-b",
        0
      ], ["token", 10_000]])
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R - 10_000, used: 10_000 } })
      assert.deepStrictEqual(main.snapshot().counters, { a: { usedQuota: 10_000, requestCount: 1 } })
      // A second pass has nothing left to do.
      yield* engine.reapExpired()
      assert.deepStrictEqual([extA.snapshot().wallets, extB.snapshot().wallets], [{ a: 10_000 }, { a: 30_000 }])
      assertAuditClean(main)
      assertAuditClean(extA)
      assertAuditClean(extB)
    }).pipe(Effect.provide(layer))
  })
})

describe("issue 8 #4: a crash between an external reservation and the hold's commit", () => {
  it.effect("issue 8 #4: the hold write fails and so does every release → no hold; after the TTL the recovery pass releases the external reservation", () => {
    const { ext, layer, main, setup } = externalWallet()
    return Effect.gen(function*() {
      yield* setup
      const engine = yield* Engine
      main.faults.failNext("journal.update")
      // The external source is unreachable for the compensation (as if the process had died).
      ext.faults.failAlways("credits.refund")
      yield* expectFailure(openCredits("h1"), "StoreError")
      assert.deepStrictEqual(main.snapshot().holds, {})
      assert.deepStrictEqual(ext.snapshot().wallets, { a: W - P })
      ext.faults.clear()
      yield* TestClock.adjust("11 minutes")
      const report = yield* engine.reapExpired()
      assert.deepStrictEqual(report.failures, [])
      assert.deepStrictEqual(ext.snapshot().wallets, { a: W })
      assert.deepStrictEqual(ledgerOf(ext, "h1"), [["credits", "reserve", -P], ["credits", "release", P]])
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R, used: 0 } })
      // The id is free again.
      const s = yield* openCredits("h1")
      assert.strictEqual(s.preConsumed, P)
      assertAuditClean(main)
      assertAuditClean(ext)
    }).pipe(Effect.provide(layer))
  })
})

describe("issue 8 #4: an earlier open of the same id left an external reservation behind", () => {
  /** Two external sources, "credits-a" and "credits-b", each in its own store. */
  const twoExternal = (bBalance: number) => {
    const main = InMemoryStore.make()
    const extA = InMemoryStore.make({ ids: { wallet: "credits-a" } })
    const extB = InMemoryStore.make({ ids: { wallet: "credits-b" } })
    const layer = composedLayer(main, { funding: [extA.external.wallet, extB.external.wallet], budgets: [main.token] })
    const setup = Effect.gen(function*() {
      yield* main.createAccount("a", 0)
      yield* main.createToken("t", "a", { remain: R })
      yield* extA.createAccount("a", W)
      yield* extB.createAccount("a", bBalance)
    })
    const open = (sources: ReadonlyArray<string>) =>
      Effect.flatMap(
        Engine,
        (engine) => engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P, sources })
      )
    /** The first open reserves on credits-a, its hold write fails and so does the release. */
    const strand = Effect.gen(function*() {
      main.faults.failNext("journal.update")
      extA.faults.failAlways("credits-a.refund")
      yield* expectFailure(open(["credits-a"]), "StoreError")
      assert.deepStrictEqual(extA.snapshot().wallets, { a: W - P })
      extA.faults.clear()
    })
    return { main, extA, extB, layer, setup, open, strand }
  }

  it.effect("a later open of the id that fails (insufficient on credits-b) releases credits-a's leftover at once", () => {
    const t = twoExternal(0)
    return Effect.gen(function*() {
      yield* t.setup
      yield* t.strand
      yield* expectFailure(t.open(["credits-b"]), "InsufficientFunds")
      assert.deepStrictEqual(t.extA.snapshot().wallets, { a: W })
      assert.deepStrictEqual(t.main.snapshot().holds, {})
      // Nothing is left for the recovery pass to do.
      yield* TestClock.adjust("11 minutes")
      const report = yield* Effect.flatMap(Engine, (engine) => engine.reapExpired())
      assert.deepStrictEqual(report.failures, [])
      assert.deepStrictEqual(t.extA.snapshot().wallets, { a: W })
      assertAuditClean(t.extA)
      assertAuditClean(t.extB)
    }).pipe(Effect.provide(t.layer))
  })

  it.effect("a later open of the id that succeeds on credits-b releases credits-a's leftover in its transaction", () => {
    const t = twoExternal(W)
    return Effect.gen(function*() {
      yield* t.setup
      yield* t.strand
      const session = yield* t.open(["credits-b"])
      assert.deepStrictEqual(t.extA.snapshot().wallets, { a: W })
      assert.deepStrictEqual(t.extB.snapshot().wallets, { a: W - P })
      yield* session.settle(A)
      assert.deepStrictEqual(t.extB.snapshot().wallets, { a: W - A })
      assert.deepStrictEqual(t.extA.snapshot().wallets, { a: W })
      assertAuditClean(t.main)
      assertAuditClean(t.extA)
      assertAuditClean(t.extB)
    }).pipe(Effect.provide(t.layer))
  })
})

// ------------------------------------------------------------------ #5 misbehaving plugins

type Misbehaviour = "over-reserve" | "nan" | "fail-after-debit" | "die-after-debit"

/** Wraps a well-behaved source: the reserve really debits, then misbehaves. */
const misbehaving = (
  inner: FundingSource.FundingSource,
  how: Misbehaviour,
  storeId?: string
): FundingSource.FundingSource => ({
  ...inner,
  id: inner.id,
  ...(storeId !== undefined ? { storeId } : {}),
  reserve: (req) =>
    Effect.flatMap(inner.reserve(req), (reservation) => {
      switch (how) {
        case "over-reserve":
          return Effect.succeed({ amount: reservation.amount * 2 })
        case "nan":
          return Effect.succeed({ amount: Number.NaN })
        case "fail-after-debit":
          return Effect.fail(new BillingError.StoreError({ operation: "plugin.reserve", detail: "connection reset" }))
        case "die-after-debit":
          return Effect.die(new Error("plugin crashed"))
      }
    })
})

describe("issue 8 #5: a plugin that over-reserves, answers NaN, or dies after debiting", () => {
  for (const how of ["over-reserve", "nan", "fail-after-debit", "die-after-debit"] as const) {
    it.effect(`issue 8 #5: EXTERNAL plugin (${how}) → the open fails and whatever it took is given back`, () => {
      const main = InMemoryStore.make()
      const ext = InMemoryStore.make({ ids: { wallet: "credits" } })
      const layer = composedLayer(main, { funding: [misbehaving(ext.external.wallet, how)], budgets: [main.token] })
      return Effect.gen(function*() {
        yield* main.createAccount("a", 0)
        yield* main.createToken("t", "a", { remain: R })
        yield* ext.createAccount("a", W)
        const exit = yield* Effect.exit(openCredits("h1"))
        assert.strictEqual(exit._tag, "Failure")
        if (how === "over-reserve" || how === "nan") {
          const error = yield* expectFailure(openCredits("h2"), "ContractViolation")
          assert.strictEqual(error.sourceId, "credits")
        }
        assert.deepStrictEqual(ext.snapshot().wallets, { a: W })
        assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R, used: 0 } })
        assert.deepStrictEqual(main.snapshot().holds, {})
        assertAuditClean(main)
        assertAuditClean(ext)
      }).pipe(Effect.provide(layer))
    })

    it.effect(`issue 8 #5: plugin in the hold's store (${how}) → the rollback gives back whatever it took`, () => {
      const store = InMemoryStore.make()
      const layer = composedLayer(store, {
        funding: [misbehaving({ ...store.external.wallet, id: "credits" }, how, store.id)],
        budgets: [store.external.token]
      })
      return Effect.gen(function*() {
        yield* store.createAccount("a", W)
        yield* store.createToken("t", "a", { remain: R })
        const before = store.snapshot()
        const exit = yield* Effect.exit(openCredits("h1"))
        assert.strictEqual(exit._tag, "Failure")
        assert.deepStrictEqual(store.snapshot(), before)
        assertAuditClean(store)
      }).pipe(Effect.provide(layer))
    })
  }
})
