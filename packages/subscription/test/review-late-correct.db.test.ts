/**
 * Review of issue 9 (adversarial): a late charge (billing-semantics §6) on a
 * subscription, with its overflow to the wallet, is corrected like a settled
 * one (§4.4): the wallet overflow comes back first, then `amount_used`; the
 * audit stays clean.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import {
  account,
  auditClean,
  ledgerRows,
  subscribe,
  subscriptionBilling,
  targets,
  used,
  walletState
} from "./support.js"

const correctionRows = (holdId: string) =>
  Effect.map(ledgerRows({ holdId }), (rows) => rows.filter((r) => r.includes(" correction ")))

for (const target of targets) {
  describe(`review: correcting a late subscription charge on ${target.name}`, () => {
    layer(subscriptionBilling(target, { session: { holdTtlMillis: 15_000 } }), { timeout: 60_000 })((it) => {
      it.effect("the late overflow comes back from the wallet first, then amount_used; audit clean", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("lo", 1_000_000, { remain: 1_000_000 })
          yield* subscribe("lo-s", "lo", { total: 100_000 })
          const s = yield* billing.open({
            holdId: "lo-h",
            accountId: "lo",
            tokenId: "lo-t",
            estimate: 60_000,
            preference: "subscription_only"
          })
          yield* TestClock.adjust("16 seconds")
          assert.strictEqual((yield* billing.reapExpired()).expired, 1)
          const late = yield* s.settle(160_000)
          assert.strictEqual(late.late, true)
          assert.strictEqual(yield* used("lo-s"), 100_000)
          assert.deepStrictEqual(yield* walletState("lo", "lo-t"), {
            W: 940_000,
            usedQuota: 160_000,
            requestCount: 1,
            R: 840_000,
            TU: 160_000
          })
          yield* auditClean
          const result = yield* billing.correct({ holdId: "lo-h", correctionId: "refund-1", amount: 70_000 })
          assert.strictEqual(result.remaining, 90_000)
          assert.strictEqual(yield* used("lo-s"), 90_000)
          assert.deepStrictEqual(yield* walletState("lo", "lo-t"), {
            W: 1_000_000,
            usedQuota: 90_000,
            requestCount: 1,
            R: 910_000,
            TU: 90_000
          })
          assert.deepStrictEqual(yield* correctionRows("lo-h"), [
            "token lo-t correction 70000",
            "wallet lo correction 60000",
            "subscription lo-s correction 10000"
          ])
          yield* auditClean
        }))
    })
  })
}
