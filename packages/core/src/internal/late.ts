import { Clock, Effect } from "effect"
import type { AccountCounters } from "../AccountCounters.js"
import { ContractViolation, StoreError } from "../BillingError.js"
import type { UnknownSource } from "../BillingError.js"
import type { ExternalSource, PartResult } from "../FundingSource.js"
import type { Hold, HoldPart, PartSettlement, Settlement } from "../Hold.js"
import { charged } from "../Hold.js"
import type { HoldJournal } from "../HoldJournal.js"
import type { Quota } from "../Quota.js"
import * as QuotaModule from "../Quota.js"
import { allocate } from "./allocate.js"

interface Deps {
  readonly journal: HoldJournal["Service"]
  readonly counters: AccountCounters["Service"]
  readonly targetOf: (part: HoldPart) => Effect.Effect<ExternalSource, UnknownSource>
  readonly shared: (target: ExternalSource) => boolean
}

/**
 * The late charge (billing-semantics §6): a settle that arrives for a hold the
 * recovery pass already expired (its reservation given back) charges the
 * actual cost afresh, inside the caller's transaction, through the same
 * sources the hold reserved on — the ones its preference chose at open — split
 * as a settle would split it (each funding part up to what it reserved, the
 * rest on the last one), and the whole cost on the token budget (a cap that
 * every charge hits). Each source charges without a balance condition (the
 * work was delivered) and reports what it could not charge as unbilled; a
 * source without `lateSettle` leaves its whole share unbilled. The account's
 * `usedQuota` grows by what was charged and `requestCount` by one, as for a
 * settle. The settlement is recorded on the hold (which stays `expired`) in
 * the same transaction, so a repeat returns it and moves nothing.
 */
export const makeLateSettle = (deps: Deps) => {
  const { counters, journal, shared, targetOf } = deps

  const chargePart = (hold: Hold, part: HoldPart, amount: Quota) =>
    Effect.gen(function*() {
      const target = yield* targetOf(part)
      const none: PartResult = { charged: 0, unbilled: part.kind === "funding" ? amount : 0 }
      if (amount === 0) return { target, result: { charged: 0, unbilled: 0 } as PartResult }
      if (!target.lateSettle) return { target, result: none }
      // The preference rides along for a `Source`'s overflow chain (external sources ignore it).
      const request = { holdId: hold.id, accountId: hold.accountId, part, amount, preference: hold.preference }
      const result = yield* target.lateSettle(request)
      if (
        !QuotaModule.isQuota(result.unbilled) || !Number.isSafeInteger(result.charged) ||
        result.charged + result.unbilled !== amount
      ) {
        return yield* new ContractViolation({
          sourceId: part.sourceId,
          detail: `asked to charge ${amount} late, reported charged ${result.charged} and unbilled ${result.unbilled}`
        })
      }
      return { target, result }
    })

  return (hold: Hold, actual: Quota, metadata?: Readonly<Record<string, string>>) =>
    Effect.gen(function*() {
      const funding = hold.parts.filter((p) => p.kind === "funding")
      const budgets = hold.parts.filter((p) => p.kind === "budget")
      const amounts = allocate(funding.map((p) => p.amount), actual)
      const fundingPlan = funding.map((p, i) => [p, amounts[i] ?? (0 as Quota)] as const)
      const budgetPlan = budgets.map((p) => [p, actual] as const)
      const targets = yield* Effect.forEach(hold.parts, targetOf)
      // The lock order of open and settle: budget first in one store, funding first otherwise.
      const plan = targets.every(shared) ? [...budgetPlan, ...fundingPlan] : [...fundingPlan, ...budgetPlan]
      const parts: Array<PartSettlement> = []
      for (const [part, amount] of plan) {
        const { result } = yield* chargePart(hold, part, amount)
        parts.push({
          kind: part.kind,
          sourceId: part.sourceId,
          subjectId: part.subjectId,
          reserved: 0 as Quota,
          charged: result.charged,
          unbilled: result.unbilled as Quota,
          ...(result.balanceAfter !== undefined ? { balanceAfter: result.balanceAfter } : {})
        })
      }
      const position = (p: PartSettlement) =>
        hold.parts.findIndex((h) => h.kind === p.kind && h.sourceId === p.sourceId && h.subjectId === p.subjectId)
      parts.sort((a, b) => position(a) - position(b))
      const now = yield* Clock.currentTimeMillis
      const settlement: Settlement = {
        holdId: hold.id,
        actual,
        reserved: 0 as Quota,
        delta: actual,
        parts,
        settledAt: now,
        late: true,
        ...(metadata !== undefined ? { metadata: { ...metadata } } : {})
      }
      if (actual > 0) yield* counters.add(hold.accountId, { usedQuota: charged(settlement), requestCount: 1 })
      const recorded: Hold = { ...hold, settlement }
      if (!(yield* journal.update(recorded, "expired"))) {
        return yield* new StoreError({
          operation: "settle.late",
          detail: `hold ${hold.id} changed while charging it late`
        })
      }
      // With an external part, the late charge's intent was recorded first: it is done now.
      if (!targets.every(shared)) yield* journal.finishIntent(hold.id, "late", "settled")
      return { hold: recorded, settlement, fresh: true }
    }).pipe(Effect.withSpan("BillingSession.settle.late", { attributes: { holdId: hold.id } }))
}
