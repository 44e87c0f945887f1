/**
 * An in-memory store with the semantics of a real database: one state, atomic
 * transactions that roll back on failure, defect or interruption, an
 * append-only ledger and account counters. It implements the core's
 * `HoldJournal`, `Ledger`, `AccountCounters` and `SqlStore` (whose `execute`
 * fails: there is no SQL here), plus a wallet, a token budget and a
 * subscription as v2 `Source`s (balance movers without hold ids: the engine
 * owns the holds and writes the ledger rows), so the whole billing life cycle
 * runs without a database. `external` offers the same three as two-phase
 * sources with their own hold records, for tests where this store plays an
 * external system of another store's engine. Every operation goes through a
 * {@link Faults} plan for fault injection.
 *
 * @since 0.1.0
 */
import {
  AccountCounters,
  Audit,
  BillingError,
  BillingSession,
  FundingRegistry,
  HoldJournal,
  Ledger,
  LowBalance,
  Quota,
  SqlStore
} from "@relay-billing/core"
import type { Budget, FundingSource, Hold, HoldIntent, Source } from "@relay-billing/core"
import { Clock, Context, Effect, Layer, Semaphore } from "effect"
import { Faults } from "./Faults.js"
import { partProblems } from "./internal/auditParts.js"
import { makeSubscriptionSource, makeTokenSource, makeWalletSource } from "./internal/memoryMovers.js"
import { makeSubscription, makeTokenBudget, makeWallet } from "./internal/memorySources.js"
import type { StoreHandle } from "./internal/memorySources.js"
import type { State, SubscriptionRow } from "./internal/state.js"
import { emptyState } from "./internal/state.js"

let storeCounter = 0

const intentKey = (holdId: string, phase: string) => `${holdId}\u0000${phase}`

const InTransaction = Context.Reference<ReadonlySet<string>>("@relay-billing/testkit/InTransaction", {
  defaultValue: () => new Set()
})

/**
 * Options of an in-memory store.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoreOptions {
  /** A fault plan (a fresh one by default). */
  readonly faults?: Faults
  /** Wallet settlement caps the balance at zero and records the rest as unbilled. */
  readonly walletFloorAtZero?: boolean
  /** Source ids (defaults `wallet`, `token`, `subscription`). */
  readonly ids?: { readonly wallet?: string; readonly token?: string; readonly subscription?: string }
  /**
   * The low-balance policy of this store (threshold and rate limit). Default: a
   * fresh `LowBalance.inMemory()` per store, so two stores never share a rate limit.
   */
  readonly lowBalance?: LowBalance.Policy
}

/**
 * A subscription to create.
 *
 * @since 0.1.0
 * @category models
 */
export interface NewSubscription {
  readonly id: string
  readonly accountId: string
  /** Quota per period; 0 = unlimited. */
  readonly total: number
  readonly used?: number
  readonly startAt?: number
  readonly endAt: number
  readonly status?: "active" | "expired" | "cancelled"
  readonly allowWalletOverflow?: boolean
}

/**
 * Balances of everything in a store, for assertions.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  readonly wallets: Record<string, number>
  readonly counters: Record<string, { readonly usedQuota: number; readonly requestCount: number }>
  readonly tokens: Record<string, { readonly remain: number; readonly used: number }>
  readonly subscriptions: Record<string, { readonly used: number; readonly total: number }>
  readonly holds: Record<string, Hold.HoldStatus>
}

/**
 * What `audit` found; `problems` is empty when everything reconciles.
 *
 * @since 0.1.0
 * @category models
 */
export interface AuditReport {
  readonly problems: ReadonlyArray<string>
  readonly unbilled: number
}

/**
 * The store.
 *
 * @since 0.1.0
 * @category models
 */
export class InMemoryStore {
  /** Identity used as `storeId` by the journal and the sources of this store. */
  readonly id: string
  readonly faults: Faults
  private state: State = emptyState()
  private readonly lock = Semaphore.makeUnsafe(1)
  /** The wallet (`balance` per account), a funding `Source`. */
  readonly wallet: Source.Source
  /** The token budget (`remain` / `used` per token), a budget `Source`. */
  readonly token: Source.Source
  /** The subscriptions (`used` per subscription, overflow by the plan's rule), a funding `Source`. */
  readonly subscription: Source.Source
  /**
   * The same balances behind the two-phase contract of a source OUTSIDE the
   * hold's store (reserve / settle / refund keyed by hold id): for tests where
   * this store is another store's external credits system. An external
   * system's idempotency is its own business, so these keep per-hold records
   * (a repeat answers the first result; a refunded hold id is never reserved
   * again). Their `storeId` is this store's.
   */
  readonly external: {
    readonly wallet: FundingSource.FundingSource
    readonly token: Budget.Budget
    readonly subscription: FundingSource.FundingSource
  }
  /** This store's `SqlStore`: it has no SQL, so every `execute` fails with a `StoreError` saying so. */
  readonly sql: SqlStore.SqlStore["Service"]
  readonly journal: HoldJournal.HoldJournal["Service"]
  readonly ledger: Ledger.Ledger["Service"]
  readonly counters: AccountCounters.AccountCounters["Service"]
  /**
   * The low-balance policy, provided by {@link layer} next to the core services:
   * its rate limit is this store's own, not the process's.
   */
  readonly lowBalance: LowBalance.Policy

  constructor(options: StoreOptions = {}) {
    this.id = `memory:${++storeCounter}`
    this.faults = options.faults ?? new Faults()
    this.lowBalance = options.lowBalance ?? LowBalance.inMemory()
    const handle: StoreHandle = {
      id: this.id,
      faults: this.faults,
      state: () => this.state,
      atomic: (effect) => this.transaction(effect),
      walletFloorAtZero: options.walletFloorAtZero ?? false
    }
    const walletId = options.ids?.wallet ?? "wallet"
    const tokenId = options.ids?.token ?? "token"
    const subscriptionId = options.ids?.subscription ?? "subscription"
    this.wallet = makeWalletSource(handle, walletId)
    this.token = makeTokenSource(handle, tokenId)
    this.subscription = makeSubscriptionSource(handle, subscriptionId)
    this.external = {
      wallet: makeWallet(handle, walletId),
      token: makeTokenBudget(handle, tokenId),
      subscription: makeSubscription(handle, { id: subscriptionId, walletId })
    }
    const storeId = this.id
    this.sql = SqlStore.SqlStore.of({
      id: storeId,
      dialect: "sqlite",
      table: (name) => name,
      execute: (operation) =>
        Effect.fail(
          new BillingError.StoreError({
            operation,
            detail: `the in-memory store ${storeId} has no SQL: its sources move balances in memory`
          })
        )
    })
    const faults = this.faults
    const atomic = <A, E>(op: string, body: (state: State) => Effect.Effect<A, E>) =>
      this.transaction(Effect.andThen(faults.check(op), Effect.suspend(() => body(this.state))))
    this.journal = HoldJournal.HoldJournal.of({
      storeId: this.id,
      transaction: (effect) => this.transaction(effect),
      inTransaction: Effect.map(InTransaction, (active) => active.has(this.id)),
      insert: (hold) =>
        atomic("journal.insert", (state) => {
          if (state.holds.has(hold.id)) return Effect.succeed(false)
          state.holds.set(hold.id, structuredClone(hold))
          return Effect.succeed(true)
        }),
      get: (holdId) =>
        atomic("journal.get", (state) => {
          const hold = state.holds.get(holdId)
          return Effect.succeed(hold ? structuredClone(hold) : undefined)
        }),
      update: (hold, expected) =>
        atomic("journal.update", (state) => {
          const current = state.holds.get(hold.id)
          if (!current || current.status !== expected) return Effect.succeed(false)
          // As in SQL: `expiresAt` is written only by `insert` and `renew` (a renewal
          // made since the caller read the hold is never undone by this update).
          state.holds.set(hold.id, { ...structuredClone(hold), expiresAt: current.expiresAt })
          return Effect.succeed(true)
        }),
      renew: (holdId, expiresAt) =>
        atomic("journal.renew", (state) => {
          const current = state.holds.get(holdId)
          if (!current || current.status !== "pending" || current.expiresAt >= expiresAt) return Effect.succeed(false)
          state.holds.set(holdId, { ...current, expiresAt })
          return Effect.succeed(true)
        }),
      expired: (now, limit) =>
        atomic("journal.expired", (state) =>
          Effect.succeed(
            [...state.holds.values()]
              .filter((h) => h.status === "pending" && h.expiresAt <= now)
              .sort((a, b) => a.expiresAt - b.expiresAt)
              .slice(0, limit)
              .map((h) => h.id)
          )),
      list: (filter) =>
        atomic("journal.list", (state) =>
          Effect.succeed(
            [...state.holds.values()]
              .filter((h) =>
                (filter.accountId === undefined || h.accountId === filter.accountId) &&
                (filter.status === undefined || h.status === filter.status)
              )
              .map((h) => structuredClone(h))
          )),
      putIntent: (intent) =>
        atomic("journal.putIntent", (state) => {
          state.intents.set(intentKey(intent.holdId, intent.phase), structuredClone(intent))
          return Effect.void
        }),
      insertIntent: (intent) =>
        atomic("journal.insertIntent", (state) => {
          const key = intentKey(intent.holdId, intent.phase)
          const existing = state.intents.get(key)
          if (!existing) state.intents.set(key, structuredClone(intent))
          return Effect.succeed(structuredClone(existing ?? intent))
        }),
      getIntent: (holdId, phase) =>
        atomic("journal.getIntent", (state) => {
          const intent = state.intents.get(intentKey(holdId, phase))
          return Effect.succeed(intent ? structuredClone(intent) : undefined)
        }),
      finishIntent: (holdId, phase, outcome) =>
        atomic("journal.finishIntent", (state) => {
          const intent = state.intents.get(intentKey(holdId, phase))
          if (!intent || intent.status !== "pending") return Effect.succeed(false)
          state.intents.set(intentKey(holdId, phase), { ...intent, status: "done", outcome })
          return Effect.succeed(true)
        }),
      dueIntents: (now, limit) =>
        atomic("journal.dueIntents", (state) =>
          Effect.succeed(
            [...state.intents.values()]
              .filter((i) => i.status === "pending" && i.dueAt <= now)
              .sort((a, b) => a.dueAt - b.dueAt)
              .slice(0, limit)
              .map((i) => ({ holdId: i.holdId, phase: i.phase }))
          ))
    })
    this.ledger = Ledger.Ledger.of({
      append: (entries) =>
        atomic("ledger.append", (state) => {
          for (const entry of entries) state.ledger.push({ id: `L${++state.seq}`, ...entry })
          return Effect.void
        }),
      entries: (filter) =>
        atomic(
          "ledger.entries",
          (state) =>
            Effect.succeed(state.ledger.filter((e) =>
              (filter.accountId === undefined || e.accountId === filter.accountId) &&
              (filter.subjectId === undefined || e.subjectId === filter.subjectId) &&
              (filter.sourceId === undefined || e.sourceId === filter.sourceId) &&
              (filter.holdId === undefined || e.holdId === filter.holdId)
            ))
        )
    })
    this.counters = AccountCounters.AccountCounters.of({
      add: (accountId, change) =>
        atomic("counters.add", (state) => {
          const row = state.counters.get(accountId) ?? { usedQuota: 0, requestCount: 0 }
          // Both counters are checked before either is written (§2.10).
          return Effect.all([
            Quota.addInRange("account.usedQuota", accountId, row.usedQuota, change.usedQuota),
            Quota.addInRange("account.requestCount", accountId, row.requestCount, change.requestCount)
          ]).pipe(Effect.map(([usedQuota, requestCount]) => {
            row.usedQuota = usedQuota
            row.requestCount = requestCount
            state.counters.set(accountId, row)
          }))
        }),
      check: (accountId, change) =>
        this.transaction(Effect.suspend(() => {
          const row = this.state.counters.get(accountId) ?? { usedQuota: 0, requestCount: 0 }
          return Effect.asVoid(Effect.all([
            Quota.addInRange("account.usedQuota", accountId, row.usedQuota, change.usedQuota),
            Quota.addInRange("account.requestCount", accountId, row.requestCount, change.requestCount)
          ]))
        }))
    })
  }

  /**
   * Runs `effect` atomically: serialised with every other operation of this
   * store, and rolled back (the whole state restored) if it fails, dies or is
   * interrupted. Nested calls join the outer transaction.
   */
  transaction<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | BillingError.StoreError, R> {
    const id = this.id
    return Effect.gen({ self: this }, function*() {
      const active = yield* InTransaction
      if (active.has(id)) return yield* effect
      return yield* this.lock.withPermit(
        Effect.suspend(() => {
          const before = structuredClone(this.state)
          return effect.pipe(
            Effect.provideService(InTransaction, new Set([...active, id])),
            Effect.onExit((exit) =>
              Effect.sync(() => {
                if (exit._tag === "Failure") this.state = before
              })
            )
          )
        })
      )
    })
  }

  // ------------------------------------------------------------ admin

  /** Creates an account with an opening wallet balance (a `topup` ledger row). */
  createAccount(accountId: string, balance = 0): Effect.Effect<void, BillingError.StoreError> {
    return this.transaction(Effect.gen({ self: this }, function*() {
      const now = yield* Clock.currentTimeMillis
      this.state.wallets.set(accountId, { balance: 0 })
      this.state.counters.set(accountId, { usedQuota: 0, requestCount: 0 })
      if (balance !== 0) yield* this.applyTopUp(accountId, balance, `open:${accountId}`, now)
    }))
  }

  /** Adds `amount` to a wallet, once per idempotency `key`. Returns false for a repeated key. */
  topUp(accountId: string, amount: number, key: string): Effect.Effect<boolean, BillingError.StoreError> {
    return this.transaction(Effect.gen({ self: this }, function*() {
      const now = yield* Clock.currentTimeMillis
      return yield* this.applyTopUp(accountId, amount, key, now)
    }))
  }

  private applyTopUp(accountId: string, amount: number, key: string, now: number) {
    return Effect.suspend(() => {
      const state = this.state
      if (state.topups.has(key)) return Effect.succeed(false)
      const row = state.wallets.get(accountId)
      if (!row) {
        return Effect.fail(new BillingError.StoreError({ operation: "topUp", detail: `no account ${accountId}` }))
      }
      row.balance += amount
      state.topups.add(key)
      state.ledger.push({
        id: `L${++state.seq}`,
        at: now,
        kind: "topup",
        sourceId: this.wallet.id,
        subjectId: accountId,
        accountId,
        amount,
        balanceAfter: row.balance,
        note: key
      })
      return Effect.succeed(true)
    })
  }

  /** Creates a token (API key) with a budget, or unlimited. */
  createToken(
    tokenId: string,
    accountId: string,
    budget: { readonly remain?: number; readonly unlimited?: boolean }
  ): Effect.Effect<void, BillingError.StoreError> {
    return this.transaction(Effect.gen({ self: this }, function*() {
      const now = yield* Clock.currentTimeMillis
      const state = this.state
      const remain = budget.remain ?? 0
      state.tokens.set(tokenId, { accountId, remain, used: 0, unlimited: budget.unlimited ?? false })
      if (remain !== 0) {
        state.ledger.push({
          id: `L${++state.seq}`,
          at: now,
          kind: "adjust",
          sourceId: this.token.id,
          subjectId: tokenId,
          accountId,
          amount: remain,
          balanceAfter: remain,
          note: "opening budget"
        })
      }
    }))
  }

  /** Creates a subscription. */
  createSubscription(sub: NewSubscription): Effect.Effect<void, BillingError.StoreError> {
    return this.transaction(Effect.gen({ self: this }, function*() {
      const now = yield* Clock.currentTimeMillis
      const row: SubscriptionRow = {
        id: sub.id,
        accountId: sub.accountId,
        total: sub.total,
        used: 0,
        startAt: sub.startAt ?? now,
        endAt: sub.endAt,
        status: sub.status ?? "active",
        allowWalletOverflow: sub.allowWalletOverflow ?? true
      }
      this.state.subscriptions.set(sub.id, row)
      const used = sub.used ?? 0
      if (used !== 0) {
        row.used = used
        this.state.ledger.push({
          id: `L${++this.state.seq}`,
          at: now,
          kind: "adjust",
          sourceId: this.subscription.id,
          subjectId: sub.id,
          accountId: sub.accountId,
          amount: -used,
          balanceAfter: row.total - row.used,
          note: "opening usage"
        })
      }
    }))
  }

  /** Every balance, counter and hold status, copied. */
  snapshot(): Snapshot {
    const s = this.state
    return {
      wallets: Object.fromEntries([...s.wallets].map(([k, v]) => [k, v.balance])),
      counters: Object.fromEntries([...s.counters].map(([k, v]) => [k, { ...v }])),
      tokens: Object.fromEntries([...s.tokens].map(([k, v]) => [k, { remain: v.remain, used: v.used }])),
      subscriptions: Object.fromEntries([...s.subscriptions].map(([k, v]) => [k, { used: v.used, total: v.total }])),
      holds: Object.fromEntries([...s.holds].map(([k, v]) => [k, v.status]))
    }
  }

  /** The intents recorded for holds with external parts, copied. */
  intents(): ReadonlyArray<HoldIntent.HoldIntent> {
    return structuredClone([...this.state.intents.values()])
  }

  /** The ledger rows, copied. */
  entries(): ReadonlyArray<Ledger.LedgerEntry> {
    return structuredClone(this.state.ledger)
  }

  /**
   * Checks that the ledger sums to every balance (wallets, token budgets,
   * subscriptions), that token `used` mirrors `remain`, that every part agrees
   * with the ledger (and no external record of a hold with the hold's status),
   * and that the counters equal the settled charges.
   */
  audit(): AuditReport {
    const s = this.state
    const problems: Array<string> = []
    const sums = new Map<string, number>()
    let unbilled = 0
    for (const e of s.ledger) {
      const key = `${e.sourceId}\u0000${e.subjectId}`
      sums.set(key, (sums.get(key) ?? 0) + e.amount)
      unbilled += e.unbilled ?? 0
    }
    const sumOf = (sourceId: string, subjectId: string) => sums.get(`${sourceId}\u0000${subjectId}`) ?? 0
    for (const [accountId, w] of s.wallets) {
      const sum = sumOf(this.wallet.id, accountId)
      if (sum !== w.balance) problems.push(`wallet ${accountId}: balance ${w.balance} != ledger ${sum}`)
    }
    for (const [tokenId, t] of s.tokens) {
      const sum = sumOf(this.token.id, tokenId)
      if (sum !== t.remain) problems.push(`token ${tokenId}: remain ${t.remain} != ledger ${sum}`)
    }
    for (const [subId, sub] of s.subscriptions) {
      const sum = sumOf(this.subscription.id, subId)
      if (sum !== -sub.used) problems.push(`subscription ${subId}: used ${sub.used} != -ledger ${sum}`)
    }
    for (const hold of s.holds.values()) {
      for (const part of hold.parts) {
        const rec = s.parts.get(`${part.sourceId}\u0000${hold.id}`)
        if (!rec) continue
        const expected = hold.status === "pending" ? "reserved" : hold.status === "settled" ? "settled" : "refunded"
        if (rec.status !== expected) {
          problems.push(`hold ${hold.id} is ${hold.status} but ${part.sourceId} says ${rec.status}`)
        }
      }
    }
    // §3.4, §4.4 and §6: usedQuota = what settlements (late charges too) charged, less corrections.
    const settledCharge = Audit.expectedUsedQuota(s.holds.values())
    for (const [accountId, c] of s.counters) {
      const expected = settledCharge.get(accountId) ?? 0
      if (c.usedQuota !== expected) {
        problems.push(`account ${accountId}: usedQuota ${c.usedQuota} != settled charges less corrections ${expected}`)
      }
    }
    // Spec §6: nothing given back on a settled hold; every part's amount equals its ledger sum.
    const local = new Set([this.wallet.id, this.token.id, this.subscription.id])
    problems.push(...partProblems(s, local))
    // §6: every late charge is recorded on its expired hold and agrees with the ledger.
    problems.push(...Audit.lateSettleProblems(s.holds.values(), s.ledger, local))
    return { problems, unbilled }
  }

  /**
   * Changes the stored state directly, bypassing every source and the journal
   * (no ledger row, no checks): for tests that tamper with the "database" and
   * expect `audit` to notice.
   */
  unsafeTamper(mutate: (state: State) => void): void {
    mutate(this.state)
  }

  /**
   * The core services of this store: journal, ledger, counters, a registry of
   * its sources, and its low-balance policy (so the rate limit is per store, not
   * per process).
   */
  layer(): Layer.Layer<
    | HoldJournal.HoldJournal
    | Ledger.Ledger
    | AccountCounters.AccountCounters
    | FundingRegistry.FundingRegistry
    | SqlStore.SqlStore
  > {
    return Layer.mergeAll(
      Layer.succeed(HoldJournal.HoldJournal, this.journal),
      Layer.succeed(Ledger.Ledger, this.ledger),
      Layer.succeed(AccountCounters.AccountCounters, this.counters),
      Layer.succeed(SqlStore.SqlStore, this.sql),
      FundingRegistry.FundingRegistry.layer({ sources: [this.wallet, this.subscription, this.token] }),
      Layer.succeed(LowBalance.LowBalance, this.lowBalance)
    )
  }

  /**
   * A ready `BillingSession` over this store (plus the store's core services);
   * fails with `InvalidInput` for an option out of bounds (`holdTtlMillis`).
   */
  billingLayer(options?: BillingSession.Options): Layer.Layer<
    | BillingSession.BillingSession
    | HoldJournal.HoldJournal
    | Ledger.Ledger
    | AccountCounters.AccountCounters
    | FundingRegistry.FundingRegistry
    | SqlStore.SqlStore,
    BillingError.InvalidInput
  > {
    return BillingSession.BillingSession.layer(options).pipe(Layer.provideMerge(this.layer()))
  }
}

/**
 * Creates a store.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options?: StoreOptions): InMemoryStore => new InMemoryStore(options)
