/**
 * The open phase's reservations: one attempt per funding source of the chain
 * (the token budget, then the source), then split funding across the chain.
 * Each step answers with a value — what it holds, or why it failed and what
 * must be given back — so that an attempt never records into shared arrays:
 * a failed attempt carries its reservations to `endAttempt`, which gives them
 * back; a successful one hands the external ones to the open's scope, which
 * gives them back if the open fails later.
 */
import { Cause, Effect, Exit, Ref, Scope } from "effect"
import { ContractViolation, InsufficientFunds, StoreError } from "../BillingError.js"
import type { HoldResolved, QuotaOutOfRange, TokenBudgetExceeded, TokenNotFound } from "../BillingError.js"
import * as FundingResolver from "../FundingResolver.js"
import type { ExternalSource } from "../FundingSource.js"
import { reservationAmount } from "../FundingSource.js"
import type { HoldPart } from "../Hold.js"
import type { Quota } from "../Quota.js"
import * as QuotaModule from "../Quota.js"
import type { BoundRegistry } from "./boundRegistry.js"
import type { EngineConfig } from "./engineConfig.js"
import { targetKey } from "./intents.js"
import type { OpenOrder } from "./openOrder.js"

/** What a reservation may fail with (a budget's and a funding source's errors, and a broken contract). */
export type TakeError =
  | InsufficientFunds
  | TokenBudgetExceeded
  | TokenNotFound
  | HoldResolved
  | QuotaOutOfRange
  | StoreError
  | ContractViolation

/** A reservation an attempt holds. */
interface Held {
  readonly target: ExternalSource
  readonly part: HoldPart
  /** Outside the journal's store: given back by a call (a rollback does not undo it). */
  readonly external: boolean
}

/** The causes of give-backs that failed (each also logged). */
type ReleaseFailures = ReadonlyArray<Cause.Cause<unknown>>

/** How much a reservation takes: all it asks, or what it can up to that (`partial`, split funding). */
type Share = "whole" | "upTo"

/** The most parts split funding draws from one `Source` (one per subscription of an account). */
const MAX_DRAWS = 64

/** One reservation's outcome; a refused one already gave back what it may have taken. */
type Take =
  | { readonly _tag: "Taken"; readonly held: Held }
  | { readonly _tag: "Refused"; readonly cause: Cause.Cause<TakeError>; readonly releaseFailures: ReleaseFailures }

/** An attempt's outcome: the parts it holds, or its failure with what it still holds. */
type Attempt =
  | { readonly _tag: "Reserved"; readonly held: ReadonlyArray<Held>; readonly parts: ReadonlyArray<HoldPart> }
  | {
    readonly _tag: "Failed"
    readonly cause: Cause.Cause<TakeError>
    readonly held: ReadonlyArray<Held>
    readonly releaseFailures: ReleaseFailures
  }

/** What the chain reserved for a hold. */
export interface Chosen {
  readonly parts: ReadonlyArray<HoldPart>
  readonly amount: Quota
  readonly trusted: boolean
}

/** What the attempts need. */
export interface OpenAttemptsDeps {
  readonly registry: BoundRegistry
  readonly config: EngineConfig
  /** Whether a source writes through the journal's store. */
  readonly shared: (target: ExternalSource) => boolean
}

/** The hold lists its funding parts first, then the budget's (taken first: `budgetParts` of them). */
const fundingFirst = (taken: ReadonlyArray<HoldPart>, budgetParts: number) => [
  ...taken.slice(budgetParts),
  ...taken.slice(0, budgetParts)
]

const isShortfall = (cause: Cause.Cause<unknown>) => {
  const first = Cause.findErrorOption(cause)
  return first._tag === "Some" && (first.value as { readonly _tag?: unknown })._tag === "InsufficientFunds"
}

/** The reservations of the open phase. */
export const makeOpenAttempts = (deps: OpenAttemptsDeps) => {
  const { config, registry, shared } = deps

  const release = (target: ExternalSource, part: HoldPart, order: OpenOrder) =>
    target.refund({ holdId: order.request.holdId, accountId: order.request.accountId, part, reason: "release" })

  /** Gives back `held` in that order, answering the causes of the give-backs that failed. */
  const giveBack = (held: ReadonlyArray<Held>, order: OpenOrder): Effect.Effect<ReleaseFailures> =>
    Effect.map(
      Effect.forEach(held, ({ external, part, target }) =>
        Effect.exit(release(target, part, order)).pipe(
          Effect.tap((exit) =>
            Exit.isFailure(exit) && external
              ? Effect.logError("relay-billing: compensation of an external reservation failed", exit.cause).pipe(
                Effect.annotateLogs({ holdId: order.request.holdId, sourceId: target.id })
              )
              : Effect.void
          )
        )),
      (exits) => exits.flatMap((exit) => (Exit.isFailure(exit) ? [exit.cause] : []))
    )

  /**
   * Reserves `amount` on `target`. An external target is added to `reached`
   * first (the open releases what it reached if it fails, also after a
   * retried transaction). A refused reservation on an external target is
   * given back at once (a reserve that failed or died may have debited; a
   * release is idempotent by hold id and a no-op when nothing was reserved),
   * as is one that reported more than asked or a non-integer (a
   * `ContractViolation`). A part in the journal's store is undone by the
   * transaction's rollback instead.
   */
  const take = (
    target: ExternalSource,
    kind: HoldPart["kind"],
    order: OpenOrder,
    subjectId: string,
    amount: Quota,
    reached: Ref.Ref<ReadonlySet<string>>,
    share: Share = "whole"
  ): Effect.Effect<Take> =>
    Effect.gen(function*() {
      const external = !shared(target)
      if (external) yield* Ref.update(reached, (keys) => new Set([...keys, targetKey({ kind, sourceId: target.id })]))
      const asked: HoldPart = { kind, sourceId: target.id, subjectId, amount }
      const refused = (cause: Cause.Cause<TakeError>, leftover: HoldPart) =>
        Effect.map(
          external ? giveBack([{ target, part: leftover, external }], order) : Effect.succeed([]),
          (releaseFailures): Take => ({ _tag: "Refused", cause, releaseFailures })
        )
      const reserved = yield* Effect.exit(target.reserve({
        holdId: order.request.holdId,
        accountId: order.request.accountId,
        subjectId,
        amount,
        ...(share === "upTo" ? { partial: true } : {}),
        ...(order.mode._tag === "PostConsume" ? { unconditional: true } : {}),
        ...(order.request.metadata ? { metadata: order.request.metadata } : {})
      }))
      if (Exit.isFailure(reserved)) return yield* refused(reserved.cause, asked)
      const reportedAmount = reserved.value.amount
      if (!QuotaModule.isQuota(reportedAmount) || reportedAmount > amount) {
        const violation = new ContractViolation({
          sourceId: target.id,
          detail: `asked to reserve ${amount}, reported ${reportedAmount}`
        })
        return yield* refused(
          Cause.fail(violation),
          QuotaModule.isQuota(reportedAmount) ? { ...asked, amount: reportedAmount } : asked
        )
      }
      const part: HoldPart = {
        kind,
        sourceId: target.id,
        // A `Source` may name the row it drew from (a subscription): the part is that row's, so
        // two parts of one source (split funding over two subscriptions) stay apart.
        subjectId: (reserved.value as { readonly subjectId?: string }).subjectId ?? subjectId,
        amount: reportedAmount,
        ...(reserved.value.ref !== undefined ? { ref: reserved.value.ref } : {})
      }
      return { _tag: "Taken", held: { target, part, external } }
    })

  /** A step of an attempt: a reservation to take. */
  interface Step {
    readonly target: ExternalSource
    readonly kind: HoldPart["kind"]
    readonly subjectId: string
    readonly amount: Quota
  }

  /** Takes `steps` in order; the first refusal ends the attempt with what it holds. */
  const takeEach = (
    steps: ReadonlyArray<Step>,
    order: OpenOrder,
    reached: Ref.Ref<ReadonlySet<string>>,
    held: ReadonlyArray<Held> = []
  ): Effect.Effect<Attempt> => {
    const [step, ...rest] = steps
    if (step === undefined) return Effect.succeed({ _tag: "Reserved", held, parts: held.map((h) => h.part) })
    return Effect.flatMap(
      take(step.target, step.kind, order, step.subjectId, step.amount, reached),
      (taken): Effect.Effect<Attempt> =>
        taken._tag === "Refused"
          ? Effect.succeed({ _tag: "Failed", cause: taken.cause, held, releaseFailures: taken.releaseFailures })
          : takeEach(rest, order, reached, [...held, taken.held])
    )
  }

  /**
   * Ends a failed attempt: its external reservations are given back (last
   * first). On insufficient funds the open goes on to the next source inside
   * the same transaction, so the attempt's reservations in the journal's store
   * are given back too, and a failed give-back aborts the open. Any other
   * failure aborts the transaction, whose rollback undoes the reservations in
   * the store; its original cause is kept (a deadlock stays retryable).
   */
  const endAttempt = (failed: Extract<Attempt, { readonly _tag: "Failed" }>, order: OpenOrder) =>
    Effect.gen(function*() {
      const lastFirst = [...failed.held].reverse()
      const externalFailures = yield* giveBack(lastFirst.filter((h) => h.external), order)
      const sharedFailures = isShortfall(failed.cause)
        ? yield* giveBack(lastFirst.filter((h) => !h.external), order)
        : []
      const releaseFailures = [...failed.releaseFailures, ...externalFailures, ...sharedFailures]
      // A failed give-back of an external part leaves money outside the store: report it
      // (the original cause is in the log). Shared parts never fail here: the rollback undoes them.
      if (releaseFailures.length > 0) {
        return yield* new StoreError({
          operation: "open.compensate",
          detail: `could not give back a partial reservation of hold ${order.request.holdId}`,
          cause: releaseFailures[0]
        })
      }
      return yield* Effect.failCause(failed.cause)
    })

  /**
   * Settles an attempt's outcome: a failure ends it (see `endAttempt`); a
   * success hands its external reservations to the open's scope, which gives
   * them back if the open fails after the attempt.
   */
  const conclude = (outer: Scope.Scope, order: OpenOrder, attempt: Attempt) =>
    attempt._tag === "Failed"
      ? endAttempt(attempt, order)
      : Effect.as(
        Scope.addFinalizerExit(outer, (exit) =>
          Exit.isFailure(exit)
            ? giveBack([...attempt.held].reverse().filter((h) => h.external), order)
            : Effect.void),
        attempt.parts
      )

  /** Whether the trust bypass reserves 0 for this open (the wallet, over the threshold, the token too). */
  const isTrusted = (source: ExternalSource, budget: ExternalSource | undefined, order: OpenOrder) =>
    Effect.gen(function*() {
      const threshold = config.trustThreshold
      const bypassAllowed = order.mode._tag === "Reserve" && order.mode.trustBypass === "allowed"
      if (threshold === undefined || !bypassAllowed || source.id !== config.roles.wallet || !source.balance) {
        return false
      }
      const balance = yield* source.balance(order.request.accountId)
      if (!(balance > threshold)) return false
      if (budget === undefined || order.budgetedTokenId === undefined) return true
      if (!budget.remaining) return false
      const left = yield* budget.remaining(order.budgetedTokenId)
      return left.unlimited || left.remaining > threshold
    })

  /**
   * One funding attempt: the budget first, then the funding source. The
   * reservations run uninterruptibly (as each reserve always did) so that an
   * interruption finds them either all held by the open's scope or given back.
   */
  const attempt = (
    outer: Scope.Scope,
    source: ExternalSource,
    budget: ExternalSource | undefined,
    order: OpenOrder,
    reached: Ref.Ref<ReadonlySet<string>>
  ) =>
    Effect.gen(function*() {
      const { accountId, estimate } = order.request
      const trusted = yield* isTrusted(source, budget, order)
      const amount: Quota = trusted ? (0 as Quota) : reservationAmount(source, estimate)
      if (!QuotaModule.isQuota(amount) || amount < (trusted ? 0 : estimate)) {
        return yield* new ContractViolation({
          sourceId: source.id,
          detail: `minimumReservation(${estimate}) returned ${amount}`
        })
      }
      const budgetStep: ReadonlyArray<Step> = budget !== undefined && order.budgetedTokenId !== undefined
        ? [{ target: budget, kind: "budget", subjectId: order.budgetedTokenId, amount }]
        : []
      const fundingStep: Step = { target: source, kind: "funding", subjectId: accountId, amount }
      const parts = yield* Effect.uninterruptible(Effect.flatMap(
        takeEach([...budgetStep, fundingStep], order, reached),
        (taken): Effect.Effect<ReadonlyArray<HoldPart>, TakeError> => {
          if (taken._tag === "Reserved") {
            const funding = taken.held[taken.held.length - 1]!.part
            if (funding.amount !== amount) {
              const violation = new ContractViolation({
                sourceId: source.id,
                detail: `asked to reserve ${amount}, reserved ${funding.amount}`
              })
              const failed: Attempt = {
                _tag: "Failed",
                cause: Cause.fail(violation),
                held: taken.held,
                releaseFailures: []
              }
              return conclude(outer, order, failed)
            }
          }
          return conclude(outer, order, taken)
        }
      ))
      const chosen: Chosen = { parts: fundingFirst(parts, budgetStep.length), amount, trusted }
      return chosen
    })

  /** Split funding's progress: what it holds, what is left to cover, the give-backs that failed. */
  interface SplitState {
    readonly held: ReadonlyArray<Held>
    readonly remaining: number
    readonly releaseFailures: ReleaseFailures
    /** The ids of every source split funding tries, joined (`a+b`), named by its shortfall. */
    readonly splitIds: string
    /** How many times split funding has drawn from the current source. */
    readonly draws?: number
  }

  /**
   * Takes what each source can of what is left (`partial`), in order, until it
   * is covered; a source short of funds is skipped.
   */
  const splitFrom = (
    sources: ReadonlyArray<ExternalSource>,
    order: OpenOrder,
    reached: Ref.Ref<ReadonlySet<string>>,
    state: SplitState
  ): Effect.Effect<Attempt> => {
    const [source, ...rest] = sources
    if (source === undefined || state.remaining === 0) {
      const estimate = order.request.estimate
      if (state.remaining > 0) {
        const shortfall = new InsufficientFunds({
          sourceId: state.splitIds,
          accountId: order.request.accountId,
          required: estimate,
          available: estimate - state.remaining,
          reason: "split funding: all sources together cannot cover the estimate"
        })
        return Effect.succeed({
          _tag: "Failed",
          cause: Cause.fail(shortfall),
          held: state.held,
          releaseFailures: state.releaseFailures
        })
      }
      return Effect.succeed({ _tag: "Reserved", held: state.held, parts: state.held.map((h) => h.part) })
    }
    return Effect.flatMap(
      take(source, "funding", order, order.request.accountId, state.remaining as Quota, reached, "upTo"),
      (taken): Effect.Effect<Attempt> => {
        const releaseFailures = [...state.releaseFailures, ...(taken._tag === "Refused" ? taken.releaseFailures : [])]
        if (taken._tag === "Refused") {
          return isShortfall(taken.cause)
            ? splitFrom(rest, order, reached, { ...state, releaseFailures, draws: 0 })
            : Effect.succeed({ _tag: "Failed", cause: taken.cause, held: state.held, releaseFailures })
        }
        const held = [...state.held, taken.held]
        if (taken.held.part.amount === 0) {
          const violation = new ContractViolation({
            sourceId: source.id,
            detail: "a partial reservation must reserve more than 0 or fail with InsufficientFunds"
          })
          return Effect.succeed({ _tag: "Failed", cause: Cause.fail(violation), held, releaseFailures })
        }
        // A `Source` is asked again while it gives something (a subscription source draws one
        // subscription per take, the next take the next one: §7, several subscriptions by soonest
        // expiry, then the wallet), at most `MAX_DRAWS` times; a two-phase source is asked once.
        const draws = (state.draws ?? 0) + 1
        const again = registry.isMover(source.id) && draws < MAX_DRAWS
        return splitFrom(again ? sources : rest, order, reached, {
          ...state,
          held,
          remaining: state.remaining - taken.held.part.amount,
          releaseFailures,
          draws: again ? draws : 0
        })
      }
    )
  }

  /**
   * Split funding: the token reserves the whole estimate, then each source in
   * order reserves what it can of the rest, until it is covered.
   */
  const splitAttempt = (
    outer: Scope.Scope,
    sources: ReadonlyArray<ExternalSource>,
    budget: ExternalSource | undefined,
    order: OpenOrder,
    reached: Ref.Ref<ReadonlySet<string>>
  ) =>
    Effect.gen(function*() {
      const amount = order.request.estimate
      const budgetStep: ReadonlyArray<Step> = budget !== undefined && order.budgetedTokenId !== undefined
        ? [{ target: budget, kind: "budget", subjectId: order.budgetedTokenId, amount }]
        : []
      const parts = yield* Effect.uninterruptible(Effect.flatMap(
        takeEach(budgetStep, order, reached),
        (budgetTaken): Effect.Effect<ReadonlyArray<HoldPart>, TakeError> =>
          budgetTaken._tag === "Failed"
            ? conclude(outer, order, budgetTaken)
            : Effect.flatMap(
              splitFrom(sources, order, reached, {
                held: budgetTaken.held,
                remaining: amount,
                releaseFailures: [],
                splitIds: sources.map((source) => source.id).join("+")
              }),
              (split) => conclude(outer, order, split)
            )
      ))
      const chosen: Chosen = { parts: fundingFirst(parts, budgetStep.length), amount, trusted: false }
      return chosen
    })

  /** Whether this open may split: as the request says, else as `splitFundingFor` answers for the account. */
  const splitWanted = (order: OpenOrder) => {
    if (order.mode._tag === "PostConsume") return Effect.succeed(false)
    switch (order.mode.split) {
      case "on":
        return Effect.succeed(true)
      case "off":
        return Effect.succeed(false)
      case "account":
        return config.splitFundingFor ? config.splitFundingFor(order.request.accountId) : Effect.succeed(false)
    }
  }

  /**
   * The open's reservations: each source of the chain (the request's `sources`,
   * else the preference's) in turn until one covers the estimate; on
   * insufficient funds everywhere, split funding when wanted; else the first
   * shortfall.
   */
  const reserveChain = (order: OpenOrder, reached: Ref.Ref<ReadonlySet<string>>) =>
    Effect.gen(function*() {
      const outer = yield* Scope.Scope
      const { accountId, estimate } = order.request
      const chain = order.request.sources ??
        (yield* FundingResolver.resolve(registry, order.preference, accountId, config.roles, config.preferences))
      const budget = order.budgetedTokenId === undefined ? undefined : yield* registry.budget(config.tokenBudgetId)
      let firstShortfall: InsufficientFunds | undefined
      for (const sourceId of chain) {
        const source = yield* registry.funding(sourceId)
        const result = yield* Effect.result(attempt(outer, source, budget, order, reached))
        if (result._tag === "Success") return result.success
        if (result.failure._tag !== "InsufficientFunds") return yield* Effect.fail(result.failure)
        firstShortfall ??= result.failure
      }
      if (firstShortfall && estimate > 0 && (yield* splitWanted(order))) {
        const sources = yield* Effect.forEach(chain, (sourceId) => registry.funding(sourceId))
        return yield* splitAttempt(outer, sources, budget, order, reached)
      }
      return yield* Effect.fail(
        firstShortfall ??
          new InsufficientFunds({ sourceId: chain[0] ?? "", accountId, required: estimate, available: 0 })
      )
    })

  return { reserveChain }
}
