/**
 * The wallet-side cases and guarantees of billing-semantics.md against real
 * databases, on every target: §8 cases 1–7, 15 and 16 (with our own numbers
 * where the spec's are illustrative), idempotent open / settle / refund (§2.7,
 * §3.1, §4.1), unlimited tokens (§2.2), the trust bypass (§2.8), and the
 * Effect-level guarantee of `withBilling` (§5).
 */
import { assert, describe, layer } from "@effect/vitest"
import {
  AccountCounters,
  BillingError,
  BillingSession,
  BillingSettler,
  FundingRegistry,
  HoldJournal,
  Ledger,
  SqlStore
} from "@relay-billing/core"
import type { FundingSource } from "@relay-billing/core"
import { Accounts, KnexClient, KnexJournal, KnexLedger, KnexSqlStore } from "@relay-billing/knex"
import { Faults } from "@relay-billing/testkit"
import { Cause, Data, Deferred, Effect, Exit, Fiber, Option, Ref } from "effect"
import { TestClock } from "effect/testing"
import { TokenBudget, WalletAdmin, WalletSource } from "../src/index.js"
import { auditClean, targets, walletBilling } from "./support.js"

// ------------------------------------------------------------------ helpers

/** The typed failure of `effect` (dies when it succeeds or fails without a typed error). */
const failureOf = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) return Effect.die(new Error(`expected a failure, got ${JSON.stringify(exit.value)}`))
    const error = Cause.findErrorOption(exit.cause)
    return Option.isSome(error)
      ? Effect.succeed(error.value)
      : Effect.die(new Error(`expected a typed failure: ${Cause.pretty(exit.cause)}`))
  })

/** Wallet, counters and (when given) token of an account. */
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

/** Ledger rows of a hold, in order, without ids and times. */
const holdLedger = (holdId: string) =>
  Effect.gen(function*() {
    const ledger = yield* Ledger.Ledger
    const entries = yield* ledger.entries({ holdId })
    return entries.map((e) => `${e.sourceId} ${e.kind} ${e.amount} → ${e.balanceAfter}`)
  })

/**
 * The parts of a hold, as "source:status:amount", sorted. v2: the sources keep no
 * per-hold records any more; the hold (the engine's) is the only one, and the
 * status of each part is the hold's (pending → reserved, expired → refunded).
 */
const partRecords = (holdId: string) =>
  Effect.gen(function*() {
    const journal = yield* HoldJournal.HoldJournal
    const hold = yield* journal.get(holdId)
    if (!hold) return []
    const status = hold.status === "pending" ? "reserved" : hold.status === "expired" ? "refunded" : hold.status
    return hold.parts.map((p) => `${p.sourceId}:${status}:${p.amount}`).sort()
  })

const account = (id: string, balance: number, token?: { readonly remain?: number; readonly unlimited?: boolean }) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    yield* admin.createAccount({ id, balance })
    if (token) yield* admin.createToken({ id: `${id}-t`, accountId: id, ...token })
  })

/** An engine over the database in context whose client passes every query through `faults` first. */
const faultyEngine = (faults: Faults.Faults) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const faulty: KnexClient.Client = {
      ...client,
      query: (op, f) => faults.check(op).pipe(Effect.andThen(client.query(op, f))),
      execute: (op, sql, params) => faults.check(op).pipe(Effect.andThen(client.execute(op, sql, params)))
    }
    return yield* BillingSession.BillingSession.make().pipe(
      Effect.provideService(HoldJournal.HoldJournal, KnexJournal.make(faulty)),
      Effect.provideService(SqlStore.SqlStore, KnexSqlStore.make(faulty)),
      Effect.provideService(Ledger.Ledger, KnexLedger.make(faulty)),
      Effect.provideService(
        FundingRegistry.FundingRegistry,
        FundingRegistry.FundingRegistry.make({ funding: [WalletSource.make()], budgets: [TokenBudget.make()] })
      ),
      Effect.provideService(AccountCounters.AccountCounters, Accounts.makeCounters(faulty))
    )
  })

/**
 * A stand-in subscription source (external, always available with fallback allowed)
 * that records every call, to see whether the engine ever reaches it.
 */
const spySubscription = () => {
  const calls: Array<string> = []
  const source: FundingSource.FundingSource = {
    id: "subscription",
    availability: () => Effect.succeed({ available: true, allowFallback: true }),
    reserve: (req) => Effect.sync(() => (calls.push(`reserve ${req.holdId} ${req.amount}`), { amount: req.amount })),
    settle: (req) =>
      Effect.sync(() => (calls.push(`settle ${req.holdId} ${req.actual}`), { charged: req.actual, unbilled: 0 })),
    refund: (req) => Effect.sync(() => void calls.push(`refund ${req.holdId} ${req.reason}`))
  }
  return { source, calls }
}

/** An engine over the database in context with the wallet, the token budget and `extra` sources. */
const engineWith = (extra: ReadonlyArray<FundingSource.FundingSource>) =>
  Effect.gen(function*() {
    return yield* BillingSession.BillingSession.make().pipe(
      Effect.provideService(
        FundingRegistry.FundingRegistry,
        FundingRegistry.FundingRegistry.make({
          funding: [WalletSource.make(), ...extra],
          budgets: [TokenBudget.make()]
        })
      )
    )
  })

class UpstreamFailed extends Data.TaggedError("UpstreamFailed")<{ readonly attempt: number }> {}

const TEN_MINUTES = 10 * 60 * 1000

// ------------------------------------------------------------------ the suites

for (const target of targets) {
  describe(`billing semantics on ${target.name}`, () => {
    layer(walletBilling(target), { timeout: 60_000 })((it) => {
      it.effect("case 1: wallet_only, A < P → after open W−P, R−P; after settle W−A, R−A, TU A, usedQuota +A, requestCount +1", () =>
        Effect.gen(function*() {
          const W = 2_000_000, R = 1_500_000, P = 40_000, A = 17_000
          const billing = yield* BillingSession.BillingSession
          yield* account("s1", W, { remain: R })
          const session = yield* billing.open({
            holdId: "s1-h",
            accountId: "s1",
            tokenId: "s1-t",
            estimate: P,
            preference: "wallet_only"
          })
          assert.strictEqual(session.preConsumed, P)
          const hold = session.hold
          assert.deepStrictEqual(
            {
              status: hold.status,
              reserved: hold.reserved,
              estimate: hold.estimate,
              trusted: hold.trusted,
              preference: hold.preference,
              ttl: hold.expiresAt - hold.createdAt
            },
            { status: "pending", reserved: P, estimate: P, trusted: false, preference: "wallet_only", ttl: TEN_MINUTES }
          )
          assert.deepStrictEqual<unknown>(hold.parts, [
            { kind: "funding", sourceId: "wallet", subjectId: "s1", amount: P },
            { kind: "budget", sourceId: "token", subjectId: "s1-t", amount: P }
          ])
          assert.deepStrictEqual(yield* state("s1", "s1-t"), {
            W: W - P,
            usedQuota: 0,
            requestCount: 0,
            R: R - P,
            TU: P
          })
          assert.isTrue(yield* session.needsRefund)

          const settlement = yield* session.settle(A)
          assert.deepStrictEqual(
            {
              holdId: settlement.holdId,
              actual: settlement.actual,
              reserved: settlement.reserved,
              delta: settlement.delta
            },
            { holdId: "s1-h", actual: A, reserved: P, delta: A - P }
          )
          assert.deepStrictEqual<unknown>(settlement.parts, [
            {
              kind: "funding",
              sourceId: "wallet",
              subjectId: "s1",
              reserved: P,
              charged: A,
              unbilled: 0,
              balanceAfter: W - A
            },
            {
              kind: "budget",
              sourceId: "token",
              subjectId: "s1-t",
              reserved: P,
              charged: A,
              unbilled: 0,
              balanceAfter: R - A
            }
          ])
          assert.deepStrictEqual(yield* state("s1", "s1-t"), {
            W: W - A,
            usedQuota: A,
            requestCount: 1,
            R: R - A,
            TU: A
          })
          assert.isFalse(yield* session.needsRefund)
          assert.strictEqual((yield* billing.get("s1-h")).status, "settled")
          assert.deepStrictEqual(yield* holdLedger("s1-h"), [
            `token reserve ${-P} → ${R - P}`,
            `wallet reserve ${-P} → ${W - P}`,
            `token settle ${P - A} → ${R - A}`,
            `wallet settle ${P - A} → ${W - A}`
          ])
          assert.deepStrictEqual(yield* partRecords("s1-h"), [`token:settled:${P}`, `wallet:settled:${P}`])
          yield* auditClean
        }))

      it.effect("case 2: A > P → the extra is charged at settlement; with no floor the wallet may go below zero", () =>
        Effect.gen(function*() {
          const W = 2_000_000, R = 1_500_000, P = 40_000, A = 65_000
          const billing = yield* BillingSession.BillingSession
          yield* account("s2", W, { remain: R })
          const session = yield* billing.open({
            holdId: "s2-h",
            accountId: "s2",
            tokenId: "s2-t",
            estimate: P,
            preference: "wallet_only"
          })
          const settlement = yield* session.settle(A)
          assert.strictEqual(settlement.delta, A - P)
          assert.deepStrictEqual(yield* state("s2", "s2-t"), {
            W: W - A,
            usedQuota: A,
            requestCount: 1,
            R: R - A,
            TU: A
          })
          assert.deepStrictEqual(yield* holdLedger("s2-h"), [
            `token reserve ${-P} → ${R - P}`,
            `wallet reserve ${-P} → ${W - P}`,
            `token settle ${P - A} → ${R - A}`,
            `wallet settle ${P - A} → ${W - A}`
          ])
          // The answer was already streamed: the extra charge has no floor by default.
          yield* account("s2-low", 50_000, { unlimited: true })
          const low = yield* billing.open({
            holdId: "s2-low-h",
            accountId: "s2-low",
            tokenId: "s2-low-t",
            estimate: 40_000,
            preference: "wallet_only"
          })
          yield* low.settle(90_000)
          assert.deepStrictEqual(yield* state("s2-low", "s2-low-t"), {
            W: -40_000,
            usedQuota: 90_000,
            requestCount: 1,
            R: -90_000,
            TU: 90_000
          })
          // …and a wallet at or below zero can reserve nothing, not even an estimate of 0.
          const error = yield* failureOf(
            billing.open({
              holdId: "s2-low-h2",
              accountId: "s2-low",
              tokenId: "s2-low-t",
              estimate: 0,
              preference: "wallet_only"
            })
          )
          assert.strictEqual((error as { _tag: string })._tag, "InsufficientFunds")
          yield* auditClean
        }))

      it.effect("case 3: W < P → InsufficientFunds with the numbers; nothing changes (no hold, parts or ledger rows)", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("s3", 25_000, { remain: 1_000_000 })
          yield* account("s3-zero", 0, { remain: 1_000_000 })
          const error = yield* failureOf(
            billing.open({
              holdId: "s3-h",
              accountId: "s3",
              tokenId: "s3-t",
              estimate: 40_000,
              preference: "wallet_only"
            })
          )
          assert.instanceOf(error, BillingError.InsufficientFunds)
          const e = error as BillingError.InsufficientFunds
          assert.deepStrictEqual(
            {
              sourceId: e.sourceId,
              accountId: e.accountId,
              required: e.required,
              available: e.available,
              code: e.code
            },
            {
              sourceId: "wallet",
              accountId: "s3",
              required: 40_000,
              available: 25_000,
              code: "insufficient_user_quota"
            }
          )
          assert.deepStrictEqual(yield* state("s3", "s3-t"), {
            W: 25_000,
            usedQuota: 0,
            requestCount: 0,
            R: 1_000_000,
            TU: 0
          })
          assert.strictEqual((yield* failureOf(billing.get("s3-h")))._tag, "HoldNotFound")
          assert.deepStrictEqual(yield* partRecords("s3-h"), [])
          assert.deepStrictEqual(yield* holdLedger("s3-h"), [])
          // A balance of exactly 0 is insufficient for any estimate, 0 included.
          for (const estimate of [1, 0]) {
            const zero = yield* failureOf(
              billing.open({
                holdId: `s3-zero-h${estimate}`,
                accountId: "s3-zero",
                tokenId: "s3-zero-t",
                estimate,
                preference: "wallet_only"
              })
            )
            assert.strictEqual((zero as { _tag: string })._tag, "InsufficientFunds")
          }
          assert.deepStrictEqual(yield* state("s3-zero", "s3-zero-t"), {
            W: 0,
            usedQuota: 0,
            requestCount: 0,
            R: 1_000_000,
            TU: 0
          })
          // The same hold id can be opened once the wallet is funded (a failed open records nothing).
          yield* (yield* WalletAdmin.WalletAdmin).topUp({ accountId: "s3", amount: 15_000, key: "s3-topup" })
          const session = yield* billing.open({
            holdId: "s3-h",
            accountId: "s3",
            tokenId: "s3-t",
            estimate: 40_000,
            preference: "wallet_only"
          })
          assert.strictEqual(session.preConsumed, 40_000)
          assert.deepStrictEqual(yield* state("s3", "s3-t"), {
            W: 0,
            usedQuota: 0,
            requestCount: 0,
            R: 960_000,
            TU: 40_000
          })
          yield* session.refund
          yield* auditClean
        }))

      it.effect("case 4: R < P → TokenBudgetExceeded with the numbers; nothing changes; it never falls back to a subscription", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("s4", 1_000_000, { remain: 10_000 })
          const error = yield* failureOf(
            billing.open({
              holdId: "s4-h",
              accountId: "s4",
              tokenId: "s4-t",
              estimate: 30_000,
              preference: "wallet_only"
            })
          )
          assert.instanceOf(error, BillingError.TokenBudgetExceeded)
          const e = error as BillingError.TokenBudgetExceeded
          assert.deepStrictEqual(
            { budgetId: e.budgetId, tokenId: e.tokenId, required: e.required, remaining: e.remaining, code: e.code },
            {
              budgetId: "token",
              tokenId: "s4-t",
              required: 30_000,
              remaining: 10_000,
              code: "pre_consume_token_quota_failed"
            }
          )
          assert.deepStrictEqual(yield* state("s4", "s4-t"), {
            W: 1_000_000,
            usedQuota: 0,
            requestCount: 0,
            R: 10_000,
            TU: 0
          })
          assert.strictEqual((yield* failureOf(billing.get("s4-h")))._tag, "HoldNotFound")

          // With an active subscription that allows fallback, neither preference falls back on a token failure.
          const spy = spySubscription()
          const engine = yield* engineWith([spy.source])
          for (const preference of ["wallet_first", "subscription_first"]) {
            const failed = yield* failureOf(
              engine.open({
                holdId: `s4-${preference}`,
                accountId: "s4",
                tokenId: "s4-t",
                estimate: 30_000,
                preference
              })
            )
            assert.strictEqual((failed as { _tag: string })._tag, "TokenBudgetExceeded", preference)
          }
          assert.deepStrictEqual(spy.calls, [])
          assert.deepStrictEqual(yield* state("s4", "s4-t"), {
            W: 1_000_000,
            usedQuota: 0,
            requestCount: 0,
            R: 10_000,
            TU: 0
          })

          // Control: the same engine does fall back to the subscription on an insufficient wallet.
          yield* account("s4-poor", 5_000, { remain: 100_000 })
          const fallback = yield* engine.open({
            holdId: "s4-fallback",
            accountId: "s4-poor",
            tokenId: "s4-poor-t",
            estimate: 30_000,
            preference: "wallet_first"
          })
          assert.deepStrictEqual(fallback.hold.parts.map((p) => `${p.kind}:${p.sourceId}:${p.amount}`), [
            "funding:subscription:30000",
            "budget:token:30000"
          ])
          assert.deepStrictEqual(spy.calls, ["reserve s4-fallback 30000"])
          assert.deepStrictEqual(yield* state("s4-poor", "s4-poor-t"), {
            W: 5_000,
            usedQuota: 0,
            requestCount: 0,
            R: 70_000,
            TU: 30_000
          })
          yield* fallback.refund
          assert.deepStrictEqual(yield* state("s4-poor", "s4-poor-t"), {
            W: 5_000,
            usedQuota: 0,
            requestCount: 0,
            R: 100_000,
            TU: 0
          })
          yield* auditClean
        }))

      it.effect("case 5 (new-api bug 1): the wallet write fails after the token was reserved → token restored, no pending hold", () =>
        Effect.gen(function*() {
          const W = 1_000_000, R = 2_000_000, P = 30_000
          yield* account("s5", W, { remain: R })
          const billing = yield* BillingSession.BillingSession
          const journal = yield* HoldJournal.HoldJournal
          // The wallet's conditional UPDATE (after the token's), then the ledger rows after both
          // UPDATEs ran (v2: the engine writes the open's rows in one statement at the end).
          for (const [op, nth] of [["wallet.take", 1], ["ledger.append", 1], ["token.take", 1]] as const) {
            const faults = new Faults.Faults().failNth(op, nth)
            const engine = yield* faultyEngine(faults)
            const holdId = `s5-h-${op}`
            const error = yield* failureOf(
              engine.open({ holdId, accountId: "s5", tokenId: "s5-t", estimate: P, preference: "wallet_only" })
            )
            assert.deepStrictEqual(faults.injected, [`${op}#${nth}`])
            assert.instanceOf(error, BillingError.StoreError, op)
            assert.deepStrictEqual(yield* state("s5", "s5-t"), { W, usedQuota: 0, requestCount: 0, R, TU: 0 }, op)
            assert.strictEqual((yield* failureOf(billing.get(holdId)))._tag, "HoldNotFound", op)
            assert.deepStrictEqual(yield* journal.list({ accountId: "s5", status: "pending" }), [], op)
            assert.deepStrictEqual(yield* partRecords(holdId), [], op)
            assert.deepStrictEqual(yield* holdLedger(holdId), [], op)
            yield* auditClean
          }
          // Once the fault is gone the same request id opens normally.
          const session = yield* billing.open({
            holdId: "s5-h-wallet.take",
            accountId: "s5",
            tokenId: "s5-t",
            estimate: P,
            preference: "wallet_only"
          })
          assert.deepStrictEqual(yield* state("s5", "s5-t"), {
            W: W - P,
            usedQuota: 0,
            requestCount: 0,
            R: R - P,
            TU: P
          })
          yield* session.refund
          yield* auditClean
        }))

      it.effect("case 6: every upstream attempt fails after the open → refunded: W and R as before, counters unchanged", () =>
        Effect.gen(function*() {
          const W = 1_000_000, R = 1_000_000, P = 30_000
          const billing = yield* BillingSession.BillingSession
          yield* account("s6", W, { remain: R })
          const attempts = yield* Ref.make(0)
          const exit = yield* Effect.exit(BillingSettler.withBilling(
            billing.open({ holdId: "s6-h", accountId: "s6", tokenId: "s6-t", estimate: P, preference: "wallet_only" }),
            () =>
              Ref.updateAndGet(attempts, (n) => n + 1).pipe(
                Effect.flatMap((attempt) => Effect.fail(new UpstreamFailed({ attempt }))),
                Effect.retry({ times: 2 })
              )
          ))
          assert.strictEqual(yield* Ref.get(attempts), 3)
          assert.strictEqual((yield* failureOf(exit))._tag, "UpstreamFailed")
          assert.deepStrictEqual(yield* state("s6", "s6-t"), { W, usedQuota: 0, requestCount: 0, R, TU: 0 })
          assert.strictEqual((yield* billing.get("s6-h")).status, "refunded")
          assert.deepStrictEqual(yield* holdLedger("s6-h"), [
            `token reserve ${-P} → ${R - P}`,
            `wallet reserve ${-P} → ${W - P}`,
            `token refund ${P} → ${R}`,
            `wallet refund ${P} → ${W}`
          ])
          yield* auditClean
        }))

      it.effect("case 7: refund twice credits once; settle then refund leaves the settled balance", () =>
        Effect.gen(function*() {
          const W = 1_000_000, R = 1_000_000, P = 30_000
          const billing = yield* BillingSession.BillingSession
          yield* account("s7", W, { remain: R })
          const a = yield* billing.open({
            holdId: "s7-a",
            accountId: "s7",
            tokenId: "s7-t",
            estimate: P,
            preference: "wallet_only"
          })
          assert.deepStrictEqual(yield* a.refund, { holdId: "s7-a", status: "refunded", refunded: P })
          assert.deepStrictEqual(yield* a.refund, { holdId: "s7-a", status: "refunded", refunded: 0 })
          assert.deepStrictEqual(yield* billing.refund("s7-a"), { holdId: "s7-a", status: "refunded", refunded: 0 })
          assert.deepStrictEqual(yield* state("s7", "s7-t"), { W, usedQuota: 0, requestCount: 0, R, TU: 0 })
          assert.strictEqual((yield* holdLedger("s7-a")).filter((row) => row.includes(" refund ")).length, 2)

          const b = yield* billing.open({
            holdId: "s7-b",
            accountId: "s7",
            tokenId: "s7-t",
            estimate: P,
            preference: "wallet_only"
          })
          yield* b.settle(12_000)
          assert.deepStrictEqual(yield* b.refund, { holdId: "s7-b", status: "settled", refunded: 0 })
          assert.deepStrictEqual(yield* state("s7", "s7-t"), {
            W: W - 12_000,
            usedQuota: 12_000,
            requestCount: 1,
            R: R - 12_000,
            TU: 12_000
          })
          assert.deepStrictEqual(yield* partRecords("s7-b"), [`token:settled:${P}`, `wallet:settled:${P}`])
          yield* auditClean
        }))

      // Updated for issue 8 #3 (§2.7 now): a second open of a pending hold is HoldInFlight, never its handle.
      it.effect("open is idempotent by hold id: the same request while pending is HoldInFlight and debits once; a different one is a typed conflict", () =>
        Effect.gen(function*() {
          const W = 500_000, P = 30_000
          const billing = yield* BillingSession.BillingSession
          yield* account("io", W, { remain: 400_000 })
          yield* account("io-2", W, { remain: 400_000 })
          const request = {
            holdId: "io-h",
            accountId: "io",
            tokenId: "io-t",
            estimate: P,
            preference: "wallet_only"
          } as const
          const first = yield* billing.open(request)
          const again = yield* failureOf(billing.open(request))
          assert.instanceOf(again, BillingError.HoldInFlight)
          assert.deepStrictEqual({
            holdId: (again as BillingError.HoldInFlight).holdId,
            code: (again as BillingError.HoldInFlight).code
          }, {
            holdId: "io-h",
            code: "billing_hold_in_flight"
          })
          assert.deepStrictEqual(yield* state("io", "io-t"), {
            W: W - P,
            usedQuota: 0,
            requestCount: 0,
            R: 400_000 - P,
            TU: P
          })
          const conflicts: Array<[Record<string, string | number>, string, string, string]> = [
            [{ estimate: P + 1_000 }, "estimate", String(P), String(P + 1_000)],
            [{ accountId: "io-2", tokenId: "io-2-t" }, "accountId", "io", "io-2"],
            [{ tokenId: "io-2-t" }, "tokenId", "io-t", "io-2-t"]
          ]
          for (const [change, field, existing, requested] of conflicts) {
            const error = yield* failureOf(billing.open({ ...request, ...change } as BillingSession.OpenRequest))
            assert.instanceOf(error, BillingError.IdempotencyConflict, field)
            const c = error as BillingError.IdempotencyConflict
            assert.deepStrictEqual({
              holdId: c.holdId,
              field: c.field,
              existing: c.existing,
              requested: c.requested,
              code: c.code
            }, {
              holdId: "io-h",
              field,
              existing,
              requested,
              code: "idempotency_conflict"
            })
          }
          assert.deepStrictEqual(yield* state("io", "io-t"), {
            W: W - P,
            usedQuota: 0,
            requestCount: 0,
            R: 400_000 - P,
            TU: P
          })
          assert.deepStrictEqual(yield* state("io-2", "io-2-t"), {
            W,
            usedQuota: 0,
            requestCount: 0,
            R: 400_000,
            TU: 0
          })
          // Once resolved, the id can never debit again.
          yield* first.settle(10_000)
          const settled = yield* failureOf(billing.open(request))
          assert.instanceOf(settled, BillingError.HoldResolved)
          assert.deepStrictEqual({
            status: (settled as BillingError.HoldResolved).status,
            operation: (settled as BillingError.HoldResolved).operation
          }, { status: "settled", operation: "open" })
          const r = yield* billing.open({ ...request, holdId: "io-r" })
          yield* r.refund
          const refunded = yield* failureOf(billing.open({ ...request, holdId: "io-r" }))
          assert.instanceOf(refunded, BillingError.HoldResolved)
          assert.strictEqual((refunded as BillingError.HoldResolved).status, "refunded")
          assert.deepStrictEqual(yield* state("io", "io-t"), {
            W: W - 10_000,
            usedQuota: 10_000,
            requestCount: 1,
            R: 400_000 - 10_000,
            TU: 10_000
          })
          yield* auditClean
        }))

      it.effect("settle is exactly once: a second settle (any amount) returns the first result and charges nothing", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("st", 300_000, { remain: 300_000 })
          const s = yield* billing.open({
            holdId: "st-h",
            accountId: "st",
            tokenId: "st-t",
            estimate: 20_000,
            preference: "wallet_only"
          })
          const first = yield* s.settle(25_000)
          for (const actual of [25_000, 1, 90_000]) {
            assert.deepStrictEqual(yield* billing.settle("st-h", actual), first)
          }
          assert.deepStrictEqual(yield* state("st", "st-t"), {
            W: 275_000,
            usedQuota: 25_000,
            requestCount: 1,
            R: 275_000,
            TU: 25_000
          })
          assert.strictEqual((yield* holdLedger("st-h")).length, 4)
          // Invalid amounts are typed input errors that move nothing.
          yield* account("st2", 300_000, { remain: 300_000 })
          yield* billing.open({
            holdId: "st2-h",
            accountId: "st2",
            tokenId: "st2-t",
            estimate: 20_000,
            preference: "wallet_only"
          })
          for (const [actual, value] of [[-1, "-1"], [1.5, "1.5"], [Number.NaN, "NaN"]] as const) {
            const error = yield* failureOf(billing.settle("st2-h", actual))
            assert.instanceOf(error, BillingError.InvalidInput)
            assert.deepStrictEqual({
              field: (error as BillingError.InvalidInput).field,
              value: (error as BillingError.InvalidInput).value
            }, { field: "actual", value })
          }
          assert.strictEqual((yield* billing.get("st2-h")).status, "pending")
          assert.deepStrictEqual(yield* state("st2", "st2-t"), {
            W: 280_000,
            usedQuota: 0,
            requestCount: 0,
            R: 280_000,
            TU: 20_000
          })
          yield* billing.refund("st2-h")
          yield* auditClean
        }))

      it.effect("settle after refund is HoldResolved and moves nothing; unknown holds are HoldNotFound", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("sr", 300_000, { remain: 300_000 })
          const s = yield* billing.open({
            holdId: "sr-h",
            accountId: "sr",
            tokenId: "sr-t",
            estimate: 20_000,
            preference: "wallet_only"
          })
          yield* s.refund
          const error = yield* failureOf(s.settle(12_000))
          assert.instanceOf(error, BillingError.HoldResolved)
          const e = error as BillingError.HoldResolved
          assert.deepStrictEqual({ holdId: e.holdId, status: e.status, operation: e.operation, code: e.code }, {
            holdId: "sr-h",
            status: "refunded",
            operation: "settle",
            code: "billing_hold_resolved"
          })
          assert.deepStrictEqual(yield* state("sr", "sr-t"), {
            W: 300_000,
            usedQuota: 0,
            requestCount: 0,
            R: 300_000,
            TU: 0
          })
          assert.strictEqual((yield* failureOf(billing.settle("sr-never", 5)))._tag, "HoldNotFound")
          assert.strictEqual((yield* failureOf(billing.refund("sr-never")))._tag, "HoldNotFound")
          yield* auditClean
        }))

      it.effect("an unlimited token reserves nothing but counts usage at settlement; a refund leaves it untouched", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("ul", 1_000_000, { unlimited: true })
          const s = yield* billing.open({
            holdId: "ul-h",
            accountId: "ul",
            tokenId: "ul-t",
            estimate: 30_000,
            preference: "wallet_only"
          })
          assert.deepStrictEqual(s.hold.parts.map((p) => `${p.kind}:${p.sourceId}:${p.amount}`), [
            "funding:wallet:30000",
            "budget:token:0"
          ])
          assert.strictEqual(s.preConsumed, 30_000)
          assert.deepStrictEqual(yield* state("ul", "ul-t"), { W: 970_000, usedQuota: 0, requestCount: 0, R: 0, TU: 0 })
          yield* s.settle(12_000)
          assert.deepStrictEqual(yield* state("ul", "ul-t"), {
            W: 988_000,
            usedQuota: 12_000,
            requestCount: 1,
            R: -12_000,
            TU: 12_000
          })
          const r = yield* billing.open({
            holdId: "ul-h2",
            accountId: "ul",
            tokenId: "ul-t",
            estimate: 2 ** 40,
            preference: "wallet_only"
          }).pipe(Effect.flip)
          assert.strictEqual(r._tag, "InsufficientFunds", "the wallet still caps an unlimited token")
          const x = yield* billing.open({
            holdId: "ul-h3",
            accountId: "ul",
            tokenId: "ul-t",
            estimate: 5_000,
            preference: "wallet_only"
          })
          yield* x.refund
          assert.deepStrictEqual(yield* state("ul", "ul-t"), {
            W: 988_000,
            usedQuota: 12_000,
            requestCount: 1,
            R: -12_000,
            TU: 12_000
          })
          yield* auditClean
        }))

      it.effect("case 16: W 40,000 and two concurrent opens of 30,000 → exactly one succeeds, W never below 10,000 (6 rounds)", () =>
        TestClock.withLive(Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const admin = yield* WalletAdmin.WalletAdmin
          for (let round = 0; round < 6; round++) {
            const id = `c16-${round}`
            yield* account(id, 40_000, { remain: 1_000_000 })
            const seen: Array<number> = []
            const sample = admin.account(id).pipe(Effect.tap((a) => Effect.sync(() => seen.push(a.balance))))
            const open = (n: number) =>
              Effect.result(
                billing.open({
                  holdId: `${id}-h${n}`,
                  accountId: id,
                  tokenId: `${id}-t`,
                  estimate: 30_000,
                  preference: "wallet_only"
                })
              )
            const [a, b] = yield* Effect.all([open(1), open(2), sample, sample, sample], { concurrency: "unbounded" })
            const outcomes = [a, b].map((r) => r._tag === "Success" ? "ok" : r.failure._tag).sort()
            assert.deepStrictEqual(outcomes, ["InsufficientFunds", "ok"], `round ${round}`)
            yield* sample
            assert.isTrue(
              seen.every((w) => w === 40_000 || w === 10_000),
              `round ${round}: balances seen ${seen.join(", ")}`
            )
            assert.deepStrictEqual(yield* state(id, `${id}-t`), {
              W: 10_000,
              usedQuota: 0,
              requestCount: 0,
              R: 970_000,
              TU: 30_000
            })
          }
          yield* auditClean
        })))

      it.effect("64 concurrent opens capped by a limited token that affords 23: 23 succeed, 41 TokenBudgetExceeded; then 23 concurrent settles", () =>
        TestClock.withLive(Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const P = 10_000
          yield* account("t64", 10_000_000, { remain: 23 * P + 9_999 })
          const results = yield* Effect.all(
            Array.from(
              { length: 64 },
              (_, i) =>
                Effect.result(
                  billing.open({
                    holdId: `t64-${i}`,
                    accountId: "t64",
                    tokenId: "t64-t",
                    estimate: P,
                    preference: "wallet_only"
                  })
                )
            ),
            { concurrency: "unbounded" }
          )
          const sessions = results.flatMap((r) => (r._tag === "Success" ? [r.success] : []))
          const failures = results.flatMap((r) => (r._tag === "Failure" ? [r.failure._tag] : []))
          assert.strictEqual(sessions.length, 23)
          assert.deepStrictEqual([...new Set(failures)], ["TokenBudgetExceeded"])
          assert.deepStrictEqual(yield* state("t64", "t64-t"), {
            W: 10_000_000 - 23 * P,
            usedQuota: 0,
            requestCount: 0,
            R: 9_999,
            TU: 23 * P
          })
          yield* Effect.all(sessions.map((s, i) => s.settle(1_000 * (i + 1))), { concurrency: "unbounded" })
          const charged = (23 * 24 / 2) * 1_000
          assert.deepStrictEqual(yield* state("t64", "t64-t"), {
            W: 10_000_000 - charged,
            usedQuota: charged,
            requestCount: 23,
            R: 23 * P + 9_999 - charged,
            TU: charged
          })
          yield* auditClean
        })))

      // Updated for issue 8 #3 (§2.7 now): one caller gets the session, the others HoldInFlight.
      it.effect("64 concurrent opens of one request id → one hold, debited once, one caller gets it and the rest HoldInFlight", () =>
        TestClock.withLive(Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("same64", 1_000_000, { remain: 1_000_000 })
          const results = yield* Effect.all(
            Array.from({ length: 64 }, () =>
              Effect.result(
                billing.open({
                  holdId: "same64-h",
                  accountId: "same64",
                  tokenId: "same64-t",
                  estimate: 30_000,
                  preference: "wallet_only"
                })
              )),
            { concurrency: "unbounded" }
          )
          const opened = results.flatMap((r) => r._tag === "Success" ? [r.success] : [])
          assert.strictEqual(opened.length, 1)
          assert.deepStrictEqual(
            results.flatMap((r) => r._tag === "Failure" ? [r.failure._tag] : []),
            Array(63).fill("HoldInFlight")
          )
          assert.deepStrictEqual(yield* state("same64", "same64-t"), {
            W: 970_000,
            usedQuota: 0,
            requestCount: 0,
            R: 970_000,
            TU: 30_000
          })
          // 64 concurrent settles and refunds of that hold (by its session and by id) resolve it exactly once.
          const session = opened[0]!
          const settles = yield* Effect.all(
            Array.from({ length: 64 }, (_, i) =>
              Effect.exit(
                i % 2 === 0
                  ? Effect.asVoid(i % 4 === 0 ? session.settle(12_000) : billing.settle("same64-h", 12_000))
                  : Effect.asVoid(i % 4 === 1 ? session.refund : billing.refund("same64-h"))
              )),
            { concurrency: "unbounded" }
          )
          const hold = yield* billing.get("same64-h")
          const bad = settles.filter((e) => Exit.isFailure(e) && !Cause.pretty(e.cause).includes("HoldResolved"))
          assert.deepStrictEqual(bad.map((e) => Exit.isFailure(e) ? Cause.pretty(e.cause).split("\n")[0] : ""), [])
          if (hold.status === "settled") {
            assert.deepStrictEqual(yield* state("same64", "same64-t"), {
              W: 988_000,
              usedQuota: 12_000,
              requestCount: 1,
              R: 988_000,
              TU: 12_000
            })
          } else {
            assert.strictEqual(hold.status, "refunded")
            assert.deepStrictEqual(yield* state("same64", "same64-t"), {
              W: 1_000_000,
              usedQuota: 0,
              requestCount: 0,
              R: 1_000_000,
              TU: 0
            })
          }
          yield* auditClean
        })))

      const W = 1_800_000, R = 950_000, P = 25_000, COST = 12_500
      const open = (id: string) =>
        Effect.flatMap(
          BillingSession.BillingSession,
          (b) =>
            b.open({ holdId: `${id}-h`, accountId: id, tokenId: `${id}-t`, estimate: P, preference: "wallet_only" })
        )
      const refundedState = { W, usedQuota: 0, requestCount: 0, R, TU: 0 }
      const settledState = (amount: number) => ({
        W: W - amount,
        usedQuota: amount,
        requestCount: amount > 0 ? 1 : 0,
        R: R - amount,
        TU: amount
      })
      const holdStatus = (id: string) =>
        Effect.map(Effect.flatMap(BillingSession.BillingSession, (b) => b.get(`${id}-h`)), (h) => h.status)

      it.effect("withBilling (§5): success settles with the cost and returns the value", () =>
        Effect.gen(function*() {
          yield* account("wb-ok", W, { remain: R })
          const value = yield* BillingSettler.withBilling(open("wb-ok"), (settler) =>
            Effect.gen(function*() {
              assert.strictEqual(settler.preConsumed, P)
              assert.deepStrictEqual(yield* state("wb-ok", "wb-ok-t"), {
                W: W - P,
                usedQuota: 0,
                requestCount: 0,
                R: R - P,
                TU: P
              })
              return { value: "answer", cost: COST }
            }))
          assert.strictEqual(value, "answer")
          assert.strictEqual(yield* holdStatus("wb-ok"), "settled")
          assert.deepStrictEqual(yield* state("wb-ok", "wb-ok-t"), settledState(COST))
          yield* auditClean
        }))

      it.effect("withBilling (§5): a failure refunds and re-raises it", () =>
        Effect.gen(function*() {
          yield* account("wb-fail", W, { remain: R })
          const error = yield* failureOf(
            BillingSettler.withBilling(open("wb-fail"), () => Effect.fail(new UpstreamFailed({ attempt: 1 })))
          )
          assert.instanceOf(error, UpstreamFailed)
          assert.strictEqual(yield* holdStatus("wb-fail"), "refunded")
          assert.deepStrictEqual(yield* state("wb-fail", "wb-fail-t"), refundedState)
          yield* auditClean
        }))

      it.effect("withBilling (§5): a defect (an exception thrown in the upstream code) refunds and re-raises the defect", () =>
        Effect.gen(function*() {
          yield* account("wb-die", W, { remain: R })
          const exit = yield* Effect.exit(
            BillingSettler.withBilling(open("wb-die"), () =>
              Effect.sync((): { value: string; cost: number } => {
                throw new TypeError("cannot read properties of undefined (reading 'usage')")
              }))
          )
          assert.isTrue(Exit.isFailure(exit) && Cause.hasDies(exit.cause))
          assert.strictEqual(yield* holdStatus("wb-die"), "refunded")
          assert.deepStrictEqual(yield* state("wb-die", "wb-die-t"), refundedState)
          yield* auditClean
        }))

      const interrupted = (id: string, options?: { readonly onInterrupt?: BillingSettler.InterruptionPolicy }) =>
        Effect.gen(function*() {
          yield* account(id, W, { remain: R })
          const started = yield* Deferred.make<void>()
          const fiber = yield* Effect.forkChild(BillingSettler.withBilling(
            open(id),
            () =>
              Deferred.succeed(started, undefined).pipe(
                Effect.andThen(Effect.never),
                Effect.as({ value: "late", cost: COST })
              ),
            options
          ))
          yield* Deferred.await(started)
          assert.strictEqual(yield* holdStatus(id), "pending")
          assert.deepStrictEqual(yield* state(id, `${id}-t`), {
            W: W - P,
            usedQuota: 0,
            requestCount: 0,
            R: R - P,
            TU: P
          })
          yield* Fiber.interrupt(fiber)
          const exit = yield* Fiber.await(fiber)
          assert.isTrue(Exit.isFailure(exit) && Cause.hasInterrupts(exit.cause))
        })

      it.effect("withBilling (§5): an interruption (client disconnect) refunds by default", () =>
        Effect.gen(function*() {
          yield* interrupted("wb-int")
          assert.strictEqual(yield* holdStatus("wb-int"), "refunded")
          assert.deepStrictEqual(yield* state("wb-int", "wb-int-t"), refundedState)
          yield* auditClean
        }))

      it.effect("withBilling (§5): an interruption under chargeOnInterrupt(amount) settles with that amount", () =>
        Effect.gen(function*() {
          yield* interrupted("wb-charge", { onInterrupt: BillingSettler.chargeOnInterrupt(4_321) })
          assert.strictEqual(yield* holdStatus("wb-charge"), "settled")
          assert.deepStrictEqual(yield* state("wb-charge", "wb-charge-t"), settledState(4_321))
          yield* auditClean
        }))

      it.effect("withBilling (§5): a settle that fails (an invalid cost) refunds the reservation and returns the settle error", () =>
        Effect.gen(function*() {
          yield* account("wb-bad", W, { remain: R })
          const error = yield* failureOf(
            BillingSettler.withBilling(open("wb-bad"), () => Effect.succeed({ value: "x", cost: -5 }))
          )
          assert.instanceOf(error, BillingError.InvalidInput)
          assert.strictEqual(yield* holdStatus("wb-bad"), "refunded")
          assert.deepStrictEqual(yield* state("wb-bad", "wb-bad-t"), refundedState)
          yield* auditClean
        }))
    })

    // The recovery pass refunds every expired pending hold of the database: it gets a database
    // of its own so that it never touches the holds of the tests above.
    layer(walletBilling(target), { timeout: 60_000 })((it) => {
      it.effect("case 15: after expiresAt the recovery pass restores W and R and marks the hold expired; a second run changes nothing", () =>
        Effect.gen(function*() {
          const W = 1_000_000, R = 1_000_000, P = 30_000
          const billing = yield* BillingSession.BillingSession
          yield* account("s15", W, { remain: R })
          const session = yield* billing.open({
            holdId: "s15-h",
            accountId: "s15",
            tokenId: "s15-t",
            estimate: P,
            preference: "wallet_only"
          })
          assert.strictEqual(session.hold.expiresAt - session.hold.createdAt, TEN_MINUTES)
          // "The process dies": nobody settles or refunds.
          yield* TestClock.adjust(TEN_MINUTES - 1)
          assert.deepStrictEqual(yield* billing.reapExpired(), { examined: 0, expired: 0, refunded: 0, failures: [] })
          assert.deepStrictEqual(yield* state("s15", "s15-t"), {
            W: W - P,
            usedQuota: 0,
            requestCount: 0,
            R: R - P,
            TU: P
          })
          yield* TestClock.adjust(1)
          assert.deepStrictEqual(yield* billing.reapExpired(), { examined: 1, expired: 1, refunded: P, failures: [] })
          assert.deepStrictEqual(yield* state("s15", "s15-t"), { W, usedQuota: 0, requestCount: 0, R, TU: 0 })
          const hold = yield* billing.get("s15-h")
          assert.strictEqual(hold.status, "expired")
          assert.deepStrictEqual(yield* partRecords("s15-h"), [`token:refunded:${P}`, `wallet:refunded:${P}`])
          assert.deepStrictEqual(yield* holdLedger("s15-h"), [
            `token reserve ${-P} → ${R - P}`,
            `wallet reserve ${-P} → ${W - P}`,
            `token expire ${P} → ${R}`,
            `wallet expire ${P} → ${W}`
          ])
          yield* auditClean
          // A second run, later, changes nothing; a late settle is charged late (§6, issue 9: the
          // work is not free), exactly once, and a late refund is a no-op.
          yield* TestClock.adjust(TEN_MINUTES)
          assert.deepStrictEqual(yield* billing.reapExpired(), { examined: 0, expired: 0, refunded: 0, failures: [] })
          const late = yield* session.settle(12_000)
          assert.strictEqual(late.late, true)
          assert.deepStrictEqual(yield* session.settle(12_000), late)
          assert.deepStrictEqual(yield* session.refund, { holdId: "s15-h", status: "expired", refunded: 0 })
          assert.deepStrictEqual(yield* state("s15", "s15-t"), {
            W: W - 12_000,
            usedQuota: 12_000,
            requestCount: 1,
            R: R - 12_000,
            TU: 12_000
          })
          assert.strictEqual((yield* billing.get("s15-h")).status, "expired")
          yield* auditClean
        }))

      it.effect("a short ttlMillis expires sooner; several recovery passes running at once expire each hold exactly once", () =>
        Effect.gen(function*() {
          const W = 500_000, P = 7_000
          const billing = yield* BillingSession.BillingSession
          yield* account("reap", W, { remain: W })
          const short = yield* billing.open({
            holdId: "reap-short",
            accountId: "reap",
            tokenId: "reap-t",
            estimate: P,
            preference: "wallet_only",
            ttlMillis: 5_000
          })
          assert.strictEqual(short.hold.expiresAt - short.hold.createdAt, 5_000)
          for (let i = 0; i < 8; i++) {
            yield* billing.open({
              holdId: `reap-${i}`,
              accountId: "reap",
              tokenId: "reap-t",
              estimate: P,
              preference: "wallet_only"
            })
          }
          yield* billing.open({
            holdId: "reap-settled",
            accountId: "reap",
            tokenId: "reap-t",
            estimate: P,
            preference: "wallet_only",
            ttlMillis: 1
          }).pipe(
            Effect.flatMap((s) => s.settle(1_000))
          )
          yield* TestClock.adjust(5_000)
          assert.deepStrictEqual(yield* billing.reapExpired(), { examined: 1, expired: 1, refunded: P, failures: [] })
          assert.strictEqual((yield* billing.get("reap-short")).status, "expired")
          assert.strictEqual((yield* state("reap", "reap-t")).W, W - 1_000 - 8 * P)
          // Four recovery passes at once, with the live clock (far past every expiry), in batches of 3.
          const reports = yield* TestClock.withLive(Effect.all(
            Array.from(
              { length: 4 },
              () => billing.reapExpired({ limit: 3 }).pipe(Effect.repeat({ until: (r) => r.examined === 0 }))
            ),
            { concurrency: "unbounded" }
          ))
          assert.isTrue(reports.every((r) => r.failures.length === 0))
          const after = yield* state("reap", "reap-t")
          assert.deepStrictEqual(after, { W: W - 1_000, usedQuota: 1_000, requestCount: 1, R: W - 1_000, TU: 1_000 })
          for (let i = 0; i < 8; i++) {
            assert.strictEqual((yield* billing.get(`reap-${i}`)).status, "expired")
            assert.strictEqual(
              (yield* holdLedger(`reap-${i}`)).filter((row) => row.includes(" expire ")).length,
              2,
              `reap-${i}`
            )
          }
          assert.strictEqual((yield* billing.get("reap-settled")).status, "settled")
          yield* auditClean
        }))
    })

    // The trust bypass is an engine option: a database of its own with the option on.
    layer(walletBilling(target, { session: { trustBypass: { threshold: 100_000 } } }), { timeout: 60_000 })((it) => {
      it.effect("trust bypass on: above the threshold the hold records 0 and settle charges A; otherwise a normal reservation", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const A = 45_000, P = 30_000
          yield* account("tr", 1_000_000, { unlimited: true })
          const s = yield* billing.open({
            holdId: "tr-h",
            accountId: "tr",
            tokenId: "tr-t",
            estimate: P,
            preference: "wallet_only"
          })
          assert.deepStrictEqual({
            trusted: s.hold.trusted,
            reserved: s.hold.reserved,
            preConsumed: s.preConsumed,
            estimate: s.hold.estimate
          }, {
            trusted: true,
            reserved: 0,
            preConsumed: 0,
            estimate: P
          })
          assert.deepStrictEqual(s.hold.parts.map((p) => `${p.sourceId}:${p.amount}`), ["wallet:0", "token:0"])
          assert.deepStrictEqual(yield* state("tr", "tr-t"), {
            W: 1_000_000,
            usedQuota: 0,
            requestCount: 0,
            R: 0,
            TU: 0
          })
          const settlement = yield* s.settle(A)
          assert.deepStrictEqual({ reserved: settlement.reserved, delta: settlement.delta }, { reserved: 0, delta: A })
          assert.deepStrictEqual(yield* state("tr", "tr-t"), {
            W: 1_000_000 - A,
            usedQuota: A,
            requestCount: 1,
            R: -A,
            TU: A
          })
          assert.deepStrictEqual(yield* holdLedger("tr-h"), [
            `token settle ${-A} → ${-A}`,
            `wallet settle ${-A} → ${1_000_000 - A}`
          ])

          // A trusted hold refunds nothing and still ends refunded.
          const t = yield* billing.open({
            holdId: "tr-h2",
            accountId: "tr",
            tokenId: "tr-t",
            estimate: P,
            preference: "wallet_only"
          })
          assert.isTrue(t.hold.trusted)
          assert.deepStrictEqual(yield* t.refund, { holdId: "tr-h2", status: "refunded", refunded: 0 })

          // force: no bypass.
          const forced = yield* billing.open({
            holdId: "tr-force",
            accountId: "tr",
            tokenId: "tr-t",
            estimate: P,
            preference: "wallet_only",
            force: true
          })
          assert.deepStrictEqual({ trusted: forced.hold.trusted, reserved: forced.hold.reserved }, {
            trusted: false,
            reserved: P
          })
          yield* forced.refund

          // A wallet exactly at the threshold, or a limited token at or below it: no bypass.
          yield* account("tr-edge", 100_000, { unlimited: true })
          const edge = yield* billing.open({
            holdId: "tr-edge-h",
            accountId: "tr-edge",
            tokenId: "tr-edge-t",
            estimate: P,
            preference: "wallet_only"
          })
          assert.deepStrictEqual({ trusted: edge.hold.trusted, reserved: edge.hold.reserved }, {
            trusted: false,
            reserved: P
          })
          assert.strictEqual((yield* state("tr-edge")).W, 100_000 - P)
          yield* account("tr-tok", 1_000_000, { remain: 100_000 })
          const tok = yield* billing.open({
            holdId: "tr-tok-h",
            accountId: "tr-tok",
            tokenId: "tr-tok-t",
            estimate: P,
            preference: "wallet_only"
          })
          assert.deepStrictEqual({ trusted: tok.hold.trusted, reserved: tok.hold.reserved }, {
            trusted: false,
            reserved: P
          })
          yield* Effect.all([edge.refund, tok.refund])
          yield* (yield* WalletAdmin.WalletAdmin).adjustToken({
            tokenId: "tr-tok-t",
            amount: 1,
            reason: "above the threshold"
          })
          const tok2 = yield* billing.open({
            holdId: "tr-tok-h2",
            accountId: "tr-tok",
            tokenId: "tr-tok-t",
            estimate: P,
            preference: "wallet_only"
          })
          assert.deepStrictEqual({ trusted: tok2.hold.trusted, reserved: tok2.hold.reserved }, {
            trusted: true,
            reserved: 0
          })
          yield* tok2.settle(P)
          assert.deepStrictEqual(yield* state("tr-tok", "tr-tok-t"), {
            W: 1_000_000 - P,
            usedQuota: P,
            requestCount: 1,
            R: 100_001 - P,
            TU: P
          })
          yield* auditClean
        }))
    })
  })
}
