import { Clock, Effect } from "effect"
import type { AccountCounters } from "../AccountCounters.js"
import {
  ContractViolation,
  CorrectionExceedsCharge,
  CorrectionUnsupported,
  HoldNotFound,
  HoldResolved,
  IdempotencyConflict,
  StoreError
} from "../BillingError.js"
import type { ExternalSource } from "../FundingSource.js"
import type { Correction, CorrectionPart, Hold, HoldPart, PartSettlement } from "../Hold.js"
import { stillCharged } from "../Hold.js"
import type { HoldJournal } from "../HoldJournal.js"
import type { Quota } from "../Quota.js"
import * as QuotaModule from "../Quota.js"
import type { BoundRegistry } from "./boundRegistry.js"
import type { GiveBack } from "./resolve.js"

/** A decoded correction request. */
export interface CorrectInput {
  readonly holdId: string
  readonly correctionId: string
  readonly amount: Quota
}

/** What a correction returns: the correction as recorded on the hold. */
export interface CorrectOutput extends Correction {
  readonly holdId: string
}

interface Deps {
  readonly journal: HoldJournal["Service"]
  readonly registry: BoundRegistry
  readonly counters: AccountCounters["Service"]
  readonly shared: (target: ExternalSource) => boolean
}

const samePart =
  (a: { kind: string; sourceId: string; subjectId: string }) =>
  (b: { kind: string; sourceId: string; subjectId: string }) =>
    a.kind === b.kind && a.sourceId === b.sourceId && a.subjectId === b.subjectId

/**
 * Corrections (billing-semantics §4.4): give back part or all of a settled
 * charge, keyed by a correction id, in one transaction of the hold's store:
 *
 * - only a settled hold, or an expired one charged late (§6); otherwise
 *   (pending, refunded, expired without a late charge) `HoldResolved`;
 * - the same id again: the first result when the amount is the same, an
 *   `IdempotencyConflict` otherwise (nothing moves);
 * - never more than what is still charged (`CorrectionExceedsCharge`);
 * - funding parts are credited last charged first, each at most what it still
 *   carries; every token (budget) part gets the whole amount back (it was
 *   charged the whole cost);
 * - the account's `usedQuota` goes down by the amount (`requestCount` stays);
 * - the correction is recorded on the settlement, in the same transaction.
 *
 * A source outside the hold's store is credited before the hold is recorded;
 * if the transaction then fails, a retry with the same correction id reaches
 * the source again with the same key, and its own idempotency converges.
 */
export const makeCorrect = (deps: Deps) => {
  const { counters, journal, registry, shared } = deps

  const targetOf = (part: PartSettlement) =>
    part.kind === "funding" ? registry.funding(part.sourceId) : registry.budget(part.sourceId)

  /** What earlier corrections gave back on one part. */
  const correctedOn = (hold: Hold, part: PartSettlement) =>
    (hold.settlement?.corrections ?? []).reduce(
      (sum, c) => sum + c.parts.filter(samePart(part)).reduce((s, p) => s + p.amount, 0),
      0
    )

  return Effect.fn("BillingSession.correct")(function*(input: CorrectInput) {
    const { amount, correctionId, holdId } = input
    const outcome = yield* journal.transaction(Effect.gen(function*() {
      const hold = yield* journal.get(holdId, { forUpdate: true })
      if (!hold) return yield* new HoldNotFound({ holdId })
      const settlement = hold.settlement
      // Settled, or expired and charged late (§6): a late charge is a settlement too.
      const charged = settlement !== undefined &&
        (hold.status === "settled" || (hold.status === "expired" && settlement.late === true))
      if (!charged || !settlement) {
        return yield* new HoldResolved({ holdId, status: hold.status, operation: "correct" })
      }
      // A settlement whose external part failed still carries that part's reservation, recorded as
      // charged: a correction now would credit a source that charged nothing. Finish it first.
      if (settlement.incomplete) {
        return yield* new StoreError({
          operation: "correct.incomplete",
          detail: `hold ${holdId}: the settlement on ${settlement.incomplete.sourceId} is not finished yet; ` +
            "retry after the recovery pass (reapExpired) finishes it"
        })
      }
      const existing = settlement.corrections?.find((c) => c.id === correctionId)
      if (existing) {
        if (existing.amount !== amount) {
          return yield* new IdempotencyConflict({
            holdId,
            field: `correction ${correctionId} amount`,
            existing: String(existing.amount),
            requested: String(amount)
          })
        }
        return existing
      }
      // What each funding part still carries, last charged first.
      const funding = settlement.parts
        .filter((p) => p.kind === "funding")
        .map((p) => ({ part: p, left: Math.max(0, p.charged - correctedOn(hold, p)) }))
        .reverse()
      const left = Math.min(stillCharged(settlement), funding.reduce((s, f) => s + f.left, 0))
      if (amount > left) {
        return yield* new CorrectionExceedsCharge({ holdId, correctionId, amount, remaining: Math.max(0, left) })
      }
      const plan: Array<{ readonly part: PartSettlement; readonly give: Quota; readonly corrected: number }> = []
      let rest: number = amount
      for (const f of funding) {
        const give = Math.min(rest, f.left)
        if (give > 0) plan.push({ part: f.part, give: give as Quota, corrected: f.part.charged - f.left })
        rest -= give
      }
      for (const part of settlement.parts.filter((p) => p.kind === "budget")) {
        const before = correctedOn(hold, part)
        const give = Math.min(amount, Math.max(0, part.charged - before))
        if (give > 0) plan.push({ part, give: give as Quota, corrected: before })
      }
      // Check every part can be corrected before moving anything.
      const targets: Array<ExternalSource> = []
      for (const step of plan) {
        const target = yield* targetOf(step.part)
        if (!target.correct) return yield* new CorrectionUnsupported({ holdId, sourceId: step.part.sourceId })
        targets.push(target)
      }
      // In one store, the lock order of open and settle (token, then funding);
      // with an external part, funding first (as settle does).
      const allShared = targets.every(shared)
      const order = plan.map((step, i) => ({ step, target: targets[i]! }))
      if (allShared) {
        order.sort((a, b) => (a.step.part.kind === b.step.part.kind ? 0 : a.step.part.kind === "budget" ? -1 : 1))
      }
      const done = new Map<PartSettlement, CorrectionPart>()
      for (const { step, target } of order) {
        const result = yield* target.correct!({
          holdId,
          correctionId,
          accountId: hold.accountId,
          part: holdPartOf(hold, step.part),
          charged: step.part.charged,
          corrected: step.corrected,
          amount: step.give
        })
        if (result.corrected !== step.give || !QuotaModule.isQuota(result.corrected)) {
          return yield* new ContractViolation({
            sourceId: step.part.sourceId,
            detail: `asked to correct ${step.give}, reported ${result.corrected}`
          })
        }
        done.set(step.part, {
          kind: step.part.kind,
          sourceId: step.part.sourceId,
          subjectId: step.part.subjectId,
          amount: step.give,
          ...(result.balanceAfter !== undefined ? { balanceAfter: result.balanceAfter } : {})
        })
      }
      yield* counters.add(hold.accountId, { usedQuota: -amount, requestCount: 0 })
      const now = yield* Clock.currentTimeMillis
      const correction: Correction = {
        id: correctionId,
        amount,
        parts: plan.map((step) => done.get(step.part)!),
        remaining: (stillCharged(settlement) - amount) as Quota,
        correctedAt: now
      }
      const updated: Hold = {
        ...hold,
        settlement: { ...settlement, corrections: [...(settlement.corrections ?? []), correction] }
      }
      if (!(yield* journal.update(updated, hold.status))) {
        return yield* new StoreError({ operation: "correct.record", detail: `hold ${holdId} changed while correcting` })
      }
      return correction
    }))
    const result: CorrectOutput = { holdId, ...outcome }
    return result
  })
}

/** The hold part a settlement part came from (with its `ref`, e.g. a subscription's draw). */
const holdPartOf = (hold: Hold, part: PartSettlement): HoldPart =>
  hold.parts.find(samePart(part)) ??
    { kind: part.kind, sourceId: part.sourceId, subjectId: part.subjectId, amount: part.reserved }

/** What `correct` needs besides the correction itself. */
interface FinishingDeps extends Deps {
  /** Finishes the recorded resolution of a hold with external parts (resolve phase). */
  readonly finishResolution: GiveBack["finishResolution"]
}

/**
 * `correct`: a correction of a settlement left incomplete by a failed external
 * part first finishes the recorded settle (as the recovery pass would); if it
 * is still incomplete, the correction fails typed and moves nothing.
 */
export const makeCorrectFinishing = (deps: FinishingDeps) => {
  const { finishResolution, journal } = deps
  const correctRecorded = makeCorrect(deps)
  return (input: CorrectInput) =>
    Effect.gen(function*() {
      const hold = yield* journal.get(input.holdId)
      if (hold?.settlement?.incomplete) {
        const intent = yield* journal.getIntent(input.holdId, "resolve")
        if (intent?.status === "pending" && intent.step === "settle") {
          yield* finishResolution(intent).pipe(Effect.catch(() => Effect.void))
        }
      }
      return yield* correctRecorded(input)
    })
}
