/**
 * Property-based conservation test over the knex stores (SQLite file, and
 * PostgreSQL when `BILLING_PG_URL` is set — always under CI), with
 * subscriptions, split funding and post-consume charges in the mix.
 *
 * ONE isolated, migrated database per target serves the whole property; every
 * run uses fresh ids prefixed with its run number (`r<n>-…`) and its own
 * TestClock, started at a base time later than every earlier run's, so runs
 * never see each other's accounts and an earlier run's leftovers are at most
 * reaped by a later run's recovery pass.
 *
 * Each run creates 3 accounts, each with a wallet, a limited or unlimited token
 * and 0–2 subscriptions (random totals incl. 0 = unlimited, random
 * `allowWalletOverflow`, plans that never reset, some ending during the run),
 * through `WalletAdmin` / `SubscriptionAdmin`, then drives random commands:
 * open (random account / estimate / preference, `split: true` sometimes, fresh
 * and re-used hold ids), settle (random actual, repeated), refund (repeated,
 * after settle), post-consume `charge` (fresh and repeated ids), top-ups
 * (repeated keys), clock advances + `reapExpired`, and concurrent batches
 * (`Effect.all` with unbounded concurrency).
 *
 * After EVERY command:
 *  1. `Audit.run(auditBalances)` is ok;
 *  2. hold statuses only move pending → settled | refunded | expired, a
 *     settlement never changes, a repeated settle returns the first settlement;
 *  3. a failed open / charge changed nothing (accounts, tokens, subscriptions,
 *     ledger rows, the hold — read through the admin services and the ledger);
 *  4. per account, from the ledger rows (`Ledger.entries({ accountId })`):
 *     opening balance + top-ups = wallet balance + Σ wallet charges of settled
 *     holds + pending wallet reservations (refunded / expired holds net 0); per
 *     subscription, used = Σ settled subscription charges + pending subscription
 *     reservations (no resets: plans use `resetPeriod: "never"`);
 *  5. a wallet goes below zero only through settle rows;
 *  6. every hold's funding parts sum to its reserved amount; a hold with more
 *     than one funding part was opened with `split: true` and its parts sum to
 *     the estimate.
 *
 * Replay a failure with the seed / path fast-check prints:
 *   FC_SEED=<seed> FC_PATH=<path> [FC_TARGET=sqlite|postgres] npx vitest run test/conservation.property.db.test.ts
 * (FC_NUM_RUNS overrides the number of runs.)
 */
import { BillingSession, HoldJournal, Ledger } from "@relay-billing/core"
import type { Hold, Source } from "@relay-billing/core"
import { Audit, KnexBilling, Migrations, TestDatabase } from "@relay-billing/knex"
import { TokenBudget, WalletAdmin, WalletSource } from "@relay-billing/wallet"
import { Clock, Effect, Fiber, Layer, ManagedRuntime } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import { afterAll, describe, expect, it } from "vitest"
import { Subscription, SubscriptionAdmin, SubscriptionSource } from "../src/index.js"
import { auditBalances, billingLayer as supportBillingLayer } from "./support.js"

// ====================================================================== config

const targets = TestDatabase.targets().filter((t) => t.name !== "mysql")
  .filter((t) => process.env["FC_TARGET"] === undefined || process.env["FC_TARGET"] === t.name)
const RUNS: Record<string, { numRuns: number; maxCommands: number }> = {
  sqlite: { numRuns: 25, maxCommands: 25 },
  postgres: { numRuns: 15, maxCommands: 20 }
}
const RUN_SPACING = 365 * 24 * 3600 * 1000 // each run's clock starts a year after the previous one's
const replay: { seed?: number; path?: string } = process.env["FC_SEED"] !== undefined
  ? {
    seed: Number(process.env["FC_SEED"]),
    ...(process.env["FC_PATH"] !== undefined ? { path: process.env["FC_PATH"] } : {})
  }
  : {}

// ====================================================================== scenario

interface SubSpec {
  readonly total: number
  readonly allowWalletOverflow: boolean
  readonly durationSeconds: number
}
interface AccountSpec {
  readonly balance: number
  readonly token: { readonly unlimited: true } | { readonly unlimited: false; readonly remain: number }
  readonly subs: ReadonlyArray<SubSpec>
}
type HoldRef = { readonly kind: "fresh" } | { readonly kind: "reuse"; readonly back: number; readonly same: boolean }

interface OpenCmd {
  readonly t: "open"
  readonly account: number
  readonly withToken: boolean
  readonly estimate: number
  readonly preference: string | undefined
  readonly split: boolean
  readonly ttlMillis: number | undefined
  readonly ref: HoldRef
  /**
   * Aimed at split funding: the estimate is computed when the open runs, as the wallet
   * balance (at least 0) + this fraction of the room left on the account's limited
   * active subscriptions (+1), so neither source alone but both together may cover it.
   */
  readonly relative?: number
}
interface ChargeCmd {
  readonly t: "charge"
  readonly account: number
  readonly withToken: boolean
  readonly actual: number
  readonly preference: string | undefined
  readonly ref: HoldRef
}
interface SettleCmd {
  readonly t: "settle"
  /** Any hold id used so far (also failed opens), else one whose open / charge succeeded. */
  readonly any: boolean
  readonly back: number
  readonly actual: number
  readonly again: number | undefined
}
interface RefundCmd {
  readonly t: "refund"
  readonly any: boolean
  readonly back: number
  readonly again: boolean
}
/** §6 (issue 9): the holder renews a hold's lease (the engine's default TTL). */
interface RenewCmd {
  readonly t: "renew"
  readonly any: boolean
  readonly back: number
}
interface TopUpCmd {
  readonly t: "topup"
  readonly account: number
  readonly key: number
}
type SimpleCmd = OpenCmd | ChargeCmd | SettleCmd | RefundCmd | TopUpCmd | RenewCmd
type Cmd =
  | SimpleCmd
  | { readonly t: "advance"; readonly ms: number; readonly reap: boolean }
  | { readonly t: "parallel"; readonly cmds: ReadonlyArray<SimpleCmd> }

interface Scenario {
  readonly accounts: ReadonlyArray<AccountSpec>
  readonly commands: ReadonlyArray<Cmd>
}

const PREFERENCES = [undefined, "subscription_first", "wallet_first", "subscription_only", "wallet_only"] as const

const subArb: fc.Arbitrary<SubSpec> = fc.record({
  total: fc.oneof(
    { weight: 1, arbitrary: fc.constant(0) },
    { weight: 3, arbitrary: fc.integer({ min: 1, max: 60_000 }) },
    { weight: 1, arbitrary: fc.integer({ min: 60_000, max: 120_000 }) }
  ),
  allowWalletOverflow: fc.boolean(),
  durationSeconds: fc.constantFrom(20 * 60, 30 * 24 * 3600, 30 * 24 * 3600)
})
const accountArb: fc.Arbitrary<AccountSpec> = fc.record({
  balance: fc.oneof(
    { weight: 1, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 40_000 }) },
    { weight: 3, arbitrary: fc.integer({ min: 40_000, max: 150_000 }) }
  ),
  token: fc.oneof(
    { weight: 2, arbitrary: fc.constant({ unlimited: true } as const) },
    {
      weight: 1,
      arbitrary: fc.integer({ min: 0, max: 250_000 }).map((remain) => ({ unlimited: false, remain }) as const)
    }
  ),
  subs: fc.oneof(
    { weight: 1, arbitrary: fc.constant([]) },
    { weight: 3, arbitrary: fc.array(subArb, { minLength: 1, maxLength: 2 }) }
  )
})

const refArb: fc.Arbitrary<HoldRef> = fc.oneof(
  { weight: 4, arbitrary: fc.constant<HoldRef>({ kind: "fresh" }) },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant("reuse" as const), back: fc.nat({ max: 5 }), same: fc.boolean() })
  }
)
const estimateArb = fc.oneof(
  { weight: 1, arbitrary: fc.constant(0) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 50_000 }) },
  { weight: 2, arbitrary: fc.integer({ min: 50_000, max: 250_000 }) }
)
const openArb: fc.Arbitrary<OpenCmd> = fc.record({
  t: fc.constant("open" as const),
  account: fc.nat({ max: 2 }),
  withToken: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  estimate: fc.oneof(
    { weight: 2, arbitrary: estimateArb },
    // the range where neither source alone but both together may cover
    { weight: 1, arbitrary: fc.integer({ min: 20_000, max: 160_000 }) }
  ),
  preference: fc.constantFrom(...PREFERENCES),
  split: fc.oneof({ weight: 2, arbitrary: fc.constant(true) }, { weight: 3, arbitrary: fc.constant(false) }),
  ttlMillis: fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, {
    weight: 1,
    arbitrary: fc.integer({ min: 1_000, max: 20 * 60_000 })
  }),
  ref: refArb
})
/** Opens aimed at split funding: no token, a preference that uses both sources, a mid-range estimate. */
const splitOpenArb: fc.Arbitrary<OpenCmd> = fc.record({
  t: fc.constant("open" as const),
  account: fc.nat({ max: 2 }),
  withToken: fc.constant(false),
  estimate: fc.constant(0),
  preference: fc.constantFrom(undefined, "subscription_first", "wallet_first"),
  split: fc.constant(true),
  ttlMillis: fc.constant(undefined),
  ref: fc.constant<HoldRef>({ kind: "fresh" }),
  relative: fc.double({ min: 0, max: 1.2, noNaN: true })
})
const chargeArb: fc.Arbitrary<ChargeCmd> = fc.record({
  t: fc.constant("charge" as const),
  account: fc.nat({ max: 2 }),
  withToken: fc.boolean(),
  actual: estimateArb,
  preference: fc.constantFrom(...PREFERENCES),
  ref: fc.oneof(
    { weight: 3, arbitrary: fc.constant<HoldRef>({ kind: "fresh" }) },
    {
      weight: 1,
      arbitrary: fc.record({ kind: fc.constant("reuse" as const), back: fc.nat({ max: 3 }), same: fc.constant(true) })
    }
  )
})
const settleArb: fc.Arbitrary<SettleCmd> = fc.record({
  t: fc.constant("settle" as const),
  any: fc.oneof({ weight: 1, arbitrary: fc.constant(true) }, { weight: 4, arbitrary: fc.constant(false) }),
  back: fc.nat({ max: 5 }),
  actual: estimateArb,
  again: fc.option(estimateArb, { nil: undefined })
})
const refundArb: fc.Arbitrary<RefundCmd> = fc.record({
  t: fc.constant("refund" as const),
  any: fc.oneof({ weight: 1, arbitrary: fc.constant(true) }, { weight: 4, arbitrary: fc.constant(false) }),
  back: fc.nat({ max: 5 }),
  again: fc.boolean()
})
const renewArb: fc.Arbitrary<RenewCmd> = fc.record({
  t: fc.constant("renew" as const),
  any: fc.oneof({ weight: 1, arbitrary: fc.constant(true) }, { weight: 4, arbitrary: fc.constant(false) }),
  back: fc.nat({ max: 5 })
})
const topUpArb: fc.Arbitrary<TopUpCmd> = fc.record({
  t: fc.constant("topup" as const),
  account: fc.nat({ max: 2 }),
  key: fc.nat({ max: 3 })
})
const simpleArb: fc.Arbitrary<SimpleCmd> = fc.oneof(
  { weight: 5, arbitrary: openArb },
  { weight: 3, arbitrary: splitOpenArb },
  { weight: 2, arbitrary: chargeArb },
  { weight: 4, arbitrary: settleArb },
  { weight: 2, arbitrary: refundArb },
  { weight: 2, arbitrary: renewArb },
  { weight: 1, arbitrary: topUpArb }
)
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 10, arbitrary: simpleArb },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("advance" as const),
      ms: fc.integer({ min: 1, max: 15 * 60_000 }),
      reap: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) })
    })
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("parallel" as const),
      cmds: fc.array(simpleArb, { minLength: 2, maxLength: 5 })
    })
  }
)
const scenarioArb = (maxCommands: number): fc.Arbitrary<Scenario> =>
  fc.record({
    accounts: fc.array(accountArb, { minLength: 3, maxLength: 3 }),
    commands: fc.array(cmdArb, { minLength: 1, maxLength: maxCommands, size: "max" })
  })

// ====================================================================== layers

/** An isolated database with the wallet + subscription migrations applied. */
const migratedClient = (target: TestDatabase.Target) =>
  Layer.effectDiscard(Migrations.run(Subscription.allMigrations)).pipe(Layer.provideMerge(TestDatabase.layer(target)))

/**
 * A broken wallet source: its refund gives the reservation back, then credits it
 * a second time (with a ledger row, so the store's own audit still balances).
 * (v2: a wrapper of the `Source`'s move, in the engine's transaction.)
 */
const doubleRefundWallet = (wallet: Source.Source): Source.Source => ({
  ...wallet,
  move: (req) =>
    Effect.gen(function*() {
      const answer = yield* wallet.move(req)
      // v1's refund() covered every give-back of a reservation: refund, expiry and release.
      if (!(req.kind === "refund" || req.kind === "expire" || req.kind === "release") || req.delta <= 0) return answer
      const again = yield* wallet.move({ ...req, kind: "correction" }).pipe(
        Effect.catchTag("QuotaOutOfRange", (e) => Effect.die(e))
      )
      yield* req.sql.execute(
        "broken.ledger",
        `insert into ${
          req.sql.table("ledger")
        } (at, kind, source_id, subject_id, account_id, hold_id, amount, balance_after, note) values (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        [
          0,
          "adjust",
          wallet.id,
          req.subjectId,
          req.accountId,
          req.holdId,
          again.moved,
          again.balanceAfter,
          "broken: second refund credit"
        ]
      )
      return answer
    })
})

/** `billingLayer()`, or the same wiring with the broken wallet source. */
const billingLayer = (variant: "real" | "double-refund-wallet") => {
  if (variant === "real") return supportBillingLayer()
  return Layer.mergeAll(
    KnexBilling.sessionLayer({
      funding: [SubscriptionSource.make(), doubleRefundWallet(WalletSource.make())],
      budgets: [TokenBudget.make()]
    }),
    WalletAdmin.WalletAdmin.layer,
    SubscriptionAdmin.SubscriptionAdmin.layer
  )
}

const runtimeFor = (target: TestDatabase.Target, variant: "real" | "double-refund-wallet" = "real") =>
  ManagedRuntime.make(billingLayer(variant).pipe(Layer.provideMerge(migratedClient(target))))

type Runtime = ReturnType<typeof runtimeFor>

// ====================================================================== run

class Violation extends Error {}

let runCounter = 0
const stats = {
  runs: 0,
  commands: 0,
  operations: 0,
  splitHolds: 0,
  charges: 0,
  parallelBatches: 0,
  retryTicks: 0,
  outcomes: new Map<string, number>()
}
const count = (key: string) => stats.outcomes.set(key, (stats.outcomes.get(key) ?? 0) + 1)

interface Tracked {
  status: Hold.HoldStatus
  settlement: Hold.Settlement | undefined
  split: boolean
}

const runScenario = (runtime: Runtime, scenario: Scenario): Promise<void> => {
  const run = ++runCounter
  const p = `r${run}`
  const acct = (i: number) => `${p}-a${i}`
  const tok = (i: number) => `${p}-t${i}`
  const log: Array<string> = []
  const fail = (tag: string, msg: string): never => {
    throw new Violation(`[${tag}] ${msg}\n--- operations so far (run ${run}):\n${log.join("\n")}`)
  }

  const program = Effect.gen(function*() {
    const session = yield* BillingSession.BillingSession
    const wallets = yield* WalletAdmin.WalletAdmin
    const subsAdmin = yield* SubscriptionAdmin.SubscriptionAdmin
    const journal = yield* HoldJournal.HoldJournal
    const ledger = yield* Ledger.Ledger

    yield* TestClock.setTime(run * RUN_SPACING)

    // ------------------------------------------------------------ setup
    const opening: Array<number> = []
    const subIds: Array<Array<string>> = []
    for (let i = 0; i < scenario.accounts.length; i++) {
      const spec = scenario.accounts[i]!
      yield* wallets.createAccount({ id: acct(i), balance: spec.balance })
      opening.push(spec.balance)
      yield* wallets.createToken(
        spec.token.unlimited
          ? { id: tok(i), accountId: acct(i), unlimited: true }
          : { id: tok(i), accountId: acct(i), remain: spec.token.remain }
      )
      const ids: Array<string> = []
      for (let j = 0; j < spec.subs.length; j++) {
        const s = spec.subs[j]!
        yield* subsAdmin.createPlan({
          id: `${p}-p${i}-${j}`,
          name: `plan ${i}/${j}`,
          totalAmount: s.total,
          resetPeriod: "never",
          durationSeconds: s.durationSeconds,
          allowWalletOverflow: s.allowWalletOverflow
        })
        yield* subsAdmin.subscribe({ id: `${p}-s${i}-${j}`, accountId: acct(i), planId: `${p}-p${i}-${j}` })
        ids.push(`${p}-s${i}-${j}`)
      }
      subIds.push(ids)
    }
    log.push(`setup: ${JSON.stringify(scenario.accounts)}`)

    // ------------------------------------------------------------ model state
    let nextHold = 0
    const holdIds: Array<string> = [] // every hold id used (incl. failed opens)
    const okIds: Array<string> = [] // ids whose open / charge succeeded
    const addOk = (id: string) => {
      if (!okIds.includes(id)) okIds.push(id)
    }
    const openParams = new Map<string, { account: number; withToken: boolean; estimate: number }>()
    const chargeIds: Array<string> = []
    const chargeParams = new Map<string, { account: number; withToken: boolean; preference: string | undefined }>()
    const splitRequested = new Set<string>()
    const tracked = new Map<string, Tracked>()
    const topUps: Array<number> = scenario.accounts.map(() => 0)
    const appliedKeys = new Set<string>()

    const pick = <A>(list: ReadonlyArray<A>, back: number): A | undefined =>
      list.length === 0 ? undefined : list[Math.max(0, list.length - 1 - (back % list.length))]
    const addId = (id: string) => {
      if (!holdIds.includes(id)) holdIds.push(id)
    }

    // ------------------------------------------------------------ snapshots
    const snapshot = Effect.gen(function*() {
      const out: Array<unknown> = []
      for (let i = 0; i < scenario.accounts.length; i++) {
        out.push(yield* wallets.account(acct(i)))
        out.push(yield* wallets.token(tok(i)))
        // sorted: a rolled-back update may change a PostgreSQL table's physical row order
        out.push([...(yield* subsAdmin.subscriptions(acct(i)))].sort((a, b) => (a.id < b.id ? -1 : 1)))
        out.push((yield* ledger.entries({ accountId: acct(i) })).length)
      }
      for (const id of holdIds) out.push((yield* journal.get(id)) ?? null)
      return JSON.stringify(out)
    })

    // ------------------------------------------------------------ invariants
    const check = (label: string) =>
      Effect.gen(function*() {
        // 1. audit
        const report = yield* Audit.run(auditBalances)
        if (!report.ok) fail("1 audit", `${label}: ${report.problems.join("; ")}`)

        // 2. hold lifecycle + 6. parts
        const holds = new Map<string, Hold.Hold>()
        for (const id of holdIds) {
          const hold = yield* journal.get(id)
          const before = tracked.get(id)
          if (!hold) {
            if (before) fail("2 lifecycle", `${label}: hold ${id} vanished (was ${before.status})`)
            continue
          }
          holds.set(id, hold)
          if (before && before.status !== "pending") {
            if (hold.status !== before.status) {
              fail("2 lifecycle", `${label}: hold ${id} moved ${before.status} → ${hold.status}`)
            }
            if (before.settlement && JSON.stringify(hold.settlement) !== JSON.stringify(before.settlement)) {
              fail(
                "2 lifecycle",
                `${label}: settlement of ${id} changed: ${JSON.stringify(before.settlement)} → ${
                  JSON.stringify(hold.settlement)
                }`
              )
            }
          }
          if (hold.status === "settled" && !hold.settlement) {
            fail("2 lifecycle", `${label}: settled hold ${id} has no settlement`)
          }
          tracked.set(id, { status: hold.status, settlement: hold.settlement, split: splitRequested.has(id) })
          const funding = hold.parts.filter((q) => q.kind === "funding")
          const fundingSum = funding.reduce((a, q) => a + q.amount, 0)
          if (fundingSum !== hold.reserved) {
            fail(
              "6 parts",
              `${label}: hold ${id} reserved ${hold.reserved} but its funding parts sum to ${fundingSum}: ${
                JSON.stringify(hold.parts)
              }`
            )
          }
          if (hold.reserved < hold.estimate) {
            fail("6 parts", `${label}: hold ${id} reserved ${hold.reserved} < estimate ${hold.estimate}`)
          }
          for (
            const b of hold.parts.filter((q) => q.kind === "budget")
          ) {
            // an unlimited token records its part without reserving anything
            const unlimited = scenario.accounts[Number(b.subjectId.slice(b.subjectId.lastIndexOf("-t") + 2))]?.token
              .unlimited
            const expected = unlimited ? 0 : hold.reserved
            if (b.amount !== expected) {
              fail("6 parts", `${label}: hold ${id} budget part ${b.amount} ≠ ${expected} (reserved ${hold.reserved})`)
            }
          }
          if (funding.length > 1) {
            if (!splitRequested.has(id)) {
              fail("6 parts", `${label}: hold ${id} has ${funding.length} funding parts without split: true`)
            }
            if (fundingSum !== hold.estimate) {
              fail("6 parts", `${label}: split hold ${id} parts sum ${fundingSum} ≠ estimate ${hold.estimate}`)
            }
            if (
              funding.some((q) => q.amount <= 0)
            ) {
              fail("6 parts", `${label}: split hold ${id} has an empty part: ${JSON.stringify(funding)}`)
            }
            // v2: a source may give several parts (one per subscription), never two of one subject.
            if (
              new Set(funding.map((q) => `${q.sourceId}\u0000${q.subjectId}`)).size !== funding.length
            ) {
              fail("6 parts", `${label}: split hold ${id} draws twice from one subject: ${JSON.stringify(funding)}`)
            }
          }
          if (hold.settlement) {
            const s = hold.settlement
            const fParts = s.parts.filter((q) => q.kind === "funding")
            const covered = fParts.reduce((a, q) => a + q.charged + q.unbilled, 0)
            if (covered !== s.actual) {
              fail(
                "4 conservation",
                `${label}: hold ${id} settled ${s.actual} but its funding parts charged+unbilled ${covered}: ${
                  JSON.stringify(s)
                }`
              )
            }
          }
        }

        // 4. conservation per account, 5. wallet floor
        for (let i = 0; i < scenario.accounts.length; i++) {
          const accountId = acct(i)
          const account = yield* wallets.account(accountId)
          const token = yield* wallets.token(tok(i))
          const subs = yield* subsAdmin.subscriptions(accountId)
          const rows = yield* ledger.entries({ accountId })
          const by = (src: string, holdId: string | undefined) =>
            -rows.filter((r) => r.sourceId === src && r.holdId === holdId).reduce((a, r) => a + r.amount, 0)
          const walletRows = rows.filter((r) => r.sourceId === "wallet")
          const holdless = walletRows.filter((r) => r.holdId === undefined)
          const credited = holdless.reduce((a, r) => a + r.amount, 0)
          if (holdless.some((r) => r.kind !== "topup" && r.kind !== "adjust")) {
            fail("4 conservation", `${label}: ${accountId}: wallet rows without a hold: ${JSON.stringify(holdless)}`)
          }
          if (credited !== opening[i]! + topUps[i]!) {
            fail(
              "4 conservation",
              `${label}: ${accountId}: opening ${opening[i]} + top-ups ${
                topUps[i]
              } but hold-less wallet rows credit ${credited}`
            )
          }
          let walletHeld = 0
          const subUse = new Map<string, number>()
          const accountHolds = [...holds.values()].filter((h) => h.accountId === accountId)
          const holdIdsOfRows = new Set(rows.filter((r) => r.holdId !== undefined).map((r) => r.holdId!))
          for (const id of holdIdsOfRows) {
            if (!accountHolds.some((h) => h.id === id)) {
              fail("4 conservation", `${label}: ${accountId}: ledger rows of unknown hold ${id}`)
            }
          }
          for (const h of accountHolds) {
            const w = by("wallet", h.id)
            const s = by("subscription", h.id)
            const t = by("token", h.id)
            walletHeld += w
            for (
              const r of rows.filter((r) => r.sourceId === "subscription" && r.holdId === h.id)
            ) {
              subUse.set(r.subjectId, (subUse.get(r.subjectId) ?? 0) - r.amount)
            }
            const partSum = (src: string) => h.parts.filter((q) => q.sourceId === src).reduce((a, q) => a + q.amount, 0)
            const what = `${label}: ${accountId}: ${h.status} hold ${h.id} (parts ${JSON.stringify(h.parts)}${
              h.settlement ? `, settlement ${JSON.stringify(h.settlement)}` : ""
            }): ledger nets wallet ${w}, subscription ${s}, token ${t}`
            switch (h.status) {
              case "pending":
                if (w !== partSum("wallet") || s !== partSum("subscription") || t !== partSum("token")) {
                  fail("4 conservation", `${what} ≠ reservations`)
                }
                break
              case "refunded":
              case "expired":
                // An expired hold settled late (§6, issue 9) carries its late charge: as a settle.
                if (h.status === "expired" && h.settlement?.late === true) {
                  const st = h.settlement
                  const charged = st.parts.filter((q) => q.kind === "funding").reduce((a, q) => a + q.charged, 0)
                  const tokenCharged = st.parts.filter((q) => q.kind === "budget").reduce((a, q) => a + q.charged, 0)
                  if (w + s !== charged) {
                    fail("4 conservation", `${what}: late wallet + subscription ≠ charged ${charged}`)
                  }
                  if (t !== tokenCharged) {
                    fail("4 conservation", `${what}: late token ≠ charged ${tokenCharged}`)
                  }
                  break
                }
                if (w !== 0 || s !== 0 || t !== 0) fail("4 conservation", `${what}, expected 0`)
                break
              case "settled": {
                const st = h.settlement!
                const charged = st.parts.filter((q) => q.kind === "funding").reduce((a, q) => a + q.charged, 0)
                const tokenCharged = st.parts.filter((q) => q.kind === "budget").reduce((a, q) => a + q.charged, 0)
                if (w + s !== charged) fail("4 conservation", `${what}: wallet + subscription ≠ charged ${charged}`)
                if (t !== tokenCharged) fail("4 conservation", `${what}: token ≠ charged ${tokenCharged}`)
                const unbilledRows = rows
                  .filter((r) => r.holdId === h.id && r.sourceId !== "token")
                  .reduce((a, r) => a + (r.unbilled ?? 0), 0)
                const unbilled = st.parts.filter((q) => q.kind === "funding").reduce((a, q) => a + q.unbilled, 0)
                if (unbilledRows !== unbilled) {
                  fail("4 conservation", `${what}: unbilled rows ${unbilledRows} ≠ settlement unbilled ${unbilled}`)
                }
                break
              }
            }
          }
          if (opening[i]! + topUps[i]! !== account.balance + walletHeld) {
            fail(
              "4 conservation",
              `${label}: ${accountId}: opening ${opening[i]} + top-ups ${
                topUps[i]
              } ≠ balance ${account.balance} + settled charges and pending reservations ${walletHeld}`
            )
          }
          for (const sub of subs) {
            const used = subUse.get(sub.id) ?? 0
            if (sub.used !== used) {
              fail(
                "4 conservation",
                `${label}: subscription ${sub.id} used ${sub.used} but its settled charges + pending reservations are ${used}`
              )
            }
          }
          if (rows.some((r) => r.kind === "reset")) {
            fail("4 conservation", `${label}: ${accountId}: unexpected reset rows`)
          }
          // A post-consume charge reserves unconditionally (the work is done): its reserve row
          // may go below zero, e.g. the subscription's minimum reservation of 1 on a token at 0.
          const postConsumeReserve = (r: Ledger.LedgerEntry) =>
            r.kind === "reserve" && r.holdId !== undefined && chargeParams.has(r.holdId)
          // a limited token goes below zero only through a settlement (or a post-consume reserve)
          for (const r of rows.filter((r) => r.sourceId === "token")) {
            if (
              r.amount < 0 && r.balanceAfter < 0 && r.kind !== "settle" && r.kind !== "late_settle" &&
              !postConsumeReserve(r)
            ) {
              fail(
                "5 floor",
                `${label}: ${token.id}: a ${r.kind} row took the token to ${r.balanceAfter}: ${JSON.stringify(r)}`
              )
            }
          }
          for (const r of walletRows) {
            if (
              r.amount < 0 && r.balanceAfter < 0 && r.kind !== "settle" && r.kind !== "late_settle" &&
              !postConsumeReserve(r)
            ) {
              fail(
                "5 floor",
                `${label}: ${accountId}: a ${r.kind} row took the wallet to ${r.balanceAfter}: ${JSON.stringify(r)}`
              )
            }
          }
          if (
            account.balance < 0 &&
            !walletRows.some((r) => (r.kind === "settle" || r.kind === "late_settle") && r.balanceAfter < 0)
          ) {
            fail("5 floor", `${label}: ${accountId}: balance ${account.balance} < 0 without a settle row below zero`)
          }
        }
      })

    // ------------------------------------------------------------ operations
    const relativeEstimate = (c: OpenCmd) =>
      Effect.gen(function*() {
        const account = yield* wallets.account(acct(c.account))
        const now = yield* Clock.currentTimeMillis
        const subs = yield* subsAdmin.subscriptions(acct(c.account))
        const room = subs
          .filter((x) => x.status === "active" && x.startAt <= now && now < x.endAt && x.total > 0)
          .reduce((a, x) => a + Math.max(0, x.total - x.used), 0)
        return Math.max(0, account.balance) + Math.floor((c.relative ?? 0) * room) + 1
      })
    const openReq = (c: OpenCmd, id: string, computed?: number) => {
      const params = c.ref.kind === "reuse" && c.ref.same ? openParams.get(id) : undefined
      const account = params?.account ?? c.account
      const withToken = params?.withToken ?? c.withToken
      const estimate = params?.estimate ?? computed ?? c.estimate
      return {
        holdId: id,
        accountId: acct(account),
        ...(withToken ? { tokenId: tok(account) } : {}),
        estimate,
        ...(c.preference !== undefined ? { preference: c.preference } : {}),
        ...(c.split ? { split: true } : {}),
        ...(c.ttlMillis !== undefined ? { ttlMillis: c.ttlMillis } : {})
      } satisfies BillingSession.OpenRequest
    }

    /** Picks the hold id of an operation (and records it), before it runs. */
    const prepare = (c: SimpleCmd): { id?: string; detail: string } => {
      switch (c.t) {
        case "open": {
          const id = c.ref.kind === "fresh" ? `${p}-h${nextHold++}` : pick(holdIds, c.ref.back) ?? `${p}-h${nextHold++}`
          addId(id)
          if (c.split) splitRequested.add(id)
          if (!openParams.has(id)) {
            openParams.set(id, {
              account: c.account,
              withToken: c.withToken,
              estimate: c.estimate
            })
          }
          return { id, detail: JSON.stringify(openReq(c, id)) }
        }
        case "charge": {
          const reused = c.ref.kind === "reuse" ? pick(chargeIds, c.ref.back) : undefined
          const id = reused ?? `${p}-h${nextHold++}`
          addId(id)
          if (!chargeParams.has(id)) {
            chargeIds.push(id)
            chargeParams.set(id, { account: c.account, withToken: c.withToken, preference: c.preference })
          }
          return { id, detail: `charge ${id} ${c.actual}` }
        }
        case "settle":
        case "refund":
        case "renew": {
          const id = pick(c.any ? holdIds : okIds, c.back) ?? `${p}-none`
          return { id, detail: `${c.t} ${id}${c.t === "settle" ? ` ${c.actual}` : ""}` }
        }
        case "topup":
          return { detail: `topup ${acct(c.account)} key ${c.key}` }
      }
    }

    const topUpAmount = (c: TopUpCmd) => 1_000 * (c.key + 1) + 7 * c.account

    /** Runs one operation; returns a short outcome. Only checks that need no other operation's absence. */
    const execute = (c: SimpleCmd, id: string | undefined, sequential: boolean) =>
      Effect.gen(function*() {
        stats.operations++
        switch (c.t) {
          case "open": {
            const before = tracked.get(id!)
            const computed = c.relative !== undefined ? yield* relativeEstimate(c) : undefined
            if (computed !== undefined && c.ref.kind === "fresh") {
              openParams.set(id!, { account: c.account, withToken: c.withToken, estimate: computed })
            }
            const r = yield* Effect.result(session.open(openReq(c, id!, computed)))
            if (r._tag === "Failure") {
              count(`open:${r.failure._tag}`)
              if (
                sequential && before === undefined && r.failure._tag !== "IdempotencyConflict" &&
                r.failure._tag !== "HoldResolved"
              ) {
                // a fresh id whose open failed: no hold
                const hold = yield* journal.get(id!)
                if (hold) {
                  fail(
                    "3 failed open",
                    `open ${id} failed with ${r.failure._tag} but left a hold ${JSON.stringify(hold)}`
                  )
                }
              }
              return `fail ${r.failure._tag}`
            }
            addOk(id!)
            if (c.split) count("open:split-requested-ok")
            count(r.success.hold.parts.filter((q) => q.kind === "funding").length > 1 ? "open:split" : "open:ok")
            if (r.success.hold.parts.filter((q) => q.kind === "funding").length > 1) stats.splitHolds++
            if (sequential && before !== undefined && before.status !== "pending") {
              fail("2 lifecycle", `open of resolved hold ${id} (${before.status}) succeeded`)
            }
            return `ok reserved ${r.success.hold.reserved} parts ${
              JSON.stringify(r.success.hold.parts.map((q) => [q.sourceId, q.amount]))
            }`
          }
          case "charge": {
            stats.charges++
            const params = chargeParams.get(id!)!
            const req = {
              holdId: id!,
              accountId: acct(params.account),
              ...(params.withToken ? { tokenId: tok(params.account) } : {}),
              estimate: 0,
              ...(params.preference !== undefined ? { preference: params.preference } : {})
            }
            const before = tracked.get(id!)
            const r = yield* Effect.result(session.charge(req, c.actual))
            if (r._tag === "Failure") {
              count(`charge:${r.failure._tag}`)
              return `fail ${r.failure._tag}`
            }
            count("charge:ok")
            addOk(id!)
            if (sequential && before?.settlement && JSON.stringify(before.settlement) !== JSON.stringify(r.success)) {
              fail(
                "2 lifecycle",
                `repeated charge ${id} returned ${JSON.stringify(r.success)}, first ${
                  JSON.stringify(before.settlement)
                }`
              )
            }
            if (sequential && !before?.settlement && r.success.actual !== c.actual) {
              fail("2 lifecycle", `charge ${id} of ${c.actual} settled ${r.success.actual}`)
            }
            return `ok ${JSON.stringify(r.success.parts.map((q) => [q.sourceId, q.charged, q.unbilled]))}`
          }
          case "settle": {
            const settleOnce = (actual: number) =>
              Effect.gen(function*() {
                const before = tracked.get(id!)
                const r = yield* Effect.result(session.settle(id!, actual))
                if (!sequential) {
                  count(r._tag === "Success" ? "settle:ok" : `settle:${r.failure._tag}`)
                  return r._tag === "Success" ? `ok ${r.success.actual}` : `fail ${r.failure._tag}`
                }
                const hold = yield* journal.get(id!)
                if (r._tag === "Failure") {
                  count(`settle:${r.failure._tag}`)
                  const expected = before === undefined
                    ? (hold ? "?" : "HoldNotFound")
                    : before.status === "pending" || before.status === "settled" || before.status === "expired"
                    ? "success" // an expired hold is charged late (§6, issue 9)
                    : "HoldResolved"
                  if (expected !== r.failure._tag) {
                    fail(
                      "2 lifecycle",
                      `settle ${id} (${before?.status ?? "absent"}) failed with ${r.failure._tag}: ${r.failure.message}`
                    )
                  }
                  return `fail ${r.failure._tag}`
                }
                count("settle:ok")
                if (r.success.late === true) count("settle:late")
                if (
                  (before?.status === "settled" || (before?.status === "expired" && before.settlement !== undefined)) &&
                  JSON.stringify(before.settlement) !== JSON.stringify(r.success)
                ) {
                  fail(
                    "2 lifecycle",
                    `repeated settle ${id} returned ${JSON.stringify(r.success)}, first ${
                      JSON.stringify(before.settlement)
                    }`
                  )
                }
                if (before?.status === "pending" && r.success.actual !== actual) {
                  fail("2 lifecycle", `settle ${id} ${actual} recorded ${r.success.actual}`)
                }
                if (
                  before && before.status !== "pending" && before.status !== "settled" && before.status !== "expired"
                ) {
                  fail("2 lifecycle", `settle of ${before.status} hold ${id} succeeded`)
                }
                if (before?.status === "expired") {
                  // §6: charged late; the hold stays expired and records the late settlement.
                  if (hold?.status !== "expired" || hold.settlement?.late !== true) {
                    fail(
                      "2 lifecycle",
                      `late settle ${id} succeeded but the hold is ${hold?.status} with ${
                        JSON.stringify(hold?.settlement)
                      }`
                    )
                  }
                  if (before.settlement === undefined && r.success.actual !== actual) {
                    fail("2 lifecycle", `late settle ${id} ${actual} recorded ${r.success.actual}`)
                  }
                  tracked.set(id!, { status: "expired", settlement: hold!.settlement, split: splitRequested.has(id!) })
                  return `ok late ${JSON.stringify(r.success.parts.map((q) => [q.sourceId, q.charged, q.unbilled]))}`
                }
                if (hold?.status !== "settled") {
                  fail("2 lifecycle", `settle ${id} succeeded but the hold is ${hold?.status}`)
                }
                tracked.set(id!, { status: "settled", settlement: hold!.settlement, split: splitRequested.has(id!) })
                return `ok ${JSON.stringify(r.success.parts.map((q) => [q.sourceId, q.charged, q.unbilled]))}`
              })
            const first = yield* settleOnce(c.actual)
            if (sequential && c.again !== undefined) return `${first}; again ${yield* settleOnce(c.again)}`
            return first
          }
          case "refund": {
            const refundOnce = Effect.gen(function*() {
              const before = tracked.get(id!)
              const r = yield* Effect.result(session.refund(id!))
              if (r._tag === "Failure") {
                count(`refund:${r.failure._tag}`)
                if (sequential && before !== undefined) {
                  fail("2 lifecycle", `refund ${id} (${before.status}) failed with ${r.failure._tag}`)
                }
                return `fail ${r.failure._tag}`
              }
              count(`refund:${r.success.status}`)
              if (sequential && before !== undefined) {
                const hold = (yield* journal.get(id!))!
                const expectedStatus = before.status === "pending" ? "refunded" : before.status
                const expectedAmount = before.status === "pending"
                  ? hold.parts.filter((q) => q.kind === "funding").reduce((a, q) => a + q.amount, 0)
                  : 0
                if (r.success.status !== expectedStatus || r.success.refunded !== expectedAmount) {
                  fail(
                    "2 lifecycle",
                    `refund ${id} (${before.status}) returned ${
                      JSON.stringify(r.success)
                    }, expected ${expectedStatus} / ${expectedAmount}; hold now ${JSON.stringify(hold)}`
                  )
                }
                if (before.status === "pending" && hold.status !== "refunded") {
                  fail("2 lifecycle", `refund ${id} returned but the hold is ${hold.status}`)
                }
                tracked.set(id!, { status: hold.status, settlement: hold.settlement, split: splitRequested.has(id!) })
              }
              return `ok ${r.success.status} ${r.success.refunded}`
            })
            const first = yield* refundOnce
            if (sequential && c.again) {
              return `${first}; again ${yield* refundOnce}`
            }
            return first
          }
          case "renew": {
            // A renewal only ever moves a pending hold's expiry later (never past 7 days after
            // its open); anything else is a typed error that changes nothing.
            const before = yield* journal.get(id!)
            const r = yield* Effect.result(session.renew(id!))
            const after = yield* journal.get(id!)
            if (r._tag === "Failure") {
              count(`renew:${r.failure._tag}`)
              if (sequential) {
                const expected = before === undefined
                  ? "HoldNotFound"
                  : before.status === "pending"
                  ? "success"
                  : "HoldResolved"
                if (expected !== r.failure._tag) {
                  fail("2 lifecycle", `renew ${id} (${before?.status ?? "absent"}) failed with ${r.failure._tag}`)
                }
                if (before && (after?.status !== before.status || after.expiresAt !== before.expiresAt)) {
                  fail(
                    "2 lifecycle",
                    `a failed renew of ${id} changed the hold: ${JSON.stringify(before)} → ${JSON.stringify(after)}`
                  )
                }
              }
              return `fail ${r.failure._tag}`
            }
            count("renew:ok")
            if (sequential) {
              const now = yield* Clock.currentTimeMillis
              const want = Math.max(
                before!.expiresAt,
                Math.min(now + 10 * 60_000, before!.createdAt + 7 * 24 * 3_600_000)
              )
              if (before?.status !== "pending") {
                fail("2 lifecycle", `renew of ${before?.status ?? "absent"} hold ${id} succeeded`)
              }
              if (after?.status !== "pending" || after.expiresAt !== want || r.success.expiresAt !== want) {
                fail(
                  "2 lifecycle",
                  `renew ${id} at ${now}: expected expiry ${want}, got ${r.success.expiresAt}, stored ${
                    JSON.stringify(after)
                  }`
                )
              }
            }
            return `ok ${r.success.expiresAt}`
          }
          case "topup": {
            const key = `${p}-a${c.account}-k${c.key}`
            const amount = topUpAmount(c)
            const r = yield* wallets.topUp({ accountId: acct(c.account), amount, key })
            count(`topup:${r.applied ? "applied" : "repeat"}`)
            if (r.applied) {
              topUps[c.account] = topUps[c.account]! + amount
            }
            if (r.applied === appliedKeys.has(key)) {
              fail(
                "4 conservation",
                `top-up ${key} applied=${r.applied}, but it was ${appliedKeys.has(key) ? "" : "not "}applied before`
              )
            }
            appliedKeys.add(key)
            return `${r.applied ? "applied" : "repeat"} → ${r.balance}`
          }
        }
      })

    /**
     * knex retries a transaction that hit a deadlock / serialization failure after a
     * (TestClock) sleep; under concurrency a watchdog nudges the test clock so a retry
     * can never wait forever.
     */
    const withRetryTicks = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.gen(function*() {
        const ticker = yield* Effect.forkChild(
          Effect.forever(
            TestClock.withLive(Effect.sleep("300 millis")).pipe(
              Effect.andThen(TestClock.adjust(100)),
              Effect.tap(() => Effect.sync(() => stats.retryTicks++))
            )
          )
        )
        return yield* effect.pipe(Effect.ensuring(Fiber.interrupt(ticker)))
      })

    // ------------------------------------------------------------ commands
    yield* check("setup")
    for (const [n, cmd] of scenario.commands.entries()) {
      stats.commands++
      const label = `#${n} ${cmd.t}`
      switch (cmd.t) {
        case "advance": {
          yield* TestClock.adjust(cmd.ms)
          let line = `${label} +${cmd.ms}ms`
          if (cmd.reap) {
            for (let k = 0; k < 20; k++) {
              const report = yield* session.reapExpired()
              if (report.failures.length > 0) fail("reap", `${label}: reap failures ${JSON.stringify(report.failures)}`)
              if (report.examined === 0) break
            }
            line += " + reap"
            // every hold of this run past its expiry is no longer pending
            const now = yield* Clock.currentTimeMillis
            for (const id of holdIds) {
              const hold = yield* journal.get(id)
              if (hold && hold.status === "pending" && hold.expiresAt <= now) {
                fail("reap", `${label}: hold ${id} still pending past its expiry ${hold.expiresAt} ≤ ${now}`)
              }
            }
          }
          log.push(line)
          yield* check(label)
          break
        }
        case "parallel": {
          stats.parallelBatches++
          const prepared = cmd.cmds.map((c) => ({ c, ...prepare(c) }))
          log.push(`${label}: [${prepared.map((x) => x.detail).join(" | ")}]`)
          const results = yield* withRetryTicks(
            Effect.all(prepared.map((x) => execute(x.c, x.id, false)), { concurrency: "unbounded" })
          )
          log.push(`  → ${results.join(" | ")}`)
          yield* check(label)
          break
        }
        default: {
          const prepared = prepare(cmd)
          log.push(`${label}: ${prepared.detail}`)
          const before = cmd.t === "open" || cmd.t === "charge" ? yield* snapshot : undefined
          const result = yield* execute(cmd, prepared.id, true)
          log.push(`  → ${result}`)
          if (before !== undefined && result.startsWith("fail")) {
            const after = yield* snapshot
            if (after !== before) {
              fail(
                "3 failed open",
                `${label}: a failed ${cmd.t} changed the state:\nbefore ${before}\nafter  ${after}`
              )
            }
          }
          yield* check(label)
        }
      }
    }

    // ------------------------------------------------------------ wrap up: everything resolves
    yield* TestClock.adjust(24 * 3600 * 1000)
    for (let k = 0; k < 20; k++) {
      const report = yield* session.reapExpired()
      if (report.failures.length > 0) fail("reap", `final: reap failures ${JSON.stringify(report.failures)}`)
      if (report.examined === 0) break
    }
    log.push("final: +1 day + reap")
    yield* check("final")
    for (const id of holdIds) {
      const hold = yield* journal.get(id)
      if (hold?.status === "pending") fail("reap", `final: hold ${id} still pending after the recovery pass`)
    }
  })

  return runtime.runPromise(
    program.pipe(
      Effect.provide(TestClock.layer()),
      Effect.ensuring(Effect.sync(() => {
        stats.runs++
      }))
    )
  )
}

// ====================================================================== the tests

const runtimes: Array<Runtime> = []
afterAll(async () => {
  for (const rt of runtimes) await rt.dispose()
})

describe("billing conservation on the knex stores (subscriptions, split funding, post-consume)", () => {
  for (const target of targets) {
    const { maxCommands, numRuns } = RUNS[target.name]!
    it(`${target.name}: every command sequence keeps the billing invariants`, async () => {
      const runtime = runtimeFor(target)
      runtimes.push(runtime)
      const started = Date.now()
      const before = { ...stats, outcomes: new Map(stats.outcomes) }
      try {
        await fc.assert(
          fc.asyncProperty(scenarioArb(maxCommands), (scenario) => runScenario(runtime, scenario)),
          { numRuns: Number(process.env["FC_NUM_RUNS"] ?? numRuns), ...replay }
        )
      } finally {
        console.log(
          `${target.name} conservation property: ${stats.runs - before.runs} runs (incl. shrinking), ${
            stats.commands - before.commands
          } commands, ${stats.operations - before.operations} operations, ${
            stats.parallelBatches - before.parallelBatches
          } concurrent batches, ${stats.splitHolds - before.splitHolds} split holds, ${
            stats.charges - before.charges
          } charges, ${stats.retryTicks - before.retryTicks} retry ticks, in ${Date.now() - started} ms\n  outcomes: ${
            [...stats.outcomes].sort().map(([k, v]) => `${k}=${v - (before.outcomes.get(k) ?? 0)}`).join(" ")
          }`
        )
      }
    }, 120_000)
  }

  it("rejects a wallet source whose refund credits twice (sqlite; the property is not vacuous)", async () => {
    const runtime = runtimeFor({ name: "sqlite" }, "double-refund-wallet")
    runtimes.push(runtime)
    // Deterministic: one wallet-funded open, then its refund.
    const scenario: Scenario = {
      accounts: [
        { balance: 100_000, token: { unlimited: true }, subs: [] },
        { balance: 0, token: { unlimited: true }, subs: [] },
        { balance: 0, token: { unlimited: true }, subs: [] }
      ],
      commands: [
        {
          t: "open",
          account: 0,
          withToken: true,
          estimate: 10_000,
          preference: "wallet_only",
          split: false,
          ttlMillis: undefined,
          ref: { kind: "fresh" }
        },
        { t: "refund", any: false, back: 0, again: false }
      ]
    }
    const error = await runScenario(runtime, scenario).then(() => undefined, (e: unknown) => e)
    expect(error).toBeInstanceOf(Violation)
    expect(String((error as Error).message)).toMatch(
      /\[4 conservation\][^]*refunded hold r\d+-h0[^]*ledger nets wallet -10000/
    )
    // And the random property finds it too.
    const outcome = await fc.check(
      fc.asyncProperty(scenarioArb(15), (s) => runScenario(runtime, s)),
      { numRuns: 30, seed: 20_261_128, endOnFailure: true }
    )
    expect(outcome.failed).toBe(true)
    expect(String(outcome.errorInstance)).toMatch(/\[4 conservation\]/)
  }, 60_000)
})
