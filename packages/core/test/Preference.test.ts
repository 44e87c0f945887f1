import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as Preference from "../src/Preference.js"

describe("Preference.normalize", () => {
  it.each(["subscription_first", "wallet_first", "subscription_only", "wallet_only"] as const)("keeps %s", (value) => {
    expect(Preference.normalize(value)).toBe(value)
  })

  it.each(
    [
      ["  wallet_only  ", "wallet_only"],
      ["\twallet_first\n", "wallet_first"],
      [" subscription_only", "subscription_only"]
    ] as const
  )("trims %j to %s", (input, expected) => {
    expect(Preference.normalize(input)).toBe(expected)
  })

  it.each(
    [["empty", ""], ["blank", "   "], ["null", null], ["undefined", undefined], ["unknown", "cheapest_first"], [
      "a near miss",
      "wallet-only"
    ]] as const
  )("maps %s to subscription_first", (_, input) => {
    expect(Preference.normalize(input)).toBe("subscription_first")
  })

  it("the default preference is subscription_first and the schema accepts exactly the four", () => {
    expect(Preference.defaultPreference).toBe("subscription_first")
    const is = Schema.is(Preference.Preference)
    expect(["subscription_first", "wallet_first", "subscription_only", "wallet_only"].every(is)).toBe(true)
    expect(is("wallet_only ")).toBe(false)
    expect(is("")).toBe(false)
  })
})

describe("Preference with custom chains", () => {
  const custom = { vouchers_first: ["vouchers", "wallet"], "team.plan": ["wallet"] }

  it("keeps a configured name, trimmed, and still maps unknown names to the default", () => {
    expect(Preference.normalize("vouchers_first", custom)).toBe("vouchers_first")
    expect(Preference.normalize("  team.plan\n", custom)).toBe("team.plan")
    expect(Preference.normalize("wallet_only", custom)).toBe("wallet_only")
    expect(Preference.normalize("vouchers_first")).toBe("subscription_first")
    expect(Preference.normalize("cheapest_first", custom)).toBe("subscription_first")
    // Only own keys name a chain.
    expect(Preference.normalize("constructor", custom)).toBe("subscription_first")
    expect(Preference.normalize("__proto__", custom)).toBe("subscription_first")
  })

  it("the hold's name schema accepts any name of 1 to 32 characters", () => {
    const is = Schema.is(Preference.Name)
    expect(is("vouchers_first")).toBe(true)
    expect(is("x".repeat(32))).toBe(true)
    expect(is("x".repeat(33))).toBe(false)
    expect(is("")).toBe(false)
  })

  it.effect("validateShape accepts well-formed chains", () =>
    Effect.gen(function*() {
      expect(yield* Preference.validateShape(custom)).toBe(custom)
    }))

  const invalid: ReadonlyArray<readonly [string, Preference.Chains, string, string]> = [
    ["a built-in name", { wallet_only: ["wallet"] }, "preferences.wallet_only", "\"wallet_only\""],
    ["an empty chain", { empty: [] }, "preferences.empty", "[]"],
    ["an empty id", { blank: ["wallet", ""] }, "preferences.blank.1", "\"\""],
    ["a repeated id", { twice: ["wallet", "vouchers", "wallet"] }, "preferences.twice.2", "\"wallet\""],
    ["a name with a space", { "my chain": ["wallet"] }, "preferences.my chain", "\"my chain\""],
    ["a name longer than 32", { ["n".repeat(33)]: ["wallet"] }, `preferences.${"n".repeat(33)}`, `"${"n".repeat(33)}"`]
  ]
  it.effect.each(invalid)(
    "validateShape refuses %s, naming the field and value",
    ([, chains, field, value]) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Preference.validateShape(chains))
        expect(error._tag).toBe("InvalidInput")
        expect(error.field).toBe(field)
        expect(error.value).toBe(value)
      })
  )
})
