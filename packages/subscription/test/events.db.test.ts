/**
 * LowBalance events (§7) over the knex stores, on every target: after a
 * settle whose paying source ends below the account's threshold (default
 * 1,000, Accounts.setLowBalanceThreshold), exactly one event with the
 * right source, subject and balance; subscription-funded requests warn about
 * the subscription; at most 2 per account and source in any 10 minutes
 * (TestClock), also across two BillingSession stacks (two clients, two
 * publishers) and several OS processes sharing one database.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { BillingEvents, BillingSession } from "@relay-billing/core"
import { Accounts, KnexClient, Migrations, TestDatabase } from "@relay-billing/knex"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Subscription } from "../src/index.js"
import { releaseTogether, result, worker } from "./processes.js"
import { account, auditClean, billingLayer, migratedClient, subscribe, targets, walletBalance } from "./support.js"

type Event = BillingEvents.BillingEvent

// The rate limit stores send times; start the TestClock at a realistic time, not at the epoch.
const NOW = Date.parse("2026-11-28T09:00:00Z")
type Low = Extract<Event, { readonly _tag: "LowBalance" }>

/** A publisher that records every event. */
const recorder = () => {
  const events: Array<Event> = []
  const publisher = Layer.succeed(BillingEvents.BillingEvents, {
    publish: (event: Event) => Effect.sync(() => void events.push(event))
  })
  const low = (accountId: string) =>
    events.filter((e): e is Low => e._tag === "LowBalance" && e.accountId === accountId)
      .map((e) => ({ sourceId: e.sourceId, subjectId: e.subjectId, balance: e.balance, threshold: e.threshold }))
  return { events, publisher, low }
}

const settleOne = (holdId: string, accountId: string, estimate: number, actual: number, preference = "wallet_only") =>
  Effect.gen(function*() {
    const billing = yield* BillingSession.BillingSession
    const s = yield* billing.open({ holdId, accountId, estimate, preference })
    return yield* s.settle(actual)
  })

for (const target of targets) {
  describe(`low-balance events on ${target.name}`, () => {
    const rec = recorder()
    const stack = billingLayer().pipe(Layer.provide(rec.publisher), Layer.provideMerge(migratedClient(target)))

    layer(stack, { timeout: 60_000 })((it) => {
      it.effect("a settle leaving the wallet below 1,000 publishes one event with source, subject and the balance read after the settle", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(NOW)
          yield* account("lw", 10_000)
          yield* settleOne("lw-1", "lw", 5_000, 8_000)
          assert.deepStrictEqual(rec.low("lw"), [])
          yield* settleOne("lw-2", "lw", 1_000, 1_500)
          assert.strictEqual(yield* walletBalance("lw"), 500)
          assert.deepStrictEqual(rec.low("lw"), [{
            sourceId: "wallet",
            subjectId: "lw",
            balance: 500,
            threshold: 1_000
          }])
          // exactly at the threshold is not below it
          yield* account("lx", 2_000)
          yield* settleOne("lx-1", "lx", 1_000, 1_000)
          assert.strictEqual(yield* walletBalance("lx"), 1_000)
          assert.deepStrictEqual(rec.low("lx"), [])
          // a refund publishes nothing
          yield* account("ly", 500)
          const billing = yield* BillingSession.BillingSession
          const s = yield* billing.open({ holdId: "ly-1", accountId: "ly", estimate: 100, preference: "wallet_only" })
          yield* s.refund
          assert.deepStrictEqual(rec.low("ly"), [])
          yield* auditClean
        }))

      it.effect("the account's own threshold (setLowBalanceThreshold) is used", () =>
        Effect.gen(function*() {
          const accounts = yield* Accounts.Accounts
          yield* TestClock.setTime(NOW)
          yield* account("lt", 100_000)
          yield* accounts.setLowBalanceThreshold({ accountId: "lt", threshold: 50_000 })
          yield* settleOne("lt-1", "lt", 10_000, 40_000)
          assert.deepStrictEqual(rec.low("lt"), [])
          yield* settleOne("lt-2", "lt", 10_000, 20_000)
          assert.deepStrictEqual(rec.low("lt"), [{
            sourceId: "wallet",
            subjectId: "lt",
            balance: 40_000,
            threshold: 50_000
          }])
          yield* auditClean
        }))

      it.effect("subscription-funded requests warn about the subscription, not the wallet; an unlimited subscription never warns", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(NOW)
          yield* account("ls", 500) // the wallet itself is below the threshold
          yield* subscribe("ls-s", "ls", { total: 10_000 })
          yield* settleOne("ls-1", "ls", 5_000, 5_000, "subscription_first")
          assert.deepStrictEqual(rec.low("ls"), [])
          yield* settleOne("ls-2", "ls", 4_000, 4_600, "subscription_first")
          assert.deepStrictEqual(rec.low("ls"), [{
            sourceId: "subscription",
            subjectId: "ls",
            balance: 400,
            threshold: 1_000
          }])
          yield* account("lu", 500)
          yield* subscribe("lu-s", "lu", { total: 0 })
          yield* settleOne("lu-1", "lu", 5_000, 5_000_000, "subscription_first")
          assert.deepStrictEqual(rec.low("lu"), [])
          yield* auditClean
        }))

      it.effect("at most 2 per account and source in any 10 minutes (TestClock); wallet and subscription are counted apart", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(Date.parse("2026-11-28T12:00:00Z"))
          yield* account("lr", 10_000)
          yield* subscribe("lr-s", "lr", { total: 100_000 })
          for (let i = 0; i < 5; i++) yield* settleOne(`lr-a${i}`, "lr", 100, i === 0 ? 9_100 : 100)
          assert.strictEqual(yield* walletBalance("lr"), 500)
          assert.strictEqual(rec.low("lr").length, 2)
          yield* TestClock.adjust("9 minutes")
          yield* settleOne("lr-b", "lr", 100, 100)
          assert.strictEqual(rec.low("lr").length, 2)
          // the subscription has its own budget of warnings
          yield* settleOne("lr-s1", "lr", 99_300, 99_300, "subscription_only")
          yield* settleOne("lr-s2", "lr", 100, 100, "subscription_only")
          yield* settleOne("lr-s3", "lr", 100, 100, "subscription_only")
          assert.deepStrictEqual(rec.low("lr").map((e) => e.sourceId), [
            "wallet",
            "wallet",
            "subscription",
            "subscription"
          ])
          // 10 minutes after the first two: the wallet may warn twice more, then not again
          yield* TestClock.adjust("1 minute")
          for (let i = 0; i < 4; i++) {
            yield* settleOne(`lr-c${i}`, "lr", 10, 10)
            yield* TestClock.adjust("1 millis")
          }
          assert.deepStrictEqual(rec.low("lr").map((e) => e.sourceId), [
            "wallet",
            "wallet",
            "subscription",
            "subscription",
            "wallet",
            "wallet"
          ])
          yield* auditClean
        }))
    })

    // SQLite has a single writer: two pools on one file only queue behind each other (PG/MySQL only).
    it.live.skipIf(target.name === "sqlite")(
      "two BillingSession stacks (two clients, two publishers) on one database settling concurrently publish at most 2 in total",
      () =>
        Effect.scoped(Effect.gen(function*() {
          const isolated = yield* TestDatabase.isolated(target)
          const stacks = yield* Effect.all(Array.from({ length: 2 }, () =>
            Effect.map(KnexClient.fromUrl(isolated.url, isolated.options), (client) => {
              const r = recorder()
              return {
                rec: r,
                layer: billingLayer().pipe(
                  Layer.provide(r.publisher),
                  Layer.provideMerge(Layer.succeed(KnexClient.KnexClient, client))
                ),
                client
              }
            })))
          yield* Effect.provideService(
            Migrations.run(Subscription.allMigrations),
            KnexClient.KnexClient,
            stacks[0]!.client
          )
          yield* account("lc", 1_000).pipe(Effect.provide(stacks[0]!.layer))
          const runs = stacks.map((s, k) =>
            Effect.all(
              Array.from({ length: 6 }, (_, i) =>
                settleOne(`lc-${k}-${i}`, "lc", 10, 10)),
              { concurrency: "unbounded" }
            ).pipe(Effect.provide(s.layer))
          )
          yield* Effect.all(runs, { concurrency: "unbounded" })
          const total = stacks.reduce((a, s) => a + s.rec.low("lc").length, 0)
          assert.isAtMost(total, 2, `events: ${JSON.stringify(stacks.map((s) => s.rec.low("lc")))}`)
          assert.isAtLeast(total, 1)
          yield* Effect.gen(function*() {
            assert.strictEqual(yield* walletBalance("lc"), 880)
            yield* auditClean
          }).pipe(Effect.provide(stacks[0]!.layer))
        })),
      60_000
    )

    it.live.skipIf(target.name === "sqlite")(
      "3 OS processes settling low-balance requests at the same moment publish at most 2 in total",
      () =>
        Effect.scoped(Effect.gen(function*() {
          const isolated = yield* TestDatabase.isolated(target)
          const client = yield* KnexClient.fromUrl(isolated.url, isolated.options)
          const stack = billingLayer().pipe(Layer.provideMerge(Layer.succeed(KnexClient.KnexClient, client)))
          yield* Effect.provideService(Migrations.run(Subscription.allMigrations), KnexClient.KnexClient, client)
          yield* account("lp", 1_000).pipe(Effect.provide(stack))
          const workers = yield* Effect.all(Array.from({ length: 3 }, (_, k) =>
            worker(`settle-${k}`, {
              cmd: "settle",
              url: isolated.url,
              options: isolated.options,
              barrier: true,
              accountId: "lp",
              holds: Array.from({ length: 5 }, (_, i) => ({ holdId: `lp-${k}-${i}`, estimate: 10, actual: 10 }))
            })))
          yield* releaseTogether(workers)
          const lines = yield* Effect.all(workers.map((w) => result(w)))
          const settled = lines.reduce((a, l) => a + (l["settled"] as number), 0)
          assert.strictEqual(settled, 15, JSON.stringify(lines.map((l) => l["failures"])))
          const low = lines.flatMap((l) => l["lowBalance"] as Array<{ sourceId: string }>)
          assert.isAtMost(low.length, 2, JSON.stringify(low))
          assert.isAtLeast(low.length, 1)
          yield* Effect.gen(function*() {
            assert.strictEqual(yield* walletBalance("lp"), 850)
            yield* auditClean
          }).pipe(Effect.provide(stack))
        })),
      60_000
    )
  })
}
