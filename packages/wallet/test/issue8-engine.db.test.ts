/**
 * Issue 8, engine items, on every database (SQLite, PostgreSQL, MySQL/MariaDB):
 * #3 a replayed open never gets a handle to a running request's hold (§2.7),
 * #6 bounded TTL (§2.10), #8 token ownership (§2.9), #11 post-consume charge
 * idempotency (§7), #13 `-0` and the safe-integer range (§2.10).
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession, BillingSettler } from "@relay-billing/core"
import { Cause, Data, Deferred, Effect, Exit, Fiber, Option } from "effect"
import { WalletAdmin } from "../src/index.js"
import { auditClean, targets, walletBilling } from "./support.js"

const MAX = Number.MAX_SAFE_INTEGER
const DAY = 24 * 60 * 60 * 1000
const W = 1_000_000
const R = 1_000_000
const P = 30_000
const A = 12_000

class UpstreamFailed extends Data.TaggedError("UpstreamFailed")<{ readonly status: number }> {}

/** The typed failure of `effect` (dies when it succeeds or fails without a typed error). */
const failureOf = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) return Effect.die(new Error(`expected a failure, got ${JSON.stringify(exit.value)}`))
    const error = Cause.findErrorOption(exit.cause)
    return Option.isSome(error)
      ? Effect.succeed(error.value as { readonly _tag: string; readonly [k: string]: unknown })
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

const account = (id: string, balance: number, token?: { readonly remain?: number; readonly unlimited?: boolean }) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    yield* admin.createAccount({ id, balance })
    if (token) yield* admin.createToken({ id: `${id}-t`, accountId: id, ...token })
  })

const statusOf = (holdId: string) =>
  Effect.gen(function*() {
    const billing = yield* BillingSession.BillingSession
    return yield* billing.get(holdId).pipe(
      Effect.map((h) => h.status as string),
      Effect.catchTag("HoldNotFound", () => Effect.succeed("absent"))
    )
  })

for (const target of targets) {
  describe(`issue 8 engine items on ${target.name}`, () => {
    layer(walletBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #3: a second open of a pending hold fails HoldInFlight and debits nothing; the first settles 12,000", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("i3a", W, { remain: R })
          const req = { holdId: "i3a-X", accountId: "i3a", tokenId: "i3a-t", estimate: P, preference: "wallet_only" }
          const first = yield* billing.open(req)
          const error = yield* failureOf(billing.open(req))
          assert.deepStrictEqual([error._tag, error["holdId"], error["code"]], [
            "HoldInFlight",
            "i3a-X",
            "billing_hold_in_flight"
          ])
          assert.deepStrictEqual(yield* state("i3a", "i3a-t"), {
            W: W - P,
            usedQuota: 0,
            requestCount: 0,
            R: R - P,
            TU: P
          })
          yield* first.settle(A)
          assert.deepStrictEqual(yield* state("i3a", "i3a-t"), {
            W: W - A,
            usedQuota: A,
            requestCount: 1,
            R: R - A,
            TU: A
          })
          const resolved = yield* failureOf(billing.open(req))
          assert.deepStrictEqual([resolved._tag, resolved["status"], resolved["actual"]], [
            "HoldResolved",
            "settled",
            A
          ])
          yield* auditClean
        }))

      it.effect("issue 8 #3: a retry inside withBilling that fails (429) does not refund the running request, which is billed 12,000", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("i3b", W, { remain: R })
          const req = { holdId: "i3b-X", accountId: "i3b", tokenId: "i3b-t", estimate: P, preference: "wallet_only" }
          const started = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const running = yield* Effect.forkChild(
            BillingSettler.withBilling(billing.open(req), () =>
              Deferred.succeed(started, undefined).pipe(
                Effect.andThen(Deferred.await(release)),
                Effect.as({ value: "first", cost: A })
              ))
          )
          yield* Deferred.await(started)
          let retryUsed = false
          const retry = yield* failureOf(
            BillingSettler.withBilling(billing.open(req), () => {
              retryUsed = true
              return Effect.fail(new UpstreamFailed({ status: 429 }))
            })
          )
          assert.strictEqual(retry._tag, "HoldInFlight")
          assert.isFalse(retryUsed)
          assert.strictEqual(yield* statusOf("i3b-X"), "pending")
          assert.deepStrictEqual(yield* state("i3b", "i3b-t"), {
            W: W - P,
            usedQuota: 0,
            requestCount: 0,
            R: R - P,
            TU: P
          })
          yield* Deferred.succeed(release, undefined)
          assert.strictEqual(yield* Fiber.join(running), "first")
          assert.strictEqual(yield* statusOf("i3b-X"), "settled")
          assert.deepStrictEqual(yield* state("i3b", "i3b-t"), {
            W: W - A,
            usedQuota: A,
            requestCount: 1,
            R: R - A,
            TU: A
          })
          yield* auditClean
        }))

      it.effect("issue 8 #3: 6 concurrent opens of one id: exactly one session, the others HoldInFlight, one debit", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("i3c", W, { remain: R })
          const req = { holdId: "i3c-X", accountId: "i3c", tokenId: "i3c-t", estimate: P, preference: "wallet_only" }
          const results = yield* Effect.all(Array.from({ length: 6 }, () => Effect.result(billing.open(req))), {
            concurrency: "unbounded"
          })
          const wins = results.flatMap((r) => r._tag === "Success" ? [r.success] : [])
          assert.strictEqual(wins.length, 1)
          assert.deepStrictEqual(
            results.flatMap((r) => r._tag === "Failure" ? [r.failure._tag] : []),
            Array(5).fill("HoldInFlight")
          )
          assert.deepStrictEqual(yield* state("i3c", "i3c-t"), {
            W: W - P,
            usedQuota: 0,
            requestCount: 0,
            R: R - P,
            TU: P
          })
          yield* wins[0]!.settle(A)
          assert.deepStrictEqual(yield* state("i3c", "i3c-t"), {
            W: W - A,
            usedQuota: A,
            requestCount: 1,
            R: R - A,
            TU: A
          })
          yield* auditClean
        }))

      it.effect("issue 8 #6: ttlMillis above 7 days is refused typed, nothing written", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("i6", W, { remain: R })
          for (const [i, ttl] of [MAX, 7 * DAY + 1].entries()) {
            const error = yield* failureOf(
              billing.open({ holdId: `i6-${i}`, accountId: "i6", tokenId: "i6-t", estimate: P, ttlMillis: ttl })
            )
            assert.deepStrictEqual([error._tag, error["field"], error["value"]], [
              "InvalidInput",
              "ttlMillis",
              String(ttl)
            ])
            assert.strictEqual(yield* statusOf(`i6-${i}`), "absent")
          }
          assert.deepStrictEqual(yield* state("i6", "i6-t"), { W, usedQuota: 0, requestCount: 0, R, TU: 0 })
          const week = yield* billing.open({
            holdId: "i6-week",
            accountId: "i6",
            tokenId: "i6-t",
            estimate: P,
            ttlMillis: 7 * DAY
          })
          assert.strictEqual(week.hold.expiresAt - week.hold.createdAt, 7 * DAY)
          yield* week.settle(A)
          assert.deepStrictEqual(yield* state("i6", "i6-t"), {
            W: W - A,
            usedQuota: A,
            requestCount: 1,
            R: R - A,
            TU: A
          })
          // The engine option is bounded the same way when the engine is built.
          const built = yield* failureOf(BillingSession.BillingSession.make({ holdTtlMillis: MAX }))
          assert.deepStrictEqual([built._tag, built["field"], built["value"]], [
            "InvalidInput",
            "holdTtlMillis",
            String(MAX)
          ])
          yield* auditClean
        }))

      it.effect("issue 8 #8: opening for account B with account A's token is TokenNotFound and changes nothing", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("i8a", W, { remain: R })
          yield* account("i8b", W)
          const error = yield* failureOf(
            billing.open({ holdId: "i8-X", accountId: "i8b", tokenId: "i8a-t", estimate: P, preference: "wallet_only" })
          )
          assert.deepStrictEqual([error._tag, error["tokenId"], error["accountId"], error["code"]], [
            "TokenNotFound",
            "i8a-t",
            "i8b",
            "token_not_found"
          ])
          assert.strictEqual(yield* statusOf("i8-X"), "absent")
          assert.deepStrictEqual(yield* state("i8a", "i8a-t"), { W, usedQuota: 0, requestCount: 0, R, TU: 0 })
          assert.deepStrictEqual(yield* state("i8b"), { W, usedQuota: 0, requestCount: 0 })
          // The post-consume path too, and the owner can still use the id.
          const charged = yield* failureOf(
            billing.charge({ holdId: "i8-X", accountId: "i8b", tokenId: "i8a-t", estimate: 0 }, A)
          )
          assert.strictEqual(charged._tag, "TokenNotFound")
          yield* Effect.flatMap(
            billing.open({
              holdId: "i8-X",
              accountId: "i8a",
              tokenId: "i8a-t",
              estimate: P,
              preference: "wallet_only"
            }),
            (s) => s.settle(A)
          )
          assert.deepStrictEqual(yield* state("i8a", "i8a-t"), {
            W: W - A,
            usedQuota: A,
            requestCount: 1,
            R: R - A,
            TU: A
          })
          assert.deepStrictEqual(yield* state("i8b"), { W, usedQuota: 0, requestCount: 0 })
          yield* auditClean
        }))

      it.effect("issue 8 #11: charge retried with another amount is IdempotencyConflict on actual, charged once; the same amount returns the first result; concurrent charges charge once", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("i11", W, { remain: R })
          const req = { holdId: "i11-X", accountId: "i11", tokenId: "i11-t", estimate: 0, preference: "wallet_only" }
          const first = yield* billing.charge(req, A)
          const conflict = yield* failureOf(billing.charge(req, 45_000))
          assert.deepStrictEqual([conflict._tag, conflict["field"], conflict["existing"], conflict["requested"]], [
            "IdempotencyConflict",
            "actual",
            String(A),
            "45000"
          ])
          assert.deepStrictEqual(yield* billing.charge(req, A), first)
          assert.deepStrictEqual(yield* state("i11", "i11-t"), {
            W: W - A,
            usedQuota: A,
            requestCount: 1,
            R: R - A,
            TU: A
          })
          // Concurrent charges of a new id with two amounts: one charge, the rest replay or conflict.
          const amounts = [5_000, 7_000, 5_000, 7_000, 5_000, 7_000]
          const results = yield* Effect.all(
            amounts.map((amount) => Effect.result(billing.charge({ ...req, holdId: "i11-Y" }, amount))),
            { concurrency: "unbounded" }
          )
          const after = yield* state("i11", "i11-t")
          const paid = after.usedQuota - A
          assert.include([5_000, 7_000], paid)
          assert.strictEqual(after.requestCount, 2)
          results.forEach((r, i) => {
            if (amounts[i] === paid) {
              assert.strictEqual(r._tag === "Success" ? r.success.actual as number : r.failure._tag, paid)
            } else assert.strictEqual(r._tag === "Failure" ? r.failure._tag : "Success", "IdempotencyConflict")
          })
          assert.deepStrictEqual(after, {
            W: W - A - paid,
            usedQuota: A + paid,
            requestCount: 2,
            R: R - A - paid,
            TU: A + paid
          })
          yield* auditClean
        }))

      it.effect("issue 8 #13: settle(-0) and an estimate of -0 are stored as 0", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("i13z", W, { remain: R })
          const s = yield* billing.open({
            holdId: "i13z-X",
            accountId: "i13z",
            tokenId: "i13z-t",
            estimate: -0,
            preference: "wallet_only"
          })
          assert.isTrue(Object.is(s.hold.estimate, 0))
          const settlement = yield* s.settle(-0)
          assert.isTrue(Object.is(settlement.actual, 0))
          const hold = yield* billing.get("i13z-X")
          assert.isTrue(Object.is(hold.estimate, 0))
          assert.isTrue(Object.is(hold.settlement?.actual, 0))
          assert.deepStrictEqual(yield* state("i13z", "i13z-t"), { W, usedQuota: 0, requestCount: 0, R, TU: 0 })
          yield* auditClean
        }))

      it.effect("issue 8 #13: two settles of MAX_SAFE on two holds: the second is QuotaOutOfRange before any write, the hold stays pending", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("i13", W)
          const open = (holdId: string) =>
            billing.open({ holdId, accountId: "i13", estimate: P, playground: true, preference: "wallet_only" })
          const h1 = yield* open("i13-1")
          const h2 = yield* open("i13-2")
          yield* h1.settle(MAX)
          const before = yield* state("i13")
          assert.deepStrictEqual(before, { W: W - P - MAX, usedQuota: MAX, requestCount: 1 })
          const error = yield* failureOf(h2.settle(MAX))
          assert.deepStrictEqual([
            error._tag,
            error["code"],
            error["field"],
            error["subjectId"],
            error["current"],
            error["change"]
          ], [
            "QuotaOutOfRange",
            "billing_quota_out_of_range",
            "wallet.balance",
            "i13",
            W - P - MAX,
            -(MAX - P)
          ])
          assert.strictEqual(yield* statusOf("i13-2"), "pending")
          assert.deepStrictEqual(yield* state("i13"), before)
          // The hold is whole: a refund gives its reservation back.
          yield* h2.refund
          assert.deepStrictEqual(yield* state("i13"), { W: W - MAX, usedQuota: MAX, requestCount: 1 })
          yield* auditClean
        }))

      it.effect("issue 8 #13: the account's usedQuota and an unlimited token's used are bounded on their own", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const admin = yield* WalletAdmin.WalletAdmin
          // usedQuota: the wallet is topped up between the two charges, so only the counter overflows.
          yield* account("i13u", MAX)
          const u1 = yield* billing.open({
            holdId: "i13u-1",
            accountId: "i13u",
            estimate: 1,
            playground: true,
            preference: "wallet_only"
          })
          yield* u1.settle(MAX)
          yield* admin.topUp({ accountId: "i13u", amount: MAX, key: "i13u-again" })
          const u2 = yield* billing.open({
            holdId: "i13u-2",
            accountId: "i13u",
            estimate: 1,
            playground: true,
            preference: "wallet_only"
          })
          const uBefore = yield* state("i13u")
          const counter = yield* failureOf(u2.settle(2))
          assert.deepStrictEqual([
            counter._tag,
            counter["field"],
            counter["subjectId"],
            counter["current"],
            counter["change"]
          ], [
            "QuotaOutOfRange",
            "account.usedQuota",
            "i13u",
            MAX,
            2
          ])
          assert.strictEqual(yield* statusOf("i13u-2"), "pending")
          assert.deepStrictEqual(yield* state("i13u"), uBefore)

          // token used: an unlimited token's counters move at settlement.
          yield* account("i13k", MAX, { unlimited: true })
          const k1 = yield* billing.open({
            holdId: "i13k-1",
            accountId: "i13k",
            tokenId: "i13k-t",
            estimate: 1,
            preference: "wallet_only"
          })
          yield* k1.settle(MAX)
          yield* admin.topUp({ accountId: "i13k", amount: MAX, key: "i13k-again" })
          const k2 = yield* billing.open({
            holdId: "i13k-2",
            accountId: "i13k",
            tokenId: "i13k-t",
            estimate: 1,
            preference: "wallet_only"
          })
          const kBefore = yield* state("i13k", "i13k-t")
          const token = yield* failureOf(k2.settle(2))
          assert.strictEqual(token._tag, "QuotaOutOfRange")
          assert.strictEqual(token["subjectId"], "i13k-t")
          assert.include(["token.used", "token.remain"], token["field"])
          assert.strictEqual(yield* statusOf("i13k-2"), "pending")
          assert.deepStrictEqual(yield* state("i13k", "i13k-t"), kBefore)
          yield* billing.refund("i13u-2")
          yield* billing.refund("i13k-2")
          yield* auditClean
        }))
    })
  })
}
