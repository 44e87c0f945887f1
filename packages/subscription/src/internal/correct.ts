import { Clock, Effect } from "effect"
import type { FundingSource } from "@relay-billing/core"
import { Corrections, KnexLedger } from "@relay-billing/knex"
import type { KnexClient } from "@relay-billing/knex"
import { WalletSource } from "@relay-billing/wallet"
import { decodeDraw } from "./rows.js"
import type { SubscriptionRow } from "./rows.js"
import type { SubscriptionStore } from "./store.js"

const OVERFLOW = "overflow of subscription "

/**
 * A correction of a subscription part (billing-semantics §4.4), in the
 * current transaction, the subscription rows locked:
 *
 * 1. what the hold's overflow charged to the wallet is given back first (it
 *    was charged last), with a `correction` row on the wallet;
 * 2. then each drawn row in reverse order, at most what this hold still
 *    carries on it: `amount_used` goes down, with a `correction` row — but
 *    only while the row is still in the period the hold drew from (§3.6: the
 *    old period's figures may be corrected, the new period's never);
 * 3. whatever belongs to a period that has ended since is recorded (a
 *    `correction` row of amount 0 on the row, with a note) and the current
 *    period's `amount_used` is left alone: the quota of an ended period cannot
 *    be spent any more, so there is nothing to give back to it.
 *
 * The account's `usedQuota` goes down by the whole amount either way (the
 * engine's part). Every row carries an idempotency key of (source, hold,
 * correction id); a repeat finds them and moves nothing.
 */
export const makeCorrect = (
  client: KnexClient.Client,
  store: SubscriptionStore,
  id: string,
  walletId: string
): NonNullable<FundingSource.FundingSource["correct"]> =>
(req) =>
  client.transaction(Effect.gen(function*() {
    const done = yield* Corrections.recorded(client, id, req.holdId, req.correctionId)
    if (done.length > 0) return { corrected: req.amount }
    let index = 0
    const nextKey = () => Corrections.key(id, req.holdId, req.correctionId, index++)
    const draw = decodeDraw(req.part.ref)
    const at = yield* Clock.currentTimeMillis
    const rows = yield* store.lockRows(draw.map((d) => d.id))
    for (const row of rows) yield* store.resetIfDue(row, at)
    const ledger = yield* KnexLedger.entries(client, { holdId: req.holdId })
    let rest: number = req.amount

    // 1. The wallet overflow this hold still owes back (overflow rows and their corrections).
    const overflowRows = ledger.filter((e) => e.sourceId === walletId && e.note?.startsWith(OVERFLOW))
    const owed = -overflowRows.reduce((sum, e) => sum + e.amount, 0)
    const fromWallet = Math.min(rest, Math.max(0, owed))
    if (fromWallet > 0) {
      const last = overflowRows[overflowRows.length - 1]!
      const after = yield* WalletSource.credit(client, {
        accountId: last.subjectId,
        amount: fromWallet,
        holdId: req.holdId,
        sourceId: walletId,
        note: last.note!,
        idempotencyKey: nextKey()
      })
      if (after !== undefined) rest -= fromWallet
    }

    // 2. The drawn rows, in reverse order, while they are in the period the hold drew from.
    let touched: SubscriptionRow | undefined
    for (const d of [...draw].reverse()) {
      if (rest === 0) break
      const row = rows.find((r) => r.id === d.id)
      if (!row) continue
      const mine = ledger.filter((e) => e.sourceId === id && e.subjectId === row.id)
      const carried = -mine.reduce((sum, e) => sum + e.amount, 0)
      const firstSeq = Math.min(...mine.map((e) => Number(e.id)))
      if (yield* periodEnded(client, id, row.id, firstSeq)) continue
      const give = Math.min(rest, Math.max(0, carried), Math.max(0, row.used))
      if (give === 0) continue
      yield* client.query(`${id}.correct`, (db) =>
        db(store.subscriptions).where({ id: row.id }).update({ amount_used: row.used - give }))
      row.used -= give
      rest -= give
      touched = row
      yield* KnexLedger.append(client, [{
        at,
        kind: "correction",
        sourceId: id,
        subjectId: row.id,
        accountId: row.accountId,
        holdId: req.holdId,
        amount: give,
        balanceAfter: row.total - row.used,
        idempotencyKey: nextKey()
      }])
    }

    // 3. What belongs to an ended period: recorded, the current period untouched.
    if (rest > 0) {
      const row = rows.find((r) => r.id === draw[draw.length - 1]?.id) ?? rows[0]
      if (row) {
        yield* KnexLedger.append(client, [{
          at,
          kind: "correction",
          sourceId: id,
          subjectId: row.id,
          accountId: row.accountId,
          holdId: req.holdId,
          amount: 0,
          balanceAfter: row.total - row.used,
          note: `${rest} of an ended period: the current period's amount_used is unchanged`,
          idempotencyKey: nextKey()
        }])
      }
    }
    return {
      corrected: req.amount,
      ...(touched && touched.total > 0 ? { balanceAfter: touched.total - touched.used } : {})
    }
  }))

/**
 * Whether the row's period changed since the hold first drew from it: a
 * `reset` ledger row of that subscription after the hold's first row.
 */
const periodEnded = (client: KnexClient.Client, sourceId: string, subscriptionId: string, firstSeq: number) =>
  Number.isFinite(firstSeq)
    ? client.query(`${sourceId}.correct.period`, (db) =>
      db(client.table("ledger"))
        .where({ source_id: sourceId, subject_id: subscriptionId, kind: "reset" })
        .andWhere("seq", ">", firstSeq)
        .first("seq")).pipe(Effect.map((row) => row !== undefined))
    : Effect.succeed(true)
