/**
 * The durable record of holds. Implemented by `@relay-billing/knex` (SQL) and by
 * `@relay-billing/testkit` (in memory).
 *
 * @since 0.1.0
 */
import { Context } from "effect"
import type { Effect } from "effect"
import type { StoreError } from "./BillingError.js"
import type { Hold, HoldStatus } from "./Hold.js"
import type { HoldIntent, IntentPhase } from "./HoldIntent.js"

/**
 * The journal contract.
 *
 * @since 0.1.0
 * @category services
 */
export class HoldJournal extends Context.Service<HoldJournal, {
  /** Identity of the transactional store; sources with the same `storeId` commit with the hold. */
  readonly storeId: string
  /**
   * Runs `effect` in one transaction of the store: commits on success, rolls back
   * on failure, defect or interruption. Nested calls join the outer transaction.
   */
  readonly transaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | StoreError, R>
  /**
   * Whether the calling fiber is inside a transaction of this store already (a
   * `transaction` now would join it, and could not roll back on its own).
   * Optional: without it the engine assumes it may be, and keeps to the paths
   * that read (and lock) a hold before they move a balance.
   *
   * @since 0.4.0
   */
  readonly inTransaction?: Effect.Effect<boolean>
  /**
   * Inserts a new hold; `false` (and nothing written) when the id already
   * exists. The engine inserts a hold whose sources are all in this store once,
   * complete with its parts, after it took the balances (a `false` rolls its
   * transaction back), and with an external part first, as a draft.
   */
  readonly insert: (hold: Hold) => Effect.Effect<boolean, StoreError>
  /** Reads a hold; with `forUpdate` the row is locked until the transaction ends. */
  readonly get: (
    holdId: string,
    options?: { readonly forUpdate?: boolean }
  ) => Effect.Effect<Hold | undefined, StoreError>
  /**
   * Replaces the hold if its stored status is still `expected`; `false`
   * otherwise. One conditional write (`… WHERE id = ? AND status = ?`): the
   * engine settles and refunds a hold of this store with it alone, without
   * reading the hold first, and rolls back when it answers `false`.
   */
  readonly update: (hold: Hold, expected: HoldStatus) => Effect.Effect<boolean, StoreError>
  /**
   * Renews the lease of a pending hold: sets `expiresAt` to `expiresAt` with one
   * conditional write, only while the hold is still `pending` and its stored
   * `expiresAt` is earlier (a lease never shrinks, and a hold that was settled,
   * refunded or expired is never resurrected). `false` when nothing was written.
   *
   * @since 0.3.0
   */
  readonly renew: (holdId: string, expiresAt: number) => Effect.Effect<boolean, StoreError>
  /** Ids of pending holds whose `expiresAt` is at or before `now`, oldest first. */
  readonly expired: (now: number, limit: number) => Effect.Effect<ReadonlyArray<string>, StoreError>
  /** Holds matching a filter (for audits and admin views). */
  readonly list: (filter: {
    readonly accountId?: string
    readonly status?: HoldStatus
  }) => Effect.Effect<ReadonlyArray<Hold>, StoreError>
  /**
   * Writes an intent (see `HoldIntent`), replacing the one with the same
   * `(holdId, phase)`. Outside a transaction it commits on its own: the engine
   * calls it before a transaction that reaches an external source.
   */
  readonly putIntent: (intent: HoldIntent) => Effect.Effect<void, StoreError>
  /**
   * Inserts an intent unless one with the same `(holdId, phase)` exists, and
   * returns the stored one (the first recorded wins).
   */
  readonly insertIntent: (intent: HoldIntent) => Effect.Effect<HoldIntent, StoreError>
  /** Reads an intent; with `forUpdate` the row is locked until the transaction ends. */
  readonly getIntent: (
    holdId: string,
    phase: IntentPhase,
    options?: { readonly forUpdate?: boolean }
  ) => Effect.Effect<HoldIntent | undefined, StoreError>
  /** Marks a pending intent done with `outcome`; `false` when it is not pending (compare-and-set). */
  readonly finishIntent: (holdId: string, phase: IntentPhase, outcome: string) => Effect.Effect<boolean, StoreError>
  /** Pending intents whose `dueAt` is at or before `now`, oldest first. */
  readonly dueIntents: (
    now: number,
    limit: number
  ) => Effect.Effect<ReadonlyArray<{ readonly holdId: string; readonly phase: IntentPhase }>, StoreError>
}>()("@relay-billing/core/HoldJournal") {}
