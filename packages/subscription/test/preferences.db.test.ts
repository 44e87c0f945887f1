/**
 * Named custom preferences (issue 10 #3): chains of source ids configured on
 * the engine, usable as an open's `preference` next to the four built-ins,
 * recorded on the hold by name, and refused at configuration time when they
 * name a source that is not registered. On every database target.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Effect, Exit, Layer } from "effect"
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

const preferences = {
  wallet_then_plan: ["wallet", "subscription"],
  plan_then_wallet: ["subscription", "wallet"],
  "team.plan-only": ["subscription"]
}

const funding = (
  hold: { readonly parts: ReadonlyArray<{ readonly kind: string; readonly sourceId: string; readonly amount: number }> }
) => hold.parts.filter((p) => p.kind === "funding").map((p) => `${p.sourceId}:${p.amount}`)

for (const target of targets) {
  describe(`custom preferences on ${target.name}`, () => {
    layer(subscriptionBilling(target, { session: { preferences } }), { timeout: 60_000 })((it) => {
      it.effect("a custom chain is walked in its order and the hold records its name (trimmed), also when read back", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("cp1", 100)
          yield* subscribe("cp1-s", "cp1", { total: 1_000 })
          // wallet first: 100 < 500, so the chain moves on to the subscription.
          const s = yield* billing.open({
            holdId: "cp1-h1",
            accountId: "cp1",
            estimate: 500,
            preference: " wallet_then_plan "
          })
          assert.deepStrictEqual(funding(s.hold), ["subscription:500"])
          assert.strictEqual(s.hold.preference, "wallet_then_plan")
          yield* s.settle(300)
          const read = yield* billing.get("cp1-h1")
          assert.strictEqual(read.preference, "wallet_then_plan")
          assert.strictEqual(yield* used("cp1-s"), 300)
          // wallet first again: 80 ≤ 100, the wallet pays.
          const w = yield* billing.open({
            holdId: "cp1-h2",
            accountId: "cp1",
            estimate: 80,
            preference: "wallet_then_plan"
          })
          assert.deepStrictEqual(funding(w.hold), ["wallet:80"])
          yield* w.settle(80)
          assert.strictEqual((yield* walletState("cp1")).W, 20)
          yield* auditClean
        }))

      it.effect("a custom chain honours availability: no active subscription is skipped, a plan forbidding overflow ends it", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("cp2", 1_000)
          // No subscription: plan_then_wallet goes straight to the wallet.
          const a = yield* billing.open({
            holdId: "cp2-h1",
            accountId: "cp2",
            estimate: 400,
            preference: "plan_then_wallet"
          })
          assert.deepStrictEqual(funding(a.hold), ["wallet:400"])
          yield* a.refund
          // A plan that forbids wallet overflow and cannot cover 600: no fallback to the wallet.
          yield* subscribe("cp2-s", "cp2", { total: 500, allowWalletOverflow: false })
          const error = yield* failureOf(
            billing.open({ holdId: "cp2-h2", accountId: "cp2", estimate: 600, preference: "plan_then_wallet" })
          )
          assert.strictEqual(error._tag, "InsufficientFunds")
          assert.strictEqual((yield* walletState("cp2")).W, 1_000)
          const only = yield* billing.open({
            holdId: "cp2-h3",
            accountId: "cp2",
            estimate: 50,
            preference: "team.plan-only"
          })
          assert.deepStrictEqual(funding(only.hold), ["subscription:50"])
          assert.strictEqual(only.hold.preference, "team.plan-only")
          yield* only.settle(50)
          yield* auditClean
        }))

      it.effect("a capped charge of a hold opened with a custom chain overflows along that chain", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("cp4", 1_000)
          yield* subscribe("cp4-s", "cp4", { total: 100, allowWalletOverflow: true })
          const s = yield* billing.open({
            holdId: "cp4-h",
            accountId: "cp4",
            estimate: 50,
            preference: "plan_then_wallet"
          })
          assert.deepStrictEqual(funding(s.hold), ["subscription:50"])
          // 130 > the plan's 100: the plan is charged what it has, the rest goes on to the wallet.
          const settled = yield* s.settle(130)
          assert.strictEqual(settled.actual, 130)
          assert.strictEqual(yield* used("cp4-s"), 100)
          assert.strictEqual((yield* walletState("cp4")).W, 970)
          yield* auditClean
        }))

      it.effect("an unknown name still means subscription_first, and the built-ins are unchanged", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("cp3", 1_000)
          yield* subscribe("cp3-s", "cp3", { total: 1_000 })
          const s = yield* billing.open({
            holdId: "cp3-h1",
            accountId: "cp3",
            estimate: 10,
            preference: "vouchers_first"
          })
          assert.strictEqual(s.hold.preference, "subscription_first")
          assert.deepStrictEqual(funding(s.hold), ["subscription:10"])
          yield* s.settle(10)
          const w = yield* billing.open({
            holdId: "cp3-h2",
            accountId: "cp3",
            estimate: 10,
            preference: "wallet_first"
          })
          assert.deepStrictEqual(funding(w.hold), ["wallet:10"])
          yield* w.settle(10)
          yield* auditClean
        }))
    })

    layer(Layer.empty)((it) => {
      it.effect("a chain naming an unregistered source fails the engine's construction, naming the field and value", () =>
        Effect.gen(function*() {
          const built = subscriptionBilling(target, {
            session: { preferences: { vouchers_first: ["vouchers", "subscription", "wallet"] } }
          })
          const exit = yield* Effect.exit(Effect.scoped(Layer.build(built)))
          assert.isTrue(Exit.isFailure(exit))
          const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
          assert.strictEqual(error?._tag, "Fail")
          const failure = error?._tag === "Fail" ? error.error : undefined
          assert.strictEqual(failure?._tag, "InvalidInput")
          assert.strictEqual(failure?._tag === "InvalidInput" ? failure.field : "", "preferences.vouchers_first.0")
          assert.strictEqual(failure?._tag === "InvalidInput" ? failure.value : "", "\"vouchers\"")
        }))
    })
  })
}
