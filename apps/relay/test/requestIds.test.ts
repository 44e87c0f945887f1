/**
 * The hold id of a request id scoped to its account (issue 9 #8): injective
 * over (account, request id), at most 191 characters, and decodable.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { holdIdOf, isRequestId, MAX_ACCOUNT_ID, parseHoldId } from "../src/internal/requestIds.js"

const visible = fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c))
const requestId = fc.array(visible, { minLength: 1, maxLength: 191 }).map((cs) => cs.join(""))
const base62 = fc.constantFrom(..."0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-.".split(""))
const accountId = fc.array(base62, { minLength: 1, maxLength: MAX_ACCOUNT_ID }).map((cs) => cs.join(""))

describe("holdIdOf", () => {
  it("keeps short pairs readable and packs long request ids", () => {
    expect(holdIdOf("acc_1", "req-1")).toBe("acc_1:req-1")
    const long = "r".repeat(191)
    const packed = holdIdOf("acc_XXXXXXXXXXXXXXXXXXXXXXXX", long)
    expect(packed.startsWith("acc_XXXXXXXXXXXXXXXXXXXXXXXX~")).toBe(true)
    expect(packed.length).toBeLessThanOrEqual(191)
    expect(parseHoldId(packed)).toEqual({ accountId: "acc_XXXXXXXXXXXXXXXXXXXXXXXX", requestId: long })
  })

  it("is injective, fits 191 characters and decodes back (property)", () => {
    fc.assert(
      fc.property(accountId, requestId, accountId, requestId, (a1, r1, a2, r2) => {
        const h1 = holdIdOf(a1, r1)
        const h2 = holdIdOf(a2, r2)
        expect(h1.length).toBeLessThanOrEqual(191)
        expect(parseHoldId(h1)).toEqual({ accountId: a1, requestId: r1 })
        expect(h1 === h2).toBe(a1 === a2 && r1 === r2)
      }),
      { numRuns: 2000 }
    )
  })

  it("the same request id of two accounts, or two ids differing in one character, are different holds", () => {
    const id = `x${"y".repeat(189)}z`
    expect(holdIdOf("acc_a", id)).not.toBe(holdIdOf("acc_b", id))
    expect(holdIdOf("acc_a", `${id.slice(0, -1)}Z`)).not.toBe(holdIdOf("acc_a", id))
    // the request id may contain the separators; the account id never does
    expect(parseHoldId(holdIdOf("acc", "a:b~c"))).toEqual({ accountId: "acc", requestId: "a:b~c" })
  })

  it("refuses what it cannot scope (checked before, a defect)", () => {
    expect(() => holdIdOf("acc:x", "r")).toThrow()
    expect(() => holdIdOf("a".repeat(MAX_ACCOUNT_ID + 1), "r")).toThrow()
    expect(() => holdIdOf("acc", "")).toThrow()
    expect(() => holdIdOf("acc", "with space")).toThrow()
    expect(isRequestId("r".repeat(192))).toBe(false)
    expect(parseHoldId("plain-legacy-id")).toBeUndefined()
  })
})
