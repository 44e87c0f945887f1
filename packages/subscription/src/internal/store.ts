import { Clock, Effect } from "effect"
import { BillingError } from "@relay-billing/core"
import type { Ledger } from "@relay-billing/core"
import { KnexLedger } from "@relay-billing/knex"
import type { KnexClient } from "@relay-billing/knex"
import * as Period from "../Period.js"
import type { SubscriptionRow } from "./rows.js"
import { fromRow } from "./rows.js"

/** Row access for the subscriptions table, through the client's current transaction. */
export const makeStore = (client: KnexClient.Client, sourceId: string, timeZone: string) => {
  const subscriptions = client.table("subscriptions")
  const lockable = client.dialect !== "sqlite"

  const decode = (operation: string, rows: ReadonlyArray<Record<string, unknown>>) =>
    Effect.try({
      try: () => rows.map(fromRow),
      catch: (cause) =>
        new BillingError.StoreError({ operation, detail: cause instanceof Error ? cause.message : String(cause), cause })
    })

  /** Active subscriptions of an account, soonest expiry first (ties by id), locked unless `lock` is false. */
  const lockActive = (accountId: string, now: number, lock = true) =>
    client.query(`${sourceId}.active`, (db) => {
      const q = db(subscriptions)
        .where({ account_id: accountId, status: "active" })
        .andWhere("start_at", "<=", now)
        .andWhere("end_at", ">", now)
        .orderBy([{ column: "end_at", order: "asc" }, { column: "id", order: "asc" }])
      return lockable && lock ? q.forUpdate() : q
    }).pipe(Effect.flatMap((rows) => decode(`${sourceId}.active`, rows)))

  /** Rows by id, locked, in the given order. */
  const lockRows = (ids: ReadonlyArray<string>) =>
    client.query(`${sourceId}.rows`, (db) => {
      const q = db(subscriptions).whereIn("id", [...ids]).orderBy("id")
      return lockable ? q.forUpdate() : q
    }).pipe(
      Effect.flatMap((rows) => decode(`${sourceId}.rows`, rows)),
      Effect.map((rows) => ids.flatMap((id) => rows.filter((r) => r.id === id)))
    )

  const ledger = (
    row: SubscriptionRow,
    kind: Ledger.EntryKind,
    holdId: string | undefined,
    amount: number,
    extra: { readonly unbilled?: number; readonly note?: string; readonly idempotencyKey?: string } = {}
  ) =>
    amount === 0 && !extra.unbilled ? Effect.void : Effect.flatMap(Clock.currentTimeMillis, (at) =>
      KnexLedger.append(client, [{
        at,
        kind,
        sourceId,
        subjectId: row.id,
        accountId: row.accountId,
        ...(holdId !== undefined ? { holdId } : {}),
        amount,
        balanceAfter: row.total - row.used,
        ...(extra.unbilled ? { unbilled: extra.unbilled } : {}),
        ...(extra.note ? { note: extra.note } : {}),
        ...(extra.idempotencyKey !== undefined ? { idempotencyKey: extra.idempotencyKey } : {})
      }]))

  /** Writes a new `amount_used` and its ledger row (the change of the remaining quota). */
  const setUsed = (
    row: SubscriptionRow,
    used: number,
    kind: Ledger.EntryKind,
    holdId: string | undefined,
    idempotencyKey?: string
  ) =>
    Effect.gen(function*() {
      const before = row.used
      if (used === before) return
      yield* client.query(`${sourceId}.use`, (db) => db(subscriptions).where({ id: row.id }).update({ amount_used: used }))
      row.used = used
      yield* ledger(row, kind, holdId, before - used, idempotencyKey !== undefined ? { idempotencyKey } : {})
    })

  /**
   * Settles or refunds `amount` of a reservation drawn from a period that has
   * been reset since (§3.6). The reset already cleared that reservation from
   * the usage, so the current period's `amount_used` does not move. Two ledger
   * rows record it and net to 0 on the subscription: the hold's own row
   * (`kind`, +amount: the closed period's usage corrected, so the hold's rows
   * sum to what it was charged) and a hold-less `adjust` row (−amount: that
   * much of the earlier reset was this reservation). It is not a `reset` row,
   * so `reset` rows stay exactly the period boundaries.
   */
  const closedPeriod = (
    row: SubscriptionRow,
    kind: Ledger.EntryKind,
    holdId: string,
    amount: number,
    period: number | undefined
  ) =>
    Effect.gen(function*() {
      if (amount === 0) return
      const from = period === undefined ? "an earlier period" : `the period from ${new Date(period).toISOString()}`
      yield* ledger(row, kind, holdId, amount, { note: `returned to ${from}, already reset` })
      yield* ledger(row, "adjust", undefined, -amount, {
        note: `hold ${holdId}: reserved in ${from}, cleared by its reset; the current period is unchanged`
      })
    })

  /**
   * Resets a row whose period ended: usage back to 0 (a `reset` ledger row), the
   * period start and next boundary moved to the current period (missed periods
   * are caught up in one step). The row must be locked (or the dialect serialised).
   */
  const resetIfDue = (row: SubscriptionRow, now: number) =>
    Effect.gen(function*() {
      if (row.nextResetAt === undefined || row.nextResetAt > now) return false
      const lastResetAt = Period.currentStart(row.period, row.startAt, now, timeZone) ?? now
      const nextResetAt = Period.nextBoundary(row.period, row.startAt, now, timeZone)
      const previous = row.nextResetAt
      const changed = yield* client.query(`${sourceId}.reset`, (db) =>
        db(subscriptions).where({ id: row.id, next_reset_at: previous }).update({
          amount_used: 0,
          last_reset_at: lastResetAt,
          next_reset_at: nextResetAt ?? null
        }))
      if (changed === 0) return false // another process reset it first
      const before = row.used
      row.used = 0
      row.lastResetAt = lastResetAt
      row.nextResetAt = nextResetAt
      yield* ledger(row, "reset", undefined, before, { note: `period reset at ${new Date(lastResetAt).toISOString()}` })
      return true
    })

  return { lockActive, lockRows, setUsed, closedPeriod, resetIfDue, ledger, subscriptions }
}

export type SubscriptionStore = ReturnType<typeof makeStore>

export const now = Clock.currentTimeMillis
