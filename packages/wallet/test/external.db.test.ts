/**
 * Issue 8 #4 and #5 on every database: the hold journal, the token budget and
 * the account counters live in the database; the funding source is EXTERNAL
 * (an in-memory store standing in for a credits API: its writes do not roll
 * back with the hold's transaction). The engine's own queries go through a
 * fault plan, so its transaction can fail after the external source moved money.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingError } from "@relay-billing/core"
import type { BillingSession, FundingSource } from "@relay-billing/core"
import { Faults, InMemoryStore } from "@relay-billing/testkit"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { credits, dbState, engineWith, failureOf, R, setup, W } from "./external-support.js"
import { auditClean, targets, walletBilling } from "./support.js"

const P = 20_000
const A = 12_000

const openCredits = (engine: BillingSession.BillingSession["Service"], id: string, holdId: string) =>
  engine.open({ holdId, accountId: id, tokenId: `${id}-t`, estimate: P, sources: ["credits"] })

for (const target of targets) {
  describe(`external sources on ${target.name}`, () => {
    layer(walletBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #4a: counters fail after the external settle → a refund finishes the recorded settle: 12,000 everywhere", () =>
        Effect.gen(function*() {
          const ext = credits()
          const faults = new Faults.Faults()
          const engine = yield* engineWith(faults, [ext.external.wallet])
          yield* setup("x4a", [[ext, W]])
          yield* openCredits(engine, "x4a", "x4a-h")
          faults.failNext("accounts.counters")
          const error = yield* failureOf(engine.settle("x4a-h", A))
          assert.strictEqual(error._tag, "StoreError")
          assert.deepStrictEqual(yield* engine.refund("x4a-h"), { holdId: "x4a-h", status: "settled", refunded: 0 })
          assert.deepStrictEqual(ext.snapshot().wallets, { x4a: W - A })
          assert.deepStrictEqual(yield* dbState("x4a"), { usedQuota: A, requestCount: 1, R: R - A, TU: A })
          assert.strictEqual((yield* engine.get("x4a-h")).settlement?.actual, A)
          assert.deepStrictEqual(ext.audit().problems, [])
          yield* auditClean
        }))

      it.effect("issue 8 #4a: the journal write fails after the external settle → the reaper settles with 12,000 instead of expiring", () =>
        Effect.gen(function*() {
          const ext = credits()
          const faults = new Faults.Faults()
          const engine = yield* engineWith(faults, [ext.external.wallet])
          yield* setup("x4r", [[ext, W]])
          yield* openCredits(engine, "x4r", "x4r-h")
          faults.failNext("journal.update")
          const error = yield* failureOf(engine.settle("x4r-h", A))
          assert.strictEqual(error._tag, "StoreError")
          yield* TestClock.adjust("11 minutes")
          const report = yield* engine.reapExpired()
          assert.deepStrictEqual(report.failures, [])
          const hold = yield* engine.get("x4r-h")
          assert.deepStrictEqual([hold.status, hold.settlement?.actual], ["settled", A])
          assert.deepStrictEqual(ext.snapshot().wallets, { x4r: W - A })
          assert.deepStrictEqual(yield* dbState("x4r"), { usedQuota: A, requestCount: 1, R: R - A, TU: A })
          yield* auditClean
        }))

      it.effect("issue 8 #4b: settle(45,000) after a failed settle(12,000) → IdempotencyConflict on actual; wallet, token and usedQuota all say 12,000", () =>
        Effect.gen(function*() {
          const ext = credits()
          const faults = new Faults.Faults()
          const engine = yield* engineWith(faults, [ext.external.wallet])
          yield* setup("x4b", [[ext, W]])
          yield* openCredits(engine, "x4b", "x4b-h")
          faults.failNext("accounts.counters")
          yield* failureOf(engine.settle("x4b-h", A))
          const conflict = yield* failureOf(engine.settle("x4b-h", 45_000))
          assert.strictEqual(conflict._tag, "IdempotencyConflict")
          if (conflict._tag === "IdempotencyConflict") {
            assert.deepStrictEqual([conflict.field, conflict.existing, conflict.requested], [
              "actual",
              String(A),
              "45000"
            ])
          }
          assert.deepStrictEqual(ext.snapshot().wallets, { x4b: W - A })
          assert.deepStrictEqual(yield* dbState("x4b"), { usedQuota: A, requestCount: 1, R: R - A, TU: A })
          assert.strictEqual((yield* engine.get("x4b-h")).settlement?.actual, A)
          yield* auditClean
        }))

      it.effect("issue 8 #4c: two external sources 20,000 + 30,000, settle(10,000), the second fails once → the reaper gives the 30,000 back", () =>
        Effect.gen(function*() {
          const extA = InMemoryStore.make({ ids: { wallet: "credits-a" } })
          const extB = InMemoryStore.make({ ids: { wallet: "credits-b" } })
          const faults = new Faults.Faults()
          const engine = yield* engineWith(faults, [extA.external.wallet, extB.external.wallet])
          yield* setup("x4c", [[extA, 20_000], [extB, 30_000]])
          yield* engine.open({
            holdId: "x4c-h",
            accountId: "x4c",
            tokenId: "x4c-t",
            estimate: 50_000,
            sources: ["credits-a", "credits-b"],
            split: true
          })
          extB.faults.failNext("credits-b.settle")
          const error = yield* failureOf(engine.settle("x4c-h", 10_000))
          assert.strictEqual(error._tag, "SettleIncomplete")
          if (error._tag === "SettleIncomplete") assert.strictEqual(error.overcharged, 30_000)
          const report = yield* engine.reapExpired()
          assert.deepStrictEqual(report.failures, [])
          assert.deepStrictEqual([extA.snapshot().wallets, extB.snapshot().wallets], [{ x4c: 10_000 }, { x4c: 30_000 }])
          const hold = yield* engine.get("x4c-h")
          assert.isUndefined(hold.settlement?.incomplete)
          assert.deepStrictEqual(yield* dbState("x4c"), {
            usedQuota: 10_000,
            requestCount: 1,
            R: R - 10_000,
            TU: 10_000
          })
          yield* auditClean
        }))

      it.effect("issue 8 #4: the hold write and every release fail (a crash) → after the TTL the recovery pass releases the external reservation", () =>
        Effect.gen(function*() {
          const ext = credits()
          const faults = new Faults.Faults()
          const engine = yield* engineWith(faults, [ext.external.wallet])
          yield* setup("x4o", [[ext, W]])
          faults.failNext("journal.update")
          ext.faults.failAlways("credits.refund")
          const error = yield* failureOf(openCredits(engine, "x4o", "x4o-h"))
          assert.strictEqual(error._tag, "StoreError")
          assert.deepStrictEqual(ext.snapshot().wallets, { x4o: W - P })
          ext.faults.clear()
          yield* TestClock.adjust("11 minutes")
          assert.deepStrictEqual((yield* engine.reapExpired()).failures, [])
          assert.deepStrictEqual(ext.snapshot().wallets, { x4o: W })
          assert.deepStrictEqual(yield* dbState("x4o"), { usedQuota: 0, requestCount: 0, R, TU: 0 })
          yield* auditClean
        }))

      for (const how of ["over-reserve", "nan", "fail-after-debit"] as const) {
        it.effect(`issue 8 #5: an external plugin that debits then answers ${how} → the open fails and the debit is given back`, () =>
          Effect.gen(function*() {
            const ext = credits()
            const plugin: FundingSource.FundingSource = {
              ...ext.external.wallet,
              reserve: (req) =>
                Effect.flatMap(ext.external.wallet.reserve(req), (reservation) =>
                  how === "over-reserve"
                    ? Effect.succeed({ amount: reservation.amount + 1 })
                    : how === "nan"
                    ? Effect.succeed({ amount: Number.NaN })
                    : Effect.fail(new BillingError.StoreError({ operation: "plugin.reserve", detail: "reset" })))
            }
            const engine = yield* engineWith(new Faults.Faults(), [plugin])
            const id = `x5-${how}`
            yield* setup(id, [[ext, W]])
            const error = yield* failureOf(openCredits(engine, id, `${id}-h`))
            assert.strictEqual(error._tag, how === "fail-after-debit" ? "StoreError" : "ContractViolation")
            assert.deepStrictEqual(ext.snapshot().wallets, { [id]: W })
            assert.deepStrictEqual(yield* dbState(id), { usedQuota: 0, requestCount: 0, R, TU: 0 })
            yield* auditClean
          }))
      }
    })
  })
}
