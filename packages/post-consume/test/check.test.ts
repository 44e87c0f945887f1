/**
 * Issue 8 #9 (§7): the post-consume balance check passes only if a source the
 * preference allows can actually pay the checked amount. A subscription with no
 * room left does not count; a failed check is typed and writes nothing.
 * In-memory store (the knex stores: packages/subscription/test/post-consume.db.test.ts).
 */
import { assert, describe, it } from "@effect/vitest"
import { InMemoryStore } from "@relay-billing/testkit"
import { Effect, Layer } from "effect"
import { PostConsume } from "../src/index.js"

const setup = () => {
  const store = InMemoryStore.make()
  const layer = PostConsume.PostConsume.layer.pipe(Layer.provideMerge(store.billingLayer()))
  return { store, layer }
}

describe("post-consume check (issue 8 #9)", () => {
  it.effect("issue 8 #9: subscription exhausted and wallet 0: the check of 2,000 fails typed, nothing is written, the wallet never goes to -2,000", () => {
    const { layer, store } = setup()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 0)
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 10_000, used: 10_000, endAt: 1e12 })
      const post = yield* PostConsume.PostConsume
      const before = store.snapshot()
      for (const preference of [undefined, "subscription_first", "subscription_only", "wallet_first"]) {
        const e = yield* Effect.flip(post.settler({
          requestId: "r1",
          accountId: "a",
          check: 2_000,
          ...(preference !== undefined ? { preference } : {})
        }))
        assert.strictEqual(e._tag, "InsufficientFunds", `preference ${preference}`)
        if (e._tag === "InsufficientFunds") {
          assert.strictEqual(e.required, 2_000)
          assert.strictEqual(e.available, 0)
        }
      }
      assert.deepStrictEqual(store.snapshot(), before)
      assert.deepStrictEqual(store.snapshot().wallets, { a: 0 })
      assert.deepStrictEqual(store.audit().problems, [])
    }).pipe(Effect.provide(layer))
  })

  it.effect("issue 8 #9: a subscription counts only for what it has left; the wallet may cover what it cannot", () => {
    const { layer, store } = setup()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 0)
      yield* store.createSubscription({ id: "s1", accountId: "a", total: 10_000, used: 9_000, endAt: 1e12 })
      const post = yield* PostConsume.PostConsume
      // 1,000 left: enough for 1,000, not for 1,001
      yield* post.check({ requestId: "r1", accountId: "a", check: 1_000 })
      const e = yield* Effect.flip(post.check({ requestId: "r2", accountId: "a", check: 1_001 }))
      assert.strictEqual(e._tag, "InsufficientFunds")
      if (e._tag === "InsufficientFunds") assert.strictEqual(e.available, 1_000)
      // with 5,000 in the wallet (overflow allowed), subscription_first can pay 2,000; subscription_only cannot
      yield* store.topUp("a", 5_000, "k1")
      yield* post.check({ requestId: "r3", accountId: "a", check: 2_000 })
      const only = yield* Effect.flip(
        post.check({ requestId: "r4", accountId: "a", preference: "subscription_only", check: 2_000 })
      )
      assert.strictEqual(only._tag, "InsufficientFunds")
      // an unlimited subscription (total 0) can always pay
      yield* store.createAccount("u", 0)
      yield* store.createSubscription({ id: "su", accountId: "u", total: 0, used: 50_000, endAt: 1e12 })
      yield* post.check({ requestId: "r5", accountId: "u", preference: "subscription_only", check: 1_000_000 })
      assert.deepStrictEqual(store.audit().problems, [])
    }).pipe(Effect.provide(layer))
  })
})
