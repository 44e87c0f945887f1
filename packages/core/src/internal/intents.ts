/**
 * Intents for sources outside the hold's store (see `HoldIntent`): written in
 * their own committed write before the transaction that calls such a source,
 * finished inside the transaction that records the hold, and finished or
 * undone by recovery when that transaction never committed.
 */
import { Clock, Effect } from "effect"
import { StoreError } from "../BillingError.js"
import type { UnknownSource } from "../BillingError.js"
import type { ExternalSource } from "../FundingSource.js"
import type { Hold, HoldPart } from "../Hold.js"
import type { HoldIntent, IntentStep, IntentTarget } from "../HoldIntent.js"
import type { HoldJournal } from "../HoldJournal.js"
import type { Quota } from "../Quota.js"
import type { BoundRegistry } from "./boundRegistry.js"

interface IntentDeps {
  readonly journal: HoldJournal["Service"]
  readonly registry: BoundRegistry
  readonly tokenBudgetId: string
  readonly shared: (target: ExternalSource) => boolean
}

/** What an open may call: its token budget and every registered funding source. */
interface OpenScope {
  readonly holdId: string
  readonly accountId: string
  readonly tokenId?: string | undefined
  readonly estimate: Quota
  readonly expiresAt: number
}

/**
 * How an open intent is undone: by the recovery pass once due (`"due"`), or at
 * once by the open that failed (`"now"`), then only on the targets it reached
 * (`only`, keys of `targetKey`) when given.
 */
export interface OpenRecovery {
  readonly when: "due" | "now"
  readonly only?: ReadonlySet<string>
}

/** The key of a target in the set of targets an open reached. */
export const targetKey = (t: IntentTarget): string => `${t.kind}:${t.sourceId}`

/** The intent operations the engine uses. */
export const makeIntents = (deps: IntentDeps) => {
  const { journal, registry, shared } = deps

  const targetOf = (t: IntentTarget): Effect.Effect<ExternalSource, UnknownSource> =>
    t.kind === "funding" ? registry.funding(t.sourceId) : registry.budget(t.sourceId)

  /** Whether a part's source is outside the journal's store. */
  const isExternal = (part: HoldPart) => Effect.map(targetOf(part), (t) => !shared(t))

  /** Whether the hold has a part outside the journal's store. */
  const hasExternal = (hold: Hold) => Effect.map(Effect.forEach(hold.parts, isExternal), (flags) => flags.some(Boolean))

  /**
   * The external targets an open may reach: the token budget (when the open has
   * a token) and every funding source outside the journal's store.
   */
  const openTargets = (scope: OpenScope) => {
    // The registry does not change after it is built: each answer is read once, then from memory.
    const withToken = scope.tokenId !== undefined
    const known = withToken ? knownTargets.withToken : knownTargets.without
    if (known !== undefined) return Effect.succeed(known)
    return Effect.map(readTargets(scope), (targets): ReadonlyArray<IntentTarget> => {
      if (withToken) knownTargets.withToken = targets
      else knownTargets.without = targets
      return targets
    })
  }
  const knownTargets: {
    withToken?: ReadonlyArray<IntentTarget>
    without?: ReadonlyArray<IntentTarget>
  } = {}
  const readTargets = (scope: OpenScope) =>
    Effect.gen(function*() {
      const targets: Array<IntentTarget> = []
      if (scope.tokenId !== undefined) {
        const budget = yield* Effect.option(registry.budget(deps.tokenBudgetId))
        if (budget._tag === "Some" && !shared(budget.value)) targets.push({ kind: "budget", sourceId: budget.value.id })
      }
      for (const id of registry.fundingIds) {
        const source = yield* registry.funding(id)
        if (!shared(source)) targets.push({ kind: "funding", sourceId: id })
      }
      return targets
    })

  /**
   * Records (own write) that an open may reserve on `targets`; due when the hold would
   * expire. Answers whether an open intent of this hold id was still pending: an earlier
   * open of the id failed and could not release what it reserved (or another open of the
   * id is running), so this open must release every target it does not keep, not only
   * those it reached itself.
   */
  const beginOpen = (scope: OpenScope, targets: ReadonlyArray<IntentTarget>) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const before = yield* journal.getIntent(scope.holdId, "open")
      yield* journal.putIntent({
        holdId: scope.holdId,
        phase: "open",
        step: "reserve",
        accountId: scope.accountId,
        ...(scope.tokenId !== undefined ? { tokenId: scope.tokenId } : {}),
        amount: scope.estimate,
        targets,
        status: "pending",
        createdAt: now,
        dueAt: scope.expiresAt
      })
      return { leftover: before?.status === "pending" }
    })

  /** The request that releases target `t` of hold `holdId` (by hold id; the source releases what it holds). */
  const releaseTarget = (
    holdId: string,
    accountId: string,
    tokenId: string | undefined,
    t: IntentTarget,
    amount: Quota
  ) =>
    Effect.gen(function*() {
      const subjectId = t.kind === "funding" ? accountId : tokenId
      if (subjectId === undefined) return
      const target = yield* targetOf(t)
      const part: HoldPart = { kind: t.kind, sourceId: t.sourceId, subjectId, amount }
      yield* target.refund({ holdId, accountId, part, reason: "release" })
    })

  /**
   * Inside the open transaction, after an earlier open of the id left its intent pending:
   * releases every external target the hold does not keep (an earlier attempt's
   * reservation there would otherwise be forgotten when this open finishes the intent).
   */
  const releaseUnkept = (scope: OpenScope, targets: ReadonlyArray<IntentTarget>, kept: ReadonlyArray<HoldPart>) =>
    Effect.forEach(
      targets.filter((t) => !kept.some((p) => p.kind === t.kind && p.sourceId === t.sourceId)),
      (t) => releaseTarget(scope.holdId, scope.accountId, scope.tokenId, t, scope.estimate),
      { discard: true }
    )

  /**
   * Inside the open transaction: marks the open intent done with the hold. If
   * recovery already took it (the open ran past its due time), the open fails
   * and its compensation releases what it reserved.
   */
  const commitOpen = (holdId: string) =>
    Effect.flatMap(journal.finishIntent(holdId, "open", "committed"), (ok) =>
      ok ? Effect.void : Effect.fail(
        new StoreError({ operation: "open.intent", detail: `hold ${holdId}: recovery took over this open` })
      ))

  /**
   * Undoes a pending open intent whose hold was never recorded: releases every
   * external target by hold id (a no-op where nothing was reserved). The
   * recovery pass waits for `dueAt` (`when: "due"`); an open that itself failed
   * does not (`when: "now"`), and releases only the targets in `only` (those it
   * reached) when given. Returns whether it finished an intent.
   */
  const recoverOpen = (holdId: string, recovery: OpenRecovery) =>
    journal.transaction(Effect.gen(function*() {
      const intent = yield* journal.getIntent(holdId, "open", { forUpdate: true })
      const now = yield* Clock.currentTimeMillis
      if (!intent || intent.status !== "pending" || (recovery.when === "due" && intent.dueAt > now)) return false
      const hold = yield* journal.get(holdId)
      if (!hold) {
        for (const t of [...intent.targets].reverse()) {
          if (recovery.only && !recovery.only.has(targetKey(t))) continue
          yield* releaseTarget(holdId, intent.accountId, intent.tokenId, t, intent.amount)
        }
      }
      yield* journal.finishIntent(holdId, "open", hold ? "committed" : "released")
      return true
    }))

  /**
   * Records (own write) how a hold with external parts resolves, unless a
   * resolution is already recorded; returns the recorded one (the first wins).
   */
  const claim = (
    hold: Hold,
    step: Exclude<IntentStep, "reserve">,
    amount: Quota,
    phase: "resolve" | "late" = "resolve"
  ) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const intent: HoldIntent = {
        holdId: hold.id,
        phase,
        step,
        accountId: hold.accountId,
        ...(hold.tokenId !== undefined ? { tokenId: hold.tokenId } : {}),
        amount,
        targets: [],
        status: "pending",
        createdAt: now,
        dueAt: now
      }
      return yield* journal.insertIntent(intent)
    })

  return { hasExternal, openTargets, beginOpen, releaseUnkept, commitOpen, recoverOpen, claim }
}

export type Intents = ReturnType<typeof makeIntents>
