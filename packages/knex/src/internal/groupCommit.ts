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
 *   trip; a later item rolls back to its own, newer one; on SQLite, where a
 *   RELEASE is a synchronous call and open savepoints cost every write, it is
 *   released) and waits for the commit: a
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
 *   (`solo`), so one slow item never holds a batch for longer than that. The
 *   bound is kept by one watchdog fiber per batch (Effect's `Clock`), which
 *   interrupts the fiber running the current item once its deadline (its turn
 *   plus `itemTimeoutMillis`) has passed: no timer and no race per item.
 * - The batch's SAVEPOINT and ROLLBACK TO SAVEPOINT statements run on the
 *   transaction's driver connection, prepared once (`executeOn`), not through knex.
 *
 * Batches are run by fibers started on demand (at most
 * `maxConcurrentBatches`, each on its own connection), which take up to
 * `maxBatch` waiting items at a time and stop when the queue is empty: an
 * item waits for at most the batch in flight before its own starts.
 *
 * @since 0.5.0
 */
import { BillingError } from "@relay-billing/core"
import { Clock, Deferred, Effect, Exit, Fiber } from "effect"
import type { Semaphore } from "effect"
import type { Knex } from "knex"
import { executeOn } from "./driver.js"
import type { Dialect } from "./url.js"

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
  /** The fiber running the item's work, while it runs. */
  fiber: Fiber.Fiber<unknown, unknown> | undefined
  /** Set by the batch's watchdog when it interrupted that fiber: the item ran too long. */
  timedOut: boolean
}

/** The item whose turn it is in a batch, and when its turn ends at the latest. */
interface Current {
  readonly item: Item
  readonly deadline: number
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
  readonly dialect: Dialect
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
  const { begin, dialect, lock, settings } = options
  const queue: Array<Item> = []
  let runners = 0
  const noParams: ReadonlyArray<unknown> = []
  /** Whether a kept item's savepoint is released (SQLite only: see `submit`). */
  const release = dialect === "sqlite"

  /** A savepoint statement, on the transaction's driver connection (prepared once). */
  const statement = (trx: Knex.Transaction, sql: string) =>
    Effect.suspend(() => executeOn(dialect, trx, "transaction.savepoint", sql, noParams))

  /**
   * The watchdog of one batch: sleeps until the current item's deadline and
   * interrupts that item's fiber if it is still the current one and still runs.
   * An item that starts later has a later deadline, so waking at the deadline
   * of the item seen (or `itemTimeoutMillis` from now when none runs) never
   * misses one.
   */
  const watchdog = (current: () => Current | undefined): Effect.Effect<never> =>
    Effect.forever(Clock.clockWith((clock) => {
      const seen = current()
      const now = clock.currentTimeMillisUnsafe()
      if (seen !== undefined && now >= seen.deadline) {
        const fiber = seen.item.fiber
        if (fiber !== undefined && fiber.pollUnsafe() === undefined && !seen.item.timedOut) {
          seen.item.timedOut = true
          fiber.interruptUnsafe()
        }
        return Effect.sleep(settings.itemTimeoutMillis)
      }
      return Effect.sleep(seen === undefined ? settings.itemTimeoutMillis : seen.deadline - now)
    }))

  const rollback = (trx: Knex.Transaction) => Effect.promise(() => trx.rollback().catch(() => undefined))

  /** Fails whatever an item still waits for (after a defect of the batch itself). */
  const sweep = (items: ReadonlyArray<Item>, error: BillingError.StoreError) =>
    Effect.forEach(items, (item) =>
      Effect.gen(function*() {
        yield* Deferred.fail(item.turn, error)
        yield* Deferred.fail(item.committed, error)
      }), { discard: true })

  const runBatch = (items: ReadonlyArray<Item>) => {
    let current: Current | undefined
    let dog: Fiber.Fiber<never> | undefined
    return Effect.gen(function*() {
      const begun = yield* Effect.exit(
        Effect.tryPromise({ try: () => begin(), catch: storeError("transaction.begin") })
      )
      if (begun._tag === "Failure") {
        for (const item of items) yield* Deferred.failCause(item.turn, begun.cause)
        return
      }
      const trx = begun.value
      const clock = yield* Clock.Clock
      dog = yield* Effect.forkChild(watchdog(() => current), { startImmediately: true })
      // An item alone in its batch needs no savepoint: its failure rolls the batch back.
      const alone = items.filter((item) => item.state === "queued").length === 1
      const ran: Array<Item> = []
      let keptCount = 0
      for (let i = 0; i < items.length; i++) {
        const item = items[i]!
        if (item.state !== "queued") continue
        item.state = "running"
        ran.push(item)
        current = { item, deadline: clock.currentTimeMillisUnsafe() + settings.itemTimeoutMillis }
        yield* Deferred.succeed(item.turn, { trx, savepoint: alone ? undefined : `rb_gc_${i}` })
        const done = yield* Deferred.await(item.done)
        current = undefined
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
      Effect.onExit((exit) => {
        current = undefined
        if (dog !== undefined) dog.interruptUnsafe()
        return exit._tag === "Success"
          ? Effect.void
          : sweep(items, storeError("transaction.batch")(new Error("the batch stopped unexpectedly")))
      })
    )
  }

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
            committed: Deferred.makeUnsafe(),
            fiber: undefined,
            timedOut: false
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
              const opened = yield* Effect.exit(statement(trx, `savepoint ${savepoint}`))
              if (opened._tag === "Failure") {
                yield* Deferred.succeed(item.done, broken)
                yield* batchEnd
                return yield* Effect.failCause(opened.cause)
              }
            }
            // The work runs on a child fiber (interruptible; started at once, so a SQLite item
            // may finish before this fiber yields), which the batch's watchdog can interrupt.
            const fiber = yield* Effect.forkChild(run(trx), { startImmediately: true })
            item.fiber = fiber
            const awaited = yield* Effect.exit(restore(Fiber.await(fiber)))
            // The caller was interrupted while the work ran: stop the work before undoing it.
            if (awaited._tag === "Failure") yield* Fiber.interrupt(fiber)
            item.fiber = undefined
            const ranRaw: Exit.Exit<A, E> = awaited._tag === "Success" ? awaited.value : Exit.failCause(awaited.cause)
            // Succeeded on a transaction that one of its statements aborted (its error was caught):
            // its writes cannot commit, and it must not take its neighbours down with it.
            const ran: Exit.Exit<A, E | BillingError.StoreError> = ranRaw._tag === "Success"
              ? yield* Effect.exit(Effect.flatMap(
                options.aborted(trx),
                (aborted): Effect.Effect<A, BillingError.StoreError> =>
                  aborted ? Effect.fail(abortedError("transaction")) : Effect.succeed(ranRaw.value)
              ))
              : ranRaw
            if (ran._tag === "Success") {
              // PostgreSQL, MySQL: its savepoint is not released (that would cost a round trip, and
              // a later item's rollback goes back to its own, newer savepoint only). SQLite: released
              // (a synchronous call), so that one savepoint at a time is open: SQLite copies a page
              // into its sub-journal for each open savepoint, and looks through all of them on
              // each write.
              if (release && savepoint !== undefined) {
                const released = yield* Effect.exit(statement(trx, `release savepoint ${savepoint}`))
                if (released._tag === "Failure") {
                  yield* Deferred.succeed(item.done, broken)
                  yield* batchEnd
                  return yield* Effect.failCause(released.cause)
                }
              }
              yield* Deferred.succeed(item.done, kept)
              const committed = yield* batchEnd
              if (committed._tag === "Success") return ran.value
              return yield* Effect.failCause(committed.cause)
            }
            // Failed, died, interrupted or too long: undo its writes (alone in its batch,
            // the batch's rollback does it).
            const undone = savepoint === undefined ? exitVoid : yield* Effect.exit(
              statement(trx, `rollback to savepoint ${savepoint}`)
            )
            yield* Deferred.succeed(item.done, undone._tag === "Success" ? dropped : broken)
            yield* batchEnd
            // Ran too long (interrupted by the watchdog, not by its caller): rolled back; run it
            // alone, outside the batch.
            if (item.timedOut && awaited._tag === "Success") return yield* Effect.fail(new TimedOut())
            return yield* Effect.failCause(ran.cause)
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
