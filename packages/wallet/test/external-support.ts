/**
 * Shared by the external-source suites (issue 8 #4, #5 and the review): an engine whose
 * journal, token budget and counters are in the database (every query first checks a
 * fault plan), funded by sources outside it (in-memory stores standing in for a credits API).
 */
import { AccountCounters, BillingSession, FundingRegistry, HoldJournal, Ledger, SqlStore } from "@relay-billing/core"
import type { FundingSource } from "@relay-billing/core"
import { Accounts, KnexClient, KnexJournal, KnexLedger, KnexSqlStore } from "@relay-billing/knex"
import { InMemoryStore } from "@relay-billing/testkit"
import type { Faults } from "@relay-billing/testkit"
import { Cause, Effect, Exit, Option } from "effect"
import { TokenBudget, WalletAdmin } from "../src/index.js"

/** What the external source holds for an account at the start. */
export const W = 1_000_000
/** The token's budget at the start. */
export const R = 800_000

/** The typed failure of `effect` (dies when it succeeds or fails without a typed error). */
export const failureOf = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) return Effect.die(new Error(`expected a failure, got ${JSON.stringify(exit.value)}`))
    const error = Cause.findErrorOption(exit.cause)
    return Option.isSome(error)
      ? Effect.succeed(error.value)
      : Effect.die(new Error(`expected a typed failure: ${Cause.pretty(exit.cause)}`))
  })

/**
 * An engine whose journal, token budget and counters are in the database in
 * context (every query first checks `faults`), funded by `funding` (external).
 */
export const engineWith = (faults: Faults.Faults, funding: ReadonlyArray<FundingSource.FundingSource>) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const faulty: KnexClient.Client = {
      ...client,
      query: (op, f) => faults.check(op).pipe(Effect.andThen(client.query(op, f))),
      execute: (op, sql, params) => faults.check(op).pipe(Effect.andThen(client.execute(op, sql, params)))
    }
    return yield* BillingSession.BillingSession.make().pipe(
      Effect.provideService(HoldJournal.HoldJournal, KnexJournal.make(faulty)),
      Effect.provideService(SqlStore.SqlStore, KnexSqlStore.make(faulty)),
      Effect.provideService(Ledger.Ledger, KnexLedger.make(faulty)),
      Effect.provideService(
        FundingRegistry.FundingRegistry,
        FundingRegistry.FundingRegistry.make({ funding, budgets: [TokenBudget.make()] })
      ),
      Effect.provideService(AccountCounters.AccountCounters, Accounts.makeCounters(faulty))
    )
  })

/** An account (wallet 0 in the database) with a token, and `W` on the external source. */
export const setup = (id: string, ext: ReadonlyArray<readonly [InMemoryStore.InMemoryStore, number]>) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    yield* admin.createAccount({ id, balance: 0 })
    yield* admin.createToken({ id: `${id}-t`, accountId: id, remain: R })
    for (const [store, balance] of ext) yield* store.createAccount(id, balance)
  })

export const dbState = (id: string) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    const a = yield* admin.account(id)
    const t = yield* admin.token(`${id}-t`)
    return { usedQuota: a.usedQuota, requestCount: a.requestCount, R: t.remain, TU: t.used }
  })

export const credits = () => InMemoryStore.make({ ids: { wallet: "credits" } })
