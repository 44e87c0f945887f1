/**
 * The wallet and the token budget as v2 `Source` movers, against the real
 * databases: each take and move is one conditional statement (two on MySQL,
 * which has no RETURNING), answers what it moved and the balance after, fails
 * typed with nothing written, and keeps no hold ids.
 */
import { assert, describe, layer } from "@effect/vitest"
import type { Source } from "@relay-billing/core"
import { KnexClient, KnexSqlStore } from "@relay-billing/knex"
import { Effect, Exit } from "effect"
import fc from "fast-check"
import { TokenBudget, WalletAdmin, WalletSource } from "../src/index.js"
import { migratedClient, targets } from "./support.js"

const MAX = Number.MAX_SAFE_INTEGER
const MIN = Number.MIN_SAFE_INTEGER

/** Runs `f` with the store's executor inside one transaction, counting the statements it sent. */
const inTransaction = <A, E>(f: (sql: ReturnType<typeof KnexSqlStore.make>) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const sql = KnexSqlStore.make(client)
    let statements = 0
    const count = () => {
      statements++
    }
    client.knex.on("query", count)
    const result = yield* Effect.exit(client.transaction(f(sql)))
    client.knex.off("query", count)
    // BEGIN and COMMIT/ROLLBACK are not counted by knex's query event on every driver: count ours only.
    return { result, statements: statements - begins(client.dialect) }
  })

/**
 * knex emits a query event for BEGIN and COMMIT/ROLLBACK of a transaction, and
 * on MySQL one more for its isolation level (READ COMMITTED, see KnexClient).
 */
const begins = (dialect: string) => (dialect === "mysql" ? 3 : 2)

const balance = (id: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const row = yield* client.query("t.balance", (db) => db(client.table("accounts")).where({ id }).first("balance"))
    return row ? Number(row.balance) : undefined
  })

const token = (id: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const row = yield* client.query("t.token", (db) => db(client.table("tokens")).where({ id }).first("remain", "used"))
    return row ? [Number(row.remain), Number(row.used)] : undefined
  })

const setBalance = (id: string, value: number) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    yield* client.query("t.set", (db) => db(client.table("accounts")).where({ id }).update({ balance: value }))
  })

const account = (id: string, amount: number) =>
  Effect.gen(function*() {
    const admin = WalletAdmin.make(yield* KnexClient.KnexClient)
    yield* admin.createAccount({ id, balance: amount })
  })

const take = (
  source: Source.Source,
  req: Omit<Source.TakeRequest, "sql" | "holdId" | "subjectId"> & { subjectId?: string }
) => inTransaction((sql) => source.take({ holdId: "h", subjectId: req.accountId, ...req, sql }))

const move = (source: Source.Source, req: Omit<Source.MoveRequest, "sql" | "holdId">) =>
  inTransaction((sql) => source.move({ holdId: "h", ...req, sql }))

const ok = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (Exit.isSuccess(exit)) return exit.value
  throw new Error(`expected success, got ${String(exit.cause)}`)
}
const tagOf = <A, E>(exit: Exit.Exit<A, E>): string => {
  if (Exit.isSuccess(exit)) return "Success"
  const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
  return failure && failure._tag === "Fail" ? (failure.error as { _tag: string })._tag : "Defect"
}
const errorOf = <A, E>(exit: Exit.Exit<A, E>): Record<string, unknown> => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
  return (failure && failure._tag === "Fail" ? failure.error : {}) as Record<string, unknown>
}

const q = (n: number) => n as Source.TakeRequest["amount"]

for (const target of targets) {
  // One statement where the dialect has RETURNING, the UPDATE and a read of the row on MySQL.
  const one = target.name === "mysql" ? 2 : 1

  describe(`WalletSource (v2) on ${target.name}`, () => {
    layer(migratedClient(target), { timeout: 60_000 })((it) => {
      const wallet = WalletSource.make()
      const floored = WalletSource.make({ id: "wallet", floorAtZero: true })

      it.effect("exact take: one conditional statement; a shortfall is InsufficientFunds and nothing changes", () =>
        Effect.gen(function*() {
          yield* account("w1", 1_000)
          const taken = yield* take(wallet, { accountId: "w1", amount: q(300), mode: "exact" })
          assert.deepStrictEqual(ok(taken.result), { amount: 300, balanceAfter: 700 })
          assert.strictEqual(taken.statements, one)
          const short = yield* take(wallet, { accountId: "w1", amount: q(800), mode: "exact" })
          assert.strictEqual(tagOf(short.result), "InsufficientFunds")
          assert.deepStrictEqual(
            [errorOf(short.result)["required"], errorOf(short.result)["available"], errorOf(short.result)["sourceId"]],
            [800, 700, "wallet"]
          )
          assert.strictEqual(yield* balance("w1"), 700)
          // A balance ≤ 0 is always insufficient (§2.3), even for 0.
          yield* setBalance("w1", 0)
          assert.strictEqual(
            tagOf((yield* take(wallet, { accountId: "w1", amount: q(0), mode: "exact" })).result),
            "InsufficientFunds"
          )
          // Another account's wallet, or no account: nothing available.
          const other = yield* take(wallet, { accountId: "w1", subjectId: "w2", amount: q(1), mode: "exact" })
          assert.deepStrictEqual([tagOf(other.result), errorOf(other.result)["available"]], ["InsufficientFunds", 0])
          const none = yield* take(wallet, { accountId: "nobody", amount: q(1), mode: "exact" })
          assert.deepStrictEqual([tagOf(none.result), errorOf(none.result)["available"]], ["InsufficientFunds", 0])
        }))

      it.effect("upTo (split): takes what the wallet has, at most the amount; nothing is a shortfall", () =>
        Effect.gen(function*() {
          yield* account("w3", 700)
          assert.deepStrictEqual(
            ok((yield* take(wallet, { accountId: "w3", amount: q(300), mode: "upTo" })).result),
            { amount: 300, balanceAfter: 400 }
          )
          assert.deepStrictEqual(
            ok((yield* take(wallet, { accountId: "w3", amount: q(1_000), mode: "upTo" })).result),
            { amount: 400, balanceAfter: 0 }
          )
          const empty = yield* take(wallet, { accountId: "w3", amount: q(10), mode: "upTo" })
          assert.deepStrictEqual([tagOf(empty.result), errorOf(empty.result)["available"]], ["InsufficientFunds", 0])
          assert.strictEqual(yield* balance("w3"), 0)
        }))

      it.effect("unconditional (post-consume): takes with no balance condition, bounded by ±(2^53−1)", () =>
        Effect.gen(function*() {
          yield* account("w4", 0)
          const taken = yield* take(wallet, { accountId: "w4", amount: q(500), mode: "unconditional" })
          assert.deepStrictEqual(ok(taken.result), { amount: 500, balanceAfter: -500 })
          assert.strictEqual(taken.statements, one)
          yield* setBalance("w4", MIN + 10)
          const refused = yield* take(wallet, { accountId: "w4", amount: q(11), mode: "unconditional" })
          assert.deepStrictEqual([tagOf(refused.result), errorOf(refused.result)["field"]], [
            "QuotaOutOfRange",
            "wallet.balance"
          ])
          assert.strictEqual(yield* balance("w4"), MIN + 10)
        }))

      it.effect("move: one statement; charges go below zero by default; out of range is QuotaOutOfRange, nothing written", () =>
        Effect.gen(function*() {
          yield* account("w5", 100)
          const charged = yield* move(wallet, { accountId: "w5", subjectId: "w5", delta: -250, kind: "settle" })
          assert.deepStrictEqual(ok(charged.result), { moved: -250, balanceAfter: -150 })
          assert.strictEqual(charged.statements, one)
          assert.deepStrictEqual(
            ok((yield* move(wallet, { accountId: "w5", subjectId: "w5", delta: 400, kind: "refund" })).result),
            { moved: 400, balanceAfter: 250 }
          )
          assert.deepStrictEqual(
            ok((yield* move(wallet, { accountId: "w5", subjectId: "w5", delta: 0, kind: "settle" })).result),
            { moved: 0, balanceAfter: 250 }
          )
          yield* setBalance("w5", MAX - 5)
          const over = yield* move(wallet, { accountId: "w5", subjectId: "w5", delta: 10, kind: "correction" })
          assert.deepStrictEqual([tagOf(over.result), errorOf(over.result)["field"]], [
            "QuotaOutOfRange",
            "wallet.balance"
          ])
          assert.strictEqual(yield* balance("w5"), MAX - 5)
          // No such account: nothing moved.
          assert.deepStrictEqual(
            ok((yield* move(wallet, { accountId: "x", subjectId: "x", delta: -5, kind: "settle" })).result),
            { moved: 0, balanceAfter: 0 }
          )
        }))

      it.effect("floorAtZero: a settle or late charge stops at zero and answers what it moved; other kinds are not floored", () =>
        Effect.gen(function*() {
          yield* account("w6", 50)
          assert.deepStrictEqual(
            ok((yield* move(floored, { accountId: "w6", subjectId: "w6", delta: -200, kind: "settle" })).result),
            { moved: -50, balanceAfter: 0 }
          )
          assert.deepStrictEqual(
            ok((yield* move(floored, { accountId: "w6", subjectId: "w6", delta: -20, kind: "late_settle" })).result),
            { moved: 0, balanceAfter: 0 }
          )
          yield* setBalance("w6", 500)
          assert.deepStrictEqual(
            ok((yield* move(floored, { accountId: "w6", subjectId: "w6", delta: -200, kind: "settle" })).result),
            { moved: -200, balanceAfter: 300 }
          )
          yield* setBalance("w6", -10)
          assert.deepStrictEqual(
            ok((yield* move(floored, { accountId: "w6", subjectId: "w6", delta: -5, kind: "settle" })).result),
            { moved: 0, balanceAfter: -10 }
          )
          assert.deepStrictEqual(
            ok((yield* move(floored, { accountId: "w6", subjectId: "w6", delta: -5, kind: "overflow" })).result),
            { moved: -5, balanceAfter: -15 }
          )
        }))

      it.effect("concurrent split takes never take more than the balance, and never below zero", () =>
        Effect.gen(function*() {
          yield* account("w8", 1_050)
          const results = yield* Effect.all(
            Array.from({ length: 16 }, () => take(wallet, { accountId: "w8", amount: q(100), mode: "upTo" })),
            { concurrency: "unbounded" }
          )
          const taken = results.flatMap((r) => (Exit.isSuccess(r.result) ? [r.result.value.amount] : []))
          assert.strictEqual(taken.reduce((a, b) => a + b, 0), 1_050)
          assert.deepStrictEqual([...taken].sort((a, b) => a - b)[0], 50)
          assert.strictEqual(results.filter((r) => tagOf(r.result) === "InsufficientFunds").length, 16 - taken.length)
          assert.strictEqual(yield* balance("w8"), 0)
        }))

      it.effect("a take inside a transaction that rolls back leaves the balance as it was", () =>
        Effect.gen(function*() {
          yield* account("w7", 1_000)
          const client = yield* KnexClient.KnexClient
          const sql = KnexSqlStore.make(client)
          const exit = yield* Effect.exit(client.transaction(Effect.gen(function*() {
            const t = yield* wallet.take({
              sql,
              holdId: "h",
              accountId: "w7",
              subjectId: "w7",
              amount: q(600),
              mode: "exact"
            })
            assert.strictEqual(t.balanceAfter, 400)
            return yield* Effect.fail("later step failed" as const)
          })))
          assert.isTrue(Exit.isFailure(exit))
          assert.strictEqual(yield* balance("w7"), 1_000)
          assert.strictEqual(yield* wallet.balance!(sql, "w7"), 1_000)
        }))

      it.effect("property: the balance column is always the opening balance plus every answer", () =>
        Effect.gen(function*() {
          const op = fc.oneof(
            fc.record({
              t: fc.constant("take" as const),
              amount: fc.integer({ min: 0, max: 2_000 }),
              mode: fc.constantFrom("exact", "upTo", "unconditional") as fc.Arbitrary<Source.TakeMode>
            }),
            fc.record({
              t: fc.constant("move" as const),
              delta: fc.integer({ min: -2_000, max: 2_000 }),
              floor: fc.boolean()
            })
          )
          let run = 0
          const context = yield* Effect.context<KnexClient.KnexClient>()
          yield* Effect.promise(() =>
            fc.assert(
              fc.asyncProperty(fc.integer({ min: -500, max: 3_000 }), fc.array(op, { maxLength: 12 }), (opening, ops) =>
                Effect.runPromise(
                  Effect.gen(function*() {
                    const id = `wp-${run++}`
                    yield* account(id, 0)
                    yield* setBalance(id, opening)
                    let expected = opening
                    for (const o of ops) {
                      if (o.t === "take") {
                        const r = (yield* take(wallet, { accountId: id, amount: q(o.amount), mode: o.mode })).result
                        if (Exit.isSuccess(r)) {
                          expected -= r.value.amount
                          assert.strictEqual(r.value.balanceAfter, expected)
                          if (o.mode === "exact") {
                            assert.isAtLeast(expected, 0)
                          }
                          if (o.mode === "upTo") {
                            assert.isTrue(r.value.amount > 0 && r.value.amount <= o.amount)
                          }
                        } else {
                          assert.strictEqual(tagOf(r), "InsufficientFunds")
                        }
                      } else {
                        const r = ok(
                          (yield* move(o.floor ? floored : wallet, {
                            accountId: id,
                            subjectId: id,
                            delta: o.delta,
                            kind: "settle"
                          })).result
                        )
                        assert.isAtMost(Math.abs(r.moved), Math.abs(o.delta))
                        expected += r.moved
                        assert.strictEqual(r.balanceAfter, expected)
                      }
                      assert.strictEqual(yield* balance(id), expected)
                    }
                  }).pipe(Effect.provideContext(context))
                )),
              { numRuns: 25, seed: 4242 }
            )
          )
        }))
    })
  })

  describe(`TokenBudget (v2) on ${target.name}`, () => {
    layer(migratedClient(target), { timeout: 60_000 })((it) => {
      const budget = TokenBudget.make()

      const tokenFor = (accountId: string, id: string, remain: number, unlimited = false) =>
        Effect.gen(function*() {
          const admin = WalletAdmin.make(yield* KnexClient.KnexClient)
          yield* admin.createAccount({ id: accountId, balance: 0 }).pipe(
            Effect.catchTag("AccountExists", () => Effect.void)
          )
          yield* admin.createToken({ id, accountId, remain, unlimited })
        })

      it.effect("a limited token: one conditional statement; short is TokenBudgetExceeded, nothing changes", () =>
        Effect.gen(function*() {
          yield* tokenFor("ta", "t1", 1_000)
          const taken = yield* take(budget, { accountId: "ta", subjectId: "t1", amount: q(400), mode: "exact" })
          assert.deepStrictEqual(ok(taken.result), { amount: 400, balanceAfter: 600 })
          assert.strictEqual(taken.statements, one)
          assert.deepStrictEqual(yield* token("t1"), [600, 400])
          const short = yield* take(budget, { accountId: "ta", subjectId: "t1", amount: q(601), mode: "exact" })
          assert.deepStrictEqual(
            [tagOf(short.result), errorOf(short.result)["remaining"], errorOf(short.result)["budgetId"]],
            ["TokenBudgetExceeded", 600, "token"]
          )
          assert.deepStrictEqual(yield* token("t1"), [600, 400])
          // Post-consume: no remain condition.
          assert.deepStrictEqual(
            ok(
              (yield* take(budget, { accountId: "ta", subjectId: "t1", amount: q(700), mode: "unconditional" })).result
            ),
            { amount: 700, balanceAfter: -100 }
          )
          // No such token: nothing remains.
          const none = yield* take(budget, { accountId: "ta", subjectId: "nope", amount: q(1), mode: "exact" })
          assert.deepStrictEqual([tagOf(none.result), errorOf(none.result)["remaining"]], ["TokenBudgetExceeded", 0])
        }))

      it.effect("another account's token is TokenNotFound and is not touched (§2.9)", () =>
        Effect.gen(function*() {
          yield* tokenFor("tb", "t2", 1_000)
          yield* tokenFor("tc", "t3", 1_000)
          const wrong = yield* take(budget, { accountId: "tc", subjectId: "t2", amount: q(10), mode: "exact" })
          assert.deepStrictEqual([tagOf(wrong.result), errorOf(wrong.result)["tokenId"]], ["TokenNotFound", "t2"])
          assert.deepStrictEqual(yield* token("t2"), [1_000, 0])
        }))

      it.effect("an unlimited token takes nothing and still moves at settlement (a usage counter)", () =>
        Effect.gen(function*() {
          yield* tokenFor("td", "t4", 0, true)
          assert.deepStrictEqual(
            ok((yield* take(budget, { accountId: "td", subjectId: "t4", amount: q(900), mode: "exact" })).result),
            { amount: 0, balanceAfter: 0 }
          )
          assert.deepStrictEqual(
            ok((yield* move(budget, { accountId: "td", subjectId: "t4", delta: -900, kind: "settle" })).result),
            { moved: -900, balanceAfter: -900 }
          )
          assert.deepStrictEqual(yield* token("t4"), [-900, 900])
          const sql = KnexSqlStore.make(yield* KnexClient.KnexClient)
          assert.strictEqual(yield* budget.balance!(sql, "t4"), MAX)
        }))

      it.effect("move: one statement; remain and used out of range is QuotaOutOfRange, nothing written", () =>
        Effect.gen(function*() {
          yield* tokenFor("te", "t5", 100)
          const moved = yield* move(budget, { accountId: "te", subjectId: "t5", delta: 40, kind: "refund" })
          assert.deepStrictEqual(ok(moved.result), { moved: 40, balanceAfter: 140 })
          assert.strictEqual(moved.statements, one)
          const client = yield* KnexClient.KnexClient
          yield* client.query("t.set", (db) => db(client.table("tokens")).where({ id: "t5" }).update({ used: MAX - 3 }))
          const over = yield* take(budget, { accountId: "te", subjectId: "t5", amount: q(4), mode: "exact" })
          assert.deepStrictEqual([tagOf(over.result), errorOf(over.result)["field"]], ["QuotaOutOfRange", "token.used"])
          const back = yield* move(budget, { accountId: "te", subjectId: "t5", delta: -4, kind: "settle" })
          assert.deepStrictEqual([tagOf(back.result), errorOf(back.result)["field"]], ["QuotaOutOfRange", "token.used"])
          assert.deepStrictEqual(yield* token("t5"), [140, MAX - 3])
          assert.deepStrictEqual(
            ok((yield* move(budget, { accountId: "te", subjectId: "gone", delta: -4, kind: "settle" })).result),
            { moved: 0, balanceAfter: 0 }
          )
        }))
    })
  })
}
