/**
 * The vouchers source against a model, by fast-check: random sequences of new
 * packs, clock moves, takes in the three modes and moves by ref (charges and
 * give-backs), on a fresh SQLite test store each run. Every answer (the pack
 * chosen, the amount, the room after, the shortfall and its `available`) and
 * the spendable balance equal the model's, and no exact or upTo take ever
 * leaves a pack below zero.
 */
import { assert, describe, it } from "@effect/vitest"
import type { Source } from "@relay-billing/core"
import { SqliteStore } from "@relay-billing/testkit/sqlite"
import { Effect, Exit } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import { addPack, make } from "../src/index.js"

type Command =
  | { readonly _tag: "add"; readonly total: number; readonly expiresIn: number }
  | { readonly _tag: "advance"; readonly millis: number }
  | { readonly _tag: "take"; readonly amount: number; readonly mode: Source.TakeMode }
  | { readonly _tag: "move"; readonly pick: number; readonly delta: number }

const command: fc.Arbitrary<Command> = fc.oneof(
  fc.record({
    _tag: fc.constant("add" as const),
    total: fc.integer({ min: 1, max: 500 }),
    expiresIn: fc.integer({ min: 1, max: 5_000 })
  }),
  fc.record({ _tag: fc.constant("advance" as const), millis: fc.integer({ min: 0, max: 2_000 }) }),
  fc.record({
    _tag: fc.constant("take" as const),
    amount: fc.integer({ min: 1, max: 600 }),
    mode: fc.constantFrom<Source.TakeMode>("exact", "upTo", "unconditional")
  }),
  fc.record({ _tag: fc.constant("move" as const), pick: fc.nat(), delta: fc.integer({ min: -600, max: 600 }) })
)

interface Pack {
  readonly id: string
  readonly total: number
  used: number
  readonly expiresAt: number
}

const room = (p: Pack) => p.total - p.used

const run = (commands: ReadonlyArray<Command>) =>
  Effect.gen(function*() {
    const source = make({ id: "vouchers", table: "vouchers" })
    const store = yield* SqliteStore.make({ sources: [source] })
    const sql = store.sql
    const packs: Array<Pack> = []
    let now = 0
    const live = () => packs.filter((p) => p.expiresAt > now && room(p) >= 1)
    for (const c of commands) {
      switch (c._tag) {
        case "add": {
          yield* addPack(sql, { accountId: "a", total: c.total, expiresAt: now + c.expiresIn })
          packs.push({ id: String(packs.length + 1), total: c.total, used: 0, expiresAt: now + c.expiresIn })
          break
        }
        case "advance": {
          now += c.millis
          yield* TestClock.setTime(now)
          break
        }
        case "take": {
          const need = c.mode === "exact" ? c.amount : 1
          const chosen = packs
            .filter((p) => p.expiresAt > now && room(p) >= need)
            .sort((x, y) => x.expiresAt - y.expiresAt || Number(x.id) - Number(y.id))[0]
          const exit = yield* Effect.exit(
            store.transaction(
              source.take({ sql, holdId: "h", accountId: "a", subjectId: "a", amount: c.amount as never, mode: c.mode })
            )
          )
          if (chosen === undefined) {
            assert.isTrue(Exit.isFailure(exit), `take ${c.amount} ${c.mode} should fail`)
            const error = yield* Effect.flip(
              store.transaction(
                source.take({
                  sql,
                  holdId: "h",
                  accountId: "a",
                  subjectId: "a",
                  amount: c.amount as never,
                  mode: c.mode
                })
              )
            )
            assert.strictEqual(error._tag, "InsufficientFunds")
            const available = Math.max(0, ...live().map(room))
            assert.deepInclude(error, { available, required: c.amount })
            break
          }
          const taken = c.mode === "upTo" ? Math.min(room(chosen), c.amount) : c.amount
          chosen.used += taken
          assert.deepStrictEqual(Exit.isSuccess(exit) ? exit.value : exit, {
            amount: taken,
            balanceAfter: room(chosen),
            ref: chosen.id
          })
          if (c.mode !== "unconditional") assert.isAtLeast(room(chosen), 0)
          break
        }
        case "move": {
          if (packs.length === 0) break
          const p = packs[c.pick % packs.length]!
          const change = c.delta < 0 ? (room(p) < -c.delta ? Math.max(room(p), 0) : -c.delta) : -c.delta
          p.used += change
          const answer = yield* store.transaction(
            source.move({ sql, holdId: "h", accountId: "a", subjectId: "a", ref: p.id, delta: c.delta, kind: "settle" })
          )
          assert.deepStrictEqual(answer, { moved: 0 - change, balanceAfter: room(p), overflow: true })
          break
        }
      }
      const balance = yield* source.balance!(sql, "a")
      assert.strictEqual(balance, live().reduce((sum, p) => sum + room(p), 0))
    }
  }).pipe(Effect.scoped, Effect.provide(TestClock.layer()))

describe("vouchers against a model", () => {
  it("every answer and the balance follow the model", () =>
    fc.assert(
      fc.asyncProperty(fc.array(command, { maxLength: 40 }), (commands) => Effect.runPromise(run(commands))),
      { numRuns: 300 }
    ), 60_000)
})
