/**
 * The open phase: records a hold and its reservations in one transaction (the
 * reservations themselves are in `openAttempts.ts`), answers a replayed id
 * (§2.7), and releases what a failed open reached outside the journal's store.
 */
import { Clock, Effect, Ref } from "effect"
import { HoldInFlight, HoldResolved, IdempotencyConflict, StoreError } from "../BillingError.js"
import type { ExternalSource } from "../FundingSource.js"
import type { Hold } from "../Hold.js"
import type { HoldJournal } from "../HoldJournal.js"
import type { Quota } from "../Quota.js"
import type { BoundRegistry } from "./boundRegistry.js"
import type { EngineConfig } from "./engineConfig.js"
import type { OpenedHandle } from "./handle.js"
import type { Intents } from "./intents.js"
import { insideTransaction } from "./ledgerRows.js"
import { makeOpenAttempts } from "./openAttempts.js"
import type { OpenInput, OpenOrder } from "./openOrder.js"
import { reserveOrder } from "./openOrder.js"
import { isBusinessError, Replayed } from "./writeOnce.js"

/** What the open phase needs. */
export interface OpenDeps {
  readonly journal: HoldJournal["Service"]
  readonly registry: BoundRegistry
  readonly intents: Intents
  readonly config: EngineConfig
  readonly shared: (target: ExternalSource) => boolean
  /** The session handle of a hold just opened (its settle, refund and lease). */
  readonly handleOf: (hold: Hold) => OpenedHandle
}

/** A replay of an id already opened (the first open's hold decides the answer). */
class Duplicate {
  readonly _tag = "Duplicate"
}

/**
 * Checks a replayed request against the hold of its id: the same account,
 * token and estimate, and the hold still pending; answers the pending hold.
 */
export const checkExisting = (hold: Hold, order: OpenOrder) =>
  Effect.gen(function*() {
    const { request } = order
    const mismatch = (field: string, existing: unknown, requested: unknown) =>
      new IdempotencyConflict({
        holdId: hold.id,
        field,
        existing: String(existing ?? "(none)"),
        requested: String(requested ?? "(none)")
      })
    if (hold.accountId !== request.accountId) return yield* mismatch("accountId", hold.accountId, request.accountId)
    if ((hold.tokenId ?? undefined) !== order.budgetedTokenId) {
      return yield* mismatch("tokenId", hold.tokenId, request.tokenId)
    }
    if (hold.estimate !== request.estimate) return yield* mismatch("estimate", hold.estimate, request.estimate)
    if (hold.status !== "pending") {
      return yield* new HoldResolved({
        holdId: hold.id,
        status: hold.status,
        operation: "open",
        ...(hold.settlement ? { actual: hold.settlement.actual } : {})
      })
    }
    return hold
  })

/** The open phase. */
export const makeOpen = (deps: OpenDeps) => {
  const { config, handleOf, intents, journal, registry } = deps
  const { reserveChain } = makeOpenAttempts({ registry, config, shared: deps.shared })

  /**
   * After a failed open: releases the external targets it reached now (recovery retries
   * later); every target when an earlier open of the id left its intent pending (`reached`
   * undefined), since finishing the intent would forget that attempt's reservations.
   */
  const recoverOpenLogged = (holdId: string, reached: ReadonlySet<string> | undefined) =>
    intents.recoverOpen(holdId, reached === undefined ? { when: "now" } : { when: "now", only: reached }).pipe(
      Effect.catchCause((cause) =>
        Effect.logWarning("relay-billing: releasing an open's external reservations failed; recovery retries", cause)
          .pipe(Effect.annotateLogs({ holdId }))
      )
    )

  /** Opens the hold `order` asks for and answers its handle. */
  const openOrder = Effect.fn("BillingSession.open")(function*(order: OpenOrder) {
    const { request } = order
    // No read first: the insert inside the transaction detects an existing hold (and
    // makes a concurrent open of the same id wait for, then see, the first one).
    const now = yield* Clock.currentTimeMillis
    const draft: Hold = {
      id: request.holdId,
      accountId: request.accountId,
      ...(order.budgetedTokenId !== undefined ? { tokenId: order.budgetedTokenId } : {}),
      estimate: request.estimate,
      reserved: 0 as Quota,
      preference: order.preference,
      trusted: false,
      status: "pending",
      parts: [],
      createdAt: now,
      expiresAt: now + (request.ttlMillis ?? config.holdTtlMillis),
      ...(request.metadata ? { metadata: { ...request.metadata } } : {})
    }
    // An open that may reach a source outside the journal's store records its intent first,
    // in its own write, so that recovery can release what a crash left reserved.
    const intentScope = { ...draft, holdId: draft.id }
    const externalTargets = yield* intents.openTargets(intentScope)
    const reachesExternal = externalTargets.length > 0
    const earlierOpenPending = reachesExternal && (yield* intents.beginOpen(intentScope, externalTargets)).leftover
    // The external targets this open called. A Ref, not a value: the transaction may run
    // again (a deadlock), and what an earlier run reserved outside the store stays reserved.
    const reached = yield* Ref.make<ReadonlySet<string>>(new Set())
    const releaseReached = Effect.flatMap(
      Ref.get(reached),
      (keys) => recoverOpenLogged(request.holdId, earlierOpenPending ? undefined : keys)
    )
    // Inside a transaction it joins (a post-consume charge), a conflict could not roll the
    // takes back on its own: the hold is inserted first there, as with two-phase sources.
    const takesFirst = !reachesExternal && (yield* registry.allSources) && !(yield* insideTransaction(journal))
    const outcome = yield* journal.transaction(
      Effect.scoped(Effect.gen(function*() {
        if (takesFirst) {
          // Every source is a `Source` in the journal's store: take first, then insert the hold once with
          // its parts; a conflict rolls the takes back and is answered as the replay it is.
          const chosen = yield* reserveChain(order, reached)
          const hold: Hold = { ...draft, parts: chosen.parts, reserved: chosen.amount, trusted: chosen.trusted }
          if (!(yield* journal.insert(hold))) return yield* new Replayed()
          return hold
        }
        if (!(yield* journal.insert(draft))) return new Duplicate()
        const chosen = yield* reserveChain(order, reached)
        const hold: Hold = { ...draft, parts: chosen.parts, reserved: chosen.amount, trusted: chosen.trusted }
        if (!(yield* journal.update(hold, "pending"))) {
          return yield* new StoreError({ operation: "open.record", detail: `hold ${hold.id} changed while opening` })
        }
        if (reachesExternal && earlierOpenPending) {
          yield* intents.releaseUnkept(intentScope, externalTargets, hold.parts)
        }
        if (reachesExternal) yield* intents.commitOpen(hold.id)
        return hold
      }))
    ).pipe(
      Effect.catchTag("Replayed", () => Effect.succeed(new Duplicate())),
      // A take that failed may have met a balance the first open of this id already took:
      // an existing hold makes it a replay (§2.7), answered as such.
      Effect.catchIf(
        (error): error is typeof error => takesFirst && isBusinessError(error),
        (error) =>
          Effect.flatMap(
            journal.get(request.holdId),
            (existing) => existing ? Effect.succeed(new Duplicate()) : Effect.fail(error)
          )
      ),
      // The open failed: release every external target now (its compensation may have
      // failed too); if that fails as well, the recovery pass does it after the TTL.
      Effect.onError(() => reachesExternal ? releaseReached : Effect.void)
    )
    if (outcome instanceof Duplicate) {
      if (reachesExternal) yield* releaseReached
      // Never a handle to another request's hold (§2.7): a conflict, the first
      // outcome, or — while the first request still runs — HoldInFlight.
      const raced = yield* journal.get(request.holdId)
      if (!raced) return yield* new StoreError({ operation: "open", detail: `hold ${request.holdId} vanished` })
      const pending = yield* checkExisting(raced, order)
      return yield* new HoldInFlight({ holdId: pending.id, expiresAt: pending.expiresAt })
    }
    yield* Effect.annotateCurrentSpan({ holdId: outcome.id, reserved: outcome.reserved })
    return handleOf(outcome)
  })

  /** `BillingSession.open`: reserves the estimate of a decoded request. */
  const open = (request: OpenInput) => openOrder(reserveOrder(request, config.preferences))

  return { open, openOrder }
}
