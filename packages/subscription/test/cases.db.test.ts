/**
 * billing-semantics.md §2/§3 for subscriptions, cases 8–14, the four
 * preferences end to end, and the subscription source's typed errors, on
 * every database target. One isolated migrated database per target; every
 * test uses its own account ids and ends with a clean audit.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingError, BillingSession } from "@relay-billing/core"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { SubscriptionAdmin } from "../src/index.js"
import {
  account,
  auditClean,
  failureOf,
  ledgerRows,
  pendingHolds,
  subscribe,
  subscriptionBilling,
  t,
  targets,
  used,
  walletState
} from "./support.js"

/** Uses `amount` of a subscription through a settled subscription_only request without a token. */
const consume = (accountId: string, holdId: string, amount: number) =>
  Effect.gen(function*() {
    const billing = yield* BillingSession.BillingSession
    const s = yield* billing.open({ holdId, accountId, estimate: amount, preference: "subscription_only" })
    yield* s.settle(amount)
  })

const fundingSources = (
  hold: { readonly parts: ReadonlyArray<{ readonly kind: string; readonly sourceId: string; readonly amount: number }> }
) => hold.parts.map((p) => `${p.kind}:${p.sourceId}:${p.amount}`).sort()

for (const target of targets) {
  describe(`subscription cases on ${target.name}`, () => {
    layer(subscriptionBilling(target), { timeout: 60_000 })((it) => {
      it.effect("case 8: subscription_first, S 1,000,000/100,000, P 30,000, A 12,000 → S used 112,000, W untouched, R −12,000, usedQuota +12,000", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("c8", 500_000, { remain: 1_000_000 })
          yield* subscribe("c8-s", "c8", { total: 1_000_000 })
          yield* consume("c8", "c8-pre", 100_000)
          assert.strictEqual(yield* used("c8-s"), 100_000)
          const before = yield* walletState("c8", "c8-t")
          const s = yield* billing.open({
            holdId: "c8-h",
            accountId: "c8",
            tokenId: "c8-t",
            estimate: 30_000,
            preference: "subscription_first"
          })
          assert.deepStrictEqual(fundingSources(s.hold), ["budget:token:30000", "funding:subscription:30000"])
          assert.strictEqual(s.hold.reserved, 30_000)
          assert.strictEqual(yield* used("c8-s"), 130_000)
          assert.deepStrictEqual((yield* walletState("c8", "c8-t")).R, 970_000)
          const settlement = yield* s.settle(12_000)
          assert.strictEqual(settlement.actual, 12_000)
          assert.strictEqual(yield* used("c8-s"), 112_000)
          assert.deepStrictEqual(yield* walletState("c8", "c8-t"), {
            W: 500_000,
            usedQuota: before.usedQuota + 12_000,
            requestCount: before.requestCount + 1,
            R: 988_000,
            TU: 12_000
          })
          yield* auditClean
        }))

      it.effect("case 9: P 0 reserves 1 on the subscription and 1 on the token; A 1 → S used 1", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("c9a", 0, { remain: 100 })
          yield* subscribe("c9a-s", "c9a", { total: 1_000_000 })
          const s = yield* billing.open({ holdId: "c9a-h", accountId: "c9a", tokenId: "c9a-t", estimate: 0 })
          assert.strictEqual(s.hold.reserved, 1)
          assert.strictEqual(s.preConsumed, 1)
          assert.deepStrictEqual(fundingSources(s.hold), ["budget:token:1", "funding:subscription:1"])
          assert.strictEqual(yield* used("c9a-s"), 1)
          assert.strictEqual((yield* walletState("c9a", "c9a-t")).R, 99)
          yield* s.settle(1)
          assert.strictEqual(yield* used("c9a-s"), 1)
          assert.deepStrictEqual(yield* walletState("c9a", "c9a-t"), {
            W: 0,
            usedQuota: 1,
            requestCount: 1,
            R: 99,
            TU: 1
          })
          yield* auditClean
        }))

      it.effect("case 9: P 0, A 0 → S used 0 and the token back; a failed request (refund) → S used 0", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("c9b", 0, { remain: 100 })
          yield* subscribe("c9b-s", "c9b", { total: 1_000_000 })
          const s = yield* billing.open({ holdId: "c9b-h", accountId: "c9b", tokenId: "c9b-t", estimate: 0 })
          assert.strictEqual(yield* used("c9b-s"), 1)
          yield* s.settle(0)
          assert.strictEqual(yield* used("c9b-s"), 0)
          assert.deepStrictEqual(yield* walletState("c9b", "c9b-t"), {
            W: 0,
            usedQuota: 0,
            requestCount: 0,
            R: 100,
            TU: 0
          })
          const f = yield* billing.open({ holdId: "c9b-f", accountId: "c9b", tokenId: "c9b-t", estimate: 0 })
          assert.strictEqual(f.hold.reserved, 1)
          assert.strictEqual(yield* used("c9b-s"), 1)
          const r = yield* f.refund
          assert.strictEqual(r.refunded, 1)
          assert.strictEqual(yield* used("c9b-s"), 0)
          assert.deepStrictEqual(yield* walletState("c9b", "c9b-t"), {
            W: 0,
            usedQuota: 0,
            requestCount: 0,
            R: 100,
            TU: 0
          })
          yield* auditClean
        }))

      it.effect("case 10: S 1,000,000/990,000 (overflow allowed), P 30,000, W 1,000,000 → wallet; S unchanged, W 970,000, one net token reservation", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("c10", 1_000_000, { remain: 1_000_000 })
          yield* subscribe("c10-s", "c10", { total: 1_000_000 })
          yield* consume("c10", "c10-pre", 990_000)
          const s = yield* billing.open({ holdId: "c10-h", accountId: "c10", tokenId: "c10-t", estimate: 30_000 })
          assert.deepStrictEqual(fundingSources(s.hold), ["budget:token:30000", "funding:wallet:30000"])
          assert.strictEqual(yield* used("c10-s"), 990_000)
          const st = yield* walletState("c10", "c10-t")
          assert.strictEqual(st.W, 970_000)
          assert.strictEqual(st.R, 970_000)
          const tokenRows = (yield* ledgerRows({ holdId: "c10-h", sourceId: "token" })).map((r) =>
            Number(r.split(" ")[3])
          )
          assert.strictEqual(tokenRows.reduce((a, b) => a + b, 0), -30_000)
          assert.deepStrictEqual(yield* ledgerRows({ holdId: "c10-h", sourceId: "subscription" }), [])
          yield* s.settle(30_000)
          assert.strictEqual(yield* used("c10-s"), 990_000)
          yield* auditClean
        }))

      it.effect("case 11: subscription_only with case 10's subscription → insufficient subscription, nothing changes", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("c11", 1_000_000, { remain: 1_000_000 })
          yield* subscribe("c11-s", "c11", { total: 1_000_000 })
          yield* consume("c11", "c11-pre", 990_000)
          const before = yield* walletState("c11", "c11-t")
          const error = yield* failureOf(
            billing.open({
              holdId: "c11-h",
              accountId: "c11",
              tokenId: "c11-t",
              estimate: 30_000,
              preference: "subscription_only"
            })
          )
          assert.instanceOf(error, BillingError.InsufficientFunds)
          assert.strictEqual((error as BillingError.InsufficientFunds).sourceId, "subscription")
          assert.strictEqual((error as BillingError.InsufficientFunds).required, 30_000)
          assert.strictEqual((error as BillingError.InsufficientFunds).available, 10_000)
          assert.strictEqual(yield* used("c11-s"), 990_000)
          assert.deepStrictEqual(yield* walletState("c11", "c11-t"), before)
          assert.deepStrictEqual(yield* pendingHolds(["c11-h"]), [])
          yield* auditClean
        }))

      it.effect("case 12: total 0 (unlimited), P 30,000, A 10,000,000 → S used +10,000,000, no error", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("c12", 0)
          yield* subscribe("c12-s", "c12", { total: 0 })
          const s = yield* billing.open({ holdId: "c12-h", accountId: "c12", estimate: 30_000 })
          assert.deepStrictEqual(fundingSources(s.hold), ["funding:subscription:30000"])
          const settlement = yield* s.settle(10_000_000)
          assert.strictEqual(settlement.parts[0]!.charged, 10_000_000)
          assert.strictEqual(settlement.parts[0]!.unbilled, 0)
          assert.strictEqual(yield* used("c12-s"), 10_000_000)
          assert.deepStrictEqual(yield* walletState("c12"), { W: 0, usedQuota: 10_000_000, requestCount: 1 })
          yield* auditClean
        }))

      it.effect("case 13: S 100,000/0 with overflow allowed, W 1,000,000, P 60,000, A 160,000 → S used 100,000, W 940,000", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("c13a", 1_000_000)
          yield* subscribe("c13a-s", "c13a", { total: 100_000 })
          const s = yield* billing.open({ holdId: "c13a-h", accountId: "c13a", estimate: 60_000 })
          const settlement = yield* s.settle(160_000)
          assert.strictEqual(settlement.parts[0]!.unbilled, 0)
          assert.strictEqual(settlement.parts[0]!.charged, 160_000)
          assert.strictEqual(yield* used("c13a-s"), 100_000)
          assert.deepStrictEqual(yield* walletState("c13a"), { W: 940_000, usedQuota: 160_000, requestCount: 1 })
          assert.deepStrictEqual(yield* ledgerRows({ holdId: "c13a-h" }), [
            "subscription c13a-s reserve -60000",
            "subscription c13a-s settle -40000",
            "wallet c13a settle -60000"
          ])
          yield* auditClean
        }))

      it.effect("case 13: overflow not allowed → S used 100,000, W untouched, 60,000 recorded unbilled in the ledger", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("c13b", 1_000_000)
          yield* subscribe("c13b-s", "c13b", { total: 100_000, allowWalletOverflow: false })
          const s = yield* billing.open({ holdId: "c13b-h", accountId: "c13b", estimate: 60_000 })
          const settlement = yield* s.settle(160_000)
          assert.strictEqual(settlement.parts[0]!.unbilled, 60_000)
          assert.strictEqual(settlement.parts[0]!.charged, 100_000)
          assert.strictEqual(yield* used("c13b-s"), 100_000)
          assert.strictEqual((yield* walletState("c13b")).W, 1_000_000)
          assert.deepStrictEqual(yield* ledgerRows({ holdId: "c13b-h" }), [
            "subscription c13b-s reserve -60000",
            "subscription c13b-s settle -40000",
            "subscription c13b-s unbilled 0 unbilled 60000"
          ])
          yield* auditClean
        }))

      it.effect("case 14: two subscriptions: the soonest-expiring one with room is used", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          // X ends sooner with 5,000 left, Y later with 100,000 left → Y
          yield* account("c14a", 0)
          yield* subscribe("c14a-x", "c14a", { total: 5_000, durationSeconds: 10 * 86_400 })
          yield* subscribe("c14a-y", "c14a", { total: 100_000, durationSeconds: 30 * 86_400 })
          const a = yield* billing.open({ holdId: "c14a-h", accountId: "c14a", estimate: 30_000 })
          assert.deepStrictEqual(fundingSources(a.hold), ["funding:subscription:30000"])
          assert.deepStrictEqual([yield* used("c14a-x"), yield* used("c14a-y")], [0, 30_000])
          yield* a.settle(30_000)
          // X with 50,000 left → X
          yield* account("c14b", 0)
          yield* subscribe("c14b-y", "c14b", { total: 100_000, durationSeconds: 30 * 86_400 })
          yield* subscribe("c14b-x", "c14b", { total: 50_000, durationSeconds: 10 * 86_400 })
          const b = yield* billing.open({ holdId: "c14b-h", accountId: "c14b", estimate: 30_000 })
          assert.deepStrictEqual([yield* used("c14b-x"), yield* used("c14b-y")], [30_000, 0])
          yield* b.settle(20_000)
          assert.deepStrictEqual([yield* used("c14b-x"), yield* used("c14b-y")], [20_000, 0])
          yield* auditClean
        }))

      it.effect("subscription_first without an active subscription goes to the wallet directly (none, expired, cancelled, not started)", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const admin = yield* SubscriptionAdmin.SubscriptionAdmin
          yield* TestClock.setTime(t("2026-06-01T00:00:00Z"))
          yield* account("nosub", 100_000)
          const a = yield* billing.open({
            holdId: "nosub-h",
            accountId: "nosub",
            estimate: 30_000,
            preference: "  subscription_first "
          })
          assert.deepStrictEqual(fundingSources(a.hold), ["funding:wallet:30000"])
          assert.deepStrictEqual(yield* ledgerRows({ holdId: "nosub-h" }), ["wallet nosub reserve -30000"])
          yield* a.settle(30_000)
          yield* account("deadsub", 100_000)
          yield* subscribe("deadsub-old", "deadsub", {
            total: 1_000_000,
            startAt: t("2026-01-01T00:00:00Z"),
            durationSeconds: 86_400
          })
          yield* subscribe("deadsub-cancelled", "deadsub", { total: 1_000_000 })
          yield* admin.cancel("deadsub-cancelled")
          yield* subscribe("deadsub-future", "deadsub", { total: 1_000_000, startAt: t("2026-07-01T00:00:00Z") })
          const b = yield* billing.open({ holdId: "deadsub-h", accountId: "deadsub", estimate: 30_000 })
          assert.deepStrictEqual(fundingSources(b.hold), ["funding:wallet:30000"])
          assert.deepStrictEqual(
            [yield* used("deadsub-old"), yield* used("deadsub-cancelled"), yield* used("deadsub-future")],
            [0, 0, 0]
          )
          // empty and unknown preferences mean subscription_first
          yield* account("pref", 100_000)
          yield* subscribe("pref-s", "pref", { total: 1_000_000 })
          for (const [i, preference] of ["", "bogus", "SUBSCRIPTION_FIRST"].entries()) {
            const s = yield* billing.open({ holdId: `pref-h${i}`, accountId: "pref", estimate: 1_000, preference })
            assert.deepStrictEqual(
              fundingSources(s.hold),
              ["funding:subscription:1000"],
              `preference ${JSON.stringify(preference)}`
            )
            yield* s.settle(1_000)
          }
          yield* auditClean
        }))

      it.effect("an active subscription forbidding overflow blocks the fallback to the wallet; nothing changes", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("block", 1_000_000, { remain: 1_000_000 })
          yield* subscribe("block-s", "block", { total: 10_000, allowWalletOverflow: false })
          const before = yield* walletState("block", "block-t")
          const error = yield* failureOf(
            billing.open({ holdId: "block-h", accountId: "block", tokenId: "block-t", estimate: 30_000 })
          )
          assert.instanceOf(error, BillingError.InsufficientFunds)
          assert.strictEqual((error as BillingError.InsufficientFunds).sourceId, "subscription")
          assert.deepStrictEqual(yield* walletState("block", "block-t"), before)
          assert.strictEqual(yield* used("block-s"), 0)
          assert.deepStrictEqual(yield* pendingHolds(["block-h"]), [])
          // one allowing and one forbidding subscription: every active one must allow it
          yield* account("block2", 1_000_000)
          yield* subscribe("block2-a", "block2", { total: 10_000 })
          yield* subscribe("block2-b", "block2", { total: 10_000, allowWalletOverflow: false })
          const e2 = yield* failureOf(billing.open({ holdId: "block2-h", accountId: "block2", estimate: 30_000 }))
          assert.instanceOf(e2, BillingError.InsufficientFunds)
          assert.strictEqual((yield* walletState("block2")).W, 1_000_000)
          // when every subscription allows it, the same request falls back
          yield* account("allow", 1_000_000)
          yield* subscribe("allow-s", "allow", { total: 10_000 })
          const ok = yield* billing.open({ holdId: "allow-h", accountId: "allow", estimate: 30_000 })
          assert.deepStrictEqual(fundingSources(ok.hold), ["funding:wallet:30000"])
          yield* ok.refund
          assert.strictEqual((yield* walletState("allow")).W, 1_000_000)
          yield* auditClean
        }))

      it.effect("wallet_first: wallet when it can pay, subscription on insufficient wallet", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("wf", 40_000, { remain: 1_000_000 })
          yield* subscribe("wf-s", "wf", { total: 100_000 })
          const a = yield* billing.open({
            holdId: "wf-a",
            accountId: "wf",
            tokenId: "wf-t",
            estimate: 30_000,
            preference: "wallet_first"
          })
          assert.deepStrictEqual(fundingSources(a.hold), ["budget:token:30000", "funding:wallet:30000"])
          const b = yield* billing.open({
            holdId: "wf-b",
            accountId: "wf",
            tokenId: "wf-t",
            estimate: 30_000,
            preference: "wallet_first"
          })
          assert.deepStrictEqual(fundingSources(b.hold), ["budget:token:30000", "funding:subscription:30000"])
          assert.deepStrictEqual(yield* walletState("wf", "wf-t"), {
            W: 10_000,
            usedQuota: 0,
            requestCount: 0,
            R: 940_000,
            TU: 60_000
          })
          assert.strictEqual(yield* used("wf-s"), 30_000)
          yield* a.settle(25_000)
          yield* b.settle(35_000)
          assert.deepStrictEqual(yield* walletState("wf", "wf-t"), {
            W: 15_000,
            usedQuota: 60_000,
            requestCount: 2,
            R: 940_000,
            TU: 60_000
          })
          assert.strictEqual(yield* used("wf-s"), 35_000)
          // neither can pay → the first shortfall (the wallet's), nothing changes
          const e = yield* failureOf(
            billing.open({
              holdId: "wf-c",
              accountId: "wf",
              tokenId: "wf-t",
              estimate: 70_000,
              preference: "wallet_first"
            })
          )
          assert.instanceOf(e, BillingError.InsufficientFunds)
          assert.strictEqual((e as BillingError.InsufficientFunds).sourceId, "wallet")
          assert.deepStrictEqual(yield* walletState("wf", "wf-t"), {
            W: 15_000,
            usedQuota: 60_000,
            requestCount: 2,
            R: 940_000,
            TU: 60_000
          })
          assert.strictEqual(yield* used("wf-s"), 35_000)
          yield* auditClean
        }))

      it.effect("wallet_only never touches the subscription; subscription_only never touches the wallet", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("only", 20_000)
          yield* subscribe("only-s", "only", { total: 100_000 })
          const a = yield* billing.open({
            holdId: "only-a",
            accountId: "only",
            estimate: 15_000,
            preference: "wallet_only"
          })
          assert.deepStrictEqual(fundingSources(a.hold), ["funding:wallet:15000"])
          const e = yield* failureOf(
            billing.open({ holdId: "only-b", accountId: "only", estimate: 15_000, preference: "wallet_only" })
          )
          assert.instanceOf(e, BillingError.InsufficientFunds)
          assert.strictEqual((e as BillingError.InsufficientFunds).sourceId, "wallet")
          assert.strictEqual(yield* used("only-s"), 0)
          const c = yield* billing.open({
            holdId: "only-c",
            accountId: "only",
            estimate: 15_000,
            preference: "subscription_only"
          })
          assert.deepStrictEqual(fundingSources(c.hold), ["funding:subscription:15000"])
          assert.strictEqual((yield* walletState("only")).W, 5_000)
          yield* a.settle(15_000)
          yield* c.settle(15_000)
          // subscription_only without any subscription
          yield* account("only2", 1_000_000)
          const e2 = yield* failureOf(
            billing.open({ holdId: "only2-h", accountId: "only2", estimate: 1, preference: "subscription_only" })
          )
          assert.instanceOf(e2, BillingError.InsufficientFunds)
          assert.strictEqual((e2 as BillingError.InsufficientFunds).sourceId, "subscription")
          assert.strictEqual((yield* walletState("only2")).W, 1_000_000)
          yield* auditClean
        }))

      it.effect("a token-budget failure never falls back and changes nothing", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("tok", 1_000_000, { remain: 10_000 })
          yield* subscribe("tok-s", "tok", { total: 1_000_000 })
          for (const preference of ["subscription_first", "wallet_first"]) {
            const e = yield* failureOf(
              billing.open({
                holdId: `tok-${preference}`,
                accountId: "tok",
                tokenId: "tok-t",
                estimate: 30_000,
                preference
              })
            )
            assert.instanceOf(e, BillingError.TokenBudgetExceeded)
          }
          assert.deepStrictEqual(yield* walletState("tok", "tok-t"), {
            W: 1_000_000,
            usedQuota: 0,
            requestCount: 0,
            R: 10_000,
            TU: 0
          })
          assert.strictEqual(yield* used("tok-s"), 0)
          yield* auditClean
        }))

      it.effect("an already-refunded hold id is a typed error, never a new debit (the engine's hold decides)", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("rf", 0)
          yield* subscribe("rf-s", "rf", { total: 100_000 })
          const s = yield* billing.open({ holdId: "rf-h", accountId: "rf", estimate: 30_000 })
          yield* s.refund
          assert.strictEqual(yield* used("rf-s"), 0)
          const e = yield* failureOf(billing.open({ holdId: "rf-h", accountId: "rf", estimate: 30_000 }))
          assert.instanceOf(e, BillingError.HoldResolved)
          assert.strictEqual((e as BillingError.HoldResolved).status, "refunded")
          const settleAfter = yield* failureOf(billing.settle("rf-h", 10_000))
          assert.instanceOf(settleAfter, BillingError.HoldResolved)
          // v2: the source keeps no hold ids (it is never asked again for a refunded hold: the
          // engine's hold decides first), so the engine's answer above is the whole check.
          assert.strictEqual(yield* used("rf-s"), 0)
          // a second refund is a no-op
          const again = yield* s.refund
          assert.strictEqual(again.refunded, 0)
          assert.strictEqual(yield* used("rf-s"), 0)
          yield* auditClean
        }))

      it.effect("a refund after a period reset leaves the new period at 0 (the reset already cleared the usage; issue 8 #1)", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* TestClock.setTime(t("2026-11-28T23:55:00Z"))
          yield* account("floor", 0)
          yield* subscribe("floor-s", "floor", { total: 100_000, period: "daily" })
          yield* consume("floor", "floor-pre", 20_000)
          const s = yield* billing.open({ holdId: "floor-h", accountId: "floor", estimate: 30_000 })
          assert.strictEqual(yield* used("floor-s"), 50_000)
          yield* TestClock.adjust("10 minutes")
          const r = yield* s.refund
          assert.strictEqual(r.refunded, 30_000)
          assert.strictEqual(yield* used("floor-s"), 0)
          assert.deepStrictEqual(yield* ledgerRows({ subjectId: "floor-s" }), [
            "subscription floor-s reserve -20000",
            "subscription floor-s reserve -30000",
            "subscription floor-s reset 50000",
            // the refund corrects the closed period only: the pair nets to 0 on today's usage
            // (v2: the source's own adjust row comes first, the engine writes the hold's rows last)
            "subscription floor-s adjust -30000",
            "subscription floor-s refund 30000"
          ])
          // a shortfall given back after a reset does not touch the new period either
          const s2 = yield* billing.open({ holdId: "floor-h2", accountId: "floor", estimate: 30_000 })
          yield* TestClock.adjust("1 day")
          yield* s2.settle(10_000)
          assert.strictEqual(yield* used("floor-s"), 0)
          yield* auditClean
        }))
    })
  })
}
