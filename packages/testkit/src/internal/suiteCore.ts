/**
 * The machinery behind `FundingSourceSuite`: an adapter that presents a funding
 * source or a budget as one "subject" (something with a balance that can be
 * reserved from), the assertion helpers, and the checks shared by both suites.
 */
import type { Budget, FundingSource, Hold, Quota } from "@relay-billing/core"
import { Cause, Effect, Exit, Option, Predicate, Schema } from "effect"

// ------------------------------------------------------------------ errors

/** A conformance check found a violation of the contract. */
export class ConformanceFailure extends Schema.TaggedError<ConformanceFailure>()("ConformanceFailure", {
  check: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `[${this.check}] ${this.detail}`
  }
}

/** What running one check gave: it passed, or it does not apply to this implementation. */
export type CheckOutcome =
  | { readonly status: "passed" }
  | { readonly status: "not-applicable"; readonly reason: string }

export const passed: CheckOutcome = { status: "passed" }
export const notApplicable = (reason: string): CheckOutcome => ({ status: "not-applicable", reason })

// ------------------------------------------------------------------ ids

let sequence = 0
const runTag = Math.random().toString(36).slice(2, 7)

/**
 * A fresh id, unique in this process and unlikely to collide across processes,
 * so that harnesses backed by a shared database stay isolated.
 */
export const freshId = (label: string): string => `${label}-${runTag}-${(++sequence).toString(36)}`

// ------------------------------------------------------------------ rendering

export const render = (value: unknown): string => {
  if (value instanceof Error) return `${value.name}: ${value.message}`
  if (typeof value === "number" && !Number.isFinite(value)) return String(value)
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

const describeCause = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.findErrorOption(cause)
  if (Option.isSome(error)) return `failed with ${render(error.value)}`
  if (Cause.hasInterruptsOnly(cause)) return "was interrupted"
  return `died: ${Cause.pretty(cause)}`
}

// ------------------------------------------------------------------ assertions

/** The context a check runs in: its id, for the failures it reports. */
export interface CheckContext {
  readonly id: string
}

export const fail = (ctx: CheckContext, detail: string): Effect.Effect<never, ConformanceFailure> =>
  Effect.fail(new ConformanceFailure({ check: ctx.id, detail }))

export const ensure = (
  ctx: CheckContext,
  condition: boolean,
  detail: string
): Effect.Effect<void, ConformanceFailure> => condition ? Effect.void : fail(ctx, detail)

export const expectEqual = (
  ctx: CheckContext,
  what: string,
  actual: unknown,
  expected: unknown
): Effect.Effect<void, ConformanceFailure> =>
  actual === expected || (Number.isNaN(actual) && Number.isNaN(expected))
    ? Effect.void
    : fail(ctx, `${what}: expected ${render(expected)}, got ${render(actual)}`)

/**
 * Runs one operation the check expects to succeed; a failure or defect becomes a
 * `ConformanceFailure` that says which step broke.
 */
export const step = <A>(
  ctx: CheckContext,
  what: string,
  effect: Effect.Effect<A, unknown>
): Effect.Effect<A, ConformanceFailure> =>
  Effect.exit(effect).pipe(
    Effect.flatMap((exit) =>
      Exit.isSuccess(exit)
        ? Effect.succeed(exit.value)
        : fail(ctx, `${what}: expected to succeed, but it ${describeCause(exit.cause)}`)
    )
  )

/** Runs one operation the check expects to fail with a typed error, and returns the error. */
export const expectFailure = (
  ctx: CheckContext,
  what: string,
  effect: Effect.Effect<unknown, unknown>
): Effect.Effect<unknown, ConformanceFailure> =>
  Effect.exit(effect).pipe(
    Effect.flatMap((exit) => {
      if (Exit.isSuccess(exit)) {
        return fail(ctx, `${what}: expected a typed failure, but it succeeded with ${render(exit.value)}`)
      }
      const error = Cause.findErrorOption(exit.cause)
      if (Option.isNone(error)) {
        return fail(ctx, `${what}: expected a typed failure, but it ${describeCause(exit.cause)}`)
      }
      return Effect.succeed(error.value)
    })
  )

export const tagOf = (error: unknown): unknown => Predicate.hasProperty(error, "_tag") ? error._tag : undefined

export const field = (value: unknown, name: string): unknown =>
  Predicate.hasProperty(value, name) ? value[name] : undefined

export const expectTag = (
  ctx: CheckContext,
  what: string,
  error: unknown,
  tag: string
): Effect.Effect<void, ConformanceFailure> =>
  tagOf(error) === tag ? Effect.void : fail(ctx, `${what}: expected a ${tag} error, got ${render(error)}`)

// ------------------------------------------------------------------ subjects

/** The shortfall error a subject fails with when it cannot cover an amount. */
export interface Shortfall {
  readonly tag: "InsufficientFunds" | "TokenBudgetExceeded"
  readonly code: "insufficient_user_quota" | "pre_consume_token_quota_failed"
  /** The error's field holding what is left (`available` / `remaining`). */
  readonly leftField: "available" | "remaining"
}

/**
 * A funding source or a budget seen uniformly: something with a per-subject
 * balance (`level`) that can be reserved from, settled and refunded.
 */
export interface Subject {
  readonly kind: Hold.PartKind
  /** "account" or "token", for messages. */
  readonly noun: string
  /** "balance" or "remaining", for messages. */
  readonly levelName: string
  readonly sourceId: string
  readonly shortfall: Shortfall
  /** Creates a subject with a positive balance `amount` (a limited budget for budgets). */
  readonly open: (subjectId: string, amount: number) => Effect.Effect<void, unknown>
  /** The spendable balance (funding) or remaining budget of a subject. */
  readonly level: (subjectId: string) => Effect.Effect<number, unknown>
  /** The amount the engine asks the source to reserve for an estimate of `requested`. */
  readonly reservationFor: (requested: number) => number
  readonly reserve: (
    holdId: string,
    subjectId: string,
    amount: number
  ) => Effect.Effect<FundingSource.Reservation, unknown>
  readonly settle: (
    holdId: string,
    subjectId: string,
    reservation: FundingSource.Reservation,
    actual: number
  ) => Effect.Effect<FundingSource.PartResult, unknown>
  readonly refund: (
    holdId: string,
    subjectId: string,
    reservation: FundingSource.Reservation,
    reason?: FundingSource.RefundRequest["reason"]
  ) => Effect.Effect<void, unknown>
  /** The target's optional `correct` (a correction of a settled part), when it has one. */
  readonly correct:
    | ((
      holdId: string,
      subjectId: string,
      reservation: FundingSource.Reservation,
      input: {
        readonly correctionId: string
        readonly charged: number
        readonly corrected: number
        readonly amount: number
      }
    ) => Effect.Effect<FundingSource.CorrectResult, unknown>)
    | undefined
  /** The target's optional `lateSettle` (a late charge of an expired part, billing-semantics §6). */
  readonly lateSettle:
    | ((
      holdId: string,
      subjectId: string,
      reservation: FundingSource.Reservation,
      amount: number
    ) => Effect.Effect<FundingSource.PartResult, unknown>)
    | undefined
}

const metadata = { suite: "@relay-billing/testkit" }

const partOf = (
  kind: Hold.PartKind,
  sourceId: string,
  subjectId: string,
  reservation: FundingSource.Reservation
): Hold.HoldPart => ({
  kind,
  sourceId,
  subjectId,
  amount: reservation.amount as Quota.Quota,
  ...(reservation.ref !== undefined ? { ref: reservation.ref } : {})
})

/** The common shape of `FundingSource` and `Budget` the subject adapter needs. */
type Target = Pick<FundingSource.FundingSource, "id" | "settle" | "refund" | "correct" | "lateSettle"> & {
  readonly reserve: (request: FundingSource.ReserveRequest) => Effect.Effect<FundingSource.Reservation, unknown>
}

export const makeSubject = (options: {
  readonly kind: Hold.PartKind
  readonly target: Target | Budget.Budget
  readonly open: Subject["open"]
  readonly level: Subject["level"]
  readonly reservationFor: Subject["reservationFor"]
  readonly accountOf: (subjectId: string) => string
}): Subject => {
  const { accountOf, kind } = options
  const target = options.target as Target
  return {
    kind,
    noun: kind === "funding" ? "account" : "token",
    levelName: kind === "funding" ? "balance" : "remaining budget",
    sourceId: target.id,
    shortfall: kind === "funding"
      ? { tag: "InsufficientFunds", code: "insufficient_user_quota", leftField: "available" }
      : { tag: "TokenBudgetExceeded", code: "pre_consume_token_quota_failed", leftField: "remaining" },
    open: options.open,
    level: options.level,
    reservationFor: options.reservationFor,
    reserve: (holdId, subjectId, amount) =>
      Effect.suspend(() =>
        target.reserve({ holdId, accountId: accountOf(subjectId), subjectId, amount: amount as Quota.Quota, metadata })
      ),
    settle: (holdId, subjectId, reservation, actual) =>
      Effect.suspend(() =>
        target.settle({
          holdId,
          accountId: accountOf(subjectId),
          part: partOf(kind, target.id, subjectId, reservation),
          actual: actual as Quota.Quota
        })
      ),
    refund: (holdId, subjectId, reservation, reason = "refund") =>
      Effect.suspend(() =>
        target.refund({
          holdId,
          accountId: accountOf(subjectId),
          part: partOf(kind, target.id, subjectId, reservation),
          reason
        })
      ),
    correct: target.correct === undefined ?
      undefined :
      (holdId, subjectId, reservation, input) =>
        Effect.suspend(() =>
          target.correct!({
            holdId,
            correctionId: input.correctionId,
            accountId: accountOf(subjectId),
            part: partOf(kind, target.id, subjectId, reservation),
            charged: input.charged,
            corrected: input.corrected,
            amount: input.amount as Quota.Quota
          })
        ),
    lateSettle: target.lateSettle === undefined ?
      undefined :
      (holdId, subjectId, reservation, amount) =>
        Effect.suspend(() =>
          target.lateSettle!({
            holdId,
            accountId: accountOf(subjectId),
            part: partOf(kind, target.id, subjectId, reservation),
            amount: amount as Quota.Quota
          })
        )
  }
}

// ------------------------------------------------------------------ numbers

/** Opening balance of most checks. */
export const FUND = 100_000
/** The estimate P reserved by most checks. */
export const ESTIMATE = 30_000
/** An actual cost below the estimate. */
export const BELOW = 12_000
/** An actual cost above the estimate (still covered by FUND). */
export const ABOVE = 45_000
/** Opening balance of the shortfall checks. */
export const SMALL = 10_000

/** Options of the concurrency check. */
export interface ConcurrencyOptions {
  /** How many reserves run in parallel (default 20). */
  readonly attempts?: number
  /** How many of them the balance affords (default 7, must be < attempts). */
  readonly affordable?: number
}

// ------------------------------------------------------------------ shared checks

type Check = (ctx: CheckContext, s: Subject) => Effect.Effect<CheckOutcome, unknown>

const opened = (ctx: CheckContext, s: Subject, amount: number, label = "s") =>
  Effect.gen(function*() {
    const subjectId = freshId(`${ctx.id}-${label}`)
    yield* step(ctx, `opening a ${s.noun} with ${amount}`, s.open(subjectId, amount))
    return subjectId
  })

const levelOf = (ctx: CheckContext, s: Subject, subjectId: string, when: string) =>
  step(ctx, `reading the ${s.levelName} ${when}`, s.level(subjectId))

/** Opens a subject with FUND and reserves ESTIMATE on it. */
const reservedFixture = (ctx: CheckContext, s: Subject) =>
  Effect.gen(function*() {
    const subjectId = yield* opened(ctx, s, FUND)
    const holdId = freshId(`${ctx.id}-hold`)
    const amount = s.reservationFor(ESTIMATE)
    const reservation = yield* step(
      ctx,
      `reserve ${amount} on a ${s.noun} holding ${FUND}`,
      s.reserve(holdId, subjectId, amount)
    )
    yield* expectEqual(ctx, `reservation.amount for reserve ${amount}`, reservation.amount, amount)
    const afterReserve = yield* levelOf(ctx, s, subjectId, "after reserve")
    yield* expectEqual(ctx, `${s.levelName} after reserving ${amount} from ${FUND}`, afterReserve, FUND - amount)
    return { subjectId, holdId, amount, reservation }
  })

const checkResult = (
  ctx: CheckContext,
  s: Subject,
  subjectId: string,
  result: FundingSource.PartResult,
  actual: number
) =>
  Effect.gen(function*() {
    yield* expectEqual(ctx, `settle(${actual}).charged`, result.charged, actual)
    yield* expectEqual(ctx, `settle(${actual}).unbilled (the ${s.noun} could afford it)`, result.unbilled, 0)
    const level = yield* levelOf(ctx, s, subjectId, "after settle")
    if (result.balanceAfter !== undefined) {
      yield* expectEqual(
        ctx,
        `settle(${actual}).balanceAfter vs the ${s.levelName} read after it`,
        result.balanceAfter,
        level
      )
    }
    return level
  })

const settleTo = (actual: (amount: number) => number, what: string): Check => (ctx, s) =>
  Effect.gen(function*() {
    const { amount, holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
    const a = actual(amount)
    const result = yield* step(
      ctx,
      `settle(${a}) of a reservation of ${amount} (${what})`,
      s.settle(holdId, subjectId, reservation, a)
    )
    const level = yield* checkResult(ctx, s, subjectId, result, a)
    yield* expectEqual(
      ctx,
      `${s.levelName} after reserve ${amount} + settle ${a} from ${FUND} (net charge must be exactly ${a})`,
      level,
      FUND - a
    )
    return passed
  })

/**
 * A correction of a settled part (optional `correct`, billing-semantics §4.4):
 * settle BELOW, give back part of it, repeat the same key (nothing moves, the
 * same answer), then give back the rest under another key.
 */
const correctCheck: Check = (ctx, s) =>
  Effect.gen(function*() {
    const correct = s.correct
    if (correct === undefined) {
      return notApplicable(`the ${s.kind === "funding" ? "source" : "budget"} does not define correct`)
    }
    const { holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
    yield* step(ctx, `settle(${BELOW})`, s.settle(holdId, subjectId, reservation, BELOW))
    const part = Math.floor(BELOW / 3)
    const first = yield* step(
      ctx,
      `correct ${part} of a charge of ${BELOW}`,
      correct(holdId, subjectId, reservation, { correctionId: "c-1", charged: BELOW, corrected: 0, amount: part })
    )
    yield* expectEqual(ctx, `correct(${part}).corrected`, first.corrected, part)
    const level = yield* levelOf(ctx, s, subjectId, "after the correction")
    yield* expectEqual(
      ctx,
      `${s.levelName} after settle ${BELOW} and a correction of ${part}`,
      level,
      FUND - BELOW + part
    )
    if (first.balanceAfter !== undefined) {
      yield* expectEqual(
        ctx,
        `correct(${part}).balanceAfter vs the ${s.levelName} read after it`,
        first.balanceAfter,
        level
      )
    }
    const again = yield* step(
      ctx,
      "the same correction again (same hold id and correction id)",
      correct(holdId, subjectId, reservation, { correctionId: "c-1", charged: BELOW, corrected: 0, amount: part })
    )
    yield* expectEqual(ctx, "a repeated correction's corrected (the first answer)", again.corrected, part)
    yield* expectEqual(
      ctx,
      `${s.levelName} after repeating a correction (must not move)`,
      yield* levelOf(ctx, s, subjectId, "after the repeat"),
      level
    )
    const rest = BELOW - part
    const second = yield* step(
      ctx,
      `correct the remaining ${rest} under another correction id`,
      correct(holdId, subjectId, reservation, { correctionId: "c-2", charged: BELOW, corrected: part, amount: rest })
    )
    yield* expectEqual(ctx, `correct(${rest}).corrected`, second.corrected, rest)
    yield* expectEqual(
      ctx,
      `${s.levelName} after correcting the whole charge`,
      yield* levelOf(ctx, s, subjectId, "at the end"),
      FUND
    )
    return passed
  })

/**
 * A late charge (optional `lateSettle`, billing-semantics §6): reserve, give
 * the reservation back as the recovery pass does (reason `expire`), then
 * charge ABOVE late: the level drops by exactly ABOVE (no reservation
 * condition: the work was delivered), the answer says so; a repeat for the
 * same hold moves nothing and answers the same.
 */
const lateSettleCheck: Check = (ctx, s) =>
  Effect.gen(function*() {
    const late = s.lateSettle
    if (late === undefined) {
      return notApplicable(`the ${s.kind === "funding" ? "source" : "budget"} does not define lateSettle`)
    }
    const { amount, holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
    yield* step(ctx, `refund ${amount} (reason expire)`, s.refund(holdId, subjectId, reservation, "expire"))
    yield* expectEqual(
      ctx,
      `${s.levelName} after the expiry`,
      yield* levelOf(ctx, s, subjectId, "after the expiry"),
      FUND
    )
    const first = yield* step(ctx, `lateSettle(${ABOVE}) after the expiry`, late(holdId, subjectId, reservation, ABOVE))
    yield* expectEqual(ctx, `lateSettle(${ABOVE}).charged`, first.charged, ABOVE)
    yield* expectEqual(ctx, `lateSettle(${ABOVE}).unbilled (the ${s.noun} could afford it)`, first.unbilled, 0)
    const level = yield* levelOf(ctx, s, subjectId, "after the late charge")
    yield* expectEqual(ctx, `${s.levelName} after a late charge of ${ABOVE} from ${FUND}`, level, FUND - ABOVE)
    if (first.balanceAfter !== undefined) {
      yield* expectEqual(
        ctx,
        `lateSettle(${ABOVE}).balanceAfter vs the ${s.levelName} read after it`,
        first.balanceAfter,
        level
      )
    }
    const again = yield* step(
      ctx,
      "the same late charge again (same hold id)",
      late(holdId, subjectId, reservation, ABOVE)
    )
    yield* expectEqual(ctx, "a repeated late charge's charged (the first answer)", again.charged, ABOVE)
    yield* expectEqual(
      ctx,
      `${s.levelName} after repeating a late charge (must not move)`,
      yield* levelOf(ctx, s, subjectId, "after the repeat"),
      level
    )
    return passed
  })

export const sharedChecks = {
  "correct": correctCheck,
  "late-settle": lateSettleCheck,
  "reserve.exact": (ctx, s) =>
    Effect.gen(function*() {
      const subjectId = yield* opened(ctx, s, FUND)
      const before = yield* levelOf(ctx, s, subjectId, "before reserve")
      yield* expectEqual(ctx, `${s.levelName} of a ${s.noun} opened with ${FUND}`, before, FUND)
      for (const requested of [ESTIMATE, 1, 777]) {
        const amount = s.reservationFor(requested)
        const prior = yield* levelOf(ctx, s, subjectId, `before reserving ${amount}`)
        const reservation = yield* step(
          ctx,
          `reserve ${amount}`,
          s.reserve(freshId(`${ctx.id}-hold`), subjectId, amount)
        )
        yield* expectEqual(
          ctx,
          `reservation.amount for reserve ${amount} (requested ${requested})`,
          reservation.amount,
          amount
        )
        const after = yield* levelOf(ctx, s, subjectId, `after reserving ${amount}`)
        yield* expectEqual(ctx, `${s.levelName} drop after reserve ${amount}`, prior - after, amount)
      }
      return passed
    }),

  "reserve.idempotent": (ctx, s) =>
    Effect.gen(function*() {
      const { amount, holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
      const again = yield* step(ctx, `a second reserve of the same hold id`, s.reserve(holdId, subjectId, amount))
      yield* expectEqual(ctx, "amount of the repeated reservation", again.amount, reservation.amount)
      yield* expectEqual(ctx, "ref of the repeated reservation", again.ref, reservation.ref)
      const after = yield* levelOf(ctx, s, subjectId, "after the repeated reserve")
      yield* expectEqual(
        ctx,
        `${s.levelName} after reserving the same hold twice (must be debited once)`,
        after,
        FUND - amount
      )
      return passed
    }),

  "reserve.insufficient": (ctx, s) =>
    Effect.gen(function*() {
      const subjectId = yield* opened(ctx, s, SMALL)
      const amount = s.reservationFor(SMALL + 1)
      const holdId = freshId(`${ctx.id}-hold`)
      const error = yield* expectFailure(
        ctx,
        `reserve ${amount} on a ${s.noun} holding ${SMALL}`,
        s.reserve(holdId, subjectId, amount)
      )
      yield* expectTag(ctx, `reserve ${amount} over a ${s.levelName} of ${SMALL}`, error, s.shortfall.tag)
      yield* expectEqual(ctx, `${s.shortfall.tag}.code`, field(error, "code"), s.shortfall.code)
      yield* expectEqual(ctx, `${s.shortfall.tag}.required`, field(error, "required"), amount)
      const left = field(error, s.shortfall.leftField)
      yield* ensure(
        ctx,
        typeof left === "number" && left < amount,
        `${s.shortfall.tag}.${s.shortfall.leftField} must be a number below required ${amount}, got ${render(left)}`
      )
      const after = yield* levelOf(ctx, s, subjectId, "after the failed reserve")
      yield* expectEqual(ctx, `${s.levelName} after a failed reserve (must not change)`, after, SMALL)
      // Nothing was reserved, so a refund of that hold id must give nothing back.
      yield* Effect.exit(s.refund(holdId, subjectId, { amount }))
      const afterRefund = yield* levelOf(ctx, s, subjectId, "after refunding the failed hold")
      yield* expectEqual(ctx, `${s.levelName} after refunding a hold whose reserve failed`, afterRefund, SMALL)
      return passed
    }),

  "reserve.entire-balance": (ctx, s) =>
    Effect.gen(function*() {
      const subjectId = yield* opened(ctx, s, SMALL)
      const amount = s.reservationFor(SMALL)
      const reservation = yield* step(
        ctx,
        `reserve ${amount} on a ${s.noun} holding exactly ${SMALL}`,
        s.reserve(freshId(`${ctx.id}-hold`), subjectId, amount)
      )
      yield* expectEqual(ctx, "reservation.amount", reservation.amount, amount)
      const after = yield* levelOf(ctx, s, subjectId, "after reserving everything")
      yield* expectEqual(ctx, `${s.levelName} after reserving all of it`, after, SMALL - amount)
      return passed
    }),

  "reserve.after-refund": (ctx, s) =>
    Effect.gen(function*() {
      const { amount, holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
      yield* step(ctx, "refund", s.refund(holdId, subjectId, reservation))
      const error = yield* expectFailure(ctx, "reserve of a refunded hold id", s.reserve(holdId, subjectId, amount))
      yield* expectTag(ctx, "reserve of a refunded hold id", error, "HoldResolved")
      const after = yield* levelOf(ctx, s, subjectId, "after reserving a refunded hold id")
      yield* expectEqual(ctx, `${s.levelName} after reserve of a refunded hold id (must not debit again)`, after, FUND)
      return passed
    }),

  "reserve.after-settle": (ctx, s) =>
    Effect.gen(function*() {
      const { amount, holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
      yield* step(ctx, `settle(${BELOW})`, s.settle(holdId, subjectId, reservation, BELOW))
      const exit = yield* Effect.exit(s.reserve(holdId, subjectId, amount))
      if (Exit.isFailure(exit)) {
        const error = Cause.findErrorOption(exit.cause)
        yield* ensure(
          ctx,
          Option.isSome(error) && tagOf(error.value) === "HoldResolved",
          `reserve of a settled hold id may return the reservation or fail with HoldResolved, but it ${
            describeCause(exit.cause)
          }`
        )
      } else {
        yield* expectEqual(
          ctx,
          "amount returned by reserve of a settled hold id",
          exit.value.amount,
          reservation.amount
        )
      }
      const after = yield* levelOf(ctx, s, subjectId, "after reserving a settled hold id")
      yield* expectEqual(
        ctx,
        `${s.levelName} after reserve of a settled hold id (must not debit again)`,
        after,
        FUND - BELOW
      )
      return passed
    }),

  "settle.below-reservation": settleTo(() => BELOW, "actual below the reservation: the difference comes back"),
  "settle.above-reservation": settleTo(() => ABOVE, "actual above the reservation: the extra is charged"),
  "settle.equal-reservation": settleTo((amount) => amount, "actual equal to the reservation: nothing moves"),

  "settle.idempotent": (ctx, s) =>
    Effect.gen(function*() {
      const { holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
      const first = yield* step(ctx, `settle(${BELOW})`, s.settle(holdId, subjectId, reservation, BELOW))
      const level = yield* checkResult(ctx, s, subjectId, first, BELOW)
      yield* expectEqual(ctx, `${s.levelName} after settle(${BELOW})`, level, FUND - BELOW)
      for (const actual of [BELOW, ABOVE]) {
        const again = yield* step(
          ctx,
          `a repeated settle(${actual}) of the settled hold`,
          s.settle(holdId, subjectId, reservation, actual)
        )
        yield* expectEqual(
          ctx,
          `repeated settle(${actual}).charged (must return the first result)`,
          again.charged,
          first.charged
        )
        yield* expectEqual(
          ctx,
          `repeated settle(${actual}).unbilled (must return the first result)`,
          again.unbilled,
          first.unbilled
        )
        yield* expectEqual(
          ctx,
          `repeated settle(${actual}).balanceAfter (must return the first result)`,
          again.balanceAfter,
          first.balanceAfter
        )
        const after = yield* levelOf(ctx, s, subjectId, `after the repeated settle(${actual})`)
        yield* expectEqual(
          ctx,
          `${s.levelName} after a repeated settle(${actual}) (must charge once)`,
          after,
          FUND - BELOW
        )
      }
      return passed
    }),

  "settle.after-refund": (ctx, s) =>
    Effect.gen(function*() {
      const { holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
      yield* step(ctx, "refund", s.refund(holdId, subjectId, reservation))
      const error = yield* expectFailure(
        ctx,
        `settle(${BELOW}) after a refund`,
        s.settle(holdId, subjectId, reservation, BELOW)
      )
      yield* expectTag(ctx, "settle after a refund", error, "HoldResolved")
      yield* expectEqual(ctx, "HoldResolved.holdId", field(error, "holdId"), holdId)
      const after = yield* levelOf(ctx, s, subjectId, "after settle of a refunded hold")
      yield* expectEqual(ctx, `${s.levelName} after settle of a refunded hold (must not move)`, after, FUND)
      return passed
    }),

  "settle.unknown-hold": (ctx, s) =>
    Effect.gen(function*() {
      const subjectId = yield* opened(ctx, s, FUND)
      const amount = s.reservationFor(ESTIMATE)
      // The outcome (a typed failure or a no-op) is up to the source; moving money is not.
      yield* Effect.exit(s.settle(freshId(`${ctx.id}-never`), subjectId, { amount }, ABOVE))
      const after = yield* levelOf(ctx, s, subjectId, "after settling a hold that was never reserved")
      yield* expectEqual(
        ctx,
        `${s.levelName} after settling a hold that was never reserved (must not move)`,
        after,
        FUND
      )
      return passed
    }),

  "refund.exact": (ctx, s) =>
    Effect.gen(function*() {
      const { holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
      yield* step(ctx, "refund", s.refund(holdId, subjectId, reservation))
      const after = yield* levelOf(ctx, s, subjectId, "after refund")
      yield* expectEqual(ctx, `${s.levelName} after reserve + refund (must be exactly as before)`, after, FUND)
      return passed
    }),

  "refund.idempotent": (ctx, s) =>
    Effect.gen(function*() {
      const { holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
      yield* step(ctx, "refund", s.refund(holdId, subjectId, reservation))
      yield* step(ctx, "a second refund of the same hold", s.refund(holdId, subjectId, reservation))
      const after = yield* levelOf(ctx, s, subjectId, "after two refunds")
      yield* expectEqual(ctx, `${s.levelName} after refunding the same hold twice (must credit once)`, after, FUND)
      return passed
    }),

  "refund.after-settle": (ctx, s) =>
    Effect.gen(function*() {
      const { holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
      yield* step(ctx, `settle(${BELOW})`, s.settle(holdId, subjectId, reservation, BELOW))
      yield* step(ctx, "refund after settle", s.refund(holdId, subjectId, reservation))
      const after = yield* levelOf(ctx, s, subjectId, "after refund of a settled hold")
      yield* expectEqual(
        ctx,
        `${s.levelName} after settle(${BELOW}) + refund (the refund must be a no-op)`,
        after,
        FUND - BELOW
      )
      return passed
    }),

  "refund.release": (ctx, s) =>
    Effect.gen(function*() {
      const { amount, holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
      yield* step(
        ctx,
        "refund with reason release (the open failed)",
        s.refund(holdId, subjectId, reservation, "release")
      )
      yield* expectEqual(
        ctx,
        `${s.levelName} after a release`,
        yield* levelOf(ctx, s, subjectId, "after release"),
        FUND
      )
      yield* step(ctx, "a repeated release", s.refund(holdId, subjectId, reservation, "release"))
      yield* expectEqual(
        ctx,
        `${s.levelName} after a repeated release (must credit once)`,
        yield* levelOf(ctx, s, subjectId, "after the repeated release"),
        FUND
      )
      // A released hold id is forgotten: reserving it again is a fresh reservation.
      const again = yield* step(ctx, "reserve of a released hold id", s.reserve(holdId, subjectId, amount))
      yield* expectEqual(ctx, "reservation.amount of a released hold id reserved again", again.amount, amount)
      yield* expectEqual(
        ctx,
        `${s.levelName} after reserving a released hold id again (a fresh debit)`,
        yield* levelOf(ctx, s, subjectId, "after reserving again"),
        FUND - amount
      )
      yield* step(ctx, "refund", s.refund(holdId, subjectId, again))
      yield* expectEqual(
        ctx,
        `${s.levelName} after the final refund`,
        yield* levelOf(ctx, s, subjectId, "after refund"),
        FUND
      )
      return passed
    }),

  "refund.unknown-hold": (ctx, s) =>
    Effect.gen(function*() {
      const subjectId = yield* opened(ctx, s, FUND)
      const amount = s.reservationFor(ESTIMATE)
      // A typed failure or a no-op are both fine; crediting money that was never reserved is not.
      yield* Effect.exit(s.refund(freshId(`${ctx.id}-never`), subjectId, { amount }))
      const after = yield* levelOf(ctx, s, subjectId, "after refunding a hold that was never reserved")
      yield* expectEqual(
        ctx,
        `${s.levelName} after refunding a hold that was never reserved (must not move)`,
        after,
        FUND
      )
      return passed
    })
} satisfies Record<string, Check>

/** Concurrency checks, given the suite options. */
export const concurrencyChecks = (options: ConcurrencyOptions = {}) => {
  const attempts = options.attempts ?? 20
  const affordable = options.affordable ?? 7
  return {
    "concurrency.reserve": (ctx, s) =>
      Effect.gen(function*() {
        yield* ensure(
          ctx,
          affordable >= 1 && affordable < attempts,
          `bad options: affordable ${affordable}, attempts ${attempts}`
        )
        const amount = s.reservationFor(1_000)
        const funds = affordable * amount + (amount - 1)
        const subjectId = yield* opened(ctx, s, funds)
        const observed: Array<number> = []
        const results = yield* Effect.all(
          Array.from({ length: attempts }, (_, i) =>
            s.reserve(freshId(`${ctx.id}-hold${i}`), subjectId, amount).pipe(
              Effect.exit,
              Effect.tap(() => s.level(subjectId).pipe(Effect.tap((level) => Effect.sync(() => observed.push(level)))))
            )),
          { concurrency: "unbounded" }
        )
        const successes = results.filter(Exit.isSuccess).length
        for (const exit of results) {
          if (Exit.isFailure(exit)) {
            const error = Cause.findErrorOption(exit.cause)
            yield* ensure(
              ctx,
              Option.isSome(error) && tagOf(error.value) === s.shortfall.tag,
              `a concurrent reserve that could not be afforded must fail with ${s.shortfall.tag}, but it ${
                describeCause(exit.cause)
              }`
            )
          }
        }
        yield* expectEqual(
          ctx,
          `successful reserves among ${attempts} concurrent reserves of ${amount} against ${funds}`,
          successes,
          affordable
        )
        const after = yield* levelOf(ctx, s, subjectId, "after the concurrent reserves")
        yield* expectEqual(
          ctx,
          `${s.levelName} after ${affordable} successful reserves of ${amount}`,
          after,
          funds - affordable * amount
        )
        const lowest = Math.min(...observed)
        yield* ensure(ctx, lowest >= 0, `${s.levelName} went negative (${lowest}) during concurrent reserves`)
        return passed
      }),

    "concurrency.same-hold": (ctx, s) =>
      Effect.gen(function*() {
        const subjectId = yield* opened(ctx, s, FUND)
        const holdId = freshId(`${ctx.id}-hold`)
        const amount = s.reservationFor(ESTIMATE)
        const reservations = yield* step(
          ctx,
          `${attempts} concurrent reserves of one hold id`,
          Effect.all(Array.from({ length: attempts }, () => s.reserve(holdId, subjectId, amount)), {
            concurrency: "unbounded"
          })
        )
        for (const r of reservations) {
          yield* expectEqual(ctx, "amount of each concurrent reservation of one hold", r.amount, amount)
        }
        const after = yield* levelOf(ctx, s, subjectId, "after concurrent reserves of one hold")
        yield* expectEqual(
          ctx,
          `${s.levelName} after concurrent reserves of one hold id (must debit once)`,
          after,
          FUND - amount
        )
        return passed
      }),

    "concurrency.resolve": (ctx, s) =>
      Effect.gen(function*() {
        const { holdId, reservation, subjectId } = yield* reservedFixture(ctx, s)
        const [settled, refunds] = yield* Effect.all(
          [
            Effect.exit(s.settle(holdId, subjectId, reservation, BELOW)),
            Effect.all(Array.from({ length: 5 }, () => Effect.exit(s.refund(holdId, subjectId, reservation))), {
              concurrency: "unbounded"
            })
          ],
          { concurrency: "unbounded" }
        )
        for (const exit of refunds) {
          yield* ensure(
            ctx,
            Exit.isSuccess(exit),
            `a concurrent refund must not fail, but it ${Exit.isFailure(exit) ? describeCause(exit.cause) : ""}`
          )
        }
        const after = yield* levelOf(ctx, s, subjectId, "after a concurrent settle and refunds")
        if (Exit.isSuccess(settled)) {
          yield* expectEqual(
            ctx,
            `${s.levelName} when settle(${BELOW}) won against concurrent refunds`,
            after,
            FUND - BELOW
          )
        } else {
          const error = Cause.findErrorOption(settled.cause)
          yield* ensure(
            ctx,
            Option.isSome(error) && tagOf(error.value) === "HoldResolved",
            `a settle that lost against a refund must fail with HoldResolved, but it ${describeCause(settled.cause)}`
          )
          yield* expectEqual(
            ctx,
            `${s.levelName} when the refunds won against a concurrent settle (credited once)`,
            after,
            FUND
          )
        }
        return passed
      })
  } satisfies Record<string, Check>
}
