import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { FundingRegistry } from "../src/FundingRegistry.js"
import * as FundingResolver from "../src/FundingResolver.js"
import type { Availability, FundingSource } from "../src/FundingSource.js"
import type { Preference } from "../src/Preference.js"

type Case = readonly [label: string, availability: Availability | undefined]
const none: Case = ["no subscription source", undefined]
const unavailable: Case = ["no active subscription", { available: false, allowFallback: true }]
const noFallback: Case = ["an active subscription that forbids wallet overflow", { available: true, allowFallback: false }]
const withFallback: Case = ["an active subscription that allows wallet overflow", { available: true, allowFallback: true }]

// The spec's §2.1 for every preference × subscription availability.
const expected: ReadonlyArray<readonly [Preference, Case, ReadonlyArray<string>]> = [
  ["wallet_only", none, ["wallet"]],
  ["wallet_only", unavailable, ["wallet"]],
  ["wallet_only", noFallback, ["wallet"]],
  ["wallet_only", withFallback, ["wallet"]],
  ["subscription_only", none, ["subscription"]],
  ["subscription_only", unavailable, ["subscription"]],
  ["subscription_only", noFallback, ["subscription"]],
  ["subscription_only", withFallback, ["subscription"]],
  ["wallet_first", none, ["wallet"]],
  ["wallet_first", unavailable, ["wallet", "subscription"]],
  ["wallet_first", noFallback, ["wallet", "subscription"]],
  ["wallet_first", withFallback, ["wallet", "subscription"]],
  ["subscription_first", none, ["wallet"]],
  ["subscription_first", unavailable, ["wallet"]],
  ["subscription_first", noFallback, ["subscription"]],
  ["subscription_first", withFallback, ["subscription", "wallet"]]
]

describe("FundingResolver.order", () => {
  it.each(expected)("%s with %j → %j", (preference, [, availability], order) => {
    expect(FundingResolver.order(preference, availability)).toStrictEqual(order)
  })

  it("uses the role ids it is given", () => {
    const roles = { wallet: "purse", subscription: "plan" }
    expect(FundingResolver.order("subscription_first", { available: true, allowFallback: true }, roles)).toStrictEqual([
      "plan",
      "purse"
    ])
    expect(FundingResolver.order("wallet_first", { available: true, allowFallback: true }, roles)).toStrictEqual([
      "purse",
      "plan"
    ])
    expect(FundingResolver.order("wallet_only", undefined, roles)).toStrictEqual(["purse"])
  })

  it("the *_only preferences never offer a second source", () => {
    for (const [, availability] of [none, unavailable, noFallback, withFallback]) {
      expect(FundingResolver.order("wallet_only", availability)).toHaveLength(1)
      expect(FundingResolver.order("subscription_only", availability)).toHaveLength(1)
    }
  })
})

describe("FundingResolver.resolve", () => {
  const stub = (id: string, availability?: Availability): FundingSource & { reads: number } => {
    const source = {
      id,
      reads: 0,
      reserve: () => Effect.die("unused"),
      settle: () => Effect.die("unused"),
      refund: () => Effect.die("unused"),
      ...(availability
        ? { availability: () => Effect.sync(() => (source.reads++, availability)) }
        : {})
    }
    return source
  }

  it.effect("subscription_first reads the subscription's availability", () =>
    Effect.gen(function*() {
      const subscription = stub("subscription", { available: true, allowFallback: false })
      const registry = FundingRegistry.make({ funding: [stub("wallet"), subscription] })
      expect(yield* FundingResolver.resolve(registry, "subscription_first", "acct")).toStrictEqual(["subscription"])
      expect(subscription.reads).toBe(1)
    }))

  it.effect("wallet_first does not need the subscription's availability", () =>
    Effect.gen(function*() {
      const subscription = stub("subscription", { available: false, allowFallback: false })
      const registry = FundingRegistry.make({ funding: [stub("wallet"), subscription] })
      expect(yield* FundingResolver.resolve(registry, "wallet_first", "acct")).toStrictEqual(["wallet", "subscription"])
      expect(subscription.reads).toBe(0)
    }))

  it.effect("without a subscription source, subscription_first goes to the wallet", () =>
    Effect.gen(function*() {
      const registry = FundingRegistry.make({ funding: [stub("wallet")] })
      expect(yield* FundingResolver.resolve(registry, "subscription_first", "acct")).toStrictEqual(["wallet"])
    }))

  it.effect("subscription_only without a subscription source fails with UnknownSource", () =>
    Effect.gen(function*() {
      const registry = FundingRegistry.make({ funding: [stub("wallet")] })
      const exit = yield* Effect.exit(FundingResolver.resolve(registry, "subscription_only", "acct"))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.findErrorOption(exit)
      expect(error._tag === "Some" && error.value._tag).toBe("UnknownSource")
      expect(error._tag === "Some" && error.value.message).toContain("\"subscription\"")
    }))
})
