/**
 * Issue 8 #14, #15 and the usedQuota part of #10 on every database (SQLite,
 * PostgreSQL, MariaDB): corrections of a settled charge through the wallet and
 * the token budget (billing-semantics §4.4), `usedQuota` growing by what was
 * charged (§3.4), and `Audit.usedQuota` reporting a tampered counter (§6).
 */
import { assert, describe, layer } from "@effect/vitest"
import { AccountCounters, BillingSession, FundingRegistry, Ledger } from "@relay-billing/core"
import { Accounts, Audit, KnexClient } from "@relay-billing/knex"
import { InMemoryStore } from "@relay-billing/testkit"
import { Cause, Effect, Exit, Option } from "effect"
import { TokenBudget, Wallet, WalletAdmin } from "../src/index.js"
import { auditClean, targets, walletBilling } from "./support.js"

/** The typed failure of `effect` (dies when it succeeds or fails without a typed error). */
const failureOf = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) return Effect.die(new Error(`expected a failure, got ${JSON.stringify(exit.value)}`))
    const error = Cause.findErrorOption(exit.cause)
    return Option.isSome(error)
      ? Effect.succeed(error.value)
      : Effect.die(new Error(`expected a typed failure: ${Cause.pretty(exit.cause)}`))
  })

const account = (id: string, balance: number, token?: { readonly remain?: number; readonly unlimited?: boolean }) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    yield* admin.createAccount({ id, balance })
    if (token) yield* admin.createToken({ id: `${id}-t`, accountId: id, ...token })
  })

const state = (accountId: string, tokenId?: string) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    const a = yield* admin.account(accountId)
    const t = tokenId === undefined ? undefined : yield* admin.token(tokenId)
    return {
      W: a.balance,
      usedQuota: a.usedQuota,
      requestCount: a.requestCount,
      ...(t ? { R: t.remain, TU: t.used } : {})
    }
  })

/** `correction` ledger rows of a hold, as "source subject amount → balance". */
const correctionRows = (holdId: string) =>
  Effect.gen(function*() {
    const ledger = yield* Ledger.Ledger
    const rows = yield* ledger.entries({ holdId })
    return rows.filter((e) => e.kind === "correction").map((e) =>
      `${e.sourceId} ${e.subjectId} ${e.amount} → ${e.balanceAfter}`
    )
  })

const settled = (holdId: string, accountId: string, estimate: number, actual: number, tokenId?: string) =>
  Effect.gen(function*() {
    const billing = yield* BillingSession.BillingSession
    const s = yield* billing.open({
      holdId,
      accountId,
      estimate,
      preference: "wallet_only",
      ...(tokenId !== undefined ? { tokenId } : {})
    })
    return yield* s.settle(actual)
  })

for (const target of targets) {
  describe(`corrections (issue 8 #14) on ${target.name}`, () => {
    layer(walletBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #14: a correction gives part of a settled charge back to the wallet and the token, usedQuota down, requestCount unchanged, ledger rows of kind correction", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("c1", 1_000_000, { remain: 1_000_000 })
          yield* settled("c1-h", "c1", 30_000, 12_000, "c1-t")
          assert.deepStrictEqual(yield* state("c1", "c1-t"), {
            W: 988_000,
            usedQuota: 12_000,
            requestCount: 1,
            R: 988_000,
            TU: 12_000
          })
          const result = yield* billing.correct({ holdId: "c1-h", correctionId: "ticket-9", amount: 5_000 })
          assert.strictEqual(result.remaining, 7_000)
          assert.deepStrictEqual(
            result.parts.map((p) => [p.sourceId, p.subjectId, p.amount, p.balanceAfter]),
            [["wallet", "c1", 5_000, 993_000], ["token", "c1-t", 5_000, 993_000]]
          )
          assert.deepStrictEqual(yield* state("c1", "c1-t"), {
            W: 993_000,
            usedQuota: 7_000,
            requestCount: 1,
            R: 993_000,
            TU: 7_000
          })
          assert.deepStrictEqual(yield* correctionRows("c1-h"), ["token c1-t 5000 → 993000", "wallet c1 5000 → 993000"])
          // recorded durably on the hold, read back from the database
          const hold = yield* billing.get("c1-h")
          assert.strictEqual(hold.status, "settled")
          assert.deepStrictEqual(hold.settlement?.corrections?.map((c) => [c.id, c.amount, c.remaining]), [[
            "ticket-9",
            5_000,
            7_000
          ]])
          yield* auditClean
        }))

      it.effect("issue 8 #14: the same correction id returns the first result and moves nothing; another amount is a typed IdempotencyConflict", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("c2", 1_000_000, { remain: 1_000_000 })
          yield* settled("c2-h", "c2", 30_000, 12_000, "c2-t")
          const first = yield* billing.correct({ holdId: "c2-h", correctionId: "x", amount: 3_000 })
          const before = yield* state("c2", "c2-t")
          const again = yield* billing.correct({ holdId: "c2-h", correctionId: "x", amount: 3_000 })
          assert.deepStrictEqual(again, first)
          const conflict = yield* failureOf(billing.correct({ holdId: "c2-h", correctionId: "x", amount: 2_999 }))
          assert.strictEqual(conflict._tag, "IdempotencyConflict")
          assert.deepStrictEqual(yield* state("c2", "c2-t"), before)
          assert.strictEqual((yield* correctionRows("c2-h")).length, 2)
          yield* auditClean
        }))

      it.effect("issue 8 #14: never more than what is still charged (CorrectionExceedsCharge with the amount and what is left); all of it is fine", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("c3", 100_000, { remain: 100_000 })
          yield* settled("c3-h", "c3", 10_000, 8_000, "c3-t")
          yield* billing.correct({ holdId: "c3-h", correctionId: "a", amount: 3_000 })
          const before = yield* state("c3", "c3-t")
          const error = yield* failureOf(billing.correct({ holdId: "c3-h", correctionId: "b", amount: 5_001 }))
          assert.strictEqual(error._tag, "CorrectionExceedsCharge")
          if (error._tag === "CorrectionExceedsCharge") {
            assert.strictEqual(error.amount, 5_001)
            assert.strictEqual(error.remaining, 5_000)
          }
          assert.deepStrictEqual(yield* state("c3", "c3-t"), before)
          yield* billing.correct({ holdId: "c3-h", correctionId: "b", amount: 5_000 })
          assert.deepStrictEqual(yield* state("c3", "c3-t"), {
            W: 100_000,
            usedQuota: 0,
            requestCount: 1,
            R: 100_000,
            TU: 0
          })
          yield* auditClean
        }))

      it.effect("issue 8 #14: a pending, refunded or unknown hold cannot be corrected (HoldResolved / HoldNotFound), nothing changes", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("c4", 100_000)
          yield* billing.open({ holdId: "c4-p", accountId: "c4", estimate: 1_000, preference: "wallet_only" })
          const r = yield* billing.open({ holdId: "c4-r", accountId: "c4", estimate: 1_000, preference: "wallet_only" })
          yield* r.refund
          const before = yield* state("c4")
          for (
            const [holdId, tag, status] of [["c4-p", "HoldResolved", "pending"], ["c4-r", "HoldResolved", "refunded"], [
              "c4-x",
              "HoldNotFound",
              undefined
            ]] as const
          ) {
            const error = yield* failureOf(billing.correct({ holdId, correctionId: "k", amount: 1 }))
            assert.strictEqual(error._tag, tag)
            if (error._tag === "HoldResolved") assert.strictEqual(error.status, status)
          }
          assert.deepStrictEqual(yield* state("c4"), before)
          yield* auditClean
        }))

      it.effect("issue 8 #14: a hold charged through an external source without `correct` is refused typed and nothing changes", () =>
        Effect.gen(function*() {
          // v2: every Source corrects through `move`; only an external two-phase source can lack `correct`.
          const ext = InMemoryStore.make({ ids: { wallet: "credits" } })
          const { correct: _dropped, ...plain } = ext.external.wallet
          const engine = yield* BillingSession.BillingSession.make().pipe(
            Effect.provideService(
              FundingRegistry.FundingRegistry,
              FundingRegistry.FundingRegistry.make({ funding: [plain], budgets: [TokenBudget.make()] })
            )
          )
          yield* account("c5", 0, { remain: 100_000 })
          yield* ext.createAccount("c5", 100_000)
          const s = yield* engine.open({
            holdId: "c5-h",
            accountId: "c5",
            tokenId: "c5-t",
            estimate: 1_000,
            sources: ["credits"]
          })
          yield* s.settle(900)
          const before = yield* state("c5", "c5-t")
          const external = ext.snapshot().wallets
          const error = yield* failureOf(engine.correct({ holdId: "c5-h", correctionId: "k", amount: 100 }))
          assert.strictEqual(error._tag, "CorrectionUnsupported")
          assert.deepStrictEqual(yield* state("c5", "c5-t"), before)
          assert.deepStrictEqual(ext.snapshot().wallets, external)
          assert.deepStrictEqual(yield* correctionRows("c5-h"), [])
          yield* auditClean
        }))

      it.effect("issue 8 #14: a correction is idempotent by (hold id, correction id) through the engine (v2: the sources keep no ids)", () =>
        Effect.gen(function*() {
          // Rewritten for v2: the wallet and token no longer keep correction records of their
          // own; a repeated correction is answered by the engine from the hold.
          const billing = yield* BillingSession.BillingSession
          yield* account("c6", 100_000, { remain: 100_000 })
          yield* settled("c6-h", "c6", 1_000, 1_000, "c6-t")
          const first = yield* billing.correct({ holdId: "c6-h", correctionId: "direct", amount: 400 })
          const second = yield* billing.correct({ holdId: "c6-h", correctionId: "direct", amount: 400 })
          assert.deepStrictEqual(second, first)
          const s = yield* state("c6", "c6-t")
          assert.deepStrictEqual({ W: s.W, R: s.R, TU: s.TU }, { W: 99_400, R: 99_400, TU: 600 })
          assert.strictEqual((yield* correctionRows("c6-h")).length, 2)
          yield* auditClean
        }))
    })
  })

  describe(`usedQuota (issue 8 #15, #10) on ${target.name}`, () => {
    layer(walletBilling(target, { wallet: { floorAtZero: true } }), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #15: a settle whose extra charge is recorded unbilled adds only what was charged to usedQuota", () =>
        Effect.gen(function*() {
          yield* account("u1", 5_000)
          const settlement = yield* settled("u1-h", "u1", 5_000, 8_000)
          assert.strictEqual(settlement.parts[0]!.unbilled, 3_000)
          assert.deepStrictEqual(yield* state("u1"), { W: 0, usedQuota: 5_000, requestCount: 1 })
          yield* auditClean
        }))

      it.effect("issue 8 #10: used_quota += 5000 written by raw SQL is reported by the audit, naming the account", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const client = yield* KnexClient.KnexClient
          yield* account("u2", 100_000)
          yield* account("u3", 100_000)
          yield* settled("u2-h", "u2", 10_000, 9_000)
          yield* settled("u3-h", "u3", 10_000, 4_000)
          yield* billing.correct({ holdId: "u2-h", correctionId: "k", amount: 1_000 })
          const clean = yield* Audit.usedQuota(Accounts.auditCounters)
          assert.deepStrictEqual(clean.filter((p) => p.includes("u2") || p.includes("u3")), [])
          yield* client.query(
            "test.tamper",
            (db) => db(client.table("accounts")).where({ id: "u2" }).update({ used_quota: db.raw("used_quota + 5000") })
          )
          const problems = yield* Audit.usedQuota(Accounts.auditCounters)
          assert.deepStrictEqual(problems.filter((p) => p.includes("u2") || p.includes("u3")), [
            "account u2: accounts.used_quota 13000 but its settled charges less corrections are 8000"
          ])
          const report = yield* Audit.run(Wallet.auditBalances, { counters: Accounts.auditCounters })
          assert.strictEqual(report.ok, false)
          assert.isTrue(report.problems.some((p) => p.startsWith("account u2:")))
          // undoing the tamper makes the audit clean again
          const counters = yield* AccountCounters.AccountCounters
          yield* counters.add("u2", { usedQuota: -5_000, requestCount: 0 })
          yield* auditClean
        }))
    })
  })
}
