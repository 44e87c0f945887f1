/**
 * Claims of a resolution for holds with a part outside the journal's store
 * (see `HoldIntent`): the settle, refund or expiry recorded first decides the
 * hold, and a resolving transaction refuses to call any source before its
 * resolution is recorded. Shared by the settle and resolve phases.
 */
import { Data, Effect } from "effect"
import { StoreError } from "../BillingError.js"
import type { ExternalSource } from "../FundingSource.js"
import type { Hold } from "../Hold.js"
import type { HoldJournal } from "../HoldJournal.js"
import type { Quota } from "../Quota.js"
import type { BoundRegistry } from "./boundRegistry.js"
import type { Intents } from "./intents.js"

/**
 * Internal: a transaction found a pending hold with an external part whose
 * resolution was not recorded first (the hold became visible after the caller
 * looked, e.g. a settle racing the open). The caller records it and runs again.
 */
export class Unclaimed extends Data.TaggedError("Unclaimed")<{ readonly holdId: string }> {}

/** A step that resolves a hold. */
export type ResolveStep = "settle" | "refund" | "expire"

/** What the claims need. */
export interface ClaimsDeps {
  readonly journal: HoldJournal["Service"]
  readonly registry: BoundRegistry
  readonly intents: Intents
  readonly tokenBudgetId: string
  readonly shared: (target: ExternalSource) => boolean
}

const isUnclaimed = (error: unknown): error is Unclaimed =>
  typeof error === "object" && error !== null && (error as { readonly _tag?: unknown })._tag === "Unclaimed"

/** The claims of resolutions. */
export const makeClaims = (deps: ClaimsDeps) => {
  const { intents, journal, registry, shared } = deps

  /** Whether any registered funding source or the token budget lives outside the journal's store. */
  const registryHasExternal = Effect.gen(function*() {
    for (const id of registry.fundingIds) {
      if (!shared(yield* registry.funding(id))) return true
    }
    const budget = yield* Effect.option(registry.budget(deps.tokenBudgetId))
    return budget._tag === "Some" && !shared(budget.value)
  })

  /**
   * Inside a resolving transaction: a pending hold with an external part must
   * have this resolution recorded (pending) before any source is called.
   */
  const requireClaim = (hold: Hold, step: ResolveStep, amount?: Quota) =>
    Effect.gen(function*() {
      if (!(yield* intents.hasExternal(hold))) return
      const intent = yield* journal.getIntent(hold.id, "resolve")
      const recorded = intent !== undefined && intent.status === "pending" && intent.step === step &&
        (amount === undefined || intent.amount === amount)
      if (!recorded) return yield* new Unclaimed({ holdId: hold.id })
    })

  /** Runs `attempt` again once if it met a hold whose resolution was not recorded yet. */
  const claimed = <A, E, R>(attempt: Effect.Effect<A, E | Unclaimed, R>, operation: string) =>
    attempt.pipe(
      Effect.catchTag("Unclaimed", () => attempt),
      Effect.mapError((error) =>
        isUnclaimed(error)
          ? new StoreError({ operation, detail: `hold ${error.holdId}: its resolution could not be recorded` })
          : error
      )
    ) as Effect.Effect<A, Exclude<E, Unclaimed> | StoreError, R>

  /**
   * Records `step` as the resolution of a pending hold with an external part
   * (unless one is recorded: the first wins) and answers the recorded one, if
   * still pending; `before` checks the hold first.
   */
  const claimIfExternal = <E = never>(
    holdId: string,
    step: ResolveStep,
    amount?: Quota,
    before?: (hold: Hold) => Effect.Effect<void, E>
  ) =>
    Effect.gen(function*() {
      // Hot path: with every registered source in the journal's store, no hold has an
      // external part, so no read is needed before the resolving transaction.
      if (!(yield* registryHasExternal)) return undefined
      const current = yield* journal.get(holdId)
      if (!current || current.status !== "pending" || !(yield* intents.hasExternal(current))) return undefined
      if (before) yield* before(current)
      const intent = yield* intents.claim(current, step, amount ?? current.reserved)
      return intent.status === "pending" ? intent : undefined
    })

  /** The recorded late charge of an expired hold with an external part (recording `actual` if none is). */
  const claimLateIfExternal = (holdId: string, actual: Quota) =>
    Effect.gen(function*() {
      if (!(yield* registryHasExternal)) return undefined
      const current = yield* journal.get(holdId)
      if (!current || current.status !== "expired" || current.settlement || !(yield* intents.hasExternal(current))) {
        return undefined
      }
      const intent = yield* intents.claim(current, "settle", actual, "late")
      return intent.status === "pending" ? intent : undefined
    })

  return { registryHasExternal, requireClaim, claimed, claimIfExternal, claimLateIfExternal }
}

/** The claims of resolutions, as `makeClaims` builds them. */
export type Claims = ReturnType<typeof makeClaims>
