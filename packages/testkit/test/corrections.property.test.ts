/**
 * Property test of corrections (issue 8 #14, billing-semantics §4.4) with the
 * conservation invariants, over the in-memory store.
 *
 * Each run builds 1–3 accounts (wallet, limited or unlimited token, 0–2
 * subscriptions with random totals incl. 0 = unlimited and random
 * `allowWalletOverflow`) and drives a random sequence of: open + settle (any
 * preference, sometimes split funding, actuals below and above the estimate),
 * open left pending, refund, and corrections of random holds — random
 * amounts (often above what is left), correction ids drawn from a small pool
 * so they repeat with the same or a different amount, sometimes with an
 * injected fault in a source's `correct`.
 *
 * After EVERY command:
 *  1. conservation to the unit, per account: what left its wallet and
 *     subscriptions plus what was recorded unbilled equals the settled actuals
 *     less the accepted corrections plus the pending reservations; per token:
 *     what left it equals its settled actuals less corrections plus pending;
 *  2. usedQuota = Σ settled charged (A less unbilled) − Σ accepted corrections,
 *     requestCount = number of settles with A > 0 (a correction never moves it);
 *  3. a correction never exceeds what is still charged: one above it fails
 *     with `CorrectionExceedsCharge` naming exactly what is left;
 *  4. idempotent by id: the same id and amount returns the first result, another
 *     amount is an `IdempotencyConflict`; neither moves anything, and neither
 *     does a correction that failed (injected fault, typed refusal);
 *  5. the store's audit is clean.
 *
 * A mutant whose wallet credits a correction twice must be caught.
 *
 * Replay: FC_SEED=<seed> FC_PATH=<path> npx vitest run test/corrections.property.test.ts
 */
import {
  AccountCounters,
  BillingSession,
  FundingRegistry,
  Hold,
  HoldJournal,
  Ledger,
  SqlStore
} from "@relay-billing/core"
import type { Source } from "@relay-billing/core"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { InMemoryStore } from "../src/index.js"

const NUM_RUNS = Number(process.env["FC_NUM_RUNS"] ?? 150)
const replay: { seed?: number; path?: string } = process.env["FC_SEED"] !== undefined
  ? {
    seed: Number(process.env["FC_SEED"]),
    ...(process.env["FC_PATH"] !== undefined ? { path: process.env["FC_PATH"] } : {})
  }
  : {}

// ====================================================================== scenario

interface AccountSpec {
  readonly balance: number
  readonly token: { readonly unlimited: boolean; readonly remain: number }
  readonly subs: ReadonlyArray<{ readonly total: number; readonly allowWalletOverflow: boolean }>
}

type Command =
  | {
    readonly t: "bill"
    readonly account: number
    readonly estimate: number
    readonly actual: number
    readonly preference: string
    readonly split: boolean
    readonly withToken: boolean
  }
  | { readonly t: "pending"; readonly account: number; readonly estimate: number }
  | { readonly t: "refund"; readonly back: number }
  | {
    readonly t: "correct"
    readonly back: number
    readonly id: string
    /** Fraction of what is left (above 1: an over-correction). */
    readonly share: number
    readonly plus: number
    readonly fault: "none" | "wallet" | "subscription" | "token"
  }

interface Scenario {
  readonly accounts: ReadonlyArray<AccountSpec>
  readonly commands: ReadonlyArray<Command>
}

const accountArb: fc.Arbitrary<AccountSpec> = fc.record({
  balance: fc.oneof(fc.constant(0), fc.integer({ min: 50_000, max: 400_000 })),
  token: fc.record({ unlimited: fc.boolean(), remain: fc.integer({ min: 0, max: 300_000 }) }),
  subs: fc.array(
    fc.record({
      total: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 120_000 })),
      allowWalletOverflow: fc.boolean()
    }),
    { maxLength: 2 }
  )
})

const commandArb = (accounts: number): fc.Arbitrary<Command> =>
  fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        t: fc.constant("bill" as const),
        account: fc.nat({ max: accounts - 1 }),
        estimate: fc.integer({ min: 0, max: 80_000 }),
        actual: fc.integer({ min: 0, max: 150_000 }),
        preference: fc.constantFrom("subscription_first", "wallet_first", "subscription_only", "wallet_only"),
        split: fc.boolean(),
        withToken: fc.boolean()
      })
    },
    {
      weight: 1,
      arbitrary: fc.record({
        t: fc.constant("pending" as const),
        account: fc.nat({ max: accounts - 1 }),
        estimate: fc.integer({ min: 1, max: 50_000 })
      })
    },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("refund" as const), back: fc.nat({ max: 3 }) }) },
    {
      weight: 6,
      arbitrary: fc.record({
        t: fc.constant("correct" as const),
        back: fc.nat({ max: 3 }),
        id: fc.constantFrom("c0", "c1", "c2"),
        share: fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 1, max: 2, noNaN: true })),
        plus: fc.integer({ min: -3, max: 3 }),
        fault: fc.constantFrom("none", "none", "none", "wallet", "subscription", "token")
      })
    }
  )

const scenarioArb: fc.Arbitrary<Scenario> = fc.array(accountArb, { minLength: 1, maxLength: 3 }).chain((accounts) =>
  fc.record({
    accounts: fc.constant(accounts),
    commands: fc.array(commandArb(accounts.length), { minLength: 5, maxLength: 30 })
  })
)

// ====================================================================== run

type Variant = "real" | "double-credit-wallet"

class Violation extends Error {}

/** Outcomes seen by the real runs (printed, to show the property exercises every path). */
const stats = new Map<string, number>()
const count = (key: string) => stats.set(key, (stats.get(key) ?? 0) + 1)

const layerFor = (store: InMemoryStore.InMemoryStore, variant: Variant) => {
  if (variant === "real") return store.billingLayer()
  const wallet: Source.Source = {
    ...store.wallet,
    // the bug: a correction credits the wallet twice (the second move is not answered)
    move: (req) =>
      req.kind === "correction"
        ? Effect.flatMap(store.wallet.move(req), (r) => Effect.as(store.wallet.move(req), r))
        : store.wallet.move(req)
  }
  return BillingSession.BillingSession.layer().pipe(
    Layer.provideMerge(Layer.mergeAll(
      Layer.succeed(HoldJournal.HoldJournal, store.journal),
      Layer.succeed(AccountCounters.AccountCounters, store.counters),
      Layer.succeed(Ledger.Ledger, store.ledger),
      Layer.succeed(SqlStore.SqlStore, store.sql),
      FundingRegistry.FundingRegistry.layer({ sources: [wallet, store.subscription, store.token] })
    ))
  )
}

const runScenario = (scenario: Scenario, variant: Variant) => {
  const store = InMemoryStore.make()
  const violation = (rule: string, detail: string) => {
    throw new Violation(`[${rule}] ${detail}`)
  }
  /** What the test itself recorded per hold: accepted corrections by id. */
  const accepted = new Map<string, Map<string, { readonly amount: number; readonly result: unknown }>>()
  const openingWallet: Array<number> = []
  const holdIds: Array<string> = []
  let seq = 0

  const check = (label: string) =>
    Effect.gen(function*() {
      const engine = yield* BillingSession.BillingSession
      const snap = store.snapshot()
      const ledger = store.entries()
      const audit = store.audit()
      if (audit.problems.length > 0) violation("5 audit", `${label}: ${audit.problems.join("; ")}`)
      for (const [i] of scenario.accounts.entries()) {
        const accountId = `a${i}`
        let settledActual = 0
        let charged = 0
        let corrected = 0
        let pending = 0
        let settles = 0
        const tokenFlow = { settled: 0, corrected: 0, pending: 0 }
        for (const holdId of holdIds) {
          const hold = yield* engine.get(holdId)
          if (hold.accountId !== accountId) continue
          const mine = [...(accepted.get(holdId)?.values() ?? [])].reduce((s, c) => s + c.amount, 0)
          if (hold.status === "pending") {
            pending += hold.reserved
            tokenFlow.pending += hold.parts.filter((p) => p.kind === "budget").reduce((s, p) => s + p.amount, 0)
          }
          if (hold.status !== "settled" || !hold.settlement) {
            if (mine > 0) violation("3 never exceeds", `${label}: hold ${holdId} is ${hold.status} but has corrections`)
            continue
          }
          const s = hold.settlement
          const recorded = Hold.corrected(s)
          if (recorded !== mine) {
            violation("4 idempotent", `${label}: hold ${holdId} records ${recorded} corrected, accepted ${mine}`)
          }
          if (recorded > Hold.charged(s)) {
            violation("3 never exceeds", `${label}: hold ${holdId} corrected ${recorded} > charged ${Hold.charged(s)}`)
          }
          settledActual += s.actual
          charged += Hold.charged(s)
          corrected += recorded
          if (s.actual > 0) {
            settles++
          }
          if (hold.tokenId !== undefined) {
            tokenFlow.settled += s.actual
            tokenFlow.corrected += recorded
          }
        }
        // (2) counters
        const c = snap.counters[accountId]!
        if (c.usedQuota !== charged - corrected) {
          violation(
            "2 usedQuota",
            `${label}: ${accountId} usedQuota ${c.usedQuota} != charged ${charged} - corrected ${corrected}`
          )
        }
        if (c.requestCount !== settles) {
          violation("2 requestCount", `${label}: ${accountId} requestCount ${c.requestCount} != ${settles}`)
        }
        // (1) conservation to the unit
        let outflow = openingWallet[i]! - snap.wallets[accountId]!
        for (const [j, sub] of scenario.accounts[i]!.subs.entries()) {
          void sub
          outflow += snap.subscriptions[`a${i}-s${j}`]!.used
        }
        const unbilled = ledger.filter((e) => e.accountId === accountId).reduce((s, e) => s + (e.unbilled ?? 0), 0)
        if (outflow + unbilled !== settledActual - corrected + pending) {
          violation(
            "1 conservation",
            `${label}: ${accountId}: out ${outflow} + unbilled ${unbilled} != settled ${settledActual} - corrected ${corrected} + pending ${pending}`
          )
        }
        const spec = scenario.accounts[i]!.token
        const t = snap.tokens[`a${i}-t`]!
        const tokenOut = (spec.unlimited ? 0 : spec.remain) - t.remain
        if (tokenOut !== tokenFlow.settled - tokenFlow.corrected + tokenFlow.pending || t.used !== tokenOut) {
          violation(
            "1 conservation",
            `${label}: token a${i}-t out ${tokenOut} (used ${t.used}) != ${JSON.stringify(tokenFlow)}`
          )
        }
      }
    })

  const program = Effect.gen(function*() {
    const engine = yield* BillingSession.BillingSession
    for (const [i, a] of scenario.accounts.entries()) {
      yield* store.createAccount(`a${i}`, a.balance)
      openingWallet.push(a.balance)
      yield* store.createToken(`a${i}-t`, `a${i}`, a.token.unlimited ? { unlimited: true } : { remain: a.token.remain })
      for (const [j, sub] of a.subs.entries()) {
        yield* store.createSubscription({
          id: `a${i}-s${j}`,
          accountId: `a${i}`,
          total: sub.total,
          endAt: 10_000_000_000,
          allowWalletOverflow: sub.allowWalletOverflow
        })
      }
    }
    const pick = (back: number) => holdIds[holdIds.length - 1 - (back % Math.max(1, holdIds.length))]
    for (const [n, cmd] of scenario.commands.entries()) {
      const label = `#${n} ${JSON.stringify(cmd)}`
      switch (cmd.t) {
        case "bill": {
          const holdId = `h${seq++}`
          const opened = yield* Effect.result(engine.open({
            holdId,
            accountId: `a${cmd.account}`,
            estimate: cmd.estimate,
            preference: cmd.preference,
            ...(cmd.split ? { split: true } : {}),
            ...(cmd.withToken ? { tokenId: `a${cmd.account}-t` } : {})
          }))
          if (opened._tag === "Failure") break
          holdIds.push(holdId)
          yield* Effect.result(opened.success.settle(cmd.actual))
          break
        }
        case "pending": {
          const holdId = `h${seq++}`
          const opened = yield* Effect.result(
            engine.open({ holdId, accountId: `a${cmd.account}`, estimate: cmd.estimate })
          )
          if (opened._tag === "Success") holdIds.push(holdId)
          break
        }
        case "refund": {
          const holdId = pick(cmd.back)
          if (holdId !== undefined) yield* Effect.result(engine.refund(holdId))
          break
        }
        case "correct": {
          const holdId = pick(cmd.back)
          if (holdId === undefined) break
          const hold = yield* engine.get(holdId)
          const mine = accepted.get(holdId) ?? new Map()
          accepted.set(holdId, mine)
          const left = hold.settlement ? Hold.stillCharged(hold.settlement) : 0
          const amount = Math.max(1, Math.round(left * cmd.share) + cmd.plus)
          const first = mine.get(cmd.id)
          const before = { snap: store.snapshot(), rows: store.entries().length, faults: store.faults.injected.length }
          if (cmd.fault !== "none") store.faults.failNext(`${cmd.fault}.correct`)
          const result = yield* Effect.result(engine.correct({ holdId, correctionId: cmd.id, amount }))
          if (variant === "real") {
            count(result._tag === "Success" ? (first ? "replayed" : "corrected") : result.failure._tag)
          }
          const unchanged = () => {
            expectSame(label, before.snap, store.snapshot())
            if (store.entries().length !== before.rows) violation("4 nothing moves", `${label}: ledger rows written`)
          }
          if (hold.status !== "settled") {
            if (result._tag !== "Failure" || result.failure._tag !== "HoldResolved") {
              violation("4 settled only", `${label}: a ${hold.status} hold answered ${JSON.stringify(result)}`)
            }
            unchanged()
          } else if (first !== undefined) {
            if (first.amount === amount) {
              if (result._tag !== "Success") {
                violation("4 idempotent", `${label}: a repeat failed: ${JSON.stringify(result)}`)
              } else if (JSON.stringify(result.success) !== JSON.stringify(first.result)) {
                violation(
                  "4 idempotent",
                  `${label}: a repeat answered ${JSON.stringify(result.success)}, first ${JSON.stringify(first.result)}`
                )
              }
            } else if (result._tag !== "Failure" || result.failure._tag !== "IdempotencyConflict") {
              violation(
                "4 idempotent",
                `${label}: the same id with ${amount} (first ${first.amount}) answered ${JSON.stringify(result)}`
              )
            }
            unchanged()
          } else if (amount > left) {
            if (
              result._tag !== "Failure" || result.failure._tag !== "CorrectionExceedsCharge" ||
              result.failure.remaining !== left
            ) {
              violation("3 never exceeds", `${label}: ${amount} > left ${left} answered ${JSON.stringify(result)}`)
            }
            unchanged()
          } else if (result._tag === "Failure") {
            // only an injected fault may refuse a valid correction, and it changes nothing
            if (result.failure._tag !== "StoreError" || store.faults.injected.length === before.faults) {
              violation("4 correct", `${label}: a valid correction failed: ${JSON.stringify(result.failure)}`)
            }
            unchanged()
          } else {
            if (result.success.amount !== amount || result.success.remaining !== left - amount) {
              violation("4 correct", `${label}: answered ${JSON.stringify(result.success)} for ${amount} of ${left}`)
            }
            const parts = result.success.parts
            const funding = parts.filter((p) => p.kind === "funding").reduce((s, p) => s + p.amount, 0)
            if (funding !== amount) {
              violation("1 conservation", `${label}: funding parts got back ${funding}, not ${amount}`)
            }
            mine.set(cmd.id, { amount, result: result.success })
          }
          store.faults.clear()
          break
        }
      }
      yield* check(label)
    }
  })

  return Effect.runPromise(program.pipe(Effect.provide(layerFor(store, variant)), Effect.provide(TestClock.layer())))
}

const expectSame = (label: string, before: unknown, after: unknown) => {
  if (JSON.stringify(before) !== JSON.stringify(after)) {
    throw new Violation(`[4 nothing moves] ${label}: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`)
  }
}

describe("issue 8 #14: corrections keep conservation (property)", () => {
  it("issue 8 #14: random corrections, repeated ids and over-corrections keep every invariant", async () => {
    try {
      await fc.assert(fc.asyncProperty(scenarioArb, (scenario) => runScenario(scenario, "real")), {
        numRuns: NUM_RUNS,
        ...replay
      })
    } finally {
      console.log(`corrections property: ${[...stats].sort().map(([k, v]) => `${k}=${v}`).join(" ")}`)
    }
    expect(stats.get("corrected") ?? 0).toBeGreaterThan(0)
    expect(stats.get("replayed") ?? 0).toBeGreaterThan(0)
    expect(stats.get("IdempotencyConflict") ?? 0).toBeGreaterThan(0)
    expect(stats.get("CorrectionExceedsCharge") ?? 0).toBeGreaterThan(0)
  }, 120_000)

  it("issue 8 #14: a wallet that credits a correction twice is caught (the property is not vacuous)", async () => {
    const outcome = await fc.check(
      fc.asyncProperty(scenarioArb, (scenario) => runScenario(scenario, "double-credit-wallet")),
      { numRuns: 300, seed: 20_261_203, endOnFailure: true }
    )
    expect(outcome.failed).toBe(true)
    expect(String(outcome.errorInstance)).toMatch(/\[(1 conservation|5 audit|2 usedQuota)\]/)
  }, 120_000)
})
