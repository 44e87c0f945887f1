/**
 * Concurrent reservations on one subscription never exceed its total:
 * many fibers on one client, fibers over several clients (separate pools) on
 * one database, and several OS processes on PostgreSQL and MariaDB/MySQL.
 * The wallet fallback is off (subscription_only), so exactly floor(total / P)
 * reservations succeed and every other one fails with InsufficientFunds.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { BillingError, BillingSession } from "@relay-billing/core"
import { KnexBilling, KnexClient, Migrations, TestDatabase } from "@relay-billing/knex"
import { Effect, Layer } from "effect"
// The built packages, as the workers load them.
import {
  Subscription as BuiltSubscription,
  SubscriptionAdmin as BuiltAdmin,
  SubscriptionSource as BuiltSource
} from "@relay-billing/subscription"
import { TokenBudget, WalletAdmin, WalletSource } from "@relay-billing/wallet"
import { releaseTogether, result, worker } from "./processes.js"
import {
  account,
  auditClean,
  ledgerRows,
  subscribe,
  subscriptionBilling,
  targets,
  used,
  walletBalance
} from "./support.js"

const P = 30_000

for (const target of targets) {
  describe(`concurrent opens on ${target.name}`, () => {
    layer(subscriptionBilling(target), { timeout: 60_000, excludeTestServices: true })((it) => {
      it.effect("60 concurrent opens of 30,000 on a 1,000,000 subscription: exactly 33 succeed, used never above the total", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("f", 5_000_000)
          yield* subscribe("f-s", "f", { total: 1_000_000 })
          const results = yield* Effect.all(
            Array.from(
              { length: 60 },
              (_, i) =>
                Effect.result(
                  billing.open({ holdId: `f-${i}`, accountId: "f", estimate: P, preference: "subscription_only" })
                )
            ),
            { concurrency: "unbounded" }
          )
          const ok = results.flatMap((r) => (r._tag === "Success" ? [r.success] : []))
          const failed = results.flatMap((r) => (r._tag === "Failure" ? [r.failure] : []))
          assert.strictEqual(ok.length, 33)
          for (const e of failed) assert.instanceOf(e, BillingError.InsufficientFunds, String(e))
          const reserved = ok.reduce((a, s) => a + s.hold.reserved, 0)
          assert.strictEqual(reserved, 990_000)
          assert.strictEqual(yield* used("f-s"), 990_000)
          // the ledger agrees: 33 reserve rows of −30,000
          const rows = yield* ledgerRows({ subjectId: "f-s" })
          assert.strictEqual(rows.length, 33)
          assert.isTrue(rows.every((r) => r === "subscription f-s reserve -30000"))
          // the wallet was never touched
          assert.strictEqual(yield* walletBalance("f"), 5_000_000)
          // resolve them concurrently: half settle at 20,000, half refund
          yield* Effect.all(
            ok.map((s, i) => (i % 2 === 0 ? Effect.asVoid(s.settle(20_000)) : Effect.asVoid(s.refund))),
            { concurrency: "unbounded" }
          )
          assert.strictEqual(yield* used("f-s"), 17 * 20_000)
          yield* auditClean
        }))

      it.effect("concurrent opens on two subscriptions: each reservation fits one of them, neither exceeds its total", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("g", 0)
          yield* subscribe("g-x", "g", { total: 100_000, durationSeconds: 10 * 86_400 })
          yield* subscribe("g-y", "g", { total: 70_000, durationSeconds: 20 * 86_400 })
          const results = yield* Effect.all(
            Array.from(
              { length: 20 },
              (_, i) =>
                Effect.result(
                  billing.open({ holdId: `g-${i}`, accountId: "g", estimate: P, preference: "subscription_only" })
                )
            ),
            { concurrency: "unbounded" }
          )
          // 3 fit in X (90,000) and 2 in Y (60,000)
          assert.strictEqual(results.filter((r) => r._tag === "Success").length, 5)
          assert.deepStrictEqual([yield* used("g-x"), yield* used("g-y")], [90_000, 60_000])
          yield* auditClean
        }))
    })

    // SQLite has one writer: separate pools only wait on each other's file lock (PG/MySQL only).
    it.live.skipIf(target.name === "sqlite")(
      "4 clients (separate pools) × 15 concurrent opens on one database: exactly 23 of 60 succeed",
      () =>
        Effect.scoped(Effect.gen(function*() {
          const isolated = yield* TestDatabase.isolated(target)
          const clients = yield* Effect.all(
            Array.from({ length: 4 }, () => KnexClient.fromUrl(isolated.url, isolated.options))
          )
          const stacks = clients.map((client) => Subscription_layer_on(client))
          yield* Effect.provideService(
            Migrations.run(BuiltSubscription.allMigrations),
            KnexClient.KnexClient,
            clients[0]!
          )
          const total = 23 * P + P - 1
          yield* Effect.gen(function*() {
            yield* account("m", 0)
            yield* subscribe("m-s", "m", { total })
          }).pipe(Effect.provide(stacks[0]!))
          const results = yield* Effect.all(
            stacks.flatMap((stack, k) =>
              Array.from({ length: 15 }, (_, i) =>
                Effect.result(
                  BillingSession.open({
                    holdId: `m-${k}-${i}`,
                    accountId: "m",
                    estimate: P,
                    preference: "subscription_only"
                  }).pipe(
                    Effect.provide(stack)
                  )
                ))
            ),
            { concurrency: "unbounded" }
          )
          const ok = results.filter((r) => r._tag === "Success")
          const failures = results.flatMap((r) => (r._tag === "Failure" ? [r.failure] : []))
          for (const e of failures) assert.instanceOf(e, BillingError.InsufficientFunds, String(e))
          assert.strictEqual(ok.length, 23)
          yield* Effect.gen(function*() {
            assert.strictEqual(yield* used("m-s"), 23 * P)
            yield* auditClean
          }).pipe(Effect.provide(stacks[0]!))
        })),
      60_000
    )
  })

  if (target.name !== "sqlite") {
    describe(`concurrent opens from several processes on ${target.name}`, () => {
      it.live(
        "4 processes × 16 concurrent opens on a subscription that affords exactly 23",
        () =>
          Effect.scoped(Effect.gen(function*() {
            const isolated = yield* TestDatabase.isolated(target)
            const client = yield* KnexClient.fromUrl(isolated.url, isolated.options)
            const stack = Subscription_layer_on(client)
            yield* Effect.provideService(Migrations.run(BuiltSubscription.allMigrations), KnexClient.KnexClient, client)
            const total = 23 * P + P - 1
            yield* Effect.gen(function*() {
              yield* account("p", 1_000_000)
              const admin = yield* BuiltAdmin.SubscriptionAdmin
              yield* admin.createPlan({
                id: "p-plan",
                name: "p",
                totalAmount: total,
                resetPeriod: "never",
                durationSeconds: 86_400
              })
              yield* admin.subscribe({ id: "p-s", accountId: "p", planId: "p-plan" })
            }).pipe(Effect.provide(stack))
            const workers = yield* Effect.all(
              Array.from({ length: 4 }, (_, k) =>
                worker(`open-${k}`, {
                  cmd: "open",
                  url: isolated.url,
                  options: isolated.options,
                  barrier: true,
                  accountId: "p",
                  idPrefix: `p-${k}`,
                  count: 16,
                  estimate: P,
                  preference: "subscription_only"
                }))
            )
            yield* releaseTogether(workers)
            const lines = yield* Effect.all(workers.map((w) => result(w)))
            const opened = lines.flatMap((l) => l["opened"] as Array<{ id: string; reserved: number }>)
            const failures = lines.flatMap((l) => l["failures"] as Array<{ tag: string }>)
            assert.strictEqual(opened.length, 23, JSON.stringify(failures.filter((f) => f.tag !== "InsufficientFunds")))
            assert.strictEqual(failures.length, 64 - 23)
            assert.isTrue(failures.every((f) => f.tag === "InsufficientFunds"), JSON.stringify(failures))
            assert.strictEqual(opened.reduce((a, o) => a + o.reserved, 0), 23 * P)
            yield* Effect.gen(function*() {
              assert.strictEqual(yield* used("p-s"), 23 * P)
              assert.strictEqual(yield* walletBalance("p"), 1_000_000)
              yield* auditClean
            }).pipe(Effect.provide(stack))
          })),
        60_000
      )
    })
  }
}

/** The built package's combined layer over a given client. */
function Subscription_layer_on(client: KnexClient.Client) {
  return Layer.mergeAll(
    KnexBilling.sessionLayer({ funding: [BuiltSource.make(), WalletSource.make()], budgets: [TokenBudget.make()] }),
    WalletAdmin.WalletAdmin.layer,
    BuiltAdmin.SubscriptionAdmin.layer
  ).pipe(Layer.provideMerge(Layer.succeed(KnexClient.KnexClient, client)))
}
