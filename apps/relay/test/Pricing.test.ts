import { Effect, Exit } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Config from "../src/Config.js"
import * as Pricing from "../src/Pricing.js"

const mini = { modelRatio: 0.075, completionRatio: 4 }

describe("Pricing.estimate (token models)", () => {
  it("P = ceil((max(promptEstimate, minPreConsumeTokens) + maxTokens × completionRatio) × modelRatio × groupRatio)", () => {
    // (max(120, 500) + 1000 × 4) × 0.075 × 1 = 337.5 → 338
    expect(
      Pricing.estimate({ price: mini, groupRatio: 1, promptEstimate: 120, maxTokens: 1000, minPreConsumeTokens: 500 })
    )
      .toBe(338)
    // the prompt estimate wins over the minimum: (800 + 0) × 0.075 = 60
    expect(
      Pricing.estimate({ price: mini, groupRatio: 1, promptEstimate: 800, maxTokens: 0, minPreConsumeTokens: 500 })
    )
      .toBe(60)
    // group ratio: (500 + 100 × 4) × 0.075 × 0.8 = 54
    expect(
      Pricing.estimate({ price: mini, groupRatio: 0.8, promptEstimate: 10, maxTokens: 100, minPreConsumeTokens: 500 })
    )
      .toBe(54)
  })

  it("is exact where floating point is not: 3 × 0.1 × 10 is 3, not 4", () => {
    expect(3 * 0.1 * 10).toBeGreaterThan(3) // the float trap
    expect(
      Pricing.estimate({
        price: { modelRatio: 0.1, completionRatio: 1 },
        groupRatio: 10,
        promptEstimate: 3,
        maxTokens: 0,
        minPreConsumeTokens: 0
      })
    ).toBe(3)
  })

  it("matches an exact rational computation for ratios in thousandths (property)", () => {
    fc.assert(
      fc.property(
        fc.nat(10_000),
        fc.nat(10_000),
        fc.nat(100_000),
        fc.nat(100_000),
        fc.nat(2_000),
        fc.integer({ min: 1, max: 3_000 }),
        (mr, cr, prompt, maxTokens, minPre, gr) => {
          const got = Pricing.estimate({
            price: { modelRatio: mr / 1000, completionRatio: cr / 1000 },
            groupRatio: gr / 1000,
            promptEstimate: prompt,
            maxTokens,
            minPreConsumeTokens: minPre
          })
          // (p + m·cr/1000) · mr/1000 · gr/1000 = (1000p + m·cr)·mr·gr / 10^9
          const n = (BigInt(Math.max(prompt, minPre)) * 1000n + BigInt(maxTokens) * BigInt(cr)) * BigInt(mr) *
            BigInt(gr)
          const d = 1_000_000_000n
          expect(got).toBe(Number((n + d - 1n) / d))
        }
      ),
      { numRuns: 300 }
    )
  })
})

describe("Pricing.actual (token models)", () => {
  it("A = round((prompt + completion × completionRatio) × modelRatio × groupRatio), half away from zero", () => {
    // (100 + 50 × 4) × 0.075 = 22.5 → 23
    expect(Pricing.actual({ price: mini, groupRatio: 1, promptTokens: 100, completionTokens: 50 })).toBe(23)
    // (100 + 60 × 4) × 0.075 = 25.5 → 26; × 0.8 = 20.4 → 20
    expect(Pricing.actual({ price: mini, groupRatio: 1, promptTokens: 100, completionTokens: 60 })).toBe(26)
    expect(Pricing.actual({ price: mini, groupRatio: 0.8, promptTokens: 100, completionTokens: 60 })).toBe(20)
    // 3 × 0.35 × 10 = 10.5 exactly (the float product is 10.499999999999998) → 11
    expect(3 * 0.35 * 10).toBeLessThan(10.5)
    expect(
      Pricing.actual({
        price: { modelRatio: 0.35, completionRatio: 0 },
        groupRatio: 10,
        promptTokens: 3,
        completionTokens: 0
      })
    ).toBe(11)
  })

  it("is at least 1 when there are tokens and the ratio is > 0, 0 without tokens or ratio", () => {
    // 1 × 0.075 = 0.075 → rounds to 0 → 1
    expect(Pricing.actual({ price: mini, groupRatio: 1, promptTokens: 1, completionTokens: 0 })).toBe(1)
    // only completion tokens at completionRatio 0: still ≥ 1
    expect(
      Pricing.actual({
        price: { modelRatio: 1, completionRatio: 0 },
        groupRatio: 1,
        promptTokens: 0,
        completionTokens: 5
      })
    ).toBe(1)
    expect(Pricing.actual({ price: mini, groupRatio: 1, promptTokens: 0, completionTokens: 0 })).toBe(0)
    expect(
      Pricing.actual({
        price: { modelRatio: 0, completionRatio: 4 },
        groupRatio: 1,
        promptTokens: 9,
        completionTokens: 9
      })
    )
      .toBe(0)
    expect(Pricing.actual({ price: mini, groupRatio: 0, promptTokens: 9, completionTokens: 9 })).toBe(0)
  })

  it("keeps huge token counts exact and safe", () => {
    const prompt = 2 ** 50 // 1125899906842624 × 0.075 = 84442493013196.8
    expect(Pricing.actual({ price: mini, groupRatio: 1, promptTokens: prompt, completionTokens: 0 })).toBe(
      84442493013197
    )
    expect(
      Pricing.estimate({ price: mini, groupRatio: 1, promptEstimate: prompt, maxTokens: 0, minPreConsumeTokens: 0 })
    )
      .toBe(84442493013197)
    const saturated = Pricing.actual({
      price: { modelRatio: 1000, completionRatio: 1000 },
      groupRatio: 1000,
      promptTokens: Number.MAX_SAFE_INTEGER,
      completionTokens: Number.MAX_SAFE_INTEGER
    })
    expect(saturated).toBe(Number.MAX_SAFE_INTEGER)
    expect(Number.isSafeInteger(saturated)).toBe(true)
  })

  it("refuses token counts that are not non-negative safe integers (a defect)", () => {
    expect(() => Pricing.actual({ price: mini, groupRatio: 1, promptTokens: -1, completionTokens: 0 })).toThrow(
      RangeError
    )
    expect(() => Pricing.actual({ price: mini, groupRatio: 1, promptTokens: 1.5, completionTokens: 0 })).toThrow(
      RangeError
    )
  })
})

describe("Pricing.fixed (priced models)", () => {
  it("P = A = round(price × quotaPerUnit × groupRatio)", () => {
    expect(Pricing.fixed({ price: { price: 0.04 }, quotaPerUnit: 500_000, groupRatio: 1 })).toBe(20_000)
    expect(Pricing.fixed({ price: { price: 0.04 }, quotaPerUnit: 500_000, groupRatio: 0.8 })).toBe(16_000)
    expect(Pricing.fixed({ price: { price: 0.075 }, quotaPerUnit: 1000, groupRatio: 1 })).toBe(75)
    // 1.005 × 1000 is 1004.9999999999999 in floating point; exactly 1005
    expect(Pricing.fixed({ price: { price: 1.005 }, quotaPerUnit: 1000, groupRatio: 1 })).toBe(1005)
    // halves round away from zero, below-halves down
    expect(Pricing.fixed({ price: { price: 0.000003 }, quotaPerUnit: 500_000, groupRatio: 1 })).toBe(2) // 1.5
    expect(Pricing.fixed({ price: { price: 0.0000025 }, quotaPerUnit: 500_000, groupRatio: 1 })).toBe(1) // 1.25
    expect(Pricing.fixed({ price: { price: 0 }, quotaPerUnit: 500_000, groupRatio: 1 })).toBe(0)
  })
})

describe("Pricing.embeddings", () => {
  it("A = round(prompt × modelRatio × groupRatio), at least 1 when prompt > 0", () => {
    const price = { modelRatio: 0.01, completionRatio: 1 }
    expect(Pricing.embeddings({ price, groupRatio: 1, promptTokens: 250 })).toBe(3) // 2.5 → 3
    expect(Pricing.embeddings({ price, groupRatio: 1, promptTokens: 240 })).toBe(2) // 2.4 → 2
    expect(Pricing.embeddings({ price, groupRatio: 1, promptTokens: 10 })).toBe(1) // 0.1 → ≥ 1
    expect(Pricing.embeddings({ price, groupRatio: 1, promptTokens: 0 })).toBe(0)
  })
})

describe("Pricing on client disconnect and broken streams", () => {
  const base = { price: mini, groupRatio: 1, quotaPerUnit: 500_000, promptEstimate: 1000, reserved: 400 }

  it("charge-prompt: the prompt part only, upstream count when known, else the estimate, capped", () => {
    // estimate: 1000 × 0.075 = 75
    expect(Pricing.onClientDisconnect({ ...base, policy: "charge-prompt", streamedCompletionTokens: 500 }))
      .toEqual(Pricing.charge(75))
    // upstream's count: 1010 × 0.075 = 75.75 → 76
    expect(
      Pricing.onClientDisconnect({
        ...base,
        policy: "charge-prompt",
        upstreamPromptTokens: 1010,
        streamedCompletionTokens: 500
      })
    ).toEqual(Pricing.charge(76))
    // never more than the reservation
    expect(Pricing.onClientDisconnect({ ...base, reserved: 50, policy: "charge-prompt", streamedCompletionTokens: 0 }))
      .toEqual(Pricing.charge(50))
    expect(Pricing.promptPart({ price: mini, groupRatio: 0.8, promptTokens: 1000, reserved: 1000 })).toBe(60)
  })

  it("charge-streamed: prompt part plus the streamed completion tokens, capped at the reservation", () => {
    // (1000 + 30 × 4) × 0.075 = 84
    expect(Pricing.onClientDisconnect({ ...base, policy: "charge-streamed", streamedCompletionTokens: 30 }))
      .toEqual(Pricing.charge(84))
    // (1000 + 2000 × 4) × 0.075 = 675 > 400 → 400
    expect(Pricing.onClientDisconnect({ ...base, policy: "charge-streamed", streamedCompletionTokens: 2000 }))
      .toEqual(Pricing.charge(400))
  })

  it("refund: nothing", () => {
    expect(Pricing.onClientDisconnect({ ...base, policy: "refund", streamedCompletionTokens: 30 })).toEqual(
      Pricing.refund
    )
  })

  it("a fixed-price model costs its price under both charging policies", () => {
    const fixed = { ...base, price: { price: 0.04 }, reserved: 20_000 }
    expect(Pricing.onClientDisconnect({ ...fixed, policy: "charge-prompt", streamedCompletionTokens: 0 }))
      .toEqual(Pricing.charge(20_000))
    expect(Pricing.onClientDisconnect({ ...fixed, policy: "refund", streamedCompletionTokens: 0 })).toEqual(
      Pricing.refund
    )
  })

  it("broken stream: prompt estimate + streamed completion tokens, capped; refund when nothing streamed", () => {
    const broken = { price: mini, groupRatio: 1, promptEstimate: 100, reserved: 400 }
    // (100 + 30 × 4) × 0.075 = 16.5 → 17
    expect(Pricing.onBrokenStream({ ...broken, streamedCompletionTokens: 30 })).toEqual(Pricing.charge(17))
    expect(Pricing.onBrokenStream({ ...broken, reserved: 10, streamedCompletionTokens: 30 })).toEqual(
      Pricing.charge(10)
    )
    expect(Pricing.onBrokenStream({ ...broken, streamedCompletionTokens: 0 })).toEqual(Pricing.refund)
  })
})

describe("Pricing.priceOf", () => {
  it("finds the entry, refuses an unpriced model and an unknown one with typed errors", async () => {
    const config = await Effect.runPromise(
      Config.decodeConfig({
        models: { demo: { modelRatio: 1, completionRatio: 1 }, img: { price: 0.04 } },
        channels: [{ name: "a", baseUrl: "http://127.0.0.1:9/v1", models: ["demo", "img", "unpriced"] }]
      })
    )
    expect(await Effect.runPromise(Pricing.priceOf(config, "demo"))).toEqual({ modelRatio: 1, completionRatio: 1 })
    expect(Config.isFixedPrice(await Effect.runPromise(Pricing.priceOf(config, "img")))).toBe(true)

    const unpriced = await Effect.runPromiseExit(Effect.flip(Pricing.priceOf(config, "unpriced")))
    expect(Exit.isSuccess(unpriced)).toBe(true)
    const e1 = (unpriced as Exit.Success<Pricing.ModelPriceError | Pricing.ModelNotFound>).value
    expect(e1).toBeInstanceOf(Pricing.ModelPriceError)
    expect(e1.code).toBe("model_price_error")
    expect(e1.status).toBe(400)
    expect(e1.model).toBe("unpriced")

    const e2 = await Effect.runPromise(Effect.flip(Pricing.priceOf(config, "nope")))
    expect(e2).toBeInstanceOf(Pricing.ModelNotFound)
    expect(e2.code).toBe("model_not_found")
    // an inherited property is not a model
    const e3 = await Effect.runPromise(Effect.flip(Pricing.priceOf(config, "toString")))
    expect(e3._tag).toBe("ModelNotFound")
  })
})
