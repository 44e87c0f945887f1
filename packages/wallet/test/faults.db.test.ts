/**
 * Injected driver failures at every step of open, settle and refund leave the
 * database consistent, on every target.
 *
 * The billing services run over a faulty `KnexClient`: every `query` (and the
 * commit of every outermost `transaction`) first goes through a testkit
 * `Faults` plan. A clean open / settle / refund is recorded first; then, for
 * each recorded step i, a fresh session makes exactly the i-th step fail and
 * the test asserts that
 *
 * - the operation failed with a typed `StoreError` (or succeeded, when the
 *   failure was absorbed by the client's transaction retry or hit a
 *   best-effort step after the commit, such as the low-balance check),
 * - the wallet, token, counters, hold row, part records and ledger rows of the
 *   session are exactly as before the operation or exactly as after a complete
 *   one (never in between, never a half-recorded hold),
 * - `Audit.run` is clean,
 * - retrying the operation (then finishing the session) converges to the
 *   correct final balances, charging exactly once.
 *
 * Fault modes: `before` (the statement never reaches the database), `after`
 * (the statement ran but its answer was lost: at a commit this is the
 * ambiguous "committed, but the client saw an error" case; inside a
 * transaction it equals `before` at the next step, so it is swept only at the
 * commit and outside transactions) and `deadlock` (a retryable driver error:
 * deadlock / serialization failure, at every step inside the transaction).
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingError, BillingSession } from "@relay-billing/core"
import { Audit, KnexClient } from "@relay-billing/knex"
import { Faults } from "@relay-billing/testkit"
import { Cause, Effect, Exit, Layer, Option, Predicate } from "effect"
import { Wallet, WalletAdmin } from "../src/index.js"
import { migratedClient, targets } from "./support.js"

// ------------------------------------------------------------------ the faulty client

type Mode = "before" | "after" | "deadlock"

/** One step of a recorded operation: a query, or the commit of an outermost transaction. */
interface Step {
  readonly op: string
  readonly inTransaction: boolean
}

const COMMIT = "transaction.commit"

/** What the faulty client does: nothing until armed; then it records steps and consults `faults`. */
class Plan {
  armed = false
  mode: Mode = "before"
  faults = new Faults.Faults()
  log: Array<Step> = []

  arm(mode: Mode, faults: Faults.Faults) {
    this.armed = true
    this.mode = mode
    this.faults = faults
    this.log = []
  }

  disarm() {
    this.armed = false
  }

  /** The fault check of one step, in the current mode. */
  check(op: string): Effect.Effect<void, BillingError.StoreError> {
    const check = this.faults.check(op)
    return this.mode === "deadlock"
      ? Effect.mapError(check, (e) =>
        new BillingError.StoreError({
          operation: e.operation,
          detail: `${e.detail} (deadlock)`,
          // What pg / mysql2 report for a deadlock: the client retries the whole transaction.
          cause: { code: "40P01", errno: 1213, message: "deadlock detected (injected)" }
        }))
      : check
  }
}

const faultyClient = (client: KnexClient.Client, plan: Plan): KnexClient.Client => ({
  ...client,
  query: (op, f) =>
    Effect.gen(function*() {
      if (!plan.armed) return yield* client.query(op, f)
      plan.log.push({ op, inTransaction: yield* client.inTransaction })
      if (plan.mode === "after") {
        const result = yield* client.query(op, f)
        yield* plan.check(op)
        return result
      }
      yield* plan.check(op)
      return yield* client.query(op, f)
    }),
  // The hot path's statements (the driver-level executor) fail at the same steps as the builder's.
  execute: (op, sql, params) =>
    Effect.gen(function*() {
      if (!plan.armed) return yield* client.execute(op, sql, params)
      plan.log.push({ op, inTransaction: yield* client.inTransaction })
      if (plan.mode === "after") {
        const result = yield* client.execute(op, sql, params)
        yield* plan.check(op)
        return result
      }
      yield* plan.check(op)
      return yield* client.execute(op, sql, params)
    }),
  transaction: (effect) =>
    Effect.flatMap(client.inTransaction, (nested) => {
      if (!plan.armed || nested) return client.transaction(effect)
      const commit = Effect.suspend(() => {
        plan.log.push({ op: COMMIT, inTransaction: true })
        return plan.check(COMMIT)
      })
      // before / deadlock: the commit fails before it reaches the database (the transaction
      // rolls back, and a retryable error retries it); after: it committed, the answer was lost.
      return plan.mode === "after"
        ? Effect.tap(client.transaction(effect), () => commit)
        : client.transaction(Effect.tap(effect, () => commit))
    })
})

/** Billing over the faulty client, on an isolated migrated database of `target`. */
const faultyBilling = (target: Parameters<typeof migratedClient>[0], plan: Plan) =>
  Wallet.layer().pipe(
    Layer.provideMerge(Layer.effect(
      KnexClient.KnexClient,
      Effect.gen(function*() {
        return faultyClient(yield* KnexClient.KnexClient, plan)
      })
    )),
    Layer.provide(migratedClient(target))
  )

// ------------------------------------------------------------------ fixture and snapshots

const W = 1_000_000
const R = 500_000
const P = 30_000
/** Settlement amounts: above the estimate for the settle runs, below it for the open runs. */
const A_OPEN = 12_000
const A_SETTLE = 42_000

interface Ids {
  readonly account: string
  readonly token: string
  readonly hold: string
}

let sequence = 0
const freshIds = (label: string): Ids => {
  const n = `${label}-${++sequence}`
  return { account: `acc-${n}`, token: `tok-${n}`, hold: `hold-${n}` }
}

/** Everything one session can touch, without ids, so that sessions compare. */
interface Snapshot {
  readonly balance: number
  readonly usedQuota: number
  readonly requestCount: number
  readonly remain: number
  readonly used: number
  readonly hold: string | null
  readonly parts: ReadonlyArray<string>
  readonly ledger: { readonly wallet: number; readonly token: number; readonly rows: number }
}

const fresh: Snapshot = {
  balance: W,
  usedQuota: 0,
  requestCount: 0,
  remain: R,
  used: 0,
  hold: null,
  parts: [],
  ledger: { wallet: 0, token: 0, rows: 0 }
}
const opened: Snapshot = {
  balance: W - P,
  usedQuota: 0,
  requestCount: 0,
  remain: R - P,
  used: P,
  hold: "pending",
  parts: [`token:reserved:${P}`, `wallet:reserved:${P}`],
  ledger: { wallet: -P, token: -P, rows: 2 }
}
const settled = (a: number): Snapshot => ({
  balance: W - a,
  usedQuota: a,
  requestCount: 1,
  remain: R - a,
  used: a,
  hold: "settled",
  parts: [`token:settled:${P}`, `wallet:settled:${P}`],
  ledger: { wallet: -a, token: -a, rows: a === P ? 2 : 4 }
})
const refunded: Snapshot = {
  balance: W,
  usedQuota: 0,
  requestCount: 0,
  remain: R,
  used: 0,
  hold: "refunded",
  parts: [`token:refunded:${P}`, `wallet:refunded:${P}`],
  ledger: { wallet: 0, token: 0, rows: 4 }
}

const snapshot = (ids: Ids) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const admin = yield* WalletAdmin.WalletAdmin
    const account = yield* admin.account(ids.account)
    const token = yield* admin.token(ids.token)
    const hold = yield* client.query("test.hold", (db) =>
      db(client.table("holds")).where({ id: ids.hold }).first("status", "parts"))
    // v2: the hold's parts are the only record of them (the sources keep none); a part's
    // status is the hold's (pending → reserved, expired → refunded).
    const partStatus = (
      status: string
    ) => (status === "pending" ? "reserved" : status === "expired" ? "refunded" : status)
    const parts = hold
      ? (JSON.parse(String(hold.parts)) as Array<{ sourceId: string; amount: number }>).map((p) => ({
        source_id: p.sourceId,
        status: partStatus(String(hold.status)),
        amount: p.amount
      }))
      : []
    const ledger = yield* client.query("test.ledger", (db) =>
      db(client.table("ledger")).where({ hold_id: ids.hold }).select("source_id", "amount"))
    const sum = (source: string) =>
      (ledger as Array<Record<string, unknown>>).filter((r) =>
        r["source_id"] === source
      ).reduce((s, r) =>
        s + Number(r["amount"]), 0)
    const result: Snapshot = {
      balance: account.balance,
      usedQuota: account.usedQuota,
      requestCount: account.requestCount,
      remain: token.remain,
      used: token.used,
      hold: hold ? String(hold.status) : null,
      parts: (parts as Array<Record<string, unknown>>).map((p) =>
        `${String(p["source_id"])}:${String(p["status"])}:${Number(p["amount"])}`
      ).sort(),
      ledger: { wallet: sum("wallet"), token: sum("token"), rows: ledger.length }
    }
    return result
  })

const sameState = (a: Snapshot, b: Snapshot) => JSON.stringify(a) === JSON.stringify(b)

const setup = (ids: Ids) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    yield* admin.createAccount({ id: ids.account, balance: W })
    yield* admin.createToken({ id: ids.token, accountId: ids.account, remain: R })
  })

const openRequest = (ids: Ids) =>
  ({ holdId: ids.hold, accountId: ids.account, tokenId: ids.token, estimate: P, preference: "wallet_only" }) as const

const auditProblems = Effect.map(Audit.run(Wallet.auditBalances), (r) => r.problems)

// ------------------------------------------------------------------ the operations under test

type Operation = "open" | "settle" | "refund"

interface Scenario {
  /** State the session is brought to (without faults) before the operation. */
  readonly prepare: (ids: Ids) => Effect.Effect<void, unknown, BillingSession.BillingSession | WalletAdmin.WalletAdmin>
  /** The operation the faults hit. */
  readonly run: (ids: Ids) => Effect.Effect<unknown, unknown, BillingSession.BillingSession>
  readonly before: Snapshot
  readonly after: Snapshot
  /** After a failure: retry the operation and finish the session; returns the final expected state. */
  readonly converge: (ids: Ids) => Effect.Effect<Snapshot, unknown, BillingSession.BillingSession>
}

const scenarios: Record<Operation, Scenario> = {
  open: {
    prepare: setup,
    run: (ids) => Effect.flatMap(BillingSession.BillingSession, (b) => b.open(openRequest(ids))),
    before: fresh,
    after: opened,
    converge: (ids) =>
      Effect.gen(function*() {
        const billing = yield* BillingSession.BillingSession
        // A retried open of a hold that an earlier attempt committed (its answer lost) is
        // HoldInFlight, never a second debit (§2.7, issue 8 #3): the client settles it by id.
        const reopened = yield* Effect.result(billing.open(openRequest(ids)))
        if (reopened._tag === "Success") assert.strictEqual(reopened.success.preConsumed, P)
        else assert.strictEqual(reopened.failure._tag, "HoldInFlight")
        const settlement = yield* billing.settle(ids.hold, A_OPEN)
        assert.strictEqual(settlement.actual, A_OPEN)
        return settled(A_OPEN)
      })
  },
  settle: {
    prepare: (ids) =>
      Effect.gen(function*() {
        yield* setup(ids)
        yield* Effect.flatMap(BillingSession.BillingSession, (b) => b.open(openRequest(ids)))
      }),
    run: (ids) => Effect.flatMap(BillingSession.BillingSession, (b) => b.settle(ids.hold, A_SETTLE)),
    before: opened,
    after: settled(A_SETTLE),
    converge: (ids) =>
      Effect.gen(function*() {
        const billing = yield* BillingSession.BillingSession
        const first = yield* billing.settle(ids.hold, A_SETTLE)
        assert.strictEqual(first.actual, A_SETTLE)
        // Another settle and a refund afterwards must not move anything.
        const again = yield* billing.settle(ids.hold, A_SETTLE + 1)
        assert.deepStrictEqual(again, first)
        const refund = yield* billing.refund(ids.hold)
        assert.deepStrictEqual({ status: refund.status, refunded: refund.refunded }, { status: "settled", refunded: 0 })
        return settled(A_SETTLE)
      })
  },
  refund: {
    prepare: (ids) =>
      Effect.gen(function*() {
        yield* setup(ids)
        yield* Effect.flatMap(BillingSession.BillingSession, (b) => b.open(openRequest(ids)))
      }),
    run: (ids) => Effect.flatMap(BillingSession.BillingSession, (b) => b.refund(ids.hold)),
    before: opened,
    after: refunded,
    converge: (ids) =>
      Effect.gen(function*() {
        const billing = yield* BillingSession.BillingSession
        const first = yield* billing.refund(ids.hold)
        assert.strictEqual(first.status, "refunded")
        const again = yield* billing.refund(ids.hold)
        assert.deepStrictEqual({ status: again.status, refunded: again.refunded }, { status: "refunded", refunded: 0 })
        const late = yield* Effect.flip(billing.settle(ids.hold, A_SETTLE))
        assert.strictEqual(late._tag, "HoldResolved")
        return refunded
      })
  }
}

/** The failure of an exit, when it is a typed one. */
const typedFailure = (exit: Exit.Exit<unknown, unknown>): unknown =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.findErrorOption(exit.cause)) : undefined

const render = (exit: Exit.Exit<unknown, unknown>) =>
  Exit.isSuccess(exit) ? "success" : Cause.pretty(exit.cause).split("\n")[0]

// ------------------------------------------------------------------ the suites

for (const target of targets) {
  describe(`injected driver faults on ${target.name}`, () => {
    const plan = new Plan()

    layer(faultyBilling(target, plan), { timeout: 120_000, excludeTestServices: true })((it) => {
      /** Runs `scenario.run` armed with `faults` in `mode`; returns its exit and the steps it took. */
      const armed = <A, E, R>(mode: Mode, faults: Faults.Faults, effect: Effect.Effect<A, E, R>) =>
        Effect.acquireUseRelease(
          Effect.sync(() => plan.arm(mode, faults)),
          () => Effect.exit(effect),
          () => Effect.sync(() => plan.disarm())
        ).pipe(Effect.map((exit) => ({ exit, steps: [...plan.log] })))

      /** The steps a clean run of the operation takes. */
      const record = (operation: Operation) =>
        Effect.gen(function*() {
          const scenario = scenarios[operation]
          const ids = freshIds(`record-${operation}`)
          yield* scenario.prepare(ids)
          const { exit, steps } = yield* armed("before", new Faults.Faults(), scenario.run(ids))
          assert.isTrue(Exit.isSuccess(exit), `a clean ${operation}: ${render(exit)}`)
          assert.deepStrictEqual(yield* snapshot(ids), scenario.after)
          return steps
        })

      /**
       * For each recorded step, one session whose operation fails at exactly that step in
       * `mode`; every violation is collected and reported at the end.
       */
      const sweep = (operation: Operation, mode: Mode) =>
        Effect.gen(function*() {
          const scenario = scenarios[operation]
          const steps = yield* record(operation)
          assert.isAbove(
            steps.length,
            3,
            `${operation} should take several steps: ${steps.map((s) => s.op).join(", ")}`
          )
          if (operation === "open") {
            // The open takes from the token and the wallet, writes the hold and their ledger rows, then commits.
            for (const op of ["journal.insert", "token.take", "wallet.take", "ledger.append", COMMIT]) {
              assert.include(steps.map((s) => s.op), op)
            }
          }
          assert.strictEqual(steps.filter((s) => s.op === COMMIT).length, 1, "one outermost transaction")
          const problems: Array<string> = []
          /** Successes despite the fault: by a transaction retry, or by a best-effort step outside the transaction. */
          let absorbedInTransaction = 0
          let absorbedOutside = 0
          /** Failures that left the complete result behind (the commit answer was lost). */
          let ambiguousAtCommit = 0
          let checkedBefore = false
          for (let i = 0; i < steps.length; i++) {
            const step = steps[i]!
            const nth = steps.slice(0, i + 1).filter((s) => s.op === step.op).length
            const where = `${operation} step ${i + 1}/${steps.length} (${step.op} #${nth}, ${mode})`
            // Inside a transaction, "statement k ran, then failed" leaves the same database as
            // "statement k+1 failed before running" (the before sweep): the after sweep only needs
            // the commit and the steps outside the transaction. A retryable fault outside a
            // transaction is not retried, so the deadlock sweep covers the transaction's steps.
            if (mode === "after" && step.inTransaction && step.op !== COMMIT) continue
            if (mode === "deadlock" && !step.inTransaction) continue
            const ids = freshIds(`${operation}-${mode}-${i + 1}`)
            yield* scenario.prepare(ids)
            if (!checkedBefore) {
              assert.deepStrictEqual(yield* snapshot(ids), scenario.before, `${where}: state before`)
              checkedBefore = true
            }

            const faults = new Faults.Faults().failNth(step.op, nth)
            const { exit, steps: taken } = yield* armed(mode, faults, scenario.run(ids))
            if (faults.injected.length !== 1) {
              problems.push(`${where}: expected exactly one injected fault, got ${JSON.stringify(faults.injected)}`)
            }
            const prefix = taken.slice(0, i + 1).map((s) => s.op)
            if (JSON.stringify(prefix) !== JSON.stringify(steps.slice(0, i + 1).map((s) => s.op))) {
              problems.push(`${where}: the run took other steps than the recorded ones: ${prefix.join(", ")}`)
            }
            const state = yield* snapshot(ids)
            // A failure may leave the complete result only after a commit that was applied but
            // whose answer was lost, or at a step outside the transaction (e.g. after the commit).
            const mayBeComplete = (mode === "after" && step.op === COMMIT) || !step.inTransaction
            // A retryable error inside a transaction must be absorbed by the retry.
            const mustSucceed = mode === "deadlock" && step.inTransaction

            if (Exit.isSuccess(exit)) {
              if (step.inTransaction) absorbedInTransaction++
              else absorbedOutside++
              if (mode !== "deadlock" && step.inTransaction) {
                problems.push(`${where}: succeeded although a non-retryable fault hit its transaction`)
              }
              if (!sameState(state, scenario.after)) {
                problems.push(
                  `${where}: succeeded but the state is ${JSON.stringify(state)}, expected ${
                    JSON.stringify(scenario.after)
                  }`
                )
              }
            } else {
              const error = typedFailure(exit)
              if (!Predicate.isTagged(error, "StoreError")) {
                problems.push(`${where}: expected a typed StoreError, got ${render(exit)}`)
              }
              if (mustSucceed) {
                problems.push(`${where}: a retryable fault inside the transaction was not retried: ${render(exit)}`)
              }
              if (sameState(state, scenario.after)) {
                if (step.op === COMMIT) ambiguousAtCommit++
                if (!mayBeComplete) {
                  problems.push(`${where}: failed but the operation was applied: ${JSON.stringify(state)}`)
                }
              } else if (!sameState(state, scenario.before)) {
                problems.push(
                  `${where}: left a partial state ${JSON.stringify(state)} (before ${
                    JSON.stringify(scenario.before)
                  }, after ${JSON.stringify(scenario.after)})`
                )
              }
            }
            const audit = yield* auditProblems
            if (audit.length > 0) problems.push(`${where}: audit: ${audit.join("; ")}`)

            // Retrying (and finishing the session) converges, charging exactly once.
            const converged = yield* Effect.exit(scenario.converge(ids))
            if (Exit.isFailure(converged)) {
              problems.push(`${where}: the retry failed: ${render(converged)}`)
            } else {
              const final = yield* snapshot(ids)
              if (!sameState(final, converged.value)) {
                problems.push(
                  `${where}: after the retry the state is ${JSON.stringify(final)}, expected ${
                    JSON.stringify(converged.value)
                  }`
                )
              }
            }
          }
          // Every session of the sweep has converged: the whole database reconciles.
          const finalAudit = yield* auditProblems
          if (finalAudit.length > 0) problems.push(`after the sweep: audit: ${finalAudit.join("; ")}`)
          assert.deepStrictEqual(problems, [])
          return { steps, absorbedInTransaction, absorbedOutside, ambiguousAtCommit }
        })

      for (const operation of ["open", "settle", "refund"] as const) {
        it.effect(`${operation}: a statement that fails before reaching the database, at each step, changes nothing; a retry converges`, () =>
          Effect.gen(function*() {
            const { absorbedInTransaction, ambiguousAtCommit } = yield* sweep(operation, "before")
            assert.deepStrictEqual({ absorbedInTransaction, ambiguousAtCommit }, {
              absorbedInTransaction: 0,
              ambiguousAtCommit: 0
            })
          }))

        it.effect(`${operation}: a lost answer after the commit (or after a step outside the transaction) is all or nothing; a retry never double-charges`, () =>
          Effect.gen(function*() {
            const { absorbedInTransaction, ambiguousAtCommit } = yield* sweep(operation, "after")
            assert.strictEqual(absorbedInTransaction, 0)
            // The lost commit acknowledgement leaves the complete result behind (and the retry is a no-op).
            assert.strictEqual(ambiguousAtCommit, 1)
          }))

        it.effect(`${operation}: a deadlock at each step inside the transaction is retried and applied exactly once`, () =>
          Effect.gen(function*() {
            const { absorbedInTransaction, steps } = yield* sweep(operation, "deadlock")
            assert.strictEqual(absorbedInTransaction, steps.filter((s) => s.inTransaction).length)
          }))
      }

      it.effect("a commit that fails before reaching the database rolls the whole open back; retrying opens once", () =>
        Effect.gen(function*() {
          const ids = freshIds("commit-lost")
          yield* setup(ids)
          const { exit } = yield* armed("before", new Faults.Faults().failNext(COMMIT), scenarios.open.run(ids))
          const error = typedFailure(exit)
          assert.instanceOf(error, BillingError.StoreError)
          assert.strictEqual((error as BillingError.StoreError).operation, COMMIT)
          assert.deepStrictEqual(yield* snapshot(ids), fresh)
          const billing = yield* BillingSession.BillingSession
          const hold = yield* Effect.flip(billing.get(ids.hold))
          assert.strictEqual(hold._tag, "HoldNotFound")
          assert.deepStrictEqual(yield* auditProblems, [])
          const session = yield* billing.open(openRequest(ids))
          assert.deepStrictEqual(yield* snapshot(ids), opened)
          yield* session.settle(A_OPEN)
          assert.deepStrictEqual(yield* snapshot(ids), settled(A_OPEN))
          assert.deepStrictEqual(yield* auditProblems, [])
        }))

      it.effect("committed but acknowledged as failed, open → settle → refund each retried: the wallet is charged exactly once", () =>
        Effect.gen(function*() {
          const ids = freshIds("commit-ambiguous")
          const billing = yield* BillingSession.BillingSession
          yield* setup(ids)
          // open: reported failed, but the hold and both reservations are committed.
          const open = yield* armed("after", new Faults.Faults().failNext(COMMIT), billing.open(openRequest(ids)))
          assert.instanceOf(typedFailure(open.exit), BillingError.StoreError)
          assert.deepStrictEqual(yield* snapshot(ids), opened)
          // The client retries the open with the same request id: HoldInFlight (§2.7, issue 8 #3),
          // no second debit; the committed hold is the client's, resolved by id.
          const retriedOpen = yield* Effect.flip(billing.open(openRequest(ids)))
          assert.strictEqual(retriedOpen._tag, "HoldInFlight")
          assert.strictEqual((yield* billing.get(ids.hold)).reserved, P)
          assert.deepStrictEqual(yield* snapshot(ids), opened)
          // settle: reported failed, but committed; the retry returns the first settlement.
          const settle = yield* armed("after", new Faults.Faults().failNext(COMMIT), billing.settle(ids.hold, A_SETTLE))
          assert.instanceOf(typedFailure(settle.exit), BillingError.StoreError)
          assert.deepStrictEqual(yield* snapshot(ids), settled(A_SETTLE))
          const retried = yield* billing.settle(ids.hold, A_SETTLE)
          assert.strictEqual(retried.actual, A_SETTLE)
          assert.deepStrictEqual(yield* snapshot(ids), settled(A_SETTLE))
          // A refund whose commit answer is lost after the settle is a no-op either way.
          const refund = yield* armed("after", new Faults.Faults().failNext(COMMIT), billing.refund(ids.hold))
          assert.isTrue(Exit.isSuccess(refund.exit) || Predicate.isTagged(typedFailure(refund.exit), "StoreError"))
          assert.deepStrictEqual(yield* snapshot(ids), settled(A_SETTLE))
          assert.deepStrictEqual(yield* auditProblems, [])
        }))

      it.effect("a refund committed but acknowledged as failed, retried, credits once", () =>
        Effect.gen(function*() {
          const ids = freshIds("refund-ambiguous")
          const billing = yield* BillingSession.BillingSession
          yield* setup(ids)
          yield* billing.open(openRequest(ids))
          const refund = yield* armed("after", new Faults.Faults().failNext(COMMIT), billing.refund(ids.hold))
          assert.instanceOf(typedFailure(refund.exit), BillingError.StoreError)
          assert.deepStrictEqual(yield* snapshot(ids), refunded)
          const again = yield* billing.refund(ids.hold)
          assert.deepStrictEqual({ status: again.status, refunded: again.refunded }, {
            status: "refunded",
            refunded: 0
          })
          assert.deepStrictEqual(yield* snapshot(ids), refunded)
          assert.deepStrictEqual(yield* auditProblems, [])
        }))

      it.effect("seeded random faults over many sessions: every operation retried until it succeeds charges exactly once", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const sessions = Array.from(
            { length: 8 },
            (_, i) => ({ ids: freshIds(`random-${i}`), settle: i % 3 !== 0, actual: 5_000 * (i + 1) })
          )
          for (const s of sessions) yield* setup(s.ids)
          const faults = new Faults.Faults().random(20_261_128, 0.15)
          let failures = 0
          /** Retries `effect` (armed with the random plan) until it succeeds; non-StoreErrors are bugs. */
          const untilDone = <A, E>(effect: Effect.Effect<A, E, never>) =>
            Effect.gen(function*() {
              for (let attempt = 1; attempt <= 50; attempt++) {
                const { exit } = yield* armed("after", faults, effect)
                if (Exit.isSuccess(exit)) return exit.value
                failures++
                const error = typedFailure(exit)
                assert.instanceOf(error, BillingError.StoreError, render(exit))
                assert.deepStrictEqual(yield* auditProblems, [])
              }
              return assert.fail("an operation kept failing for 50 attempts")
            })
          for (const s of sessions) {
            // HoldInFlight: an earlier attempt committed the hold and its answer was lost (§2.7).
            yield* untilDone(
              billing.open(openRequest(s.ids)).pipe(Effect.asVoid, Effect.catchTag("HoldInFlight", () => Effect.void))
            )
            if (s.settle) yield* untilDone(billing.settle(s.ids.hold, s.actual))
            else yield* untilDone(billing.refund(s.ids.hold))
          }
          assert.isAbove(failures, 0, "the random plan injected no fault")
          for (const s of sessions) {
            assert.deepStrictEqual(yield* snapshot(s.ids), s.settle ? settled(s.actual) : refunded, s.ids.hold)
          }
          assert.deepStrictEqual(yield* auditProblems, [])
        }))
    })
  })
}
