/**
 * The knex variant of testkit's `external.property.test.ts` (issue 8 #4, #5):
 * the journal (with its intents), the token budget and the account counters
 * live in the database, and every query the engine makes may fail (a seeded
 * fault plan); two funding sources live in in-memory stores (EXTERNAL: no
 * shared transaction) whose calls may fail or lose their reply after taking
 * effect. A random sequence of opens (single, fallback, split), settles
 * (retried with other amounts), refunds and recovery passes, some concurrent,
 * then: faults off, the clock past every expiry, recovery. After it, for every
 * hold id: what each external source kept equals the hold's recorded
 * settlement (0 when refunded, expired or never recorded), the token and
 * `usedQuota` equal the settled amounts, no hold or intent is pending, every
 * resolved hold has exactly one terminal event, and the audit is clean.
 *
 * Runs on SQLite and PostgreSQL (and MySQL when configured). Each run uses its
 * own account and hold ids in one migrated database per target.
 */
import { describe, layer } from "@effect/vitest"
import {
  AccountCounters,
  BillingError,
  BillingEvents,
  BillingSession,
  FundingRegistry,
  HoldJournal,
  Ledger,
  SqlStore
} from "@relay-billing/core"
import type { FundingSource } from "@relay-billing/core"
import { Accounts, KnexClient, KnexJournal, KnexLedger, KnexSqlStore } from "@relay-billing/knex"
import { Faults, InMemoryStore } from "@relay-billing/testkit"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import { TokenBudget, WalletAdmin } from "../src/index.js"
import { auditClean, targets, walletBilling } from "./support.js"

const NUM_RUNS = Number(process.env["FC_NUM_RUNS"] ?? 15)
const R = 10_000_000
const SOURCES = ["credits-a", "credits-b"] as const

type Command =
  | {
    readonly t: "open"
    readonly hold: number
    readonly estimate: number
    readonly split: boolean
    readonly reversed: boolean
    readonly one: boolean
  }
  | { readonly t: "settle"; readonly hold: number; readonly actual: number }
  | { readonly t: "refund"; readonly hold: number }
  | { readonly t: "reap"; readonly ms: number }
  | { readonly t: "parallel"; readonly cmds: ReadonlyArray<Command> }

const holdArb = fc.integer({ min: 0, max: 3 })
const simple: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant("open" as const),
      hold: holdArb,
      estimate: fc.integer({ min: 0, max: 50_000 }),
      split: fc.boolean(),
      reversed: fc.boolean(),
      one: fc.boolean()
    })
  },
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant("settle" as const),
      hold: holdArb,
      actual: fc.oneof(fc.integer({ min: 0, max: 80_000 }), fc.constantFrom(12_000, 45_000))
    })
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("refund" as const), hold: holdArb }) },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant("reap" as const), ms: fc.integer({ min: 0, max: 15 * 60 * 1000 }) })
  }
)
const scenarioArb = fc.record({
  balances: fc.tuple(fc.integer({ min: 0, max: 120_000 }), fc.integer({ min: 0, max: 120_000 })),
  faultSeed: fc.integer(),
  faultRate: fc.constantFrom(0, 0.05, 0.15),
  lostRate: fc.constantFrom(0, 0.1, 0.3),
  commands: fc.array(
    fc.oneof({ weight: 5, arbitrary: simple }, {
      weight: 1,
      arbitrary: fc.record({
        t: fc.constant("parallel" as const),
        cmds: fc.array(simple, { minLength: 2, maxLength: 3 })
      })
    }),
    { minLength: 1, maxLength: 15 }
  )
})
type Scenario = typeof scenarioArb extends fc.Arbitrary<infer S> ? S : never

/** An external source whose replies may be lost after the call took effect. */
const lossy = (
  inner: FundingSource.FundingSource,
  lost: { rate: number; next: () => number }
): FundingSource.FundingSource => {
  const maybeLose = <A, E>(op: string, effect: Effect.Effect<A, E>) =>
    Effect.flatMap(effect, (a) =>
      lost.rate > 0 && lost.next() < lost.rate
        ? Effect.fail(new BillingError.StoreError({ operation: `${inner.id}.${op}`, detail: "reply lost" }))
        : Effect.succeed(a))
  return {
    ...inner,
    reserve: (req) => maybeLose("reserve", inner.reserve(req)),
    settle: (req) => maybeLose("settle", inner.settle(req)),
    refund: (req) => maybeLose("refund", inner.refund(req))
  }
}

let runCounter = 0

/** One scenario on the database in context; fails the test with a description on a violation. */
const runScenario = (scenario: Scenario, client: KnexClient.Client, admin: WalletAdmin.WalletAdmin["Service"]) =>
  Effect.gen(function*() {
    const run = `r${++runCounter}`
    const accountId = `${run}-a`
    const tokenId = `${run}-t`
    const holdId = (i: number) => `${run}-h${i}`
    const faults = new Faults.Faults()
    const faulty: KnexClient.Client = {
      ...client,
      query: (op, f) => faults.check(op).pipe(Effect.andThen(client.query(op, f))),
      execute: (op, sql, params) => faults.check(op).pipe(Effect.andThen(client.execute(op, sql, params)))
    }
    const exts = [
      InMemoryStore.make({ ids: { wallet: SOURCES[0] } }),
      InMemoryStore.make({ ids: { wallet: SOURCES[1] } })
    ] as const
    const lost = { rate: scenario.lostRate, next: Faults.seededRandom(scenario.faultSeed ^ 0x5bd1e995) }
    const events: Array<BillingEvents.BillingEvent> = []
    const engine = yield* BillingSession.BillingSession.make().pipe(
      Effect.provideService(HoldJournal.HoldJournal, KnexJournal.make(faulty)),
      Effect.provideService(SqlStore.SqlStore, KnexSqlStore.make(faulty)),
      Effect.provideService(Ledger.Ledger, KnexLedger.make(faulty)),
      Effect.provideService(
        FundingRegistry.FundingRegistry,
        FundingRegistry.FundingRegistry.make({
          funding: exts.map((e) => lossy(e.external.wallet, lost)),
          budgets: [TokenBudget.make()]
        })
      ),
      Effect.provideService(AccountCounters.AccountCounters, Accounts.makeCounters(faulty)),
      Effect.provideService(BillingEvents.BillingEvents, {
        publish: (event: BillingEvents.BillingEvent) => Effect.sync(() => void events.push(event))
      })
    )
    yield* admin.createAccount({ id: accountId, balance: 0 })
    yield* admin.createToken({ id: tokenId, accountId, remain: R })
    for (const [i, ext] of exts.entries()) yield* ext.createAccount(accountId, scenario.balances[i]!)
    faults.random(scenario.faultSeed, scenario.faultRate)
    for (const [i, ext] of exts.entries()) {
      ext.faults.random(
        scenario.faultSeed + i + 1,
        scenario.faultRate,
        ["reserve", "settle", "refund"].map((op) => `${SOURCES[i]}.${op}`)
      )
    }
    const opened = new Set<string>()
    const trace: Array<string> = []
    const violation = (message: string) =>
      Effect.flatMap(
        Effect.orDie(
          client.query("test.intents", (db) => db(client.table("intents")).where("hold_id", "like", `${run}-%`))
        ),
        (rows) =>
          Effect.die(
            new Error(`${run}: ${message}\n--- intents: ${JSON.stringify(rows)}\n--- trace:\n${trace.join("\n")}`)
          )
      )

    const step = (cmd: Command): Effect.Effect<void> =>
      Effect.gen(function*() {
        const note = <A, E>(label: string, effect: Effect.Effect<A, E>) =>
          Effect.flatMap(Effect.result(effect), (r) =>
            Effect.sync(() =>
              void trace.push(
                `${label} -> ${r._tag === "Success" ? "ok" : String((r.failure as { _tag?: string })._tag)}`
              )
            ))
        switch (cmd.t) {
          case "open": {
            opened.add(holdId(cmd.hold))
            const order = cmd.reversed ? [SOURCES[1], SOURCES[0]] : [...SOURCES]
            const sources = cmd.one ? [order[0]!] : order
            return yield* note(
              `open(h${cmd.hold}, ${cmd.estimate}, ${sources.join(">")}${cmd.split ? ", split" : ""})`,
              engine.open({
                holdId: holdId(cmd.hold),
                accountId,
                tokenId,
                estimate: cmd.estimate,
                sources,
                split: cmd.split
              })
            )
          }
          case "settle":
            return yield* note(`settle(h${cmd.hold}, ${cmd.actual})`, engine.settle(holdId(cmd.hold), cmd.actual))
          case "refund":
            return yield* note(`refund(h${cmd.hold})`, engine.refund(holdId(cmd.hold)))
          case "reap":
            yield* TestClock.adjust(cmd.ms)
            return yield* note(`advance ${cmd.ms} + reap`, engine.reapExpired())
          case "parallel":
            yield* Effect.all(cmd.cmds.map(step), { concurrency: "unbounded", discard: true })
            return
        }
      })
    for (const cmd of scenario.commands) yield* step(cmd)

    // Recovery: faults off, past every expiry.
    faults.clear()
    for (const ext of exts) ext.faults.clear()
    lost.rate = 0
    yield* TestClock.adjust("2 hours")
    for (let pass = 0; pass < 3; pass++) {
      const report = yield* engine.reapExpired()
      const mine = report.failures.filter((f) => f.holdId.startsWith(`${run}-`))
      if (mine.length > 0) return yield* violation(`recovery pass ${pass}: ${JSON.stringify(mine)}`)
    }

    const ledger = yield* Ledger.Ledger
    const holds = yield* KnexJournal.make(client).list({ accountId })
    const pending = yield* client.query(
      "test.intents",
      (db) =>
        db(client.table("intents")).where("hold_id", "like", `${run}-%`).andWhere("status", "pending").select(
          "hold_id",
          "phase"
        )
    )
    if (pending.length > 0) return yield* violation(`intents still pending: ${JSON.stringify(pending)}`)
    let settledTotal = 0
    let paid = 0
    const charged = [0, 0]
    for (const id of opened) {
      const hold = holds.find((h) => h.id === id)
      if (hold?.status === "pending") return yield* violation(`${id} still pending`)
      // §6: an expired hold that was settled afterwards was charged late (its own Settled event)
      const late = hold?.status === "expired" && hold.settlement?.late === true
      const terminal = events.filter((e) => e._tag !== "LowBalance" && "hold" in e && e.hold.id === id).length
      if ((hold ? 1 : 0) + (late ? 1 : 0) !== terminal) {
        return yield* violation(
          `${id} (${hold?.status ?? "no hold"}${late ? ", charged late" : ""}) has ${terminal} terminal events`
        )
      }
      const settlement = hold?.status === "settled" || late ? hold.settlement : undefined
      if (settlement?.incomplete) return yield* violation(`${id} still incomplete`)
      for (const [i, ext] of exts.entries()) {
        const kept = -ext.entries().filter((e) => e.holdId === id).reduce((s, e) => s + e.amount, 0)
        const expected = settlement?.parts.find((p) => p.kind === "funding" && p.sourceId === SOURCES[i])?.charged ?? 0
        if (kept !== expected) {
          return yield* violation(
            `${id} (${hold?.status ?? "no hold"}): ${SOURCES[i]} kept ${kept}, the hold records ${expected}`
          )
        }
        charged[i] = (charged[i] ?? 0) + kept
      }
      const tokenKept = -(yield* ledger.entries({ holdId: id })).filter((e) => e.sourceId === "token").reduce(
        (s, e) => s + e.amount,
        0
      )
      if (tokenKept !== (settlement?.actual ?? 0)) {
        return yield* violation(`${id}: token kept ${tokenKept}, settled ${settlement?.actual ?? 0}`)
      }
      if (settlement) {
        settledTotal += settlement.actual
        if (settlement.actual > 0) paid++
      }
    }
    const account = yield* admin.account(accountId)
    const token = yield* admin.token(tokenId)
    if (account.usedQuota !== settledTotal || account.requestCount !== paid || token.remain !== R - settledTotal) {
      return yield* violation(
        `usedQuota ${account.usedQuota}, requestCount ${account.requestCount}, token ${token.remain}; expected ${settledTotal}, ${paid}, ${
          R - settledTotal
        }`
      )
    }
    for (const [i, ext] of exts.entries()) {
      const expected = scenario.balances[i]! - (charged[i] ?? 0)
      if (ext.snapshot().wallets[accountId] !== expected) {
        return yield* violation(`${SOURCES[i]} balance ${ext.snapshot().wallets[accountId]}, expected ${expected}`)
      }
    }
  })

for (
  const target of targets.filter((t) =>
    t.name !== "mysql" || process.env["BILLING_EXTERNAL_PROPERTY_MYSQL"] !== undefined
  )
) {
  describe(`external conservation on ${target.name}`, () => {
    layer(walletBilling(target), { timeout: 600_000 })((it) => {
      it.effect(
        "issue 8 #4/#5 property: after recovery, external charges, token, counters and every hold's settlement agree",
        () =>
          Effect.gen(function*() {
            const client = yield* KnexClient.KnexClient
            const admin = yield* WalletAdmin.WalletAdmin
            const services = yield* Effect.context<Ledger.Ledger>()
            yield* Effect.promise(() =>
              fc.assert(
                fc.asyncProperty(scenarioArb, (scenario) =>
                  Effect.runPromise(
                    runScenario(scenario, client, admin).pipe(
                      Effect.provide(services),
                      Effect.provide(TestClock.layer())
                    )
                  )),
                // No shrinking: runs share the database, and a failed run leaves its holds behind.
                {
                  numRuns: NUM_RUNS,
                  endOnFailure: true,
                  ...(process.env["FC_SEED"] !== undefined ? { seed: Number(process.env["FC_SEED"]) } : {})
                }
              )
            )
            yield* auditClean
          }),
        600_000
      )
    })
  })
}
