/**
 * Adversarial review of engine v2 (issue 10) with the knex sources on every database:
 * a correction over two parts of one source (split over two subscriptions) after the
 * last one's charge overflowed into the wallet gives the overflow back once, and each part
 * gives back only the overflow the chain carried for it.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { account, auditClean, subscribe, subscriptionBilling, targets, used, walletState } from "./support.js"

for (const target of targets) {
  describe(`review of engine v2 with subscriptions on ${target.name}`, () => {
    layer(subscriptionBilling(target), { timeout: 60_000 })((it) => {
      it.effect("a full correction of a split hold whose second subscription overflowed into the wallet restores every balance", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("rv", 100_000)
          yield* subscribe("rv-x", "rv", { total: 50_000, durationSeconds: 10 * 86_400, allowWalletOverflow: true })
          yield* subscribe("rv-y", "rv", { total: 50_000, durationSeconds: 20 * 86_400, allowWalletOverflow: true })
          const s = yield* billing.open({
            holdId: "rv-h",
            accountId: "rv",
            estimate: 80_000,
            preference: "subscription_only",
            split: true
          })
          assert.deepStrictEqual(s.hold.parts.map((p) => [p.subjectId, p.amount]), [["rv-x", 50_000], ["rv-y", 30_000]])
          yield* s.settle(120_000)
          // rv-y is capped at its total (20_000 more of the 40_000): the other 20_000 overflow into the wallet.
          assert.deepStrictEqual([yield* used("rv-x"), yield* used("rv-y")], [50_000, 50_000])
          assert.deepStrictEqual(yield* walletState("rv"), { W: 80_000, usedQuota: 120_000, requestCount: 1 })
          yield* billing.correct({ holdId: "rv-h", correctionId: "all", amount: 120_000 })
          // Before the fix: W 120_000 (the overflow given back once per part) and rv-x at 20_000.
          assert.deepStrictEqual(yield* walletState("rv"), { W: 100_000, usedQuota: 0, requestCount: 1 })
          assert.deepStrictEqual([yield* used("rv-x"), yield* used("rv-y")], [0, 0])
          yield* auditClean
        }))

      it.effect("a late charge of an expired split hold that overflows from both subscriptions, corrected in full, gives each subscription back only its own charge", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("lt", 100_000)
          yield* subscribe("lt-x", "lt", { total: 50_000, durationSeconds: 10 * 86_400, allowWalletOverflow: true })
          yield* subscribe("lt-y", "lt", { total: 50_000, durationSeconds: 20 * 86_400, allowWalletOverflow: true })
          yield* billing.open({
            holdId: "lt-h",
            accountId: "lt",
            estimate: 80_000,
            preference: "subscription_only",
            split: true,
            ttlMillis: 60_000
          })
          yield* TestClock.adjust(61_000)
          assert.strictEqual((yield* billing.reapExpired()).expired, 1)
          // Another request uses 30,000 of lt-x: the late charge of its 50,000 share is capped at 20,000.
          const other = yield* billing.open({
            holdId: "lt-o",
            accountId: "lt",
            estimate: 30_000,
            preference: "subscription_only"
          })
          yield* other.settle(30_000)
          const late = yield* billing.settle("lt-h", 120_000)
          assert.strictEqual(late.late, true)
          assert.deepStrictEqual([yield* used("lt-x"), yield* used("lt-y")], [50_000, 50_000])
          assert.deepStrictEqual(yield* walletState("lt"), { W: 50_000, usedQuota: 150_000, requestCount: 2 })
          yield* billing.correct({ holdId: "lt-h", correctionId: "all", amount: 120_000 })
          // Before the fix: lt-x 0 (the other hold's 30,000 erased) and lt-y 30,000.
          assert.deepStrictEqual([yield* used("lt-x"), yield* used("lt-y")], [30_000, 0])
          assert.deepStrictEqual(yield* walletState("lt"), { W: 100_000, usedQuota: 30_000, requestCount: 2 })
          yield* auditClean
        }))

      it.effect("8 concurrent corrections of 30,000 (distinct ids) of a hold whose subscription overflowed 60,000 into the wallet: 5 land, the overflow comes back once", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("rc", 1_000_000)
          yield* subscribe("rc-s", "rc", { total: 100_000, allowWalletOverflow: true })
          const s = yield* billing.open({
            holdId: "rc-h",
            accountId: "rc",
            estimate: 60_000,
            preference: "subscription_only"
          })
          yield* s.settle(160_000)
          assert.deepStrictEqual(yield* walletState("rc"), { W: 940_000, usedQuota: 160_000, requestCount: 1 })
          const results = yield* Effect.forEach(
            Array.from({ length: 8 }, (_, i) => i),
            (i) => Effect.result(billing.correct({ holdId: "rc-h", correctionId: `c${i}`, amount: 30_000 })),
            { concurrency: "unbounded" }
          )
          const landed = results.filter((r) => r._tag === "Success").length
          const refused = results.flatMap((r) => r._tag === "Failure" ? [r.failure._tag] : [])
          assert.strictEqual(landed, 5)
          assert.deepStrictEqual(refused, [
            "CorrectionExceedsCharge",
            "CorrectionExceedsCharge",
            "CorrectionExceedsCharge"
          ])
          // 150,000 corrected: the wallet's 60,000 overflow back, then 90,000 of the subscription's usage.
          assert.deepStrictEqual(yield* walletState("rc"), { W: 1_000_000, usedQuota: 10_000, requestCount: 1 })
          assert.strictEqual(yield* used("rc-s"), 10_000)
          yield* auditClean
        }))
    })
  })
}
