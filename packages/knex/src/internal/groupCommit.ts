/**
 * Internal: group commit. Concurrent top-level transactions of one store run
 * as the items of one database transaction, one after another on its
 * connection, each inside its own savepoint; the batch commits once and every
 * item's caller gets its outcome after that commit.
 *
 * - An item runs on its caller's fiber (with the caller's services and
 *   references); the batch only hands it a turn — the batch's transaction and
 *   a savepoint name — and waits for it to say how it ended.
 * - An item that fails, dies or is interrupted is rolled back to its
 *   savepoint: its writes are gone, its neighbours are untouched, and its
 *   caller gets its own failure at once.
 * - An item that succeeds keeps its savepoint (releasing it would cost a round
 *   trip; a later item rolls back to its own, newer one) and waits for the commit: a
 *   failed COMMIT fails every such item with the commit's `StoreError`
 *   (nothing of the batch is visible; the client's retry re-runs it when the
 *   error is a deadlock or a serialization failure).
 * - When the batch's transaction becomes unusable (a savepoint cannot be
 *   rolled back to: MySQL rolls the whole transaction back on a deadlock),
 *   the batch is rolled back, the items that had succeeded are run again in a
 *   later batch (their writes were rolled back, so running them again cannot
 *   count twice), and the items that had not started go back to the queue.
 * - A caller interrupted while it waits for its turn leaves the queue (or
 *   hands its turn back unused); interrupted while it runs, it is rolled back
 *   to its savepoint.
 * - An item that runs longer than `itemTimeoutMillis` is interrupted, rolled
 *   back to its savepoint, and run again alone in its own transaction
 *   (`solo`), so one slow item never holds a batch for longer than that.
 *
 * Batches are run by fibers started on demand (at most
 * `maxConcurrentBatches`, each on its own connection), which take up to
 * `maxBatch` waiting items at a time and stop when the queue is empty: an
 * item waits for at most the batch in flight before its own starts.
 *
 * @since 0.5.0
 */
import { BillingError } from "@relay-billing/core"
import { Deferred, Effect, Exit, Option } from "effect"
import type { Semaphore } from "effect"
import type { Knex } from "knex"

/** The settings of group commit (defaults resolved). */
export interface Settings {
  readonly maxBatch: number
  readonly maxConcurrentBatches: number
  readonly itemTimeoutMillis: number
}

/** What a batch hands to the item whose turn it is. */
interface Turn {
  readonly trx: Knex.Transaction
  /** Absent when the item is alone in its batch. */
  readonly savepoint: string | undefined
}

/** How an item ended, as the batch sees it. */
type Done =
  /** Succeeded; its writes wait for the commit. */
  | { readonly _tag: "Kept" }
  /** Failed, interrupted or never started: nothing of it is in the transaction. */
  | { readonly _tag: "Dropped" }
  /** The batch's transaction is unusable: roll it back. */
  | { readonly _tag: "Broken" }

/** The batch was rolled back under an item that had succeeded: run it again. */
class Requeued {
  readonly _tag = "Requeued"
}

interface Item {
  state: "queued" | "cancelled" | "running"
  readonly turn: Deferred.Deferred<Turn, BillingError.StoreError>
  readonly done: Deferred.Deferred<Done>
  readonly committed: Deferred.Deferred<void, BillingError.StoreError | Requeued>
}

const kept: Done = { _tag: "Kept" }
const dropped: Done = { _tag: "Dropped" }
const broken: Done = { _tag: "Broken" }
const exitVoid = Exit.succeed<void>(undefined)

/** How many times an item that succeeded is run again after its batch broke. */
const maxRequeues = 16

const storeError = (operation: string) => (cause: unknown) =>
  new BillingError.StoreError({
    operation,
    detail: cause instanceof Error ? cause.message : String(cause),
    cause
  })

/**
 * Commits `trx`. knex resolves `commit()` even when the COMMIT fails (a deferred
 * constraint, a serialization failure at commit): the failure only rejects
 * `executionPromise`, which is what this answers. SQLite keeps the transaction
 * open after such a failure, and knex considers it complete: it is rolled back
 * on the connection here, or the next BEGIN would fail.
 */
export const commit = (instance: Knex, trx: Knex.Transaction, sqlite: boolean): Promise<void> =>
  trx.commit().then(() => trx.executionPromise).then(
    () => undefined,
    async (error: unknown) => {
      if (sqlite) await instance.raw("rollback").catch(() => undefined)
      throw error
    }
  )

/** The batcher of one store. */
export interface GroupCommit {
  /**
   * Runs `run` as an item of a batch: `run` gets the batch's transaction.
   * `solo` runs the same work in a transaction of its own (used when the item
   * outlives `itemTimeoutMillis`).
   */
  readonly submit: <A, E, R>(
    run: (trx: Knex.Transaction) => Effect.Effect<A, E, R>,
    solo: Effect.Effect<A, E | BillingError.StoreError, R>
  ) => Effect.Effect<A, E | BillingError.StoreError, R>
}

/** Builds the batcher of one store. */
export const make = (options: {
  readonly settings: Settings
  /** Begins the batch's transaction. */
  readonly begin: () => Promise<Knex.Transaction>
  /** Commits it (see {@link commit}). */
  readonly commit: (trx: Knex.Transaction) => Promise<void>
  /** SQLite: the store's one-connection lock, held by a batch for its whole run. */
  readonly lock: Semaphore.Semaphore | undefined
  /**
   * Whether `trx` was aborted (a failed statement whose error its code caught, on
   * PostgreSQL) or ended under its code: an item that succeeds then cannot be committed.
   */
  readonly aborted: (trx: Knex.Transaction) => Effect.Effect<boolean, BillingError.StoreError>
}): GroupCommit => {
  const { begin, lock, settings } = options
  const queue: Array<Item> = []
  let runners = 0

  const statement = (trx: Knex.Transaction, operation: string, sql: string) =>
    Effect.tryPromise({ try: () => trx.raw(sql), catch: storeError(operation) })

  const rollback = (trx: Knex.Transaction) => Effect.promise(() => trx.rollback().catch(() => undefined))

  /** Fails whatever an item still waits for (after a defect of the batch itself). */
  const sweep = (items: ReadonlyArray<Item>, error: BillingError.StoreError) =>
    Effect.forEach(items, (item) =>
      Effect.gen(function*() {
        yield* Deferred.fail(item.turn, error)
        yield* Deferred.fail(item.committed, error)
      }), { discard: true })

  const runBatch = (items: ReadonlyArray<Item>) =>
    Effect.gen(function*() {
      const begun = yield* Effect.exit(
        Effect.tryPromise({ try: () => begin(), catch: storeError("transaction.begin") })
      )
      if (begun._tag === "Failure") {
        for (const item of items) yield* Deferred.failCause(item.turn, begun.cause)
        return
      }
      const trx = begun.value
      // An item alone in its batch needs no savepoint: its failure rolls the batch back.
      const alone = items.filter((item) => item.state === "queued").length === 1
      const ran: Array<Item> = []
      let keptCount = 0
      for (let i = 0; i < items.length; i++) {
        const item = items[i]!
        if (item.state !== "queued") continue
        item.state = "running"
        ran.push(item)
        yield* Deferred.succeed(item.turn, { trx, savepoint: alone ? undefined : `rb_gc_${i}` })
        const done = yield* Deferred.await(item.done)
        if (done._tag === "Kept") keptCount++
        if (done._tag === "Broken") {
          // The items that had not started go back to the front of the queue, untouched.
          queue.unshift(...items.slice(i + 1).filter((rest) => rest.state === "queued"))
          yield* rollback(trx)
          for (const item of ran) yield* Deferred.fail(item.committed, new Requeued())
          return
        }
      }
      const committed = keptCount === 0
        ? yield* Effect.as(rollback(trx), exitVoid)
        : yield* Effect.exit(Effect.gen(function*() {
          // Every kept item was checked; a transaction aborted anyway must not be "committed"
          // (PostgreSQL would answer its COMMIT with a silent ROLLBACK).
          if (yield* options.aborted(trx)) return yield* Effect.fail(abortedError("transaction.commit"))
          yield* Effect.tryPromise({ try: () => options.commit(trx), catch: storeError("transaction.commit") })
        }))
      if (committed._tag === "Failure") yield* rollback(trx)
      for (const item of ran) yield* Deferred.done(item.committed, committed)
    }).pipe(
      Effect.onExit((exit) =>
        exit._tag === "Success"
          ? Effect.void
          : sweep(items, storeError("transaction.batch")(new Error("the batch stopped unexpectedly")))
      )
    )

  const runner: Effect.Effect<void> = Effect.suspend(() => {
    const items = queue.splice(0, settings.maxBatch).filter((item) => item.state === "queued")
    if (items.length === 0) {
      if (queue.length > 0) return runner
      runners--
      return Effect.void
    }
    const batch = lock ? lock.withPermit(runBatch(items)) : runBatch(items)
    return Effect.andThen(Effect.exit(batch), runner)
  })

  const enqueue = (item: Item) =>
    Effect.suspend(() => {
      queue.push(item)
      if (runners >= settings.maxConcurrentBatches) return Effect.void
      runners++
      return Effect.asVoid(Effect.forkDetach(runner, { startImmediately: false, uninterruptible: true }))
    })

  const submit = <A, E, R>(
    run: (trx: Knex.Transaction) => Effect.Effect<A, E, R>,
    solo: Effect.Effect<A, E | BillingError.StoreError, R>
  ): Effect.Effect<A, E | BillingError.StoreError, R> => {
    const attempt = (requeues: number): Effect.Effect<A, E | BillingError.StoreError, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const item: Item = {
            state: "queued",
            turn: Deferred.makeUnsafe(),
            done: Deferred.makeUnsafe(),
            committed: Deferred.makeUnsafe()
          }
          yield* enqueue(item)
          const waited = yield* Effect.exit(restore(Deferred.await(item.turn)))
          if (waited._tag === "Failure") {
            if (item.state === "queued") {
              // Interrupted in the queue (or the batch could not begin): leave it.
              item.state = "cancelled"
              return yield* Effect.failCause(waited.cause)
            }
            // Interrupted as its turn came: hand the turn back unused.
            const granted = yield* Effect.exit(Deferred.await(item.turn))
            if (granted._tag === "Success") yield* Deferred.succeed(item.done, dropped)
            return yield* Effect.failCause(waited.cause)
          }
          const { savepoint, trx } = waited.value
          // The caller learns its outcome only when the batch has ended (committed or rolled
          // back): what it reads next outside a transaction sees what its neighbours wrote.
          const batchEnd = Effect.exit(Deferred.await(item.committed))
          const turn = Effect.gen(function*() {
            if (savepoint !== undefined) {
              const opened = yield* Effect.exit(statement(trx, "transaction.savepoint", `savepoint ${savepoint}`))
              if (opened._tag === "Failure") {
                yield* Deferred.succeed(item.done, broken)
                yield* batchEnd
                return yield* Effect.failCause(opened.cause)
              }
            }
            const ranRaw = yield* Effect.exit(
              restore(Effect.timeoutOption(run(trx), settings.itemTimeoutMillis))
            )
            // Succeeded on a transaction that one of its statements aborted (its error was caught):
            // its writes cannot commit, and it must not take its neighbours down with it.
            const ran: Exit.Exit<Option.Option<A>, E | BillingError.StoreError> =
              ranRaw._tag === "Success" && Option.isSome(ranRaw.value)
                ? yield* Effect.exit(Effect.flatMap(
                  options.aborted(trx),
                  (aborted): Effect.Effect<Option.Option<A>, BillingError.StoreError> =>
                    aborted ? Effect.fail(abortedError("transaction")) : Effect.succeed(ranRaw.value)
                ))
                : ranRaw
            if (ran._tag === "Success" && Option.isSome(ran.value)) {
              // Its savepoint is not released: that would cost a round trip, and a later
              // item's rollback goes back to its own, newer savepoint only.
              yield* Deferred.succeed(item.done, kept)
              const committed = yield* batchEnd
              if (committed._tag === "Success") return ran.value.value
              return yield* Effect.failCause(committed.cause)
            }
            // Failed, died, interrupted or too long: undo its writes (alone in its batch,
            // the batch's rollback does it).
            const undone = savepoint === undefined ? exitVoid : yield* Effect.exit(
              statement(trx, "transaction.savepoint", `rollback to savepoint ${savepoint}`)
            )
            yield* Deferred.succeed(item.done, undone._tag === "Success" ? dropped : broken)
            yield* batchEnd
            if (ran._tag === "Failure") return yield* Effect.failCause(ran.cause)
            // Ran too long: rolled back; run it alone, outside the batch.
            return yield* Effect.fail(new TimedOut())
          }).pipe(
            // Whatever happened, the batch must not wait for this item forever; if it
            // said nothing, its state in the transaction is unknown: roll the batch back.
            Effect.onExit(() => Deferred.succeed(item.done, broken))
          )
          return yield* turn
        })
      ).pipe(
        Effect.catchIf(
          (error): error is TimedOut | Requeued => error instanceof TimedOut || error instanceof Requeued,
          (error): Effect.Effect<A, E | BillingError.StoreError, R> =>
            error instanceof TimedOut
              ? solo
              : requeues < maxRequeues
              ? attempt(requeues + 1)
              : Effect.fail(
                storeError("transaction.batch")(
                  new Error(`the batch was rolled back under this transaction ${requeues} times`)
                )
              )
        )
      ) as Effect.Effect<A, E | BillingError.StoreError, R>
    return attempt(0)
  }

  return { submit }
}

/**
 * The error of a transaction whose database transaction was aborted (a failed
 * statement on PostgreSQL whose error the code caught) or ended under its code.
 */
export const abortedError = (operation: string): BillingError.StoreError =>
  new BillingError.StoreError({
    operation,
    detail: "the database transaction was aborted or ended under this transaction's code (a failed statement " +
      "whose error was caught, or a rollback): it cannot be committed"
  })

/** An item ran longer than `itemTimeoutMillis`. */
class TimedOut {
  readonly _tag = "TimedOut"
}
