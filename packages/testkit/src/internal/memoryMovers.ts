/**
 * The in-memory store's own sources as v2 `Source`s: balance movers with no
 * hold ids. The engine owns the holds and writes the ledger rows from their
 * answers; each take or move here is one atomic change of one row.
 *
 * Fault points are named by the phase that moves the balance, as the
 * two-phase sources name theirs: `<id>.reserve` (take), `<id>.settle` (settle
 * and overflow), `<id>.refund` (refund, expire, release), `<id>.correct` and
 * `<id>.lateSettle`.
 */
import { BillingError, Quota } from "@relay-billing/core"
import type { Source } from "@relay-billing/core"
import { Clock, Effect } from "effect"
import type { StoreHandle } from "./memorySources.js"
import type { State, SubscriptionRow } from "./state.js"

const UNLIMITED = Number.MAX_SAFE_INTEGER

/** The fault point of a move of `kind`. */
const phaseOf = (kind: Source.MoveKind): string => {
  switch (kind) {
    case "settle":
    case "overflow":
      return "settle"
    case "refund":
    case "expire":
    case "release":
      return "refund"
    case "correction":
      return "correct"
    case "late_settle":
      return "lateSettle"
  }
}

const missing = (sourceId: string, what: string) =>
  new BillingError.StoreError({ operation: `${sourceId}.move`, detail: `no ${what}` })

/** The wallet: `balance`, per account. A charge is floored at zero when the store says so. */
export const makeWalletSource = (store: StoreHandle, id = "wallet"): Source.Source => {
  const fault = (phase: string) => store.faults.check(`${id}.${phase}`)
  return {
    id,
    role: "funding",
    balance: (_sql, accountId) =>
      store.atomic(Effect.gen(function*() {
        yield* fault("balance")
        return store.state().wallets.get(accountId)?.balance ?? 0
      })),
    take: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* fault("reserve")
        const row = store.state().wallets.get(req.accountId)
        const balance = row?.balance ?? 0
        // Split funding takes what the wallet has, up to the amount; a balance ≤ 0 never pays.
        const amount = req.mode === "upTo" && balance > 0 ? Math.min(balance, req.amount) : req.amount
        if (!row || (req.mode !== "unconditional" && (balance <= 0 || balance < amount))) {
          return yield* new BillingError.InsufficientFunds({
            sourceId: id,
            accountId: req.accountId,
            required: req.amount,
            available: balance
          })
        }
        row.balance = yield* Quota.addInRange("wallet.balance", req.accountId, row.balance, -amount)
        return { amount, balanceAfter: row.balance }
      })),
    move: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* fault(phaseOf(req.kind))
        const row = store.state().wallets.get(req.subjectId)
        if (!row) return yield* missing(id, `wallet ${req.subjectId}`)
        const moved = store.walletFloorAtZero && req.delta < 0
          ? -Math.min(-req.delta, Math.max(0, row.balance))
          : req.delta
        row.balance = yield* Quota.addInRange("wallet.balance", req.subjectId, row.balance, moved)
        return { moved, balanceAfter: row.balance }
      }))
  }
}

/**
 * The token budget: `remain` down and `used` up by every charge (an unlimited
 * token takes nothing at open and still counts its usage).
 */
export const makeTokenSource = (store: StoreHandle, id = "token"): Source.Source => {
  const fault = (phase: string) => store.faults.check(`${id}.${phase}`)
  /** Moves remain by `change` and used by `−change`, both checked before either is written (§2.10). */
  const shift = (tokenId: string, change: number) =>
    Effect.gen(function*() {
      const row = store.state().tokens.get(tokenId)
      if (!row) return yield* missing(id, `token ${tokenId}`)
      const remain = yield* Quota.addInRange("token.remain", tokenId, row.remain, change)
      const used = yield* Quota.addInRange("token.used", tokenId, row.used, -change)
      row.remain = remain
      row.used = used
      return row
    })
  return {
    id,
    role: "budget",
    balance: (_sql, tokenId) =>
      store.atomic(Effect.gen(function*() {
        yield* fault("remaining")
        const row = store.state().tokens.get(tokenId)
        return row?.unlimited ? UNLIMITED : row?.remain ?? 0
      })),
    take: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* fault("reserve")
        const row = store.state().tokens.get(req.subjectId)
        // A token belongs to one account (§2.9).
        if (row && row.accountId !== req.accountId) {
          return yield* new BillingError.TokenNotFound({ tokenId: req.subjectId, accountId: req.accountId })
        }
        if (!row || (!row.unlimited && req.mode !== "unconditional" && row.remain < req.amount)) {
          return yield* new BillingError.TokenBudgetExceeded({
            budgetId: id,
            tokenId: req.subjectId,
            required: req.amount,
            remaining: row?.remain ?? 0
          })
        }
        // An unlimited token takes nothing; its counters move at settlement.
        const amount = row.unlimited ? 0 : req.amount
        const after = yield* shift(req.subjectId, -amount)
        return { amount, balanceAfter: after.remain }
      })),
    move: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* fault(phaseOf(req.kind))
        const row = yield* shift(req.subjectId, req.delta)
        return { moved: req.delta, balanceAfter: row.remain }
      }))
  }
}

const isActive = (sub: SubscriptionRow, now: number) => sub.status === "active" && sub.startAt <= now && now < sub.endAt

const activeOf = (state: State, accountId: string, now: number) =>
  [...state.subscriptions.values()]
    .filter((s) => s.accountId === accountId && isActive(s, now))
    .sort((a, b) => a.endAt - b.endAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))

const leftOf = (sub: SubscriptionRow) => (sub.total === 0 ? UNLIMITED : sub.total - sub.used)

/**
 * The subscription: `used` of the soonest-expiring active subscription with
 * room (its id is the take's `ref` and the ledger's subject). A charge stops at
 * the plan's total and answers what it moved, with the plan's
 * `allowWalletOverflow` as `overflow`: the engine sends the rest along the
 * chain or records it unbilled. A give-back never takes `used` below 0.
 */
export const makeSubscriptionSource = (store: StoreHandle, id = "subscription"): Source.Source => {
  const fault = (phase: string) => store.faults.check(`${id}.${phase}`)
  return {
    id,
    role: "funding",
    minimumReservation: (requested) => Math.max(requested, 1) as Quota.Quota,
    availability: (_sql, accountId) =>
      store.atomic(Effect.gen(function*() {
        yield* fault("availability")
        const active = activeOf(store.state(), accountId, yield* Clock.currentTimeMillis)
        return { available: active.length > 0, allowFallback: active.every((s) => s.allowWalletOverflow) }
      })),
    balance: (_sql, accountId) =>
      store.atomic(Effect.gen(function*() {
        yield* fault("room")
        const active = activeOf(store.state(), accountId, yield* Clock.currentTimeMillis)
        return active.reduce((best, s) => Math.max(best, Math.max(0, leftOf(s))), 0)
      })),
    take: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* fault("reserve")
        const active = activeOf(store.state(), req.accountId, yield* Clock.currentTimeMillis)
        // Split funding (upTo): the soonest-expiring subscription with any room gives what it
        // has; never one reservation across two subscriptions.
        const chosen = req.mode === "upTo"
          ? active.find((s) => leftOf(s) > 0)
          : active.find((s) => leftOf(s) >= req.amount) ?? (req.mode === "unconditional" ? active[0] : undefined)
        if (!chosen) {
          return yield* new BillingError.InsufficientFunds({
            sourceId: id,
            accountId: req.accountId,
            required: req.amount,
            available: active.reduce((m, s) => Math.max(m, s.total - s.used), 0),
            reason: active.length === 0 ? "no active subscription" : "subscription quota insufficient"
          })
        }
        const amount = req.mode === "upTo" ? Math.min(req.amount, leftOf(chosen)) : req.amount
        // An unlimited plan's usage stays within ±(2^53−1) (§2.10).
        chosen.used = yield* Quota.addInRange("subscription.amountUsed", chosen.id, chosen.used, amount)
        return { amount, balanceAfter: leftOf(chosen), ref: chosen.id, subjectId: chosen.id }
      })),
    move: (req) =>
      store.atomic(Effect.gen(function*() {
        yield* fault(phaseOf(req.kind))
        const sub = req.ref !== undefined ? store.state().subscriptions.get(req.ref) : undefined
        if (!sub) return yield* missing(id, `subscription ${req.ref ?? "(no ref)"} for account ${req.accountId}`)
        const before = sub.used
        let target: number
        if (req.delta < 0) {
          const wanted = yield* Quota.addInRange("subscription.amountUsed", sub.id, before, -req.delta)
          target = sub.total > 0 ? Math.min(wanted, Math.max(before, sub.total)) : wanted
        } else {
          target = Math.max(0, before - req.delta)
        }
        sub.used = target
        return {
          moved: before - target,
          balanceAfter: leftOf(sub),
          subjectId: sub.id,
          overflow: sub.allowWalletOverflow
        }
      }))
  }
}
