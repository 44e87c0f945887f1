import { BillingError, Quota } from "@relay-billing/core"
import type { Source } from "@relay-billing/core"
import { Clock, Effect } from "effect"
import type { DrawItem, SubscriptionRow } from "./rows.js"
import { decodeDraw, drawFrom, encodeDraw, inCurrentPeriod, room } from "./rows.js"
import { makeSqlStore, remaining } from "./sqlStore.js"

/** What a take's `ref` says: the one subscription drawn, and the start of the period it was drawn in. */
const drawOf = (ref: string | undefined): DrawItem | undefined => {
  try {
    const draw = decodeDraw(ref)
    // A reservation drawn before v2 may name several rows (split funding drew across
    // subscriptions): the last one is where a settlement charged an extra and is answered for.
    return draw[draw.length - 1]
  } catch {
    return undefined
  }
}

export const makeSubscriptionSource = (
  options: { readonly id?: string; readonly timeZone?: string }
): Source.Source => {
  const id = options.id ?? "subscription"
  const store = makeSqlStore(id, options.timeZone ?? "UTC")

  const take: Source.Source["take"] = (req) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const rows = yield* store.active(req.sql, req.accountId, now)
      for (const row of rows) yield* store.resetIfDue(req.sql, row, now)
      const amount: number = req.amount
      // One reservation is drawn from one subscription: the soonest-expiring one with room
      // (split funding: any room, taking what it has). Post-consume (unconditional): the
      // soonest-expiring active one even without room; the charge is the work already done.
      const chosen = req.mode === "upTo"
        ? rows.find((row) => room(row) > 0)
        : rows.find((row) => room(row) >= amount) ?? (req.mode === "unconditional" ? rows[0] : undefined)
      if (!chosen) {
        return yield* new BillingError.InsufficientFunds({
          sourceId: id,
          accountId: req.accountId,
          required: amount,
          available: rows.reduce((m, r) => Math.max(m, Math.min(room(r), Number.MAX_SAFE_INTEGER)), 0),
          reason: rows.length === 0 ? "no active subscription" : "subscription quota insufficient"
        })
      }
      const taken = req.mode === "upTo" ? Math.min(amount, room(chosen)) : amount
      // An unlimited plan's usage stays within ±(2^53−1) (§2.10).
      const used = yield* Quota.addInRange("subscription.amountUsed", chosen.id, chosen.used, taken)
      yield* store.setUsed(req.sql, chosen, used)
      return {
        amount: taken,
        balanceAfter: remaining(chosen),
        ref: encodeDraw([drawFrom(chosen, taken)]),
        subjectId: chosen.id
      }
    })

  /**
   * A charge (`delta` < 0) on the row drawn, within the plan's total (never
   * below what is used already); above it, or when the period the hold drew
   * from has been reset since (§3.6: a closed period is never charged), the
   * move answers less and says whether the plan lets the rest overflow.
   * A give-back (`delta` > 0) lowers the current period's usage (never below
   * 0); a reservation of a closed period is given back to that period only:
   * the current usage stays, and an `adjust` row (−amount, no hold) records
   * that the reset already cleared it, so the subscription's ledger still sums
   * to its usage. A correction of a closed period gives nothing back.
   */
  const move: Source.Source["move"] = (req) =>
    Effect.gen(function*() {
      const draw = drawOf(req.ref)
      const subscriptionId = draw?.id ?? req.subjectId
      const row = yield* store.row(req.sql, subscriptionId)
      if (!row) return { moved: 0, balanceAfter: 0, subjectId: subscriptionId, overflow: false }
      const now = yield* Clock.currentTimeMillis
      yield* store.resetIfDue(req.sql, row, now)
      const current = draw === undefined || inCurrentPeriod(draw, row)
      const answer = (moved: number) => ({
        moved,
        balanceAfter: remaining(row),
        subjectId: row.id,
        overflow: row.allowWalletOverflow
      })
      if (req.delta === 0) return answer(0)
      if (req.delta < 0) {
        if (!current) return answer(0)
        const wanted = yield* Quota.addInRange("subscription.amountUsed", row.id, row.used, -req.delta)
        const capped = row.total > 0 ? Math.min(wanted, Math.max(row.used, row.total)) : wanted
        const before = row.used
        yield* store.setUsed(req.sql, row, capped)
        return answer(before - capped)
      }
      if (current) {
        const before = row.used
        yield* store.setUsed(req.sql, row, Math.max(0, row.used - req.delta))
        return answer(before - row.used)
      }
      if (req.kind === "correction") {
        // The quota of an ended period cannot be spent any more: nothing to give back to it.
        // Recorded (amount 0) so the hold's history says where the correction went.
        yield* store.ledger(
          req.sql,
          row,
          "correction",
          0,
          `${req.delta} of an ended period: the current period's amount_used is unchanged`,
          req.holdId
        )
        return answer(0)
      }
      const from = draw?.period === undefined
        ? "an earlier period"
        : `the period from ${new Date(draw.period).toISOString()}`
      yield* store.ledger(
        req.sql,
        row,
        "adjust",
        -req.delta,
        `hold ${req.holdId}: reserved in ${from}, cleared by its reset; the current period is unchanged`
      )
      return answer(req.delta)
    })

  return {
    id,
    role: "funding",
    take,
    move,
    minimumReservation: (requested) => Math.max(requested, 1) as typeof requested,
    availability: (sql, accountId) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const r = yield* sql.execute(
          `${id}.availability`,
          `select allow_wallet_overflow from ${sql.table("subscriptions")}
           where account_id = ? and status = 'active' and start_at <= ? and end_at > ?`,
          [accountId, now, now]
        )
        return {
          available: r.rows.length > 0,
          allowFallback: r.rows.every((row) => Boolean(Number(row["allow_wallet_overflow"])))
        }
      }),
    // The most one reservation could take now (read only: a reset that is due counts as done).
    balance: (sql, accountId) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const rows = yield* store.active(sql, accountId, now, false)
        return rows.reduce((best, row: SubscriptionRow) => {
          const used = row.nextResetAt !== undefined && row.nextResetAt <= now ? 0 : row.used
          return Math.max(best, row.total === 0 ? Number.MAX_SAFE_INTEGER : Math.max(0, row.total - used))
        }, 0)
      }),
    audit: [{ table: "subscriptions", subject: "id", column: "amount_used", sign: -1 }]
  }
}
