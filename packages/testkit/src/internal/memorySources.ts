import { BillingError, Quota } from "@relay-billing/core"
import type { Budget, FundingSource, Ledger } from "@relay-billing/core"
import { Clock, Effect } from "effect"
import type { Faults } from "../Faults.js"
import { subscriptionCorrect, tokenCorrect, walletCorrect } from "./memoryCorrect.js"
import { subscriptionLateSettle, tokenLateSettle, walletLateSettle } from "./memoryLate.js"
import type { PartRow, State } from "./state.js"
import { partKey } from "./state.js"

/** What the sources need from their store. */
export interface StoreHandle {
  readonly id: string
  readonly faults: Faults
  readonly state: () => State
  /** Runs `effect` atomically in the store (joins an open transaction). */
  readonly atomic: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | BillingError.StoreError, R>
  readonly walletFloorAtZero: boolean
}

const ledgerRow = (
  state: State,
  at: number,
  row: Omit<Ledger.LedgerEntry, "id" | "at">
): Ledger.LedgerEntry => ({ id: `L${++state.seq}`, at, ...row })

const resolved = (holdId: string, status: string, operation: string) =>
  new BillingError.HoldResolved({ holdId, status, operation })

/**
 * Ends a reservation record: a refund (or expiry) keeps it as `refunded` so the
 * hold id is never reserved again; a release (the open failed) forgets it.
 */
const forget = (
  state: State,
  sourceId: string,
  req: { readonly holdId: string; readonly reason: string },
  part: PartRow
) => {
  if (req.reason === "release") state.parts.delete(partKey(sourceId, req.holdId))
  else part.status = "refunded"
}

/** Shared idempotency rules over one source's part records. */
const partOf = (state: State, sourceId: string, holdId: string): PartRow | undefined =>
  state.parts.get(partKey(sourceId, holdId))

export const makeWallet = (store: StoreHandle, id = "wallet"): FundingSource.FundingSource => {
  const op = (name: string) => store.faults.check(`${id}.${name}`)
  const wallet = (state: State, accountId: string) => {
    const row = state.wallets.get(accountId)
    return row
  }
  return {
    id,
    storeId: store.id,
    correct: walletCorrect(store, id),
    lateSettle: walletLateSettle(store, id),
    balance: (accountId) =>
      store.atomic(Effect.gen(function*() {
        yield* op("balance")
        return wallet(store.state(), accountId)?.balance ?? 0
      })),
    reserve: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* op("reserve")
        const state = store.state()
        const existing = partOf(state, id, req.holdId)
        if (existing) {
          if (existing.status === "refunded") return yield* resolved(req.holdId, "refunded", "reserve")
          return { amount: existing.amount as Quota.Quota }
        }
        const row = wallet(state, req.accountId)
        const balance = row?.balance ?? 0
        // Split funding: take what the wallet has, up to the amount.
        const amount = req.partial && row && balance > 0 ? Math.min(balance, req.amount) : req.amount
        if (!row || (!req.unconditional && (balance <= 0 || balance < amount))) {
          return yield* new BillingError.InsufficientFunds({
            sourceId: id,
            accountId: req.accountId,
            required: req.amount,
            available: balance
          })
        }
        const now = yield* Clock.currentTimeMillis
        row.balance -= amount
        state.parts.set(partKey(id, req.holdId), { amount, status: "reserved" })
        if (amount !== 0) {
          state.ledger.push(ledgerRow(state, now, {
            kind: "reserve",
            sourceId: id,
            subjectId: req.accountId,
            accountId: req.accountId,
            holdId: req.holdId,
            amount: -amount,
            balanceAfter: row.balance
          }))
        }
        return { amount }
      })),
    settle: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* op("settle")
        const state = store.state()
        const part = partOf(state, id, req.holdId)
        if (!part) {
          return yield* new BillingError.StoreError({
            operation: `${id}.settle`,
            detail: `no reservation for ${req.holdId}`
          })
        }
        if (part.status === "settled" && part.result) return part.result
        if (part.status === "refunded") return yield* resolved(req.holdId, "refunded", "settle")
        const row = wallet(state, req.accountId)!
        const now = yield* Clock.currentTimeMillis
        let delta = req.actual - part.amount
        let unbilled = 0
        if (store.walletFloorAtZero && delta > 0 && row.balance - delta < 0) {
          const payable = Math.max(0, row.balance)
          unbilled = delta - payable
          delta = payable
        }
        // Refused before any write when the balance would leave the safe range (§2.10).
        row.balance = yield* Quota.addInRange("wallet.balance", req.accountId, row.balance, -delta)
        if (delta !== 0) {
          state.ledger.push(ledgerRow(state, now, {
            kind: "settle",
            sourceId: id,
            subjectId: req.accountId,
            accountId: req.accountId,
            holdId: req.holdId,
            amount: -delta,
            balanceAfter: row.balance
          }))
        }
        if (unbilled > 0) {
          state.ledger.push(ledgerRow(state, now, {
            kind: "unbilled",
            sourceId: id,
            subjectId: req.accountId,
            accountId: req.accountId,
            holdId: req.holdId,
            amount: 0,
            balanceAfter: row.balance,
            unbilled
          }))
        }
        const result = { charged: part.amount + delta, unbilled: unbilled as Quota.Quota, balanceAfter: row.balance }
        part.status = "settled"
        part.result = result
        return result
      })),
    refund: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* op("refund")
        const state = store.state()
        const part = partOf(state, id, req.holdId)
        if (!part || part.status !== "reserved") return
        const row = wallet(state, req.accountId)!
        const now = yield* Clock.currentTimeMillis
        row.balance += part.amount
        forget(state, id, req, part)
        if (part.amount !== 0) {
          state.ledger.push(ledgerRow(state, now, {
            kind: req.reason,
            sourceId: id,
            subjectId: req.accountId,
            accountId: req.accountId,
            holdId: req.holdId,
            amount: part.amount,
            balanceAfter: row.balance
          }))
        }
      }))
  }
}

export const makeTokenBudget = (store: StoreHandle, id = "token"): Budget.Budget => {
  const op = (name: string) => store.faults.check(`${id}.${name}`)
  const move = (state: State, tokenId: string, at: number, kind: Ledger.EntryKind, holdId: string, change: number) =>
    Effect.gen(function*() {
      const row = state.tokens.get(tokenId)!
      // Both counters are checked before either is written (§2.10).
      const remain = yield* Quota.addInRange("token.remain", tokenId, row.remain, change)
      const used = yield* Quota.addInRange("token.used", tokenId, row.used, -change)
      row.remain = remain
      row.used = used
      if (change !== 0) {
        state.ledger.push(ledgerRow(state, at, {
          kind,
          sourceId: id,
          subjectId: tokenId,
          accountId: row.accountId,
          holdId,
          amount: change,
          balanceAfter: row.remain
        }))
      }
      return row
    })
  return {
    id,
    storeId: store.id,
    correct: tokenCorrect(store, id),
    lateSettle: tokenLateSettle(store, id),
    remaining: (tokenId) =>
      store.atomic(Effect.gen(function*() {
        yield* op("remaining")
        const row = store.state().tokens.get(tokenId)
        return { unlimited: row?.unlimited ?? false, remaining: row?.remain ?? 0 }
      })),
    reserve: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* op("reserve")
        const state = store.state()
        const existing = partOf(state, id, req.holdId)
        if (existing) {
          if (existing.status === "refunded") return yield* resolved(req.holdId, "refunded", "reserve")
          return { amount: existing.amount as Quota.Quota }
        }
        const row = state.tokens.get(req.subjectId)
        // A token belongs to one account (§2.9).
        if (row && row.accountId !== req.accountId) {
          return yield* new BillingError.TokenNotFound({ tokenId: req.subjectId, accountId: req.accountId })
        }
        if (!row || (!row.unlimited && !req.unconditional && row.remain < req.amount)) {
          return yield* new BillingError.TokenBudgetExceeded({
            budgetId: id,
            tokenId: req.subjectId,
            required: req.amount,
            remaining: row?.remain ?? 0
          })
        }
        // An unlimited token reserves nothing; its counters move at settlement.
        const amount = row.unlimited ? 0 : req.amount
        const now = yield* Clock.currentTimeMillis
        yield* move(state, req.subjectId, now, "reserve", req.holdId, -amount)
        state.parts.set(partKey(id, req.holdId), { amount, status: "reserved" })
        return { amount: amount as Quota.Quota }
      })),
    settle: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* op("settle")
        const state = store.state()
        const part = partOf(state, id, req.holdId)
        if (!part) {
          return yield* new BillingError.StoreError({
            operation: `${id}.settle`,
            detail: `no reservation for ${req.holdId}`
          })
        }
        if (part.status === "settled" && part.result) return part.result
        if (part.status === "refunded") return yield* resolved(req.holdId, "refunded", "settle")
        const now = yield* Clock.currentTimeMillis
        const row = yield* move(state, req.part.subjectId, now, "settle", req.holdId, -(req.actual - part.amount))
        const result = { charged: req.actual, unbilled: 0 as Quota.Quota, balanceAfter: row.remain }
        part.status = "settled"
        part.result = result
        return result
      })),
    refund: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* op("refund")
        const state = store.state()
        const part = partOf(state, id, req.holdId)
        if (!part || part.status !== "reserved") return
        const now = yield* Clock.currentTimeMillis
        // Giving a reservation back returns to counters that were in range: never out of range.
        yield* move(state, req.part.subjectId, now, req.reason, req.holdId, part.amount).pipe(
          Effect.catchTag("QuotaOutOfRange", (e) =>
            Effect.fail(new BillingError.StoreError({ operation: `${id}.refund`, detail: e.message })))
        )
        forget(state, id, req, part)
      }))
  }
}

const isActive = (sub: { status: string; startAt: number; endAt: number }, now: number) =>
  sub.status === "active" && sub.startAt <= now && now < sub.endAt

export const makeSubscription = (
  store: StoreHandle,
  options: { readonly id?: string; readonly walletId?: string } = {}
): FundingSource.FundingSource => {
  const id = options.id ?? "subscription"
  const walletId = options.walletId ?? "wallet"
  const op = (name: string) => store.faults.check(`${id}.${name}`)
  const subLedger = (
    state: State,
    at: number,
    sub: { id: string; accountId: string; total: number; used: number },
    kind: Ledger.EntryKind,
    holdId: string,
    change: number,
    unbilled?: number
  ) => {
    if (change === 0 && !unbilled) return
    state.ledger.push(ledgerRow(state, at, {
      kind,
      sourceId: id,
      subjectId: sub.id,
      accountId: sub.accountId,
      holdId,
      amount: change,
      balanceAfter: sub.total - sub.used,
      ...(unbilled ? { unbilled } : {})
    }))
  }
  return {
    id,
    storeId: store.id,
    correct: subscriptionCorrect(store, id, walletId),
    lateSettle: subscriptionLateSettle(store, id, walletId),
    minimumReservation: (requested) => Math.max(requested, 1) as Quota.Quota,
    availability: (accountId) =>
      store.atomic(Effect.gen(function*() {
        yield* op("availability")
        const now = yield* Clock.currentTimeMillis
        const active = [...store.state().subscriptions.values()].filter((s) =>
          s.accountId === accountId && isActive(s, now)
        )
        return { available: active.length > 0, allowFallback: active.every((s) => s.allowWalletOverflow) }
      })),
    room: (accountId) =>
      store.atomic(Effect.gen(function*() {
        yield* op("room")
        const now = yield* Clock.currentTimeMillis
        return [...store.state().subscriptions.values()]
          .filter((s) => s.accountId === accountId && isActive(s, now))
          .reduce(
            (best, s) => Math.max(best, s.total === 0 ? Number.MAX_SAFE_INTEGER : Math.max(0, s.total - s.used)),
            0
          )
      })),
    reserve: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* op("reserve")
        const state = store.state()
        const existing = partOf(state, id, req.holdId)
        if (existing) {
          if (existing.status === "refunded") return yield* resolved(req.holdId, "refunded", "reserve")
          return { amount: existing.amount as Quota.Quota, ...(existing.ref ? { ref: existing.ref } : {}) }
        }
        const now = yield* Clock.currentTimeMillis
        const active = [...state.subscriptions.values()]
          .filter((s) => s.accountId === req.accountId && isActive(s, now))
          .sort((a, b) => a.endAt - b.endAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
        // Split funding (partial): the soonest-expiring subscription with any room gives
        // what it has (this in-memory source draws from one subscription per hold).
        const chosen = req.partial
          ? active.find((s) => s.total === 0 || s.total - s.used > 0)
          : active.find((s) => s.total === 0 || s.total - s.used >= req.amount) ??
            (req.unconditional ? active[0] : undefined)
        const amount = chosen && req.partial && chosen.total > 0
          ? Math.min(req.amount, chosen.total - chosen.used)
          : req.amount
        if (!chosen) {
          return yield* new BillingError.InsufficientFunds({
            sourceId: id,
            accountId: req.accountId,
            required: req.amount,
            available: active.reduce((m, s) => Math.max(m, s.total - s.used), 0),
            reason: active.length === 0 ? "no active subscription" : "subscription quota insufficient"
          })
        }
        // An unlimited plan's usage stays within ±(2^53−1) (§2.10).
        chosen.used = yield* Quota.addInRange("subscription.amountUsed", chosen.id, chosen.used, amount)
        subLedger(state, now, chosen, "reserve", req.holdId, -amount)
        state.parts.set(partKey(id, req.holdId), { amount, ref: chosen.id, status: "reserved" })
        return { amount, ref: chosen.id }
      })),
    settle: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* op("settle")
        const state = store.state()
        const part = partOf(state, id, req.holdId)
        if (!part || !part.ref) {
          return yield* new BillingError.StoreError({
            operation: `${id}.settle`,
            detail: `no reservation for ${req.holdId}`
          })
        }
        if (part.status === "settled" && part.result) return part.result
        if (part.status === "refunded") return yield* resolved(req.holdId, "refunded", "settle")
        const sub = state.subscriptions.get(part.ref)!
        const now = yield* Clock.currentTimeMillis
        const before = sub.used
        let target = Math.max(0, before + (req.actual - part.amount))
        let overflow = 0
        if (sub.total > 0 && target > sub.total) {
          overflow = target - sub.total
          target = sub.total
        }
        yield* Quota.addInRange("subscription.amountUsed", sub.id, before, target - before)
        const overflowWallet = sub.allowWalletOverflow ? state.wallets.get(sub.accountId) : undefined
        if (overflow > 0 && overflowWallet) {
          yield* Quota.addInRange("wallet.balance", sub.accountId, overflowWallet.balance, -overflow)
        }
        sub.used = target
        let unbilled = 0
        if (overflow > 0) {
          const plan = sub.allowWalletOverflow
          const wallet = state.wallets.get(sub.accountId)
          if (plan && wallet) {
            wallet.balance -= overflow
            state.ledger.push(ledgerRow(state, now, {
              kind: "settle",
              sourceId: walletId,
              subjectId: sub.accountId,
              accountId: sub.accountId,
              holdId: req.holdId,
              amount: -overflow,
              balanceAfter: wallet.balance,
              note: `overflow of subscription ${sub.id}`
            }))
          } else {
            unbilled = overflow
          }
        }
        subLedger(state, now, sub, "settle", req.holdId, -(target - before))
        if (unbilled > 0) {
          subLedger(state, now, sub, "unbilled", req.holdId, 0, unbilled)
        }
        const result = {
          charged: part.amount + (target - before) + (overflow - unbilled),
          unbilled: unbilled as Quota.Quota,
          // An unlimited subscription (total 0) has no balance to warn about.
          ...(sub.total > 0 ? { balanceAfter: sub.total - sub.used } : {})
        }
        part.status = "settled"
        part.result = result
        return result
      })),
    refund: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* op("refund")
        const state = store.state()
        const part = partOf(state, id, req.holdId)
        if (!part || part.status !== "reserved" || !part.ref) return
        const sub = state.subscriptions.get(part.ref)!
        const now = yield* Clock.currentTimeMillis
        const before = sub.used
        sub.used = Math.max(0, sub.used - part.amount)
        forget(state, id, req, part)
        subLedger(state, now, sub, req.reason, req.holdId, before - sub.used)
      }))
  }
}
