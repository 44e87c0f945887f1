/**
 * The conformance suites against the in-memory sources (wallet, subscription,
 * token budget), and proof that the suites are not vacuous: deliberately broken
 * sources run through individual checks must fail them.
 */
import { BillingError } from "@relay-billing/core"
import type { Budget, FundingSource, Quota } from "@relay-billing/core"
import { Cause, Effect, Exit, Option } from "effect"
import { describe, expect, it } from "vitest"
import { FundingSourceSuite, InMemoryStore } from "../src/index.js"
import { budgetSuite, fundingSourceSuite } from "../src/VitestSuite.js"

// ------------------------------------------------------------------ harnesses

const walletHarness = (store = InMemoryStore.make()): FundingSourceSuite.FundingHarness => {
  const created = new Set<string>()
  let topUps = 0
  return {
    source: store.external.wallet,
    fund: (accountId, amount) =>
      Effect.gen(function*() {
        if (!created.has(accountId)) {
          yield* store.createAccount(accountId)
          created.add(accountId)
        }
        yield* store.topUp(accountId, amount, `fund-${accountId}-${++topUps}`)
      }),
    balance: (accountId) => Effect.sync(() => store.snapshot().wallets[accountId] ?? 0)
  }
}

const subscriptionHarness = (store = InMemoryStore.make()): FundingSourceSuite.FundingHarness => {
  const subscriptions = new Map<string, Array<string>>()
  return {
    source: store.external.subscription,
    fund: (accountId, amount) =>
      Effect.suspend(() => {
        const ids = subscriptions.get(accountId) ?? []
        const id = `${accountId}:sub${ids.length}`
        subscriptions.set(accountId, [...ids, id])
        return store.createSubscription({ id, accountId, total: amount, endAt: Number.MAX_SAFE_INTEGER })
      }),
    balance: (accountId) =>
      Effect.sync(() => {
        const snapshot = store.snapshot().subscriptions
        return (subscriptions.get(accountId) ?? []).reduce((sum, id) => {
          const sub = snapshot[id]
          return sub === undefined ? sum : sum + (sub.total - sub.used)
        }, 0)
      })
  }
}

const tokenHarness = (store = InMemoryStore.make()): FundingSourceSuite.BudgetHarness => {
  return {
    budget: store.external.token,
    create: (tokenId, budget) => store.createToken(tokenId, `owner-of-${tokenId}`, budget),
    remaining: (tokenId) => Effect.sync(() => store.snapshot().tokens[tokenId]?.remain ?? 0),
    used: (tokenId) => Effect.sync(() => store.snapshot().tokens[tokenId]?.used ?? 0),
    accountOf: (tokenId) => `owner-of-${tokenId}`
  }
}

// ------------------------------------------------------------------ the suites

/**
 * A scoped harness: when the test's scope closes, the store's audit (ledger sums
 * == balances, token used mirrors remain, ...) must reconcile, or the test dies.
 */
const audited = <H>(make: (store: InMemoryStore.InMemoryStore) => H) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const store = InMemoryStore.make()
      return { store, harness: make(store) }
    }),
    ({ store }) =>
      Effect.suspend(() => {
        const { problems } = store.audit()
        return problems.length === 0 ? Effect.void : Effect.die(new Error(`store audit failed: ${problems.join("; ")}`))
      })
  ).pipe(Effect.map(({ harness }) => harness))

fundingSourceSuite("in-memory wallet", () => audited(walletHarness))

fundingSourceSuite("in-memory subscription", () => audited(subscriptionHarness))

budgetSuite("in-memory token budget", () => audited(tokenHarness))

// ------------------------------------------------------------------ the suites have teeth

/** Runs one check against a fresh harness and returns how it ended. */
const runCheck = <H, O>(harness: () => H, check: FundingSourceSuite.Check<H, O>) =>
  Effect.runPromise(Effect.exit(FundingSourceSuite.run(() => Effect.sync(harness), check)))

/** Asserts that the exit is a `ConformanceFailure` of check `id`, and returns its message. */
const expectViolation = (exit: Exit.Exit<unknown, unknown>, id: string): string => {
  expect(Exit.isFailure(exit), `check ${id} should have failed`).toBe(true)
  if (Exit.isSuccess(exit)) return ""
  const error = Cause.findErrorOption(exit.cause)
  expect(Option.isSome(error)).toBe(true)
  const failure = Option.getOrThrow(error)
  expect(failure).toBeInstanceOf(FundingSourceSuite.ConformanceFailure)
  const conformance = failure as FundingSourceSuite.ConformanceFailure
  expect(conformance.check).toBe(id)
  return conformance.message
}

type Mutation = (
  real: FundingSource.FundingSource,
  store: InMemoryStore.InMemoryStore
) => Partial<FundingSource.FundingSource>

/** The in-memory wallet with some of its operations replaced by broken ones. */
const brokenWallet = (mutation: Mutation) => (): FundingSourceSuite.FundingHarness => {
  const store = InMemoryStore.make()
  const base = walletHarness(store)
  return { ...base, source: { ...store.external.wallet, ...mutation(store.external.wallet, store) } }
}

let extra = 0
/** Credits `amount` to a wallet outside any hold (how a broken source would "give back" too much). */
const credit = (store: InMemoryStore.InMemoryStore, accountId: string, amount: number) =>
  store.topUp(accountId, amount, `broken-${++extra}`).pipe(Effect.asVoid)

describe("the funding-source checks catch broken sources", () => {
  it("issue 8 #14: a correction that credits again when repeated fails the correct check", async () => {
    const seen = new Set<string>()
    const harness = brokenWallet((real) => ({
      // a repeat of a key is applied again under a fresh key: the wallet is credited twice
      correct: (req) => {
        const key = `${req.holdId}/${req.correctionId}`
        const repeat = seen.has(key)
        seen.add(key)
        return real.correct!(repeat ? { ...req, correctionId: `${req.correctionId}-again-${++extra}` } : req)
      }
    }))
    const message = expectViolation(await runCheck(harness, FundingSourceSuite.checks["correct"]), "correct")
    expect(message).toMatch(/after repeating a correction \(must not move\)/)
  })

  it("issue 9: a late charge that charges again when repeated fails the late-settle check", async () => {
    const seen = new Set<string>()
    const harness = brokenWallet((real, store) => ({
      // the first call charges; a repeat charges the amount again outside the keyed record
      lateSettle: (req) =>
        Effect.flatMap(real.lateSettle!(req), (result) => {
          const repeat = seen.has(req.holdId)
          seen.add(req.holdId)
          return Effect.as(repeat ? credit(store, req.accountId, -req.amount) : Effect.void, result)
        })
    }))
    const message = expectViolation(await runCheck(harness, FundingSourceSuite.checks["late-settle"]), "late-settle")
    expect(message).toMatch(/after repeating a late charge \(must not move\)/)
  })

  it("issue 9: a late charge that charges less than asked fails the late-settle check", async () => {
    const harness = brokenWallet((real) => ({
      lateSettle: (req) => real.lateSettle!({ ...req, amount: Math.floor(req.amount / 2) as typeof req.amount })
    }))
    const message = expectViolation(await runCheck(harness, FundingSourceSuite.checks["late-settle"]), "late-settle")
    expect(message).toMatch(/lateSettle\(45000\)\.charged/)
  })

  it("issue 9: a source without lateSettle reports the late-settle check as not applicable", async () => {
    const harness = () => {
      const store = InMemoryStore.make()
      const { lateSettle: _dropped, ...plain } = store.external.wallet
      return { ...walletHarness(store), source: plain }
    }
    const exit = await runCheck(harness, FundingSourceSuite.checks["late-settle"])
    expect(exit).toStrictEqual(
      Exit.succeed({ status: "not-applicable", reason: "the source does not define lateSettle" })
    )
  })

  it("issue 8 #14: a source without correct reports the correct check as not applicable", async () => {
    const harness = () => {
      const store = InMemoryStore.make()
      const { correct: _dropped, ...plain } = store.external.wallet
      return { ...walletHarness(store), source: plain }
    }
    const exit = await runCheck(harness, FundingSourceSuite.checks["correct"])
    expect(exit).toStrictEqual(Exit.succeed({ status: "not-applicable", reason: "the source does not define correct" }))
  })

  it("a refund that credits again when repeated fails refund.idempotent", async () => {
    const refunded = new Set<string>()
    const harness = brokenWallet((real, store) => ({
      refund: (req) =>
        refunded.has(req.holdId)
          ? credit(store, req.accountId, req.part.amount)
          : real.refund(req).pipe(Effect.tap(() => Effect.sync(() => refunded.add(req.holdId))))
    }))
    const message = expectViolation(
      await runCheck(harness, FundingSourceSuite.checks["refund.idempotent"]),
      "refund.idempotent"
    )
    expect(message).toContain("must credit once")
    expect(message).toContain("expected 100000, got 130000")
    // The same broken source still passes a check that does not look at repeated refunds.
    expect(Exit.isSuccess(await runCheck(harness, FundingSourceSuite.checks["refund.exact"]))).toBe(true)
  })

  it("a reserve that is not idempotent by hold id fails reserve.idempotent and concurrency.same-hold", async () => {
    let n = 0
    // Every call is treated as a new hold: the hold id is made unique before it reaches the wallet.
    const harness = brokenWallet((real) => ({
      reserve: (req) => real.reserve({ ...req, holdId: `${req.holdId}#${++n}` })
    }))
    const message = expectViolation(
      await runCheck(harness, FundingSourceSuite.checks["reserve.idempotent"]),
      "reserve.idempotent"
    )
    expect(message).toContain("must be debited once")
    expectViolation(
      await runCheck(harness, FundingSourceSuite.checks["concurrency.same-hold"]),
      "concurrency.same-hold"
    )
  })

  it("a reserve that takes more than asked fails reserve.exact", async () => {
    const harness = brokenWallet((real) => ({
      reserve: (req) =>
        real.reserve({ ...req, amount: (req.amount + 1) as Quota.Quota }).pipe(Effect.as({ amount: req.amount }))
    }))
    const message = expectViolation(
      await runCheck(harness, FundingSourceSuite.checks["reserve.exact"]),
      "reserve.exact"
    )
    expect(message).toContain("drop after reserve")
  })

  it("a shortfall reported as a StoreError fails reserve.insufficient and reserve.unfunded", async () => {
    const harness = brokenWallet((real) => ({
      reserve: (req) =>
        real.reserve(req).pipe(
          Effect.catchTag("InsufficientFunds", () =>
            Effect.fail(new BillingError.StoreError({ operation: "reserve", detail: "declined" })))
        )
    }))
    const message = expectViolation(
      await runCheck(harness, FundingSourceSuite.checks["reserve.insufficient"]),
      "reserve.insufficient"
    )
    expect(message).toContain("expected a InsufficientFunds error")
    expectViolation(await runCheck(harness, FundingSourceSuite.checks["reserve.unfunded"]), "reserve.unfunded")
  })

  it("a settle that ignores the actual cost fails settle.above-reservation and settle.below-reservation", async () => {
    const harness = brokenWallet((real) => ({ settle: (req) => real.settle({ ...req, actual: req.part.amount }) }))
    expectViolation(
      await runCheck(harness, FundingSourceSuite.checks["settle.above-reservation"]),
      "settle.above-reservation"
    )
    expectViolation(
      await runCheck(harness, FundingSourceSuite.checks["settle.below-reservation"]),
      "settle.below-reservation"
    )
    // settle(actual == reserved) is exactly what this broken settle does.
    expect(Exit.isSuccess(await runCheck(harness, FundingSourceSuite.checks["settle.equal-reservation"]))).toBe(true)
  })

  it("a settle that is not idempotent fails settle.idempotent", async () => {
    let n = 0
    const harness = brokenWallet((real, store) => ({
      settle: (req) =>
        real.settle(req).pipe(
          Effect.tap(() =>
            ++n > 1 ? store.topUp(req.accountId, -(req.actual - req.part.amount), `again-${n}`) : Effect.void
          )
        )
    }))
    const message = expectViolation(
      await runCheck(harness, FundingSourceSuite.checks["settle.idempotent"]),
      "settle.idempotent"
    )
    expect(message).toContain("must charge once")
  })

  it("a settle after refund that charges (new-api's missing guard) fails settle.after-refund", async () => {
    const harness = brokenWallet((real, store) => ({
      settle: (req) =>
        real.settle(req).pipe(
          Effect.catchTag("HoldResolved", () =>
            credit(store, req.accountId, -req.actual).pipe(Effect.as({ charged: req.actual, unbilled: 0 })))
        )
    }))
    const message = expectViolation(
      await runCheck(harness, FundingSourceSuite.checks["settle.after-refund"]),
      "settle.after-refund"
    )
    expect(message).toContain("expected a typed failure")
  })

  it("a refund that also gives back a settled hold fails refund.after-settle", async () => {
    const harness = brokenWallet((real, store) => ({
      refund: (req) => real.refund(req).pipe(Effect.andThen(credit(store, req.accountId, req.part.amount)))
    }))
    expectViolation(await runCheck(harness, FundingSourceSuite.checks["refund.after-settle"]), "refund.after-settle")
    expectViolation(await runCheck(harness, FundingSourceSuite.checks["refund.unknown-hold"]), "refund.unknown-hold")
  })

  it("a source that treats a release like a refund (never forgets the hold id) fails refund.release", async () => {
    const harness = brokenWallet((real) => ({ refund: (req) => real.refund({ ...req, reason: "refund" }) }))
    const message = expectViolation(
      await runCheck(harness, FundingSourceSuite.checks["refund.release"]),
      "refund.release"
    )
    expect(message).toContain("reserve of a released hold id")
  })

  it("a reserve that re-opens a refunded hold fails reserve.after-refund", async () => {
    const harness = brokenWallet((real) => ({
      reserve: (req) =>
        real.reserve(req).pipe(
          Effect.catchTag("HoldResolved", () => real.reserve({ ...req, holdId: `${req.holdId}/reopened` }))
        )
    }))
    const message = expectViolation(
      await runCheck(harness, FundingSourceSuite.checks["reserve.after-refund"]),
      "reserve.after-refund"
    )
    expect(message).toContain("expected a typed failure")
  })

  describe("a read-then-write wallet (correct one call at a time, racy under concurrency)", () => {
    // Every operation reads, yields to other fibers, then writes: the race that the
    // conditional UPDATE / SELECT ... FOR UPDATE of the knex sources exists to prevent.
    const racy = (): FundingSourceSuite.FundingHarness => {
      const balances = new Map<string, number>()
      const holds = new Map<string, { amount: number; status: "reserved" | "settled" | "refunded"; charged?: number }>()
      const move = (accountId: string, by: number) => balances.set(accountId, (balances.get(accountId) ?? 0) + by)
      const source: FundingSource.FundingSource = {
        id: "racy",
        reserve: (req) =>
          Effect.gen(function*() {
            const existing = holds.get(req.holdId)
            const balance = balances.get(req.accountId) ?? 0
            yield* Effect.yieldNow
            if (existing?.status === "refunded") {
              return yield* new BillingError.HoldResolved({
                holdId: req.holdId,
                status: "refunded",
                operation: "reserve"
              })
            }
            if (existing) return { amount: existing.amount }
            if (balance <= 0 || balance < req.amount) {
              return yield* new BillingError.InsufficientFunds({
                sourceId: "racy",
                accountId: req.accountId,
                required: req.amount,
                available: balance
              })
            }
            move(req.accountId, -req.amount)
            holds.set(req.holdId, { amount: req.amount, status: "reserved" })
            return { amount: req.amount }
          }),
        settle: (req) =>
          Effect.gen(function*() {
            const hold = holds.get(req.holdId)
            yield* Effect.yieldNow
            if (!hold) return yield* new BillingError.StoreError({ operation: "settle", detail: "no hold" })
            if (hold.status === "refunded") {
              return yield* new BillingError.HoldResolved({
                holdId: req.holdId,
                status: "refunded",
                operation: "settle"
              })
            }
            if (hold.status === "settled") return { charged: hold.charged ?? 0, unbilled: 0 }
            move(req.accountId, -(req.actual - hold.amount))
            holds.set(req.holdId, { ...hold, status: "settled", charged: req.actual })
            return { charged: req.actual, unbilled: 0 }
          }),
        refund: (req) =>
          Effect.gen(function*() {
            const hold = holds.get(req.holdId)
            yield* Effect.yieldNow
            if (!hold || hold.status !== "reserved") return
            move(req.accountId, hold.amount)
            if (req.reason === "release") holds.delete(req.holdId)
            else holds.set(req.holdId, { ...hold, status: "refunded" })
          })
      }
      return {
        source,
        fund: (accountId, amount) => Effect.sync(() => void move(accountId, amount)),
        balance: (accountId) => Effect.sync(() => balances.get(accountId) ?? 0)
      }
    }

    it("passes every sequential check", async () => {
      for (const id of Object.keys(FundingSourceSuite.checks) as Array<FundingSourceSuite.FundingCheckId>) {
        if (id.startsWith("concurrency.")) continue
        const exit = await runCheck(racy, FundingSourceSuite.checks[id])
        expect(Exit.isSuccess(exit), `${id}: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`).toBe(true)
      }
    })

    it("fails concurrency.reserve: it overdraws", async () => {
      const message = expectViolation(
        await runCheck(racy, FundingSourceSuite.checks["concurrency.reserve"]),
        "concurrency.reserve"
      )
      expect(message).toMatch(/successful reserves|went negative/)
    })

    it("fails concurrency.same-hold: one hold id is debited several times", async () => {
      expectViolation(await runCheck(racy, FundingSourceSuite.checks["concurrency.same-hold"]), "concurrency.same-hold")
    })

    it("fails concurrency.resolve: a settle and refunds of one hold all take effect", async () => {
      expectViolation(await runCheck(racy, FundingSourceSuite.checks["concurrency.resolve"]), "concurrency.resolve")
    })
  })

  it("a source whose balance disagrees with what it can spend fails the balance check", async () => {
    const harness = brokenWallet((real) => ({
      balance: (accountId) =>
        (real.balance ? real.balance(accountId) : Effect.succeed(0)).pipe(Effect.map((b) => b + 1))
    }))
    expectViolation(await runCheck(harness, FundingSourceSuite.checks["balance"]), "balance")
  })

  it("an off-by-one balance test (balance > amount) fails reserve.entire-balance", async () => {
    const harness = brokenWallet((real, store) => ({
      reserve: (req) =>
        (store.snapshot().wallets[req.accountId] ?? 0) === req.amount
          ? Effect.fail(
            new BillingError.InsufficientFunds({
              sourceId: "wallet",
              accountId: req.accountId,
              required: req.amount,
              available: req.amount
            })
          )
          : real.reserve(req)
    }))
    expectViolation(
      await runCheck(harness, FundingSourceSuite.checks["reserve.entire-balance"]),
      "reserve.entire-balance"
    )
  })

  it("a settle that charges a hold it never reserved fails settle.unknown-hold", async () => {
    const harness = brokenWallet((real, store) => ({
      settle: (req) =>
        real.settle(req).pipe(
          Effect.catchTag("StoreError", () =>
            credit(store, req.accountId, -req.actual).pipe(Effect.as({ charged: req.actual, unbilled: 0 })))
        )
    }))
    expectViolation(await runCheck(harness, FundingSourceSuite.checks["settle.unknown-hold"]), "settle.unknown-hold")
  })

  it("a reserve of a settled hold that debits again fails reserve.after-settle", async () => {
    const settled = new Set<string>()
    const harness = brokenWallet((real) => ({
      settle: (req) => real.settle(req).pipe(Effect.tap(() => Effect.sync(() => settled.add(req.holdId)))),
      reserve: (req) => real.reserve(settled.has(req.holdId) ? { ...req, holdId: `${req.holdId}/again` } : req)
    }))
    expectViolation(await runCheck(harness, FundingSourceSuite.checks["reserve.after-settle"]), "reserve.after-settle")
  })

  describe("subscription mutants", () => {
    const brokenSubscription = (mutation: Mutation) => (): FundingSourceSuite.FundingHarness => {
      const store = InMemoryStore.make()
      const base = subscriptionHarness(store)
      return { ...base, source: { ...store.external.subscription, ...mutation(store.external.subscription, store) } }
    }

    it("a minimumReservation below the request fails reserve.minimum-reservation", async () => {
      const harness = brokenSubscription(() => ({
        minimumReservation: (requested) => Math.max(requested - 1, 1) as Quota.Quota
      }))
      const message = expectViolation(
        await runCheck(harness, FundingSourceSuite.checks["reserve.minimum-reservation"]),
        "reserve.minimum-reservation"
      )
      expect(message).toContain("minimumReservation(2) must be a quota ≥ 2, got 1")
    })

    it("a 1-unit reservation that is never refunded (new-api bug 2) fails reserve.zero-estimate", async () => {
      const harness = brokenSubscription((real) => ({
        refund: (req) => req.part.amount === 1 ? Effect.void : real.refund(req)
      }))
      const message = expectViolation(
        await runCheck(harness, FundingSourceSuite.checks["reserve.zero-estimate"]),
        "reserve.zero-estimate"
      )
      expect(message).toContain("after refunding a reservation of 1")
    })

    it("availability that says a funded account cannot use the source fails availability", async () => {
      const harness = brokenSubscription(() => ({
        availability: () => Effect.succeed({ available: false, allowFallback: true })
      }))
      expectViolation(await runCheck(harness, FundingSourceSuite.checks["availability"]), "availability")
    })

    it("room: a subscription whose room ignores what is reserved (issue 8 #9: the post-consume check would pass an exhausted subscription)", async () => {
      const stale = new Map<string, number>()
      const harness = brokenSubscription((real) => ({
        room: (accountId) =>
          Effect.map(real.room!(accountId), (left) => {
            const first = stale.get(accountId) ?? left
            stale.set(accountId, first)
            return first
          })
      }))
      expectViolation(await runCheck(harness, FundingSourceSuite.checks["room"]), "room")
      expect(Exit.isSuccess(await runCheck(subscriptionHarness, FundingSourceSuite.checks["room"]))).toBe(true)
    })
  })

  it("checks report not-applicable for capabilities a source does not offer", async () => {
    const exit = await runCheck(() => walletHarness(), FundingSourceSuite.checks["availability"])
    expect(exit).toStrictEqual(
      Exit.succeed({ status: "not-applicable", reason: "the source does not define availability" })
    )
    const sub = await runCheck(subscriptionHarness, FundingSourceSuite.checks["availability"])
    expect(sub).toStrictEqual(Exit.succeed({ status: "passed" }))
  })
})

describe("the budget checks catch broken budgets", () => {
  type BudgetMutation = (real: Budget.Budget) => Partial<Budget.Budget>
  const brokenToken = (mutation: BudgetMutation) => (): FundingSourceSuite.BudgetHarness => {
    const base = tokenHarness()
    return { ...base, budget: { ...base.budget, ...mutation(base.budget) } }
  }

  it("an unlimited token that does not count usage at settle fails unlimited.reserve-nothing", async () => {
    const harness = brokenToken((real) => ({
      settle: (req) => req.part.amount === 0 ? Effect.succeed({ charged: req.actual, unbilled: 0 }) : real.settle(req)
    }))
    const message = expectViolation(
      await runCheck(harness, FundingSourceSuite.budgetChecks["unlimited.reserve-nothing"]),
      "unlimited.reserve-nothing"
    )
    expect(message).toContain("usage is still counted")
  })

  it("a budget shortfall reported as InsufficientFunds fails reserve.insufficient", async () => {
    // Deliberately outside the Budget contract's error type, hence the cast.
    const harness = brokenToken((real) => ({
      reserve: ((req: FundingSource.ReserveRequest) =>
        real.reserve(req).pipe(
          Effect.catchTag("TokenBudgetExceeded", (e) =>
            Effect.fail(
              new BillingError.InsufficientFunds({
                sourceId: e.budgetId,
                accountId: req.accountId,
                required: e.required,
                available: e.remaining
              })
            ))
        )) as Budget.Budget["reserve"]
    }))
    const message = expectViolation(
      await runCheck(harness, FundingSourceSuite.budgetChecks["reserve.insufficient"]),
      "reserve.insufficient"
    )
    expect(message).toContain("expected a TokenBudgetExceeded error")
  })

  it("issue 8 #8: a budget that lets any account spend a token fails reserve.other-account", async () => {
    // The old behaviour: the owner is never compared with the request's account.
    const harness = brokenToken((real) => ({
      reserve: (req) => real.reserve({ ...req, accountId: `owner-of-${req.subjectId}` })
    }))
    const message = expectViolation(
      await runCheck(harness, FundingSourceSuite.budgetChecks["reserve.other-account"]),
      "reserve.other-account"
    )
    expect(message).toContain("expected a typed failure")
    // The real in-memory budget passes it.
    expect(Exit.isSuccess(await runCheck(tokenHarness, FundingSourceSuite.budgetChecks["reserve.other-account"]))).toBe(
      true
    )
  })
})

describe("skip options", () => {
  it("skip by capability group and by id selects exactly those checks", () => {
    expect(FundingSourceSuite.skippedChecks()).toStrictEqual([])
    expect(FundingSourceSuite.skippedChecks({ skip: ["concurrency", "balance"] })).toStrictEqual([
      "concurrency.reserve",
      "concurrency.same-hold",
      "concurrency.resolve",
      "balance"
    ])
    expect(FundingSourceSuite.skippedChecks({ skip: ["settle-above-reservation", "zero-estimate"] })).toStrictEqual([
      "reserve.zero-estimate",
      "settle.above-reservation"
    ])
    expect(FundingSourceSuite.skippedBudgetChecks({ skip: ["unlimited"] })).toStrictEqual([
      "unlimited.reserve-nothing",
      "unlimited.refund"
    ])
  })

  it("the remaining check drops only its unlimited half when unlimited is skipped", async () => {
    // A budget whose remaining() reports every subject as limited: the unlimited half catches it...
    const limitedOnly = (): FundingSourceSuite.BudgetHarness => {
      const base = tokenHarness()
      const remaining = base.budget.remaining!
      return {
        ...base,
        budget: {
          ...base.budget,
          remaining: (id) => remaining(id).pipe(Effect.map((r) => ({ ...r, unlimited: false })))
        }
      }
    }
    expectViolation(await runCheck(limitedOnly, FundingSourceSuite.budgetChecks["remaining"]), "remaining")
    // ...and is the only part dropped by skip: ["unlimited"].
    const exit = await Effect.runPromise(
      Effect.exit(
        FundingSourceSuite.run(() => Effect.sync(limitedOnly), FundingSourceSuite.budgetChecks["remaining"], {
          skip: ["unlimited"]
        })
      )
    )
    expect(exit).toStrictEqual(Exit.succeed({ status: "passed" }))
  })
})
