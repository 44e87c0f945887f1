import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import * as Preference from "../src/Preference.js"

describe("Preference.normalize", () => {
  it.each(["subscription_first", "wallet_first", "subscription_only", "wallet_only"] as const)("keeps %s", (value) => {
    expect(Preference.normalize(value)).toBe(value)
  })

  it.each([
    ["  wallet_only  ", "wallet_only"],
    ["\twallet_first\n", "wallet_first"],
    [" subscription_only", "subscription_only"]
  ] as const)("trims %j to %s", (input, expected) => {
    expect(Preference.normalize(input)).toBe(expected)
  })

  it.each([["empty", ""], ["blank", "   "], ["null", null], ["undefined", undefined], ["unknown", "cheapest_first"], [
    "a near miss",
    "wallet-only"
  ]] as const)("maps %s to subscription_first", (_, input) => {
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
