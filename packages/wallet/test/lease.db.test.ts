/**
 * Hold leases and late settles (billing-semantics §6, issue 9 hole 1) on every
 * database target, through the knex journal, wallet and token budget: a
 * renewal is one conditional write that never resurrects a resolved hold; the
 * reaper leaves a renewed hold alone; a settle after the expiry is charged
 * late (`late_settle` rows), exactly once, and the audit proves it.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession, BillingSettler, Ledger } from "@relay-billing/core"
import { KnexClient } from "@relay-billing/knex"
import { Cause, Deferred, Effect, Exit, Fiber, Option, Queue } from "effect"
import { TestClock } from "effect/testing"
import { WalletAdmin } from "../src/index.js"
import { auditClean, targets, walletBilling } from "./support.js"

const TTL = 15_000
const W = 1_000_000
const R = 800_000
const P = 30_000
const A = 45_000

const failureOf = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) return Effect.die(new Error(`expected a failure, got ${JSON.stringify(exit.value)}`))
    const error = Cause.findErrorOption(exit.cause)
    return Option.isSome(error) ? Effect.succeed(error.value) : Effect.die(new Error(Cause.pretty(exit.cause)))
  })

const account = (id: string) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    yield* admin.createAccount({ id, balance: W })
    yield* admin.createToken({ id: `${id}-t`, accountId: id, remain: R })
  })

const state = (id: string) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    const a = yield* admin.account(id)
    const t = yield* admin.token(`${id}-t`)
    return { W: a.balance, usedQuota: a.usedQuota, requestCount: a.requestCount, R: t.remain, TU: t.used }
  })

const open = (id: string, holdId: string) =>
  Effect.flatMap(
    BillingSession.BillingSession,
    (b) => b.open({ holdId, accountId: id, tokenId: `${id}-t`, estimate: P, preference: "wallet_only" })
  )

/** The stored `expires_at` of a hold, read straight from the table. */
const storedExpiry = (holdId: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const row = yield* client.query("test.expiry", (db) =>
      db(client.table("holds")).where({ id: holdId }).first("expires_at"))
    return Number((row as Record<string, unknown>)["expires_at"])
  })

for (const target of targets) {
  describe(`hold leases on ${target.name}`, () => {
    layer(walletBilling(target, { session: { holdTtlMillis: TTL } }), { timeout: 60_000 })((it) => {
      it.effect("a renewal extends the lease in the table; the reaper leaves it; resolved holds are never resurrected", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("l1")
          const start = yield* Effect.clockWith((c) => c.currentTimeMillis)
          const session = yield* open("l1", "l1-h")
          yield* TestClock.adjust("10 seconds")
          const lease = yield* session.lease.renew
          assert.strictEqual(lease.expiresAt, start + 25_000)
          assert.strictEqual(yield* storedExpiry("l1-h"), start + 25_000)
          yield* TestClock.adjust("10 seconds")
          assert.strictEqual((yield* billing.reapExpired()).expired, 0)
          assert.strictEqual((yield* billing.get("l1-h")).status, "pending")
          yield* session.settle(A)
          const error = yield* failureOf(session.lease.renew)
          assert.strictEqual((error as { _tag: string })._tag, "HoldResolved")
          assert.strictEqual(yield* storedExpiry("l1-h"), start + 25_000)
          assert.strictEqual((yield* billing.get("l1-h")).status, "settled")
          // An expired hold stays expired.
          const lapsed = yield* open("l1", "l1-lapsed")
          yield* TestClock.adjust("16 seconds")
          assert.strictEqual((yield* billing.reapExpired()).expired, 1)
          const expired = yield* failureOf(lapsed.lease.renew)
          assert.strictEqual((expired as { status: string }).status, "expired")
          assert.strictEqual((yield* billing.get("l1-lapsed")).status, "expired")
          yield* auditClean
        }))

      it.effect("withBilling renews while a 25 s request runs under a reaper every 5 s: settled with the full cost", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("l2")
          // Each renewal and reaper pass does real I/O after the clock wakes it: the test waits
          // for each one's own signal before moving the clock again (never for a duration).
          const passes = yield* Queue.unbounded<number>()
          const renewals = yield* Queue.unbounded<number>()
          const reaper = yield* Effect.forkChild(
            Effect.forever(
              Effect.sleep("5 seconds").pipe(
                Effect.andThen(billing.reapExpired()),
                Effect.tap((r) => Queue.offer(passes, r.expired))
              )
            )
          )
          const started = yield* Deferred.make<void>()
          const signalled = Effect.map(open("l2", "l2-h"), (s): BillingSettler.BillingSettler => ({
            ...s,
            lease: { ...s.lease, renew: Effect.tap(s.lease.renew, (l) => Queue.offer(renewals, l.expiresAt)) }
          }))
          const request = yield* Effect.forkChild(
            BillingSettler.withBilling(signalled, () =>
              Deferred.succeed(started, undefined).pipe(
                Effect.andThen(Effect.sleep("25 seconds")),
                Effect.as({ value: "ok", cost: A })
              ))
          )
          yield* Deferred.await(started)
          const start = (yield* billing.get("l2-h")).createdAt
          for (let step = 1; step <= 4; step++) {
            yield* TestClock.adjust("5 seconds")
            assert.strictEqual(yield* Queue.take(passes), 0) // nothing expired
            assert.strictEqual(yield* Queue.take(renewals), start + step * 5_000 + TTL)
          }
          yield* TestClock.adjust("5 seconds") // 25 s: the work ends and settles
          assert.strictEqual(yield* Fiber.join(request), "ok")
          yield* Fiber.interrupt(reaper)
          const hold = yield* billing.get("l2-h")
          assert.strictEqual(hold.status, "settled")
          assert.deepStrictEqual(yield* state("l2"), { W: W - A, usedQuota: A, requestCount: 1, R: R - A, TU: A })
          yield* auditClean
        }))

      it.effect("a settle after the expiry is charged late, once: late_settle rows, counters, audit clean", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const ledger = yield* Ledger.Ledger
          yield* account("l3")
          const session = yield* open("l3", "l3-h")
          yield* TestClock.adjust("16 seconds")
          assert.strictEqual((yield* billing.reapExpired()).expired, 1)
          assert.deepStrictEqual(yield* state("l3"), { W, usedQuota: 0, requestCount: 0, R, TU: 0 })
          const late = yield* session.settle(A)
          assert.strictEqual(late.late, true)
          assert.deepStrictEqual(late.parts.map((p) => [p.sourceId, p.charged, p.unbilled]), [["wallet", A, 0], [
            "token",
            A,
            0
          ]])
          const after = { W: W - A, usedQuota: A, requestCount: 1, R: R - A, TU: A }
          assert.deepStrictEqual(yield* state("l3"), after)
          const rows = (yield* ledger.entries({ holdId: "l3-h" })).filter((e) => e.kind === "late_settle")
          assert.deepStrictEqual(rows.map((e) => [e.sourceId, e.amount]).sort(), [["token", -A], ["wallet", -A]])
          yield* auditClean
          // Exactly once; a refund after it is a no-op; the hold stays expired with its settlement.
          assert.deepStrictEqual(yield* billing.settle("l3-h", 1), late)
          assert.strictEqual((yield* session.refund).refunded, 0)
          assert.deepStrictEqual(yield* state("l3"), after)
          const hold = yield* billing.get("l3-h")
          assert.strictEqual(hold.status, "expired")
          assert.deepStrictEqual(hold.settlement, late)
          // A settle after a refund stays a typed error.
          const refunded = yield* open("l3", "l3-r")
          yield* refunded.refund
          const error = yield* failureOf(refunded.settle(A))
          assert.strictEqual((error as { status: string }).status, "refunded")
          assert.deepStrictEqual(yield* state("l3"), after)
          yield* auditClean
        }))

      it.effect("concurrent late settles of one hold charge it once", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* account("l4")
          yield* open("l4", "l4-h")
          yield* TestClock.adjust("16 seconds")
          yield* billing.reapExpired()
          const results = yield* Effect.all(Array.from({ length: 4 }, () => billing.settle("l4-h", A)), {
            concurrency: "unbounded"
          })
          for (const r of results) assert.deepStrictEqual(r, results[0])
          assert.deepStrictEqual(yield* state("l4"), { W: W - A, usedQuota: A, requestCount: 1, R: R - A, TU: A })
          yield* auditClean
        }))
    })
  })
}
