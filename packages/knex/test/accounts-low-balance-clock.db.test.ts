/**
 * Time in the SDK comes from Effect's `Clock` (issue 8, "CI that does not
 * flake"): the low-balance policy's threshold cache expires on the `Clock`, so
 * `TestClock` drives it and no test has to sleep through the 30 s cache.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Accounts, KnexBilling, KnexClient, Migrations, TestDatabase } from "../src/index.js"

const database = (target: TestDatabase.Target) =>
  Accounts.Accounts.layer.pipe(
    Layer.provideMerge(Layer.effectDiscard(Migrations.run([KnexBilling.migrations, Accounts.migrations]))),
    Layer.provideMerge(TestDatabase.layer(target))
  )

for (const target of TestDatabase.targets()) {
  describe(`Accounts low balance on ${target.name}`, () => {
    layer(database(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 CI: the threshold cache expires on Effect's Clock (TestClock), not the wall clock", () =>
        Effect.gen(function*() {
          const accounts = yield* Accounts.Accounts
          const policy = Accounts.makeLowBalance(yield* KnexClient.KnexClient, { cacheMillis: 30_000 })
          yield* accounts.create({ id: "lb-clock", lowBalanceThreshold: 2_000 })
          assert.strictEqual(yield* policy.threshold("lb-clock"), 2_000)

          yield* accounts.setLowBalanceThreshold({ accountId: "lb-clock", threshold: 3_000 })
          // Within the cache window (by the Clock) the cached value is reused…
          yield* TestClock.adjust("29999 millis")
          assert.strictEqual(yield* policy.threshold("lb-clock"), 2_000)
          // …and once the Clock has moved past it, the new threshold is read.
          yield* TestClock.adjust("1 millis")
          assert.strictEqual(yield* policy.threshold("lb-clock"), 3_000)
        }).pipe(Effect.provide(TestClock.layer())))
    })
  })
}
