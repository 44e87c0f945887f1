/**
 * Issue 11 #3 property: group commit never loses, double-counts or gives away
 * a unit, on every target. The client batches concurrent transactions (its
 * default); a random set of sessions runs at once on three accounts (opens
 * that the wallet cannot all afford, then a settle, a refund or nothing),
 * with faults injected inside one of each session's transactions, after its
 * writes: a failure, a defect, an interruption, or a row that makes the
 * batch's COMMIT fail (a deferred constraint: PostgreSQL and SQLite) — the
 * session then retries that phase, as a caller would; some sessions are also
 * interrupted from outside at a random point. Then:
 *
 * - every session that was not interrupted from outside finds the database as
 *   its own outcomes say: an open that failed left no hold, a phase that
 *   succeeded is committed (pending, settled with its amount, refunded), a
 *   phase that failed left the hold as it was;
 * - for every account: balance = opening − settled charges − pending
 *   reservations, the token likewise, `usedQuota` = settled charges;
 * - the audit is clean.
 */
import { describe, layer } from "@effect/vitest"
import { BillingError, BillingSession, Hold } from "@relay-billing/core"
import { KnexClient } from "@relay-billing/knex"
import { Context, Effect, Fiber, Layer, Predicate } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import { Wallet, WalletAdmin } from "../src/index.js"
import { auditClean, migratedClient, targets } from "./support.js"

const NUM_RUNS = Number(process.env["FC_NUM_RUNS"] ?? 12)
const OPENING = 100_000
const TOKEN = 10_000_000

type Fault = "none" | "fail" | "die" | "interrupt" | "poison"

interface SessionSpec {
  readonly account: number
  readonly estimate: number
  readonly then: "settle" | "refund" | "hold"
  /** A fraction of the estimate (settles never exceed the reservation here). */
  readonly actualPart: number
  readonly fault: Fault
  /** Which of the session's top-level transactions the fault hits (0: open, 1: settle/refund). */
  readonly faultAt: 0 | 1
  /** Interrupted from outside after this many scheduler yields (undefined: never). */
  readonly killAfter: number | undefined
}

const sessionArb: fc.Arbitrary<SessionSpec> = fc.record({
  account: fc.integer({ min: 0, max: 2 }),
  estimate: fc.integer({ min: 1, max: 45_000 }),
  then: fc.constantFrom("settle" as const, "refund" as const, "hold" as const),
  actualPart: fc.double({ min: 0, max: 1, noNaN: true }),
  fault: fc.constantFrom<Fault>("none", "none", "none", "none", "fail", "die", "interrupt", "poison", "poison"),
  faultAt: fc.constantFrom(0 as const, 1 as const),
  killAfter: fc.option(fc.integer({ min: 0, max: 40 }), { nil: undefined })
})

const scenarioArb = fc.array(sessionArb, { minLength: 2, maxLength: 24 })

/** The fault of the session running on this fiber, and how many of its transactions have begun. */
const CurrentFault = Context.Reference<{ readonly fault: Fault; readonly at: number; count: number } | undefined>(
  "test/CurrentFault",
  { defaultValue: () => undefined }
)

/** The client with faults injected into the outermost transactions of a session that asks for one. */
const faultyClient = (client: KnexClient.Client): KnexClient.Client => ({
  ...client,
  transaction: (effect) =>
    Effect.gen(function*() {
      const plan = yield* CurrentFault
      if (!plan || (yield* client.inTransaction)) return yield* client.transaction(effect)
      const index = plan.count++
      if (index !== plan.at) return yield* client.transaction(effect)
      const inject = Effect.suspend(() => {
        switch (plan.fault) {
          case "fail":
            return Effect.fail(new BillingError.StoreError({ operation: "injected", detail: "injected failure" }))
          case "die":
            return Effect.die(new Error("injected defect"))
          case "interrupt":
            return Effect.interrupt
          case "poison":
            // Checked at COMMIT: the whole batch fails there.
            return client.query("t.poison", (db) =>
              db(client.table("gc_poison")).insert(
                client.dialect === "postgres"
                  ? { id: crypto.randomUUID() }
                  : { id: crypto.randomUUID(), parent_id: "x" }
              )).pipe(Effect.asVoid)
          default:
            return Effect.void
        }
      })
      return yield* client.transaction(Effect.tap(effect, () => inject))
    })
})

const database = (target: Parameters<typeof migratedClient>[0]) =>
  Wallet.layer().pipe(
    Layer.provideMerge(Layer.effect(
      KnexClient.KnexClient,
      Effect.gen(function*() {
        return faultyClient(yield* KnexClient.KnexClient)
      })
    )),
    Layer.provide(migratedClient(target, { groupCommit: true }))
  )

/** A table whose rows make a COMMIT fail (PostgreSQL: a deferred trigger; SQLite: a deferred foreign key). */
const createPoison = Effect.gen(function*() {
  const client = yield* KnexClient.KnexClient
  const t = client.table("gc_poison")
  if (client.dialect === "postgres") {
    yield* client.query("t.ddl", (db) => db.raw(`create table ${t} (id varchar(64) primary key)`))
    yield* client.query("t.ddl", (db) =>
      db.raw(
        `create function ${t}_reject() returns trigger language plpgsql as
         $$ begin raise exception 'injected commit failure'; end $$`
      ))
    yield* client.query("t.ddl", (db) =>
      db.raw(
        `create constraint trigger ${t}_check after insert on ${t}
         deferrable initially deferred for each row execute function ${t}_reject()`
      ))
  } else if (client.dialect === "sqlite") {
    yield* client.query("t.ddl", (db) => db.raw(`create table ${t}_parent (id varchar(64) primary key)`))
    yield* client.query("t.ddl", (db) =>
      db.raw(
        `create table ${t} (id varchar(64) primary key, parent_id varchar(64)
         references ${t}_parent(id) deferrable initially deferred)`
      ))
    yield* client.query("t.fk", (db) => db.raw("pragma foreign_keys = on"))
  }
})

const isCommitFailure = (error: unknown) =>
  Predicate.isTagged(error, "StoreError") && (error as BillingError.StoreError).operation === "transaction.commit"

let runCounter = 0

const runScenario = (scenario: ReadonlyArray<SessionSpec>, poisonable: boolean) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    const billing = yield* BillingSession.BillingSession
    const run = ++runCounter
    const accounts = [0, 1, 2].map((i) => `gc${run}-a${i}`)
    for (const id of accounts) {
      yield* admin.createAccount({ id, balance: OPENING })
      yield* admin.createToken({ id: `${id}-t`, accountId: id, remain: TOKEN })
    }
    const sessions = scenario.map((spec, i) => ({
      spec: spec.fault === "poison" && !poisonable ? { ...spec, fault: "none" as const } : spec,
      holdId: `gc${run}-h${i}`,
      accountId: accounts[spec.account]!,
      actual: Math.floor(spec.estimate * spec.actualPart),
      opened: false,
      resolved: undefined as undefined | "settled" | "refunded"
    }))
    // A caller retries a phase whose batch failed to commit (the poison's neighbours too).
    const retryCommit = <A, E, R>(phase: Effect.Effect<A, E, R>) =>
      Effect.retry(phase, { while: isCommitFailure, times: 3 })
    const fibers = yield* Effect.forEach(sessions, (s) =>
      Effect.forkChild(
        Effect.gen(function*() {
          const handle = yield* retryCommit(billing.open({
            holdId: s.holdId,
            accountId: s.accountId,
            tokenId: `${s.accountId}-t`,
            estimate: s.spec.estimate,
            preference: "wallet_only"
          }))
          s.opened = true
          if (s.spec.then === "settle") {
            yield* retryCommit(handle.settle(s.actual))
            s.resolved = "settled"
          } else if (s.spec.then === "refund") {
            yield* retryCommit(handle.refund)
            s.resolved = "refunded"
          }
        }).pipe(
          Effect.provideService(
            CurrentFault,
            s.spec.fault === "none" ? undefined : { fault: s.spec.fault, at: s.spec.faultAt, count: 0 }
          )
        ),
        { startImmediately: true }
      ))
    // Interrupt some sessions from outside, wherever they are.
    for (let step = 0; step <= 40; step++) {
      for (let i = 0; i < sessions.length; i++) {
        if (sessions[i]!.spec.killAfter === step) yield* Effect.forkChild(Fiber.interrupt(fibers[i]!))
      }
      yield* Effect.yieldNow
    }
    yield* Effect.forEach(fibers, (f) => Effect.exit(Fiber.join(f)), { discard: true })

    const expected = new Map(accounts.map((id) => [id, { settled: 0, pending: 0 }]))
    for (const s of sessions) {
      const hold = yield* billing.get(s.holdId).pipe(
        Effect.catchTag("HoldNotFound", () => Effect.succeed(undefined)),
        Effect.orDie
      )
      const sums = expected.get(s.accountId)!
      if (hold?.status === "pending") sums.pending += hold.reserved
      if (hold?.status === "settled" && hold.settlement) sums.settled += Hold.charged(hold.settlement)
      if (hold && hold.status !== "pending" && hold.status !== "settled" && hold.status !== "refunded") {
        return yield* Effect.die(new Error(`${s.holdId}: unexpected status ${hold.status}`))
      }
      if (s.spec.killAfter !== undefined) continue
      // Not interrupted from outside: the database says what the session's outcomes say.
      const want = !s.opened ? "absent" : s.resolved ?? "pending"
      const got = hold?.status ?? "absent"
      if (want !== got) {
        return yield* Effect.die(new Error(`${s.holdId} (${JSON.stringify(s.spec)}): ${got}, expected ${want}`))
      }
      if (want === "pending" && hold!.reserved !== s.spec.estimate) {
        return yield* Effect.die(new Error(`${s.holdId}: reserved ${hold!.reserved}, expected ${s.spec.estimate}`))
      }
      if (want === "settled" && Hold.charged(hold!.settlement!) !== s.actual) {
        return yield* Effect.die(
          new Error(`${s.holdId}: charged ${Hold.charged(hold!.settlement!)}, expected ${s.actual}`)
        )
      }
    }
    for (const id of accounts) {
      const { pending, settled } = expected.get(id)!
      const account = yield* admin.account(id)
      const token = yield* admin.token(`${id}-t`)
      const got = { balance: account.balance, usedQuota: account.usedQuota, remain: token.remain }
      const want = { balance: OPENING - settled - pending, usedQuota: settled, remain: TOKEN - settled - pending }
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        return yield* Effect.die(new Error(`${id}: ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`))
      }
    }
  })

for (const target of targets) {
  describe(`group commit conservation on ${target.name}`, () => {
    layer(database(target), { timeout: 600_000 })((it) => {
      it.effect(
        "issue 11 #3 property: concurrent sessions with failing, dying, interrupted and commit-failing items conserve every unit",
        () =>
          Effect.gen(function*() {
            yield* createPoison
            const poisonable = (yield* KnexClient.KnexClient).dialect !== "mysql"
            const services = yield* Effect.context<
              BillingSession.BillingSession | WalletAdmin.WalletAdmin | KnexClient.KnexClient
            >()
            yield* Effect.promise(() =>
              fc.assert(
                fc.asyncProperty(scenarioArb, (scenario) =>
                  Effect.runPromise(
                    runScenario(scenario, poisonable).pipe(
                      Effect.provide(services),
                      Effect.provide(TestClock.layer())
                    )
                  )),
                // No shrinking: runs share the database (each with its own accounts and holds).
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
