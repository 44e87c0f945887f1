/**
 * The resolve phase: a pending hold given back — by `refund`, or by the
 * recovery pass when its lease lapsed (`expire`) — and the recovery pass
 * itself (`reapExpired`), which also finishes the intents a failure left
 * pending (sources outside the journal's store).
 */
import { Clock, Data, Effect } from "effect"
import { HoldNotFound, StoreError } from "../BillingError.js"
import type { UnknownSource } from "../BillingError.js"
import { BillingEvent } from "../BillingEvents.js"
import type { RefundError, RefundResult, SettleError } from "../BillingSettler.js"
import type { ExternalSource } from "../FundingSource.js"
import type { Hold, HoldPart } from "../Hold.js"
import type { HoldIntent } from "../HoldIntent.js"
import type { HoldJournal } from "../HoldJournal.js"
import type { BoundRegistry } from "./boundRegistry.js"
import type { Claims } from "./claims.js"
import type { EngineConfig } from "./engineConfig.js"
import type { Intents } from "./intents.js"
import { insideTransaction } from "./ledgerRows.js"
import type { SettleTx } from "./settle.js"
import { Stale } from "./writeOnce.js"

/**
 * A hold the recovery pass could not finish this time (the next pass tries
 * again): `step` `expire` is the expiry of a lapsed hold, `open`/`resolve`/`late`
 * the finishing of a pending intent of that phase (`late`: a late charge, §6).
 */
export interface ReapFailure {
  readonly holdId: string
  readonly step: "expire" | "open" | "resolve" | "late"
  /** The failure's message. */
  readonly error: string
  /** The typed failure (match it by `_tag`). */
  readonly failure: ReapError
}

/** What a recovery step can fail with. */
export type ReapError = SettleError | RefundError

/** What the recovery pass did. */
export interface ReapReport {
  readonly examined: number
  readonly expired: number
  readonly refunded: number
  readonly failures: ReadonlyArray<ReapFailure>
}

/** Internal: the recovery pass found the lease of a hold it listed renewed since. */
class Renewed extends Data.TaggedError("Renewed")<{}> {}

/** Why a hold is given back. */
export type GiveBackReason = "refund" | "expire"

/** What the give-back transaction needs. */
export interface GiveBackDeps {
  readonly journal: HoldJournal["Service"]
  readonly registry: BoundRegistry
  readonly intents: Intents
  readonly claims: Claims
  readonly settleTx: SettleTx
  readonly targetOf: (part: HoldPart) => Effect.Effect<ExternalSource, UnknownSource>
  readonly publish: (event: BillingEvent) => Effect.Effect<void>
}

/** The give-back transaction and the finishing of recorded resolutions. */
export const makeGiveBack = (deps: GiveBackDeps) => {
  const { intents, journal, publish, registry, targetOf } = deps
  const { requireClaim } = deps.claims
  const { loadPending, settleOutcome, settleTx } = deps.settleTx

  const giveBack = (hold: Hold, reason: "refund" | "expire") =>
    Effect.gen(function*() {
      let refunded = 0
      for (const part of [...hold.parts].reverse()) {
        const source = yield* targetOf(part)
        yield* source.refund({ holdId: hold.id, accountId: hold.accountId, part, reason })
        if (part.kind === "funding") refunded += part.amount
      }
      return refunded
    })

  /** The refund transaction (also used to finish a recorded refund or expiry). */
  const giveBackTx = (holdId: string, reason: "refund" | "expire") =>
    Effect.gen(function*() {
      // With every source a `Source` (no hold-id records), the hold is read without a lock and resolved
      // by the conditional update after the moves (the lock order of open and settle: balances,
      // then the hold); an update that finds it resolved already rolls the moves back.
      const unlocked = (yield* registry.allSources) && !(yield* insideTransaction(journal))
      const outcome = yield* journal.transaction(Effect.gen(function*() {
        const hold = unlocked
          ? yield* Effect.flatMap(journal.get(holdId), (h) =>
            h ? Effect.succeed(h) : Effect.fail(new HoldNotFound({ holdId })))
          : yield* loadPending(holdId, "refund")
        if (hold.status !== "pending") {
          return { hold, refunded: 0, fresh: false }
        }
        yield* requireClaim(hold, reason)
        const refunded = yield* giveBack(hold, reason)
        const now = yield* Clock.currentTimeMillis
        const done: Hold = { ...hold, status: reason === "expire" ? "expired" : "refunded", resolvedAt: now }
        if (!(yield* journal.update(done, "pending"))) {
          if (unlocked) {
            return yield* new Stale()
          }
          return yield* new StoreError({ operation: "refund.record", detail: `hold ${holdId} changed while refunding` })
        }
        if (yield* intents.hasExternal(hold)) {
          yield* journal.finishIntent(holdId, "resolve", done.status)
        }
        return { hold: done, refunded, fresh: true }
      })).pipe(
        Effect.catchTag("Stale", () =>
          Effect.flatMap(journal.get(holdId), (now) =>
            now
              ? Effect.succeed({ hold: now, refunded: 0, fresh: false })
              : Effect.fail(new StoreError({ operation: "refund", detail: `hold ${holdId} vanished` }))))
      )
      if (outcome.fresh) {
        yield* publish(
          reason === "expire"
            ? BillingEvent.Expired({ hold: outcome.hold, refunded: outcome.refunded })
            : BillingEvent.Refunded({ hold: outcome.hold, refunded: outcome.refunded })
        )
      }
      return outcome
    })

  /**
   * Finishes the recorded resolution of a hold with external parts: the
   * recorded settle (with its recorded amount), refund or expiry. Idempotent.
   */
  const finishResolution = (intent: HoldIntent) =>
    intent.step === "settle"
      ? settleTx(intent.holdId, intent.amount, "finish").pipe(
        Effect.flatMap(settleOutcome),
        Effect.catchTag("SettleIncomplete", () => Effect.void),
        Effect.asVoid
      )
      : giveBackTx(intent.holdId, intent.step === "expire" ? "expire" : "refund").pipe(Effect.asVoid)

  /** Finishes a pending late charge (recovery): charges it again, idempotently, and marks it done. */
  const finishLate = (intent: HoldIntent) =>
    settleTx(intent.holdId, intent.amount, "answer").pipe(
      Effect.flatMap(settleOutcome),
      Effect.andThen(journal.finishIntent(intent.holdId, "late", "settled")),
      Effect.asVoid
    )

  return { giveBack, giveBackTx, finishResolution, finishLate }
}

/** The give-back transaction, as `makeGiveBack` builds it. */
export type GiveBack = ReturnType<typeof makeGiveBack>

/** What `refund` and the recovery pass need. */
export interface ResolveDeps {
  readonly journal: HoldJournal["Service"]
  readonly intents: Intents
  readonly claims: Claims
  readonly config: EngineConfig
  readonly giveBack: GiveBack
  readonly publish: (event: BillingEvent) => Effect.Effect<void>
}

/** `refund`, the expiry of a lapsed hold, and the recovery pass. */
export const makeResolve = (deps: ResolveDeps) => {
  const { config, intents, journal, publish } = deps
  const { claimIfExternal, claimed, requireClaim } = deps.claims
  const { finishLate, finishResolution, giveBack, giveBackTx } = deps.giveBack

  const refund = (holdId: string) =>
    claimed(refundOnce(holdId), "refund.intent").pipe(
      Effect.withSpan("BillingSession.refund", { attributes: { holdId } })
    )

  const refundOnce = (holdId: string) =>
    Effect.gen(function*() {
      // With an external part, a settle recorded first decides the hold: finish it instead.
      const intent = yield* claimIfExternal(holdId, "refund")
      if (intent && intent.step === "settle") {
        yield* finishResolution(intent).pipe(
          Effect.mapError((error) =>
            error._tag === "StoreError" || error._tag === "UnknownSource" || error._tag === "HoldNotFound"
              ? error
              : new StoreError({ operation: "refund.settle", detail: error.message, cause: error })
          )
        )
        const after = yield* journal.get(holdId)
        const result: RefundResult = { holdId, status: after?.status ?? "settled", refunded: 0 }
        return result
      }
      // A recorded expiry (the reaper got there first) is finished as an expiry.
      const outcome = yield* giveBackTx(holdId, intent?.step === "expire" ? "expire" : "refund")
      const result: RefundResult = { holdId, status: outcome.hold.status, refunded: outcome.refunded }
      return result
    })

  const expireOne = (holdId: string, now: number) => claimed(expireOnce(holdId, now), "expire.intent")

  const expireOnce = (holdId: string, now: number) =>
    Effect.gen(function*() {
      // With an external part, a settle or refund recorded first decides the hold.
      const intent = yield* claimIfExternal(
        holdId,
        "expire",
        undefined,
        (hold) => hold.expiresAt > now ? Effect.fail(new Renewed()) : Effect.void
      ).pipe(Effect.catchTag("Renewed", () => Effect.succeed(null)))
      // The lease was renewed after the pass listed it: nothing to expire.
      if (intent === null) return undefined
      if (intent && intent.step !== "expire") {
        yield* finishResolution(intent)
        return undefined
      }
      return yield* journal.transaction(Effect.gen(function*() {
        const hold = yield* journal.get(holdId, { forUpdate: true })
        if (!hold || hold.status !== "pending" || hold.expiresAt > now) return undefined
        yield* requireClaim(hold, "expire")
        const refunded = yield* giveBack(hold, "expire")
        const done: Hold = { ...hold, status: "expired", resolvedAt: now }
        if (!(yield* journal.update(done, "pending"))) return undefined
        if (yield* intents.hasExternal(hold)) yield* journal.finishIntent(holdId, "resolve", "expired")
        return { hold: done, refunded }
      }))
    })

  /** Finishes a pending intent the recovery pass found (see `HoldIntent`). */
  const recoverIntent = (holdId: string, phase: "open" | "resolve" | "late") =>
    phase === "open"
      ? Effect.asVoid(intents.recoverOpen(holdId, { when: "due" }))
      : Effect.flatMap(journal.getIntent(holdId, phase), (intent) =>
        intent && intent.status === "pending"
          ? (phase === "late" ? finishLate(intent) : finishResolution(intent))
          : Effect.void)

  const reapExpired = Effect.fn("BillingSession.reapExpired")(function*(options?: { readonly limit?: number }) {
    const now = yield* Clock.currentTimeMillis
    const limit = options?.limit ?? config.reapBatch
    const ids = yield* journal.expired(now, limit)
    // Intents a failure or a crash left pending (sources outside the journal's store), read
    // before anything changes so that a failed read fails the pass without effect.
    const due = yield* journal.dueIntents(now, limit)
    let expired = 0
    let refunded = 0
    const failures: Array<ReapFailure> = []
    for (const holdId of ids) {
      const result = yield* Effect.result(expireOne(holdId, now))
      if (result._tag === "Failure") {
        failures.push({ holdId, step: "expire", error: result.failure.message, failure: result.failure })
        continue
      }
      if (result.success) {
        expired++
        refunded += result.success.refunded
        yield* publish(BillingEvent.Expired(result.success))
      }
    }
    // Then finish or undo every pending intent.
    for (const { holdId, phase } of due) {
      const result = yield* Effect.result(claimed(recoverIntent(holdId, phase), "recover.intent"))
      if (result._tag === "Failure") {
        failures.push({ holdId, step: phase, error: result.failure.message, failure: result.failure })
      }
    }
    const report: ReapReport = { examined: ids.length, expired, refunded, failures }
    return report
  })

  return { refund, reapExpired }
}
