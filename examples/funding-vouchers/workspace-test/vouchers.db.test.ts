/**
 * The vouchers source on every database target, driven directly (each call in a
 * transaction, as the engine runs it): which pack a take draws on, the three take
 * modes, expiry by the Effect clock, capped charges, and typed input errors.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { SqlStore } from "@relay-billing/core"
import type { Source } from "@relay-billing/core"
import { KnexClient, SourceMigrations } from "@relay-billing/knex"
import { Cause, Effect, Exit, Option, Schema } from "effect"
import { TestClock } from "effect/testing"
import { addPack, make, plugin } from "../src/index.js"
import { sqlStore, targets } from "./support.js"

const vouchers = make({ id: "vouchers", table: "vouchers" })

/** An expiry no test's clock reaches (the tests of one layer share its TestClock). */
const DAY = 86_400_000

const migrate = SourceMigrations.run([vouchers])

/** Runs `f` with the store's executor inside one transaction. */
const inTransaction = <A, E>(f: (sql: SqlStore.SqlStore["Service"]) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const sql = yield* SqlStore.SqlStore
    const client = yield* KnexClient.KnexClient
    return yield* client.transaction(f(sql))
  })

const take = (accountId: string, amount: number, mode: Source.TakeMode = "exact") =>
  inTransaction((sql) =>
    vouchers.take({ sql, holdId: `h-${accountId}`, accountId, subjectId: accountId, amount: amount as never, mode })
  )

const move = (accountId: string, ref: string, delta: number) =>
  inTransaction((sql) =>
    vouchers.move({ sql, holdId: `h-${accountId}`, accountId, subjectId: accountId, ref, delta, kind: "settle" })
  )

/** Runs `f` with the store's executor (outside a transaction). */
const withSql = <A, E>(f: (sql: SqlStore.SqlStore["Service"]) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    return yield* f(yield* SqlStore.SqlStore)
  })

const pack = (accountId: string, total: number, expiresAt: number) =>
  withSql((sql) => addPack(sql, { accountId, total, expiresAt }))

const balance = (accountId: string) => withSql((sql) => vouchers.balance!(sql, accountId))

/** The pack ids of `accountId`, soonest-expiring first. */
const packs = (accountId: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlStore.SqlStore
    const result = yield* sql.execute(
      "test.packs",
      `SELECT id, total, used FROM ${sql.table("vouchers")} WHERE account_id = ? ORDER BY expires_at, id`,
      [accountId]
    )
    return result.rows.map((r) => ({ id: String(r["id"]), total: Number(r["total"]), used: Number(r["used"]) }))
  })

for (const target of targets) {
  describe(`vouchers source on ${target.name}`, () => {
    layer(sqlStore(target), { timeout: 60_000 })((it) => {
      it.effect("migrations create the table (through the knex runner), once", () =>
        Effect.gen(function*() {
          yield* migrate
          yield* migrate
        }))

      it.effect("an exact take draws on the soonest-expiring pack that has room for all of it", () =>
        Effect.gen(function*() {
          yield* pack("a1", 100, DAY + 5_000)
          yield* pack("a1", 500, DAY + 9_000)
          yield* pack("a1", 40, DAY + 2_000)
          const [small, soon, late] = yield* packs("a1")
          const first = yield* take("a1", 30)
          assert.deepStrictEqual(first, { amount: 30, balanceAfter: 10, ref: small!.id })
          const second = yield* take("a1", 80)
          assert.deepStrictEqual(second, { amount: 80, balanceAfter: 20, ref: soon!.id })
          const third = yield* take("a1", 300)
          assert.deepStrictEqual(third, { amount: 300, balanceAfter: 200, ref: late!.id })
          assert.strictEqual(yield* balance("a1"), 10 + 20 + 200)
        }))

      it.effect("an exact shortfall fails with InsufficientFunds (the fullest pack's room) and writes nothing", () =>
        Effect.gen(function*() {
          yield* pack("a2", 100, DAY + 5_000)
          yield* pack("a2", 60, DAY + 6_000)
          const exit = yield* Effect.exit(take("a2", 120))
          assert.isTrue(Exit.isFailure(exit))
          const error = yield* Effect.flip(take("a2", 120))
          assert.strictEqual(error._tag, "InsufficientFunds")
          assert.deepInclude(error, { sourceId: "vouchers", accountId: "a2", required: 120, available: 100 })
          assert.deepStrictEqual((yield* packs("a2")).map((p) => p.used), [0, 0])
          const none = yield* Effect.flip(take("nobody", 1))
          assert.deepInclude(none, { _tag: "InsufficientFunds", available: 0 })
        }))

      it.effect("upTo takes what the soonest-expiring pack with room has; unconditional takes all of it", () =>
        Effect.gen(function*() {
          yield* pack("a3", 50, DAY + 5_000)
          yield* pack("a3", 500, DAY + 6_000)
          const [first, second] = yield* packs("a3")
          assert.deepStrictEqual(yield* take("a3", 80, "upTo"), { amount: 50, balanceAfter: 0, ref: first!.id })
          assert.deepStrictEqual(yield* take("a3", 80, "upTo"), { amount: 80, balanceAfter: 420, ref: second!.id })
          // post-consume: the work is done, the pack may go below zero
          assert.deepStrictEqual(yield* take("a3", 1_000, "unconditional"), {
            amount: 1_000,
            balanceAfter: -580,
            ref: second!.id
          })
          assert.strictEqual(yield* balance("a3"), 0)
          const error = yield* Effect.flip(take("a3", 1, "upTo"))
          assert.strictEqual(error._tag, "InsufficientFunds")
          const unconditional = yield* Effect.flip(take("a3", 1, "unconditional"))
          assert.strictEqual(unconditional._tag, "InsufficientFunds")
        }))

      it.effect("an expired pack is never drawn on (time from the Effect clock)", () =>
        Effect.gen(function*() {
          yield* TestClock.setTime(10_000)
          yield* pack("a4", 100, 11_000)
          yield* pack("a4", 300, 20_000)
          const [soon, late] = yield* packs("a4")
          assert.strictEqual((yield* take("a4", 10)).ref, soon!.id)
          assert.strictEqual(yield* balance("a4"), 90 + 300)
          yield* TestClock.setTime(11_000)
          assert.strictEqual(yield* balance("a4"), 300)
          assert.strictEqual((yield* take("a4", 10)).ref, late!.id)
          yield* TestClock.setTime(20_000)
          assert.strictEqual(yield* balance("a4"), 0)
          const error = yield* Effect.flip(take("a4", 1, "upTo"))
          assert.deepInclude(error, { _tag: "InsufficientFunds", available: 0 })
        }))

      it.effect("concurrent takes never overdraw a pack: exactly as many succeed as fit", () =>
        Effect.gen(function*() {
          yield* pack("a7", 1_000, DAY)
          const exits = yield* Effect.forEach(
            Array.from({ length: 16 }, () => take("a7", 100)),
            (t) => Effect.exit(t),
            { concurrency: "unbounded" }
          )
          const won = exits.filter(Exit.isSuccess)
          assert.strictEqual(won.length, 10)
          for (const exit of exits) {
            if (Exit.isFailure(exit)) {
              assert.strictEqual(
                Cause.findErrorOption(exit.cause).pipe(Option.map((e) => e._tag), Option.getOrUndefined),
                "InsufficientFunds"
              )
            }
          }
          assert.deepStrictEqual((yield* packs("a7")).map((p) => p.used), [1_000])
          assert.strictEqual(yield* balance("a7"), 0)
        }))

      it.effect("a move by ref charges (capped at what the pack has) and gives back", () =>
        Effect.gen(function*() {
          yield* pack("a5", 100, DAY)
          const { ref } = yield* take("a5", 30)
          assert.deepStrictEqual(yield* move("a5", ref!, -20), { moved: -20, balanceAfter: 50, overflow: true })
          assert.deepStrictEqual(yield* move("a5", ref!, -80), { moved: -50, balanceAfter: 0, overflow: true })
          assert.deepStrictEqual(yield* move("a5", ref!, -5), { moved: 0, balanceAfter: 0, overflow: true })
          assert.deepStrictEqual(yield* move("a5", ref!, 70), { moved: 70, balanceAfter: 70, overflow: true })
          assert.deepStrictEqual((yield* packs("a5")).map((p) => p.used), [30])
          // a give-back to an overdrawn pack is never capped
          yield* take("a5", 200, "unconditional")
          assert.deepStrictEqual(yield* move("a5", ref!, 150), { moved: 150, balanceAfter: 20, overflow: true })
        }))

      it.effect("addPack refuses a bad total or expiry with InvalidInput naming the field and value", () =>
        Effect.gen(function*() {
          for (
            const [input, field, value] of [
              [{ accountId: "a6", total: 0, expiresAt: 1 }, "total", "0"],
              [{ accountId: "a6", total: 1.5, expiresAt: 1 }, "total", "1.5"],
              [{ accountId: "a6", total: 10, expiresAt: -1 }, "expiresAt", "-1"]
            ] as const
          ) {
            const error = yield* Effect.flip(withSql((sql) => addPack(sql, input)))
            assert.deepInclude(error, { _tag: "InvalidInput", field, value })
          }
          assert.deepStrictEqual(yield* packs("a6"), [])
        }))
    })
  })
}

describe("plugin options", () => {
  it("default to id and table \"vouchers\" and refuse a table that is not a plain SQL name", () => {
    const decode = Schema.decodeUnknownExit(plugin.options as Schema.Decoder<{ id: string; table: string }>)
    assert.deepStrictEqual(decode({}), Exit.succeed({ id: "vouchers", table: "vouchers" }))
    assert.deepStrictEqual(decode({ table: "packs", id: "promo" }), Exit.succeed({ id: "promo", table: "packs" }))
    assert.isTrue(Exit.isFailure(decode({ table: "vouchers; drop table x" })))
    assert.isTrue(Exit.isFailure(decode({ id: 7 })))
  })
})
