/**
 * The post-consume phase (`charge`): one charge after the work, as an open of
 * 0 taken without a balance condition and its settle.
 */
import { Effect } from "effect"
import { HoldNotFound, IdempotencyConflict } from "../BillingError.js"
import type { Hold, Settlement } from "../Hold.js"
import type { HoldJournal } from "../HoldJournal.js"
import type * as Preference from "../Preference.js"
import * as QuotaModule from "../Quota.js"
import type { Intents } from "./intents.js"
import type { makeOpen } from "./open.js"
import { checkExisting } from "./open.js"
import type { OpenInput } from "./openOrder.js"
import { postConsumeOrder } from "./openOrder.js"
import type { makeSettle, SettleMetadata } from "./settle.js"

/** What the post-consume phase needs. */
export interface ChargeDeps {
  /** The engine's named custom chains (a request's preference may name one). */
  readonly preferences: Preference.Chains
  readonly journal: HoldJournal["Service"]
  readonly intents: Intents
  /** The open phase's entry for an order (the post-consume mode). */
  readonly openOrder: ReturnType<typeof makeOpen>["openOrder"]
  readonly settle: ReturnType<typeof makeSettle>["settle"]
}

/** The post-consume phase. */
export const makeCharge = (deps: ChargeDeps) => {
  const { intents, journal, openOrder, preferences, settle } = deps

  /**
   * Post-consume: one charge of `actual` after the work, without a reservation
   * before it. Opens an unconditional hold of 0 (the source's minimum) and
   * settles it with `actual` in one transaction; idempotent by hold id (a repeat
   * with the same amount returns the first settlement, another amount is an
   * `IdempotencyConflict` on `actual`).
   */
  const charge = (input: OpenInput, actualInput: number, metadata?: SettleMetadata) =>
    Effect.gen(function*() {
      const actual = yield* QuotaModule.decode("actual", actualInput)
      const order = postConsumeOrder(input, preferences)
      /** The first charge of this id, if it matches this one (same account, token and amount). */
      const replay = (settled: Hold, settlement: Settlement) =>
        Effect.gen(function*() {
          yield* checkExisting({ ...settled, status: "pending" }, order)
          if (settlement.actual !== actual) {
            return yield* new IdempotencyConflict({
              holdId: settled.id,
              field: "actual",
              existing: String(settlement.actual),
              requested: String(actual)
            })
          }
          return settlement
        })
      const existing = yield* journal.get(input.holdId)
      if (existing?.status === "settled" && existing.settlement) return yield* replay(existing, existing.settlement)
      // With a source outside the journal's store, open and settle each run their own
      // transaction so that their intents are committed before an external call (inside one
      // enclosing transaction they would roll back with it, and an external charge followed
      // by a failure would be recorded nowhere). A retry finds the pending hold and settles it.
      const external = (yield* intents.openTargets({ ...order.request, expiresAt: 0 })).length > 0
      /** Settles the pending hold of an earlier (or concurrent) charge of this id. */
      const settleExisting = Effect.gen(function*() {
        const pending = yield* journal.get(input.holdId)
        if (!pending) return yield* new HoldNotFound({ holdId: input.holdId })
        if (pending.status === "settled" && pending.settlement) return yield* replay(pending, pending.settlement)
        yield* checkExisting(pending, order)
        const settlement = yield* settle(pending.id, actual, metadata)
        return settlement.actual === actual ? settlement : yield* replay(pending, settlement)
      })
      if (external && existing?.status === "pending") return yield* settleExisting
      const run = external
        ? Effect.flatMap(
          openOrder(order).pipe(Effect.catchTag("HoldInFlight", () => Effect.succeed(undefined))),
          (handle) => (handle === undefined ? settleExisting : handle.settle(actual, { metadata }))
        )
        : journal.transaction(Effect.flatMap(openOrder(order), (handle) => handle.settle(actual, { metadata })))
      return yield* run.pipe(
        // A concurrent charge of the same id settled first: answer with its settlement.
        Effect.catchTag("HoldResolved", (error) =>
          Effect.gen(function*() {
            const settled = yield* journal.get(input.holdId)
            if (settled?.status !== "settled" || !settled.settlement) return yield* Effect.fail(error)
            return yield* replay(settled, settled.settlement)
          }))
      )
    }).pipe(Effect.withSpan("BillingSession.charge", { attributes: { holdId: input.holdId } }))

  return { charge }
}
