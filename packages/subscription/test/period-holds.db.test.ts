/**
 * Issue 8 #1 (§3.6): a subscription reservation belongs to the period it was
 * drawn from. After a period reset (lazy, or by the reset job), settling,
 * refunding or expiring a hold drawn from the previous period never changes
 * the new period's usage; an extra charge above the old reservation follows the
 * overflow rule (the wallet when the plan allows it, else recorded unbilled).
 * Every target, TestClock only (the race test sets up on a TestClock in the
 * past and races on the live clock, far from any boundary), audit clean after
 * each test.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { BillingError, BillingSession } from "@relay-billing/core"
import { KnexClient, Migrations, TestDatabase } from "@relay-billing/knex"
import { Clock, Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Subscription, SubscriptionJobs } from "../src/index.js"
import {
  account,
  auditClean,
  billingLayer,
  failureOf,
  ledgerRows,
  subscribe,
  subscriptionBilling,
  t,
  targets,
  used,
  walletState
} from "./support.js"

const HOUR = 3_600_000

/** Daily plan (100,000), a hold of 60,000 at 23:55, then 90,000 used after midnight. */
const scenario = (
  prefix: string,
  options: { readonly balance?: number; readonly allowWalletOverflow?: boolean; readonly job?: boolean } = {}
) =>
  Effect.gen(function*() {
    const billing = yield* BillingSession.BillingSession
    yield* TestClock.setTime(t("2026-11-28T23:55:00Z"))
    yield* account(prefix, options.balance ?? 0)
    yield* subscribe(`${prefix}-s`, prefix, {
      total: 100_000,
      period: "daily",
      ...(options.allowWalletOverflow !== undefined ? { allowWalletOverflow: options.allowWalletOverflow } : {})
    })
    const old = yield* billing.open({
      holdId: `${prefix}-old`,
      accountId: prefix,
      estimate: 60_000,
      preference: "subscription_only",
      ttlMillis: HOUR
    })
    assert.strictEqual(yield* used(`${prefix}-s`), 60_000)
    yield* TestClock.setTime(t("2026-11-29T00:01:00Z"))
    if (options.job) assert.strictEqual(yield* SubscriptionJobs.resetDueSubscriptions(), 1)
    const today = yield* billing.open({
      holdId: `${prefix}-today`,
      accountId: prefix,
      estimate: 90_000,
      preference: "subscription_only"
    })
    yield* today.settle(90_000)
    assert.strictEqual(yield* used(`${prefix}-s`), 90_000)
    return old
  })

/** Net of the subscription's ledger rows of one hold (what the hold took from it). */
const subscriptionNet = (holdId: string) =>
  Effect.map(
    ledgerRows({ holdId, sourceId: "subscription" }),
    (rows) => rows.reduce((a, r) => a + Number(r.split(" ")[3]), 0)
  )

for (const target of targets) {
  describe(`issue 8 #1 period resets and old holds on ${target.name}`, () => {
    layer(subscriptionBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #1: refunding a hold from the previous period leaves today's usage at 90,000 and another 60,000 is refused", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const old = yield* scenario("pr")
          const refunded = yield* old.refund
          assert.strictEqual(refunded.refunded, 60_000)
          assert.strictEqual(yield* used("pr-s"), 90_000)
          const again = yield* failureOf(
            billing.open({ holdId: "pr-more", accountId: "pr", estimate: 60_000, preference: "subscription_only" })
          )
          assert.instanceOf(again, BillingError.InsufficientFunds)
          assert.strictEqual(yield* used("pr-s"), 90_000)
          // the hold's own rows net to 0 on the subscription; nothing charged anywhere
          assert.strictEqual(yield* subscriptionNet("pr-old"), 0)
          assert.deepStrictEqual(yield* walletState("pr"), { W: 0, usedQuota: 90_000, requestCount: 1 })
          // 10,000 is still there today
          yield* (yield* billing.open({
            holdId: "pr-rest",
            accountId: "pr",
            estimate: 10_000,
            preference: "subscription_only"
          })).settle(10_000)
          assert.strictEqual(yield* used("pr-s"), 100_000)
          yield* auditClean
        }))

      it.effect("issue 8 #1: settling a hold from the previous period with 5,000 leaves today's usage at 90,000 (not 35,000)", () =>
        Effect.gen(function*() {
          const old = yield* scenario("ps")
          const settlement = yield* old.settle(5_000)
          assert.strictEqual(settlement.actual, 5_000)
          assert.deepStrictEqual(
            settlement.parts.filter((p) => p.kind === "funding").map((p) => [p.sourceId, p.charged, p.unbilled]),
            [["subscription", 5_000, 0]]
          )
          assert.strictEqual(yield* used("ps-s"), 90_000)
          assert.strictEqual(yield* subscriptionNet("ps-old"), -5_000)
          assert.deepStrictEqual(yield* walletState("ps"), { W: 0, usedQuota: 95_000, requestCount: 2 })
          yield* auditClean
        }))

      it.effect("issue 8 #1: the same after the reset job ran (not a lazy reset): refund and settle leave today's usage alone", () =>
        Effect.gen(function*() {
          const a = yield* scenario("pj", { job: true })
          yield* a.refund
          assert.strictEqual(yield* used("pj-s"), 90_000)
          const b = yield* scenario("pk", { job: true })
          yield* b.settle(60_000)
          assert.strictEqual(yield* used("pk-s"), 90_000)
          assert.strictEqual(yield* subscriptionNet("pk-old"), -60_000)
          yield* auditClean
        }))

      it.effect("issue 8 #1: an old-period hold settled above its reservation charges the extra to the wallet when the plan allows it, never to today", () =>
        Effect.gen(function*() {
          const old = yield* scenario("po", { balance: 1_000_000 })
          const settlement = yield* old.settle(70_000)
          assert.strictEqual(yield* used("po-s"), 90_000)
          assert.deepStrictEqual(
            settlement.parts.filter((p) => p.kind === "funding").map((p) => [p.sourceId, p.charged, p.unbilled]),
            [["subscription", 70_000, 0]]
          )
          assert.deepStrictEqual(yield* walletState("po"), { W: 990_000, usedQuota: 160_000, requestCount: 2 })
          assert.sameMembers(yield* ledgerRows({ holdId: "po-old", sourceId: "wallet" }), ["wallet po settle -10000"])
          yield* auditClean
        }))

      it.effect("issue 8 #1: without wallet overflow the extra of an old-period hold is recorded unbilled, never charged to today", () =>
        Effect.gen(function*() {
          const old = yield* scenario("pn", { balance: 1_000_000, allowWalletOverflow: false })
          const settlement = yield* old.settle(70_000)
          assert.strictEqual(yield* used("pn-s"), 90_000)
          assert.deepStrictEqual(
            settlement.parts.filter((p) => p.kind === "funding").map((p) => [p.sourceId, p.charged, p.unbilled]),
            [["subscription", 60_000, 10_000]]
          )
          // §3.4: usedQuota counts what was charged (70,000 less the 10,000 recorded unbilled).
          assert.deepStrictEqual(yield* walletState("pn"), { W: 1_000_000, usedQuota: 150_000, requestCount: 2 })
          assert.include(
            yield* ledgerRows({ holdId: "pn-old", sourceId: "subscription" }),
            "subscription pn-s unbilled 0 unbilled 10000"
          )
          yield* auditClean
        }))

      it.effect("issue 8 #1: the recovery pass expiring a hold from the previous period leaves today's usage alone", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* scenario("pe")
          yield* TestClock.setTime(t("2026-11-29T01:00:00Z"))
          const report = yield* billing.reapExpired()
          assert.deepStrictEqual(report.failures, [])
          assert.strictEqual((yield* billing.get("pe-old")).status, "expired")
          assert.strictEqual(yield* used("pe-s"), 90_000)
          assert.strictEqual(yield* subscriptionNet("pe-old"), 0)
          yield* auditClean
        }))

      it.effect("issue 8 #1: a split hold over a daily and a never-resetting subscription: only the reset one keeps its new usage", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* TestClock.setTime(t("2026-11-28T23:55:00Z"))
          yield* account("pm", 0)
          // the daily one ends sooner, so it is drawn first
          yield* subscribe("pm-d", "pm", { total: 100_000, period: "daily", durationSeconds: 10 * 86_400 })
          yield* subscribe("pm-n", "pm", { total: 100_000, period: "never", durationSeconds: 20 * 86_400 })
          yield* (yield* billing.open({
            holdId: "pm-0",
            accountId: "pm",
            estimate: 70_000,
            preference: "subscription_only"
          })).settle(70_000)
          yield* (yield* billing.open({
            holdId: "pm-00",
            accountId: "pm",
            estimate: 80_000,
            preference: "subscription_only"
          })).settle(80_000)
          assert.deepStrictEqual([yield* used("pm-d"), yield* used("pm-n")], [70_000, 80_000])
          // neither has 50,000 left: 30,000 from the daily one, 20,000 from the other
          const old = yield* billing.open({
            holdId: "pm-old",
            accountId: "pm",
            estimate: 50_000,
            preference: "subscription_only",
            split: true,
            ttlMillis: HOUR
          })
          assert.deepStrictEqual([yield* used("pm-d"), yield* used("pm-n")], [100_000, 100_000])
          yield* TestClock.setTime(t("2026-11-29T00:01:00Z"))
          yield* (yield* billing.open({
            holdId: "pm-1",
            accountId: "pm",
            estimate: 90_000,
            preference: "subscription_only"
          })).settle(90_000)
          assert.deepStrictEqual([yield* used("pm-d"), yield* used("pm-n")], [90_000, 100_000])
          // 10,000 of 50,000: give back 40,000 in reverse order: 20,000 to the never-resetting
          // subscription (its period is still the same), 20,000 to yesterday's period of the daily one
          yield* old.settle(10_000)
          assert.deepStrictEqual([yield* used("pm-d"), yield* used("pm-n")], [90_000, 80_000])
          assert.strictEqual(yield* subscriptionNet("pm-old"), -10_000)
          yield* auditClean
        }))

      it.effect("issue 8 #1: a hold opened and settled within one period is unchanged (give-back and extra move today's usage)", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* TestClock.setTime(t("2026-11-29T10:00:00Z"))
          yield* account("pw", 0)
          yield* subscribe("pw-s", "pw", { total: 100_000, period: "daily" })
          yield* (yield* billing.open({
            holdId: "pw-1",
            accountId: "pw",
            estimate: 60_000,
            preference: "subscription_only"
          })).settle(5_000)
          assert.strictEqual(yield* used("pw-s"), 5_000)
          yield* (yield* billing.open({
            holdId: "pw-2",
            accountId: "pw",
            estimate: 10_000,
            preference: "subscription_only"
          })).settle(20_000)
          assert.strictEqual(yield* used("pw-s"), 25_000)
          const r = yield* billing.open({
            holdId: "pw-3",
            accountId: "pw",
            estimate: 30_000,
            preference: "subscription_only"
          })
          yield* r.refund
          assert.strictEqual(yield* used("pw-s"), 25_000)
          yield* auditClean
        }))
    })
  })

  // Separate clients (own pools) on one database: the reset job, old-period settles and
  // refunds, and new-period usage all at once.
  describe(`issue 8 #1 old holds racing the reset job on ${target.name}`, () => {
    it.live(
      "issue 8 #1: 10 holds from the previous period settled / refunded concurrently with the reset job and new usage: the new period holds exactly its own usage",
      () =>
        Effect.scoped(Effect.gen(function*() {
          const isolated = yield* TestDatabase.isolated(target)
          const clients = yield* Effect.all(
            Array.from({ length: 3 }, () => KnexClient.fromUrl(isolated.url, isolated.options))
          )
          const on = <A, E, R>(client: KnexClient.Client, e: Effect.Effect<A, E, R>) =>
            e.pipe(
              Effect.provide(billingLayer().pipe(Layer.provideMerge(Layer.succeed(KnexClient.KnexClient, client))))
            )
          yield* Effect.provideService(Migrations.run(Subscription.allMigrations), KnexClient.KnexClient, clients[0]!)
          const now = yield* Clock.currentTimeMillis
          // Set up 90 minutes ago on a TestClock: hourly periods from then, so one boundary
          // has passed and the next one is 30 minutes away.
          yield* on(
            clients[0]!,
            Effect.gen(function*() {
              yield* TestClock.setTime(now - 90 * 60_000)
              const billing = yield* BillingSession.BillingSession
              yield* account("rc", 0)
              yield* subscribe("rc-s", "rc", { total: 1_000_000, period: "custom", resetSeconds: 3_600 })
              for (let i = 0; i < 10; i++) {
                yield* billing.open({
                  holdId: `rc-old-${i}`,
                  accountId: "rc",
                  estimate: 50_000,
                  preference: "subscription_only",
                  ttlMillis: 6 * HOUR
                })
              }
              assert.strictEqual(yield* used("rc-s"), 500_000)
            }).pipe(Effect.provide(TestClock.layer()))
          )
          const ops: Array<Effect.Effect<unknown, unknown>> = []
          for (let i = 0; i < 10; i++) {
            const client = clients[i % clients.length]!
            ops.push(on(
              client,
              Effect.gen(function*() {
                const billing = yield* BillingSession.BillingSession
                // settle below, at and above the reservation, or refund
                if (i % 4 === 3) yield* billing.refund(`rc-old-${i}`)
                else yield* billing.settle(`rc-old-${i}`, [10_000, 50_000, 70_000][i % 4]!)
              })
            ))
            ops.push(on(
              client,
              Effect.gen(function*() {
                const billing = yield* BillingSession.BillingSession
                yield* (yield* billing.open({
                  holdId: `rc-new-${i}`,
                  accountId: "rc",
                  estimate: 7_000,
                  preference: "subscription_only"
                })).settle(7_000)
              })
            ))
            if (i % 3 === 0) ops.push(on(client, SubscriptionJobs.resetDueSubscriptions()))
          }
          yield* Effect.all(ops, { concurrency: "unbounded" })
          yield* on(
            clients[0]!,
            Effect.gen(function*() {
              assert.strictEqual(yield* used("rc-s"), 70_000)
              // the holds' own rows: what each was charged from the subscription; the 20,000
              // extras above two old reservations go to the wallet (overflow allowed), never today
              assert.strictEqual((yield* walletState("rc")).W, -40_000)
              for (let i = 0; i < 10; i++) {
                const expected = i % 4 === 3 ? 0 : Math.min([10_000, 50_000, 70_000][i % 4]!, 50_000)
                assert.strictEqual(yield* subscriptionNet(`rc-old-${i}`), -expected, `rc-old-${i}`)
              }
              yield* auditClean
            })
          )
        })),
      60_000
    )
  })
}
