/**
 * The session handle an open answers: the hold as opened, with its settle,
 * refund and lease bound to it.
 */
import { Effect } from "effect"
import type { BillingSettler, LeaseControl } from "../BillingSettler.js"
import type { Hold } from "../Hold.js"
import type { HoldJournal } from "../HoldJournal.js"
import type { makeRenew } from "./lease.js"
import type { makeResolve } from "./resolve.js"
import type { makeSettle } from "./settle.js"

/** The handle of an opened hold (a `Session`). */
export type OpenedHandle = BillingSettler & { readonly hold: Hold; readonly lease: LeaseControl }

/** What a handle is bound to. */
export interface HandleDeps {
  readonly journal: HoldJournal["Service"]
  /** Settles the hold the handle holds in memory (see `settle.ts`). */
  readonly settleFromHandle: ReturnType<typeof makeSettle>["settleFromHandle"]
  readonly refund: ReturnType<typeof makeResolve>["refund"]
  readonly renew: ReturnType<typeof makeRenew>
}

/** Builds the handle of each opened hold. */
export const makeHandleOf = (deps: HandleDeps) => (hold: Hold): OpenedHandle => {
  const { journal, refund, renew, settleFromHandle } = deps
  // The lease length the hold was opened with (the request's `ttlMillis` or the default).
  const ttlMillis = Math.max(1, hold.expiresAt - hold.createdAt)
  return {
    hold,
    holdId: hold.id,
    preConsumed: hold.reserved,
    needsRefund: journal.get(hold.id).pipe(Effect.map((current) => current?.status === "pending")),
    settle: (actual, options) => settleFromHandle(hold, actual, options?.metadata),
    refund: Effect.suspend(() => refund(hold.id)),
    lease: { ttlMillis, renew: Effect.suspend(() => renew(hold.id, ttlMillis)) }
  }
}
