import { Quota } from "@relay-billing/core"
import type { BillingError, FundingSource, Ledger } from "@relay-billing/core"
import { Clock, Effect } from "effect"
import type { StoreHandle } from "./memorySources.js"
import type { State } from "./state.js"
import { partKey } from "./state.js"

/**
 * Late charges of the in-memory sources (billing-semantics §6): the hold was
 * expired (its reservation given back), then settled, so each source charges
 * its share afresh with `late_settle` ledger rows, without a balance
 * condition (the wallet's floor-at-zero policy aside). Each remembers its
 * (source, hold id) key, so a repeat moves nothing and answers the first
 * result — also when used as an external source of another store's engine.
 */

type LateSettle = NonNullable<FundingSource.FundingSource["lateSettle"]>
type Body = (
  state: State,
  req: FundingSource.LateSettleRequest,
  at: number
) => Effect.Effect<FundingSource.PartResult, BillingError.QuotaOutOfRange>

const push = (state: State, at: number, row: Omit<Ledger.LedgerEntry, "id" | "at">) => {
  state.ledger.push({ id: `L${++state.seq}`, at, ...row })
}

/** Runs `body` once per (source, hold); a repeat answers the recorded result. */
const once = (store: StoreHandle, sourceId: string, body: Body): LateSettle => (req) =>
  store.atomic(Effect.gen(function*() {
    yield* store.faults.check(`${sourceId}.lateSettle`)
    const state = store.state()
    const key = partKey(sourceId, req.holdId)
    const seen = state.lateCharges.get(key)
    if (seen) return seen
    const at = yield* Clock.currentTimeMillis
    const result = yield* body(state, req, at)
    state.lateCharges.set(key, { ...result })
    return result
  }))

/** The wallet: balance down by the amount (no floor unless the store floors at zero). */
export const walletLateSettle = (store: StoreHandle, sourceId: string): LateSettle =>
  once(store, sourceId, (state, req, at) =>
    Effect.gen(function*() {
      const accountId = req.part.subjectId
      const row = state.wallets.get(accountId)
      if (!row) return { charged: 0, unbilled: req.amount }
      let amount: number = req.amount
      let unbilled = 0
      if (store.walletFloorAtZero && row.balance - amount < 0) {
        const payable = Math.max(0, row.balance)
        unbilled = amount - payable
        amount = payable
      }
      row.balance = yield* Quota.addInRange("wallet.balance", accountId, row.balance, -amount)
      const base = {
        sourceId,
        subjectId: accountId,
        accountId: req.accountId,
        holdId: req.holdId,
        balanceAfter: row.balance
      }
      if (amount > 0) push(state, at, { ...base, kind: "late_settle", amount: -amount })
      if (unbilled > 0) push(state, at, { ...base, kind: "unbilled", amount: 0, unbilled })
      return { charged: amount, unbilled, balanceAfter: row.balance }
    }))

/** The token budget: `remain` down and `used` up by the whole cost (unlimited tokens count usage). */
export const tokenLateSettle = (store: StoreHandle, sourceId: string): LateSettle =>
  once(store, sourceId, (state, req, at) =>
    Effect.gen(function*() {
      const row = state.tokens.get(req.part.subjectId)
      if (!row) return { charged: 0, unbilled: req.amount }
      const remain = yield* Quota.addInRange("token.remain", req.part.subjectId, row.remain, -req.amount)
      const used = yield* Quota.addInRange("token.used", req.part.subjectId, row.used, req.amount)
      row.remain = remain
      row.used = used
      push(state, at, {
        kind: "late_settle",
        sourceId,
        subjectId: req.part.subjectId,
        accountId: row.accountId,
        holdId: req.holdId,
        amount: -req.amount,
        balanceAfter: row.remain
      })
      return { charged: req.amount, unbilled: 0, balanceAfter: row.remain }
    }))

/**
 * The subscription the hold drew from: its usage up to its total; above it the
 * plan's overflow rule (the wallet when allowed, else unbilled), as a settle.
 */
export const subscriptionLateSettle = (store: StoreHandle, sourceId: string, walletId: string): LateSettle =>
  once(store, sourceId, (state, req, at) =>
    Effect.gen(function*() {
      const sub = req.part.ref !== undefined ? state.subscriptions.get(req.part.ref) : undefined
      if (!sub) return { charged: 0, unbilled: req.amount }
      const before = sub.used
      const wanted = yield* Quota.addInRange("subscription.amountUsed", sub.id, before, req.amount)
      const target = sub.total > 0 ? Math.min(wanted, Math.max(before, sub.total)) : wanted
      const overflow = wanted - target
      const wallet = sub.allowWalletOverflow ? state.wallets.get(sub.accountId) : undefined
      if (overflow > 0 && wallet) {
        wallet.balance = yield* Quota.addInRange("wallet.balance", sub.accountId, wallet.balance, -overflow)
      }
      sub.used = target
      const base = { sourceId, subjectId: sub.id, accountId: sub.accountId, holdId: req.holdId }
      if (target !== before) {
        push(state, at, { ...base, kind: "late_settle", amount: before - target, balanceAfter: sub.total - sub.used })
      }
      let unbilled = 0
      if (overflow > 0 && wallet) {
        push(state, at, {
          kind: "late_settle",
          sourceId: walletId,
          subjectId: sub.accountId,
          accountId: sub.accountId,
          holdId: req.holdId,
          amount: -overflow,
          balanceAfter: wallet.balance,
          note: `overflow of subscription ${sub.id}`
        })
      } else if (overflow > 0) {
        unbilled = overflow
        push(state, at, { ...base, kind: "unbilled", amount: 0, balanceAfter: sub.total - sub.used, unbilled })
      }
      return {
        charged: req.amount - unbilled,
        unbilled,
        ...(sub.total > 0 ? { balanceAfter: sub.total - sub.used } : {})
      }
    }))
