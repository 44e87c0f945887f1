import { assert, describe, it } from "@effect/vitest"
import { BillingSettler } from "@relay-billing/core"
import { InMemoryStore } from "@relay-billing/testkit"
import { Effect, Layer } from "effect"
import { PostConsume } from "../src/index.js"

const setup = () => {
  const store = InMemoryStore.make()
  const layer = PostConsume.PostConsume.layer.pipe(Layer.provideMerge(store.billingLayer()))
  return { store, layer }
}

describe("post-consume", () => {
  it.effect("one charge after the work: wallet, token and counters move by A, with ledger rows; no reservation before", () => {
    const { layer, store } = setup()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 100_000)
      yield* store.createToken("t", "a", { remain: 100_000 })
      const post = yield* PostConsume.PostConsume
      const settler = yield* post.settler({
        requestId: "r1",
        accountId: "a",
        tokenId: "t",
        preference: "wallet_only",
        check: 5_000
      })
      assert.strictEqual(settler.preConsumed, 0)
      assert.isFalse(yield* settler.needsRefund)
      assert.deepStrictEqual(store.snapshot().wallets, { a: 100_000 })
      const settlement = yield* BillingSettler.settleBilling(settler, 7_000)
      assert.strictEqual(settlement?.actual, 7_000)
      assert.deepStrictEqual(store.snapshot().wallets, { a: 93_000 })
      assert.deepStrictEqual(store.snapshot().tokens, { t: { remain: 93_000, used: 7_000 } })
      assert.deepStrictEqual(store.snapshot().counters, { a: { usedQuota: 7_000, requestCount: 1 } })
      assert.deepStrictEqual(
        store.entries().filter((e) => e.holdId === "r1").map((e) => [e.sourceId, e.kind, e.amount]),
        [["token", "settle", -7_000], ["wallet", "settle", -7_000]]
      )
      assert.deepStrictEqual(store.audit().problems, [])
    }).pipe(Effect.provide(layer))
  })

  it.effect("idempotent by request id: a repeated charge (even from a new settler) returns the first result and charges once", () => {
    const { layer, store } = setup()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 100_000)
      const post = yield* PostConsume.PostConsume
      const first = yield* (yield* post.settler({ requestId: "r1", accountId: "a", preference: "wallet_only" })).settle(
        3_000
      )
      const again = yield* (yield* post.settler({ requestId: "r1", accountId: "a", preference: "wallet_only" })).settle(
        3_000
      )
      const concurrent = yield* Effect.all(
        Array.from(
          { length: 8 },
          () =>
            Effect.flatMap(
              post.settler({ requestId: "r2", accountId: "a", preference: "wallet_only" }),
              (s) => s.settle(1_000)
            )
        ),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(again, first)
      assert.strictEqual(new Set(concurrent.map((s) => JSON.stringify(s))).size, 1)
      assert.deepStrictEqual(store.snapshot().wallets, { a: 96_000 })
      assert.deepStrictEqual(store.snapshot().counters, { a: { usedQuota: 4_000, requestCount: 2 } })
      const other = yield* Effect.flip(
        (yield* post.settler({ requestId: "r1", accountId: "b", preference: "wallet_only" })).settle(3_000)
      )
      assert.strictEqual(other._tag, "IdempotencyConflict")
      assert.deepStrictEqual(store.audit().problems, [])
    }).pipe(Effect.provide(layer))
  })

  it.effect("the check before the work fails typed and writes nothing; the charge after it is never refused for balance", () => {
    const { layer, store } = setup()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 2_000)
      yield* store.createToken("t", "a", { remain: 500 })
      const post = yield* PostConsume.PostConsume
      const before = store.snapshot()
      const poor = yield* Effect.flip(
        post.settler({ requestId: "r1", accountId: "a", preference: "wallet_only", check: 5_000 })
      )
      assert.strictEqual(poor._tag, "InsufficientFunds")
      const token = yield* Effect.flip(
        post.settler({ requestId: "r1", accountId: "a", tokenId: "t", preference: "wallet_only", check: 1_000 })
      )
      assert.strictEqual(token._tag, "TokenBudgetExceeded")
      const bad = yield* Effect.flip(post.settler({ requestId: "", accountId: "a" }))
      assert.strictEqual(bad._tag, "InvalidInput")
      assert.deepStrictEqual(store.snapshot(), before)
      // Without a check the work runs; its charge goes through even past the balance.
      const settler = yield* post.settler({ requestId: "r2", accountId: "a", tokenId: "t", preference: "wallet_only" })
      yield* settler.settle(3_000)
      assert.deepStrictEqual(store.snapshot().wallets, { a: -1_000 })
      assert.deepStrictEqual(store.snapshot().tokens, { t: { remain: -2_500, used: 3_000 } })
      assert.deepStrictEqual(store.audit().problems, [])
    }).pipe(Effect.provide(layer))
  })

  it.effect("the preference picks the source: a subscription pays first, the wallet when there is none", () => {
    const { layer, store } = setup()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 50_000)
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 10_000, endAt: 1e12 })
      const post = yield* PostConsume.PostConsume
      yield* (yield* post.settler({ requestId: "r1", accountId: "a" })).settle(4_000)
      assert.deepStrictEqual(store.snapshot().subscriptions, { s1: { used: 4_000, total: 10_000 } })
      assert.deepStrictEqual(store.snapshot().wallets, { a: 50_000 })
      // Above the subscription's total: the overflow goes to the wallet (allowed by default).
      yield* (yield* post.settler({ requestId: "r2", accountId: "a" })).settle(9_000)
      assert.deepStrictEqual(store.snapshot().subscriptions, { s1: { used: 10_000, total: 10_000 } })
      assert.deepStrictEqual(store.snapshot().wallets, { a: 47_000 })
      const noSub = yield* Effect.flip(
        (yield* post.settler({ requestId: "r3", accountId: "b", preference: "subscription_only" })).settle(1)
      )
      assert.strictEqual(noSub._tag, "InsufficientFunds")
      assert.deepStrictEqual(store.audit().problems, [])
    }).pipe(Effect.provide(layer))
  })

  it.effect("refund of a post-consume settler moves nothing", () => {
    const { layer, store } = setup()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 10_000)
      const post = yield* PostConsume.PostConsume
      const settler = yield* post.settler({ requestId: "r1", accountId: "a", preference: "wallet_only" })
      assert.strictEqual((yield* settler.refund).refunded, 0)
      yield* settler.settle(1_000)
      const after = yield* settler.refund
      assert.deepStrictEqual([after.status, after.refunded], ["settled", 0])
      assert.deepStrictEqual(store.snapshot().wallets, { a: 9_000 })
    }).pipe(Effect.provide(layer))
  })
})
