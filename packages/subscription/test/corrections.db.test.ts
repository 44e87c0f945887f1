/**
 * Issue 8 #14 (corrections, billing-semantics §4.4) and #15 (§3.4) with
 * subscriptions on every database: a subscription's overflow charged to the
 * wallet comes back first, split funding is credited last charged first, and
 * a correction of a hold whose period has ended since is recorded without
 * touching the new period's usage (§3.6: "the old period's figures may be
 * corrected, the new period's never").
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession, Ledger } from "@relay-billing/core"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import {
  account,
  auditClean,
  ledgerRows,
  subscribe,
  subscriptionBilling,
  t,
  targets,
  used,
  walletState
} from "./support.js"

const correctionRows = (holdId: string) =>
  Effect.map(ledgerRows({ holdId }), (rows) => rows.filter((r) => r.includes(" correction ")))

for (const target of targets) {
  describe(`corrections with subscriptions on ${target.name}`, () => {
    layer(subscriptionBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #14: a subscription's overflow charged to the wallet is given back first, then amount_used", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("o", 1_000_000, { remain: 1_000_000 })
          yield* subscribe("o-s", "o", { total: 100_000 })
          const s = yield* billing.open({
            holdId: "o-h",
            accountId: "o",
            tokenId: "o-t",
            estimate: 60_000,
            preference: "subscription_only"
          })
          yield* s.settle(160_000)
          assert.strictEqual(yield* used("o-s"), 100_000)
          assert.deepStrictEqual(yield* walletState("o", "o-t"), {
            W: 940_000,
            usedQuota: 160_000,
            requestCount: 1,
            R: 840_000,
            TU: 160_000
          })
          const result = yield* billing.correct({ holdId: "o-h", correctionId: "refund-1", amount: 70_000 })
          assert.deepStrictEqual(result.parts.map((p) => [p.kind, p.sourceId, p.amount]), [[
            "funding",
            "subscription",
            70_000
          ], ["budget", "token", 70_000]])
          assert.strictEqual(result.remaining, 90_000)
          assert.strictEqual(yield* used("o-s"), 90_000)
          assert.deepStrictEqual(yield* walletState("o", "o-t"), {
            W: 1_000_000,
            usedQuota: 90_000,
            requestCount: 1,
            R: 910_000,
            TU: 90_000
          })
          assert.deepStrictEqual(yield* correctionRows("o-h"), [
            "token o-t correction 70000",
            "wallet o correction 60000",
            "subscription o-s correction 10000"
          ])
          yield* auditClean
        }))

      it.effect("issue 8 #14: split funding (X, Y, wallet) is credited last charged first: the wallet, then Y, then X", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("sp", 30_000, { remain: 1_000_000 })
          yield* subscribe("sp-x", "sp", { total: 10_000, durationSeconds: 10 * 86_400 })
          yield* subscribe("sp-y", "sp", { total: 15_000, durationSeconds: 20 * 86_400 })
          const s = yield* billing.open({
            holdId: "sp-h",
            accountId: "sp",
            tokenId: "sp-t",
            estimate: 50_000,
            split: true
          })
          yield* s.settle(50_000)
          assert.deepStrictEqual(yield* walletState("sp"), { W: 5_000, usedQuota: 50_000, requestCount: 1 })
          const first = yield* billing.correct({ holdId: "sp-h", correctionId: "a", amount: 30_000 })
          assert.deepStrictEqual(first.parts.filter((p) => p.kind === "funding").map((p) => [p.sourceId, p.amount]), [
            ["wallet", 25_000],
            ["subscription", 5_000]
          ])
          assert.deepStrictEqual([yield* used("sp-x"), yield* used("sp-y")], [10_000, 10_000])
          yield* billing.correct({ holdId: "sp-h", correctionId: "b", amount: 15_000 })
          assert.deepStrictEqual([yield* used("sp-x"), yield* used("sp-y")], [5_000, 0])
          assert.deepStrictEqual(yield* walletState("sp", "sp-t"), {
            W: 30_000,
            usedQuota: 5_000,
            requestCount: 1,
            R: 995_000,
            TU: 5_000
          })
          yield* auditClean
        }))

      it.effect("issue 8 #14: in the period it was charged in, a correction lowers amount_used of that period", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(t("2026-11-28T10:00:00Z"))
          const billing = yield* BillingSession.BillingSession
          yield* account("pd", 0)
          yield* subscribe("pd-s", "pd", { total: 100_000, period: "daily" })
          const s = yield* billing.open({
            holdId: "pd-h",
            accountId: "pd",
            estimate: 40_000,
            preference: "subscription_only"
          })
          yield* s.settle(40_000)
          yield* TestClock.setTime(t("2026-11-28T23:00:00Z"))
          yield* billing.correct({ holdId: "pd-h", correctionId: "k", amount: 15_000 })
          assert.strictEqual(yield* used("pd-s"), 25_000)
          assert.deepStrictEqual(yield* walletState("pd"), { W: 0, usedQuota: 25_000, requestCount: 1 })
          yield* auditClean
        }))

      it.effect("issue 8 #14: after a period reset a correction of an old hold never changes the new period's usage; it is recorded and usedQuota goes down", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(t("2026-11-28T10:00:00Z"))
          const billing = yield* BillingSession.BillingSession
          yield* account("pr", 0)
          yield* subscribe("pr-s", "pr", { total: 100_000, period: "daily" })
          const old = yield* billing.open({
            holdId: "pr-old",
            accountId: "pr",
            estimate: 40_000,
            preference: "subscription_only"
          })
          yield* old.settle(40_000)
          yield* TestClock.setTime(t("2026-11-29T08:00:00Z"))
          const fresh = yield* billing.open({
            holdId: "pr-new",
            accountId: "pr",
            estimate: 30_000,
            preference: "subscription_only"
          })
          yield* fresh.settle(30_000)
          assert.strictEqual(yield* used("pr-s"), 30_000)
          const result = yield* billing.correct({ holdId: "pr-old", correctionId: "k", amount: 10_000 })
          assert.strictEqual(result.remaining, 30_000)
          // the new period's usage is untouched
          assert.strictEqual(yield* used("pr-s"), 30_000)
          assert.deepStrictEqual(yield* walletState("pr"), { W: 0, usedQuota: 60_000, requestCount: 2 })
          const ledger = yield* Ledger.Ledger
          const rows = (yield* ledger.entries({ holdId: "pr-old" })).filter((e) => e.kind === "correction")
          assert.deepStrictEqual(rows.map((e) => [e.sourceId, e.subjectId, e.amount]), [["subscription", "pr-s", 0]])
          assert.match(rows[0]!.note ?? "", /10000 of an ended period/)
          // a correction of the new hold still lowers the new period's usage
          yield* billing.correct({ holdId: "pr-new", correctionId: "k", amount: 5_000 })
          assert.strictEqual(yield* used("pr-s"), 25_000)
          yield* auditClean
        }))

      it.effect("issue 8 #15: a subscription overflow recorded unbilled is not counted in usedQuota", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("ub", 1_000_000)
          yield* subscribe("ub-s", "ub", { total: 100_000, allowWalletOverflow: false })
          const s = yield* billing.open({
            holdId: "ub-h",
            accountId: "ub",
            estimate: 60_000,
            preference: "subscription_only"
          })
          const settlement = yield* s.settle(160_000)
          assert.strictEqual(settlement.parts[0]!.unbilled, 60_000)
          assert.deepStrictEqual(yield* walletState("ub"), { W: 1_000_000, usedQuota: 100_000, requestCount: 1 })
          // only what was charged can be corrected
          const result = yield* billing.correct({ holdId: "ub-h", correctionId: "all", amount: 100_000 })
          assert.strictEqual(result.remaining, 0)
          assert.strictEqual(yield* used("ub-s"), 0)
          assert.deepStrictEqual(yield* walletState("ub"), { W: 1_000_000, usedQuota: 0, requestCount: 1 })
          yield* auditClean
        }))
    })
  })
}
