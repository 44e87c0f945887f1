/**
 * A SQLite test store for sources that keep their balances in SQL (a plugin's
 * own table): the `@relay-billing/testkit/sqlite` entry.
 *
 * The sources' tables live in an in-memory SQLite database (knex over
 * better-sqlite3, one connection, gone when the scope closes); holds, ledger
 * rows and account counters live in the testkit's {@link InMemoryStore}, which
 * also brings its in-memory wallet, token budget and subscription. One
 * transaction spans both: the journal's `transaction` takes the in-memory
 * store's lock, begins a SQLite transaction, and commits SQLite before the
 * in-memory state is kept — a failure, defect or interruption rolls both back.
 * So a plugin's `take` and `move` run in the engine's transaction, against
 * real SQL, exactly as in the knex store, and the suites can inspect the
 * ledger and audit the plugin's `audit` columns against it.
 *
 * The SQL sources' migrations run when the store is made. Needs the optional
 * peer dependencies `knex` and `better-sqlite3`.
 *
 * @since 0.4.0
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
  SqlStore
} from "@relay-billing/core"
import type { Source } from "@relay-billing/core"
import { Context, Effect, Exit, Layer } from "effect"
import type { Scope } from "effect"
import knex from "knex"
import type { Knex } from "knex"
import { InMemoryStore } from "./InMemoryStore.js"
import type { AuditReport, StoreOptions } from "./InMemoryStore.js"
import { partProblems } from "./internal/auditParts.js"
import { emptyState } from "./internal/state.js"

/**
 * Options of a SQLite test store.
 *
 * @since 0.4.0
 * @category models
 */
export interface SqliteStoreOptions extends StoreOptions {
  /**
   * The sources that keep their balances in SQL, registered next to the
   * in-memory wallet, token budget and subscription (each by its `role`);
   * their migrations run when the store is made.
   */
  readonly sources: ReadonlyArray<Source.Source>
  /** The table prefix `SqlStore.table` adds (default `"billing_"`, as the knex store). */
  readonly prefix?: string
}

/** The open SQLite transaction of each store, by store id, for the current fiber. */
const CurrentTransaction = Context.Reference<ReadonlyMap<string, Knex.Transaction>>(
  "@relay-billing/testkit/SqliteStore/CurrentTransaction",
  { defaultValue: () => new Map() }
)

const storeError = (operation: string) => (cause: unknown) =>
  new BillingError.StoreError({ operation, detail: cause instanceof Error ? cause.message : String(cause), cause })

/** What better-sqlite3 answered through `knex.raw`: the rows of a statement that reads, else `{ changes }`. */
const sqlResult = (raw: unknown): SqlStore.SqlResult =>
  Array.isArray(raw)
    ? { rows: raw as ReadonlyArray<Record<string, unknown>>, affected: raw.length }
    : { rows: [], affected: Number((raw as { changes?: number } | undefined)?.changes ?? 0) }

/**
 * The store. Build it with {@link make}.
 *
 * @since 0.4.0
 * @category models
 */
export class SqliteStore {
  /** Identity of the store: the journal's `storeId` and the `SqlStore`'s `id`. */
  readonly id: string
  /** Holds, ledger, counters and the in-memory wallet, token budget and subscription. */
  readonly memory: InMemoryStore
  /** The SQL sources of this store. */
  readonly sources: ReadonlyArray<Source.Source>
  /** The executor over the SQLite database (the current transaction when there is one). */
  readonly sql: SqlStore.SqlStore["Service"]
  /** The in-memory journal, whose `transaction` also spans the SQLite database. */
  readonly journal: HoldJournal.HoldJournal["Service"]

  constructor(
    private readonly db: Knex,
    options: SqliteStoreOptions
  ) {
    this.memory = new InMemoryStore(options)
    this.id = this.memory.id
    this.sources = options.sources
    const prefix = options.prefix ?? "billing_"
    const id = this.id
    this.sql = SqlStore.SqlStore.of({
      id,
      dialect: "sqlite",
      table: (name) => `${prefix}${name}`,
      execute: (operation, sql, params = []) =>
        Effect.gen(function*() {
          const trx = (yield* CurrentTransaction).get(id)
          const raw = yield* Effect.tryPromise({
            try: () => (trx ?? db).raw(sql, params as ReadonlyArray<Knex.Value>),
            catch: storeError(operation)
          })
          return sqlResult(raw)
        })
    })
    this.journal = HoldJournal.HoldJournal.of({
      ...this.memory.journal,
      transaction: (effect) => this.transaction(effect)
    })
  }

  /**
   * Runs `effect` in one transaction of both databases: serialised with every
   * other transaction of the store; SQLite commits first, and a failure,
   * defect or interruption (or a failed commit) rolls back both. Nested calls
   * join the outer transaction.
   */
  transaction<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | BillingError.StoreError, R> {
    const id = this.id
    const db = this.db
    return this.memory.transaction(Effect.gen(function*() {
      const active = yield* CurrentTransaction
      if (active.has(id)) return yield* effect
      return yield* Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const trx = yield* Effect.tryPromise({ try: () => db.transaction(), catch: storeError("sqlite.begin") })
          const next = new Map(active).set(id, trx)
          const exit = yield* Effect.exit(restore(Effect.provideService(effect, CurrentTransaction, next)))
          if (Exit.isSuccess(exit)) {
            const committed = yield* Effect.exit(
              Effect.tryPromise({ try: () => trx.commit(), catch: storeError("sqlite.commit") })
            )
            if (Exit.isSuccess(committed)) return exit.value
            yield* Effect.promise(() => trx.rollback().catch(() => undefined))
            return yield* Effect.failCause(committed.cause)
          }
          yield* Effect.promise(() => trx.rollback().catch(() => undefined))
          return yield* Effect.failCause(exit.cause)
        })
      )
    }))
  }

  /**
   * The core services over this store: the journal (spanning both databases),
   * the in-memory ledger and counters, the `SqlStore`, a registry of the
   * in-memory sources and the SQL sources, and the in-memory store's
   * low-balance policy (its rate limit is this store's own).
   */
  layer(): Layer.Layer<
    | HoldJournal.HoldJournal
    | Ledger.Ledger
    | AccountCounters.AccountCounters
    | FundingRegistry.FundingRegistry
    | SqlStore.SqlStore
  > {
    const memory = this.memory
    return Layer.mergeAll(
      Layer.succeed(HoldJournal.HoldJournal, this.journal),
      Layer.succeed(Ledger.Ledger, memory.ledger),
      Layer.succeed(AccountCounters.AccountCounters, memory.counters),
      Layer.succeed(LowBalance.LowBalance, memory.lowBalance),
      Layer.succeed(SqlStore.SqlStore, this.sql),
      FundingRegistry.FundingRegistry.layer({
        sources: [memory.wallet, memory.subscription, memory.token, ...this.sources]
      })
    )
  }

  /** A ready `BillingSession` over this store (plus the store's services). */
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

  /**
   * The in-memory store's audit, plus, for the SQL sources: every `audit`
   * column (summed per subject; the store's prefix is added to its table)
   * equals its sign times the sum of the source's ledger rows for that
   * subject; every part agrees with its ledger rows (reserve net of release,
   * nothing given back twice, nothing given back on a settled hold); late
   * charges agree with the ledger, over the in-memory and the SQL sources
   * together. Run it at rest (not during other transactions of the store).
   */
  audit(): Effect.Effect<AuditReport, BillingError.StoreError> {
    const { memory, sources, sql } = this
    return Effect.gen(function*() {
      const base = memory.audit()
      const holds = yield* memory.journal.list({})
      const all = yield* memory.ledger.entries({})
      // The in-memory audit checks late charges with only its own sources counted as local,
      // so a late hold with a part of a SQL source reads as a mismatch there: its findings of
      // that check are replaced by the same check over every source of this store.
      const own = new Set([memory.wallet.id, memory.token.id, memory.subscription.id])
      const problems = [...base.problems]
      for (const stale of Audit.lateSettleProblems(holds, all, own)) {
        const at = problems.indexOf(stale)
        if (at >= 0) problems.splice(at, 1)
      }
      const ids = new Set(sources.map((s) => s.id))
      const ledger = all.filter((e) => ids.has(e.sourceId))
      for (const source of sources) {
        const sums = new Map<string, number>()
        for (const e of ledger) {
          if (e.sourceId === source.id) sums.set(e.subjectId, (sums.get(e.subjectId) ?? 0) + e.amount)
        }
        for (const column of source.audit ?? []) {
          const result = yield* sql.execute(
            "sqlite.audit",
            `SELECT ${column.subject} AS subject, SUM(${column.column}) AS value FROM ${
              sql.table(column.table)
            } GROUP BY ${column.subject}`
          )
          const values = new Map(result.rows.map((r) => [String(r["subject"]), Number(r["value"] ?? 0)]))
          for (const subject of new Set([...values.keys(), ...sums.keys()])) {
            const value = values.get(subject) ?? 0
            const expected = (column.sign ?? 1) * (sums.get(subject) ?? 0)
            if (value !== expected) {
              problems.push(
                `${source.id} ${column.table}.${column.column} of ${subject}: ${value}, but its ledger rows say ${expected}`
              )
            }
          }
        }
      }
      const state = { ...emptyState(), holds: new Map(holds.map((h) => [h.id, h])), ledger }
      problems.push(...partProblems(state, ids))
      problems.push(...Audit.lateSettleProblems(holds, all, new Set([...own, ...ids])))
      return { problems, unbilled: base.unbilled }
    })
  }
}

/**
 * Opens a store: an in-memory SQLite database with the SQL sources' migrations
 * applied, destroyed when the scope closes.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { SqliteStore } from "@relay-billing/testkit/sqlite"
 * import { plugin } from "relay-billing-source-vouchers"
 *
 * const program = Effect.gen(function*() {
 *   const store = yield* SqliteStore.make({ sources: [plugin.make({ id: "vouchers", table: "vouchers" })] })
 *   // store.billingLayer(), store.sql, store.audit() ...
 * })
 * ```
 *
 * @since 0.4.0
 * @category constructors
 */
export const make = (options: SqliteStoreOptions): Effect.Effect<SqliteStore, BillingError.StoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const db = yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          knex({
            client: "better-sqlite3",
            connection: { filename: ":memory:" },
            useNullAsDefault: true,
            // one connection for the life of the store: it is the database
            pool: { min: 1, max: 1, idleTimeoutMillis: 2_147_483_647 }
          }),
        catch: storeError("sqlite.open")
      }),
      (db) => Effect.promise(() => db.destroy())
    )
    const store = new SqliteStore(db, options)
    for (const source of options.sources) {
      for (const migration of source.migrations ?? []) {
        yield* migration.up(store.sql).pipe(
          Effect.mapError((e) =>
            new BillingError.StoreError({
              operation: `migrate ${source.id} ${migration.name}`,
              detail: e.detail,
              cause: e
            })
          )
        )
      }
    }
    return store
  })
