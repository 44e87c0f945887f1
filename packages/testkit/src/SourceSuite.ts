/**
 * The conformance suite of the v2 `Source` contract (a balance mover in the
 * hold's store), in the style of `abstract-level/test`: a plugin author calls
 * one function in a vitest file and gets every check as its own test.
 *
 * ```ts
 * import { sourceSuite } from "@relay-billing/testkit/vitest"
 *
 * sourceSuite({
 *   name: "vouchers",
 *   make: () => Effect.succeed({ source: Vouchers.make(), store: myStoreLayer }),
 *   seed: (harness, { accountId, amount }) => addVoucher(harness, accountId, amount)
 * })
 * ```
 *
 * The checks call `take` and `move` directly inside the store's transaction
 * (answers, modes, the shortfall error by `_tag`, no change on failure), then
 * run the source through the engine (`BillingSession` over the store's journal,
 * ledger and counters) and check that every balance change has its ledger row:
 * for the holds of a check, the source's ledger rows sum to the change of the
 * subject's balance. Each check builds its own harness and uses fresh ids.
 *
 * @since 0.4.0
 */
import { BillingSession, FundingRegistry, HoldJournal, Ledger, SqlStore } from "@relay-billing/core"
import type { AccountCounters, Quota, Source } from "@relay-billing/core"
import { Effect, Exit, Layer } from "effect"
import type { Scope } from "effect"
import { TestClock } from "effect/testing"
import * as core from "./internal/suiteCore.js"

// ------------------------------------------------------------------ models

/**
 * What the suite runs against: the source and the store it lives in.
 *
 * @since 0.4.0
 * @category models
 */
export interface SourceHarness {
  /** The source under test. */
  readonly source: Source.Source
  /**
   * The store's services (one transactional store): the journal whose
   * transactions the source's statements join, the ledger, the account
   * counters and the executor. For example `KnexBilling.layer(...)`, or
   * `InMemoryStore.make().layer()`.
   */
  readonly store: Layer.Layer<
    HoldJournal.HoldJournal | Ledger.Ledger | AccountCounters.AccountCounters | SqlStore.SqlStore,
    unknown
  >
}

/**
 * A subject to create: `accountId` is a fresh account (the store must know it
 * afterwards, e.g. for its counters); for a funding source `subjectId` equals
 * it, for a budget it is a fresh subject (a token) owned by the account.
 *
 * @since 0.4.0
 * @category models
 */
export interface Seed {
  readonly accountId: string
  readonly subjectId: string
  /** What the subject must hold (always > 0). */
  readonly amount: number
}

/**
 * The checks of the suite.
 *
 * @since 0.4.0
 * @category models
 */
export type SourceCheckId =
  | "take.exact"
  | "take.insufficient"
  | "take.entire-balance"
  | "take.up-to"
  | "take.unconditional"
  | "take.unknown-subject"
  | "take.other-account"
  | "move.charge"
  | "move.give-back"
  | "move.zero"
  | "move.beyond-balance"
  | "engine.settle"
  | "engine.refund"
  | "engine.shortfall"
  | "engine.correct"
  | "engine.expire"
  | "availability"

/**
 * The options of {@link sourceSuite}-style runners.
 *
 * @since 0.4.0
 * @category models
 */
export interface SourceSuiteOptions<H extends SourceHarness = SourceHarness> {
  /** The name of the suite (the `describe` title). */
  readonly name: string
  /**
   * Builds a fresh harness for one check (inside a `Scope`, released when the
   * check ends); it may carry whatever `seed` and `balance` need (a store handle).
   */
  readonly make: () => Effect.Effect<H, unknown, Scope.Scope>
  /** Creates a subject holding `amount` (see {@link Seed}). */
  readonly seed: (harness: H, seed: Seed) => Effect.Effect<void, unknown>
  /** What the subject holds now (default: the source's own `balance`). */
  readonly balance?: (harness: H, subjectId: string) => Effect.Effect<number, unknown>
  /** Checks to leave out. */
  readonly skip?: ReadonlyArray<SourceCheckId>
  /** Per-check timeout in milliseconds (vitest). */
  readonly timeout?: number
}

/**
 * One check.
 *
 * @since 0.4.0
 * @category models
 */
export type SourceCheck = (
  harness: SourceHarness,
  options: SourceSuiteOptions
) => Effect.Effect<core.CheckOutcome, unknown>

// ------------------------------------------------------------------ helpers

const FUND = 100_000
const P = 30_000
const BELOW = 12_000
const ABOVE = 45_000

const shortfallTag = (source: Source.Source) => source.role === "funding" ? "InsufficientFunds" : "TokenBudgetExceeded"

/** Fresh account and subject ids; for a funding source the subject is the account. */
const freshSubject = (source: Source.Source) => {
  const accountId = core.freshId("acct")
  return { accountId, subjectId: source.role === "funding" ? accountId : core.freshId("subj") }
}

/** Runs `f` with the store's services. */
const withStore = <A, E>(
  harness: SourceHarness,
  f: Effect.Effect<A, E, HoldJournal.HoldJournal | Ledger.Ledger | AccountCounters.AccountCounters | SqlStore.SqlStore>
) => Effect.provide(f, harness.store)

/** Runs `body` inside one transaction of the store, with its executor. */
const inTransaction = <A, E>(
  harness: SourceHarness,
  body: (sql: SqlStore.SqlStore["Service"]) => Effect.Effect<A, E>
) =>
  withStore(
    harness,
    Effect.gen(function*() {
      const journal = yield* HoldJournal.HoldJournal
      const sql = yield* SqlStore.SqlStore
      return yield* journal.transaction(body(sql))
    })
  )

const balanceOf = (harness: SourceHarness, options: SourceSuiteOptions, subjectId: string) => {
  if (options.balance) return options.balance(harness, subjectId)
  const read = harness.source.balance
  if (!read) {
    return Effect.fail(
      new core.ConformanceFailure({
        check: "harness",
        detail: "the source has no balance(): pass `balance` in the suite's options"
      })
    )
  }
  return withStore(
    harness,
    Effect.gen(function*() {
      const sql = yield* SqlStore.SqlStore
      return yield* read(sql, subjectId)
    })
  )
}

const seeded = (harness: SourceHarness, options: SourceSuiteOptions, ctx: core.CheckContext, amount = FUND) =>
  Effect.gen(function*() {
    const ids = freshSubject(harness.source)
    yield* core.step(ctx, `seed a subject with ${amount}`, options.seed(harness, { ...ids, amount }))
    const start = yield* core.step(ctx, "read the seeded balance", balanceOf(harness, options, ids.subjectId))
    yield* core.expectEqual(ctx, "the balance of a subject seeded with " + amount, start, amount)
    return { ...ids, start }
  })

const take = (
  harness: SourceHarness,
  who: { readonly accountId: string; readonly subjectId: string },
  amount: number,
  mode: Source.TakeMode
) =>
  inTransaction(harness, (sql) =>
    harness.source.take({
      sql,
      holdId: core.freshId("hold"),
      accountId: who.accountId,
      subjectId: who.subjectId,
      amount: amount as Quota.Quota,
      mode
    }))

const move = (
  harness: SourceHarness,
  who: { readonly accountId: string; readonly subjectId: string; readonly ref?: string | undefined },
  delta: number,
  kind: Source.MoveKind
) =>
  inTransaction(harness, (sql) =>
    harness.source.move({
      sql,
      holdId: core.freshId("hold"),
      accountId: who.accountId,
      subjectId: who.subjectId,
      ...(who.ref !== undefined ? { ref: who.ref } : {}),
      delta,
      kind
    }))

/** A funding source of the suite's own (no store) for the engine checks of a budget. */
const freeFunding = (): Source.Source => {
  const balances = new Map<string, number>()
  const at = (id: string) => balances.get(id) ?? 0
  return {
    id: "conformance-free-funding",
    role: "funding",
    take: (req) =>
      Effect.sync(() => {
        balances.set(req.subjectId, at(req.subjectId) - req.amount)
        return { amount: req.amount, balanceAfter: at(req.subjectId) }
      }),
    move: (req) =>
      Effect.sync(() => {
        balances.set(req.subjectId, at(req.subjectId) + req.delta)
        return { moved: req.delta, balanceAfter: at(req.subjectId) }
      })
  }
}

/** The engine over the store, with the source (and, for a budget, a funding source of the suite's own). */
const engineLayer = (harness: SourceHarness) => {
  const { source } = harness
  const sources = source.role === "budget" ? [source, freeFunding()] : [source]
  return BillingSession.BillingSession.layer(source.role === "budget" ? { tokenBudgetId: source.id } : {}).pipe(
    Layer.provideMerge(Layer.merge(harness.store, FundingRegistry.FundingRegistry.layer({ sources })))
  )
}

/** An open request through the source (as the funding source, or as the token budget). */
const openRequest = (
  source: Source.Source,
  who: { readonly accountId: string; readonly subjectId: string },
  estimate: number,
  extra: { readonly ttlMillis?: number } = {}
): BillingSession.OpenRequest => ({
  holdId: core.freshId("hold"),
  accountId: who.accountId,
  estimate,
  ...(source.role === "budget"
    ? { tokenId: who.subjectId, sources: ["conformance-free-funding"] }
    : { sources: [source.id] }),
  ...extra
})

/** The source's ledger rows of `holdIds` sum to the subject's balance change since `start`. */
const ledgerAgrees = (
  ctx: core.CheckContext,
  harness: SourceHarness,
  options: SourceSuiteOptions,
  subject: { readonly subjectId: string; readonly start: number },
  holdIds: ReadonlyArray<string>
) =>
  Effect.gen(function*() {
    const rows = yield* core.step(
      ctx,
      "read the ledger",
      withStore(
        harness,
        Effect.gen(function*() {
          const ledger = yield* Ledger.Ledger
          return yield* Effect.forEach(holdIds, (holdId) => ledger.entries({ holdId, sourceId: harness.source.id }))
        })
      )
    )
    const sum = rows.flat().reduce((s, e) => s + e.amount, 0)
    const now = yield* core.step(ctx, "read the balance", balanceOf(harness, options, subject.subjectId))
    yield* core.expectEqual(
      ctx,
      `the source's ledger rows of the check's holds (balance ${subject.start} → ${now})`,
      sum,
      now - subject.start
    )
    return now
  })

/** Runs an engine program under a test clock. */
const viaEngine = <A, E>(
  harness: SourceHarness,
  program: Effect.Effect<A, E, BillingSession.BillingSession>
) => program.pipe(Effect.provide(engineLayer(harness)), Effect.provide(TestClock.layer()))

// ------------------------------------------------------------------ checks

const check = (
  id: SourceCheckId,
  body: (
    ctx: core.CheckContext,
    harness: SourceHarness,
    options: SourceSuiteOptions
  ) => Effect.Effect<core.CheckOutcome | void, unknown>
): SourceCheck =>
(harness, options) => Effect.map(body({ id }, harness, options), (outcome) => outcome ?? core.passed)

/**
 * Every check of the suite, by id.
 *
 * @since 0.4.0
 * @category checks
 */
export const checks: { readonly [K in SourceCheckId]: SourceCheck } = {
  "take.exact": check("take.exact", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx)
      const taken = yield* core.step(ctx, `take ${P} (exact)`, take(h, s, P, "exact"))
      yield* core.expectEqual(ctx, "take(exact).amount", taken.amount, P)
      const now = yield* core.step(ctx, "read the balance", balanceOf(h, o, s.subjectId))
      yield* core.expectEqual(ctx, "the balance after take(exact)", now, FUND - P)
      yield* core.expectEqual(ctx, "take(exact).balanceAfter", taken.balanceAfter, now)
    })),
  "take.insufficient": check("take.insufficient", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx, P - 1)
      const error = yield* core.expectFailure(ctx, `take ${P} (exact) from ${P - 1}`, take(h, s, P, "exact"))
      yield* core.expectTag(ctx, "the shortfall", error, shortfallTag(h.source))
      const now = yield* core.step(ctx, "read the balance", balanceOf(h, o, s.subjectId))
      yield* core.expectEqual(ctx, "the balance after a failed take (must not move)", now, P - 1)
    })),
  "take.entire-balance": check("take.entire-balance", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx, P)
      const taken = yield* core.step(ctx, `take the whole ${P}`, take(h, s, P, "exact"))
      yield* core.expectEqual(ctx, "take.amount", taken.amount, P)
      yield* core.expectEqual(
        ctx,
        "the balance after taking all of it",
        yield* core.step(ctx, "read", balanceOf(h, o, s.subjectId)),
        0
      )
    })),
  "take.up-to": check("take.up-to", (ctx, h, o) =>
    Effect.gen(function*() {
      if (h.source.role !== "funding") return core.notApplicable("split funding (upTo) applies to funding sources")
      const s = yield* seeded(h, o, ctx, P - 1)
      const taken = yield* core.step(ctx, `take up to ${P} from ${P - 1}`, take(h, s, P, "upTo"))
      yield* core.ensure(
        ctx,
        taken.amount > 0 && taken.amount <= P && Number.isSafeInteger(taken.amount),
        `take(upTo ${P}).amount must be in (0, ${P}], got ${taken.amount}`
      )
      const now = yield* core.step(ctx, "read the balance", balanceOf(h, o, s.subjectId))
      yield* core.expectEqual(ctx, "the balance after take(upTo)", now, P - 1 - taken.amount)
      yield* core.expectEqual(ctx, "take(upTo).balanceAfter", taken.balanceAfter, now)
      if (now <= 0) {
        const error = yield* core.expectFailure(ctx, "take(upTo) from an empty subject", take(h, s, P, "upTo"))
        yield* core.expectTag(ctx, "the shortfall of an empty subject", error, shortfallTag(h.source))
        yield* core.expectEqual(
          ctx,
          "the balance after a failed take (must not move)",
          yield* core.step(ctx, "read", balanceOf(h, o, s.subjectId)),
          now
        )
      }
    })),
  "take.unconditional": check("take.unconditional", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx, P)
      const taken = yield* core.step(ctx, `take ${FUND} (unconditional) from ${P}`, take(h, s, FUND, "unconditional"))
      yield* core.expectEqual(ctx, "take(unconditional).amount", taken.amount, FUND)
    })),
  "take.unknown-subject": check("take.unknown-subject", (ctx, h) =>
    Effect.gen(function*() {
      const who = freshSubject(h.source)
      const error = yield* core.expectFailure(ctx, "take from a subject never seeded", take(h, who, P, "exact"))
      const tag = core.tagOf(error)
      yield* core.ensure(
        ctx,
        tag === shortfallTag(h.source) || (h.source.role === "budget" && tag === "TokenNotFound"),
        `take from an unknown subject must fail with ${shortfallTag(h.source)}, got ${core.render(error)}`
      )
    })),
  "take.other-account": check("take.other-account", (ctx, h, o) =>
    Effect.gen(function*() {
      if (h.source.role !== "budget") return core.notApplicable("a funding source's subject is the account itself")
      const s = yield* seeded(h, o, ctx)
      const error = yield* core.expectFailure(
        ctx,
        "take for an account that does not own the subject",
        take(h, { ...s, accountId: core.freshId("stranger") }, P, "exact")
      )
      yield* core.expectTag(ctx, "a stranger's take", error, "TokenNotFound")
      yield* core.expectEqual(
        ctx,
        "the balance after a stranger's take (must not move)",
        yield* core.step(ctx, "read", balanceOf(h, o, s.subjectId)),
        FUND
      )
    })),
  "move.charge": check("move.charge", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx)
      const taken = yield* core.step(ctx, `take ${P}`, take(h, s, P, "exact"))
      const moved = yield* core.step(ctx, `move by −${BELOW}`, move(h, { ...s, ref: taken.ref }, -BELOW, "settle"))
      yield* core.expectEqual(ctx, `move(−${BELOW}).moved`, moved.moved, -BELOW)
      const now = yield* core.step(ctx, "read the balance", balanceOf(h, o, s.subjectId))
      yield* core.expectEqual(ctx, "the balance after the charge", now, FUND - P - BELOW)
      yield* core.expectEqual(ctx, "move.balanceAfter", moved.balanceAfter, now)
    })),
  "move.give-back": check("move.give-back", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx)
      const taken = yield* core.step(ctx, `take ${P}`, take(h, s, P, "exact"))
      const moved = yield* core.step(ctx, `move by +${P} (refund)`, move(h, { ...s, ref: taken.ref }, P, "refund"))
      yield* core.expectEqual(ctx, `move(+${P}).moved`, moved.moved, P)
      const now = yield* core.step(ctx, "read the balance", balanceOf(h, o, s.subjectId))
      yield* core.expectEqual(ctx, "the balance after the give-back", now, FUND)
      yield* core.expectEqual(ctx, "move.balanceAfter", moved.balanceAfter, now)
    })),
  "move.zero": check("move.zero", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx)
      const taken = yield* core.step(ctx, `take ${P}`, take(h, s, P, "exact"))
      const moved = yield* core.step(ctx, "move by 0", move(h, { ...s, ref: taken.ref }, 0, "settle"))
      yield* core.expectEqual(ctx, "move(0).moved", moved.moved, 0)
      yield* core.expectEqual(
        ctx,
        "the balance after move(0)",
        yield* core.step(ctx, "read", balanceOf(h, o, s.subjectId)),
        FUND - P
      )
    })),
  "move.beyond-balance": check("move.beyond-balance", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx, P)
      const taken = yield* core.step(ctx, `take ${P}`, take(h, s, P, "exact"))
      const delta = -FUND
      const moved = yield* core.step(
        ctx,
        `move by ${delta} past the balance`,
        move(h, { ...s, ref: taken.ref }, delta, "settle")
      )
      yield* core.ensure(
        ctx,
        Number.isSafeInteger(moved.moved) && moved.moved <= 0 && moved.moved >= delta,
        `move(${delta}).moved must have the sign of delta and at most its size, got ${moved.moved}`
      )
      const now = yield* core.step(ctx, "read the balance", balanceOf(h, o, s.subjectId))
      yield* core.expectEqual(ctx, "the balance after the move", now, moved.moved)
      yield* core.expectEqual(ctx, "move.balanceAfter", moved.balanceAfter, now)
    })),
  "engine.settle": check("engine.settle", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx)
      const holds = yield* core.step(
        ctx,
        `open ${P}, settle ${BELOW}; open ${P}, settle ${ABOVE}; settle and refund again`,
        viaEngine(
          h,
          Effect.gen(function*() {
            const engine = yield* BillingSession.BillingSession
            const a = yield* engine.open(openRequest(h.source, s, P))
            const first = yield* a.settle(BELOW)
            const again = yield* a.settle(BELOW + 1).pipe(Effect.exit)
            const refund = yield* a.refund
            const b = yield* engine.open(openRequest(h.source, s, P))
            yield* b.settle(ABOVE)
            return { ids: [a.holdId, b.holdId], first, again, refund }
          })
        )
      )
      yield* core.ensure(
        ctx,
        Exit.isSuccess(holds.again) && JSON.stringify(holds.again.value) === JSON.stringify(holds.first),
        "a second settle must answer the first settlement"
      )
      yield* core.expectEqual(ctx, "a refund after the settle: status", holds.refund.status, "settled")
      yield* core.expectEqual(ctx, "a refund after the settle: refunded", holds.refund.refunded, 0)
      const now = yield* ledgerAgrees(ctx, h, o, s, holds.ids)
      if (h.source.role === "budget") {
        yield* core.expectEqual(ctx, "the budget after two settles", now, FUND - BELOW - ABOVE)
      } else {yield* core.ensure(
          ctx,
          now >= FUND - BELOW - ABOVE && now <= FUND - BELOW,
          `the balance after settles of ${BELOW} and ${ABOVE} must be ${FUND - BELOW - ABOVE} (or capped), got ${now}`
        )}
    })),
  "engine.refund": check("engine.refund", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx)
      const id = yield* core.step(
        ctx,
        `open ${P}, refund twice`,
        viaEngine(
          h,
          Effect.gen(function*() {
            const engine = yield* BillingSession.BillingSession
            const a = yield* engine.open(openRequest(h.source, s, P))
            yield* a.refund
            yield* a.refund
            return a.holdId
          })
        )
      )
      const now = yield* ledgerAgrees(ctx, h, o, s, [id])
      yield* core.expectEqual(ctx, "the balance after open and two refunds", now, FUND)
    })),
  "engine.shortfall": check("engine.shortfall", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx, P - 1)
      const request = openRequest(h.source, s, P)
      const error = yield* core.expectFailure(
        ctx,
        `open ${P} on ${P - 1}`,
        viaEngine(
          h,
          Effect.gen(function*() {
            const engine = yield* BillingSession.BillingSession
            return yield* engine.open(request)
          })
        )
      )
      yield* core.expectTag(ctx, "the open's shortfall", error, shortfallTag(h.source))
      yield* core.expectEqual(
        ctx,
        "the balance after a failed open (must not move)",
        yield* ledgerAgrees(ctx, h, o, s, [request.holdId]),
        P - 1
      )
    })),
  "engine.correct": check("engine.correct", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx)
      const id = yield* core.step(
        ctx,
        `open ${P}, settle ${BELOW}, correct 2,000 twice with one id`,
        viaEngine(
          h,
          Effect.gen(function*() {
            const engine = yield* BillingSession.BillingSession
            const a = yield* engine.open(openRequest(h.source, s, P))
            yield* a.settle(BELOW)
            yield* engine.correct({ holdId: a.holdId, correctionId: "c1", amount: 2_000 })
            yield* engine.correct({ holdId: a.holdId, correctionId: "c1", amount: 2_000 })
            return a.holdId
          })
        )
      )
      const now = yield* ledgerAgrees(ctx, h, o, s, [id])
      yield* core.expectEqual(ctx, "the balance after a settle of 12,000 corrected by 2,000", now, FUND - BELOW + 2_000)
    })),
  "engine.expire": check("engine.expire", (ctx, h, o) =>
    Effect.gen(function*() {
      const s = yield* seeded(h, o, ctx)
      const id = yield* core.step(
        ctx,
        `open ${P} with a 1 s lease, let it lapse, reap twice`,
        viaEngine(
          h,
          Effect.gen(function*() {
            const engine = yield* BillingSession.BillingSession
            const a = yield* engine.open(openRequest(h.source, s, P, { ttlMillis: 1_000 }))
            yield* TestClock.adjust(2_000)
            yield* engine.reapExpired()
            yield* engine.reapExpired()
            const hold = yield* engine.get(a.holdId)
            if (hold.status !== "expired") {
              return yield* Effect.fail(new Error(`the hold is ${hold.status}, not expired`))
            }
            return a.holdId
          })
        )
      )
      yield* core.expectEqual(ctx, "the balance after the expiry", yield* ledgerAgrees(ctx, h, o, s, [id]), FUND)
    })),
  "availability": check("availability", (ctx, h, o) =>
    Effect.gen(function*() {
      const read = h.source.availability
      if (!read) return core.notApplicable("the source does not define availability")
      const s = yield* seeded(h, o, ctx)
      const answer = yield* core.step(
        ctx,
        "availability of a seeded account",
        withStore(
          h,
          Effect.gen(function*() {
            const sql = yield* SqlStore.SqlStore
            return yield* read(sql, s.accountId)
          })
        )
      )
      yield* core.ensure(
        ctx,
        typeof answer.available === "boolean" && typeof answer.allowFallback === "boolean",
        `availability must answer two booleans, got ${core.render(answer)}`
      )
      yield* core.ensure(ctx, answer.available, "a seeded account must be able to use the source")
      yield* core.expectEqual(
        ctx,
        "the balance after reading availability (must not move)",
        yield* core.step(ctx, "read", balanceOf(h, o, s.subjectId)),
        FUND
      )
    }))
}

/**
 * What each check proves, used as its test title.
 *
 * @since 0.4.0
 * @category checks
 */
export const checkTitles: { readonly [K in SourceCheckId]: string } = {
  "take.exact": "take(exact) takes exactly the amount and answers the balance after it",
  "take.insufficient": "take(exact) over the balance fails with the shortfall error (by _tag) and changes nothing",
  "take.entire-balance": "take(exact) of the whole balance succeeds and leaves 0",
  "take.up-to": "take(upTo) takes what the subject has (0 < taken ≤ asked), and fails on an empty subject",
  "take.unconditional": "take(unconditional) takes the whole amount whatever the balance",
  "take.unknown-subject": "take from a subject never created fails with the shortfall error",
  "take.other-account":
    "a budget's take for an account that does not own the subject fails with TokenNotFound and changes nothing",
  "move.charge": "move(−x) charges x and answers the balance after it",
  "move.give-back": "move(+x) gives x back",
  "move.zero": "move(0) moves nothing",
  "move.beyond-balance":
    "a charge past the balance moves all of it or what the source's cap allows (never more, same sign)",
  "engine.settle":
    "through the engine: settles below and above the reservation, a repeat answers the first, a refund after it moves nothing, and the ledger agrees",
  "engine.refund": "through the engine: a refund (twice) gives everything back, and the ledger agrees",
  "engine.shortfall": "through the engine: an open over the balance fails with the shortfall error and moves nothing",
  "engine.correct": "through the engine: a correction gives back its amount once per id, and the ledger agrees",
  "engine.expire": "through the engine: the recovery pass expires a lapsed hold once and gives its reservation back",
  "availability":
    "availability (when defined) of a seeded account answers available, with boolean fields, and moves nothing"
}

/**
 * Runs one check against a fresh harness, inside its own scope.
 *
 * @since 0.4.0
 * @category running
 */
export const run = <H extends SourceHarness>(
  options: SourceSuiteOptions<H>,
  id: SourceCheckId
): Effect.Effect<core.CheckOutcome, unknown> =>
  Effect.scoped(
    Effect.flatMap(Effect.suspend(options.make), (harness) =>
      // The checks only hand `seed` and `balance` the harness `make` built.
      checks[id](harness, options as unknown as SourceSuiteOptions))
  )
