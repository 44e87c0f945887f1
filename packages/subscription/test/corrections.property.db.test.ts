/**
 * Property test of corrections (issue 8 #14, billing-semantics §4.4) over the
 * knex stores on every database (SQLite, PostgreSQL, MariaDB), with wallets,
 * tokens, subscriptions (daily resets and never-resetting plans, overflow to
 * the wallet allowed or not) and split funding.
 *
 * ONE isolated, migrated database per target serves the whole property; every
 * run uses fresh ids prefixed with its run number and its own TestClock, a
 * year after the previous run's. Each run drives random commands: bill (open +
 * settle at once, any preference, sometimes split), correct (random holds,
 * random amounts — often above what is left —, ids from a small pool so they
 * repeat with the same or another amount), and clock advances that cross
 * daily resets.
 *
 * After EVERY command:
 *  1. the audit with the usedQuota check (`Audit.run(…, { counters })`) is ok,
 *     and usedQuota = Σ settled charged − Σ corrections, per account;
 *  2. conservation to the unit, per account, from the ledger: what left the
 *     wallet and the subscriptions + what was recorded unbilled = the settled
 *     actuals − the corrections + the shares recorded for ended periods; a
 *     correction made in the period (day) of its hold's charge records no
 *     ended share; per token: what left it = settled actuals − corrections;
 *  3. a correction never exceeds what is still charged
 *     (`CorrectionExceedsCharge` naming exactly what is left);
 *  4. idempotent by id (the first result again; another amount is an
 *     `IdempotencyConflict`), and a refused correction moves nothing.
 *
 * Replay: FC_SEED=<seed> FC_PATH=<path> FC_TARGET=<name> npx vitest run test/corrections.property.db.test.ts
 */
import { BillingSession, Hold, HoldJournal, Ledger } from "@relay-billing/core"
import { Audit, Migrations, TestDatabase } from "@relay-billing/knex"
import { WalletAdmin } from "@relay-billing/wallet"
import { Clock, Effect, Layer, ManagedRuntime } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import { afterAll, describe, expect, it } from "vitest"
import { Subscription, SubscriptionAdmin } from "../src/index.js"
import { auditBalances, billingLayer } from "./support.js"

const targets = TestDatabase.targets()
  .filter((t) => process.env["FC_TARGET"] === undefined || process.env["FC_TARGET"] === t.name)
const RUNS: Record<string, number> = { sqlite: 20, postgres: 10, mysql: 10 }
const DAY = 24 * 3600 * 1000
const RUN_SPACING = 365 * DAY
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
  readonly subs: ReadonlyArray<
    { readonly total: number; readonly daily: boolean; readonly allowWalletOverflow: boolean }
  >
}

type Command =
  | {
    readonly t: "bill"
    readonly account: number
    readonly estimate: number
    readonly actual: number
    readonly preference: string
    readonly split: boolean
  }
  | { readonly t: "correct"; readonly back: number; readonly id: string; readonly share: number; readonly plus: number }
  | { readonly t: "advance"; readonly hours: number }

interface Scenario {
  readonly accounts: ReadonlyArray<AccountSpec>
  readonly commands: ReadonlyArray<Command>
}

const scenarioArb = (accounts: number): fc.Arbitrary<Scenario> =>
  fc.record({
    accounts: fc.array(
      fc.record({
        balance: fc.oneof(fc.constant(0), fc.integer({ min: 20_000, max: 300_000 })),
        token: fc.record({ unlimited: fc.boolean(), remain: fc.integer({ min: 50_000, max: 500_000 }) }),
        subs: fc.array(
          fc.record({
            total: fc.oneof(fc.constant(0), fc.integer({ min: 1_000, max: 100_000 })),
            daily: fc.boolean(),
            allowWalletOverflow: fc.boolean()
          }),
          { minLength: 1, maxLength: 2 }
        )
      }),
      { minLength: accounts, maxLength: accounts }
    ),
    commands: fc.array(
      fc.oneof(
        {
          weight: 4,
          arbitrary: fc.record({
            t: fc.constant("bill" as const),
            account: fc.nat({ max: accounts - 1 }),
            estimate: fc.integer({ min: 0, max: 60_000 }),
            actual: fc.integer({ min: 0, max: 120_000 }),
            preference: fc.constantFrom("subscription_first", "wallet_first", "subscription_only", "wallet_only"),
            split: fc.boolean()
          })
        },
        {
          weight: 5,
          arbitrary: fc.record({
            t: fc.constant("correct" as const),
            back: fc.nat({ max: 3 }),
            id: fc.constantFrom("c0", "c1"),
            share: fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 1, max: 1.5, noNaN: true })),
            plus: fc.integer({ min: -2, max: 2 })
          })
        },
        {
          weight: 2,
          arbitrary: fc.record({ t: fc.constant("advance" as const), hours: fc.integer({ min: 1, max: 30 }) })
        }
      ),
      { minLength: 6, maxLength: 20 }
    )
  })

// ====================================================================== run

class Violation extends Error {}

const runtimeFor = (target: TestDatabase.Target) =>
  ManagedRuntime.make(
    billingLayer().pipe(
      Layer.provideMerge(
        Layer.effectDiscard(Migrations.run(Subscription.allMigrations)).pipe(
          Layer.provideMerge(TestDatabase.layer(target))
        )
      )
    )
  )
type Runtime = ReturnType<typeof runtimeFor>

let runCounter = 0
const stats = new Map<string, number>()
const count = (key: string) => stats.set(key, (stats.get(key) ?? 0) + 1)

const endedShare = (note: string | undefined) => {
  const m = /^(\d+) of an ended period/.exec(note ?? "")
  return m ? Number(m[1]) : 0
}

const runScenario = (runtime: Runtime, scenario: Scenario) => {
  const run = ++runCounter
  const p = `q${run}`
  const acct = (i: number) => `${p}-a${i}`
  const tok = (i: number) => `${p}-t${i}`
  const log: Array<string> = []
  const fail = (rule: string, detail: string): never => {
    throw new Violation(`[${rule}] ${detail}\n--- run ${run}:\n${log.join("\n")}`)
  }

  const program = Effect.gen(function*() {
    const session = yield* BillingSession.BillingSession
    const wallets = yield* WalletAdmin.WalletAdmin
    const subsAdmin = yield* SubscriptionAdmin.SubscriptionAdmin
    const journal = yield* HoldJournal.HoldJournal
    const ledger = yield* Ledger.Ledger
    yield* TestClock.setTime(run * RUN_SPACING + 10 * 3600 * 1000)

    const opening: Array<number> = []
    const subIds: Array<Array<string>> = []
    for (const [i, spec] of scenario.accounts.entries()) {
      yield* wallets.createAccount({ id: acct(i), balance: spec.balance })
      opening.push(spec.balance)
      yield* wallets.createToken(
        spec.token.unlimited
          ? { id: tok(i), accountId: acct(i), unlimited: true }
          : { id: tok(i), accountId: acct(i), remain: spec.token.remain }
      )
      const ids: Array<string> = []
      for (const [j, s] of spec.subs.entries()) {
        yield* subsAdmin.createPlan({
          id: `${p}-p${i}-${j}`,
          name: `plan ${i}/${j}`,
          totalAmount: s.total,
          resetPeriod: s.daily ? "daily" : "never",
          durationSeconds: 300 * 86_400,
          allowWalletOverflow: s.allowWalletOverflow
        })
        yield* subsAdmin.subscribe({ id: `${p}-s${i}-${j}`, accountId: acct(i), planId: `${p}-p${i}-${j}` })
        ids.push(`${p}-s${i}-${j}`)
      }
      subIds.push(ids)
    }
    log.push(`setup ${JSON.stringify(scenario.accounts)}`)

    const holds: Array<{ readonly id: string; readonly account: number; readonly at: number }> = []
    const accepted = new Map<string, Map<string, { readonly amount: number; readonly result: string }>>()
    let nextHold = 0

    const snapshot = (i: number) =>
      Effect.gen(function*() {
        const a = yield* wallets.account(acct(i))
        const t = yield* wallets.token(tok(i))
        const used: Array<number> = []
        for (const id of subIds[i]!) used.push((yield* subsAdmin.subscription(id)).used)
        const rows = (yield* ledger.entries({ accountId: acct(i) })).length
        return JSON.stringify({ a, t, used, rows })
      })

    const check = (label: string) =>
      Effect.gen(function*() {
        const report = yield* Audit.run(auditBalances, { counters: Subscription.auditCounters })
        if (!report.ok) fail("1 audit", `${label}: ${report.problems.join("; ")}`)
        for (const [i] of scenario.accounts.entries()) {
          let settled = 0
          let charged = 0
          let corrected = 0
          let tokenSettled = 0
          let tokenCorrected = 0
          for (const h of holds.filter((x) => x.account === i)) {
            const hold = (yield* journal.get(h.id))!
            if (hold.status !== "settled" || !hold.settlement) fail("setup", `${label}: hold ${h.id} is ${hold.status}`)
            const s = hold.settlement!
            settled += s.actual
            charged += Hold.charged(s)
            corrected += Hold.corrected(s)
            const mine = [...(accepted.get(h.id)?.values() ?? [])].reduce((sum, c) => sum + c.amount, 0)
            if (Hold.corrected(s) !== mine) {
              fail("4 idempotent", `${label}: hold ${h.id} records ${Hold.corrected(s)}, accepted ${mine}`)
            }
            if (Hold.corrected(s) > Hold.charged(s)) {
              fail("3 never exceeds", `${label}: hold ${h.id} corrected more than charged`)
            }
            const tokenPart = s.parts.find((x) => x.kind === "budget")
            if (tokenPart) {
              tokenSettled += tokenPart.charged
              tokenCorrected += (s.corrections ?? []).reduce(
                (sum, c) => sum + c.parts.filter((x) => x.kind === "budget").reduce((t, x) => t + x.amount, 0),
                0
              )
            }
          }
          const a = yield* wallets.account(acct(i))
          if (a.usedQuota !== charged - corrected) {
            fail(
              "1 usedQuota",
              `${label}: ${acct(i)} usedQuota ${a.usedQuota} != charged ${charged} - corrected ${corrected}`
            )
          }
          const rows = yield* ledger.entries({ accountId: acct(i) })
          const walletOut = opening[i]! - a.balance
          const subOut = -rows
            .filter((e) => e.sourceId === "subscription" && e.kind !== "reset")
            .reduce((sum, e) => sum + e.amount, 0)
          const unbilled = rows.reduce((sum, e) => sum + (e.unbilled ?? 0), 0)
          const ended = rows.filter((e) => e.kind === "correction").reduce((sum, e) => sum + endedShare(e.note), 0)
          if (walletOut + subOut + unbilled !== settled - corrected + ended) {
            fail(
              "2 conservation",
              `${label}: ${
                acct(i)
              }: wallet out ${walletOut} + subscriptions out ${subOut} + unbilled ${unbilled} != settled ${settled} - corrected ${corrected} + ended-period shares ${ended}`
            )
          }
          const t = yield* wallets.token(tok(i))
          const spec = scenario.accounts[i]!.token
          const tokenOut = (spec.unlimited ? 0 : spec.remain) - t.remain
          if (tokenOut !== tokenSettled - tokenCorrected) {
            fail(
              "2 conservation",
              `${label}: token ${tok(i)} out ${tokenOut} != settled ${tokenSettled} - corrected ${tokenCorrected}`
            )
          }
        }
      })

    for (const [n, cmd] of scenario.commands.entries()) {
      const label = `#${n} ${JSON.stringify(cmd)}`
      switch (cmd.t) {
        case "bill": {
          const holdId = `${p}-h${nextHold++}`
          const result = yield* Effect.result(Effect.flatMap(
            session.open({
              holdId,
              accountId: acct(cmd.account),
              tokenId: tok(cmd.account),
              estimate: cmd.estimate,
              preference: cmd.preference,
              ...(cmd.split ? { split: true } : {})
            }),
            (s) => s.settle(cmd.actual)
          ))
          if (result._tag === "Success") {
            holds.push({ id: holdId, account: cmd.account, at: yield* Clock.currentTimeMillis })
            count("settled")
          } else {
            const hold = yield* journal.get(holdId)
            if (hold !== undefined) fail("setup", `${label}: a failed bill left hold ${holdId} ${hold.status}`)
          }
          log.push(`${label} -> ${result._tag === "Success" ? "settled" : result.failure._tag}`)
          break
        }
        case "advance": {
          yield* TestClock.adjust(cmd.hours * 3600 * 1000)
          log.push(label)
          break
        }
        case "correct": {
          if (holds.length === 0) break
          const h = holds[holds.length - 1 - (cmd.back % holds.length)]!
          const hold = (yield* journal.get(h.id))!
          const left = Hold.stillCharged(hold.settlement!)
          const amount = Math.max(1, Math.round(left * cmd.share) + cmd.plus)
          const mine = accepted.get(h.id) ?? new Map()
          accepted.set(h.id, mine)
          const first = mine.get(cmd.id)
          const before = yield* snapshot(h.account)
          const result = yield* Effect.result(session.correct({ holdId: h.id, correctionId: cmd.id, amount }))
          log.push(
            `${label} on ${h.id} (left ${left}) amount ${amount} -> ${
              result._tag === "Success" ? "ok" : result.failure._tag
            }`
          )
          const unchanged = Effect.gen(function*() {
            const after = yield* snapshot(h.account)
            if (after !== before) fail("4 nothing moves", `${label}: ${before} -> ${after}`)
          })
          if (first !== undefined) {
            if (first.amount === amount) {
              if (result._tag !== "Success" || JSON.stringify(result.success) !== first.result) {
                fail("4 idempotent", `${label}: a repeat answered ${JSON.stringify(result)}, first ${first.result}`)
              }
              count("replayed")
            } else {
              if (result._tag !== "Failure" || result.failure._tag !== "IdempotencyConflict") {
                fail(
                  "4 idempotent",
                  `${label}: id reused with ${amount} (first ${first.amount}) answered ${JSON.stringify(result)}`
                )
              }
              count("conflict")
            }
            yield* unchanged
          } else if (amount > left) {
            if (
              result._tag !== "Failure" || result.failure._tag !== "CorrectionExceedsCharge" ||
              result.failure.remaining !== left
            ) {
              fail("3 never exceeds", `${label}: ${amount} > left ${left} answered ${JSON.stringify(result)}`)
            }
            count("exceeds")
            yield* unchanged
          } else if (result._tag === "Failure") {
            fail("4 correct", `${label}: a valid correction failed: ${JSON.stringify(result.failure)}`)
          } else {
            mine.set(cmd.id, { amount, result: JSON.stringify(result.success) })
            count("corrected")
            // in the day of the charge, a daily subscription's period has not ended: nothing is recorded as ended
            const now = yield* Clock.currentTimeMillis
            if (Math.floor(now / DAY) === Math.floor(h.at / DAY)) {
              const rows = yield* ledger.entries({ holdId: h.id })
              const ended = rows.filter((e) => e.kind === "correction").reduce((sum, e) => sum + endedShare(e.note), 0)
              if (ended > 0) fail("2 period", `${label}: ${ended} recorded as an ended period on the day of the charge`)
            } else {
              count("corrected after a day boundary")
              const rows = yield* ledger.entries({ holdId: h.id })
              if (rows.some((e) => e.kind === "correction" && endedShare(e.note) > 0)) {
                count("ended-period share recorded")
              }
              // §3.6: a daily subscription's new period is never credited for a charge of an earlier day
              const daily = new Set(
                scenario.accounts[h.account]!.subs.flatMap((sub, j) => (sub.daily ? [`${p}-s${h.account}-${j}`] : []))
              )
              const credited = rows.filter((e) =>
                e.kind === "correction" && e.at === now && e.sourceId === "subscription" && e.amount > 0 &&
                daily.has(e.subjectId)
              )
              if (credited.length > 0) {
                fail("2 period", `${label}: a later day's period was credited: ${JSON.stringify(credited)}`)
              }
            }
          }
          break
        }
      }
      yield* check(label)
    }
  })

  return runtime.runPromise(program.pipe(Effect.provide(TestClock.layer())))
}

const runtimes: Array<Runtime> = []
afterAll(async () => {
  for (const rt of runtimes) await rt.dispose()
})

describe("issue 8 #14: corrections keep conservation on the knex stores (property)", () => {
  for (const target of targets) {
    it(
      `issue 8 #14: ${target.name}: random corrections, repeated ids, over-corrections and period resets keep every invariant`,
      async () => {
        const runtime = runtimeFor(target)
        runtimes.push(runtime)
        const before = new Map(stats)
        try {
          await fc.assert(
            fc.asyncProperty(scenarioArb(2), (scenario) => runScenario(runtime, scenario)),
            { numRuns: Number(process.env["FC_NUM_RUNS"] ?? RUNS[target.name] ?? 10), ...replay }
          )
        } finally {
          console.log(
            `${target.name} corrections property: ${
              [...stats].sort().map(([k, v]) => `${k}=${v - (before.get(k) ?? 0)}`).join(" ")
            }`
          )
        }
        expect((stats.get("corrected") ?? 0) - (before.get("corrected") ?? 0)).toBeGreaterThan(0)
      },
      300_000
    )
  }
})
