import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { FundingRegistry } from "../src/FundingRegistry.js"
import * as FundingResolver from "../src/FundingResolver.js"
import type { Availability, FundingSource } from "../src/FundingSource.js"
import * as Preference from "../src/Preference.js"

type Case = readonly [label: string, availability: Availability | undefined]
const none: Case = ["no subscription source", undefined]
const unavailable: Case = ["no active subscription", { available: false, allowFallback: true }]
const noFallback: Case = ["an active subscription that forbids wallet overflow", {
  available: true,
  allowFallback: false
}]
const withFallback: Case = ["an active subscription that allows wallet overflow", {
  available: true,
  allowFallback: true
}]

// The spec's §2.1 for every preference × subscription availability.
const expected: ReadonlyArray<readonly [Preference.Preference, Case, ReadonlyArray<string>]> = [
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

describe("FundingResolver chains", () => {
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

  it("the built-in names are aliases for chains of the roles", () => {
    expect(FundingResolver.chainOf("subscription_first")).toStrictEqual(["subscription", "wallet"])
    expect(FundingResolver.chainOf("wallet_first")).toStrictEqual(["wallet", "subscription"])
    expect(FundingResolver.chainOf("subscription_only")).toStrictEqual(["subscription"])
    expect(FundingResolver.chainOf("wallet_only")).toStrictEqual(["wallet"])
    expect(FundingResolver.chainOf(" wallet_only ", { wallet: "purse", subscription: "plan" })).toStrictEqual(["purse"])
    expect(FundingResolver.chainOf("nonsense")).toStrictEqual(["subscription", "wallet"])
    const custom = { vouchers_first: ["vouchers", "subscription", "wallet"] }
    expect(FundingResolver.chainOf("vouchers_first", undefined, custom)).toStrictEqual(custom.vouchers_first)
    expect(FundingResolver.chainOf("vouchers_first")).toStrictEqual(["subscription", "wallet"])
  })

  // The generic walk over the aliases reproduces today's ordering rule exactly, for every
  // preference × subscription availability × whether the subscription is registered.
  // (every case: 4 × 5 × 2)
  const availabilities: ReadonlyArray<Availability | undefined> = [
    undefined,
    { available: false, allowFallback: true },
    { available: false, allowFallback: false },
    { available: true, allowFallback: false },
    { available: true, allowFallback: true }
  ]
  it.effect("resolve over an alias equals order (restricted to registered sources)", () =>
    Effect.gen(function*() {
      let cases = 0
      for (const preference of Preference.builtins) {
        for (const availability of availabilities) {
          for (const registered of [true, false]) {
            const funding = [stub("wallet"), ...(registered ? [stub("subscription", availability)] : [])]
            const registry = FundingRegistry.make({ funding })
            const legacy = FundingResolver.order(
              preference,
              registered ? availability ?? { available: true, allowFallback: true } : undefined
            ).filter((id) => registry.hasFunding(id))
            const exit = yield* Effect.exit(FundingResolver.resolve(registry, preference, "acct"))
            const label = `${preference} ${JSON.stringify(availability)} registered=${registered}`
            if (legacy.length === 0) expect(Exit.isFailure(exit), label).toBe(true)
            else expect(exit, label).toStrictEqual(Exit.succeed(legacy))
            cases++
          }
        }
      }
      expect(cases).toBe(40)
    }))

  it.effect("a custom chain skips unavailable sources and ends after one that forbids fallback", () =>
    Effect.gen(function*() {
      const vouchers = stub("vouchers", { available: false, allowFallback: true })
      const plan = stub("subscription", { available: true, allowFallback: false })
      const wallet = stub("wallet")
      const registry = FundingRegistry.make({ funding: [wallet, plan, vouchers] })
      const custom = { vouchers_first: ["vouchers", "subscription", "wallet"], plain: ["vouchers", "wallet"] }
      expect(yield* FundingResolver.resolve(registry, "vouchers_first", "acct", undefined, custom)).toStrictEqual([
        "subscription"
      ])
      expect(yield* FundingResolver.resolve(registry, "plain", "acct", undefined, custom)).toStrictEqual(["wallet"])
      // The last source is kept without asking: it answers its own shortfall.
      expect(yield* FundingResolver.resolve(registry, "last", "acct", undefined, { last: ["wallet", "vouchers"] }))
        .toStrictEqual(["wallet", "vouchers"])
      expect(vouchers.reads).toBe(2)
      expect(plan.reads).toBe(1)
    }))

  it.effect("walk keeps available sources in order and propagates the availability's failure", () =>
    Effect.gen(function*() {
      const ok = yield* FundingResolver.walk(
        ["a", "b", "c"],
        () => Effect.succeed({ available: true, allowFallback: true })
      )
      expect(ok).toStrictEqual(["a", "b", "c"])
      const failed = yield* Effect.flip(FundingResolver.walk(["a", "b"], (id) => Effect.fail(`read ${id}`)))
      expect(failed).toBe("read a")
      expect(yield* FundingResolver.walk([], () => Effect.die("never asked"))).toStrictEqual([])
    }))

  it.effect("validate refuses a chain naming an unregistered source, naming the field and value", () =>
    Effect.gen(function*() {
      const ids = ["wallet", "subscription", "vouchers"]
      const good = { vouchers_first: ["vouchers", "wallet"] }
      expect(yield* FundingResolver.validate(good, ids)).toBe(good)
      const error = yield* Effect.flip(FundingResolver.validate({ ok: ["wallet"], bad: ["wallet", "credits"] }, ids))
      expect(error._tag).toBe("InvalidInput")
      expect(error.field).toBe("preferences.bad.1")
      expect(error.value).toBe("\"credits\"")
      expect(error.message).toContain("wallet, subscription, vouchers")
      const shape = yield* Effect.flip(
        FundingResolver.validate({ wallet_first: ["wallet"] }, ids, "funding.preferences")
      )
      expect(shape.field).toBe("funding.preferences.wallet_first")
    }))
})
