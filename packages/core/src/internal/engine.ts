import { Cause, Clock, Data, Effect, Exit, Scope } from "effect"
import type { AccountCounters } from "../AccountCounters.js"
import {
  ContractViolation,
  HoldInFlight,
  HoldNotFound,
  HoldResolved,
  IdempotencyConflict,
  InsufficientFunds,
  SettleIncomplete,
  StoreError,
  TokenBudgetExceeded,
  UnknownSource
} from "../BillingError.js"
import type { Publisher } from "../BillingEvents.js"
import type { Policy as LowBalancePolicy } from "../LowBalance.js"
import { BillingEvent } from "../BillingEvents.js"
import type { BillingSettler, LeaseControl, RefundError, RefundResult, SettleError } from "../BillingSettler.js"
import type { Budget } from "../Budget.js"
import type { FundingRegistry } from "../FundingRegistry.js"
import * as FundingResolver from "../FundingResolver.js"
import type { FundingSource, PartResult } from "../FundingSource.js"
import { reservationAmount } from "../FundingSource.js"
import { isSource } from "../Source.js"
import type { Hold, HoldPart, PartSettlement, Settlement } from "../Hold.js"
import type { HoldJournal } from "../HoldJournal.js"
import type { Recorder } from "../SettlementRecorder.js"
import * as Preference from "../Preference.js"
import type { Quota } from "../Quota.js"
import * as QuotaModule from "../Quota.js"
import { charged } from "../Hold.js"
import { allocate } from "./allocate.js"
import type { HoldIntent } from "../HoldIntent.js"
import { makeIntents, targetKey } from "./intents.js"
import { makeCorrect } from "./correct.js"
import { makeLateSettle } from "./late.js"
import { makeRenew } from "./lease.js"
import { bindRegistry } from "./boundRegistry.js"
import { collectingJournal, insideTransaction } from "./ledgerRows.js"
import { isBusinessError, Replayed, Stale } from "./writeOnce.js"
import type { Ledger } from "../Ledger.js"
import type { SqlStore } from "../SqlStore.js"

/** Engine configuration (see `BillingSession.Options`). */
export interface EngineConfig {
  readonly holdTtlMillis: number
  readonly trustThreshold: number | undefined
  readonly roles: FundingResolver.Roles
  readonly tokenBudgetId: string
  readonly reapBatch: number
  readonly splitFundingFor: ((accountId: string) => Effect.Effect<boolean, StoreError>) | undefined
}

/** A decoded open request. */
export interface OpenInput {
  readonly holdId: string
  readonly accountId: string
  readonly tokenId?: string
  readonly estimate: Quota
  readonly preference?: string
  readonly playground?: boolean
  readonly force?: boolean
  readonly sources?: ReadonlyArray<string>
  readonly ttlMillis?: number
  readonly split?: boolean
  readonly postConsume?: boolean
  readonly metadata?: Readonly<Record<string, string>>
}

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

type Target = FundingSource | Budget

/** What a settle stores on its settlement for the recorder. */
type SettleMetadata = Readonly<Record<string, string>> | undefined

interface Deps {
  readonly lowBalance: LowBalancePolicy
  readonly journal: HoldJournal["Service"]
  /** Where the rows of `Source` moves go (one append per transaction). */
  readonly ledger?: Ledger["Service"] | undefined
  /** The store's executor, handed to `Source`s inside the engine's transactions. */
  readonly sql?: SqlStore["Service"] | undefined
  /** Writes the host's record of a settlement inside the settle's transaction. */
  readonly recorder?: Recorder | undefined
  readonly registry: FundingRegistry["Service"]
  readonly counters: AccountCounters["Service"]
  readonly events: Publisher
  readonly config: EngineConfig
}

interface AttemptContext {
  /** Causes of failed releases of external parts. */
  readonly failures: Array<unknown>
  /** Parts acquired in the journal's store, to release explicitly on a fallback. */
  readonly acquired: Array<{ readonly target: Target; readonly part: HoldPart }>
}

class Duplicate {
  readonly _tag = "Duplicate"
}

/**
 * Internal: a transaction found a pending hold with an external part whose
 * resolution was not recorded first (the hold became visible after the caller
 * looked, e.g. a settle racing the open). The caller records it and runs again.
 */
class Unclaimed extends Data.TaggedError("Unclaimed")<{ readonly holdId: string }> {}

/** Internal: the recovery pass found the lease of a hold it listed renewed since. */
class Renewed extends Data.TaggedError("Renewed")<{}> {}

/** The engine: open / settle / refund / reap over a journal and a registry. */
export const makeEngine = (deps: Deps) => {
  const { config, counters, events, lowBalance, recorder } = deps
  const journal = collectingJournal(deps.journal, deps.ledger)
  const registry = bindRegistry(deps.registry, {
    storeId: deps.journal.storeId,
    sql: deps.sql,
    ledger: deps.ledger,
    roles: config.roles,
    tokenBudgetId: config.tokenBudgetId
  })

  const shared = (target: Target) => target.storeId !== undefined && target.storeId === journal.storeId

  const intents = makeIntents({ journal, registry, tokenBudgetId: config.tokenBudgetId, shared })
  /** The external targets each running open called (by its input), to release after a failure. */
  const reached = new WeakMap<OpenInput, Set<string>>()

  const targetOf = (part: HoldPart) =>
    part.kind === "funding" ? registry.funding(part.sourceId) : registry.budget(part.sourceId)

  const publish = (event: BillingEvent) =>
    events.publish(event).pipe(
      Effect.catchCause((cause) => Effect.logWarning("relay-billing: event publisher failed", cause))
    )

  // ---------------------------------------------------------------- open

  const checkExisting = (hold: Hold, input: OpenInput) =>
    Effect.gen(function*() {
      const mismatch = (field: string, existing: unknown, requested: unknown) =>
        new IdempotencyConflict({
          holdId: hold.id,
          field,
          existing: String(existing ?? "(none)"),
          requested: String(requested ?? "(none)")
        })
      if (hold.accountId !== input.accountId) return yield* mismatch("accountId", hold.accountId, input.accountId)
      if ((hold.tokenId ?? undefined) !== (input.playground ? undefined : input.tokenId)) {
        return yield* mismatch("tokenId", hold.tokenId, input.tokenId)
      }
      if (hold.estimate !== input.estimate) return yield* mismatch("estimate", hold.estimate, input.estimate)
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

  /**
   * Acquires one part in the current scope. An external part is released if the
   * scope closes with a failure; a part in the journal's store is undone by the
   * transaction's rollback instead (running its release inside a transaction the
   * database already aborted would fail and hide the original error). It is
   * recorded in `acquired` so a fallback, which keeps the transaction, can
   * release it explicitly.
   *
   * The reservation is checked only after the release is registered, so an
   * external source that reports more than asked or a non-integer gets back
   * whatever it took; and one whose reserve fails or dies (possibly after
   * debiting) is released at once (a release is idempotent by hold id and a
   * no-op when nothing was reserved).
   */
  const acquirePart = (
    target: Target,
    kind: HoldPart["kind"],
    input: OpenInput,
    subjectId: string,
    amount: Quota,
    ctx: AttemptContext,
    partial = false
  ) =>
    Effect.gen(function*() {
      const external = !shared(target)
      if (external) reached.get(input)?.add(targetKey({ kind, sourceId: target.id }))
      const asked: HoldPart = { kind, sourceId: target.id, subjectId, amount }
      const compensate = (part: HoldPart) =>
        release(target, part, input).pipe(
          Effect.catchCause((cause) => {
            ctx.failures.push(cause)
            return Effect.logError("relay-billing: compensation of an external reservation failed", cause).pipe(
              Effect.annotateLogs({ holdId: input.holdId, sourceId: target.id })
            )
          })
        )
      const reservation = yield* Effect.acquireRelease(
        (target.reserve as FundingSource["reserve"])({
          holdId: input.holdId,
          accountId: input.accountId,
          subjectId,
          amount,
          ...(partial ? { partial } : {}),
          ...(input.postConsume ? { unconditional: true } : {}),
          ...(input.metadata ? { metadata: input.metadata } : {})
        }).pipe(Effect.onError(() => external ? compensate(asked) : Effect.void)),
        (reservation, exit) =>
          Exit.isSuccess(exit) || !external ? Effect.void : compensate(
            QuotaModule.isQuota(reservation.amount) ? { ...asked, amount: reservation.amount as Quota } : asked
          )
      )
      if (!QuotaModule.isQuota(reservation.amount) || reservation.amount > amount) {
        return yield* new ContractViolation({
          sourceId: target.id,
          detail: `asked to reserve ${amount}, reported ${reservation.amount}`
        })
      }
      const part: HoldPart = {
        kind,
        sourceId: target.id,
        // A `Source` may name the row it drew from (a subscription): the part is that row's,
        // so two parts of one source (split funding over two subscriptions) stay apart.
        subjectId: (reservation as { readonly subjectId?: string }).subjectId ?? subjectId,
        amount: reservation.amount as Quota,
        ...(reservation.ref !== undefined ? { ref: reservation.ref } : {})
      }
      if (shared(target)) ctx.acquired.push({ target, part })
      return part
    })

  const release = (target: Target, part: HoldPart, input: OpenInput) =>
    target.refund({ holdId: input.holdId, accountId: input.accountId, part, reason: "release" })

  /**
   * Ends a failed attempt: external parts are released by closing its scope. On
   * insufficient funds the open goes on to the next source inside the same
   * transaction, so the attempt's shared parts are released explicitly, and a
   * failed release aborts the open. Any other failure aborts the transaction,
   * whose rollback undoes the shared parts; its original cause is kept (a
   * deadlock stays retryable).
   */
  const endAttempt = <E>(
    child: Scope.Closeable,
    exit: Exit.Failure<unknown, E>,
    ctx: AttemptContext,
    input: OpenInput
  ): Effect.Effect<never, E | StoreError> =>
    Effect.gen(function*() {
      yield* Scope.close(child, exit)
      const cause = exit.cause
      const first = Cause.findErrorOption(cause)
      const shortfall = first._tag === "Some" && first.value instanceof InsufficientFunds
      if (shortfall) {
        for (const { part, target } of [...ctx.acquired].reverse()) {
          const released = yield* Effect.exit(release(target, part, input))
          if (released._tag === "Failure") ctx.failures.push(released.cause)
        }
      }
      // A failed release of an external part leaves money outside the store: report it
      // (the original cause is in the log). Shared parts never fail here: the rollback undoes them.
      if (ctx.failures.length > 0) {
        return yield* new StoreError({
          operation: "open.compensate",
          detail: `could not give back a partial reservation of hold ${input.holdId}`,
          cause: ctx.failures[0]
        })
      }
      return yield* Effect.failCause(cause)
    })

  const isTrusted = (source: FundingSource, budget: Budget | undefined, input: OpenInput) =>
    Effect.gen(function*() {
      const threshold = config.trustThreshold
      if (threshold === undefined || input.force || source.id !== config.roles.wallet || !source.balance) return false
      const balance = yield* source.balance(input.accountId)
      if (!(balance > threshold)) return false
      if (budget === undefined || input.tokenId === undefined) return true
      if (!budget.remaining) return false
      const left = yield* budget.remaining(input.tokenId)
      return left.unlimited || left.remaining > threshold
    })

  /** One funding attempt: budget first, then the funding source, in a child scope of `outer`. */
  const attempt = (
    outer: Scope.Scope,
    source: FundingSource,
    budget: Budget | undefined,
    input: OpenInput
  ) =>
    Effect.gen(function*() {
      const trusted = yield* isTrusted(source, budget, input)
      const amount: Quota = trusted ? (0 as Quota) : reservationAmount(source, input.estimate)
      if (!QuotaModule.isQuota(amount) || amount < (trusted ? 0 : input.estimate)) {
        return yield* new ContractViolation({
          sourceId: source.id,
          detail: `minimumReservation(${input.estimate}) returned ${amount}`
        })
      }
      const child = yield* Scope.fork(outer)
      const ctx: AttemptContext = { failures: [], acquired: [] }
      const exit = yield* Effect.exit(
        Effect.gen(function*() {
          const parts: Array<HoldPart> = []
          if (budget !== undefined && input.tokenId !== undefined) {
            parts.push(yield* acquirePart(budget, "budget", input, input.tokenId, amount, ctx))
          }
          const funding = yield* acquirePart(source, "funding", input, input.accountId, amount, ctx)
          if (funding.amount !== amount) {
            return yield* new ContractViolation({
              sourceId: source.id,
              detail: `asked to reserve ${amount}, reserved ${funding.amount}`
            })
          }
          return { parts: [funding, ...parts], amount, trusted }
        }).pipe(Scope.provide(child))
      )
      if (Exit.isSuccess(exit)) return exit.value
      return yield* endAttempt(child, exit, ctx, input)
    })

  /**
   * Split funding: the token reserves the whole estimate, then each source in
   * order reserves what it can of the rest (`partial`), until it is covered.
   */
  const splitAttempt = (
    outer: Scope.Scope,
    sources: ReadonlyArray<FundingSource>,
    budget: Budget | undefined,
    input: OpenInput
  ) =>
    Effect.gen(function*() {
      const amount = input.estimate
      const child = yield* Scope.fork(outer)
      const ctx: AttemptContext = { failures: [], acquired: [] }
      const exit = yield* Effect.exit(
        Effect.gen(function*() {
          const budgetParts: Array<HoldPart> = []
          if (budget !== undefined && input.tokenId !== undefined) {
            budgetParts.push(yield* acquirePart(budget, "budget", input, input.tokenId, amount, ctx))
          }
          const funding: Array<HoldPart> = []
          let remaining = amount as number
          for (const source of sources) {
            // A `Source` (no hold ids) is asked again while it gives something: a subscription
            // source draws one subscription per take, the next take the next one (§7: several
            // subscriptions by soonest expiry, then the wallet). A two-phase source is asked once.
            const again = isSource(yield* deps.registry.funding(source.id))
            for (let round = 0; remaining > 0 && round < (again ? 64 : 1); round++) {
              const result = yield* Effect.result(
                acquirePart(source, "funding", input, input.accountId, remaining as Quota, ctx, true)
              )
              if (result._tag === "Failure") {
                if (result.failure instanceof InsufficientFunds) break
                return yield* Effect.fail(result.failure)
              }
              if (result.success.amount === 0) {
                return yield* new ContractViolation({
                  sourceId: source.id,
                  detail: "a partial reservation must reserve more than 0 or fail with InsufficientFunds"
                })
              }
              funding.push(result.success)
              remaining -= result.success.amount
            }
          }
          if (remaining > 0) {
            return yield* new InsufficientFunds({
              sourceId: sources.map((s) => s.id).join("+"),
              accountId: input.accountId,
              required: amount,
              available: amount - remaining,
              reason: "split funding: all sources together cannot cover the estimate"
            })
          }
          return { parts: [...funding, ...budgetParts], amount, trusted: false }
        }).pipe(Scope.provide(child))
      )
      if (Exit.isSuccess(exit)) return exit.value
      return yield* endAttempt(child, exit, ctx, input)
    })

  const splitWanted = (input: OpenInput) =>
    input.split !== undefined
      ? Effect.succeed(input.split)
      : config.splitFundingFor
      ? config.splitFundingFor(input.accountId)
      : Effect.succeed(false)

  const reserveChain = (input: OpenInput, preference: Preference.Preference) =>
    Effect.gen(function*() {
      const outer = yield* Scope.Scope
      const order = input.sources ?? (yield* FundingResolver.resolve(registry, preference, input.accountId, config.roles))
      const budget = input.playground || input.tokenId === undefined
        ? undefined
        : yield* registry.budget(config.tokenBudgetId)
      let firstShortfall: InsufficientFunds | undefined
      for (const sourceId of order) {
        const source = yield* registry.funding(sourceId)
        const result = yield* Effect.result(attempt(outer, source, budget, input))
        if (result._tag === "Success") return result.success
        const error = result.failure
        if (error instanceof InsufficientFunds) {
          firstShortfall ??= error
          continue
        }
        return yield* Effect.fail(error)
      }
      if (firstShortfall && input.estimate > 0 && (yield* splitWanted(input))) {
        const sources: Array<FundingSource> = []
        for (const sourceId of order) sources.push(yield* registry.funding(sourceId))
        return yield* splitAttempt(outer, sources, budget, input)
      }
      return yield* Effect.fail(
        firstShortfall ??
          new InsufficientFunds({ sourceId: order[0] ?? "", accountId: input.accountId, required: input.estimate, available: 0 })
      )
    })

  const settlerFor = (hold: Hold): BillingSettler & { readonly hold: Hold; readonly lease: LeaseControl } => {
    // The lease length the hold was opened with (the request's `ttlMillis` or the default).
    const ttlMillis = Math.max(1, hold.expiresAt - hold.createdAt)
    return {
      hold,
      holdId: hold.id,
      preConsumed: hold.reserved,
      needsRefund: journal.get(hold.id).pipe(Effect.map((h) => h?.status === "pending")),
      settle: (actual, options) => settleFromHandle(hold, actual, options?.metadata),
      refund: Effect.suspend(() => refund(hold.id)),
      lease: { ttlMillis, renew: Effect.suspend(() => renew(hold.id, ttlMillis)) }
    }
  }

  const open = Effect.fn("BillingSession.open")(function*(input: OpenInput) {
    // No read first: the insert inside the transaction detects an existing hold (and
    // makes a concurrent open of the same id wait for, then see, the first one).
    const preference = Preference.normalize(input.preference)
    const now = yield* Clock.currentTimeMillis
    const draft: Hold = {
      id: input.holdId,
      accountId: input.accountId,
      ...(input.tokenId !== undefined && !input.playground ? { tokenId: input.tokenId } : {}),
      estimate: input.estimate,
      reserved: 0 as Quota,
      preference,
      trusted: false,
      status: "pending",
      parts: [],
      createdAt: now,
      expiresAt: now + (input.ttlMillis ?? config.holdTtlMillis),
      ...(input.metadata ? { metadata: { ...input.metadata } } : {})
    }
    // An open that may reach a source outside the journal's store records its intent first,
    // in its own write, so that recovery can release what a crash left reserved.
    const targets = yield* intents.openTargets({ ...draft, holdId: draft.id })
    const external = targets.length > 0
    const called = new Set<string>()
    const scope = { ...draft, holdId: draft.id }
    let leftover = false
    if (external) {
      leftover = (yield* intents.beginOpen(scope, targets)).leftover
      reached.set(input, called)
    }
    // Inside a transaction it joins (a post-consume charge), a conflict could not roll the
    // takes back on its own: the hold is inserted first there, as with two-phase sources.
    const movers = !external && (yield* registry.allSources) && !(yield* insideTransaction(journal))
    const outcome = yield* journal.transaction(
      Effect.scoped(Effect.gen(function*() {
        if (movers) {
          // Every source is a `Source` in the journal's store: take first, then insert the hold once with
          // its parts; a conflict rolls the takes back and is answered as the replay it is.
          const chosen = yield* reserveChain(input, preference)
          const hold: Hold = { ...draft, parts: chosen.parts, reserved: chosen.amount, trusted: chosen.trusted }
          if (!(yield* journal.insert(hold))) return yield* new Replayed()
          return hold
        }
        if (!(yield* journal.insert(draft))) return new Duplicate()
        const chosen = yield* reserveChain(input, preference)
        const hold: Hold = { ...draft, parts: chosen.parts, reserved: chosen.amount, trusted: chosen.trusted }
        if (!(yield* journal.update(hold, "pending"))) {
          return yield* new StoreError({ operation: "open.record", detail: `hold ${hold.id} changed while opening` })
        }
        if (external && leftover) yield* intents.releaseUnkept(scope, targets, hold.parts)
        if (external) yield* intents.commitOpen(hold.id)
        return hold
      }))
    ).pipe(
      Effect.catchTag("Replayed", () => Effect.succeed(new Duplicate())),
      // A take that failed may have met a balance the first open of this id already took:
      // an existing hold makes it a replay (§2.7), answered as such.
      Effect.catchIf(
        (error): error is typeof error => movers && isBusinessError(error),
        (error) => Effect.flatMap(journal.get(input.holdId), (existing) => existing ? Effect.succeed(new Duplicate()) : Effect.fail(error))
      ),
      // The open failed: release every external target now (its compensation may have
      // failed too); if that fails as well, the recovery pass does it after the TTL.
      Effect.onError(() => external ? recoverOpenLogged(input.holdId, leftover ? undefined : called) : Effect.void)
    )
    if (external && outcome instanceof Duplicate) yield* recoverOpenLogged(input.holdId, leftover ? undefined : called)
    if (outcome instanceof Duplicate) {
      // Never a handle to another request's hold (§2.7): a conflict, the first
      // outcome, or — while the first request still runs — HoldInFlight.
      const raced = yield* journal.get(input.holdId)
      if (!raced) return yield* new StoreError({ operation: "open", detail: `hold ${input.holdId} vanished` })
      const pending = yield* checkExisting(raced, input)
      return yield* new HoldInFlight({ holdId: pending.id, expiresAt: pending.expiresAt })
    }
    yield* Effect.annotateCurrentSpan({ holdId: outcome.id, reserved: outcome.reserved })
    return settlerFor(outcome)
  })

  /**
   * After a failed open: releases the external targets it reached now (recovery retries
   * later); every target when an earlier open of the id left its intent pending (`only`
   * undefined), since finishing the intent would forget that attempt's reservations.
   */
  const recoverOpenLogged = (holdId: string, called: ReadonlySet<string> | undefined) =>
    intents.recoverOpen(holdId, true, called).pipe(
      Effect.catchCause((cause) =>
        Effect.logWarning("relay-billing: releasing an open's external reservations failed; recovery retries", cause)
          .pipe(Effect.annotateLogs({ holdId }))
      )
    )

  // ---------------------------------------------------------------- settle

  const loadPending = (holdId: string, operation: string) =>
    Effect.gen(function*() {
      const hold = yield* journal.get(holdId, { forUpdate: true })
      if (!hold) return yield* new HoldNotFound({ holdId })
      return hold
    }).pipe(Effect.withSpan(`BillingSession.${operation}.load`))

  /**
   * Inside a resolving transaction: a pending hold with an external part must
   * have this resolution recorded (pending) before any source is called.
   */
  const requireClaim = (hold: Hold, step: "settle" | "refund" | "expire", amount?: Quota) =>
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

  const isUnclaimed = (error: unknown): error is Unclaimed =>
    typeof error === "object" && error !== null && (error as { readonly _tag?: unknown })._tag === "Unclaimed"

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
          ? previous.parts.find((p) => p.kind === part.kind && p.sourceId === part.sourceId && p.subjectId === part.subjectId)
          : undefined
        if (recorded) {
          parts.push(recorded)
          continue
        }
        // The preference rides along for a `Source`'s overflow chain (external sources ignore it).
        const request = { holdId, accountId: hold.accountId, part, actual: target, preference: hold.preference }
        const result = yield* Effect.result((source.settle as FundingSource["settle"])(request))
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
   * The settle transaction; with `complete`, an incomplete settlement is
   * finished. The transaction that settles the hold writes the recorder's
   * record (so a replay, which finds it settled, writes none).
   */
  const settleTx = (holdId: string, actual: Quota, complete: boolean, metadata?: SettleMetadata) =>
    journal.transaction(Effect.gen(function*() {
      const hold = yield* loadPending(holdId, "settle")
      if (hold.status === "settled" && hold.settlement) {
        if (complete && hold.settlement.incomplete) return yield* completeSettlement(hold, hold.settlement)
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
   * Finishes the recorded resolution of a hold with external parts: the
   * recorded settle (with its recorded amount), refund or expiry. Idempotent.
   */
  const finishResolution = (intent: HoldIntent) =>
    intent.step === "settle"
      ? settleTx(intent.holdId, intent.amount, true).pipe(
        Effect.flatMap(settleOutcome),
        Effect.catchTag("SettleIncomplete", () => Effect.void),
        Effect.asVoid
      )
      : giveBackTx(intent.holdId, intent.step === "expire" ? "expire" : "refund").pipe(Effect.asVoid)

  /** Whether any registered funding source or the token budget lives outside the journal's store. */
  const registryHasExternal = Effect.gen(function*() {
    for (const id of registry.fundingIds) {
      if (!shared(yield* registry.funding(id))) return true
    }
    const budget = yield* Effect.option(registry.budget(config.tokenBudgetId))
    return budget._tag === "Some" && !shared(budget.value)
  })

  const lateSettle = makeLateSettle({ journal, counters, targetOf, shared })

  /** Finishes a pending late charge (recovery): charges it again, idempotently, and marks it done. */
  const finishLate = (intent: HoldIntent) =>
    settleTx(intent.holdId, intent.amount, false).pipe(
      Effect.flatMap(settleOutcome),
      Effect.andThen(journal.finishIntent(intent.holdId, "late", "settled")),
      Effect.asVoid
    )

  const renewLease = makeRenew({
    journal,
    registryHasExternal: registryHasExternal.pipe(
      Effect.catchTag("UnknownSource", (error) =>
        Effect.fail(new StoreError({ operation: "renew", detail: error.message, cause: error })))
    )
  })

  /** Renews the lease of a pending hold by `ttlMillis` (decoded by the caller). */
  const renew = (holdId: string, ttlMillis: number) => renewLease(holdId, ttlMillis)

  const claimIfExternal = <E = never>(
    holdId: string,
    step: "settle" | "refund" | "expire",
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
        if (intent.step === "refund") return yield* new HoldResolved({ holdId, status: "refunded", operation: "settle" })
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
        yield* settleOutcome(yield* settleTx(holdId, late.amount, false, metadata))
        return yield* new IdempotencyConflict({
          holdId,
          field: "actual",
          existing: String(late.amount),
          requested: String(actual)
        })
      }
      return yield* settleOutcome(yield* settleTx(holdId, actual, false, metadata))
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
      if (!(yield* registry.allSources) || (yield* insideTransaction(journal))) return yield* settle(hold.id, actual, metadata)
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

  /**
   * Publishes one `LowBalance` when the paying source (the last funding part that
   * charged anything) ended below the account's threshold, within the policy's
   * rate limit. Never fails the settle: a policy error is logged.
   */
  const warnIfLow = (hold: Hold, settlement: Settlement) =>
    Effect.gen(function*() {
      const paying = [...settlement.parts].reverse().find((p) => p.kind === "funding" && p.charged > 0)
      if (!paying || paying.balanceAfter === undefined) return
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

  // ---------------------------------------------------------------- refund / expire

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
          ? yield* Effect.flatMap(journal.get(holdId), (h) => h ? Effect.succeed(h) : Effect.fail(new HoldNotFound({ holdId })))
          : yield* loadPending(holdId, "refund")
        if (hold.status !== "pending") return { hold, refunded: 0, fresh: false }
        yield* requireClaim(hold, reason)
        const refunded = yield* giveBack(hold, reason)
        const now = yield* Clock.currentTimeMillis
        const done: Hold = { ...hold, status: reason === "expire" ? "expired" : "refunded", resolvedAt: now }
        if (!(yield* journal.update(done, "pending"))) {
          if (unlocked) return yield* new Stale()
          return yield* new StoreError({ operation: "refund.record", detail: `hold ${holdId} changed while refunding` })
        }
        if (yield* intents.hasExternal(hold)) yield* journal.finishIntent(holdId, "resolve", done.status)
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

  const refund = (holdId: string) =>
    claimed(refundOnce(holdId), "refund.intent").pipe(Effect.withSpan("BillingSession.refund", { attributes: { holdId } }))

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
      ? Effect.asVoid(intents.recoverOpen(holdId, false))
      : Effect.flatMap(journal.getIntent(holdId, phase), (intent) =>
        intent && intent.status === "pending" ? (phase === "late" ? finishLate(intent) : finishResolution(intent)) : Effect.void)

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
      /** The first charge of this id, if it matches this one (same account, token and amount). */
      const replay = (settled: Hold, settlement: Settlement) =>
        Effect.gen(function*() {
          yield* checkExisting({ ...settled, status: "pending" }, { ...input, estimate: 0 as Quota })
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
      const postConsume: OpenInput = { ...input, estimate: 0 as Quota, postConsume: true, force: true }
      const external = (yield* intents.openTargets({ ...postConsume, expiresAt: 0 })).length > 0
      /** Settles the pending hold of an earlier (or concurrent) charge of this id. */
      const settleExisting = Effect.gen(function*() {
        const pending = yield* journal.get(input.holdId)
        if (!pending) return yield* new HoldNotFound({ holdId: input.holdId })
        if (pending.status === "settled" && pending.settlement) return yield* replay(pending, pending.settlement)
        yield* checkExisting(pending, postConsume)
        const settlement = yield* settle(pending.id, actual, metadata)
        return settlement.actual === actual ? settlement : yield* replay(pending, settlement)
      })
      if (external && existing?.status === "pending") return yield* settleExisting
      const run = external
        ? Effect.flatMap(
          open(postConsume).pipe(Effect.catchTag("HoldInFlight", () => Effect.succeed(undefined))),
          (s) => (s === undefined ? settleExisting : s.settle(actual, { metadata }))
        )
        : journal.transaction(Effect.flatMap(open(postConsume), (s) => s.settle(actual, { metadata })))
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

  const get = (holdId: string) =>
    journal.get(holdId).pipe(
      Effect.flatMap((hold) => hold ? Effect.succeed(hold) : Effect.fail(new HoldNotFound({ holdId })))
    )

  const correctRecorded = makeCorrect({ journal, registry, counters, shared })

  /**
   * A correction of a settlement left incomplete by a failed external part first
   * finishes the recorded settle (as the recovery pass would); if it is still
   * incomplete, the correction fails typed and moves nothing.
   */
  const correct = (input: Parameters<typeof correctRecorded>[0]) =>
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

  return { open, settle, refund, reapExpired, get, charge, correct, renew }
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

export type Engine = ReturnType<typeof makeEngine>
export { TokenBudgetExceeded, UnknownSource }
