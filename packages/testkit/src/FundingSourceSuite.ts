/**
 * Conformance suites for funding-source and budget plugins, in the style of
 * `abstract-level/test` and `@keyv/test-suite`: a plugin author calls one
 * function in a vitest file with a factory that builds a fresh harness, and gets
 * every check of the `FundingSource` (or `Budget`) contract as its own test.
 *
 * ```ts
 * import { fundingSourceSuite } from "@relay-billing/testkit/vitest"
 *
 * fundingSourceSuite("my-source", () => makeHarness())
 * ```
 *
 * This module holds the checks and needs no test runner; the vitest
 * registration lives in the `@relay-billing/testkit/vitest` entry.
 *
 * Each test builds its own harness (inside `Effect.scoped`, so a harness may
 * acquire resources such as a database connection) and uses fresh account and
 * hold ids, so tests stay isolated even over a shared database. A check that
 * finds a violation fails with a {@link ConformanceFailure} naming the check and
 * the numbers it saw. The checks are also exported one by one ({@link checks},
 * {@link budgetChecks}) for authors who want to run or extend them by hand.
 *
 * @since 0.1.0
 */
import { FundingSource, Quota } from "@relay-billing/core"
import type { Budget } from "@relay-billing/core"
import { Effect, Exit } from "effect"
import type { Scope } from "effect"
import * as core from "./internal/suiteCore.js"

// ------------------------------------------------------------------ models

/**
 * What the funding-source suite needs from a plugin: the source, a way to fund
 * an account, and a way to read what the account can spend.
 *
 * @since 0.1.0
 * @category models
 */
export interface FundingHarness {
  /** The source under test. */
  readonly source: FundingSource.FundingSource
  /**
   * Creates the account `accountId` (a fresh id the suite has never used) and
   * credits it with `amount` (always > 0), so that `balance` reports `amount`
   * and the source can reserve up to it.
   */
  readonly fund: (accountId: string, amount: number) => Effect.Effect<void, unknown>
  /** The amount the source can still reserve for `accountId` (0 for an unknown account). */
  readonly balance: (accountId: string) => Effect.Effect<number, unknown>
}

/**
 * What the budget suite needs from a plugin: the budget, a way to create a
 * limited or unlimited subject (a token), and a way to read what it has left.
 *
 * @since 0.1.0
 * @category models
 */
export interface BudgetHarness {
  /** The budget under test. */
  readonly budget: Budget.Budget
  /**
   * Creates the subject `subjectId` (a fresh id) with `remain` (always > 0 when
   * given) or as unlimited.
   */
  readonly create: (
    subjectId: string,
    options: { readonly remain?: number; readonly unlimited?: boolean }
  ) => Effect.Effect<void, unknown>
  /** What the subject has left; unlimited subjects go down too, since usage is still counted. */
  readonly remaining: (subjectId: string) => Effect.Effect<number, unknown>
  /** The usage counted on the subject, when the budget keeps one (checked when given). */
  readonly used?: (subjectId: string) => Effect.Effect<number, unknown>
  /** The account that owns a subject, sent as `accountId` (default: the subject id). */
  readonly accountOf?: (subjectId: string) => string
}

/**
 * Builds a fresh harness for one test. It may use a `Scope` (released when the
 * test ends) to acquire resources.
 *
 * @since 0.1.0
 * @category models
 */
export type HarnessFactory<H> = () => Effect.Effect<H, unknown, Scope.Scope>

/**
 * What one check gave: `passed`, or `not-applicable` when the implementation
 * does not offer what the check looks at (for example a source without
 * `availability`); the suite reports the latter as a skipped test.
 *
 * @since 0.1.0
 * @category models
 */
export type CheckOutcome = core.CheckOutcome

/**
 * A check found a violation of the contract. `check` is the check id, `detail`
 * says what was expected and what was seen.
 *
 * @since 0.1.0
 * @category errors
 */
export const ConformanceFailure = core.ConformanceFailure

/**
 * @since 0.1.0
 * @category errors
 */
export type ConformanceFailure = core.ConformanceFailure

/**
 * The checks of the funding-source suite.
 *
 * @since 0.1.0
 * @category models
 */
export type FundingCheckId =
  | "reserve.exact"
  | "reserve.zero-estimate"
  | "reserve.minimum-reservation"
  | "reserve.idempotent"
  | "reserve.insufficient"
  | "reserve.entire-balance"
  | "reserve.unfunded"
  | "reserve.after-refund"
  | "reserve.after-settle"
  | "settle.below-reservation"
  | "settle.above-reservation"
  | "settle.equal-reservation"
  | "settle.idempotent"
  | "settle.after-refund"
  | "settle.unknown-hold"
  | "refund.exact"
  | "refund.idempotent"
  | "refund.after-settle"
  | "refund.release"
  | "refund.unknown-hold"
  | "concurrency.reserve"
  | "concurrency.same-hold"
  | "concurrency.resolve"
  | "room"
  | "availability"
  | "balance"
  | "correct"
  | "late-settle"

/**
 * The checks of the budget suite.
 *
 * @since 0.1.0
 * @category models
 */
export type BudgetCheckId =
  | "reserve.exact"
  | "reserve.idempotent"
  | "reserve.insufficient"
  | "reserve.entire-balance"
  | "reserve.unknown-subject"
  | "reserve.other-account"
  | "reserve.after-refund"
  | "reserve.after-settle"
  | "settle.below-reservation"
  | "settle.above-reservation"
  | "settle.equal-reservation"
  | "settle.idempotent"
  | "settle.after-refund"
  | "settle.unknown-hold"
  | "refund.exact"
  | "refund.idempotent"
  | "refund.after-settle"
  | "refund.release"
  | "refund.unknown-hold"
  | "unlimited.reserve-nothing"
  | "unlimited.refund"
  | "concurrency.reserve"
  | "concurrency.same-hold"
  | "concurrency.resolve"
  | "remaining"
  | "correct"
  | "late-settle"

/**
 * Groups of funding checks a source may opt out of, when it lacks the
 * capability: `concurrency` (the `concurrency.*` checks), `settle-above-reservation`
 * (a source that cannot charge more than it reserved), `zero-estimate` (a
 * source that cannot reserve for an estimate of 0).
 *
 * @since 0.1.0
 * @category models
 */
export type FundingCapability = "concurrency" | "settle-above-reservation" | "zero-estimate"

/**
 * Groups of budget checks a budget may opt out of: `concurrency`,
 * `settle-above-reservation`, and `unlimited` (a budget without unlimited
 * subjects).
 *
 * @since 0.1.0
 * @category models
 */
export type BudgetCapability = "concurrency" | "settle-above-reservation" | "unlimited"

/**
 * Size of the concurrency checks: `attempts` reserves run in parallel against a
 * balance that affords exactly `affordable` of them.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConcurrencyOptions {
  /** How many reserves run in parallel (default 20). */
  readonly attempts?: number
  /** How many of them the balance affords (default 7; must be ≥ 1 and < attempts). */
  readonly affordable?: number
}

/**
 * Options of {@link fundingSourceSuite}.
 *
 * @since 0.1.0
 * @category models
 */
export interface FundingSuiteOptions {
  /** Checks or capability groups to skip (reported as skipped tests, never silently dropped). */
  readonly skip?: ReadonlyArray<FundingCheckId | FundingCapability>
  /** Size of the concurrency checks (default: 20 attempts, 7 affordable). */
  readonly concurrency?: ConcurrencyOptions
  /** Per-test timeout in milliseconds (default: vitest's). */
  readonly timeout?: number
}

/**
 * Options of {@link budgetSuite}.
 *
 * @since 0.1.0
 * @category models
 */
export interface BudgetSuiteOptions {
  /** Checks or capability groups to skip (reported as skipped tests). */
  readonly skip?: ReadonlyArray<BudgetCheckId | BudgetCapability>
  /** Size of the concurrency checks (default: 20 attempts, 7 affordable). */
  readonly concurrency?: ConcurrencyOptions
  /** Per-test timeout in milliseconds (default: vitest's). */
  readonly timeout?: number
}

/**
 * One check: runs against a built harness and succeeds with its outcome, or
 * fails (with a {@link ConformanceFailure}, or with the error of a harness
 * operation that broke).
 *
 * @since 0.1.0
 * @category models
 */
export type Check<H, O> = (harness: H, options?: O) => Effect.Effect<CheckOutcome, unknown>

// ------------------------------------------------------------------ adapters

const fundingSubject = (h: FundingHarness): core.Subject =>
  core.makeSubject({
    kind: "funding",
    target: h.source,
    open: h.fund,
    level: h.balance,
    reservationFor: (requested) => FundingSource.reservationAmount(h.source, requested as Quota.Quota),
    accountOf: (subjectId) => subjectId
  })

const budgetSubject = (h: BudgetHarness): core.Subject =>
  core.makeSubject({
    kind: "budget",
    target: h.budget,
    open: (subjectId, amount) => h.create(subjectId, { remain: amount }),
    level: h.remaining,
    reservationFor: (requested) => requested,
    accountOf: h.accountOf ?? ((subjectId) => subjectId)
  })

type SharedCheckId = keyof typeof core.sharedChecks | keyof ReturnType<typeof core.concurrencyChecks>

/** A check shared by both suites, run against the harness seen as a subject. */
const shared = <H, O extends { readonly concurrency?: ConcurrencyOptions }>(
  id: SharedCheckId,
  toSubject: (h: H) => core.Subject
): Check<H, O> =>
(harness, options) =>
  Effect.suspend(() => {
    const all = { ...core.sharedChecks, ...core.concurrencyChecks(options?.concurrency) }
    return all[id]({ id }, toSubject(harness))
  })

// ------------------------------------------------------------------ funding-only checks

const zeroEstimate: Check<FundingHarness, FundingSuiteOptions> = (h) =>
  Effect.gen(function*() {
    const ctx = { id: "reserve.zero-estimate" }
    const s = fundingSubject(h)
    const amount = s.reservationFor(0)
    yield* core.ensure(ctx, Quota.isQuota(amount), `reservationAmount(0) must be a quota, got ${core.render(amount)}`)
    const subjectId = core.freshId("zero")
    yield* core.step(ctx, `funding an account with ${core.FUND}`, h.fund(subjectId, core.FUND))
    const level = (when: string) => core.step(ctx, `reading the balance ${when}`, h.balance(subjectId))

    const refunded = core.freshId("zero-hold")
    const r1 = yield* core.step(ctx, `reserve ${amount} for an estimate of 0`, s.reserve(refunded, subjectId, amount))
    yield* core.expectEqual(ctx, "reservation.amount for an estimate of 0", r1.amount, amount)
    yield* core.expectEqual(ctx, `balance after reserving ${amount}`, yield* level("after reserve"), core.FUND - amount)
    yield* core.step(ctx, "refund", s.refund(refunded, subjectId, r1))
    yield* core.expectEqual(
      ctx,
      `balance after refunding a reservation of ${amount} for an estimate of 0`,
      yield* level("after refund"),
      core.FUND
    )

    for (const actual of [0, 1]) {
      const holdId = core.freshId("zero-hold")
      const r = yield* core.step(ctx, `reserve ${amount} for an estimate of 0`, s.reserve(holdId, subjectId, amount))
      const before = yield* level("before settle")
      const result = yield* core.step(ctx, `settle(${actual})`, s.settle(holdId, subjectId, r, actual))
      yield* core.expectEqual(ctx, `settle(${actual}).charged`, result.charged, actual)
      yield* core.expectEqual(
        ctx,
        `balance after reserve(${amount}) + settle(${actual}) (net charge must be exactly ${actual})`,
        yield* level(`after settle(${actual})`),
        before + amount - actual
      )
    }
    return core.passed
  })

const minimumReservation: Check<FundingHarness, FundingSuiteOptions> = (h) =>
  Effect.gen(function*() {
    const ctx = { id: "reserve.minimum-reservation" }
    const minimum = h.source.minimumReservation
    if (minimum === undefined) return core.notApplicable("the source does not define minimumReservation")
    for (const requested of [0, 1, 2, core.ESTIMATE, 2 ** 40]) {
      const amount = minimum(requested as Quota.Quota)
      yield* core.ensure(
        ctx,
        Quota.isQuota(amount) && amount >= requested,
        `minimumReservation(${requested}) must be a quota ≥ ${requested}, got ${core.render(amount)}`
      )
      yield* core.expectEqual(
        ctx,
        `minimumReservation(${requested}) called twice`,
        minimum(requested as Quota.Quota),
        amount
      )
    }
    return core.passed
  })

const unfunded: Check<FundingHarness, FundingSuiteOptions> = (h) =>
  Effect.gen(function*() {
    const ctx = { id: "reserve.unfunded" }
    const s = fundingSubject(h)
    const accountId = core.freshId("unfunded")
    const amount = s.reservationFor(core.ESTIMATE)
    const before = yield* Effect.exit(h.balance(accountId))
    const error = yield* core.expectFailure(
      ctx,
      `reserve ${amount} for an account never funded`,
      s.reserve(core.freshId("hold"), accountId, amount)
    )
    yield* core.expectTag(ctx, "reserve for an account never funded", error, "InsufficientFunds")
    yield* core.expectEqual(ctx, "InsufficientFunds.code", core.field(error, "code"), "insufficient_user_quota")
    yield* core.expectEqual(ctx, "InsufficientFunds.required", core.field(error, "required"), amount)
    const after = yield* Effect.exit(h.balance(accountId))
    if (Exit.isSuccess(before) && Exit.isSuccess(after)) {
      yield* core.expectEqual(
        ctx,
        "balance of the unfunded account after the failed reserve",
        after.value,
        before.value
      )
    }
    return core.passed
  })

const availability: Check<FundingHarness, FundingSuiteOptions> = (h) =>
  Effect.gen(function*() {
    const ctx = { id: "availability" }
    const read = h.source.availability
    if (read === undefined) return core.notApplicable("the source does not define availability")
    const funded = core.freshId("available")
    yield* core.step(ctx, `funding an account with ${core.FUND}`, h.fund(funded, core.FUND))
    const a = yield* core.step(ctx, "availability of a funded account", read(funded))
    yield* core.expectEqual(ctx, "availability(funded account).available", a.available, true)
    yield* core.ensure(
      ctx,
      typeof a.allowFallback === "boolean",
      `availability(funded).allowFallback must be a boolean, got ${core.render(a.allowFallback)}`
    )
    const b = yield* core.step(ctx, "availability of an unknown account", read(core.freshId("unknown")))
    yield* core.ensure(
      ctx,
      typeof b.available === "boolean" && typeof b.allowFallback === "boolean",
      `availability(unknown account) must hold two booleans, got ${core.render(b)}`
    )
    const balance = yield* core.step(ctx, "reading the balance", h.balance(funded))
    yield* core.expectEqual(ctx, "balance after reading availability (must not move)", balance, core.FUND)
    return core.passed
  })

const balance: Check<FundingHarness, FundingSuiteOptions> = (h) =>
  Effect.gen(function*() {
    const ctx = { id: "balance" }
    const read = h.source.balance
    if (read === undefined) return core.notApplicable("the source does not define balance")
    const s = fundingSubject(h)
    const funded = core.freshId("balance")
    yield* core.step(ctx, `funding an account with ${core.FUND}`, h.fund(funded, core.FUND))
    yield* core.expectEqual(
      ctx,
      `source.balance of an account funded with ${core.FUND}`,
      yield* core.step(ctx, "source.balance", read(funded)),
      core.FUND
    )
    const amount = s.reservationFor(core.ESTIMATE)
    yield* core.step(ctx, `reserve ${amount}`, s.reserve(core.freshId("hold"), funded, amount))
    yield* core.expectEqual(
      ctx,
      `source.balance after reserving ${amount}`,
      yield* core.step(ctx, "source.balance", read(funded)),
      core.FUND - amount
    )
    const unknown = core.freshId("unknown")
    const reported = yield* core.step(ctx, "source.balance of an unknown account", read(unknown))
    yield* core.ensure(
      ctx,
      typeof reported === "number" && Number.isFinite(reported) && reported <= 0,
      `source.balance of an unknown account must be a finite number ≤ 0, got ${core.render(reported)}`
    )
    return core.passed
  })

const room: Check<FundingHarness, FundingSuiteOptions> = (h) =>
  Effect.gen(function*() {
    const ctx = { id: "room" }
    const read = h.source.room
    if (read === undefined) return core.notApplicable("the source does not define room")
    const s = fundingSubject(h)
    const funded = core.freshId("room")
    yield* core.step(ctx, `funding an account with ${core.FUND}`, h.fund(funded, core.FUND))
    yield* core.expectEqual(
      ctx,
      `source.room of an account funded with ${core.FUND}`,
      yield* core.step(ctx, "source.room", read(funded)),
      core.FUND
    )
    const amount = s.reservationFor(core.ESTIMATE)
    yield* core.step(ctx, `reserve ${amount}`, s.reserve(core.freshId("hold"), funded, amount))
    const left = yield* core.step(ctx, "source.room", read(funded))
    yield* core.expectEqual(ctx, `source.room after reserving ${amount}`, left, core.FUND - amount)
    // read only: reading it moved nothing; exact: a reservation of all of it succeeds
    yield* core.expectEqual(
      ctx,
      "balance after reading room (must not move)",
      yield* core.step(ctx, "reading the balance", h.balance(funded)),
      core.FUND - amount
    )
    yield* core.step(ctx, `reserve the whole room ${left}`, s.reserve(core.freshId("hold"), funded, left))
    yield* core.expectEqual(
      ctx,
      "source.room once all of it is reserved",
      yield* core.step(ctx, "source.room", read(funded)),
      0
    )
    yield* core.expectEqual(
      ctx,
      "source.room of an unknown account",
      yield* core.step(ctx, "source.room", read(core.freshId("unknown"))),
      0
    )
    return core.passed
  })

// ------------------------------------------------------------------ budget-only checks

const unknownSubject: Check<BudgetHarness, BudgetSuiteOptions> = (h) =>
  Effect.gen(function*() {
    const ctx = { id: "reserve.unknown-subject" }
    const s = budgetSubject(h)
    const error = yield* core.expectFailure(
      ctx,
      `reserve ${core.ESTIMATE} on a subject never created`,
      s.reserve(core.freshId("hold"), core.freshId("unknown"), core.ESTIMATE)
    )
    yield* core.expectTag(ctx, "reserve on a subject never created", error, "TokenBudgetExceeded")
    yield* core.expectEqual(
      ctx,
      "TokenBudgetExceeded.code",
      core.field(error, "code"),
      "pre_consume_token_quota_failed"
    )
    yield* core.expectEqual(ctx, "TokenBudgetExceeded.required", core.field(error, "required"), core.ESTIMATE)
    return core.passed
  })

/**
 * A subject belongs to one account (spec §2.9): reserving it for another
 * account fails with `TokenNotFound` and changes nothing, and the hold id stays
 * free for the owner.
 */
const otherAccount: Check<BudgetHarness, BudgetSuiteOptions> = (h) =>
  Effect.gen(function*() {
    const ctx = { id: "reserve.other-account" }
    const subjectId = core.freshId("owned")
    const owner = (h.accountOf ?? ((id: string) => id))(subjectId)
    const stranger = `${owner}-not-the-owner`
    yield* core.step(ctx, `creating a subject with ${core.FUND}`, h.create(subjectId, { remain: core.FUND }))
    const holdId = core.freshId("hold")
    const error = yield* core.expectFailure(
      ctx,
      `reserve ${core.ESTIMATE} on a subject of ${owner} for account ${stranger}`,
      Effect.suspend(() =>
        h.budget.reserve({ holdId, accountId: stranger, subjectId, amount: core.ESTIMATE as Quota.Quota })
      )
    )
    yield* core.expectTag(ctx, "reserve for another account", error, "TokenNotFound")
    yield* core.expectEqual(ctx, "TokenNotFound.code", core.field(error, "code"), "token_not_found")
    yield* core.expectEqual(ctx, "TokenNotFound.tokenId", core.field(error, "tokenId"), subjectId)
    yield* core.expectEqual(ctx, "TokenNotFound.accountId", core.field(error, "accountId"), stranger)
    const left = yield* core.step(ctx, "reading remaining after the refused reserve", h.remaining(subjectId))
    yield* core.expectEqual(ctx, "remaining after a reserve for another account", left, core.FUND)
    yield* core.step(
      ctx,
      `reserve ${core.ESTIMATE} with the same hold id for the owner`,
      Effect.suspend(() =>
        h.budget.reserve({ holdId, accountId: owner, subjectId, amount: core.ESTIMATE as Quota.Quota })
      )
    )
    const after = yield* core.step(ctx, "reading remaining after the owner's reserve", h.remaining(subjectId))
    yield* core.expectEqual(ctx, "remaining after the owner's reserve", after, core.FUND - core.ESTIMATE)
    return core.passed
  })

const unlimitedSubject = (ctx: core.CheckContext, h: BudgetHarness) =>
  Effect.gen(function*() {
    const subjectId = core.freshId("unlimited")
    yield* core.step(ctx, "creating an unlimited subject", h.create(subjectId, { unlimited: true }))
    const remaining = yield* core.step(ctx, "reading remaining", h.remaining(subjectId))
    const used = h.used ? yield* core.step(ctx, "reading used", h.used(subjectId)) : undefined
    return { subjectId, remaining, used }
  })

const unlimitedReserve: Check<BudgetHarness, BudgetSuiteOptions> = (h) =>
  Effect.gen(function*() {
    const ctx = { id: "unlimited.reserve-nothing" }
    const s = budgetSubject(h)
    const start = yield* unlimitedSubject(ctx, h)
    const huge = 2 ** 40
    const other = yield* core.step(
      ctx,
      `reserve ${huge} on an unlimited subject`,
      s.reserve(core.freshId("hold"), start.subjectId, huge)
    )
    yield* core.expectEqual(ctx, `reservation.amount of reserve ${huge} on an unlimited subject`, other.amount, 0)
    const holdId = core.freshId("hold")
    const r = yield* core.step(
      ctx,
      `reserve ${core.ESTIMATE} on an unlimited subject`,
      s.reserve(holdId, start.subjectId, core.ESTIMATE)
    )
    yield* core.expectEqual(ctx, "reservation.amount on an unlimited subject", r.amount, 0)
    yield* core.expectEqual(
      ctx,
      "remaining after reserving on an unlimited subject (must not move)",
      yield* core.step(ctx, "reading remaining", h.remaining(start.subjectId)),
      start.remaining
    )
    const result = yield* core.step(
      ctx,
      `settle(${core.BELOW}) on an unlimited subject`,
      s.settle(holdId, start.subjectId, r, core.BELOW)
    )
    yield* core.expectEqual(ctx, `settle(${core.BELOW}).charged on an unlimited subject`, result.charged, core.BELOW)
    yield* core.expectEqual(
      ctx,
      `remaining after settle(${core.BELOW}) on an unlimited subject (usage is still counted)`,
      yield* core.step(ctx, "reading remaining", h.remaining(start.subjectId)),
      start.remaining - core.BELOW
    )
    if (h.used && start.used !== undefined) {
      yield* core.expectEqual(
        ctx,
        `used after settle(${core.BELOW}) on an unlimited subject`,
        yield* core.step(ctx, "reading used", h.used(start.subjectId)),
        start.used + core.BELOW
      )
    }
    return core.passed
  })

const unlimitedRefund: Check<BudgetHarness, BudgetSuiteOptions> = (h) =>
  Effect.gen(function*() {
    const ctx = { id: "unlimited.refund" }
    const s = budgetSubject(h)
    const start = yield* unlimitedSubject(ctx, h)
    const holdId = core.freshId("hold")
    const r = yield* core.step(
      ctx,
      `reserve ${core.ESTIMATE} on an unlimited subject`,
      s.reserve(holdId, start.subjectId, core.ESTIMATE)
    )
    yield* core.step(ctx, "refund", s.refund(holdId, start.subjectId, r))
    yield* core.step(ctx, "a second refund", s.refund(holdId, start.subjectId, r))
    yield* core.expectEqual(
      ctx,
      "remaining after reserve + refund on an unlimited subject",
      yield* core.step(ctx, "reading remaining", h.remaining(start.subjectId)),
      start.remaining
    )
    if (h.used && start.used !== undefined) {
      yield* core.expectEqual(
        ctx,
        "used after reserve + refund on an unlimited subject",
        yield* core.step(ctx, "reading used", h.used(start.subjectId)),
        start.used
      )
    }
    return core.passed
  })

const remaining: Check<BudgetHarness, BudgetSuiteOptions> = (h, options) =>
  Effect.gen(function*() {
    const ctx = { id: "remaining" }
    const read = h.budget.remaining
    if (read === undefined) return core.notApplicable("the budget does not define remaining")
    const s = budgetSubject(h)
    const limited = core.freshId("limited")
    yield* core.step(ctx, `creating a subject with ${core.FUND}`, h.create(limited, { remain: core.FUND }))
    const a = yield* core.step(ctx, "budget.remaining of a limited subject", read(limited))
    yield* core.expectEqual(ctx, "budget.remaining(limited).unlimited", a.unlimited, false)
    yield* core.expectEqual(
      ctx,
      `budget.remaining(limited).remaining of a subject created with ${core.FUND}`,
      a.remaining,
      core.FUND
    )
    yield* core.step(ctx, `reserve ${core.ESTIMATE}`, s.reserve(core.freshId("hold"), limited, core.ESTIMATE))
    const b = yield* core.step(ctx, "budget.remaining after reserve", read(limited))
    yield* core.expectEqual(
      ctx,
      `budget.remaining(limited).remaining after reserving ${core.ESTIMATE}`,
      b.remaining,
      core.FUND - core.ESTIMATE
    )
    if (!(options?.skip ?? []).includes("unlimited")) {
      const unlimited = yield* unlimitedSubject(ctx, h)
      const c = yield* core.step(ctx, "budget.remaining of an unlimited subject", read(unlimited.subjectId))
      yield* core.expectEqual(ctx, "budget.remaining(unlimited).unlimited", c.unlimited, true)
    }
    return core.passed
  })

// ------------------------------------------------------------------ registries

/**
 * Every check of the funding-source suite, by id. Each runs against an already
 * built harness; wrap it with {@link run} to build a fresh one.
 *
 * @since 0.1.0
 * @category checks
 */
export const checks: { readonly [K in FundingCheckId]: Check<FundingHarness, FundingSuiteOptions> } = {
  "reserve.exact": shared("reserve.exact", fundingSubject),
  "reserve.zero-estimate": zeroEstimate,
  "reserve.minimum-reservation": minimumReservation,
  "reserve.idempotent": shared("reserve.idempotent", fundingSubject),
  "reserve.insufficient": shared("reserve.insufficient", fundingSubject),
  "reserve.entire-balance": shared("reserve.entire-balance", fundingSubject),
  "reserve.unfunded": unfunded,
  "reserve.after-refund": shared("reserve.after-refund", fundingSubject),
  "reserve.after-settle": shared("reserve.after-settle", fundingSubject),
  "settle.below-reservation": shared("settle.below-reservation", fundingSubject),
  "settle.above-reservation": shared("settle.above-reservation", fundingSubject),
  "settle.equal-reservation": shared("settle.equal-reservation", fundingSubject),
  "settle.idempotent": shared("settle.idempotent", fundingSubject),
  "settle.after-refund": shared("settle.after-refund", fundingSubject),
  "settle.unknown-hold": shared("settle.unknown-hold", fundingSubject),
  "refund.exact": shared("refund.exact", fundingSubject),
  "refund.idempotent": shared("refund.idempotent", fundingSubject),
  "refund.after-settle": shared("refund.after-settle", fundingSubject),
  "refund.release": shared("refund.release", fundingSubject),
  "refund.unknown-hold": shared("refund.unknown-hold", fundingSubject),
  "concurrency.reserve": shared("concurrency.reserve", fundingSubject),
  "concurrency.same-hold": shared("concurrency.same-hold", fundingSubject),
  "concurrency.resolve": shared("concurrency.resolve", fundingSubject),
  room,
  availability,
  balance,
  "correct": shared("correct", fundingSubject),
  "late-settle": shared("late-settle", fundingSubject)
}

/**
 * Every check of the budget suite, by id.
 *
 * @since 0.1.0
 * @category checks
 */
export const budgetChecks: { readonly [K in BudgetCheckId]: Check<BudgetHarness, BudgetSuiteOptions> } = {
  "reserve.exact": shared("reserve.exact", budgetSubject),
  "reserve.idempotent": shared("reserve.idempotent", budgetSubject),
  "reserve.insufficient": shared("reserve.insufficient", budgetSubject),
  "reserve.entire-balance": shared("reserve.entire-balance", budgetSubject),
  "reserve.unknown-subject": unknownSubject,
  "reserve.other-account": otherAccount,
  "reserve.after-refund": shared("reserve.after-refund", budgetSubject),
  "reserve.after-settle": shared("reserve.after-settle", budgetSubject),
  "settle.below-reservation": shared("settle.below-reservation", budgetSubject),
  "settle.above-reservation": shared("settle.above-reservation", budgetSubject),
  "settle.equal-reservation": shared("settle.equal-reservation", budgetSubject),
  "settle.idempotent": shared("settle.idempotent", budgetSubject),
  "settle.after-refund": shared("settle.after-refund", budgetSubject),
  "settle.unknown-hold": shared("settle.unknown-hold", budgetSubject),
  "refund.exact": shared("refund.exact", budgetSubject),
  "refund.idempotent": shared("refund.idempotent", budgetSubject),
  "refund.after-settle": shared("refund.after-settle", budgetSubject),
  "refund.release": shared("refund.release", budgetSubject),
  "refund.unknown-hold": shared("refund.unknown-hold", budgetSubject),
  "unlimited.reserve-nothing": unlimitedReserve,
  "unlimited.refund": unlimitedRefund,
  "concurrency.reserve": shared("concurrency.reserve", budgetSubject),
  "concurrency.same-hold": shared("concurrency.same-hold", budgetSubject),
  "concurrency.resolve": shared("concurrency.resolve", budgetSubject),
  remaining,
  "correct": shared("correct", budgetSubject),
  "late-settle": shared("late-settle", budgetSubject)
}

/**
 * What each funding check proves, used as its test title.
 *
 * @since 0.1.0
 * @category checks
 */
export const checkTitles: { readonly [K in FundingCheckId]: string } = {
  "reserve.exact":
    "reserve takes exactly the amount (minimumReservation(requested) when defined) and the balance drops by it",
  "reserve.zero-estimate":
    "an estimate of 0 reserves minimumReservation(0), which a refund gives back and settle(0) / settle(1) charge 0 / 1",
  "reserve.minimum-reservation": "minimumReservation(requested) is a deterministic quota ≥ requested",
  "reserve.idempotent":
    "reserve is idempotent by hold id: a second reserve returns the same reservation and debits nothing",
  "reserve.insufficient":
    "reserving more than the balance fails with InsufficientFunds (code insufficient_user_quota, required) and changes nothing",
  "reserve.entire-balance": "reserving exactly the whole balance succeeds and leaves 0",
  "reserve.unfunded": "reserving on an account that was never funded fails with InsufficientFunds",
  "reserve.after-refund": "reserve of a refunded hold id fails with HoldResolved and debits nothing",
  "reserve.after-settle": "reserve of a settled hold id debits nothing (same reservation or HoldResolved)",
  "settle.below-reservation": "settle with actual < reserved gives back the difference (net charge = actual)",
  "settle.above-reservation": "settle with actual > reserved charges the extra (net charge = actual)",
  "settle.equal-reservation": "settle with actual == reserved moves nothing more",
  "settle.idempotent": "settle twice (even with another actual) returns the first result and charges once",
  "settle.after-refund": "settle after refund fails with HoldResolved and moves nothing",
  "settle.unknown-hold": "settle of a hold that was never reserved charges nothing",
  "refund.exact": "refund returns exactly the reservation",
  "refund.idempotent": "refund twice credits once",
  "refund.after-settle": "refund after settle moves nothing",
  "refund.release":
    "refund with reason release (a failed open) gives the amount back once and forgets the hold id: reserving it again is a fresh debit",
  "refund.unknown-hold": "refund of a hold that was never reserved credits nothing",
  "concurrency.reserve":
    "concurrent reserves against a balance that affords exactly k: exactly k succeed, the rest fail with InsufficientFunds, the balance never goes negative",
  "concurrency.same-hold": "concurrent reserves of one hold id debit once",
  "concurrency.resolve": "a settle racing refunds of one hold resolves it exactly once",
  "room":
    "source.room reports what one reservation could take before and after a reserve, moves nothing, a reservation of all of it succeeds, and 0 for an unknown account",
  "availability": "availability of a funded account is available, with boolean fields, and moves nothing",
  "balance": "source.balance reports the spendable balance before and after a reserve, and ≤ 0 for an unknown account",
  "correct":
    "correct (when defined) gives back part of a settled charge, a repeat of (hold id, correction id) moves nothing, and the rest can be given back",
  "late-settle":
    "lateSettle (when defined) charges an expired reservation's cost afresh, exactly, and a repeat for the same hold moves nothing"
}

/**
 * What each budget check proves, used as its test title.
 *
 * @since 0.1.0
 * @category checks
 */
export const budgetCheckTitles: { readonly [K in BudgetCheckId]: string } = {
  "reserve.exact": "reserve takes exactly the amount and the remaining budget drops by it",
  "reserve.idempotent":
    "reserve is idempotent by hold id: a second reserve returns the same reservation and debits nothing",
  "reserve.insufficient":
    "reserving over the remaining budget fails with TokenBudgetExceeded (code pre_consume_token_quota_failed, required) and changes nothing",
  "reserve.entire-balance": "reserving exactly the whole remaining budget succeeds and leaves 0",
  "reserve.unknown-subject": "reserving on a subject that was never created fails with TokenBudgetExceeded",
  "reserve.other-account":
    "reserving a subject for an account that does not own it fails with TokenNotFound (code token_not_found) and changes nothing",
  "reserve.after-refund": "reserve of a refunded hold id fails with HoldResolved and debits nothing",
  "reserve.after-settle": "reserve of a settled hold id debits nothing (same reservation or HoldResolved)",
  "settle.below-reservation": "settle with actual < reserved gives back the difference (net charge = actual)",
  "settle.above-reservation": "settle with actual > reserved charges the extra (net charge = actual)",
  "settle.equal-reservation": "settle with actual == reserved moves nothing more",
  "settle.idempotent": "settle twice (even with another actual) returns the first result and charges once",
  "settle.after-refund": "settle after refund fails with HoldResolved and moves nothing",
  "settle.unknown-hold": "settle of a hold that was never reserved charges nothing",
  "refund.exact": "refund returns exactly the reservation",
  "refund.idempotent": "refund twice credits once",
  "refund.after-settle": "refund after settle moves nothing",
  "refund.release":
    "refund with reason release (a failed open) gives the amount back once and forgets the hold id: reserving it again is a fresh debit",
  "refund.unknown-hold": "refund of a hold that was never reserved credits nothing",
  "unlimited.reserve-nothing": "an unlimited subject reserves 0 for any amount and still counts usage at settle",
  "unlimited.refund": "refunding an unlimited subject's reservation moves nothing",
  "concurrency.reserve":
    "concurrent reserves against a budget that affords exactly k: exactly k succeed, the rest fail with TokenBudgetExceeded, it never goes negative",
  "concurrency.same-hold": "concurrent reserves of one hold id debit once",
  "concurrency.resolve": "a settle racing refunds of one hold resolves it exactly once",
  "remaining": "budget.remaining reports limited and unlimited subjects correctly",
  "correct":
    "correct (when defined) gives back part of a settled charge, a repeat of (hold id, correction id) moves nothing, and the rest can be given back",
  "late-settle":
    "lateSettle (when defined) charges an expired reservation's cost afresh, exactly, and a repeat for the same hold moves nothing"
}

const fundingGroups: { readonly [K in FundingCheckId]?: FundingCapability } = {
  "reserve.zero-estimate": "zero-estimate",
  "settle.above-reservation": "settle-above-reservation",
  "concurrency.reserve": "concurrency",
  "concurrency.same-hold": "concurrency",
  "concurrency.resolve": "concurrency"
}

const budgetGroups: { readonly [K in BudgetCheckId]?: BudgetCapability } = {
  "settle.above-reservation": "settle-above-reservation",
  "unlimited.reserve-nothing": "unlimited",
  "unlimited.refund": "unlimited",
  "concurrency.reserve": "concurrency",
  "concurrency.same-hold": "concurrency",
  "concurrency.resolve": "concurrency"
}

// A check is skipped when its id or its capability group is listed. (`remaining`
// drops only its unlimited half when `unlimited` is listed; see the check.)
const isSkipped = <Id extends string, Cap extends string>(
  skip: ReadonlyArray<Id | Cap> | undefined,
  id: Id,
  groups: { readonly [K in Id]?: Cap }
): boolean => {
  if (skip === undefined) return false
  const group = groups[id]
  return skip.includes(id) || (group !== undefined && skip.includes(group))
}

/**
 * The funding checks that `options.skip` turns off (by id or by capability group).
 *
 * @since 0.1.0
 * @category running
 */
export const skippedChecks = (options: Pick<FundingSuiteOptions, "skip"> = {}): ReadonlyArray<FundingCheckId> =>
  (Object.keys(checks) as Array<FundingCheckId>).filter((id) => isSkipped(options.skip, id, fundingGroups))

/**
 * The budget checks that `options.skip` turns off (by id or by capability group).
 *
 * @since 0.1.0
 * @category running
 */
export const skippedBudgetChecks = (options: Pick<BudgetSuiteOptions, "skip"> = {}): ReadonlyArray<BudgetCheckId> =>
  (Object.keys(budgetChecks) as Array<BudgetCheckId>).filter((id) => isSkipped(options.skip, id, budgetGroups))

// ------------------------------------------------------------------ running

/**
 * Runs one check against a fresh harness from `factory`, inside its own scope.
 *
 * @since 0.1.0
 * @category running
 */
export const run = <H, O>(
  factory: HarnessFactory<H>,
  check: Check<H, O>,
  options?: O
): Effect.Effect<CheckOutcome, unknown> =>
  Effect.scoped(Effect.flatMap(Effect.suspend(factory), (harness) => check(harness, options)))
