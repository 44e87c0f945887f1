/**
 * Issue 8 review on every database: where the issue 8 features meet — a
 * post-consume `charge` through a source outside the hold's store with a fault
 * after the external charge, and `QuotaOutOfRange` on the account's counters
 * after an external charge. The journal, token and counters are in the database.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Faults, InMemoryStore } from "@relay-billing/testkit"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { WalletAdmin } from "../src/index.js"
import { credits, dbState, engineWith, failureOf, R, setup, W } from "./external-support.js"
import { auditClean, targets, walletBilling } from "./support.js"

const C = 7_000
const MAX = Number.MAX_SAFE_INTEGER

for (const target of targets) {
  describe(`issue 8 review on ${target.name}`, () => {
    layer(walletBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 review: charge(7,000) whose counters fail after the external charge is finished by the recovery pass; a retry with 9,000 is a conflict", () =>
        Effect.gen(function*() {
          const ext = credits()
          const faults = new Faults.Faults()
          const engine = yield* engineWith(faults, [ext.external.wallet])
          yield* setup("rc", [[ext, W]])
          const request = { holdId: "rc-h", accountId: "rc", tokenId: "rc-t", estimate: 0, sources: ["credits"] }
          faults.failNext("accounts.counters")
          assert.strictEqual((yield* failureOf(engine.charge(request, C)))._tag, "StoreError")
          const conflict = yield* failureOf(engine.charge(request, 9_000))
          assert.strictEqual(conflict._tag, "IdempotencyConflict")
          yield* TestClock.adjust("11 minutes")
          assert.deepStrictEqual((yield* engine.reapExpired()).failures, [])
          const hold = yield* engine.get("rc-h")
          assert.deepStrictEqual([hold.status, hold.settlement?.actual], ["settled", C])
          assert.strictEqual((yield* engine.charge(request, C)).actual, C)
          assert.deepStrictEqual(ext.snapshot().wallets, { rc: W - C })
          assert.deepStrictEqual(yield* dbState("rc"), { usedQuota: C, requestCount: 1, R: R - C, TU: C })
          assert.deepStrictEqual(ext.audit().problems, [])
          yield* auditClean
        }))

      it.effect("issue 8 review: a settle(100) that would take usedQuota past 2^53−1 is refused typed before the external source moves; the refund gives 10 back", () =>
        Effect.gen(function*() {
          const ext = credits()
          const faults = new Faults.Faults()
          const engine = yield* engineWith(faults, [ext.external.wallet])
          yield* setup("rq", [[ext, MAX]])
          const first = yield* engine.open({ holdId: "rq-1", accountId: "rq", estimate: 10, sources: ["credits"] })
          yield* first.settle(MAX - 5)
          yield* ext.topUp("rq", W, "top-up")
          const second = yield* engine.open({ holdId: "rq-2", accountId: "rq", estimate: 10, sources: ["credits"] })
          const before = ext.snapshot().wallets
          const error = yield* failureOf(second.settle(100))
          assert.strictEqual(error._tag, "QuotaOutOfRange")
          assert.deepStrictEqual(ext.snapshot().wallets, before)
          assert.deepStrictEqual(yield* engine.refund("rq-2"), { holdId: "rq-2", status: "refunded", refunded: 10 })
          assert.deepStrictEqual(ext.snapshot().wallets, { rq: 5 + W })
          const state = yield* dbState("rq")
          assert.deepStrictEqual([state.usedQuota, state.requestCount], [MAX - 5, 1])
          yield* TestClock.adjust("11 minutes")
          assert.deepStrictEqual((yield* engine.reapExpired()).failures, [])
          assert.deepStrictEqual(ext.audit().problems, [])
          yield* auditClean
        }))

      it.effect("issue 8 review: a correction that would take the wallet past 2^53−1 is refused typed (QuotaOutOfRange), nothing written", () =>
        Effect.gen(function*() {
          const admin = yield* WalletAdmin.WalletAdmin
          const engine = yield* BillingSession.BillingSession
          yield* admin.createAccount({ id: "rw", balance: MAX - 5 })
          const session = yield* engine.open({ holdId: "rw-h", accountId: "rw", estimate: 10, sources: ["wallet"] })
          yield* session.settle(10)
          yield* admin.topUp({ accountId: "rw", amount: 15, key: "rw-top" })
          assert.strictEqual((yield* admin.account("rw")).balance, MAX)
          const error = yield* failureOf(engine.correct({ holdId: "rw-h", correctionId: "c1", amount: 10 }))
          assert.strictEqual(error._tag, "QuotaOutOfRange")
          const account = yield* admin.account("rw")
          assert.deepStrictEqual([account.balance, account.usedQuota], [MAX, 10])
          assert.deepStrictEqual((yield* engine.get("rw-h")).settlement?.corrections ?? [], [])
          yield* auditClean
        }))

      it.effect("issue 8 review: correct(10,000) of an incomplete split settlement (credits-b failed once) finishes it first and credits credits-a only", () =>
        Effect.gen(function*() {
          const extA = InMemoryStore.make({ ids: { wallet: "credits-a" } })
          const extB = InMemoryStore.make({ ids: { wallet: "credits-b" } })
          const faults = new Faults.Faults()
          const engine = yield* engineWith(faults, [extA.external.wallet, extB.external.wallet])
          yield* setup("ri", [[extA, 20_000], [extB, 30_000]])
          const session = yield* engine.open({
            holdId: "ri-h",
            accountId: "ri",
            tokenId: "ri-t",
            estimate: 50_000,
            sources: ["credits-a", "credits-b"],
            split: true
          })
          extB.faults.failNext("credits-b.settle")
          assert.strictEqual((yield* failureOf(session.settle(10_000)))._tag, "SettleIncomplete")
          extB.faults.failNext("credits-b.settle")
          const busy = yield* failureOf(engine.correct({ holdId: "ri-h", correctionId: "c1", amount: 10_000 }))
          assert.strictEqual(busy._tag, "StoreError")
          assert.deepStrictEqual([extA.snapshot().wallets, extB.snapshot().wallets], [{ ri: 10_000 }, { ri: 0 }])
          const correction = yield* engine.correct({ holdId: "ri-h", correctionId: "c1", amount: 10_000 })
          assert.deepStrictEqual(correction.parts.map((p) => [p.sourceId, p.amount]), [["credits-a", 10_000], [
            "token",
            10_000
          ]])
          yield* engine.reapExpired()
          assert.deepStrictEqual([extA.snapshot().wallets, extB.snapshot().wallets], [{ ri: 20_000 }, { ri: 30_000 }])
          assert.deepStrictEqual(yield* dbState("ri"), { usedQuota: 0, requestCount: 1, R, TU: 0 })
          assert.deepStrictEqual([extA.audit().problems, extB.audit().problems], [[], []])
          yield* auditClean
        }))
    })
  })
}
