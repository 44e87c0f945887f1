/**
 * Issue 8, engine items, on the in-memory store: #3 a replayed open never gets
 * a handle to a running request's hold (§2.7), #6 bounded TTL (§2.10), #8 token
 * ownership (§2.9), #11 post-consume charge idempotency (§7), #13 `-0` and the
 * safe-integer range of balances and counters (§2.10).
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingSession, BillingSettler } from "@relay-billing/core"
import { Data, Deferred, Effect, Exit, Fiber } from "effect"
import { InMemoryStore } from "../src/index.js"
import { assertAuditClean, expectFailure } from "./fixtures.js"

const Engine = BillingSession.BillingSession

const W = 1_000_000
const R = 1_000_000
const P = 30_000
const A = 12_000
const MAX = Number.MAX_SAFE_INTEGER
const DAY = 24 * 60 * 60 * 1000

class UpstreamFailed extends Data.TaggedError("UpstreamFailed")<{ readonly status: number }> {}

const setup = (store: InMemoryStore.InMemoryStore) =>
  Effect.gen(function*() {
    yield* store.createAccount("a", W)
    yield* store.createToken("t", "a", { remain: R })
  })

const request = (holdId = "X", extra: Partial<BillingSession.OpenRequest> = {}): BillingSession.OpenRequest => ({
  holdId,
  accountId: "a",
  tokenId: "t",
  estimate: P,
  preference: "wallet_only",
  ...extra
})

/** The store after X was settled with A (and nothing else happened). */
const assertSettledOnce = (store: InMemoryStore.InMemoryStore) => {
  const snap = store.snapshot()
  assert.deepStrictEqual(snap.holds, { X: "settled" })
  assert.deepStrictEqual(snap.wallets, { a: W - A })
  assert.deepStrictEqual(snap.tokens, { t: { remain: R - A, used: A } })
  assert.deepStrictEqual(snap.counters, { a: { usedQuota: A, requestCount: 1 } })
  assertAuditClean(store)
}

describe("issue 8 #3: a replayed open never gets a handle to a running request's hold (§2.7)", () => {
  it.effect("issue 8 #3: a second open of a pending hold fails HoldInFlight and debits nothing; the first settles 12,000", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const first = yield* engine.open(request())
      const before = store.snapshot()
      const error = yield* expectFailure(engine.open(request()), "HoldInFlight")
      assert.strictEqual(error.holdId, "X")
      assert.strictEqual(error.code, "billing_hold_in_flight")
      assert.strictEqual(error.expiresAt, first.hold.expiresAt)
      assert.deepStrictEqual(store.snapshot(), before)
      assert.deepStrictEqual(before.wallets, { a: W - P })
      yield* first.settle(A)
      assertSettledOnce(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #3: a retry inside withBilling that fails (429) does not refund the running request, which is billed 12,000", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const started = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const running = yield* Effect.forkChild(
        BillingSettler.withBilling(engine.open(request()), () =>
          Deferred.succeed(started, undefined).pipe(
            Effect.andThen(Deferred.await(release)),
            Effect.as({ value: "first", cost: A })
          ))
      )
      yield* Deferred.await(started)
      let retryUsed = false
      const retry = yield* Effect.exit(
        BillingSettler.withBilling(engine.open(request()), () => {
          retryUsed = true
          return Effect.fail(new UpstreamFailed({ status: 429 }))
        })
      )
      assert.isTrue(Exit.isFailure(retry))
      assert.isFalse(retryUsed, "the retry must never reach the upstream with the first request's hold")
      if (Exit.isFailure(retry)) {
        const error = yield* Effect.flip(Effect.failCause(retry.cause))
        assert.strictEqual(error._tag, "HoldInFlight")
      }
      assert.deepStrictEqual(store.snapshot().holds, { X: "pending" })
      assert.deepStrictEqual(store.snapshot().wallets, { a: W - P })
      yield* Deferred.succeed(release, undefined)
      assert.strictEqual(yield* Fiber.join(running), "first")
      assertSettledOnce(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #3: 8 concurrent opens of one id: exactly one session, 7 HoldInFlight, one debit", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const results = yield* Effect.all(Array.from({ length: 8 }, () => Effect.result(engine.open(request()))), {
        concurrency: "unbounded"
      })
      const wins = results.filter((r) => r._tag === "Success")
      const losses = results.filter((r) => r._tag === "Failure")
      assert.strictEqual(wins.length, 1)
      assert.deepStrictEqual(
        losses.map((r) => r._tag === "Failure" ? r.failure._tag : ""),
        Array(7).fill("HoldInFlight")
      )
      assert.deepStrictEqual(store.snapshot().wallets, { a: W - P })
      if (wins[0]?._tag === "Success") yield* wins[0].success.settle(A)
      assertSettledOnce(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #3: after the first resolves, an open of its id is HoldResolved carrying the first outcome; another amount is IdempotencyConflict", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const first = yield* engine.open(request())
      const conflict = yield* expectFailure(engine.open(request("X", { estimate: P + 1 })), "IdempotencyConflict")
      assert.deepStrictEqual([conflict.field, conflict.existing, conflict.requested], [
        "estimate",
        String(P),
        String(P + 1)
      ])
      yield* first.settle(A)
      const settled = yield* expectFailure(engine.open(request()), "HoldResolved")
      assert.deepStrictEqual([settled.status, settled.operation, settled.actual], ["settled", "open", A])
      const r = yield* engine.open(request("Y"))
      yield* r.refund
      const refunded = yield* expectFailure(engine.open(request("Y")), "HoldResolved")
      assert.deepStrictEqual([refunded.status, refunded.actual], ["refunded", undefined])
      assert.deepStrictEqual(store.snapshot().wallets, { a: W - A })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})

describe("issue 8 #6: the hold TTL is at most 7 days (§2.10)", () => {
  it.effect("issue 8 #6: ttlMillis above 7 days is refused typed, nothing written", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const before = store.snapshot()
      for (const ttl of [Number.MAX_SAFE_INTEGER, 7 * DAY + 1]) {
        const error = yield* expectFailure(engine.open(request("X", { ttlMillis: ttl })), "InvalidInput")
        assert.deepStrictEqual([error.field, error.value], ["ttlMillis", String(ttl)])
      }
      assert.deepStrictEqual(store.snapshot(), before)
      assert.deepStrictEqual(before.holds, {})
      const week = yield* engine.open(request("X", { ttlMillis: 7 * DAY }))
      assert.strictEqual(week.hold.expiresAt - week.hold.createdAt, 7 * DAY)
      yield* week.settle(A)
      assertSettledOnce(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #6: the engine option holdTtlMillis above 7 days fails the layer with InvalidInput", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      for (const ttl of [Number.MAX_SAFE_INTEGER, 7 * DAY + 1, 0]) {
        const error = yield* expectFailure(
          BillingSession.BillingSession.make({ holdTtlMillis: ttl }).pipe(Effect.provide(store.layer())),
          "InvalidInput"
        )
        assert.deepStrictEqual([error.field, error.value], ["holdTtlMillis", String(ttl)])
      }
      const ok = yield* BillingSession.BillingSession.make({ holdTtlMillis: 7 * DAY }).pipe(
        Effect.provide(store.layer())
      )
      assert.isFunction(ok.open)
    })
  })
})

describe("issue 8 #8: a token belongs to one account (§2.9)", () => {
  it.effect("issue 8 #8: opening for account B with account A's token is TokenNotFound and changes nothing", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      yield* store.createAccount("b", W)
      const engine = yield* Engine
      const before = store.snapshot()
      const error = yield* expectFailure(engine.open(request("X", { accountId: "b" })), "TokenNotFound")
      assert.deepStrictEqual([error.tokenId, error.accountId, error.code], ["t", "b", "token_not_found"])
      assert.deepStrictEqual(store.snapshot(), before)
      assert.deepStrictEqual(before.tokens, { t: { remain: R, used: 0 } })
      assert.deepStrictEqual(store.snapshot().holds, {})
      // The post-consume path checks it too.
      yield* expectFailure(engine.charge(request("C", { accountId: "b" }), A), "TokenNotFound")
      assert.deepStrictEqual(store.snapshot(), before)
      // The owner still can.
      yield* Effect.flatMap(engine.open(request()), (s) => s.settle(A))
      const snap = store.snapshot()
      assert.deepStrictEqual(snap.wallets, { a: W - A, b: W })
      assert.deepStrictEqual(snap.tokens, { t: { remain: R - A, used: A } })
      assert.deepStrictEqual(snap.holds, { X: "settled" })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})

describe("issue 8 #11: a post-consume charge is idempotent by id and amount (§7)", () => {
  it.effect("issue 8 #11: charge retried with another amount is IdempotencyConflict on actual, charged once; the same amount returns the first result", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const first = yield* engine.charge(request("X"), A)
      const after = store.snapshot()
      const conflict = yield* expectFailure(engine.charge(request("X"), 45_000), "IdempotencyConflict")
      assert.deepStrictEqual([conflict.holdId, conflict.field, conflict.existing, conflict.requested], [
        "X",
        "actual",
        String(A),
        "45000"
      ])
      assert.deepStrictEqual(store.snapshot(), after)
      assert.deepStrictEqual(yield* engine.charge(request("X"), A), first)
      assertSettledOnce(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #11: concurrent charges of one id with two amounts charge once; the rest replay or conflict", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const amounts = [A, 45_000, A, 45_000, A, 45_000, A, 45_000]
      const results = yield* Effect.all(amounts.map((amount) => Effect.result(engine.charge(request("X"), amount))), {
        concurrency: "unbounded"
      })
      const charged = store.snapshot().counters["a"]!.usedQuota
      assert.include([A, 45_000], charged)
      assert.strictEqual(store.snapshot().counters["a"]!.requestCount, 1)
      results.forEach((r, i) => {
        if (amounts[i] === charged) {
          assert.strictEqual(r._tag, "Success")
          if (r._tag === "Success") assert.strictEqual(r.success.actual, charged)
        } else {
          assert.strictEqual(r._tag === "Failure" ? r.failure._tag : "Success", "IdempotencyConflict")
        }
      })
      assert.deepStrictEqual(store.snapshot().wallets, { a: W - charged })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})

describe("issue 8 #13: -0 and the safe-integer range (§2.10)", () => {
  it.effect("issue 8 #13: settle(-0) and an estimate of -0 are stored as 0", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const s = yield* engine.open(request("X", { estimate: -0 }))
      assert.isTrue(Object.is(s.hold.estimate, 0), "estimate -0 must be stored as 0")
      assert.isTrue(Object.is((yield* engine.get("X")).estimate, 0))
      const settlement = yield* s.settle(-0)
      assert.isTrue(Object.is(settlement.actual, 0), "settle(-0) must return actual 0")
      assert.isTrue(Object.is((yield* engine.get("X")).settlement?.actual, 0), "settle(-0) must be stored as 0")
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #13: two settles of MAX_SAFE on two holds: the second is QuotaOutOfRange before any write, the hold stays pending", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      // Playground (no token), so the wallet and the account counters are what overflow.
      const h1 = yield* engine.open(request("h1", { playground: true }))
      const h2 = yield* engine.open(request("h2", { playground: true }))
      yield* h1.settle(MAX)
      const before = store.snapshot()
      assert.deepStrictEqual(before.wallets, { a: W - P - MAX })
      const error = yield* expectFailure(h2.settle(MAX), "QuotaOutOfRange")
      assert.deepStrictEqual([error.code, error.field, error.subjectId, error.current, error.change], [
        "billing_quota_out_of_range",
        "wallet.balance",
        "a",
        W - P - MAX,
        -(MAX - P)
      ])
      assert.deepStrictEqual(store.snapshot(), before)
      assert.strictEqual(before.holds["h2"], "pending")
      for (const n of [...Object.values(before.wallets), before.counters["a"]!.usedQuota]) {
        assert.isTrue(Number.isSafeInteger(n), `${n} is not a safe integer`)
      }
      // The hold is still whole: it can be refunded.
      yield* h2.refund
      assert.deepStrictEqual(store.snapshot().wallets, { a: W - MAX })
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #13: each balance is bounded on its own: wallet (playground), token, account usedQuota", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      const engine = yield* Engine
      // wallet only (playground: no token)
      yield* store.createAccount("w", W)
      const w1 = yield* engine.open({
        holdId: "w1",
        accountId: "w",
        estimate: P,
        playground: true,
        preference: "wallet_only"
      })
      const w2 = yield* engine.open({
        holdId: "w2",
        accountId: "w",
        estimate: P,
        playground: true,
        preference: "wallet_only"
      })
      yield* w1.settle(MAX - W)
      const wBefore = store.snapshot()
      const walletError = yield* expectFailure(w2.settle(MAX), "QuotaOutOfRange")
      assert.deepStrictEqual([walletError.field, walletError.subjectId], ["wallet.balance", "w"])
      assert.deepStrictEqual(store.snapshot(), wBefore)

      // account usedQuota: the wallet is topped up between the two charges, so only the counter overflows
      yield* store.createAccount("u", MAX)
      const u1 = yield* engine.open({
        holdId: "u1",
        accountId: "u",
        estimate: 1,
        playground: true,
        preference: "wallet_only"
      })
      yield* u1.settle(MAX)
      yield* store.topUp("u", MAX, "again")
      const u2 = yield* engine.open({
        holdId: "u2",
        accountId: "u",
        estimate: 1,
        playground: true,
        preference: "wallet_only"
      })
      const uBefore = store.snapshot()
      const counterError = yield* expectFailure(u2.settle(2), "QuotaOutOfRange")
      assert.deepStrictEqual([counterError.field, counterError.subjectId, counterError.current, counterError.change], [
        "account.usedQuota",
        "u",
        MAX,
        2
      ])
      assert.deepStrictEqual(store.snapshot(), uBefore)
      assert.strictEqual(uBefore.holds["u2"], "pending")

      // token used: an unlimited token's counters move at settlement
      yield* store.createAccount("k", MAX)
      yield* store.createToken("kt", "k", { unlimited: true })
      const k1 = yield* engine.open({
        holdId: "k1",
        accountId: "k",
        tokenId: "kt",
        estimate: 1,
        preference: "wallet_only"
      })
      yield* k1.settle(MAX)
      yield* store.topUp("k", MAX, "k-again")
      const k2 = yield* engine.open({
        holdId: "k2",
        accountId: "k",
        tokenId: "kt",
        estimate: 1,
        preference: "wallet_only"
      })
      const kBefore = store.snapshot()
      const tokenError = yield* expectFailure(k2.settle(2), "QuotaOutOfRange")
      assert.strictEqual(tokenError.subjectId, "kt")
      assert.include(["token.used", "token.remain"], tokenError.field)
      assert.deepStrictEqual(store.snapshot(), kBefore)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("issue 8 #13: an unlimited subscription's amountUsed never leaves the safe range", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      const engine = yield* Engine
      yield* store.createAccount("s", 0)
      yield* store.createSubscription({ id: "sub", accountId: "s", total: 0, endAt: Number.MAX_SAFE_INTEGER })
      const open = (holdId: string) =>
        engine.open({ holdId, accountId: "s", estimate: 0, playground: true, preference: "subscription_only" })
      const h1 = yield* open("s1")
      const h2 = yield* open("s2")
      yield* h1.settle(MAX - 2)
      const before = store.snapshot()
      assert.deepStrictEqual(before.subscriptions, { sub: { used: MAX - 1, total: 0 } })
      const error = yield* expectFailure(h2.settle(5), "QuotaOutOfRange")
      assert.deepStrictEqual([error.field, error.subjectId, error.current, error.change], [
        "subscription.amountUsed",
        "sub",
        MAX - 1,
        4
      ])
      assert.deepStrictEqual(store.snapshot(), before)
      assert.strictEqual(before.holds["s2"], "pending")
      yield* h2.refund
      assert.deepStrictEqual(store.snapshot().subscriptions, { sub: { used: MAX - 2, total: 0 } })
      // A reservation that would take it out of range is refused the same way, and leaves no hold.
      const full = store.snapshot()
      const reserve = yield* expectFailure(
        engine.open({ holdId: "s3", accountId: "s", estimate: 5, playground: true, preference: "subscription_only" }),
        "QuotaOutOfRange"
      )
      assert.deepStrictEqual([reserve.field, reserve.current, reserve.change], ["subscription.amountUsed", MAX - 2, 5])
      assert.deepStrictEqual(store.snapshot(), full)
      assertAuditClean(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})
