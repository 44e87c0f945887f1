import { BillingError } from "@relay-billing/core"
import type { Ledger, SqlStore } from "@relay-billing/core"
import { Clock, Effect } from "effect"
import * as Period from "../Period.js"
import type { SubscriptionRow } from "./rows.js"
import { fromRow } from "./rows.js"

type Sql = SqlStore.SqlStore["Service"]

/** The remaining quota of a row as the ledger records it (unlimited: `MAX_SAFE_INTEGER`). */
export const remaining = (row: SubscriptionRow): number =>
  row.total === 0 ? Number.MAX_SAFE_INTEGER : row.total - row.used

/**
 * Row access for the subscriptions table through the `SqlStore` executor (the
 * engine's transaction during `take` and `move`). Rows are locked
 * (`FOR UPDATE`) on PostgreSQL/MySQL; SQLite serialises writers.
 *
 * The source writes two kinds of ledger rows itself, both without a hold: a
 * period `reset` (the usage back to 0) and the `adjust` that records a
 * reservation of a closed period given back (§3.6). Every hold's row is the
 * engine's.
 */
export const makeSqlStore = (sourceId: string, timeZone: string) => {
  const decode = (operation: string, rows: ReadonlyArray<Record<string, unknown>>) =>
    Effect.try({
      try: () => rows.map(fromRow),
      catch: (cause) =>
        new BillingError.StoreError({
          operation,
          detail: cause instanceof Error ? cause.message : String(cause),
          cause
        })
    })

  const lockClause = (sql: Sql, lock: boolean) => (lock && sql.dialect !== "sqlite" ? " for update" : "")

  /** Active subscriptions of an account at `now`, soonest expiry first (ties by id), locked unless `lock` is false. */
  const active = (sql: Sql, accountId: string, now: number, lock = true) =>
    Effect.flatMap(
      sql.execute(
        `${sourceId}.active`,
        `select * from ${
          sql.table("subscriptions")
        } where account_id = ? and status = 'active' and start_at <= ? and end_at > ?
         order by end_at asc, id asc${lockClause(sql, lock)}`,
        [accountId, now, now]
      ),
      (r) => decode(`${sourceId}.active`, r.rows)
    )

  /** One row by id, locked. */
  const row = (sql: Sql, id: string) =>
    Effect.flatMap(
      sql.execute(
        `${sourceId}.row`,
        `select * from ${sql.table("subscriptions")} where id = ?${lockClause(sql, true)}`,
        [id]
      ),
      (r) => Effect.map(decode(`${sourceId}.row`, r.rows), (rows) => rows[0])
    )

  /**
   * Appends a ledger row of this source that the engine does not write: a reset
   * or an adjustment (no hold), or the record of a correction that moved
   * nothing (amount 0, with the hold).
   */
  const ledger = (
    sql: Sql,
    subscription: SubscriptionRow,
    kind: Ledger.EntryKind,
    amount: number,
    note: string,
    holdId: string | null = null
  ) =>
    Effect.flatMap(Clock.currentTimeMillis, (at) =>
      sql.execute(
        `${sourceId}.ledger`,
        `insert into ${
          sql.table("ledger")
        } (at, kind, source_id, subject_id, account_id, hold_id, amount, balance_after, note)
         values (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        [at, kind, sourceId, subscription.id, subscription.accountId, holdId, amount, remaining(subscription), note]
      ))

  /** Writes `amount_used` (the row is locked, or the dialect serialised). */
  const setUsed = (sql: Sql, subscription: SubscriptionRow, used: number) =>
    used === subscription.used ? Effect.void : Effect.map(
      sql.execute(`${sourceId}.use`, `update ${sql.table("subscriptions")} set amount_used = ? where id = ?`, [
        used,
        subscription.id
      ]),
      () => {
        subscription.used = used
      }
    )

  /**
   * Resets a row whose period ended: usage back to 0 (a `reset` ledger row), the
   * period start and next boundary moved to the current period (missed periods
   * are caught up in one step). A compare-and-set on `next_reset_at`: another
   * process that reset it first wins.
   */
  const resetIfDue = (sql: Sql, subscription: SubscriptionRow, now: number) =>
    Effect.gen(function*() {
      if (subscription.nextResetAt === undefined || subscription.nextResetAt > now) return false
      const lastResetAt = Period.currentStart(subscription.period, subscription.startAt, now, timeZone) ?? now
      const nextResetAt = Period.nextBoundary(subscription.period, subscription.startAt, now, timeZone)
      const changed = yield* sql.execute(
        `${sourceId}.reset`,
        `update ${
          sql.table("subscriptions")
        } set amount_used = 0, last_reset_at = ?, next_reset_at = ? where id = ? and next_reset_at = ?`,
        [lastResetAt, nextResetAt ?? null, subscription.id, subscription.nextResetAt]
      )
      if (changed.affected === 0) return false
      const before = subscription.used
      subscription.used = 0
      subscription.lastResetAt = lastResetAt
      subscription.nextResetAt = nextResetAt
      if (before !== 0) {
        yield* ledger(sql, subscription, "reset", before, `period reset at ${new Date(lastResetAt).toISOString()}`)
      }
      return true
    })

  return { active, row, ledger, setUsed, resetIfDue }
}

export type SubscriptionSqlStore = ReturnType<typeof makeSqlStore>
