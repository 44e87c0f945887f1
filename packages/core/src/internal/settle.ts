/**
 * The settle phase: charges a pending hold its actual cost through its parts
 * (the plan in the order the store's locks need), records the settlement with
 * the account's counters in one transaction, charges an expired hold late
 * (§6), and finishes a settlement left incomplete by an external part.
 */
import { Clock, Effect } from "effect"
import type { AccountCounters } from "../AccountCounters.js"
import {
  ContractViolation,
  HoldNotFound,
  HoldResolved,
  IdempotencyConflict,
  SettleIncomplete,
  StoreError
} from "../BillingError.js"
import type { UnknownSource } from "../BillingError.js"
import { BillingEvent } from "../BillingEvents.js"
import type { ExternalSource, PartResult } from "../FundingSource.js"
import type { Hold, HoldPart, PartSettlement, Settlement } from "../Hold.js"
import { charged } from "../Hold.js"
import type { HoldJournal } from "../HoldJournal.js"
import type { Policy as LowBalancePolicy } from "../LowBalance.js"
import type { Quota } from "../Quota.js"
import * as QuotaModule from "../Quota.js"
import type { Recorder } from "../SettlementRecorder.js"
import { allocate } from "./allocate.js"
import type { BoundRegistry } from "./boundRegistry.js"
import type { Claims } from "./claims.js"
import { makeLateSettle } from "./late.js"
import { insideTransaction } from "./ledgerRows.js"
import type { GiveBack } from "./resolve.js"
import { Stale } from "./writeOnce.js"

/** What a settle stores on its settlement for the recorder. */
export type SettleMetadata = Readonly<Record<string, string>> | undefined

/**
 * What a settle transaction does with a hold it finds settled with an
 * incomplete settlement: `"finish"` runs the plan again and records the
 * complete settlement (the recovery pass, a correction), `"answer"` answers
 * the settlement as recorded (a replayed settle).
 */
export type OnIncomplete = "finish" | "answer"

/** A settle transaction's outcome: the hold, its settlement, and whether this call settled it. */
export interface SettleOutcome {
  readonly hold: Hold
  readonly settlement: Settlement
  readonly fresh: boolean
}

/** What the settle transaction needs. */
export interface SettleTxDeps {
  readonly journal: HoldJournal["Service"]
  readonly counters: AccountCounters["Service"]
  /** Writes the host's record of a settlement inside the settle's transaction. */
  readonly recorder: Recorder | undefined
  readonly lowBalance: LowBalancePolicy
  readonly claims: Claims
  readonly targetOf: (part: HoldPart) => Effect.Effect<ExternalSource, UnknownSource>
  readonly shared: (target: ExternalSource) => boolean
  readonly publish: (event: BillingEvent) => Effect.Effect<void>
}

/** The settle transaction and how its outcome is answered. */
export const makeSettleTx = (deps: SettleTxDeps) => {
  const { counters, journal, lowBalance, publish, recorder, shared, targetOf } = deps
  const { requireClaim } = deps.claims
  const lateSettle = makeLateSettle({ journal, counters, targetOf, shared })

  const loadPending = (holdId: string, operation: string) =>
    Effect.gen(function*() {
      const hold = yield* journal.get(holdId, { forUpdate: true })
      if (!hold) return yield* new HoldNotFound({ holdId })
      return hold
    }).pipe(Effect.withSpan(`BillingSession.${operation}.load`))

  /**
   * Runs the settle plan of `hold` with `actual` on every part. Fails when a
   * part fails before any external part was charged (the transaction rolls
   * back); after that, a failed part keeps its reservation and is reported in
   * `incomplete`. Completing an incomplete settlement (`previous`) runs the
   * external parts again (each is idempotent by hold id, so a part already
   * settled answers with its first result) and keeps what the parts in the
   * journal's store recorded: they committed with the first settle, and moving
   * them again would charge twice.
   */
  const runPlan = (hold: Hold, actual: Quota, previous?: Settlement) =>
    Effect.gen(function*() {
      const holdId = hold.id
      const funding = hold.parts.filter((p) => p.kind === "funding")
      const budgets = hold.parts.filter((p) => p.kind === "budget")
      const amounts = allocate(funding.map((p) => p.amount), actual)
      const fundingPlan = funding.map((p, i) => [p, amounts[i] ?? (0 as Quota)] as const)
      const budgetPlan = budgets.map((p) => [p, actual] as const)
      // In one store, settle in the order open reserved (budget, then funding): the same lock
      // order for every operation, so a concurrent open and settle on one account cannot
      // deadlock. With an external part, funding goes first (new-api's B5 rule: what was
      // charged is never repeated; a failed token step is recorded).
      const allShared = yield* Effect.forEach(hold.parts, (p) => Effect.map(targetOf(p), shared)).pipe(
        Effect.map((flags) => flags.every(Boolean))
      )
      const plan: Array<readonly [HoldPart, Quota]> = allShared
        ? [...budgetPlan, ...fundingPlan]
        : [...fundingPlan, ...budgetPlan]
      const parts: Array<PartSettlement> = []
      let externalDone = false
      let incomplete: Settlement["incomplete"]
      for (const [part, target] of plan) {
        const source = yield* targetOf(part)
        const recorded = previous && shared(source)
          ? previous.parts.find((p) =>
            p.kind === part.kind && p.sourceId === part.sourceId && p.subjectId === part.subjectId
          )
          : undefined
        if (recorded) {
          parts.push(recorded)
          continue
        }
        // The preference rides along for a `Source`'s overflow chain (external sources ignore it).
        const request = { holdId, accountId: hold.accountId, part, actual: target, preference: hold.preference }
        const result = yield* Effect.result(source.settle(request))
        if (result._tag === "Failure") {
          // Everything done in the journal's store rolls back with the transaction: fail it.
          // A part in that store may have failed half way (a balance moved, its record not),
          // so it is never committed after a failure; with an external part already charged,
          // the pending settle intent lets a refund, a retry or the recovery pass finish it.
          if (!externalDone || shared(source)) return yield* Effect.fail(result.failure)
          // An external part failed after another was charged, and neither can be rolled back:
          // the hold is settled, the failed part keeps its reservation and the difference is
          // recorded (the settle intent stays pending: the recovery pass settles the part later).
          const unbilled = Math.max(0, target - part.amount) as Quota
          const overcharged = Math.max(0, part.amount - target) as Quota
          incomplete ??= {
            sourceId: part.sourceId,
            unbilled,
            ...(overcharged > 0 ? { overcharged } : {}),
            detail: result.failure.message
          }
          parts.push(partSettlement(part, { charged: part.amount, unbilled }))
          continue
        }
        if (!shared(source)) externalDone = true
        if (!QuotaModule.isQuota(result.success.unbilled)) {
          return yield* new ContractViolation({
            sourceId: part.sourceId,
            detail: `settle reported unbilled ${result.success.unbilled}`
          })
        }
        parts.push(partSettlement(part, result.success))
      }
      // Report the parts in the hold's order (funding, then budget), whatever order they ran in.
      const position = (p: PartSettlement) =>
        hold.parts.findIndex((h) => h.kind === p.kind && h.sourceId === p.sourceId && h.subjectId === p.subjectId)
      parts.sort((a, b) => position(a) - position(b))
      return { parts, incomplete, external: !allShared }
    })

  /**
   * Finishes a settled hold whose settlement is `incomplete` (the recovery
   * pass): runs its plan again and records the complete settlement. Counters
   * were updated by the first settle and are not touched.
   */
  const completeSettlement = (hold: Hold, settlement: Settlement) =>
    Effect.gen(function*() {
      const run = yield* runPlan(hold, settlement.actual, settlement)
      if (run.incomplete) {
        return yield* new StoreError({
          operation: "settle.complete",
          detail: `hold ${hold.id}: ${run.incomplete.sourceId} still fails: ${run.incomplete.detail}`
        })
      }
      const { incomplete: _done, ...rest } = settlement
      const complete: Settlement = { ...rest, parts: run.parts }
      // §3.4: usedQuota counts what was charged; the first settle counted the incomplete figure.
      const more = charged(complete) - charged(settlement)
      if (more !== 0) yield* counters.add(hold.accountId, { usedQuota: more, requestCount: 0 })
      const settled: Hold = { ...hold, settlement: complete }
      if (!(yield* journal.update(settled, "settled"))) {
        return yield* new StoreError({ operation: "settle.record", detail: `hold ${hold.id} changed while settling` })
      }
      yield* journal.finishIntent(hold.id, "resolve", "settled")
      return { hold: settled, settlement: complete, fresh: false }
    })

  /**
   * The settle transaction; an incomplete settlement is finished or answered
   * as `onIncomplete` says. The transaction that settles the hold writes the recorder's
   * record (so a replay, which finds it settled, writes none).
   */
  const settleTx = (holdId: string, actual: Quota, onIncomplete: OnIncomplete, metadata?: SettleMetadata) =>
    journal.transaction(Effect.gen(function*() {
      const hold = yield* loadPending(holdId, "settle")
      if (hold.status === "settled" && hold.settlement) {
        if (onIncomplete === "finish" && hold.settlement.incomplete) {
          return yield* completeSettlement(hold, hold.settlement)
        }
        return { hold, settlement: hold.settlement, fresh: false }
      }
      // §6: a settle after the recovery pass expired the hold is charged late, exactly once.
      if (hold.status === "expired") {
        if (hold.settlement) return { hold, settlement: hold.settlement, fresh: false }
        // the late charge is a settlement too: the recorder's record is written with it
        const late = yield* lateSettle(hold, actual, metadata)
        if (recorder !== undefined) yield* recorder.record(late.hold, late.settlement)
        return late
      }
      if (hold.status !== "pending") {
        return yield* new HoldResolved({ holdId, status: hold.status, operation: "settle" })
      }
      yield* requireClaim(hold, "settle", actual)
      const { external, incomplete, parts } = yield* runPlan(hold, actual)
      const now = yield* Clock.currentTimeMillis
      const settlement: Settlement = {
        holdId,
        actual,
        reserved: hold.reserved,
        delta: actual - hold.reserved,
        parts,
        settledAt: now,
        ...(incomplete ? { incomplete } : {}),
        ...(metadata !== undefined ? { metadata: { ...metadata } } : {})
      }
      // §3.4: usedQuota grows by what was charged (A less what was recorded as unbilled).
      if (actual > 0) yield* counters.add(hold.accountId, { usedQuota: charged(settlement), requestCount: 1 })
      const settled: Hold = { ...hold, status: "settled", resolvedAt: now, settlement }
      if (!(yield* journal.update(settled, "pending"))) {
        return yield* new StoreError({ operation: "settle.record", detail: `hold ${holdId} changed while settling` })
      }
      if (external && !incomplete) yield* journal.finishIntent(holdId, "resolve", "settled")
      if (recorder !== undefined) yield* recorder.record(settled, settlement)
      return { hold: settled, settlement, fresh: true }
    }))

  /** Publishes a fresh settlement, and fails with `SettleIncomplete` when it is incomplete. */
  const settleOutcome = (outcome: { readonly hold: Hold; readonly settlement: Settlement; readonly fresh: boolean }) =>
    Effect.gen(function*() {
      if (outcome.fresh) {
        yield* publish(BillingEvent.Settled({ hold: outcome.hold, settlement: outcome.settlement }))
        yield* warnIfLow(outcome.hold, outcome.settlement)
      }
      const incomplete = outcome.settlement.incomplete
      if (outcome.fresh && incomplete) {
        return yield* new SettleIncomplete({
          holdId: outcome.hold.id,
          failedSourceId: incomplete.sourceId,
          unbilled: incomplete.unbilled,
          ...(incomplete.overcharged !== undefined ? { overcharged: incomplete.overcharged } : {}),
          detail: incomplete.detail
        })
      }
      return outcome.settlement
    })

  /**
   * Publishes one `LowBalance` when the paying source (the last funding part that
   * charged anything) ended below the account's threshold, within the policy's
   * rate limit. Never fails the settle: a policy error is logged.
   */
  const warnIfLow = (hold: Hold, settlement: Settlement) =>
    Effect.gen(function*() {
      const paying = [...settlement.parts].reverse().find((p) => p.kind === "funding" && p.charged > 0)
      if (!paying || paying.balanceAfter === undefined) return
      // A balance at or above the policy's ceiling cannot be below any threshold.
      if (lowBalance.ceiling && paying.balanceAfter >= (yield* lowBalance.ceiling)) return
      const threshold = yield* lowBalance.threshold(hold.accountId)
      if (!(paying.balanceAfter < threshold)) return
      if (!(yield* lowBalance.claim(hold.accountId, paying.sourceId, settlement.settledAt))) return
      yield* publish(BillingEvent.LowBalance({
        accountId: hold.accountId,
        sourceId: paying.sourceId,
        // The account (a funding part's subject may be the row a Source drew from).
        subjectId: hold.accountId,
        balance: paying.balanceAfter,
        threshold
      }))
    }).pipe(
      Effect.catchCause((cause) => Effect.logWarning("relay-billing: low-balance check failed", cause))
    )

  return { loadPending, runPlan, settleTx, settleOutcome }
}

/** The settle transaction, as `makeSettleTx` builds it. */
export type SettleTx = ReturnType<typeof makeSettleTx>

/** What the settle entry points need. */
export interface SettleDeps {
  readonly journal: HoldJournal["Service"]
  readonly counters: AccountCounters["Service"]
  readonly recorder: Recorder | undefined
  readonly registry: BoundRegistry
  readonly claims: Claims
  readonly settleTx: SettleTx
  /** Finishes the recorded resolution of a hold with external parts (resolve phase). */
  readonly finishResolution: GiveBack["finishResolution"]
}

/** `settle` and the session handle's settle. */
export const makeSettle = (deps: SettleDeps) => {
  const { counters, journal, recorder, registry } = deps
  const { claimIfExternal, claimLateIfExternal, claimed } = deps.claims
  const { runPlan, settleOutcome, settleTx } = deps.settleTx
  const finishResolution = deps.finishResolution

  /**
   * Read only, before an external source is charged `actual`: whether the
   * account's counters can take the charge (§2.10). After an external charge,
   * a counter out of range could never be recorded and the hold would be stuck.
   */
  const checkCounters = (actual: Quota) => (hold: Hold) =>
    actual > 0 && counters.check
      ? counters.check(hold.accountId, { usedQuota: actual, requestCount: 1 })
      : Effect.void

  const settleOnce = (holdId: string, actual: Quota, metadata: SettleMetadata) =>
    Effect.gen(function*() {
      // With an external part, the first recorded resolution decides the hold.
      const intent = yield* claimIfExternal(holdId, "settle", actual, checkCounters(actual))
      if (intent && intent.step !== "settle") {
        yield* finishResolution(intent)
        if (intent.step === "refund") {
          return yield* new HoldResolved({ holdId, status: "refunded", operation: "settle" })
        }
        // The recovery pass recorded the expiry first: finish it, then charge late (§6).
      }
      if (intent && intent.step === "settle" && intent.amount !== actual) {
        yield* finishResolution(intent)
        return yield* new IdempotencyConflict({
          holdId,
          field: "actual",
          existing: String(intent.amount),
          requested: String(actual)
        })
      }
      // §6: a late charge that reaches a source outside the store records its intent first
      // (the first recorded amount wins), so that recovery finishes it after a failure.
      const late = yield* claimLateIfExternal(holdId, actual)
      if (late && late.amount !== actual) {
        yield* settleOutcome(yield* settleTx(holdId, late.amount, "answer", metadata))
        return yield* new IdempotencyConflict({
          holdId,
          field: "actual",
          existing: String(late.amount),
          requested: String(actual)
        })
      }
      return yield* settleOutcome(yield* settleTx(holdId, actual, "answer", metadata))
    })

  /**
   * The settle of a session handle: with every source a `Source` in the journal's store
   * and no enclosing transaction, it settles the hold the handle holds in
   * memory (its parts never change after open) without reading it: the moves,
   * the counters, then one conditional update (`status = 'pending'`), the ledger
   * rows, in one transaction. When the update finds the hold resolved already
   * (a replay, a refund, the recovery pass), the transaction rolls back and the
   * settle goes the reading way, which answers as the hold now is.
   */
  const settleFromHandle = Effect.fn("BillingSession.settle")(
    function*(hold: Hold, actualInput: number, metadata?: SettleMetadata) {
      const actual = yield* QuotaModule.decode("actual", actualInput)
      if (!(yield* registry.allSources) || (yield* insideTransaction(journal))) {
        return yield* settle(hold.id, actual, metadata)
      }
      const fresh = yield* journal.transaction(Effect.gen(function*() {
        const { parts } = yield* runPlan(hold, actual)
        const now = yield* Clock.currentTimeMillis
        const settlement: Settlement = {
          holdId: hold.id,
          actual,
          reserved: hold.reserved,
          delta: actual - hold.reserved,
          parts,
          settledAt: now,
          ...(metadata !== undefined ? { metadata: { ...metadata } } : {})
        }
        if (actual > 0) yield* counters.add(hold.accountId, { usedQuota: charged(settlement), requestCount: 1 })
        const settled: Hold = { ...hold, status: "settled", resolvedAt: now, settlement }
        if (!(yield* journal.update(settled, "pending"))) return yield* new Stale()
        if (recorder !== undefined) yield* recorder.record(settled, settlement)
        return { hold: settled, settlement, fresh: true }
      })).pipe(Effect.catchTag("Stale", () => Effect.succeed(undefined)))
      if (fresh === undefined) return yield* settle(hold.id, actual, metadata)
      return yield* settleOutcome(fresh)
    }
  )

  const settle = Effect.fn("BillingSession.settle")(
    function*(holdId: string, actualInput: number, metadata?: SettleMetadata) {
      const actual = yield* QuotaModule.decode("actual", actualInput)
      return yield* claimed(settleOnce(holdId, actual, metadata), "settle.intent")
    }
  )

  return { settle, settleFromHandle }
}

const partSettlement = (part: HoldPart, result: PartResult): PartSettlement => ({
  kind: part.kind,
  sourceId: part.sourceId,
  subjectId: part.subjectId,
  reserved: part.amount,
  charged: result.charged,
  unbilled: result.unbilled as Quota,
  ...(result.balanceAfter !== undefined ? { balanceAfter: result.balanceAfter } : {})
})
