/**
 * Issue 8 #7: a part's `ref` is whatever its source produced. The subscription
 * source records its draw (`[[id, amount], …]`) there, which did not fit the old
 * 191-character column on PostgreSQL/MariaDB: split funding over 4 subscriptions
 * with UUID ids failed with `value too long`, and a subscription with a
 * 185-character id could never be reserved from.
 *
 * Issue 8 #2 for this package: plan and subscription ids compare byte for byte,
 * also in a database created by the old migration and upgraded in place.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { KnexClient, Migrations, TestDatabase } from "@relay-billing/knex"
import { WalletAdmin } from "@relay-billing/wallet"
import { Effect, Layer } from "effect"
import { Subscription, SubscriptionAdmin } from "../src/index.js"
import {
  account,
  auditClean,
  billingLayer,
  ledgerRows,
  subscribe,
  subscriptionBilling,
  targets,
  used,
  walletState
} from "./support.js"

const uuids = [
  "0b4f7a2e-6c1d-4e8a-9f3b-2d5c7e9a1b01",
  "1c5a8b3f-7d2e-4f9b-8a4c-3e6d8f0b2c02",
  "2d6b9c4a-8e3f-4a0c-9b5d-4f7e9a1c3d03",
  "3e7c0d5b-9f4a-4b1d-8c6e-5a8f0b2d4e04"
]

/** A 185-character subscription id (its plan id, `${id}-plan`, is 190). */
const longId = `sub-${"x".repeat(170)}-0123456789`

for (const target of targets) {
  describe(`long refs and byte-exact subscription ids on ${target.name}`, () => {
    layer(subscriptionBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #7: split funding over 4 subscriptions with UUID ids reserves, settles and refunds", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("u4", 100_000, { remain: 1_000_000 })
          // Soonest expiry first: the UUIDs in order, 100,000 of room each.
          for (const [i, id] of uuids.entries()) {
            yield* subscribe(id, "u4", { total: 100_000, durationSeconds: (i + 1) * 86_400 })
          }
          const s = yield* billing.open({
            holdId: "u4-h1",
            accountId: "u4",
            tokenId: "u4-t",
            estimate: 350_000,
            split: true
          })
          // v2: one part per subscription drawn, each with its own ref (the hold's parts are the
          // only record of them: no source keeps a copy).
          const subs = s.hold.parts.filter((p) => p.sourceId === "subscription")
          assert.deepStrictEqual(subs.map((p) => [p.amount, JSON.parse(p.ref!)]), [
            [100_000, [[uuids[0], 100_000]]],
            [100_000, [[uuids[1], 100_000]]],
            [100_000, [[uuids[2], 100_000]]],
            [50_000, [[uuids[3], 50_000]]]
          ])
          // The stored hold carries every ref.
          const stored = yield* billing.get("u4-h1")
          assert.deepStrictEqual(
            stored.parts.filter((p) => p.sourceId === "subscription").map((p) => p.ref),
            subs.map((p) => p.ref)
          )
          assert.deepStrictEqual(yield* Effect.forEach(uuids, used), [100_000, 100_000, 100_000, 50_000])
          // Settle below the reservation: given back in reverse order.
          yield* s.settle(220_000)
          assert.deepStrictEqual(yield* Effect.forEach(uuids, used), [100_000, 100_000, 20_000, 0])
          // A second split hold over the same subscriptions, refunded: each gets back what it gave.
          const r = yield* billing.open({
            holdId: "u4-h2",
            accountId: "u4",
            tokenId: "u4-t",
            estimate: 150_000,
            split: true
          })
          assert.deepStrictEqual(yield* Effect.forEach(uuids, used), [100_000, 100_000, 100_000, 70_000])
          yield* r.refund
          assert.deepStrictEqual(yield* Effect.forEach(uuids, used), [100_000, 100_000, 20_000, 0])
          assert.deepStrictEqual(yield* walletState("u4", "u4-t"), {
            W: 100_000,
            usedQuota: 220_000,
            requestCount: 1,
            R: 1_000_000 - 220_000,
            TU: 220_000
          })
          yield* auditClean
        }))

      it.effect("issue 8 #7: a subscription with a 185-character id is reserved from, settled and refunded", () =>
        Effect.gen(function*() {
          assert.strictEqual(longId.length, 185)
          const billing = yield* BillingSession.BillingSession
          yield* account("long", 0, { remain: 1_000_000 })
          yield* subscribe(longId, "long", { total: 100_000 })
          const s = yield* billing.open({
            holdId: "long-h1",
            accountId: "long",
            tokenId: "long-t",
            estimate: 30_000,
            preference: "subscription_only"
          })
          assert.deepStrictEqual(JSON.parse(s.hold.parts[0]!.ref!), [[longId, 30_000]])
          assert.strictEqual(yield* used(longId), 30_000)
          yield* s.settle(12_000)
          assert.strictEqual(yield* used(longId), 12_000)
          const r = yield* billing.open({
            holdId: "long-h2",
            accountId: "long",
            tokenId: "long-t",
            estimate: 30_000,
            preference: "subscription_only"
          })
          assert.strictEqual(yield* used(longId), 42_000)
          yield* r.refund
          assert.strictEqual(yield* used(longId), 12_000)
          assert.deepStrictEqual(
            yield* ledgerRows({ holdId: "long-h2" }).pipe(
              Effect.map((rows) => rows.filter((x) => x.startsWith("subscription")))
            ),
            [
              `subscription ${longId} reserve -30000`,
              `subscription ${longId} refund 30000`
            ]
          )
          assert.deepStrictEqual(yield* walletState("long", "long-t"), {
            W: 0,
            usedQuota: 12_000,
            requestCount: 1,
            R: 1_000_000 - 12_000,
            TU: 12_000
          })
          yield* auditClean
        }))

      it.effect("issue 8 #2: plans and subscriptions whose ids differ only by case or a trailing space are distinct", () =>
        Effect.gen(function*() {
          const admin = yield* SubscriptionAdmin.SubscriptionAdmin
          const billing = yield* BillingSession.BillingSession
          yield* account("pc", 0, { remain: 1_000_000 })
          for (const id of ["Plan-A", "plan-a", "plan-a "]) {
            yield* admin.createPlan({
              id,
              name: id,
              totalAmount: 50_000,
              resetPeriod: "never",
              durationSeconds: 86_400
            })
          }
          yield* admin.subscribe({ id: "Sub-A", accountId: "pc", planId: "Plan-A" })
          yield* admin.subscribe({ id: "sub-a", accountId: "pc", planId: "plan-a" })
          yield* admin.subscribe({ id: "sub-a ", accountId: "pc", planId: "plan-a " })
          const s = yield* billing.open({
            holdId: "pc-h",
            accountId: "pc",
            tokenId: "pc-t",
            estimate: 40_000,
            preference: "subscription_only"
          })
          yield* s.settle(40_000)
          const usage = yield* Effect.forEach(["Sub-A", "sub-a", "sub-a "], used)
          assert.strictEqual(usage.reduce((a, b) => a + b, 0), 40_000)
          assert.deepStrictEqual([...usage].sort(), [0, 0, 40_000])
          assert.deepStrictEqual(
            yield* Effect.forEach(
              ["Sub-A", "sub-a", "sub-a "],
              (id) => Effect.map(admin.subscription(id), (x) => x.planId)
            ),
            ["Plan-A", "plan-a", "plan-a "]
          )
          yield* auditClean
        }))
    })

    layer(TestDatabase.layer(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #2 and #7: every migration rolls back and applies again", () =>
        Effect.gen(function*() {
          yield* Migrations.run(Subscription.allMigrations)
          yield* Migrations.rollbackAll(Subscription.allMigrations)
          const again = yield* Migrations.run(Subscription.allMigrations)
          assert.includeMembers([...again["knex"]!], [
            "0001_holds_parts_ledger",
            "0002_binary_ids",
            "0004_unbounded_part_refs"
          ])
          assert.deepStrictEqual(again["subscription"], ["0001_plans_subscriptions", "0002_binary_ids"])
        }))
    })

    layer(TestDatabase.layer(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #2 and #7: a database created with the old subscription migration is upgraded, then tells ids apart and takes long refs", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const old = Subscription.allMigrations.map((set) => ({
            name: set.name,
            migrations: set.migrations.filter((m) =>
              m.name.startsWith("0001") || (set.name === "wallet" && m.name.startsWith("0002"))
            )
          }))
          yield* Migrations.run(old)
          yield* client.query(
            "old.account",
            (db) => db(client.table("accounts")).insert({ id: "mig", balance: 0, created_at: 1 })
          )
          yield* client.query("old.plan", (db) =>
            db(client.table("plans")).insert({
              id: "Old-Plan",
              name: "old",
              total_amount: 100_000,
              reset_period: "never",
              duration_seconds: 30 * 86_400,
              allow_wallet_overflow: false,
              created_at: 1
            }))
          const applied = yield* Migrations.run(Subscription.allMigrations)
          assert.deepStrictEqual(applied["subscription"], ["0002_binary_ids"])
          yield* Effect.gen(function*() {
            const admin = yield* SubscriptionAdmin.SubscriptionAdmin
            const wallet = yield* WalletAdmin.WalletAdmin
            const billing = yield* BillingSession.BillingSession
            yield* wallet.createToken({ id: "mig-t", accountId: "mig", remain: 1_000_000 })
            yield* admin.createPlan({
              id: "old-plan",
              name: "new",
              totalAmount: 100_000,
              resetPeriod: "never",
              durationSeconds: 30 * 86_400
            })
            yield* admin.subscribe({ id: longId, accountId: "mig", planId: "Old-Plan" })
            yield* admin.subscribe({ id: longId.toUpperCase(), accountId: "mig", planId: "old-plan" })
            const s = yield* billing.open({
              holdId: "mig-h",
              accountId: "mig",
              tokenId: "mig-t",
              estimate: 150_000,
              split: true
            })
            assert.isAbove(s.hold.parts[0]!.ref!.length, 191)
            yield* s.settle(150_000)
            assert.strictEqual((yield* used(longId)) + (yield* used(longId.toUpperCase())), 150_000)
            assert.deepStrictEqual(
              [(yield* admin.subscription(longId)).planId, (yield* admin.subscription(longId.toUpperCase())).planId],
              ["Old-Plan", "old-plan"]
            )
            yield* auditClean
          }).pipe(Effect.provide(billingLayer().pipe(Layer.provideMerge(Layer.succeed(KnexClient.KnexClient, client)))))
        }))
    })
  })
}
