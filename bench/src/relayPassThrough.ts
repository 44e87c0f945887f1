/**
 * A pass-through `BillingSession` for `pnpm bench:relay`: the same relay
 * server, with the client API billing through this instead of the SDK, so the
 * difference between the two runs is what billing costs per request.
 *
 * It reserves and settles nothing: `open` records the hold in memory (pending,
 * reserved = the estimate, no parts, no database), the settler's `settle` /
 * `refund` resolve it in memory, and `get` returns it (then forgets a resolved
 * hold, so a long run does not grow). It keeps the contract the client API
 * relies on: one open per hold id (a repeat fails `HoldInFlight` /
 * `HoldResolved`), exactly one resolution per hold. The operations the client
 * API never calls (the admin API's and the reaper's use the SDK's session,
 * see `Server.Options.clientSession`) die with a message saying so.
 *
 * Never used by the relay itself: only the bench's `relayServe` entry builds
 * the server with it.
 *
 * @since 0.1.0
 */
import { BillingError, BillingSession } from "@relay-billing/core"
import type { BillingSettler, Hold, Quota } from "@relay-billing/core"
import { Clock, Effect, Layer } from "effect"

/** How long a pass-through hold's lease reads as (never expires: nothing reaps it). */
const TTL_MILLIS = 600_000

const notUsed = (operation: string) =>
  Effect.die(new Error(`pass-through billing: ${operation} is not used by the client API`))

/**
 * The pass-through session (see the module docs).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (): BillingSession.BillingSession["Service"] => {
  const holds = new Map<string, Hold.Hold>()

  const resolve = (holdId: string, update: (hold: Hold.Hold, now: number) => Hold.Hold) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.sync(() => {
        const hold = holds.get(holdId)
        if (hold === undefined) return undefined
        const next = hold.status === "pending" ? update(hold, now) : hold
        holds.set(holdId, next)
        return next
      }))

  const settle = (holdId: string, actual: number, options?: BillingSettler.SettleOptions) =>
    Effect.flatMap(
      resolve(holdId, (hold, now) => ({
        ...hold,
        status: "settled",
        resolvedAt: now,
        settlement: {
          holdId,
          actual: actual as Quota.Quota,
          reserved: hold.reserved,
          delta: hold.reserved - actual,
          parts: [],
          settledAt: now,
          ...(options?.metadata !== undefined ? { metadata: options.metadata } : {})
        }
      })),
      (hold) =>
        hold?.settlement !== undefined
          ? Effect.succeed(hold.settlement)
          : Effect.fail(new BillingError.HoldNotFound({ holdId }))
    )

  const refund = (holdId: string) =>
    Effect.flatMap(
      resolve(holdId, (hold, now) => ({ ...hold, status: "refunded", resolvedAt: now })),
      (hold) =>
        hold === undefined
          ? Effect.fail(new BillingError.HoldNotFound({ holdId }))
          : Effect.succeed({ holdId, status: hold.status, refunded: hold.status === "refunded" ? hold.reserved : 0 })
    )

  const open = (request: BillingSession.OpenRequest) =>
    Effect.gen(function*() {
      const existing = holds.get(request.holdId)
      if (existing !== undefined) {
        return yield* existing.status === "pending"
          ? Effect.fail(new BillingError.HoldInFlight({ holdId: request.holdId }))
          : Effect.fail(
            new BillingError.HoldResolved({ holdId: request.holdId, status: existing.status, operation: "open" })
          )
      }
      const now = yield* Clock.currentTimeMillis
      const hold: Hold.Hold = {
        id: request.holdId,
        accountId: request.accountId,
        ...(request.tokenId !== undefined ? { tokenId: request.tokenId } : {}),
        estimate: request.estimate as Quota.Quota,
        reserved: request.estimate as Quota.Quota,
        preference: "subscription_first",
        trusted: false,
        status: "pending",
        parts: [],
        createdAt: now,
        expiresAt: now + TTL_MILLIS,
        ...(request.metadata !== undefined ? { metadata: request.metadata } : {})
      }
      holds.set(hold.id, hold)
      const lease: BillingSettler.LeaseControl = {
        ttlMillis: TTL_MILLIS,
        renew: Effect.map(Clock.currentTimeMillis, (t) => ({ holdId: hold.id, expiresAt: t + TTL_MILLIS }))
      }
      const session: BillingSession.Session = {
        holdId: hold.id,
        preConsumed: hold.reserved,
        hold,
        lease,
        needsRefund: Effect.sync(() => holds.get(hold.id)?.status === "pending"),
        settle: (actual, options) => settle(hold.id, actual, options),
        refund: refund(hold.id)
      }
      return session
    })

  return BillingSession.BillingSession.of({
    open,
    settle,
    refund,
    renew: (holdId) => Effect.map(Clock.currentTimeMillis, (t) => ({ holdId, expiresAt: t + TTL_MILLIS })),
    charge: () => notUsed("charge"),
    correct: () => notUsed("correct"),
    get: (holdId) =>
      Effect.suspend(() => {
        const hold = holds.get(holdId)
        if (hold === undefined) return Effect.fail(new BillingError.HoldNotFound({ holdId }))
        if (hold.status !== "pending") holds.delete(holdId)
        return Effect.succeed(hold)
      }),
    reapExpired: () => Effect.succeed({ examined: 0, expired: 0, refunded: 0, failures: [] })
  })
}

/**
 * The pass-through session as a layer (a fresh one per build).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<BillingSession.BillingSession> = Layer.sync(BillingSession.BillingSession, make)
