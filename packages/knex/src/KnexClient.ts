/**
 * The knex client of relay-billing: built from a URL (`sqlite:PATH`,
 * `sqlite::memory:`, `postgres://…`, `mysql://…`) or from a knex instance the
 * host app already has, closed with its scope. Every query goes through
 * {@link KnexClient.query}, which uses the current transaction when there is one,
 * so a stray root query inside a transaction cannot happen. On SQLite the
 * client uses WAL, a busy timeout, one connection, and serialises writers with
 * a semaphore. Concurrent top-level transactions are group-committed by default
 * (see {@link ClientOptions.groupCommit}).
 *
 * @since 0.1.0
 */
import { BillingError } from "@relay-billing/core"
import type { SqlStore } from "@relay-billing/core"
import { Context, Effect, Layer, Predicate, Schedule, Schema, Semaphore } from "effect"
import type { Exit } from "effect"
import knex from "knex"
import type { Knex } from "knex"
import { executeOn, guard, isStalePlan, noteFailure, transactionAborted } from "./internal/driver.js"
import * as GroupCommit from "./internal/groupCommit.js"
import { sqlResult } from "./internal/result.js"
import { connectionConfig } from "./internal/url.js"
import type { Dialect } from "./internal/url.js"

export type { Dialect }

/**
 * Options of the client.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientOptions {
  /** Table name prefix (default `billing_`). */
  readonly prefix?: string
  /** PostgreSQL schema to use (`search_path`); created if missing. */
  readonly schema?: string
  /** Pool size for PostgreSQL/MySQL (default 10). SQLite always uses one connection. */
  readonly poolMax?: number
  /** SQLite busy timeout in ms (default 5000). */
  readonly busyTimeoutMillis?: number
  /**
   * Group commit: concurrent top-level transactions of this client run as items of one
   * database transaction, each in its own savepoint (one item's failure rolls back only its
   * own writes), committed once; each caller gets its outcome after the commit. `false` runs
   * every transaction on its own. Default: on for SQLite; off for PostgreSQL and MySQL (turn
   * it on with `true` or {@link GroupCommitOptions}): under the reference relay with a 50 ms
   * upstream on one account, PostgreSQL batches stalled requests for tens of seconds, a
   * liveness problem not yet explained (docs/design-decisions.md, issue 11).
   */
  readonly groupCommit?: boolean | GroupCommitOptions
}

/**
 * The settings of group commit.
 *
 * @since 0.5.0
 * @category models
 */
export interface GroupCommitOptions {
  /**
   * Most transactions in one batch (default 64: PostgreSQL keeps the subtransactions of up
   * to 64 savepoints per transaction in shared memory; more slow down every snapshot).
   */
  readonly maxBatch?: number
  /**
   * Batches in flight at once, each on its own connection (default 2; SQLite always 1).
   * One alone serialises every transaction onto one connection (slower on many cold
   * accounts); more can deadlock batches that lock the same rows in different orders
   * (retried). Measured in docs/design-decisions.md, "Group commit".
   */
  readonly maxConcurrentBatches?: number
  /**
   * An item that runs longer than this (ms, default 1000) is rolled back to its savepoint
   * and run again alone in its own transaction, so that it never holds its batch longer.
   */
  readonly itemTimeoutMillis?: number
}

/**
 * The client service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Client {
  /** Identity of this store: sources and the journal with the same id share transactions. */
  readonly id: string
  readonly dialect: Dialect
  readonly prefix: string
  /** The root knex instance (for migrations and host code; billing code uses `query`). */
  readonly knex: Knex
  /** The prefixed name of a table. */
  readonly table: (name: string) => string
  /**
   * Runs `f` on the current transaction, or on the root instance outside one.
   * Failures become a `StoreError` naming `operation`.
   */
  readonly query: <T>(
    operation: string,
    f: (db: Knex | Knex.Transaction) => PromiseLike<T>
  ) => Effect.Effect<T, BillingError.StoreError>
  /**
   * Runs one plain SQL statement with `?` placeholders. Inside a transaction of
   * this client it runs on the transaction's own driver connection, prepared
   * once per connection and text (no query builder, no knex runner); outside one
   * it goes through knex like `query`. Failures become a `StoreError` naming
   * `operation`, with the driver's error as `cause`.
   */
  readonly execute: (
    operation: string,
    sql: string,
    params?: ReadonlyArray<unknown>
  ) => Effect.Effect<SqlStore.SqlResult, BillingError.StoreError>
  /**
   * Runs `effect` in one transaction: commits on success, rolls back on failure,
   * defect or interruption. Nested calls join the outer transaction.
   */
  readonly transaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | BillingError.StoreError, R>
  /** Whether the current fiber is inside a transaction of this client. */
  readonly inTransaction: Effect.Effect<boolean>
}

/**
 * @since 0.1.0
 * @category services
 */
export class KnexClient extends Context.Service<KnexClient, Client>()("@relay-billing/knex/KnexClient") {
  /** A client from a database URL, destroyed when the layer's scope closes. */
  static layerUrl(url: string, options: ClientOptions = {}): Layer.Layer<KnexClient, BillingError.StoreError> {
    return Layer.effect(KnexClient, fromUrl(url, options))
  }

  /** A client over a knex instance the host owns (not destroyed by the layer). */
  static layerKnex(instance: Knex, options: ClientOptions = {}): Layer.Layer<KnexClient, BillingError.StoreError> {
    return Layer.effect(KnexClient, fromKnex(instance, options))
  }
}

let clientCounter = 0

const CurrentTransaction = Context.Reference<ReadonlyMap<string, Knex.Transaction>>(
  "@relay-billing/knex/CurrentTransaction",
  { defaultValue: () => new Map() }
)

const storeError = (operation: string) => (cause: unknown) =>
  new BillingError.StoreError({
    operation,
    detail: cause instanceof Error ? cause.message : String(cause),
    cause
  })

const maxRetries = 12
const retrySchedule = Schedule.exponential("5 millis").pipe(Schedule.jittered)

/** Deadlocks, lock-wait timeouts and serialization failures, on every dialect. */
const isRetryable = (error: unknown): boolean => {
  if (!Predicate.isTagged(error, "StoreError")) return false
  const cause = (error as { readonly cause?: unknown }).cause as { code?: unknown; errno?: unknown } | undefined
  if (!cause || typeof cause !== "object") return false
  // SQLite reports extended codes: SQLITE_BUSY_SNAPSHOT is what a transaction that read
  // before writing gets when another process committed in between (busy_timeout does not
  // apply to it); the whole transaction was rolled back, so running it again is safe.
  // A prepared statement whose table changed under it (PostgreSQL): renamed, prepared afresh on the next run.
  if (isStalePlan(cause)) return true
  return cause.errno === 1213 || cause.errno === 1205 || cause.code === "40P01" || cause.code === "40001" ||
    (typeof cause.code === "string" && cause.code.startsWith("SQLITE_BUSY"))
}

/** A group-commit setting: a positive integer. */
const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))

const isPositiveInt = Schema.is(PositiveInt)

/**
 * Group commit's settings from the client's options (`undefined`: off). A setting that
 * is not a positive integer is an `InvalidInput` naming it (a NaN batch size would
 * otherwise take no item from the queue, forever).
 */
const groupSettings = (
  dialect: Dialect,
  option: ClientOptions["groupCommit"]
): GroupCommit.Settings | undefined | BillingError.InvalidInput => {
  if (option === false) return undefined
  if (option === undefined && dialect !== "sqlite") return undefined
  const given = typeof option === "object" ? option : {}
  for (const field of ["maxBatch", "maxConcurrentBatches", "itemTimeoutMillis"] as const) {
    const value = given[field]
    if (value !== undefined && !isPositiveInt(value)) {
      return new BillingError.InvalidInput({
        field: `groupCommit.${field}`,
        value: String(value),
        reason: "not a positive integer"
      })
    }
  }
  return {
    maxBatch: Math.max(1, given.maxBatch ?? 64),
    maxConcurrentBatches: dialect === "sqlite" ? 1 : Math.max(1, given.maxConcurrentBatches ?? 2),
    itemTimeoutMillis: Math.max(1, given.itemTimeoutMillis ?? 1_000)
  }
}

const dialectOf = (instance: Knex): Dialect => {
  const name = String(instance.client.config.client ?? instance.client.dialect ?? "")
  if (name.includes("sqlite")) return "sqlite"
  if (name.includes("pg") || name.includes("postgres")) return "postgres"
  if (name.includes("mysql")) return "mysql"
  throw new Error(`relay-billing: unsupported knex client ${JSON.stringify(name)}`)
}

/**
 * Builds the client service over a knex instance.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromKnex = (
  instance: Knex,
  options: ClientOptions = {}
): Effect.Effect<Client, BillingError.StoreError> =>
  Effect.gen(function*() {
    const dialect = yield* Effect.try({ try: () => dialectOf(instance), catch: storeError("connect") })
    const id = `knex:${++clientCounter}:${dialect}`
    const prefix = options.prefix ?? "billing_"
    // SQLite has one connection: serialise transactions and root queries in-process so that
    // nothing waits in knex's pool (and times out) behind a long transaction.
    const lock = dialect === "sqlite" ? Semaphore.makeUnsafe(1) : undefined

    const runQuery = <T>(operation: string, f: (db: Knex | Knex.Transaction) => PromiseLike<T>) =>
      Effect.gen(function*() {
        const trx = (yield* CurrentTransaction).get(id)
        const run = Effect.tryPromise({
          try: () => Promise.resolve(f(trx ?? instance)),
          catch: (cause) => {
            if (trx !== undefined && dialect === "mysql") noteFailure(trx)
            return storeError(operation)(cause)
          }
        })
        // Inside a transaction: never a statement after the database transaction is gone (it would autocommit).
        if (trx !== undefined) return yield* Effect.andThen(guard(dialect, trx, operation), run)
        return yield* (lock ? lock.withPermit(run) : run)
      })

    // A host's postProcessResponse reshapes rows: keep knex on the path then.
    const fast = instance.client.config.postProcessResponse === undefined
    const noParams: ReadonlyArray<unknown> = []
    const emitter = instance as unknown as {
      listenerCount: (event: string) => number
      emit: (event: string, payload: unknown) => boolean
    }
    const trxId = (trx: Knex.Transaction) => (trx as unknown as { txid?: string }).txid
    const execute = (operation: string, sql: string, params: ReadonlyArray<unknown> = noParams) =>
      Effect.withFiber((fiber) => {
        const trx = fiber.getRef(CurrentTransaction).get(id)
        if (trx !== undefined && fast) {
          // knex's own `query` event, for hosts that log or count statements (no cost without listeners).
          if (emitter.listenerCount("query") > 0) {
            emitter.emit("query", { method: "raw", sql, bindings: params, options: {}, __knexTxId: trxId(trx) })
          }
          return executeOn(dialect, trx, operation, sql, params)
        }
        return Effect.flatMap(
          runQuery(operation, (db) => db.raw(sql, params as ReadonlyArray<Knex.Value>)),
          (raw) => Effect.try({ try: () => sqlResult(dialect, raw), catch: storeError(operation) })
        )
      })

    // MySQL runs at READ COMMITTED (no gap locks, the same level as PostgreSQL's default), so
    // concurrent reservations do not deadlock on the gaps of missing part rows.
    const trxConfig: Knex.TransactionConfig | undefined = dialect === "mysql"
      ? { isolationLevel: "read committed" }
      : undefined

    const commitTrx = (trx: Knex.Transaction) => GroupCommit.commit(instance, trx, dialect === "sqlite")
    const settings = groupSettings(dialect, options.groupCommit)
    if (Predicate.isTagged(settings, "InvalidInput")) {
      return yield* new BillingError.StoreError({ operation: "connect", detail: settings.message, cause: settings })
    }
    const group = settings
    const batcher = group &&
      GroupCommit.make({
        settings: group,
        dialect,
        begin: () => instance.transaction(trxConfig),
        commit: commitTrx,
        lock,
        aborted: (trx) => transactionAborted(dialect, trx)
      })

    const transaction = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.gen(function*() {
        const active = yield* CurrentTransaction
        if (active.has(id)) return yield* effect
        const body = Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            const trx = yield* Effect.tryPromise({
              try: () => instance.transaction(trxConfig),
              catch: storeError("transaction.begin")
            })
            const next = new Map(active)
            next.set(id, trx)
            const ran = yield* Effect.exit(restore(Effect.provideService(effect, CurrentTransaction, next)))
            // PostgreSQL answers the COMMIT of a transaction aborted by a statement whose error the
            // code caught with a silent ROLLBACK: it must not be reported committed.
            const exit: Exit.Exit<A, E | BillingError.StoreError> = ran._tag === "Success"
              ? yield* Effect.exit(Effect.flatMap(
                transactionAborted(dialect, trx),
                (aborted): Effect.Effect<A, BillingError.StoreError> =>
                  aborted ? Effect.fail(GroupCommit.abortedError("transaction.commit")) : Effect.succeed(ran.value)
              ))
              : ran
            if (exit._tag === "Success") {
              const committed = yield* Effect.exit(
                Effect.tryPromise({ try: () => commitTrx(trx), catch: storeError("transaction.commit") })
              )
              if (committed._tag === "Failure") {
                yield* Effect.promise(() => trx.rollback().catch(() => undefined))
                return yield* Effect.failCause(committed.cause)
              }
              return exit.value
            }
            yield* Effect.promise(() => trx.rollback().catch(() => undefined))
            return yield* Effect.failCause(exit.cause)
          })
        )
        const alone = lock ? lock.withPermit(body) : body
        const once = batcher
          ? batcher.submit(
            (trx) => Effect.provideService(effect, CurrentTransaction, new Map(active).set(id, trx)),
            alone
          )
          : alone
        // A deadlock or serialization failure rolled everything back: run the whole
        // transaction again (a few times, with jitter) before reporting it. The retry's
        // schedule is built only once a run failed so: its first step answers that failure
        // again at once, so the delays and the number of runs are those of a plain retry.
        return yield* once.pipe(
          Effect.catchIf(isRetryable, (error) => {
            let first = true
            return Effect.retry(
              Effect.suspend(() => {
                if (!first) return once
                first = false
                return Effect.fail(error)
              }),
              { while: (error) => isRetryable(error), schedule: retrySchedule, times: maxRetries }
            )
          })
        )
      })

    if (options.schema !== undefined && dialect === "postgres") {
      const schema = options.schema
      yield* runQuery("schema.create", (db) => db.raw("create schema if not exists ??", [schema]))
    }
    const client: Client = {
      id,
      dialect,
      prefix,
      knex: instance,
      table: (name) => `${prefix}${name}`,
      query: runQuery,
      execute,
      transaction,
      inTransaction: Effect.map(Effect.service(CurrentTransaction), (m) => m.has(id))
    }
    return client
  })

/**
 * Builds a client from a URL; the knex instance is destroyed when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromUrl = (url: string, options: ClientOptions = {}) =>
  Effect.gen(function*() {
    const config = yield* Effect.try({ try: () => connectionConfig(url, options), catch: storeError("connect") })
    const instance = yield* Effect.acquireRelease(
      Effect.try({ try: () => knex(config), catch: storeError("connect") }),
      (k) => Effect.promise(() => k.destroy())
    )
    return yield* fromKnex(instance, options)
  })
