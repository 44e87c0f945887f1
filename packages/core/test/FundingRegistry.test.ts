import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { FundingRegistry, reader } from "../src/FundingRegistry.js"
import * as FundingResolver from "../src/FundingResolver.js"
import type { ExternalRole, ExternalSource, FundingSource } from "../src/FundingSource.js"
import type { Source } from "../src/Source.js"
import { isSource } from "../src/Source.js"
import type { SqlStore } from "../src/SqlStore.js"

const mover = (id: string, role: Source["role"], extra: Partial<Source> = {}): Source => ({
  id,
  role,
  take: (req) => Effect.succeed({ amount: req.amount, balanceAfter: 0 }),
  move: (req) => Effect.succeed({ moved: req.delta, balanceAfter: 0 }),
  ...extra
})

const external = (id: string): FundingSource => ({
  id,
  reserve: (req) => Effect.succeed({ amount: req.amount }),
  settle: (req) => Effect.succeed({ charged: req.actual, unbilled: 0 }),
  refund: () => Effect.void
})

const sql: SqlStore["Service"] = {
  id: "s",
  dialect: "sqlite",
  table: (name) => name,
  execute: () => Effect.succeed({ rows: [], affected: 0 })
}

describe("FundingRegistry with v2 Sources (issue 10 #1)", () => {
  it("tells a Source from a two-phase source by shape (take versus reserve)", () => {
    expect(isSource(mover("wallet", "funding"))).toBe(true)
    expect(isSource(external("credits"))).toBe(false)
  })

  it.effect("registers `sources` by role next to external funding sources", () =>
    Effect.gen(function*() {
      const registry = FundingRegistry.make({
        funding: [external("credits")],
        sources: [mover("wallet", "funding"), mover("token", "budget")]
      })
      expect(registry.fundingIds).toEqual(["credits", "wallet"])
      expect(isSource(yield* registry.funding("wallet"))).toBe(true)
      expect(isSource(yield* registry.budget("token"))).toBe(true)
      const missing = yield* Effect.exit(registry.funding("token"))
      expect(Exit.isFailure(missing)).toBe(true)
    }))

  it("refuses a Source registered under the other role, and duplicate ids", () => {
    expect(() => FundingRegistry.make({ funding: [mover("token", "budget")] })).toThrow(
      /role budget, registered as funding/
    )
    expect(() => FundingRegistry.make({ budgets: [mover("wallet", "funding")] })).toThrow(
      /role funding, registered as a budget/
    )
    expect(() => FundingRegistry.make({ funding: [external("wallet")], sources: [mover("wallet", "funding")] }))
      .toThrow(/duplicate/)
  })

  it.effect("one ExternalSource shape serves both roles; a declared role is checked like a Source's (issue 10 #9.3)", () =>
    Effect.gen(function*() {
      const declared = (id: string, role: ExternalRole | undefined): ExternalSource => ({
        ...external(id),
        ...(role !== undefined ? { role } : {}),
        remaining: () => Effect.succeed({ unlimited: false, remaining: 7 })
      })
      // The same value registers as a budget and as a funding source when it declares no role.
      const both = declared("credits", undefined)
      const registry = FundingRegistry.make({ funding: [both], budgets: [both, declared("token", "budget")] })
      expect(yield* registry.funding("credits")).toBe(both)
      expect(yield* registry.budget("credits")).toBe(both)
      const token = yield* registry.budget("token")
      expect(isSource(token) ? undefined : yield* token.remaining!("t")).toEqual({ unlimited: false, remaining: 7 })
      expect(() => FundingRegistry.make({ funding: [declared("token", "budget")] })).toThrow(
        /"token" has role budget, registered as funding/
      )
      expect(() => FundingRegistry.make({ budgets: [declared("wallet", "funding")] })).toThrow(
        /"wallet" has role funding, registered as a budget/
      )
    }))

  it.effect("the resolver reads a Source's availability through the reader's executor", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      const subscription = mover("subscription", "funding", {
        availability: (executor, accountId) =>
          Effect.sync(() => {
            seen.push(`${executor.id}:${accountId}`)
            return { available: true, allowFallback: false }
          })
      })
      const registry = FundingRegistry.make({ sources: [mover("wallet", "funding"), subscription] })
      const order = yield* FundingResolver.resolve(reader(registry, sql), "subscription_first", "acct")
      expect(order).toEqual(["subscription"])
      expect(seen).toEqual(["s:acct"])
      // Without an executor, reading a Source fails typed.
      const failed = yield* Effect.flip(
        FundingResolver.resolve(reader(registry, undefined), "subscription_first", "acct")
      )
      expect(failed._tag).toBe("StoreError")
    }))
})
