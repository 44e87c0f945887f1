/**
 * The subscription funding source on knex. A reservation of `max(P, 1)` goes to
 * the soonest-expiring active subscription with room (ties by id), after a lazy
 * reset of a period that has ended; the rows are locked (`SELECT … FOR UPDATE`)
 * on PostgreSQL/MySQL and SQLite serialises writers. Settlement moves
 * `amount_used` by the delta, floored at 0; what goes above a non-zero total
 * goes to the wallet in the same transaction when the plan allows it, and is
 * otherwise recorded in the ledger as unbilled — never silently dropped.
 * Idempotent by hold id; a hold id already refunded is a typed error.
 *
 * A reservation belongs to the period it was drawn from (§3.6): the part's
 * `ref` records, per subscription, the start of that period. Settling or
 * refunding a reservation whose period has been reset since never moves the
 * current period's usage: what is given back only corrects the closed period
 * (ledger rows that net to 0), and an extra charge above it follows the
 * overflow rule (the wallet when the plan allows it, else recorded unbilled).
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import { BillingError, Quota } from "@relay-billing/core"
import type { FundingSource } from "@relay-billing/core"
import { LateCharges, PartRecords } from "@relay-billing/knex"
import type { KnexClient } from "@relay-billing/knex"
import { WalletSource } from "@relay-billing/wallet"
import type { Draw, DrawItem, SubscriptionRow } from "./internal/rows.js"
import { decodeDraw, drawFrom, encodeDraw, inCurrentPeriod, isActive, room } from "./internal/rows.js"
import { makeCorrect } from "./internal/correct.js"
import { makeStore, now } from "./internal/store.js"

/**
 * Options of the source.
 *
 * @since 0.1.0
 * @category models
 */
export interface SubscriptionOptions {
  /** Source id (default `"subscription"`). */
  readonly id?: string
  /** Id of the wallet source that receives overflow (default `"wallet"`). */
  readonly walletId?: string
  /** Time zone of calendar resets (default `"UTC"`). */
  readonly timeZone?: string
}

/**
 * Builds the subscription source over a client.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (client: KnexClient.Client, options: SubscriptionOptions = {}): FundingSource.FundingSource => {
  const id = options.id ?? "subscription"
  const walletId = options.walletId ?? "wallet"
  const store = makeStore(client, id, options.timeZone ?? "UTC")
  const tx = client.transaction

  const activeAfterReset = (accountId: string, at: number) =>
    Effect.gen(function*() {
      const rows = yield* store.lockActive(accountId, at)
      for (const row of rows) yield* store.resetIfDue(row, at)
      return rows
    })

  /** Rows drawn by a part, locked, with due resets applied. */
  const drawnRows = (draw: Draw, at: number) =>
    Effect.gen(function*() {
      const rows = yield* store.lockRows(draw.map((d) => d.id))
      for (const row of rows) yield* store.resetIfDue(row, at)
      return rows
    })

  const missing = (operation: string, holdId: string) =>
    new BillingError.StoreError({ operation: `${id}.${operation}`, detail: `no reservation for hold ${holdId}` })

  /**
   * Charges `extra` above a row's total to the wallet (if allowed) or records it unbilled.
   * A late charge (§6) writes its wallet row as `late_settle`, with idempotency keys.
   */
  const overflow = (row: SubscriptionRow, amount: number, holdId: string, late = false) =>
    Effect.gen(function*() {
      if (amount <= 0) return 0
      if (row.allowWalletOverflow) {
        const after = yield* WalletSource.charge(client, {
          accountId: row.accountId,
          amount,
          holdId,
          sourceId: walletId,
          note: `overflow of subscription ${row.id}`,
          ...(late ? { kind: "late_settle" as const, idempotencyKey: LateCharges.key(id, holdId, 1) } : {})
        })
        if (after !== undefined) return 0
      }
      yield* store.ledger(row, "unbilled", holdId, 0, {
        unbilled: amount,
        note: row.allowWalletOverflow ? "overflow: no wallet to charge" : "overflow not allowed by the plan",
        ...(late ? { idempotencyKey: LateCharges.key(id, holdId, 2) } : {})
      })
      return amount
    })

  return {
    id,
    storeId: client.id,
    minimumReservation: (requested) => Math.max(requested, 1) as typeof requested,
    availability: (accountId) =>
      Effect.gen(function*() {
        const at = yield* now
        const rows = yield* client.query(`${id}.availability`, (db) =>
          db(store.subscriptions)
            .select("allow_wallet_overflow")
            .where({ account_id: accountId, status: "active" })
            .andWhere("start_at", "<=", at)
            .andWhere("end_at", ">", at))
        return {
          available: rows.length > 0,
          allowFallback: rows.every((r: { allow_wallet_overflow: unknown }) => Boolean(r.allow_wallet_overflow))
        }
      }),
    room: (accountId) =>
      Effect.gen(function*() {
        const at = yield* now
        const rows = yield* store.lockActive(accountId, at, false)
        let best = 0
        for (const row of rows) {
          // read only: a reset that is due counts as done, without writing it
          const used = row.nextResetAt !== undefined && row.nextResetAt <= at ? 0 : row.used
          best = Math.max(best, row.total === 0 ? Number.MAX_SAFE_INTEGER : Math.max(0, row.total - used))
        }
        return best
      }),
    reserve: (req) =>
      tx(Effect.gen(function*() {
        const replay = yield* PartRecords.claimOrReplay(client, {
          sourceId: id,
          holdId: req.holdId,
          subjectId: req.accountId,
          amount: req.amount
        })
        if (replay) return replay
        const at = yield* now
        const rows = yield* activeAfterReset(req.accountId, at)
        const draw: Array<DrawItem> = []
        if (req.partial) {
          let remaining: number = req.amount
          for (const row of rows) {
            if (remaining === 0) break
            const take = Math.min(remaining, room(row))
            if (take > 0) {
              draw.push(drawFrom(row, take))
              remaining -= take
            }
          }
        } else {
          // Post-consume (unconditional): the soonest-expiring active subscription takes it
          // even without room; settlement applies the overflow rule.
          const chosen = rows.find((row) => room(row) >= req.amount) ?? (req.unconditional ? rows[0] : undefined)
          if (chosen) draw.push(drawFrom(chosen, req.amount))
        }
        if (draw.length === 0) {
          yield* PartRecords.remove(client, id, req.holdId)
          const best = rows.reduce((m, r) => Math.max(m, Math.min(room(r), Number.MAX_SAFE_INTEGER)), 0)
          return yield* new BillingError.InsufficientFunds({
            sourceId: id,
            accountId: req.accountId,
            required: req.amount,
            available: best,
            reason: rows.length === 0 ? "no active subscription" : "subscription quota insufficient"
          })
        }
        for (const d of draw) {
          const row = rows.find((r) => r.id === d.id)!
          // An unlimited plan's usage stays within ±(2^53−1) (§2.10).
          yield* store.setUsed(row, yield* Quota.addInRange("subscription.amountUsed", row.id, row.used, d.amount), "reserve", req.holdId)
        }
        const amount = draw.reduce((a, d) => a + d.amount, 0)
        const ref = encodeDraw(draw)
        yield* client.query(`${id}.part.ref`, (db) =>
          db(client.table("hold_parts")).where({ source_id: id, hold_id: req.holdId }).update({ amount, ref }))
        return { amount, ref }
      })),
    settle: (req) =>
      tx(Effect.gen(function*() {
        const part = yield* PartRecords.get(client, id, req.holdId)
        if (!part) return yield* missing("settle", req.holdId)
        if (part.status === "settled" && part.result) return part.result
        if (part.status === "refunded") {
          return yield* new BillingError.HoldResolved({ holdId: req.holdId, status: "refunded", operation: "settle" })
        }
        const draw = decodeDraw(part.ref)
        const at = yield* now
        const rows = yield* drawnRows(draw, at)
        const rowOf = (d: DrawItem) => rows.find((r) => r.id === d.id)
        const delta = req.actual - part.amount
        let unbilled = 0
        let last: SubscriptionRow | undefined = rows[rows.length - 1]
        if (delta > 0) {
          // The extra goes to the last row with room among those drawn in their current
          // period (the last of them if none has room). A row whose period was reset since
          // the draw is never charged for it: the extra follows the overflow rule instead.
          const live = draw.flatMap((d) => {
            const row = rowOf(d)
            return row && inCurrentPeriod(d, row) ? [row] : []
          })
          const target = [...live].reverse().find((r) => room(r) > 0) ?? live[live.length - 1]
          if (target) {
            // An unlimited plan's usage stays within ±(2^53−1): refused typed, nothing written (§2.10).
            const wanted = yield* Quota.addInRange("subscription.amountUsed", target.id, target.used, delta)
            const capped = target.total > 0 ? Math.min(wanted, target.total) : wanted
            yield* store.setUsed(target, capped, "settle", req.holdId)
            unbilled = yield* overflow(target, wanted - capped, req.holdId)
            last = target
          } else {
            const closed = draw.length > 0 ? rowOf(draw[draw.length - 1]!) : undefined
            if (closed) {
              unbilled = yield* overflow(closed, delta, req.holdId)
              last = closed
            }
          }
        } else if (delta < 0) {
          // Give back in reverse order: to the current period's usage (never below 0),
          // or, for a draw from a period reset since, to that closed period only.
          let back = -delta
          for (const d of [...draw].reverse()) {
            const row = rowOf(d)
            if (!row || back === 0) continue
            const give = Math.min(back, d.amount)
            back -= give
            if (inCurrentPeriod(d, row)) yield* store.setUsed(row, Math.max(0, row.used - give), "settle", req.holdId)
            else yield* store.closedPeriod(row, "settle", req.holdId, give, d.period)
            last = row
          }
        }
        const result: FundingSource.PartResult = {
          charged: req.actual - unbilled,
          unbilled,
          // An unlimited subscription (total 0) has no balance to warn about.
          ...(last && last.total > 0 ? { balanceAfter: last.total - last.used } : {})
        }
        yield* PartRecords.markSettled(client, id, req.holdId, result)
        return result
      })),
    refund: (req) =>
      tx(Effect.gen(function*() {
        const part = yield* PartRecords.get(client, id, req.holdId)
        if (!part || part.status !== "reserved") return
        const draw = decodeDraw(part.ref)
        const at = yield* now
        const rows = yield* drawnRows(draw, at)
        for (const d of draw) {
          const row = rows.find((r) => r.id === d.id)
          if (!row) continue
          if (inCurrentPeriod(d, row)) yield* store.setUsed(row, Math.max(0, row.used - d.amount), req.reason, req.holdId)
          else yield* store.closedPeriod(row, req.reason, req.holdId, d.amount, d.period)
        }
        yield* PartRecords.end(client, id, req.holdId, req.reason)
      })),
    // §6: a settle after the expiry charges the share again on the rows the hold drew from in
    // their current period (the last with room), up to the plan's total; above it (or when the
    // period was reset since the draw, §3.6) the plan's overflow rule: the wallet, or unbilled.
    // Keyed ledger rows: a repeat (also as an external source) answers the first result.
    lateSettle: (req) =>
      tx(Effect.gen(function*() {
        const done = yield* LateCharges.replay(client, {
          sourceId: id,
          holdId: req.holdId,
          subjectId: decodeDraw(req.part.ref).at(-1)?.id ?? req.part.subjectId,
          amount: req.amount
        })
        if (done) return done
        const draw = decodeDraw(req.part.ref)
        const at = yield* now
        const rows = yield* drawnRows(draw, at)
        const rowOf = (d: DrawItem) => rows.find((r) => r.id === d.id)
        const live = draw.flatMap((d) => {
          const row = rowOf(d)
          return row && inCurrentPeriod(d, row) ? [row] : []
        })
        const target = [...live].reverse().find((r) => room(r) > 0) ?? live[live.length - 1]
        let unbilled = 0
        let last: SubscriptionRow | undefined = target
        if (target) {
          const wanted = yield* Quota.addInRange("subscription.amountUsed", target.id, target.used, req.amount)
          const capped = target.total > 0 ? Math.min(wanted, Math.max(target.used, target.total)) : wanted
          yield* store.setUsed(target, capped, "late_settle", req.holdId, LateCharges.key(id, req.holdId, 0))
          unbilled = yield* overflow(target, wanted - capped, req.holdId, true)
        } else {
          const closed = draw.length > 0 ? rowOf(draw[draw.length - 1]!) : undefined
          last = closed
          unbilled = closed ? yield* overflow(closed, req.amount, req.holdId, true) : req.amount
        }
        const result: FundingSource.PartResult = {
          charged: req.amount - unbilled,
          unbilled,
          ...(last && last.total > 0 ? { balanceAfter: last.total - last.used } : {})
        }
        return result
      })),
    // Corrections (§4.4): the overflow back to the wallet first, then the rows of the period
    // the hold drew from; an ended period's share is recorded only (see internal/correct.ts).
    correct: makeCorrect(client, store, id, walletId)
  }
}

export { isActive }
