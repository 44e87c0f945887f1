/**
 * Issue 8 #13 (billing-semantics.md §2.10) for the subscription source on every
 * database: an unlimited plan's `amountUsed` stays within ±(2^53−1). A settle
 * that would take it out fails typed (`QuotaOutOfRange`) before any write, and
 * the hold stays pending.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Effect } from "effect"
import {
  account,
  auditClean,
  failureOf,
  subscribe,
  subscriptionBilling,
  targets,
  used,
  walletState
} from "./support.js"

const MAX = Number.MAX_SAFE_INTEGER

for (const target of targets) {
  describe(`issue 8 #13 subscriptions on ${target.name}`, () => {
    layer(subscriptionBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #13: an unlimited subscription's amountUsed never leaves the safe range: QuotaOutOfRange, nothing written, the hold stays pending", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("r13", 0)
          yield* subscribe("r13-s", "r13", { total: 0 })
          const open = (holdId: string) =>
            billing.open({ holdId, accountId: "r13", estimate: 0, preference: "subscription_only" })
          const h1 = yield* open("r13-1")
          const h2 = yield* open("r13-2")
          assert.strictEqual(yield* used("r13-s"), 2)
          yield* h1.settle(MAX - 2)
          assert.strictEqual(yield* used("r13-s"), MAX - 1)
          const before = yield* walletState("r13")
          const error = (yield* failureOf(h2.settle(5))) as unknown as {
            readonly _tag: string
            readonly [k: string]: unknown
          }
          assert.deepStrictEqual([error._tag, error["field"], error["subjectId"], error["current"], error["change"]], [
            "QuotaOutOfRange",
            "subscription.amountUsed",
            "r13-s",
            MAX - 1,
            4
          ])
          assert.strictEqual((yield* billing.get("r13-2")).status, "pending")
          assert.strictEqual(yield* used("r13-s"), MAX - 1)
          assert.deepStrictEqual(yield* walletState("r13"), before)
          yield* h2.refund
          assert.strictEqual(yield* used("r13-s"), MAX - 2)
          // A reservation that would take it out of range is refused the same way, and leaves no hold.
          const reserve = (yield* failureOf(
            billing.open({ holdId: "r13-3", accountId: "r13", estimate: 5, preference: "subscription_only" })
          )) as unknown as { readonly _tag: string; readonly [k: string]: unknown }
          assert.deepStrictEqual([reserve._tag, reserve["field"], reserve["current"], reserve["change"]], [
            "QuotaOutOfRange",
            "subscription.amountUsed",
            MAX - 2,
            5
          ])
          assert.strictEqual(yield* used("r13-s"), MAX - 2)
          assert.isTrue(
            yield* billing.get("r13-3").pipe(
              Effect.as(false),
              Effect.catchTag("HoldNotFound", () => Effect.succeed(true))
            )
          )
          yield* auditClean
        }))
    })
  })
}
