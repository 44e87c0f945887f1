/**
 * Issue 8 #12 (§7): the in-memory low-balance rate limit (at most 2 warnings
 * per account and source per 10 minutes) belongs to one store, not to the
 * process: two stores with the same account id each warn twice.
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingSession, LowBalance } from "@relay-billing/core"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { InMemoryStore } from "../src/index.js"
import { capturingEvents } from "./fixtures.js"

const NOW = Date.parse("2026-11-28T09:00:00Z")

/** Five settles of 200 from a wallet of 1,500 (the last three end below 1,000); returns how many LowBalance events the store's stack published. */
const warnings = (store: InMemoryStore.InMemoryStore, prefix: string) => {
  const captured = capturingEvents()
  return Effect.gen(function*() {
    yield* store.createAccount("a", 1_500)
    const billing = yield* BillingSession.BillingSession
    for (let i = 0; i < 5; i++) {
      const s = yield* billing.open({
        holdId: `${prefix}-${i}`,
        accountId: "a",
        estimate: 100,
        preference: "wallet_only"
      })
      yield* s.settle(200)
    }
    return captured.events.filter((e) => e._tag === "LowBalance").length
  }).pipe(Effect.provide(store.billingLayer().pipe(Layer.provide(captured.layer))))
}

describe("in-memory low-balance rate limit (issue 8 #12)", () => {
  it.effect("issue 8 #12: two stores with the same account id each publish 2 warnings: [2, 2], not [2, 0]", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(NOW)
      const first = InMemoryStore.make()
      const second = InMemoryStore.make()
      const counts = [yield* warnings(first, "x"), yield* warnings(second, "y")]
      assert.deepStrictEqual(counts, [2, 2])
      assert.deepStrictEqual(first.audit().problems, [])
      assert.deepStrictEqual(second.audit().problems, [])
    }))

  it.effect("issue 8 #12: within one store the limit still holds across billing stacks: 2 in 10 minutes, 2 more after the window", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(NOW)
      const store = InMemoryStore.make()
      const captured = capturingEvents()
      const stack = () => store.billingLayer().pipe(Layer.provide(captured.layer))
      const settle = (id: string) =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          yield* (yield* billing.open({ holdId: id, accountId: "a", estimate: 100, preference: "wallet_only" })).settle(
            100
          )
        }).pipe(Effect.provide(stack()))
      yield* store.createAccount("a", 1_000)
      for (const id of ["h1", "h2", "h3"]) yield* settle(id)
      assert.strictEqual(captured.events.filter((e) => e._tag === "LowBalance").length, 2)
      yield* TestClock.adjust(LowBalance.windowMillis)
      for (const id of ["h4", "h5", "h6"]) yield* settle(id)
      assert.strictEqual(captured.events.filter((e) => e._tag === "LowBalance").length, 4)
      assert.deepStrictEqual(store.audit().problems, [])
    }))

  it.effect("a store takes its own policy (threshold) as an option", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(NOW)
      const store = InMemoryStore.make({ lowBalance: LowBalance.inMemory({ threshold: 2_500 }) })
      assert.strictEqual(yield* warnings(store, "z"), 2)
      const quiet = InMemoryStore.make({ lowBalance: LowBalance.inMemory({ threshold: 0 }) })
      assert.strictEqual(yield* warnings(quiet, "q"), 0)
    }))

  it.effect("issue 10: a policy's ceiling spares the threshold read while the paying balance is at or above it; below it the warnings are unchanged", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(NOW)
      const base = LowBalance.inMemory()
      let thresholdReads = 0
      let ceilingReads = 0
      const counting: LowBalance.Policy = {
        threshold: (accountId) => Effect.suspend(() => (thresholdReads++, base.threshold(accountId))),
        claim: base.claim,
        ceiling: Effect.sync(() => (ceilingReads++, LowBalance.defaultThreshold))
      }
      // Balances after the five settles: 1,300, 1,100 (at or above the ceiling: no threshold read),
      // 900, 700, 500 (read; the first two warn, the third is rate-limited).
      assert.strictEqual(yield* warnings(InMemoryStore.make({ lowBalance: counting }), "c"), 2)
      assert.strictEqual(ceilingReads, 5)
      assert.strictEqual(thresholdReads, 3)
      // A ceiling of 1,300 (the shared rate limit's window passed first): the balance equal to it
      // is not read; 1,100 is (and does not warn); 900 and 700 warn; 500 is rate-limited.
      yield* TestClock.adjust(LowBalance.windowMillis)
      thresholdReads = 0
      const exact = InMemoryStore.make({ lowBalance: { ...counting, ceiling: Effect.succeed(1_300) } })
      assert.strictEqual(yield* warnings(exact, "e"), 2)
      assert.strictEqual(thresholdReads, 4)
    }))
})
