/**
 * Time in the SDK comes from Effect's `Clock` (issue 8, "CI that does not
 * flake"): the low-balance policy's threshold cache expires on the `Clock`, so
 * `TestClock` drives it and no test has to sleep through the 30 s cache. The
 * same holds for the threshold ceiling (issue 10: the settle of an account whose
 * balance is at or above it reads no threshold).
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

      it.effect("issue 10: the ceiling is the largest threshold (at least the default), raised at once by a write through Accounts, re-read after cacheMillis for another process's write", () =>
        Effect.gen(function*() {
          const accounts = yield* Accounts.Accounts
          const client = yield* KnexClient.KnexClient
          const policy = Accounts.makeLowBalance(client, { cacheMillis: 30_000 })
          const ceiling = policy.ceiling!
          // lb-clock (2,000 → 3,000) from the test above may be in the table.
          const before = yield* ceiling
          assert.isAtLeast(before, 1_000)
          yield* accounts.create({ id: "lb-ceiling", lowBalanceThreshold: before + 1 })
          assert.strictEqual(yield* ceiling, before + 1)
          yield* accounts.setLowBalanceThreshold({ accountId: "lb-ceiling", threshold: 50_000 })
          assert.strictEqual(yield* ceiling, 50_000)
          // Another policy over the same client with a higher default: the default counts.
          assert.strictEqual(yield* Accounts.makeLowBalance(client, { defaultThreshold: 70_000 }).ceiling!, 70_000)

          // A write this process did not make (another relay): seen once the cache expires on the Clock.
          yield* client.query(
            "test.otherProcess",
            (db) => db(client.table("accounts")).where({ id: "lb-ceiling" }).update({ low_balance_threshold: 90_000 })
          )
          yield* TestClock.adjust("29999 millis")
          assert.strictEqual(yield* ceiling, 50_000)
          yield* TestClock.adjust("1 millis")
          assert.strictEqual(yield* ceiling, 90_000)
          // Lowered elsewhere: the next read after the bound lowers it too (MAX over the table).
          yield* client.query(
            "test.otherProcess",
            (db) => db(client.table("accounts")).update({ low_balance_threshold: null })
          )
          yield* TestClock.adjust("30 seconds")
          assert.strictEqual(yield* ceiling, 1_000)
        }).pipe(Effect.provide(TestClock.layer())))
    })
  })
}
