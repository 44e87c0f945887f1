/**
 * Period resets and expiry against real databases, on every target, with a
 * TestClock: calendar boundaries in UTC and in a configured time zone, lazy
 * resets on reserve, catching up missed periods, the reset / expiry jobs (run
 * twice, and concurrently from several fibers with separate clients), and
 * expired or cancelled subscriptions never being used.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { BillingError, BillingSession } from "@relay-billing/core"
import { KnexClient, Migrations, TestDatabase } from "@relay-billing/knex"
import { WalletAdmin } from "@relay-billing/wallet"
import { Clock, Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Subscription, SubscriptionAdmin, SubscriptionJobs } from "../src/index.js"
import {
  account,
  auditClean,
  billingLayer,
  failureOf,
  ledgerRows,
  resetRows,
  subscribe,
  subscriptionBilling,
  t,
  targets,
  used
} from "./support.js"

const sub = (id: string) =>
  Effect.gen(function*() {
    const admin = yield* SubscriptionAdmin.SubscriptionAdmin
    return yield* admin.subscription(id)
  })

const consume = (accountId: string, holdId: string, amount: number) =>
  Effect.gen(function*() {
    const billing = yield* BillingSession.BillingSession
    const s = yield* billing.open({ holdId, accountId, estimate: amount, preference: "subscription_only" })
    yield* s.settle(amount)
  })

const iso = (ms: number | undefined) => (ms === undefined ? "none" : new Date(ms).toISOString())

for (const target of targets) {
  describe(`periods on ${target.name} (UTC)`, () => {
    layer(subscriptionBilling(target), { timeout: 60_000 })((it) => {
      it.effect("daily: no reset before midnight, a lazy reset on the first reserve at/after it, next boundary the following midnight", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(t("2026-11-28T10:00:00Z"))
          yield* account("d", 0)
          const created = yield* subscribe("d-s", "d", { total: 100_000, period: "daily" })
          assert.strictEqual(iso(created.nextResetAt), "2026-11-29T00:00:00.000Z")
          assert.strictEqual(iso(created.lastResetAt), "2026-11-28T00:00:00.000Z")
          yield* consume("d", "d-1", 40_000)
          yield* TestClock.setTime(t("2026-11-28T23:59:59.999Z"))
          yield* consume("d", "d-2", 10_000)
          assert.strictEqual(yield* used("d-s"), 50_000)
          assert.strictEqual(yield* resetRows("d-s"), 0)
          yield* TestClock.setTime(t("2026-11-29T00:00:00Z"))
          // stored usage is stale until someone reserves (or the job runs)
          assert.strictEqual(yield* used("d-s"), 50_000)
          yield* consume("d", "d-3", 70_000) // would not fit without the reset
          const after = yield* sub("d-s")
          assert.strictEqual(after.used, 70_000)
          assert.strictEqual(iso(after.lastResetAt), "2026-11-29T00:00:00.000Z")
          assert.strictEqual(iso(after.nextResetAt), "2026-11-30T00:00:00.000Z")
          assert.strictEqual(yield* resetRows("d-s"), 1)
          assert.deepStrictEqual((yield* ledgerRows({ subjectId: "d-s" })).filter((r) => r.includes("reset")), [
            "subscription d-s reset 50000"
          ])
          yield* auditClean
        }))

      it.effect("weekly resets on Monday 00:00 UTC, monthly on the 1st (from the 31st), custom every N seconds from the start", () =>
        Effect.gen(function*() {
          // 2026-11-28 is a Saturday
          yield* TestClock.setTime(t("2026-11-28T08:00:00Z"))
          yield* account("w", 0)
          const w = yield* subscribe("w-s", "w", { total: 100_000, period: "weekly" })
          assert.strictEqual(iso(w.nextResetAt), "2026-11-30T00:00:00.000Z")
          yield* consume("w", "w-1", 60_000)
          yield* TestClock.setTime(t("2026-11-29T23:59:00Z"))
          const tooMuch = yield* failureOf(consume("w", "w-2", 60_000))
          assert.instanceOf(tooMuch, BillingError.InsufficientFunds)
          yield* TestClock.setTime(t("2026-11-30T00:00:00Z"))
          yield* consume("w", "w-3", 60_000)
          assert.strictEqual(yield* used("w-s"), 60_000)
          assert.strictEqual(iso((yield* sub("w-s")).nextResetAt), "2026-12-07T00:00:00.000Z")

          yield* TestClock.setTime(t("2026-01-31T20:00:00Z"))
          yield* account("m", 0)
          const m = yield* subscribe("m-s", "m", { total: 100_000, period: "monthly", durationSeconds: 400 * 86_400 })
          assert.strictEqual(iso(m.nextResetAt), "2026-02-01T00:00:00.000Z")
          yield* consume("m", "m-1", 90_000)
          yield* TestClock.setTime(t("2026-02-01T00:00:01Z"))
          yield* consume("m", "m-2", 90_000)
          assert.strictEqual(yield* used("m-s"), 90_000)
          assert.strictEqual(iso((yield* sub("m-s")).nextResetAt), "2026-03-01T00:00:00.000Z")

          const start = t("2026-05-05T05:05:05Z")
          yield* TestClock.setTime(start)
          yield* account("c", 0)
          const c = yield* subscribe("c-s", "c", { total: 10_000, period: "custom", resetSeconds: 3_600 })
          assert.strictEqual(c.nextResetAt, start + 3_600_000)
          yield* consume("c", "c-1", 10_000)
          yield* TestClock.setTime(start + 3_600_000 - 1)
          assert.instanceOf(yield* failureOf(consume("c", "c-2", 1)), BillingError.InsufficientFunds)
          yield* TestClock.setTime(start + 3_600_000)
          yield* consume("c", "c-3", 1)
          assert.strictEqual(yield* used("c-s"), 1)
          assert.strictEqual((yield* sub("c-s")).nextResetAt, start + 7_200_000)
          yield* auditClean
        }))

      it.effect("a plan that never resets keeps its usage", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(t("2026-11-28T08:00:00Z"))
          yield* account("n", 0)
          const n = yield* subscribe("n-s", "n", { total: 100_000, period: "never" })
          assert.strictEqual(n.nextResetAt, undefined)
          yield* consume("n", "n-1", 60_000)
          yield* TestClock.adjust("20 days")
          assert.instanceOf(yield* failureOf(consume("n", "n-2", 60_000)), BillingError.InsufficientFunds)
          assert.strictEqual(yield* used("n-s"), 60_000)
          assert.strictEqual(yield* resetRows("n-s"), 0)
          yield* auditClean
        }))

      it.effect("missed periods are caught up in one step: usage resets once, the next boundary is the first after now", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(t("2026-11-01T12:00:00Z"))
          yield* account("cu", 0)
          yield* subscribe("cu-s", "cu", { total: 100_000, period: "daily" })
          yield* consume("cu", "cu-1", 80_000)
          yield* TestClock.setTime(t("2026-11-06T15:30:00Z"))
          yield* consume("cu", "cu-2", 5_000)
          const s = yield* sub("cu-s")
          assert.strictEqual(s.used, 5_000)
          assert.strictEqual(iso(s.lastResetAt), "2026-11-06T00:00:00.000Z")
          assert.strictEqual(iso(s.nextResetAt), "2026-11-07T00:00:00.000Z")
          assert.strictEqual(yield* resetRows("cu-s"), 1)
          // custom: 10 missed hours → one reset, next = start + 11h
          const start = t("2026-11-01T00:00:00Z")
          yield* TestClock.setTime(start)
          yield* account("cu2", 0)
          yield* subscribe("cu2-s", "cu2", { total: 100_000, period: "custom", resetSeconds: 3_600 })
          yield* consume("cu2", "cu2-1", 1_000)
          yield* TestClock.setTime(start + 10 * 3_600_000 + 123)
          yield* consume("cu2", "cu2-2", 2_000)
          assert.strictEqual(yield* used("cu2-s"), 2_000)
          assert.strictEqual((yield* sub("cu2-s")).nextResetAt, start + 11 * 3_600_000)
          assert.strictEqual(yield* resetRows("cu2-s"), 1)
          yield* auditClean
        }))

      it.effect("expired (by time or by the job) and cancelled subscriptions are not used", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const admin = yield* SubscriptionAdmin.SubscriptionAdmin
          yield* TestClock.setTime(t("2026-11-28T00:00:00Z"))
          yield* account("ex", 50_000)
          yield* subscribe("ex-s", "ex", { total: 100_000, durationSeconds: 86_400 })
          yield* subscribe("ex-c", "ex", { total: 100_000 })
          yield* admin.cancel("ex-c")
          yield* consume("ex", "ex-1", 1_000)
          assert.strictEqual(yield* used("ex-s"), 1_000)
          // past its end, still "active" in the table: not used
          yield* TestClock.setTime(t("2026-11-29T00:00:00Z"))
          assert.strictEqual((yield* sub("ex-s")).status, "active")
          const e = yield* failureOf(consume("ex", "ex-2", 1_000))
          assert.instanceOf(e, BillingError.InsufficientFunds)
          const w = yield* billing.open({ holdId: "ex-3", accountId: "ex", estimate: 1_000 })
          assert.deepStrictEqual(w.hold.parts.map((p) => p.sourceId), ["wallet"])
          yield* w.settle(1_000)
          assert.deepStrictEqual([yield* used("ex-s"), yield* used("ex-c")], [1_000, 0])
          yield* auditClean
        }))
    })
  })

  // The jobs scan the whole table: one database per test keeps other tests' rows out.
  describe(`subscription jobs on ${target.name}`, () => {
    layer(subscriptionBilling(target), { timeout: 60_000 })((it) => {
      it.effect("resetDueSubscriptions resets only the due ones, catches up, and a second run does nothing", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(t("2026-11-27T10:00:00Z")) // Friday
          yield* account("j", 0)
          yield* subscribe("j-daily", "j", { total: 100_000, period: "daily" })
          yield* subscribe("j-weekly", "j", { total: 100_000, period: "weekly" })
          yield* subscribe("j-never", "j", { total: 100_000, period: "never" })
          for (const id of ["j-daily", "j-weekly", "j-never"]) {
            const billing = yield* BillingSession.BillingSession
            const s = yield* billing.open({
              holdId: `${id}-h`,
              accountId: "j",
              estimate: 100_000,
              preference: "subscription_only"
            })
            yield* s.settle(10_000)
          }
          assert.strictEqual(yield* SubscriptionJobs.resetDueSubscriptions(), 0)
          yield* TestClock.setTime(t("2026-11-29T12:00:00Z")) // Sunday: daily is 2 periods late
          assert.strictEqual(yield* SubscriptionJobs.resetDueSubscriptions(), 1)
          assert.strictEqual(yield* SubscriptionJobs.resetDueSubscriptions(), 0)
          assert.deepStrictEqual([yield* used("j-daily"), yield* used("j-weekly"), yield* used("j-never")], [
            0,
            10_000,
            10_000
          ])
          assert.strictEqual(iso((yield* sub("j-daily")).nextResetAt), "2026-11-30T00:00:00.000Z")
          yield* TestClock.setTime(t("2026-11-30T00:00:00Z"))
          assert.strictEqual(yield* SubscriptionJobs.resetDueSubscriptions(), 2)
          assert.strictEqual(yield* SubscriptionJobs.resetDueSubscriptions(), 0)
          assert.deepStrictEqual([
            yield* resetRows("j-daily"),
            yield* resetRows("j-weekly"),
            yield* resetRows("j-never")
          ], [1, 1, 0])
          yield* auditClean
        }))

      it.effect("expireDueSubscriptions marks only subscriptions past their end; a second run does nothing; expired are not used", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(t("2026-11-27T10:00:00Z"))
          yield* account("x", 0)
          yield* subscribe("x-short", "x", { total: 100_000, durationSeconds: 3_600 })
          yield* subscribe("x-long", "x", { total: 100_000, durationSeconds: 7_200 })
          assert.strictEqual(yield* SubscriptionJobs.expireDueSubscriptions, 0)
          yield* TestClock.setTime(t("2026-11-27T11:00:00Z")) // exactly the end of x-short
          assert.strictEqual(yield* SubscriptionJobs.expireDueSubscriptions, 1)
          assert.strictEqual(yield* SubscriptionJobs.expireDueSubscriptions, 0)
          assert.deepStrictEqual([(yield* sub("x-short")).status, (yield* sub("x-long")).status], ["expired", "active"])
          yield* consume("x", "x-1", 5_000)
          assert.deepStrictEqual([yield* used("x-short"), yield* used("x-long")], [0, 5_000])
          yield* TestClock.setTime(t("2026-12-01T00:00:00Z"))
          assert.strictEqual(yield* SubscriptionJobs.expireDueSubscriptions, 1)
          assert.instanceOf(yield* failureOf(consume("x", "x-2", 1)), BillingError.InsufficientFunds)
          yield* auditClean
        }))
    })
  })

  describe(`periods in a configured time zone on ${target.name}`, () => {
    layer(subscriptionBilling(target, { subscription: { timeZone: "Asia/Tokyo" } }), { timeout: 60_000 })((it) => {
      it.effect("daily resets at local midnight (15:00 UTC for Asia/Tokyo), through the layer's source and admin, and the job with the same zone", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(t("2026-11-28T10:00:00Z")) // 19:00 JST
          yield* account("tz", 0)
          const s = yield* subscribe("tz-s", "tz", { total: 100_000, period: "daily" })
          assert.strictEqual(iso(s.lastResetAt), "2026-11-27T15:00:00.000Z")
          assert.strictEqual(iso(s.nextResetAt), "2026-11-28T15:00:00.000Z")
          yield* consume("tz", "tz-1", 70_000)
          yield* TestClock.setTime(t("2026-11-28T14:59:59Z"))
          assert.instanceOf(yield* failureOf(consume("tz", "tz-2", 70_000)), BillingError.InsufficientFunds)
          yield* TestClock.setTime(t("2026-11-28T15:00:00Z"))
          yield* consume("tz", "tz-3", 70_000)
          const after = yield* sub("tz-s")
          assert.strictEqual(after.used, 70_000)
          assert.strictEqual(iso(after.lastResetAt), "2026-11-28T15:00:00.000Z")
          assert.strictEqual(iso(after.nextResetAt), "2026-11-29T15:00:00.000Z")
          // the job, told the same zone, keeps the same boundaries
          yield* TestClock.setTime(t("2026-11-29T15:00:00Z"))
          assert.strictEqual(yield* SubscriptionJobs.resetDueSubscriptions({ timeZone: "Asia/Tokyo" }), 1)
          assert.strictEqual(iso((yield* sub("tz-s")).nextResetAt), "2026-11-30T15:00:00.000Z")
          // monthly at local midnight of the 1st: 2026-11-30T15:00Z
          yield* account("tzm", 0)
          const m = yield* subscribe("tzm-s", "tzm", { total: 1, period: "monthly" })
          assert.strictEqual(iso(m.nextResetAt), "2026-11-30T15:00:00.000Z")
          yield* auditClean
        }))
    })
    layer(subscriptionBilling(target, { subscription: { timeZone: "Europe/Berlin" } }), { timeout: 60_000 })((it) => {
      it.effect("daily in Europe/Berlin across the DST change: 23:00 UTC, then 22:00 UTC", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(t("2026-03-28T12:00:00Z"))
          yield* account("be", 0)
          const s = yield* subscribe("be-s", "be", { total: 100_000, period: "daily" })
          assert.strictEqual(iso(s.nextResetAt), "2026-03-28T23:00:00.000Z")
          yield* consume("be", "be-1", 100_000)
          yield* TestClock.setTime(t("2026-03-28T23:00:00Z"))
          yield* consume("be", "be-2", 100_000)
          assert.strictEqual(iso((yield* sub("be-s")).nextResetAt), "2026-03-29T22:00:00.000Z")
          yield* auditClean
        }))
    })
  })

  // Separate clients (own pools) on one database, real time: each due subscription is reset exactly once.
  describe(`concurrent reset jobs on ${target.name}`, () => {
    it.live(
      "4 fibers with separate clients run resetDueSubscriptions at once: each of 30 due subscriptions is reset exactly once",
      () =>
        Effect.scoped(Effect.gen(function*() {
          const isolated = yield* TestDatabase.isolated(target)
          const clients = yield* Effect.all(
            Array.from({ length: 4 }, () => KnexClient.fromUrl(isolated.url, isolated.options))
          )
          const main = clients[0]!
          const onMain = <A, E, R>(e: Effect.Effect<A, E, R>) =>
            e.pipe(Effect.provide(
              billingLayer().pipe(Layer.provideMerge(Layer.succeed(KnexClient.KnexClient, main)))
            ))
          yield* Effect.provideService(Migrations.run(Subscription.allMigrations), KnexClient.KnexClient, main)
          const now = yield* Clock.currentTimeMillis
          const N = 30
          // Set-up two days in the past (a TestClock): usage inside a period that has ended since.
          yield* onMain(
            Effect.gen(function*() {
              yield* TestClock.setTime(now - 2 * 86_400_000)
              const wallet = yield* WalletAdmin.WalletAdmin
              const billing = yield* BillingSession.BillingSession
              for (let i = 0; i < N; i++) {
                yield* wallet.createAccount({ id: `cj-a${i}`, balance: 0 })
                yield* subscribe(`cj-${i}`, `cj-a${i}`, { total: 100_000, period: "daily" })
                // usage, so that its reset writes a ledger row (a reset of 0 writes none)
                const s = yield* billing.open({
                  holdId: `cj-h${i}`,
                  accountId: `cj-a${i}`,
                  estimate: 1 + i,
                  preference: "subscription_only"
                })
                yield* s.settle(1 + i)
              }
            }).pipe(Effect.provide(TestClock.layer()))
          )
          const lazy = yield* Effect.provideService(
            Effect.gen(function*() {
              let n = 0
              for (let i = 0; i < N; i++) n += yield* resetRows(`cj-${i}`)
              return n
            }),
            KnexClient.KnexClient,
            main
          )
          const counts = yield* Effect.all(
            clients.map((client) =>
              Effect.provideService(SubscriptionJobs.resetDueSubscriptions(), KnexClient.KnexClient, client)
            ),
            { concurrency: "unbounded" }
          )
          assert.strictEqual(lazy, 0)
          assert.strictEqual(counts.reduce((a, b) => a + b, 0), N, `job counts ${JSON.stringify(counts)}`)
          yield* Effect.provideService(
            Effect.gen(function*() {
              const admin = SubscriptionAdmin.make(main)
              for (let i = 0; i < N; i++) {
                assert.strictEqual(yield* resetRows(`cj-${i}`), 1, `reset rows of cj-${i}`)
                const s = yield* admin.subscription(`cj-${i}`)
                assert.strictEqual(s.used, 0)
                assert.isAbove(s.nextResetAt!, now)
              }
              const again = yield* SubscriptionJobs.resetDueSubscriptions()
              assert.strictEqual(again, 0)
              yield* auditClean
            }),
            KnexClient.KnexClient,
            main
          )
        })),
      60_000
    )
  })
}
