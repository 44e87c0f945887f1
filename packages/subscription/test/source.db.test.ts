/**
 * The subscription as a v2 `Source`, called directly (no engine) inside a
 * transaction of the real databases: one subscription per take (soonest expiry
 * with room), the answers (amount / moved, balance after, the row as subject,
 * the period in `ref`), the cap at the plan's total with the plan's overflow
 * rule, and §3.6: a reservation of a closed period never moves today's usage.
 */
import { assert, describe, layer } from "@effect/vitest"
import type { Source } from "@relay-billing/core"
import { KnexClient, KnexSqlStore } from "@relay-billing/knex"
import { Effect, Exit } from "effect"
import { TestClock } from "effect/testing"
import { SubscriptionSource } from "../src/index.js"
import { account, ledgerRows, subscribe, subscriptionBilling, t, targets, used } from "./support.js"

const source = SubscriptionSource.make()
const q = (n: number) => n as Source.TakeRequest["amount"]

/** Runs `f` with the store's executor inside one transaction. */
const tx = <A, E>(f: (sql: ReturnType<typeof KnexSqlStore.make>) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    return yield* Effect.exit(client.transaction(f(KnexSqlStore.make(client))))
  })

const take = (accountId: string, amount: number, mode: Source.TakeMode) =>
  tx((sql) => source.take({ sql, holdId: "h", accountId, subjectId: accountId, amount: q(amount), mode }))

const move = (accountId: string, ref: string | undefined, delta: number, kind: Source.MoveKind) =>
  tx((sql) =>
    source.move({
      sql,
      holdId: "h",
      accountId,
      subjectId: accountId,
      ...(ref !== undefined ? { ref } : {}),
      delta,
      kind
    })
  )

const ok = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (Exit.isSuccess(exit)) return exit.value
  throw new Error(`expected success, got ${String(exit.cause)}`)
}
const tagOf = <A, E>(exit: Exit.Exit<A, E>): string => {
  if (Exit.isSuccess(exit)) return "Success"
  const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
  return failure && failure._tag === "Fail" ? (failure.error as { _tag: string })._tag : "Defect"
}

for (const target of targets) {
  describe(`SubscriptionSource (v2) on ${target.name}`, () => {
    layer(subscriptionBilling(target), { timeout: 60_000 })((it) => {
      it.effect("take: one subscription per take (soonest expiry with room); upTo takes what that one has", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(t("2026-11-01T00:00:00Z"))
          yield* account("sa", 0)
          yield* subscribe("sa-x", "sa", { total: 10_000, durationSeconds: 10 * 86_400 })
          yield* subscribe("sa-y", "sa", { total: 30_000, durationSeconds: 20 * 86_400 })
          // 12,000 does not fit X: Y has room.
          const y = ok(yield* take("sa", 12_000, "exact"))
          assert.deepStrictEqual([y.amount, y.balanceAfter, y.subjectId, JSON.parse(y.ref!)], [12_000, 18_000, "sa-y", [
            ["sa-y", 12_000]
          ]])
          const x = ok(yield* take("sa", 4_000, "exact"))
          assert.deepStrictEqual([x.amount, x.subjectId], [4_000, "sa-x"])
          // upTo: X first (soonest expiry), only what it has; never two subscriptions in one take.
          const split = ok(yield* take("sa", 50_000, "upTo"))
          assert.deepStrictEqual([split.amount, split.subjectId, split.balanceAfter], [6_000, "sa-x", 0])
          assert.deepStrictEqual(ok(yield* take("sa", 50_000, "upTo")).amount, 18_000)
          const none = yield* take("sa", 1, "upTo")
          assert.strictEqual(tagOf(none), "InsufficientFunds")
          assert.strictEqual(tagOf(yield* take("sa", 1, "exact")), "InsufficientFunds")
          // Post-consume: the soonest-expiring one takes it even without room.
          const over = ok(yield* take("sa", 500, "unconditional"))
          assert.deepStrictEqual([over.subjectId, over.balanceAfter], ["sa-x", -500])
          assert.deepStrictEqual([yield* used("sa-x"), yield* used("sa-y")], [10_500, 30_000])
        }))

      it.effect("move: a charge stops at the plan's total and answers the overflow rule; a give-back stops at 0", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(t("2026-11-01T00:00:00Z"))
          yield* account("sb", 0)
          yield* subscribe("sb-s", "sb", { total: 10_000, allowWalletOverflow: false })
          const taken = ok(yield* take("sb", 6_000, "exact"))
          const charged = ok(yield* move("sb", taken.ref, -3_000, "settle"))
          assert.deepStrictEqual(charged, { moved: -3_000, balanceAfter: 1_000, subjectId: "sb-s", overflow: false })
          const capped = ok(yield* move("sb", taken.ref, -5_000, "late_settle"))
          assert.deepStrictEqual([capped.moved, capped.balanceAfter, capped.overflow], [-1_000, 0, false])
          const back = ok(yield* move("sb", taken.ref, 25_000, "refund"))
          assert.deepStrictEqual([back.moved, back.balanceAfter], [10_000, 10_000])
          assert.strictEqual(yield* used("sb-s"), 0)
          assert.deepStrictEqual(ok(yield* move("sb", taken.ref, 0, "settle")).moved, 0)
        }))

      it.effect("§3.6: a reservation of a closed period never moves today's usage", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(t("2026-11-28T23:00:00Z"))
          yield* account("sc", 0)
          yield* subscribe("sc-s", "sc", { total: 100_000, period: "daily" })
          const old = ok(yield* take("sc", 40_000, "exact"))
          assert.strictEqual(JSON.parse(old.ref!)[0][2], t("2026-11-28T00:00:00Z"))
          yield* TestClock.setTime(t("2026-11-29T01:00:00Z"))
          const today = ok(yield* take("sc", 30_000, "exact"))
          assert.strictEqual(yield* used("sc-s"), 30_000)
          // A charge on the old reservation is not carried (the plan allows overflow: the engine sends it on).
          assert.deepStrictEqual(ok(yield* move("sc", old.ref, -5_000, "settle")), {
            moved: 0,
            balanceAfter: 70_000,
            subjectId: "sc-s",
            overflow: true
          })
          // A give-back is answered (the hold's row) and recorded against the reset (an adjust row).
          const back = ok(yield* move("sc", old.ref, 10_000, "refund"))
          assert.deepStrictEqual([back.moved, back.balanceAfter], [10_000, 70_000])
          // A correction of the closed period gives nothing back, and says so.
          assert.strictEqual(ok(yield* move("sc", old.ref, 7_000, "correction")).moved, 0)
          assert.strictEqual(yield* used("sc-s"), 30_000)
          const rows = yield* ledgerRows({ subjectId: "sc-s" })
          assert.deepStrictEqual(rows, [
            "subscription sc-s reset 40000",
            "subscription sc-s adjust -10000",
            "subscription sc-s correction 0"
          ])
          // Today's reservation moves today's usage.
          assert.strictEqual(ok(yield* move("sc", today.ref, 5_000, "settle")).moved, 5_000)
          assert.strictEqual(yield* used("sc-s"), 25_000)
        }))
    })
  })
}
