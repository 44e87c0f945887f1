/**
 * Issue 8 #10 (spec §6, "the audit also proves"), on the in-memory store: the
 * audit catches (i) a refund ledger row, with the balance moved to match, on a
 * settled hold; (ii) a part amount changed from 30,000 to 1 in the stored part
 * (the refund then moved 1 while `RefundResult` said 30,000). The knex audit's
 * versions are in packages/wallet/test/audit-parts.db.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Effect } from "effect"
import { InMemoryStore } from "../src/index.js"
import { assertAuditClean } from "./fixtures.js"

const P = 30_000

const setup = (store: InMemoryStore.InMemoryStore) =>
  Effect.gen(function*() {
    yield* store.createAccount("a", 1_000_000)
    yield* store.createToken("t", "a", { remain: 1_000_000 })
  })

describe("issue 8 #10: the in-memory audit", () => {
  it.effect("issue 8 #10 (i): a refund row (and balance) on a settled hold is reported, naming the hold", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* BillingSession.BillingSession
      const s = yield* engine.open({
        holdId: "settled-h",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      yield* s.settle(12_000)
      assertAuditClean(store)
      // Tamper: a refund of the reservation on the settled hold, with the balance moved to match
      // (so the ledger still sums to every balance).
      store.unsafeTamper((state) => {
        const wallet = state.wallets.get("a")!
        wallet.balance += P
        state.ledger.push({
          id: `L${++state.seq}`,
          at: 0,
          kind: "refund",
          sourceId: "wallet",
          subjectId: "a",
          accountId: "a",
          holdId: "settled-h",
          amount: P,
          balanceAfter: wallet.balance
        })
      })
      const problems = store.audit().problems
      assert.isTrue(
        problems.some((p) => p.includes("hold settled-h is settled") && p.includes("refund")),
        problems.join("; ")
      )
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #10 (ii): a part amount changed from 30,000 to 1 is reported before and after the refund, naming the hold and the part", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* BillingSession.BillingSession
      const s = yield* engine.open({
        holdId: "tampered-h",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      assertAuditClean(store)
      // v2: the hold's part is the only record of what the wallet reserved (no per-source record).
      store.unsafeTamper((state) => {
        const hold = state.holds.get("tampered-h")!
        state.holds.set("tampered-h", {
          ...hold,
          parts: hold.parts.map((p) => (p.sourceId === "wallet" ? { ...p, amount: 1 as typeof p.amount } : p))
        })
      })
      const before = store.audit().problems
      assert.isTrue(before.some((p) => p.includes("hold tampered-h part wallet")), before.join("; "))
      yield* s.refund
      // The refund moved 1 while the result says 30,000 (what the tamper made possible) …
      assert.strictEqual(store.snapshot().wallets["a"], 1_000_000 - P + 1)
      // … and the audit still reports the part.
      const after = store.audit().problems
      assert.isTrue(
        after.some((p) => p.includes("hold tampered-h part wallet") && p.includes("30000")),
        after.join("; ")
      )
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #10: a clean history (settle, refund, split, failed open) passes the part checks", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      yield* store.createAccount("poor", 10_000)
      yield* store.createToken("poor-t", "poor", { remain: 1_000_000 })
      yield* store.createSubscription({ id: "sub", accountId: "a", total: 50_000, endAt: 10_000_000 })
      const engine = yield* BillingSession.BillingSession
      const a = yield* engine.open({
        holdId: "c1",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "wallet_only"
      })
      yield* a.settle(45_000)
      const b = yield* engine.open({
        holdId: "c2",
        accountId: "a",
        tokenId: "t",
        estimate: P,
        preference: "subscription_first"
      })
      yield* b.refund
      const c = yield* engine.open({ holdId: "c3", accountId: "a", tokenId: "t", estimate: 80_000, split: true })
      yield* c.settle(10_000)
      // A failed open (the token was reserved, then released), then the same id succeeds elsewhere.
      yield* Effect.exit(
        engine.open({ holdId: "c4", accountId: "poor", tokenId: "poor-t", estimate: P, preference: "wallet_only" })
      )
      yield* store.topUp("poor", 50_000, "k")
      const d = yield* engine.open({
        holdId: "c4",
        accountId: "poor",
        tokenId: "poor-t",
        estimate: P,
        preference: "wallet_only"
      })
      yield* d.settle(P)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})
