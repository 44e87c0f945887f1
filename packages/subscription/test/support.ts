import { Ledger } from "@relay-billing/core"
import type { BillingSession } from "@relay-billing/core"
import type { Accounts } from "@relay-billing/knex"
import { Audit, KnexBilling, KnexClient, Migrations, TestDatabase } from "@relay-billing/knex"
import { TokenBudget, Wallet, WalletAdmin, WalletSource } from "@relay-billing/wallet"
import { Cause, Effect, Exit, Layer, Option } from "effect"
import { Subscription, SubscriptionAdmin, SubscriptionSource } from "../src/index.js"

/**
 * Options of {@link billingLayer}: what `Subscription.layer` took before v2 (the
 * subscription package no longer knows the wallet; the tests compose them).
 */
export interface LayerOptions {
  readonly wallet?: WalletSource.WalletOptions
  readonly subscription?: SubscriptionSource.SubscriptionOptions
  readonly session?: BillingSession.Options
  readonly lowBalance?: Accounts.LowBalanceOptions
}

/**
 * A `BillingSession` funded by subscriptions, then the wallet (token budgets
 * too), plus `WalletAdmin`, `Accounts` and `SubscriptionAdmin`, over the knex
 * client in context: `KnexBilling.sessionLayer` with the three sources.
 */
export const billingLayer = (options: LayerOptions = {}) =>
  Layer.mergeAll(
    KnexBilling.sessionLayer({
      funding: [SubscriptionSource.make(options.subscription), WalletSource.make(options.wallet)],
      budgets: [TokenBudget.make()],
      ...(options.session ? { session: options.session } : {}),
      ...(options.lowBalance ? { lowBalance: options.lowBalance } : {})
    }),
    WalletAdmin.WalletAdmin.layer,
    SubscriptionAdmin.SubscriptionAdmin.layerWith(
      options.subscription?.timeZone !== undefined ? { timeZone: options.subscription.timeZone } : {}
    )
  )

/** The balances the audit checks: wallets, token budgets and subscription usage. */
export const auditBalances: ReadonlyArray<Audit.BalanceColumn> = [
  ...Wallet.auditBalances,
  ...Subscription.auditBalances
]

/** Every database this run can reach (SQLite always; PG/MySQL from the environment). */
export const targets = TestDatabase.targets()

/** An isolated database with every wallet + subscription migration applied. */
export const migratedClient = (target: TestDatabase.Target) =>
  Layer.effectDiscard(Migrations.run(Subscription.allMigrations)).pipe(
    Layer.provideMerge(TestDatabase.layer(target))
  )

/** Billing over subscriptions + wallet on an isolated, migrated database. */
export const subscriptionBilling = (target: TestDatabase.Target, options: LayerOptions = {}) =>
  billingLayer(options).pipe(Layer.provideMerge(migratedClient(target)))

/** Runs the audit (wallet, token, subscriptions); dies with its problems if it is not clean. */
export const auditClean = Effect.gen(function*() {
  const report = yield* Audit.run(auditBalances, { counters: Subscription.auditCounters })
  if (!report.ok) return yield* Effect.die(new Error(`audit: ${report.problems.join("; ")}`))
  return report
})

/** The typed failure of `effect` (dies when it succeeds or fails without a typed error). */
export const failureOf = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) return Effect.die(new Error(`expected a failure, got ${JSON.stringify(exit.value)}`))
    const error = Cause.findErrorOption(exit.cause)
    return Option.isSome(error)
      ? Effect.succeed(error.value)
      : Effect.die(new Error(`expected a typed failure: ${Cause.pretty(exit.cause)}`))
  })

/** Creates an account (wallet balance `balance`) and optionally its token `${id}-t`. */
export const account = (
  id: string,
  balance: number,
  token?: { readonly remain?: number; readonly unlimited?: boolean }
) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    yield* admin.createAccount({ id, balance })
    if (token) yield* admin.createToken({ id: `${id}-t`, accountId: id, ...token })
  })

export interface PlanSpec {
  readonly total: number
  readonly period?: "never" | "daily" | "weekly" | "monthly" | "custom"
  readonly resetSeconds?: number
  readonly durationSeconds?: number
  readonly allowWalletOverflow?: boolean
  readonly startAt?: number
}

/** A plan `${id}-plan` and the subscription `id` of `accountId` to it. */
export const subscribe = (id: string, accountId: string, spec: PlanSpec) =>
  Effect.gen(function*() {
    const admin = yield* SubscriptionAdmin.SubscriptionAdmin
    yield* admin.createPlan({
      id: `${id}-plan`,
      name: `plan of ${id}`,
      totalAmount: spec.total,
      resetPeriod: spec.period ?? "never",
      ...(spec.resetSeconds !== undefined ? { resetSeconds: spec.resetSeconds } : {}),
      durationSeconds: spec.durationSeconds ?? 30 * 86_400,
      ...(spec.allowWalletOverflow !== undefined ? { allowWalletOverflow: spec.allowWalletOverflow } : {})
    })
    return yield* admin.subscribe({
      id,
      accountId,
      planId: `${id}-plan`,
      ...(spec.startAt !== undefined ? { startAt: spec.startAt } : {})
    })
  })

/** `amount_used` of a subscription. */
export const used = (subscriptionId: string) =>
  Effect.gen(function*() {
    const admin = yield* SubscriptionAdmin.SubscriptionAdmin
    return (yield* admin.subscription(subscriptionId)).used
  })

/** Wallet, counters and (when given) token of an account. */
export const walletState = (accountId: string, tokenId?: string) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    const a = yield* admin.account(accountId)
    const t = tokenId === undefined ? undefined : yield* admin.token(tokenId)
    return {
      W: a.balance,
      usedQuota: a.usedQuota,
      requestCount: a.requestCount,
      ...(t ? { R: t.remain, TU: t.used } : {})
    }
  })

/** Ledger rows matching `filter`, as "source subject kind amount [unbilled]". */
export const ledgerRows = (filter: Ledger.LedgerFilter) =>
  Effect.gen(function*() {
    const ledger = yield* Ledger.Ledger
    const entries = yield* ledger.entries(filter)
    return entries.map((e) =>
      `${e.sourceId} ${e.subjectId} ${e.kind} ${e.amount}${e.unbilled !== undefined ? ` unbilled ${e.unbilled}` : ""}`
    )
  })

/** Number of `reset` ledger rows of a subscription (read straight from the table). */
export const resetRows = (subscriptionId: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const rows = yield* client.query("test.resets", (db) =>
      db(client.table("ledger")).where({ subject_id: subscriptionId, kind: "reset" }).count({ n: "*" }))
    return Number((rows as Array<{ n: unknown }>)[0]?.n ?? 0)
  })

/** Pending holds in the journal (should be none after a failed open). */
export const pendingHolds = (holdIds: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const rows = yield* client.query("test.pending", (db) =>
      db(client.table("holds")).whereIn("id", [...holdIds]).andWhere({ status: "pending" }).select("id"))
    return (rows as Array<{ id: string }>).map((r) =>
      r.id
    )
  })

export const t = (iso: string) => Date.parse(iso)

/** Wallet balance of an account. */
export const walletBalance = (accountId: string) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    return (yield* admin.account(accountId)).balance
  })
