/**
 * The v2 `Source` conformance suite against the in-memory store's own sources
 * (wallet, token budget, subscription), one call each, and proof that it is not
 * vacuous: deliberately broken sources fail the checks that look at what they break.
 */
import { BillingError } from "@relay-billing/core"
import type { Source } from "@relay-billing/core"
import { Cause, Effect, Exit, Option } from "effect"
import { describe, expect, it } from "vitest"
import { InMemoryStore, SourceSuite } from "../src/index.js"
import { sourceSuite } from "../src/VitestSuite.js"

interface MemoryHarness extends SourceSuite.SourceHarness {
  readonly memory: InMemoryStore.InMemoryStore
}

const harness = (
  pick: (memory: InMemoryStore.InMemoryStore) => Source.Source,
  change?: (real: Source.Source, memory: InMemoryStore.InMemoryStore) => Partial<Source.Source>
) =>
() =>
  Effect.sync((): MemoryHarness => {
    const memory = InMemoryStore.make()
    const real = pick(memory)
    return { memory, source: { ...real, ...(change ? change(real, memory) : {}) }, store: memory.layer() }
  })

const walletOptions = {
  name: "in-memory wallet",
  make: harness((m) => m.wallet),
  seed: ({ memory }: MemoryHarness, { accountId, amount }: SourceSuite.Seed) => memory.createAccount(accountId, amount)
}

const tokenOptions = {
  name: "in-memory token budget",
  make: harness((m) => m.token),
  seed: ({ memory }: MemoryHarness, { accountId, amount, subjectId }: SourceSuite.Seed) =>
    Effect.andThen(memory.createAccount(accountId, 0), memory.createToken(subjectId, accountId, { remain: amount }))
}

const subscriptionOptions = {
  name: "in-memory subscription",
  make: harness((m) => m.subscription),
  seed: ({ memory }: MemoryHarness, { accountId, amount }: SourceSuite.Seed) =>
    Effect.andThen(
      memory.createAccount(accountId, 0),
      memory.createSubscription({
        id: `${accountId}-sub`,
        accountId,
        total: amount,
        startAt: 0,
        endAt: Number.MAX_SAFE_INTEGER,
        allowWalletOverflow: false
      })
    )
}

sourceSuite(walletOptions)
sourceSuite(tokenOptions)
sourceSuite(subscriptionOptions)

const failureOf = async (options: SourceSuite.SourceSuiteOptions<MemoryHarness>, id: SourceSuite.SourceCheckId) => {
  const exit = await Effect.runPromiseExit(SourceSuite.run(options, id))
  expect(Exit.isFailure(exit)).toBe(true)
  if (Exit.isSuccess(exit)) return ""
  const error = Option.getOrThrow(Cause.findErrorOption(exit.cause)) as {
    readonly _tag: string
    readonly check: string
    readonly message: string
  }
  expect(error._tag).toBe("ConformanceFailure")
  expect(error.check).toBe(id)
  return error.message
}

describe("the Source checks catch broken sources", () => {
  it("a take that takes one more than asked fails take.exact", async () => {
    const message = await failureOf({
      ...walletOptions,
      make: harness(
        (m) => m.wallet,
        (real) => ({ take: (req) => real.take({ ...req, amount: (req.amount + 1) as typeof req.amount }) })
      )
    }, "take.exact")
    expect(message).toMatch(/take\(exact\)\.amount: expected 30000, got 30001/)
  })

  it("a take that takes what it can instead of failing fails take.insufficient", async () => {
    const message = await failureOf({
      ...walletOptions,
      make: harness(
        (m) => m.wallet,
        (real) => ({ take: (req) => real.take({ ...req, mode: req.mode === "exact" ? "upTo" : req.mode }) })
      )
    }, "take.insufficient")
    expect(message).toMatch(/expected a typed failure/)
  })

  it("a budget that fails a shortfall with the funding error fails take.insufficient by _tag", async () => {
    const message = await failureOf({
      ...tokenOptions,
      make: harness((m) => m.token, (real) => ({
        take: (req) =>
          real.take(req).pipe(Effect.catchTag("TokenBudgetExceeded", (e) =>
            Effect.fail(
              new BillingError.InsufficientFunds({
                sourceId: e.budgetId,
                accountId: req.accountId,
                required: e.required,
                available: e.remaining
              })
            )))
      }))
    }, "take.insufficient")
    expect(message).toMatch(/expected a TokenBudgetExceeded error/)
  })

  it("a move that answers a balance it did not reach fails move.charge", async () => {
    const message = await failureOf({
      ...walletOptions,
      make: harness(
        (m) => m.wallet,
        (real) => ({ move: (req) => Effect.map(real.move(req), (a) => ({ ...a, balanceAfter: a.balanceAfter + 1 })) })
      )
    }, "move.charge")
    expect(message).toMatch(/move\.balanceAfter/)
  })

  it("a move that charges twice what it answers is caught by the engine's ledger check", async () => {
    const message = await failureOf({
      ...walletOptions,
      make: harness((m) => m.wallet, (real) => ({
        move: (req) => req.kind === "settle" ? Effect.andThen(real.move(req), real.move(req)) : real.move(req)
      }))
    }, "engine.settle")
    expect(message).toMatch(/ledger rows/)
  })

  it("a give-back that moves nothing (a lost refund) fails engine.refund", async () => {
    const message = await failureOf({
      ...walletOptions,
      make: harness((m) => m.wallet, (real) => ({
        move: (req) => req.kind === "refund" ? real.move({ ...req, delta: 0 }) : real.move(req)
      }))
    }, "engine.refund")
    expect(message).toMatch(/balance after open and two refunds: expected 100000/)
  })
})

describe("the in-memory store's SqlStore", () => {
  it("has no SQL: execute fails with a StoreError that says so, naming the operation", async () => {
    const memory = InMemoryStore.make()
    const exit = await Effect.runPromiseExit(
      memory.sql.execute("vouchers.take", "UPDATE vouchers SET left = left - ?", [1])
    )
    expect(Exit.isFailure(exit)).toBe(true)
    if (Exit.isSuccess(exit)) return
    const error = Option.getOrThrow(Cause.findErrorOption(exit.cause))
    expect(error._tag).toBe("StoreError")
    expect(error.operation).toBe("vouchers.take")
    expect(error.detail).toMatch(/in-memory store .* has no SQL/)
  })
})
