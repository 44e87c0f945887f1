import { BillingError, Quota } from "@relay-billing/core"
import type { FundingSource, Ledger } from "@relay-billing/core"
import { Clock, Effect } from "effect"
import type { StoreHandle } from "./memorySources.js"
import type { State } from "./state.js"

/**
 * Corrections of the in-memory sources (billing-semantics §4.4): each credits
 * the subject that paid, writes `correction` ledger rows, and remembers its
 * (source, hold id, correction id) key so a repeat moves nothing and answers
 * the first result — also when the source is used as an external source of
 * another store's engine.
 */

type Correct = NonNullable<FundingSource.FundingSource["correct"]>

const keyOf = (sourceId: string, req: FundingSource.CorrectRequest) =>
  `${sourceId}\u0000${req.holdId}\u0000${req.correctionId}`

const push = (state: State, at: number, row: Omit<Ledger.LedgerEntry, "id" | "at">) => {
  state.ledger.push({ id: `L${++state.seq}`, at, ...row })
}

/** Runs `body` once per key; a repeat answers the recorded result. */
const once = (
  store: StoreHandle,
  sourceId: string,
  body: (
    state: State,
    req: FundingSource.CorrectRequest,
    at: number
  ) => FundingSource.CorrectResult | Effect.Effect<FundingSource.CorrectResult, BillingError.QuotaOutOfRange>
): Correct =>
(req) =>
  store.atomic(Effect.gen(function*() {
    yield* store.faults.check(`${sourceId}.correct`)
    const state = store.state()
    const key = keyOf(sourceId, req)
    const seen = state.corrections.get(key)
    if (seen) return seen
    const at = yield* Clock.currentTimeMillis
    const outcome = body(state, req, at)
    const result = Effect.isEffect(outcome) ? yield* outcome : outcome
    state.corrections.set(key, result)
    return result
  }))

const missing = (sourceId: string, what: string) =>
  new BillingError.StoreError({ operation: `${sourceId}.correct`, detail: `no ${what}` })

/** The wallet: balance += amount. */
export const walletCorrect = (store: StoreHandle, id: string): Correct => (req) =>
  Effect.flatMap(
    Effect.sync(() => store.state().wallets.has(req.part.subjectId)),
    (exists) =>
      exists
        ? once(store, id, (state, r, at) =>
          Effect.gen(function*() {
            const row = state.wallets.get(r.part.subjectId)!
            // Within ±(2^53−1) (§2.10): refused typed before any write.
            row.balance = yield* Quota.addInRange("wallet.balance", r.part.subjectId, row.balance, r.amount)
            push(state, at, {
              kind: "correction",
              sourceId: id,
              subjectId: r.part.subjectId,
              accountId: r.accountId,
              holdId: r.holdId,
              amount: r.amount,
              balanceAfter: row.balance
            })
            return { corrected: r.amount, balanceAfter: row.balance }
          }))(req)
        : Effect.fail(missing(id, `wallet ${req.part.subjectId}`))
  )

/** A token budget: remain += amount, used −= amount. */
export const tokenCorrect = (store: StoreHandle, id: string): Correct => (req) =>
  Effect.flatMap(
    Effect.sync(() => store.state().tokens.has(req.part.subjectId)),
    (exists) =>
      exists
        ? once(store, id, (state, r, at) =>
          Effect.gen(function*() {
            const row = state.tokens.get(r.part.subjectId)!
            // Both within ±(2^53−1) (§2.10), checked before either is written.
            const remain = yield* Quota.addInRange("token.remain", r.part.subjectId, row.remain, r.amount)
            const used = yield* Quota.addInRange("token.used", r.part.subjectId, row.used, -r.amount)
            row.remain = remain
            row.used = used
            push(state, at, {
              kind: "correction",
              sourceId: id,
              subjectId: r.part.subjectId,
              accountId: r.accountId,
              holdId: r.holdId,
              amount: r.amount,
              balanceAfter: row.remain
            })
            return { corrected: r.amount, balanceAfter: row.remain }
          }))(req)
        : Effect.fail(missing(id, `token ${req.part.subjectId}`))
  )

/**
 * A subscription: what its overflow charged to the wallet is given back first
 * (it was charged last), then `used` goes down, never below 0. The in-memory
 * subscription has no periods, so the whole amount is always credited.
 */
export const subscriptionCorrect = (store: StoreHandle, id: string, walletId: string): Correct => (req) =>
  Effect.flatMap(
    Effect.sync(() => (req.part.ref !== undefined ? store.state().subscriptions.get(req.part.ref) : undefined)),
    (sub) =>
      sub === undefined ?
        Effect.fail(missing(id, `subscription for hold ${req.holdId}`)) :
        once(store, id, (state, r, at) =>
          Effect.gen(function*() {
            const note = `overflow of subscription ${sub.id}`
            // What this hold still owes the wallet for overflow (overflow rows and their corrections).
            const overflow = -state.ledger
              .filter((e) => e.sourceId === walletId && e.holdId === r.holdId && e.note === note)
              .reduce((s, e) => s + e.amount, 0)
            let rest: number = r.amount
            const wallet = state.wallets.get(sub.accountId)
            const fromWallet = wallet ? Math.min(rest, Math.max(0, overflow)) : 0
            if (wallet && fromWallet > 0) {
              wallet.balance = yield* Quota.addInRange("wallet.balance", sub.accountId, wallet.balance, fromWallet)
              rest -= fromWallet
              push(state, at, {
                kind: "correction",
                sourceId: walletId,
                subjectId: sub.accountId,
                accountId: sub.accountId,
                holdId: r.holdId,
                amount: fromWallet,
                balanceAfter: wallet.balance,
                note
              })
            }
            const give = Math.min(rest, sub.used)
            sub.used -= give
            push(state, at, {
              kind: "correction",
              sourceId: id,
              subjectId: sub.id,
              accountId: sub.accountId,
              holdId: r.holdId,
              amount: give,
              balanceAfter: sub.total - sub.used,
              ...(give < rest ? { note: `correction of ${rest - give} beyond the subscription's usage` } : {})
            })
            return { corrected: r.amount, ...(sub.total > 0 ? { balanceAfter: sub.total - sub.used } : {}) }
          }))(req)
  )
