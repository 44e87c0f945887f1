/**
 * Post-consume billing (§7) over the knex stores, on every target:
 * PostConsume.layer over Subscription.layer. One charge after the work,
 * idempotent by request id (repeated and concurrent), a balance check that is
 * typed and writes nothing, a charge past the balance still recorded, the
 * subscription first then the wallet by preference, with ledger rows and
 * counters; audit clean after each test.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingError, BillingSettler } from "@relay-billing/core"
import { KnexClient } from "@relay-billing/knex"
import { PostConsume } from "@relay-billing/post-consume"
import { WalletAdmin } from "@relay-billing/wallet"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import {
  account,
  auditClean,
  failureOf,
  ledgerRows,
  subscribe,
  subscriptionBilling,
  t,
  targets,
  used,
  walletState
} from "./support.js"

const holdCount = (accountId: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const rows = yield* client.query("test.holds", (db) =>
      db(client.table("holds")).where({ account_id: accountId }).count({ n: "*" }))
    return Number((rows as Array<{ n: unknown }>)[0]?.n ?? 0)
  })

const post = Effect.gen(function*() {
  return yield* PostConsume.PostConsume
})

for (const target of targets) {
  describe(`post-consume on ${target.name}`, () => {
    layer(PostConsume.PostConsume.layer.pipe(Layer.provideMerge(subscriptionBilling(target))), { timeout: 60_000 })(
      (it) => {
        it.effect("wallet_only: nothing before the work; one charge after it moves wallet, token and counters by A, with ledger rows", () =>
          Effect.gen(function*() {
            const pc = yield* post
            yield* account("pw", 100_000, { remain: 100_000 })
            const settler = yield* pc.settler({
              requestId: "pw-r",
              accountId: "pw",
              tokenId: "pw-t",
              preference: "wallet_only",
              check: 5_000
            })
            assert.strictEqual(settler.preConsumed, 0)
            assert.isFalse(yield* settler.needsRefund)
            assert.deepStrictEqual(yield* walletState("pw", "pw-t"), {
              W: 100_000,
              usedQuota: 0,
              requestCount: 0,
              R: 100_000,
              TU: 0
            })
            assert.strictEqual(yield* holdCount("pw"), 0)
            const settlement = yield* BillingSettler.settleBilling(settler, 7_000)
            assert.strictEqual(settlement?.actual, 7_000)
            assert.deepStrictEqual(yield* walletState("pw", "pw-t"), {
              W: 93_000,
              usedQuota: 7_000,
              requestCount: 1,
              R: 93_000,
              TU: 7_000
            })
            assert.sameMembers(yield* ledgerRows({ holdId: "pw-r" }), [
              "wallet pw settle -7000",
              "token pw-t settle -7000"
            ])
            yield* auditClean
          }))

        it.effect("idempotent by request id: a repeat and 8 concurrent settlers charge once and return the first result; another account is a conflict", () =>
          Effect.gen(function*() {
            const pc = yield* post
            yield* account("pi", 100_000)
            const first = yield* (yield* pc.settler({ requestId: "pi-1", accountId: "pi", preference: "wallet_only" }))
              .settle(3_000)
            const again = yield* (yield* pc.settler({ requestId: "pi-1", accountId: "pi", preference: "wallet_only" }))
              .settle(3_000)
            assert.deepStrictEqual(again, first)
            assert.deepStrictEqual(yield* walletState("pi"), { W: 97_000, usedQuota: 3_000, requestCount: 1 })
            yield* account("pj", 100_000)
            const other = yield* failureOf(
              (yield* pc.settler({ requestId: "pi-1", accountId: "pj", preference: "wallet_only" })).settle(3_000)
            )
            assert.instanceOf(other, BillingError.IdempotencyConflict)
            assert.strictEqual((yield* walletState("pj")).W, 100_000)
            yield* auditClean
          }))

        it.effect("idempotent by request id under concurrency: 8 concurrent settlers of one request id charge once and all return the first result", () =>
          Effect.gen(function*() {
            const pc = yield* post
            yield* account("pk", 100_000)
            const results = yield* Effect.all(
              Array.from({ length: 8 }, () =>
                Effect.result(
                  Effect.flatMap(pc.settler({ requestId: "pk-1", accountId: "pk", preference: "wallet_only" }), (s) =>
                    s.settle(1_000))
                )),
              { concurrency: "unbounded" }
            )
            // charged exactly once whatever the callers saw
            assert.deepStrictEqual(yield* walletState("pk"), { W: 99_000, usedQuota: 1_000, requestCount: 1 })
            assert.deepStrictEqual(yield* ledgerRows({ holdId: "pk-1" }), ["wallet pk settle -1000"])
            yield* auditClean
            // every caller gets the first settlement (a repeat is not an error)
            const failures = results.flatMap((
              r
            ) => (r._tag === "Failure" ? [`${r.failure._tag}: ${r.failure.message}`] : []))
            assert.deepStrictEqual(failures, [])
            const successes = results.flatMap((r) => (r._tag === "Success" ? [JSON.stringify(r.success)] : []))
            assert.strictEqual(new Set(successes).size, 1)
          }))

        it.effect("the balance check is typed and writes nothing (wallet, token, subscription_only without a subscription)", () =>
          Effect.gen(function*() {
            const pc = yield* post
            yield* account("pc", 1_000, { remain: 100 })
            const rowsBefore = yield* ledgerRows({ accountId: "pc" })
            const e1 = yield* failureOf(
              pc.settler({ requestId: "pc-1", accountId: "pc", preference: "wallet_only", check: 5_000 })
            )
            assert.instanceOf(e1, BillingError.InsufficientFunds)
            assert.strictEqual((e1 as BillingError.InsufficientFunds).required, 5_000)
            assert.strictEqual((e1 as BillingError.InsufficientFunds).available, 1_000)
            const e2 = yield* failureOf(
              pc.check({ requestId: "pc-2", accountId: "pc", tokenId: "pc-t", preference: "wallet_only", check: 500 })
            )
            assert.instanceOf(e2, BillingError.TokenBudgetExceeded)
            const e3 = yield* failureOf(
              pc.check({ requestId: "pc-3", accountId: "pc", preference: "subscription_only", check: 1 })
            )
            assert.instanceOf(e3, BillingError.InsufficientFunds)
            assert.deepStrictEqual(yield* walletState("pc", "pc-t"), {
              W: 1_000,
              usedQuota: 0,
              requestCount: 0,
              R: 100,
              TU: 0
            })
            assert.deepStrictEqual(yield* ledgerRows({ accountId: "pc" }), rowsBefore)
            assert.strictEqual(yield* holdCount("pc"), 0)
            yield* auditClean
          }))

        it.effect("a charge past the balance is still recorded: the wallet goes negative, the token too", () =>
          Effect.gen(function*() {
            const pc = yield* post
            yield* account("pn", 1_000, { remain: 2_000 })
            const s = yield* (yield* pc.settler({
              requestId: "pn-r",
              accountId: "pn",
              tokenId: "pn-t",
              preference: "wallet_only"
            })).settle(5_000)
            assert.strictEqual(s.actual, 5_000)
            assert.deepStrictEqual(yield* walletState("pn", "pn-t"), {
              W: -4_000,
              usedQuota: 5_000,
              requestCount: 1,
              R: -3_000,
              TU: 5_000
            })
            assert.sameMembers(yield* ledgerRows({ holdId: "pn-r" }), [
              "wallet pn settle -5000",
              "token pn-t settle -5000"
            ])
            yield* auditClean
          }))

        it.effect("subscription_first charges the subscription (overflow to the wallet, or unbilled when the plan forbids it); no subscription → wallet", () =>
          Effect.gen(function*() {
            const pc = yield* post
            yield* account("ps", 50_000)
            yield* subscribe("ps-s", "ps", { total: 10_000 })
            const a = yield* (yield* pc.settler({ requestId: "ps-1", accountId: "ps", check: 6_000 })).settle(6_000)
            assert.deepStrictEqual(a.parts.map((p) => [p.sourceId, p.charged, p.unbilled]), [[
              "subscription",
              6_000,
              0
            ]])
            assert.strictEqual(yield* used("ps-s"), 6_000)
            assert.strictEqual((yield* walletState("ps")).W, 50_000)
            // 8,000 with 4,000 of room: the subscription is filled, 4,000 overflow to the wallet
            yield* (yield* pc.settler({ requestId: "ps-2", accountId: "ps" })).settle(8_000)
            assert.strictEqual(yield* used("ps-s"), 10_000)
            assert.deepStrictEqual(yield* walletState("ps"), { W: 46_000, usedQuota: 14_000, requestCount: 2 })
            // the subscription's minimum reservation of 1 is taken and settled inside the one charge
            assert.deepStrictEqual(yield* ledgerRows({ holdId: "ps-2" }), [
              "subscription ps-s reserve -1",
              "subscription ps-s settle -3999",
              "wallet ps settle -4000"
            ])
            // a plan forbidding overflow: the rest is recorded unbilled
            yield* account("pu", 50_000)
            yield* subscribe("pu-s", "pu", { total: 10_000, allowWalletOverflow: false })
            const u = yield* (yield* pc.settler({ requestId: "pu-1", accountId: "pu" })).settle(12_000)
            assert.deepStrictEqual(u.parts.map((p) => [p.sourceId, p.charged, p.unbilled]), [[
              "subscription",
              10_000,
              2_000
            ]])
            assert.strictEqual(yield* used("pu-s"), 10_000)
            assert.strictEqual((yield* walletState("pu")).W, 50_000)
            assert.deepStrictEqual(yield* ledgerRows({ holdId: "pu-1" }), [
              "subscription pu-s reserve -1",
              "subscription pu-s settle -9999",
              "subscription pu-s unbilled 0 unbilled 2000"
            ])
            // without a subscription: the wallet
            yield* account("pv", 50_000)
            yield* (yield* pc.settler({ requestId: "pv-1", accountId: "pv", check: 1_000 })).settle(1_000)
            assert.strictEqual((yield* walletState("pv")).W, 49_000)
            yield* auditClean
          }))

        it.effect("wallet_first charges the wallet although a subscription has room; subscription_only without one is a typed error that writes nothing", () =>
          Effect.gen(function*() {
            const pc = yield* post
            yield* account("pf", 50_000)
            yield* subscribe("pf-s", "pf", { total: 100_000 })
            yield* (yield* pc.settler({ requestId: "pf-1", accountId: "pf", preference: "wallet_first" })).settle(9_000)
            assert.deepStrictEqual([yield* used("pf-s"), (yield* walletState("pf")).W], [0, 41_000])
            yield* (yield* pc.settler({ requestId: "pf-2", accountId: "pf", preference: "subscription_only" })).settle(
              9_000
            )
            assert.deepStrictEqual([yield* used("pf-s"), (yield* walletState("pf")).W], [9_000, 41_000])
            yield* account("po", 50_000)
            const e = yield* failureOf(
              (yield* pc.settler({ requestId: "po-1", accountId: "po", preference: "subscription_only" })).settle(9_000)
            )
            assert.instanceOf(e, BillingError.InsufficientFunds)
            assert.deepStrictEqual(yield* walletState("po"), { W: 50_000, usedQuota: 0, requestCount: 0 })
            assert.deepStrictEqual(yield* ledgerRows({ holdId: "po-1" }), [])
            assert.strictEqual(yield* holdCount("po"), 0)
            yield* auditClean
          }))

        it.effect("issue 8 #9: subscription exhausted and wallet 0: the check of 2,000 fails typed, writes nothing, and the wallet never goes to -2,000", () =>
          Effect.gen(function*() {
            const pc = yield* post
            yield* TestClock.setTime(t("2026-11-28T10:00:00Z"))
            yield* account("px", 0)
            yield* subscribe("px-s", "px", { total: 10_000, period: "daily" })
            yield* (yield* pc.settler({ requestId: "px-0", accountId: "px", preference: "subscription_only" })).settle(
              10_000
            )
            assert.strictEqual(yield* used("px-s"), 10_000)
            const rowsBefore = yield* ledgerRows({ accountId: "px" })
            for (const preference of [undefined, "subscription_first", "subscription_only", "wallet_first"]) {
              const e = yield* failureOf(pc.settler({
                requestId: "px-1",
                accountId: "px",
                check: 2_000,
                ...(preference !== undefined ? { preference } : {})
              }))
              assert.instanceOf(e, BillingError.InsufficientFunds, `preference ${preference}`)
              assert.strictEqual((e as BillingError.InsufficientFunds).required, 2_000)
              assert.strictEqual((e as BillingError.InsufficientFunds).available, 0)
            }
            assert.deepStrictEqual(yield* walletState("px"), { W: 0, usedQuota: 10_000, requestCount: 1 })
            assert.deepStrictEqual(yield* ledgerRows({ accountId: "px" }), rowsBefore)
            assert.strictEqual(yield* holdCount("px"), 1)
            // after midnight the due reset counts (read only: the stored usage is still yesterday's)
            yield* TestClock.setTime(t("2026-11-29T00:00:00Z"))
            yield* pc.check({ requestId: "px-3", accountId: "px", preference: "subscription_only", check: 10_000 })
            assert.strictEqual(yield* used("px-s"), 10_000)
            const over = yield* failureOf(
              pc.check({ requestId: "px-4", accountId: "px", preference: "subscription_only", check: 10_001 })
            )
            assert.instanceOf(over, BillingError.InsufficientFunds)
            assert.strictEqual((over as BillingError.InsufficientFunds).available, 10_000)
            yield* auditClean
          }))

        it.effect("issue 8 #9: a subscription counts for what it has left, the wallet covers the rest of the preference; unlimited always pays", () =>
          Effect.gen(function*() {
            const pc = yield* post
            yield* account("py", 0)
            yield* subscribe("py-s", "py", { total: 10_000 })
            yield* (yield* pc.settler({ requestId: "py-0", accountId: "py", preference: "subscription_only" })).settle(
              9_000
            )
            yield* pc.check({ requestId: "py-1", accountId: "py", check: 1_000 })
            const e = yield* failureOf(pc.check({ requestId: "py-2", accountId: "py", check: 1_001 }))
            assert.instanceOf(e, BillingError.InsufficientFunds)
            assert.strictEqual((e as BillingError.InsufficientFunds).available, 1_000)
            const admin = yield* WalletAdmin.WalletAdmin
            yield* admin.topUp({ accountId: "py", amount: 5_000, key: "py-k" })
            yield* pc.check({ requestId: "py-3", accountId: "py", check: 2_000 })
            assert.instanceOf(
              yield* failureOf(
                pc.check({ requestId: "py-4", accountId: "py", preference: "subscription_only", check: 2_000 })
              ),
              BillingError.InsufficientFunds
            )
            yield* account("pz", 0)
            yield* subscribe("pz-s", "pz", { total: 0 })
            yield* (yield* pc.settler({ requestId: "pz-0", accountId: "pz", preference: "subscription_only" })).settle(
              50_000
            )
            yield* pc.check({ requestId: "pz-1", accountId: "pz", preference: "subscription_only", check: 1_000_000 })
            yield* auditClean
          }))
      }
    )
  })
}
