import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { allocate } from "../src/internal/allocate.js"

describe("internal/allocate", () => {
  it("no parts → nothing to allocate", () => {
    expect(allocate([], 0)).toStrictEqual([])
    expect(allocate([], 100)).toStrictEqual([])
  })

  it("a single part carries the actual cost, below or above its reservation", () => {
    expect(allocate([30_000], 12_000)).toStrictEqual([12_000])
    expect(allocate([30_000], 45_000)).toStrictEqual([45_000])
    expect(allocate([30_000], 30_000)).toStrictEqual([30_000])
    expect(allocate([30_000], 0)).toStrictEqual([0])
    expect(allocate([0], 7)).toStrictEqual([7])
  })

  it("several parts: the extra above the total reservation goes to the last part", () => {
    expect(allocate([100, 50], 200)).toStrictEqual([100, 100])
    expect(allocate([100, 50, 25], 176)).toStrictEqual([100, 50, 26])
    expect(allocate([100, 0], 130)).toStrictEqual([100, 30])
  })

  it("several parts: a shortfall is given back from the last part first", () => {
    expect(allocate([100, 50], 120)).toStrictEqual([100, 20])
    expect(allocate([100, 50], 100)).toStrictEqual([100, 0])
    expect(allocate([100, 50], 30)).toStrictEqual([30, 0])
    expect(allocate([100, 50, 25], 110)).toStrictEqual([100, 10, 0])
    expect(allocate([100, 50, 25], 0)).toStrictEqual([0, 0, 0])
  })

  it("does not modify its input", () => {
    const reserved = [100, 50]
    allocate(reserved, 10)
    expect(reserved).toStrictEqual([100, 50])
  })

  it("property: the allocation sums to the actual cost, is non-negative, and fills parts in order", () => {
    const amount = fc.integer({ min: 0, max: 1_000_000_000_000 })
    fc.assert(
      fc.property(fc.array(amount, { minLength: 1, maxLength: 6 }), amount, (reserved, actual) => {
        const out = allocate(reserved, actual)
        const total = reserved.reduce((a, b) => a + b, 0)
        expect(out).toHaveLength(reserved.length)
        expect(out.reduce((a, b) => a + b, 0)).toBe(actual)
        for (const x of out) expect(Number.isSafeInteger(x) && x >= 0).toBe(true)
        if (actual >= total) {
          // every part keeps its reservation, the last one takes the rest
          expect(out.slice(0, -1)).toStrictEqual(reserved.slice(0, -1))
        } else {
          // no part carries more than it reserved, and the parts are filled in order:
          // full parts, at most one partial part, then empty parts
          reserved.forEach((r, i) => expect(out[i]).toBeLessThanOrEqual(r))
          const partial = out.findIndex((x, i) => x < reserved[i]!)
          expect(out.slice(0, partial)).toStrictEqual(reserved.slice(0, partial))
          expect(out.slice(partial + 1).every((x) => x === 0)).toBe(true)
        }
      }),
      { numRuns: 500 }
    )
  })
})
