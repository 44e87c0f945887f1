/**
 * The knex journal's intent records (issue 8 #4) on every database: an upsert
 * for opens, first-wins inserts for resolutions, a compare-and-set finish, due
 * intents oldest first, and a write outside a transaction that survives the
 * rollback of a later one.
 */
import { assert, describe, layer } from "@effect/vitest"
import { HoldJournal } from "@relay-billing/core"
import type { HoldIntent } from "@relay-billing/core"
import { Effect, Exit, Layer } from "effect"
import { KnexBilling, Migrations, TestDatabase } from "../src/index.js"

const database = (target: TestDatabase.Target) =>
  KnexBilling.layer.pipe(
    Layer.provideMerge(Layer.effectDiscard(Migrations.run([KnexBilling.migrations]))),
    Layer.provideMerge(TestDatabase.layer(target))
  )

const intent = (holdId: string, overrides: Partial<HoldIntent.HoldIntent> = {}): HoldIntent.HoldIntent => ({
  holdId,
  phase: "resolve",
  step: "settle",
  accountId: "acct",
  tokenId: "tok",
  amount: 12_000 as never,
  targets: [{ kind: "funding", sourceId: "credits" }],
  status: "pending",
  createdAt: 1,
  dueAt: 1,
  ...overrides
})

for (const target of TestDatabase.targets()) {
  describe(`hold intents on ${target.name}`, () => {
    layer(database(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #4: the first recorded resolution wins; the settle amount cannot be replaced", () =>
        Effect.gen(function*() {
          const journal = yield* HoldJournal.HoldJournal
          const first = yield* journal.insertIntent(intent("i-1"))
          assert.strictEqual(first.amount, 12_000)
          const second = yield* journal.insertIntent(intent("i-1", { amount: 45_000 as never }))
          assert.deepStrictEqual(second, intent("i-1"))
          const refund = yield* journal.insertIntent(intent("i-1", { step: "refund" }))
          assert.strictEqual(refund.step, "settle")
        }))

      it.effect("issue 8 #4: finishIntent is a compare-and-set; putIntent replaces (an open starting again)", () =>
        Effect.gen(function*() {
          const journal = yield* HoldJournal.HoldJournal
          yield* journal.putIntent(intent("i-2", { phase: "open", step: "reserve", dueAt: 100 }))
          assert.isTrue(yield* journal.finishIntent("i-2", "open", "committed"))
          assert.isFalse(yield* journal.finishIntent("i-2", "open", "released"))
          const done = yield* journal.getIntent("i-2", "open")
          assert.deepStrictEqual([done?.status, done?.outcome], ["done", "committed"])
          yield* journal.putIntent(intent("i-2", { phase: "open", step: "reserve", dueAt: 200, amount: 7 as never }))
          const again = yield* journal.getIntent("i-2", "open")
          assert.deepStrictEqual([again?.status, again?.amount, again?.dueAt, again?.outcome], [
            "pending",
            7,
            200,
            undefined
          ])
          assert.isUndefined(yield* journal.getIntent("i-2", "resolve"))
        }))

      it.effect("issue 8 #4: dueIntents lists pending intents due by now, oldest first; an intent written before a failed transaction survives it", () =>
        Effect.gen(function*() {
          const journal = yield* HoldJournal.HoldJournal
          yield* journal.putIntent(intent("i-3", { phase: "open", step: "reserve", dueAt: 5_000 }))
          yield* journal.insertIntent(intent("i-4", { dueAt: 4_000 }))
          yield* journal.insertIntent(intent("i-5", { dueAt: 9_000 }))
          yield* journal.insertIntent(intent("i-6", { dueAt: 3_000 }))
          yield* journal.finishIntent("i-6", "resolve", "settled")
          const exit = yield* Effect.exit(journal.transaction(
            Effect.andThen(journal.finishIntent("i-4", "resolve", "settled"), Effect.fail("boom"))
          ))
          assert.isTrue(Exit.isFailure(exit))
          const due = (yield* journal.dueIntents(6_000, 100)).filter((d) =>
            ["i-3", "i-4", "i-5", "i-6"].includes(d.holdId)
          )
          assert.deepStrictEqual(due, [{ holdId: "i-4", phase: "resolve" }, { holdId: "i-3", phase: "open" }])
        }))
    })
  })
}
