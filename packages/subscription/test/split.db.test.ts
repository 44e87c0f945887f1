/**
 * Split funding (§7) against real databases, on every target: one reservation
 * drawn from subscriptions by soonest expiry, then the wallet; the hold parts
 * and the ledger say who paid what; an extra at settlement goes to the last
 * source, a shortfall is given back in reverse order; a refund returns each
 * part to its source. Opt-in per request (`split: true`) or per account
 * (`Accounts.setSplitFunding`), off by default. With a driver failure
 * injected at every query of a split open / settle / refund, the state is
 * exactly as before or exactly as after, and the audit is clean.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingError, BillingSession } from "@relay-billing/core"
import { Accounts, KnexClient } from "@relay-billing/knex"
import type { WalletAdmin } from "@relay-billing/wallet"
import { Effect, Exit, Layer } from "effect"

import {
  account,
  auditClean,
  billingLayer,
  failureOf,
  ledgerRows,
  migratedClient,
  pendingHolds,
  subscribe,
  subscriptionBilling,
  targets,
  used,
  walletState
} from "./support.js"

const billingService = Effect.gen(function*() {
  return yield* BillingSession.BillingSession
})

const parts = (
  hold: {
    readonly parts: ReadonlyArray<
      { readonly kind: string; readonly sourceId: string; readonly amount: number; readonly ref?: string }
    >
  }
) => hold.parts.map((p) => `${p.kind}:${p.sourceId}:${p.amount}${p.ref ? ` ${p.ref}` : ""}`)

/** X (ends sooner, 10,000 of room), Y (later, 15,000 of room), wallet `W`, token 1,000,000. */
const fixture = (id: string, W: number) =>
  Effect.gen(function*() {
    yield* account(id, W, { remain: 1_000_000 })
    yield* subscribe(`${id}-x`, id, { total: 10_000, durationSeconds: 10 * 86_400 })
    yield* subscribe(`${id}-y`, id, { total: 15_000, durationSeconds: 20 * 86_400 })
  })

/** Every balance of the fixture: X used, Y used, wallet, token, counters. */
const snapshot = (id: string) =>
  Effect.gen(function*() {
    return {
      X: yield* used(`${id}-x`),
      Y: yield* used(`${id}-y`),
      ...(yield* walletState(id, `${id}-t`))
    }
  })

/**
 * A sweep fails the operation at every query k in turn (dozens of transactions): up to
 * 26 s under `.ci/run` on a busy 2-core machine, against the default 30 s. Only a hang
 * reaches this limit; a half-recorded state fails the assertions.
 */
const SWEEP_TIMEOUT_MS = 180_000

for (const target of targets) {
  describe(`split funding on ${target.name}`, () => {
    layer(subscriptionBilling(target), { timeout: 60_000 })((it) => {
      it.effect("split: true draws X, then Y, then the wallet; parts and ledger show who paid; extra at settle goes to the wallet (last)", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* fixture("s1", 30_000)
          const s = yield* billing.open({
            holdId: "s1-h",
            accountId: "s1",
            tokenId: "s1-t",
            estimate: 50_000,
            split: true
          })
          assert.strictEqual(s.hold.reserved, 50_000)
          // v2: one part per subscription drawn (the source takes one subscription per take)
          assert.deepStrictEqual(parts(s.hold), [
            "funding:subscription:10000 [[\"s1-x\",10000]]",
            "funding:subscription:15000 [[\"s1-y\",15000]]",
            "funding:wallet:25000",
            "budget:token:50000"
          ])
          assert.deepStrictEqual(yield* snapshot("s1"), {
            X: 10_000,
            Y: 15_000,
            W: 5_000,
            usedQuota: 0,
            requestCount: 0,
            R: 950_000,
            TU: 50_000
          })
          const rows = yield* ledgerRows({ holdId: "s1-h" })
          assert.deepStrictEqual(rows.filter((r) => !r.startsWith("token")), [
            "subscription s1-x reserve -10000",
            "subscription s1-y reserve -15000",
            "wallet s1 reserve -25000"
          ])
          const settlement = yield* s.settle(60_000)
          assert.deepStrictEqual(
            settlement.parts.filter((p) => p.kind === "funding").map((
              p
            ) => [p.sourceId, p.reserved, p.charged, p.unbilled]),
            [["subscription", 10_000, 10_000, 0], ["subscription", 15_000, 15_000, 0], ["wallet", 25_000, 35_000, 0]]
          )
          assert.deepStrictEqual(yield* snapshot("s1"), {
            X: 10_000,
            Y: 15_000,
            W: -5_000,
            usedQuota: 60_000,
            requestCount: 1,
            R: 940_000,
            TU: 60_000
          })
          yield* auditClean
        }))

      it.effect("a shortfall is given back in reverse order: the wallet first, then Y, then X", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* fixture("s2", 30_000)
          const a = yield* billing.open({
            holdId: "s2-a",
            accountId: "s2",
            tokenId: "s2-t",
            estimate: 50_000,
            split: true
          })
          yield* a.settle(20_000)
          // wallet 25,000 back, Y 5,000 back
          assert.deepStrictEqual(yield* snapshot("s2"), {
            X: 10_000,
            Y: 10_000,
            W: 30_000,
            usedQuota: 20_000,
            requestCount: 1,
            R: 980_000,
            TU: 20_000
          })
          assert.deepStrictEqual((yield* ledgerRows({ holdId: "s2-a" })).filter((r) => !r.startsWith("token")), [
            "subscription s2-x reserve -10000",
            "subscription s2-y reserve -15000",
            "wallet s2 reserve -25000",
            "subscription s2-y settle 5000",
            "wallet s2 settle 25000"
          ])
          yield* fixture("s3", 30_000)
          const b = yield* billing.open({
            holdId: "s3-b",
            accountId: "s3",
            tokenId: "s3-t",
            estimate: 50_000,
            split: true
          })
          yield* b.settle(4_000)
          assert.deepStrictEqual(yield* snapshot("s3"), {
            X: 4_000,
            Y: 0,
            W: 30_000,
            usedQuota: 4_000,
            requestCount: 1,
            R: 996_000,
            TU: 4_000
          })
          yield* auditClean
        }))

      it.effect("subscriptions only: the extra goes to the last subscription with room, above every total to the wallet", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("s4", 0)
          yield* subscribe("s4-x", "s4", { total: 10_000, durationSeconds: 10 * 86_400 })
          yield* subscribe("s4-y", "s4", { total: 40_000, durationSeconds: 20 * 86_400 })
          const s = yield* billing.open({ holdId: "s4-h", accountId: "s4", estimate: 45_000, split: true })
          assert.deepStrictEqual(parts(s.hold), [
            "funding:subscription:10000 [[\"s4-x\",10000]]",
            "funding:subscription:35000 [[\"s4-y\",35000]]"
          ])
          yield* s.settle(60_000)
          assert.deepStrictEqual([yield* used("s4-x"), yield* used("s4-y"), (yield* walletState("s4")).W], [
            10_000,
            40_000,
            -10_000
          ])
          yield* auditClean
        }))

      it.effect("refund returns each part to its source", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* fixture("s5", 30_000)
          const before = yield* snapshot("s5")
          const s = yield* billing.open({
            holdId: "s5-h",
            accountId: "s5",
            tokenId: "s5-t",
            estimate: 50_000,
            split: true
          })
          const r = yield* s.refund
          assert.strictEqual(r.refunded, 50_000)
          assert.deepStrictEqual(yield* snapshot("s5"), before)
          assert.deepStrictEqual((yield* ledgerRows({ holdId: "s5-h" })).filter((x) => !x.startsWith("token")), [
            "subscription s5-x reserve -10000",
            "subscription s5-y reserve -15000",
            "wallet s5 reserve -25000",
            // v2: every part is given back in reverse order (Y before X: they are two parts now)
            "wallet s5 refund 25000",
            "subscription s5-y refund 15000",
            "subscription s5-x refund 10000"
          ])
          yield* auditClean
        }))

      it.effect("off by default: plain InsufficientFunds, nothing changes; per account via setSplitFunding; split: false overrides it", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* fixture("s6", 30_000)
          const before = yield* snapshot("s6")
          const e = yield* failureOf(
            billing.open({ holdId: "s6-h", accountId: "s6", tokenId: "s6-t", estimate: 50_000 })
          )
          assert.instanceOf(e, BillingError.InsufficientFunds)
          assert.notInclude((e as BillingError.InsufficientFunds).sourceId, "+")
          assert.deepStrictEqual(yield* snapshot("s6"), before)
          assert.deepStrictEqual(yield* pendingHolds(["s6-h"]), [])
          yield* (yield* Accounts.Accounts).setSplitFunding({ accountId: "s6", enabled: true })
          const e2 = yield* failureOf(
            billing.open({ holdId: "s6-off", accountId: "s6", tokenId: "s6-t", estimate: 50_000, split: false })
          )
          assert.instanceOf(e2, BillingError.InsufficientFunds)
          assert.deepStrictEqual(yield* snapshot("s6"), before)
          const s = yield* billing.open({ holdId: "s6-on", accountId: "s6", tokenId: "s6-t", estimate: 50_000 })
          assert.deepStrictEqual(parts(s.hold).map((p) => p.split(" ")[0]), [
            "funding:subscription:10000",
            "funding:subscription:15000",
            "funding:wallet:25000",
            "budget:token:50000"
          ])
          yield* s.settle(50_000)
          assert.deepStrictEqual(yield* snapshot("s6"), {
            X: 10_000,
            Y: 15_000,
            W: 5_000,
            usedQuota: 50_000,
            requestCount: 1,
            R: 950_000,
            TU: 50_000
          })
          // not enough in all sources together: typed error, nothing changes
          const mid = yield* snapshot("s6")
          const e3 = yield* failureOf(
            billing.open({ holdId: "s6-big", accountId: "s6", tokenId: "s6-t", estimate: 5_001 })
          )
          assert.instanceOf(e3, BillingError.InsufficientFunds)
          assert.strictEqual((e3 as BillingError.InsufficientFunds).sourceId, "subscription+wallet")
          assert.strictEqual((e3 as BillingError.InsufficientFunds).available, 5_000)
          assert.deepStrictEqual(yield* snapshot("s6"), mid)
          assert.deepStrictEqual(yield* pendingHolds(["s6-big"]), [])
          yield* auditClean
        }))
    })
  })

  describe(`split funding with injected faults on ${target.name}`, () => {
    const plan = { armed: false, count: 0, failAt: 0 }
    const faulty = Layer.effect(
      KnexClient.KnexClient,
      Effect.gen(function*() {
        const client = yield* KnexClient.KnexClient
        return {
          ...client,
          query: (op, f) =>
            Effect.suspend(() => {
              if (plan.armed && ++plan.count === plan.failAt) {
                return Effect.fail(
                  new BillingError.StoreError({ operation: op, detail: `injected failure at query ${plan.count}` })
                )
              }
              return client.query(op, f)
            }),
          // The hot path's statements (the driver-level executor) count and fail the same way.
          execute: (op, sql, params) =>
            Effect.suspend(() => {
              if (plan.armed && ++plan.count === plan.failAt) {
                return Effect.fail(
                  new BillingError.StoreError({ operation: op, detail: `injected failure at query ${plan.count}` })
                )
              }
              return client.execute(op, sql, params)
            })
        } satisfies KnexClient.Client
      })
    )
    const stack = billingLayer().pipe(Layer.provideMerge(faulty), Layer.provide(migratedClient(target)))

    layer(stack, { timeout: 120_000 })((it) => {
      /**
       * Runs `op` on a fresh fixture once clean (to count its queries), then once per query k
       * with the k-th failing: the state must equal the state before or the clean run's after.
       */
      const sweep = (
        name: string,
        prepare: (
          id: string
        ) => Effect.Effect<
          void,
          unknown,
          BillingSession.BillingSession | WalletAdmin.WalletAdmin | KnexClient.KnexClient | any
        >,
        op: (id: string) => Effect.Effect<unknown, unknown, BillingSession.BillingSession>
      ) =>
        Effect.gen(function*() {
          const run = (id: string, failAt: number) =>
            Effect.gen(function*() {
              yield* fixture(id, 30_000)
              yield* prepare(id)
              const before = yield* snapshot(id)
              const beforeRows = (yield* ledgerRows({ accountId: id })).length
              plan.count = 0
              plan.failAt = failAt
              plan.armed = true
              const exit = yield* Effect.exit(op(id))
              plan.armed = false
              const after = yield* snapshot(id)
              const afterRows = (yield* ledgerRows({ accountId: id })).length
              return { exit, before, after, beforeRows, afterRows, queries: plan.count }
            })
          const clean = yield* run(`${name}-clean`, 0)
          assert.isTrue(Exit.isSuccess(clean.exit), `clean ${name}`)
          assert.notDeepEqual(clean.after, clean.before)
          const rowsAdded = clean.afterRows - clean.beforeRows
          let failures = 0
          for (let k = 1; k <= clean.queries; k++) {
            const r = yield* run(`${name}-${k}`, k)
            if (Exit.isFailure(r.exit)) {
              failures++
              assert.deepStrictEqual(r.after, r.before, `${name}: failure at query ${k} must leave the state as before`)
              assert.strictEqual(r.afterRows, r.beforeRows, `${name}: failure at query ${k} wrote ledger rows`)
            } else {
              // absorbed (a best-effort step after the commit): exactly the clean outcome
              assert.deepStrictEqual(
                r.after,
                clean.after,
                `${name}: query ${k} absorbed, state must be the clean after`
              )
              assert.strictEqual(r.afterRows - r.beforeRows, rowsAdded)
            }
          }
          assert.isAbove(failures, 0)
          // every iteration's rows stay in the database: one audit covers them all
          yield* auditClean
          return { queries: clean.queries, failures }
        })

      it.effect(
        "a split open failing at every query k: state exactly before or after, no half-recorded hold",
        () =>
          Effect.gen(function*() {
            const r = yield* sweep("fo", () => Effect.void, (id) =>
              BillingSession.open({
                holdId: `${id}-h`,
                accountId: id,
                tokenId: `${id}-t`,
                estimate: 50_000,
                split: true
              }))
            assert.isAbove(r.queries, 5)
          }),
        SWEEP_TIMEOUT_MS
      )

      it.effect(
        "a split settle (with an extra) failing at every query k: state exactly before or after",
        () =>
          Effect.gen(function*() {
            yield* sweep("fs", (id) =>
              Effect.asVoid(
                BillingSession.open({
                  holdId: `${id}-h`,
                  accountId: id,
                  tokenId: `${id}-t`,
                  estimate: 50_000,
                  split: true
                })
              ), (id) => Effect.flatMap(billingService, (b) => b.settle(`${id}-h`, 20_000)))
          }),
        SWEEP_TIMEOUT_MS
      )

      it.effect("a split refund failing at every query k: state exactly before or after", () =>
        Effect.gen(function*() {
          yield* sweep("fr", (id) =>
            Effect.asVoid(
              BillingSession.open({
                holdId: `${id}-h`,
                accountId: id,
                tokenId: `${id}-t`,
                estimate: 50_000,
                split: true
              })
            ), (id) => Effect.flatMap(billingService, (b) => b.refund(`${id}-h`)))
        }), SWEEP_TIMEOUT_MS)
    })
  })
}
