/**
 * Issue 10 #9.2: an open's attempts answer with values (what they hold, or why
 * they failed and what must be given back), with no shared arrays. These pin
 * what those values must add up to when a give-back itself fails: a failed
 * give-back of a refused take is carried to the end of its attempt, where it
 * fails the open only if the attempt fails; the rest is given back anyway.
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Effect } from "effect"
import { InMemoryStore } from "../src/index.js"
import { assertAuditClean, composedLayer, expectFailure } from "./fixtures.js"

const Engine = BillingSession.BillingSession
const R = 800_000
const P = 50_000

/** The journal, counters and token in `main`; three external credit systems, each in its own store. */
const threeExternal = (balances: readonly [number, number, number]) => {
  const main = InMemoryStore.make()
  const ext = (["credits-a", "credits-b", "credits-c"] as const).map((id) =>
    InMemoryStore.make({ ids: { wallet: id } })
  )
  const layer = composedLayer(main, { funding: ext.map((store) => store.external.wallet), budgets: [main.token] })
  const setup = Effect.gen(function*() {
    yield* main.createAccount("a", 0)
    yield* main.createToken("t", "a", { remain: R })
    for (const [i, store] of ext.entries()) yield* store.createAccount("a", balances[i]!)
  })
  const open = Effect.flatMap(Engine, (engine) =>
    engine.open({
      holdId: "h1",
      accountId: "a",
      tokenId: "t",
      estimate: P,
      sources: ["credits-a", "credits-b", "credits-c"],
      split: true
    }))
  const wallets = () => ext.map((store) => store.snapshot().wallets["a"])
  return { main, ext, layer, setup, open, wallets }
}

describe("issue 10 #9.2: open attempts carry what they must give back", () => {
  it.effect("split funding covers the estimate although the give-back of a refused take failed: the open succeeds", () => {
    const { ext, layer, main, open, setup, wallets } = threeExternal([0, 30_000, 20_000])
    return Effect.gen(function*() {
      yield* setup
      // credits-a's 1st give-back follows its refused whole attempt; the 2nd its refused split take.
      ext[0]!.faults.failNth("credits-a.refund", 2)
      const session = yield* open
      assert.deepStrictEqual(session.hold.parts.map((p) => [p.sourceId, p.amount]), [
        ["credits-b", 30_000],
        ["credits-c", 20_000],
        ["token", P]
      ])
      assert.strictEqual(ext[0]!.faults.calls("credits-a.refund"), 2)
      assert.deepStrictEqual(wallets(), [0, 0, 0])
      // Each whole attempt took the token and gave it back on its shortfall: the split holds it once.
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R - P, used: P } })
      const settlement = yield* session.settle(P)
      assert.deepStrictEqual(settlement.parts.map((p) => [p.sourceId, p.charged]), [
        ["credits-b", 30_000],
        ["credits-c", 20_000],
        ["token", P]
      ])
      assert.deepStrictEqual(wallets(), [0, 0, 0])
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R - P, used: P } })
      assertAuditClean(main)
      for (const store of ext) assertAuditClean(store)
    }).pipe(Effect.provide(layer))
  })

  it.effect("split funding falls short and a give-back failed: open.compensate, every take given back, no hold", () => {
    const { ext, layer, main, open, setup, wallets } = threeExternal([0, 30_000, 10_000])
    return Effect.gen(function*() {
      yield* setup
      ext[0]!.faults.failNth("credits-a.refund", 2)
      const error = yield* expectFailure(open, "StoreError")
      assert.strictEqual(error.operation, "open.compensate")
      // The split's takes on credits-b and credits-c were given back at the end of the attempt,
      // the token by the rollback; the open's recovery released credits-a after (a 3rd call).
      assert.deepStrictEqual(wallets(), [0, 30_000, 10_000])
      assert.strictEqual(ext[0]!.faults.calls("credits-a.refund"), 3)
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R, used: 0 } })
      assert.deepStrictEqual(main.snapshot().holds, {})
      const engine = yield* Engine
      assert.deepStrictEqual(yield* engine.reapExpired(), { examined: 0, expired: 0, refunded: 0, failures: [] })
      assertAuditClean(main)
      for (const store of ext) assertAuditClean(store)
    }).pipe(Effect.provide(layer))
  })

  it.effect("without a failed give-back the same shortfall is InsufficientFunds naming every source split tried", () => {
    const { ext, layer, main, open, setup, wallets } = threeExternal([0, 30_000, 10_000])
    return Effect.gen(function*() {
      yield* setup
      const error = yield* expectFailure(open, "InsufficientFunds")
      assert.strictEqual(error.sourceId, "credits-a+credits-b+credits-c")
      assert.strictEqual(error.available, 40_000)
      assert.deepStrictEqual(wallets(), [0, 30_000, 10_000])
      assert.deepStrictEqual(main.snapshot().tokens, { t: { remain: R, used: 0 } })
      assert.deepStrictEqual(main.snapshot().holds, {})
      for (const store of ext) assertAuditClean(store)
    }).pipe(Effect.provide(layer))
  })
})
