import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Schema } from "effect"
import { InvalidInput } from "../src/BillingError.js"
import * as BillingError from "../src/BillingError.js"
import * as Quota from "../src/Quota.js"

const decodeExit = (field: string, value: unknown) => Effect.runSync(Effect.exit(Quota.decode(field, value)))

const decodeError = (field: string, value: unknown): InvalidInput => {
  const exit = decodeExit(field, value)
  if (Exit.isSuccess(exit)) throw new Error(`decode(${String(value)}) should have failed, got ${exit.value}`)
  const error = Exit.findErrorOption(exit)
  if (error._tag === "None") throw new Error(`decode(${String(value)}) died instead of failing`)
  return error.value
}

describe("Quota.decode", () => {
  it.each([0, 1, 30_000, 1_000_000, Number.MAX_SAFE_INTEGER])("accepts the non-negative safe integer %d", (value) => {
    expect(decodeExit("estimate", value)).toStrictEqual(Exit.succeed(value))
    expect(Quota.isQuota(value)).toBe(true)
  })

  // [input, how its value must appear in the error]
  const invalid: ReadonlyArray<readonly [string, unknown, string]> = [
    ["negative", -1, "-1"],
    ["a large negative", -30_000, "-30000"],
    ["fractional", 1.5, "1.5"],
    ["NaN", Number.NaN, "NaN"],
    ["Infinity", Number.POSITIVE_INFINITY, "Infinity"],
    ["-Infinity", Number.NEGATIVE_INFINITY, "-Infinity"],
    ["above MAX_SAFE_INTEGER", Number.MAX_SAFE_INTEGER + 1, String(Number.MAX_SAFE_INTEGER + 1)],
    ["a numeric string", "12", "\"12\""],
    ["a bigint", 12n, "12n"],
    ["null", null, "null"],
    ["undefined", undefined, "undefined"],
    ["an object", { amount: 5 }, "{\"amount\":5}"]
  ]

  it.each(invalid)("rejects %s with an InvalidInput naming the field and the value", (_, value, rendered) => {
    const error = decodeError("estimate", value)
    expect(error).toBeInstanceOf(InvalidInput)
    expect(error._tag).toBe("InvalidInput")
    expect(error.code).toBe("invalid_request")
    expect(error.field).toBe("estimate")
    expect(error.value).toBe(rendered)
    expect(error.reason).toContain("non-negative safe integer")
    expect(error.message).toContain("estimate")
    expect(error.message).toContain(rendered)
    expect(Quota.isQuota(value)).toBe(false)
  })

  it("issue 8 #13: -0 decodes to 0", () => {
    const exit = decodeExit("actual", -0)
    expect(Exit.isSuccess(exit) && Object.is(exit.value, 0)).toBe(true)
  })

  it("issue 8 #13: addInRange refuses a result outside ±(2^53−1), typed, naming the field", () => {
    const max = Number.MAX_SAFE_INTEGER
    expect(Effect.runSync(Quota.addInRange("wallet.balance", "a", max - 1, 1))).toBe(max)
    expect(Effect.runSync(Quota.addInRange("wallet.balance", "a", -max + 1, -1))).toBe(-max)
    for (const [current, change] of [[max, 1], [-max, -1], [max, max], [-max + 5, -max]] as const) {
      const exit = Effect.runSync(Effect.exit(Quota.addInRange("token.used", "t", current, change)))
      expect(exit).toStrictEqual(
        Exit.fail(new BillingError.QuotaOutOfRange({ field: "token.used", subjectId: "t", current, change }))
      )
    }
  })

  it("uses the field name it is given", () => {
    expect(decodeError("actual", -5).field).toBe("actual")
    expect(decodeError("actual", -5).message).toBe(
      "invalid actual: -5 (expected a non-negative safe integer number of quota units)"
    )
  })

  it("agrees with the Quota schema on every input", () => {
    const is = Schema.is(Quota.Quota)
    for (
      const value of [
        0,
        1,
        1.5,
        -1,
        Number.NaN,
        Number.POSITIVE_INFINITY,
        Number.MAX_SAFE_INTEGER,
        Number.MAX_SAFE_INTEGER + 1,
        "1",
        null
      ]
    ) {
      expect(is(value), `Schema.is(Quota)(${String(value)})`).toBe(Quota.isQuota(value))
    }
  })

  it("formatUsd renders 500,000 quota as one dollar", () => {
    expect(Quota.formatUsd(500_000)).toBe("$1.000000")
    expect(Quota.formatUsd(12_345)).toBe("$0.024690")
    expect(Quota.formatUsd(1_000, 1_000)).toBe("$1.000000")
  })
})
