/**
 * Review of issue 9 (adversarial): a late-charged hold (billing-semantics §6,
 * `late_settle`) can be corrected like any other settled charge —
 * docs/design-decisions.md ("A late-settled hold (`late_settle`, §6) is
 * corrected like any other settled hold, once it exists"). The late charge is
 * a delivered, billed request: an operator who finds it overcharged must be
 * able to give part of it back, exactly once, with the audit clean.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession, Ledger } from "@relay-billing/core"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { WalletAdmin } from "../src/index.js"
import { auditClean, targets, walletBilling } from "./support.js"

const TTL = 15_000
const W = 1_000_000
const R = 800_000
const P = 30_000
const A = 45_000
const C = 12_000

for (const target of targets) {
  describe(`review: correcting a late charge on ${target.name}`, () => {
    layer(walletBilling(target, { session: { holdTtlMillis: TTL } }), { timeout: 60_000 })((it) => {
      it.effect("a late-charged hold is corrected once: wallet and token credited, usedQuota down, audit clean", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const admin = yield* WalletAdmin.WalletAdmin
          const ledger = yield* Ledger.Ledger
          yield* admin.createAccount({ id: "rl", balance: W })
          yield* admin.createToken({ id: "rl-t", accountId: "rl", remain: R })
          const session = yield* billing.open({
            holdId: "rl-h",
            accountId: "rl",
            tokenId: "rl-t",
            estimate: P,
            preference: "wallet_only"
          })
          yield* TestClock.adjust("16 seconds")
          assert.strictEqual((yield* billing.reapExpired()).expired, 1)
          const late = yield* session.settle(A)
          assert.strictEqual(late.late, true)
          const correction = yield* billing.correct({ holdId: "rl-h", correctionId: "ticket-1", amount: C })
          assert.strictEqual(correction.amount, C)
          assert.strictEqual(correction.remaining, A - C)
          // exactly once
          const again = yield* billing.correct({ holdId: "rl-h", correctionId: "ticket-1", amount: C })
          assert.strictEqual(again.amount, C)
          const account = yield* admin.account("rl")
          const token = yield* admin.token("rl-t")
          assert.deepStrictEqual(
            { W: account.balance, usedQuota: account.usedQuota, R: token.remain },
            { W: W - A + C, usedQuota: A - C, R: R - A + C }
          )
          const rows = (yield* ledger.entries({ holdId: "rl-h" })).filter((e) => e.kind === "correction")
          assert.deepStrictEqual(rows.map((e) => [e.sourceId, e.amount]).sort(), [["token", C], ["wallet", C]])
          const hold = yield* billing.get("rl-h")
          assert.strictEqual(hold.status, "expired")
          assert.strictEqual(hold.settlement?.corrections?.length, 1)
          yield* auditClean
        }))
    })
  })
}
