/**
 * Hold leases and late settles (billing-semantics §6, issue 9 hole 1): a hold
 * in use is renewed and never expired; only a lapsed lease is reaped; a settle
 * that still arrives after the expiry is charged late (`late_settle`), once.
 * Time is the `TestClock` that `it.effect` provides.
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingError, BillingSession, BillingSettler } from "@relay-billing/core"
import { Effect, Fiber, Ref } from "effect"
import { TestClock } from "effect/testing"
import { InMemoryStore } from "../src/index.js"
import { assertAuditClean, expectFailure, ledgerOf } from "./fixtures.js"

const Engine = BillingSession.BillingSession
const TTL = 15_000
const W = 1_000_000
const R = 800_000
const P = 30_000
const A = 45_000

const setup = (store: InMemoryStore.InMemoryStore) =>
  Effect.gen(function*() {
    yield* store.createAccount("a", W)
    yield* store.createToken("t", "a", { remain: R })
  })

const open = (engine: BillingSession.BillingSession["Service"], holdId: string, estimate = P) =>
  engine.open({ holdId, accountId: "a", tokenId: "t", estimate, preference: "wallet_only" })

/** A reaper like the relay's: one pass every `seconds` of the test clock, forever. */
const reaper = (engine: BillingSession.BillingSession["Service"], seconds: number) =>
  Effect.forever(Effect.andThen(Effect.sleep(`${seconds} seconds`), engine.reapExpired()))

describe("lease renewal (§6)", () => {
  it.effect("renew moves expiresAt to now + TTL; the reaper leaves a renewed hold alone", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const session = yield* open(engine, "h1")
      assert.strictEqual(session.hold.expiresAt, TTL)
      assert.strictEqual(session.lease.ttlMillis, TTL)
      yield* TestClock.adjust("10 seconds")
      const lease = yield* session.lease.renew
      assert.deepStrictEqual(lease, { holdId: "h1", expiresAt: 25_000 })
      yield* TestClock.adjust("10 seconds") // 20 s: past the first lease, within the renewed one
      const report = yield* engine.reapExpired()
      assert.strictEqual(report.expired, 0)
      assert.strictEqual((yield* engine.get("h1")).status, "pending")
      // The service-level call with its own length.
      const longer = yield* engine.renew("h1", { ttlMillis: 60_000 })
      assert.strictEqual(longer.expiresAt, 80_000)
      // A shorter lease never shrinks it.
      assert.strictEqual((yield* engine.renew("h1", { ttlMillis: 1_000 })).expiresAt, 80_000)
      const settled = yield* session.settle(A)
      assert.strictEqual(settled.late, undefined)
      assert.deepStrictEqual(store.snapshot().wallets, { a: W - A })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer({ holdTtlMillis: TTL })))
  })

  it.effect("a renewal never resurrects a settled, refunded or expired hold", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const settled = yield* open(engine, "settled")
      yield* settled.settle(10)
      const refunded = yield* open(engine, "refunded")
      yield* refunded.refund
      const lapsed = yield* open(engine, "lapsed")
      yield* TestClock.adjust("16 seconds")
      assert.strictEqual((yield* engine.reapExpired()).expired, 1)
      const before = store.snapshot()
      for (const [session, status] of [[settled, "settled"], [refunded, "refunded"], [lapsed, "expired"]] as const) {
        const error = yield* expectFailure(session.lease.renew, "HoldResolved")
        assert.strictEqual(error.status, status)
        assert.strictEqual(error.operation, "renew")
        const hold = yield* engine.get(session.holdId)
        assert.strictEqual(hold.status, status)
        assert.strictEqual(hold.expiresAt, TTL)
      }
      assert.deepStrictEqual(store.snapshot(), before)
      yield* expectFailure(engine.renew("nobody"), "HoldNotFound")
    }).pipe(Effect.provide(store.billingLayer({ holdTtlMillis: TTL })))
  })

  it.effect("a lease length out of bounds is a typed error naming ttlMillis; renewals stop 7 days after the open", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      yield* open(engine, "h1")
      for (const ttlMillis of [0, -5, 1.5, 7 * 24 * 3600 * 1000 + 1]) {
        const error = yield* expectFailure(engine.renew("h1", { ttlMillis }), "InvalidInput")
        assert.strictEqual(error.field, "ttlMillis")
      }
      assert.strictEqual((yield* engine.get("h1")).expiresAt, TTL)
      yield* TestClock.adjust("6 days")
      const week = 7 * 24 * 3600 * 1000
      assert.strictEqual((yield* engine.renew("h1", { ttlMillis: week })).expiresAt, week)
      yield* TestClock.adjust("1 day")
      // At the 7-day limit: nothing moves, and the reaper may take it once it lapses.
      assert.strictEqual((yield* engine.renew("h1")).expiresAt, week)
      assert.strictEqual((yield* engine.reapExpired()).expired, 1)
    }).pipe(Effect.provide(store.billingLayer({ holdTtlMillis: TTL })))
  })

  it.effect("withBilling: TTL 15 s, work of 25 s, a reaper every 5 s: the hold is renewed and settled with the full cost", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const reaping = yield* Effect.forkChild(reaper(engine, 5))
      const request = yield* Effect.forkChild(
        BillingSettler.withBilling(
          open(engine, "slow"),
          () => Effect.as(Effect.sleep("25 seconds"), { value: "answer", cost: A })
        )
      )
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual(yield* Fiber.join(request), "answer")
      yield* Fiber.interrupt(reaping)
      const hold = yield* engine.get("slow")
      assert.strictEqual(hold.status, "settled")
      assert.strictEqual(hold.settlement?.actual, A)
      assert.isTrue(hold.expiresAt > 25_000, `renewed while running: expiresAt ${hold.expiresAt}`)
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.wallets, { a: W - A })
      assert.deepStrictEqual(snap.tokens, { t: { remain: R - A, used: A } })
      assert.deepStrictEqual(snap.counters, { a: { usedQuota: A, requestCount: 1 } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer({ holdTtlMillis: TTL })))
  })

  it.effect("withLease renews every TTL/3 while the work runs, stops with it, and a failed renewal never fails the work", () =>
    Effect.gen(function*() {
      const calls = yield* Ref.make(0)
      const settler: BillingSettler.BillingSettler = {
        holdId: "x",
        preConsumed: 0,
        needsRefund: Effect.succeed(true),
        settle: () => Effect.die("unused"),
        refund: Effect.die("unused"),
        lease: {
          ttlMillis: 3_000,
          // Every other renewal fails: logged, and the loop goes on.
          renew: Effect.flatMap(Ref.updateAndGet(calls, (n) => n + 1), (n) =>
            n % 2 === 0
              ? Effect.fail(new BillingError.StoreError({ operation: "renew", detail: "down" }))
              : Effect.succeed({ holdId: "x", expiresAt: 0 }))
        }
      }
      const work = yield* Effect.forkChild(
        BillingSettler.withLease(settler, Effect.as(Effect.sleep("10500 millis"), "done"))
      )
      yield* TestClock.adjust("11 seconds")
      assert.strictEqual(yield* Fiber.join(work), "done")
      assert.strictEqual(yield* Ref.get(calls), 10) // at 1, 2, … 10 s
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(yield* Ref.get(calls), 10)
    }))
})

describe("late settle (§6)", () => {
  it.effect("a settle after the expiry charges the actual cost late, once, on the same wallet and token", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const session = yield* open(engine, "late")
      yield* TestClock.adjust("16 seconds")
      assert.strictEqual((yield* engine.reapExpired()).expired, 1)
      assert.deepStrictEqual(store.snapshot().wallets, { a: W })
      const settlement = yield* session.settle(A)
      assert.strictEqual(settlement.late, true)
      assert.strictEqual(settlement.actual, A)
      assert.deepStrictEqual(
        settlement.parts.map((p) => [p.sourceId, p.charged, p.unbilled]),
        [["wallet", A, 0], ["token", A, 0]]
      )
      const expected = {
        wallets: { a: W - A },
        counters: { a: { usedQuota: A, requestCount: 1 } },
        tokens: { t: { remain: R - A, used: A } },
        subscriptions: {},
        holds: { late: "expired" as const }
      }
      assert.deepStrictEqual(store.snapshot(), expected)
      assert.deepStrictEqual(ledgerOf(store, "late").filter(([, kind]) => kind === "late_settle"), [
        ["token", "late_settle", -A],
        ["wallet", "late_settle", -A]
      ])
      assertAuditClean(store)
      // Exactly once: a repeat (any amount) returns the first result and moves nothing.
      assert.deepStrictEqual(yield* session.settle(A), settlement)
      assert.deepStrictEqual(yield* engine.settle("late", 1), settlement)
      // A refund after it is a no-op.
      assert.strictEqual((yield* session.refund).refunded, 0)
      assert.deepStrictEqual(store.snapshot(), expected)
      assert.deepStrictEqual((yield* engine.get("late")).settlement, settlement)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer({ holdTtlMillis: TTL })))
  })

  it.effect("a settle after a refund stays a typed error and moves nothing", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const session = yield* open(engine, "r")
      yield* session.refund
      const before = store.snapshot()
      const error = yield* expectFailure(session.settle(A), "HoldResolved")
      assert.strictEqual(error.status, "refunded")
      assert.deepStrictEqual(store.snapshot(), before)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer({ holdTtlMillis: TTL })))
  })

  it.effect("a late charge on a subscription follows the plan: what neither it nor an overflow can pay is unbilled", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", W)
      yield* store.createSubscription({
        id: "s",
        accountId: "a",
        total: 100_000,
        endAt: 10 ** 12,
        allowWalletOverflow: false
      })
      const engine = yield* Engine
      const session = yield* engine.open({
        holdId: "sub",
        accountId: "a",
        estimate: 60_000,
        preference: "subscription_only"
      })
      assert.deepStrictEqual(store.snapshot().subscriptions, { s: { used: 60_000, total: 100_000 } })
      yield* TestClock.adjust("16 seconds")
      yield* engine.reapExpired()
      assert.deepStrictEqual(store.snapshot().subscriptions, { s: { used: 0, total: 100_000 } })
      const settlement = yield* session.settle(160_000)
      assert.strictEqual(settlement.late, true)
      assert.deepStrictEqual(settlement.parts.map((p) => [p.sourceId, p.charged, p.unbilled]), [[
        "subscription",
        100_000,
        60_000
      ]])
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.subscriptions, { s: { used: 100_000, total: 100_000 } })
      assert.deepStrictEqual(snap.wallets, { a: W })
      assert.deepStrictEqual(snap.counters, { a: { usedQuota: 100_000, requestCount: 1 } })
      assert.strictEqual(store.audit().unbilled, 60_000)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer({ holdTtlMillis: TTL })))
  })

  it.effect("withBilling whose renewals all fail: the reaper expires the hold, the settle is charged late and the request succeeds", () => {
    const store = InMemoryStore.make()
    store.faults.failAlways("journal.renew")
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const reaping = yield* Effect.forkChild(reaper(engine, 5))
      const request = yield* Effect.forkChild(
        BillingSettler.withBilling(
          open(engine, "unrenewed"),
          () => Effect.as(Effect.sleep("25 seconds"), { value: "answer", cost: A })
        )
      )
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual(yield* Fiber.join(request), "answer")
      yield* Fiber.interrupt(reaping)
      const hold = yield* engine.get("unrenewed")
      assert.strictEqual(hold.status, "expired")
      assert.strictEqual(hold.settlement?.late, true)
      assert.deepStrictEqual(store.snapshot().wallets, { a: W - A })
      assert.deepStrictEqual(store.snapshot().counters, { a: { usedQuota: A, requestCount: 1 } })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer({ holdTtlMillis: TTL })))
  })
})
