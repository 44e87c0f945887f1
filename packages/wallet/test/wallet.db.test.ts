import { assert, describe, layer } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Effect } from "effect"
import { WalletAdmin } from "../src/index.js"
import { auditClean, targets, walletBilling } from "./support.js"

for (const target of targets) {
  describe(`wallet on ${target.name}`, () => {
    layer(walletBilling(target), { timeout: 60_000 })((it) => {
      it.effect("case 1: open 30,000 then settle 12,000 → wallet and token −12,000, counters +12,000", () =>
        Effect.gen(function*() {
          const admin = yield* WalletAdmin.WalletAdmin
          const billing = yield* BillingSession.BillingSession
          yield* admin.createAccount({ id: "c1", balance: 1_000_000 })
          yield* admin.createToken({ id: "c1-t", accountId: "c1", remain: 1_000_000 })
          const session = yield* billing.open({
            holdId: "c1-h",
            accountId: "c1",
            tokenId: "c1-t",
            estimate: 30_000,
            preference: "wallet_only"
          })
          assert.strictEqual((yield* admin.account("c1")).balance, 970_000)
          assert.strictEqual((yield* admin.token("c1-t")).remain, 970_000)
          const settlement = yield* session.settle(12_000)
          assert.strictEqual(settlement.actual, 12_000)
          const account = yield* admin.account("c1")
          assert.deepStrictEqual(
            { balance: account.balance, usedQuota: account.usedQuota, requestCount: account.requestCount },
            { balance: 988_000, usedQuota: 12_000, requestCount: 1 }
          )
          const token = yield* admin.token("c1-t")
          assert.deepStrictEqual({ remain: token.remain, used: token.used }, { remain: 988_000, used: 12_000 })
          // exactly once
          assert.deepStrictEqual(yield* session.settle(12_000), settlement)
          const refunded = yield* session.refund
          assert.strictEqual(refunded.status, "settled")
          assert.strictEqual((yield* admin.account("c1")).balance, 988_000)
          yield* auditClean
        }))

      it.effect("case 3: insufficient wallet changes nothing", () =>
        Effect.gen(function*() {
          const admin = yield* WalletAdmin.WalletAdmin
          const billing = yield* BillingSession.BillingSession
          yield* admin.createAccount({ id: "c3", balance: 20_000 })
          yield* admin.createToken({ id: "c3-t", accountId: "c3", remain: 1_000_000 })
          const error = yield* Effect.flip(
            billing.open({
              holdId: "c3-h",
              accountId: "c3",
              tokenId: "c3-t",
              estimate: 30_000,
              preference: "wallet_only"
            })
          )
          assert.strictEqual(error._tag, "InsufficientFunds")
          assert.strictEqual((yield* admin.account("c3")).balance, 20_000)
          assert.strictEqual((yield* admin.token("c3-t")).remain, 1_000_000)
          const hold = yield* Effect.flip(billing.get("c3-h"))
          assert.strictEqual(hold._tag, "HoldNotFound")
          yield* auditClean
        }))

      it.effect("64 concurrent opens on a wallet that affords exactly 23: 23 succeed, balance never negative", () =>
        Effect.gen(function*() {
          const admin = yield* WalletAdmin.WalletAdmin
          const billing = yield* BillingSession.BillingSession
          yield* admin.createAccount({ id: "cc", balance: 23 * 10_000 + 9_999 })
          yield* admin.createToken({ id: "cc-t", accountId: "cc", unlimited: true })
          const results = yield* Effect.all(
            Array.from(
              { length: 64 },
              (_, i) =>
                Effect.result(
                  billing.open({
                    holdId: `cc-${i}`,
                    accountId: "cc",
                    tokenId: "cc-t",
                    estimate: 10_000,
                    preference: "wallet_only"
                  })
                )
            ),
            { concurrency: "unbounded" }
          )
          const ok = results.filter((r) => r._tag === "Success").length
          const failures = results.flatMap((r) => (r._tag === "Failure" ? [r.failure._tag] : []))
          if (ok !== 23) {
            console.log(results.flatMap((r) => (r._tag === "Failure" ? [r.failure.message] : [])).slice(0, 5))
          }
          assert.strictEqual(ok, 23)
          assert.deepStrictEqual([...new Set(failures)], ["InsufficientFunds"])
          assert.strictEqual((yield* admin.account("cc")).balance, 9_999)
          yield* auditClean
        }))
    })
  })
}
