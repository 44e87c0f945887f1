import { Clock, Effect } from "effect"
import { HoldNotFound, HoldResolved } from "../BillingError.js"
import type { StoreError } from "../BillingError.js"
import type { Lease } from "../BillingSettler.js"
import type { Hold } from "../Hold.js"
import type { HoldJournal } from "../HoldJournal.js"

/** The longest life of a hold, from its open (spec §2.10): renewals never go past it. */
export const MAX_LEASE_MILLIS = 7 * 24 * 60 * 60 * 1000

interface Deps {
  readonly journal: HoldJournal["Service"]
  /** Whether any registered source lives outside the journal's store (then intents exist). */
  readonly registryHasExternal: Effect.Effect<boolean, StoreError>
}

const resolved = (hold: Hold) =>
  new HoldResolved({
    holdId: hold.id,
    status: hold.status,
    operation: "renew",
    ...(hold.settlement ? { actual: hold.settlement.actual } : {})
  })

/**
 * Lease renewal (billing-semantics §6): moves a pending hold's `expiresAt` to
 * now + `ttlMillis`, capped at 7 days after its open, with one conditional
 * write of the journal (only while pending; a lease never shrinks). A hold
 * that is settled, refunded or expired fails with `HoldResolved` and stays as
 * it is; so does a hold whose expiry the recovery pass already recorded (an
 * external part's resolve intent).
 */
export const makeRenew = (deps: Deps) => {
  const { journal } = deps
  return (holdId: string, ttlMillis: number) =>
    Effect.gen(function*() {
      const hold = yield* journal.get(holdId)
      if (!hold) return yield* new HoldNotFound({ holdId })
      if (hold.status !== "pending") return yield* resolved(hold)
      if (yield* deps.registryHasExternal) {
        const intent = yield* journal.getIntent(holdId, "resolve")
        if (intent?.status === "pending" && intent.step !== "settle") {
          return yield* new HoldResolved({
            holdId,
            status: intent.step === "refund" ? "refunded" : "expired",
            operation: "renew"
          })
        }
      }
      const now = yield* Clock.currentTimeMillis
      const expiresAt = Math.min(now + ttlMillis, hold.createdAt + MAX_LEASE_MILLIS)
      const lease = (at: number): Lease => ({ holdId, expiresAt: at })
      if (expiresAt <= hold.expiresAt) return lease(hold.expiresAt)
      if (yield* journal.renew(holdId, expiresAt)) return lease(expiresAt)
      // Nothing written: the hold was resolved meanwhile, or a concurrent renewal went further.
      const after = yield* journal.get(holdId)
      if (!after) return yield* new HoldNotFound({ holdId })
      if (after.status !== "pending") return yield* resolved(after)
      return lease(after.expiresAt)
    }).pipe(Effect.withSpan("BillingSession.renew", { attributes: { holdId } }))
}
