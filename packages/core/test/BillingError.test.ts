import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as BillingError from "../src/BillingError.js"

// Every error class: an instance, its tag, its stable code, and what its message must mention.
const cases = [
  {
    error: new BillingError.InsufficientFunds({
      sourceId: "wallet",
      accountId: "acct-7",
      required: 30_000,
      available: 20_000
    }),
    tag: "InsufficientFunds",
    code: "insufficient_user_quota",
    mentions: ["wallet", "acct-7", "30000", "20000"]
  },
  {
    error: new BillingError.InsufficientFunds({
      sourceId: "subscription",
      accountId: "acct-8",
      required: 30_000,
      available: 10_000,
      reason: "subscription quota insufficient"
    }),
    tag: "InsufficientFunds",
    code: "insufficient_user_quota",
    mentions: ["subscription", "acct-8", "30000", "10000", "subscription quota insufficient"]
  },
  {
    error: new BillingError.TokenBudgetExceeded({
      budgetId: "token",
      tokenId: "tok-1",
      required: 30_000,
      remaining: 10_000
    }),
    tag: "TokenBudgetExceeded",
    code: "pre_consume_token_quota_failed",
    mentions: ["tok-1", "30000", "10000"]
  },
  {
    error: new BillingError.InvalidInput({ field: "estimate", value: "-5", reason: "must be non-negative" }),
    tag: "InvalidInput",
    code: "invalid_request",
    mentions: ["estimate", "-5", "must be non-negative"]
  },
  {
    error: new BillingError.IdempotencyConflict({
      holdId: "req-1",
      field: "estimate",
      existing: "30000",
      requested: "45000"
    }),
    tag: "IdempotencyConflict",
    code: "idempotency_conflict",
    mentions: ["req-1", "estimate", "30000", "45000"]
  },
  {
    error: new BillingError.HoldResolved({ holdId: "req-2", status: "refunded", operation: "settle" }),
    tag: "HoldResolved",
    code: "billing_hold_resolved",
    mentions: ["req-2", "refunded", "settle"]
  },
  {
    error: new BillingError.HoldNotFound({ holdId: "req-3" }),
    tag: "HoldNotFound",
    code: "billing_hold_not_found",
    mentions: ["req-3"]
  },
  {
    error: new BillingError.StoreError({ operation: "wallet.reserve", detail: "connection reset" }),
    tag: "StoreError",
    code: "billing_store_error",
    mentions: ["wallet.reserve", "connection reset"]
  },
  {
    error: new BillingError.UnknownSource({ sourceId: "stripe", kind: "funding" }),
    tag: "UnknownSource",
    code: "billing_unknown_source",
    mentions: ["funding", "\"stripe\""]
  },
  {
    error: new BillingError.ContractViolation({ sourceId: "plugin", detail: "asked to reserve 5, reported 4" }),
    tag: "ContractViolation",
    code: "billing_contract_violation",
    mentions: ["plugin", "asked to reserve 5, reported 4"]
  },
  {
    error: new BillingError.SettleIncomplete({
      holdId: "req-4",
      failedSourceId: "token",
      unbilled: 15_000,
      detail: "store down"
    }),
    tag: "SettleIncomplete",
    code: "billing_settle_incomplete",
    mentions: ["req-4", "token", "15000", "store down"]
  },
  {
    error: new BillingError.CorrectionExceedsCharge({
      holdId: "req-5",
      correctionId: "ticket-1",
      amount: 7_001,
      remaining: 7_000
    }),
    tag: "CorrectionExceedsCharge",
    code: "billing_correction_exceeds_charge",
    mentions: ["req-5", "ticket-1", "7001", "7000"]
  },
  {
    error: new BillingError.CorrectionUnsupported({ holdId: "req-6", sourceId: "stripe" }),
    tag: "CorrectionUnsupported",
    code: "billing_correction_unsupported",
    mentions: ["req-6", "stripe"]
  },
  {
    error: new BillingError.HoldInFlight({ holdId: "req-5", expiresAt: 600_000 }),
    tag: "HoldInFlight",
    code: "billing_hold_in_flight",
    mentions: ["req-5", "pending"]
  },
  {
    error: new BillingError.TokenNotFound({ tokenId: "tok-9", accountId: "acct-b" }),
    tag: "TokenNotFound",
    code: "token_not_found",
    mentions: ["tok-9", "acct-b"]
  },
  {
    error: new BillingError.AccountNotFound({ accountId: "acct-gone" }),
    tag: "AccountNotFound",
    code: "account_not_found",
    mentions: ["acct-gone"]
  },
  {
    error: new BillingError.QuotaOutOfRange({
      field: "wallet.balance",
      subjectId: "acct-c",
      current: -9_007_199_254_710_991,
      change: -9_007_199_254_710_991
    }),
    tag: "QuotaOutOfRange",
    code: "billing_quota_out_of_range",
    mentions: ["wallet.balance", "acct-c", "-9007199254710991 - 9007199254710991"]
  }
] as const

describe("BillingError", () => {
  it.each(cases)(
    "$tag has its tag, stable code $code and a message with the numbers",
    ({ code, error, mentions, tag }) => {
      expect(error._tag).toBe(tag)
      expect(error.code).toBe(code)
      expect(error).toBeInstanceOf(Error)
      for (const m of mentions) expect(error.message).toContain(m)
    }
  )

  it("covers every error class the module exports", () => {
    const exported = Object.entries(BillingError)
      .filter(([, value]) => typeof value === "function")
      .map(([name]) => name)
      .sort()
    expect(exported).toStrictEqual([...new Set(cases.map((c) => c.tag))].sort())
  })

  it("codes are distinct per class", () => {
    const byTag = new Map(cases.map((c) => [c.tag, c.code]))
    expect(new Set(byTag.values()).size).toBe(byTag.size)
  })

  it("InsufficientFunds without a reason does not print an empty reason", () => {
    const error = new BillingError.InsufficientFunds({ sourceId: "wallet", accountId: "a", required: 2, available: 1 })
    expect(error.message).toBe("insufficient funds on wallet for account a: required 2, available 1")
  })

  it("errors are yieldable and caught by tag", () =>
    Effect.runPromise(
      Effect.gen(function*() {
        const exit = yield* Effect.exit(
          Effect.gen(function*() {
            return yield* new BillingError.HoldNotFound({ holdId: "x" })
          }).pipe(Effect.catchTag("HoldNotFound", (e) => Effect.succeed(`caught ${e.holdId}`)))
        )
        expect(exit).toStrictEqual(Exit.succeed("caught x"))
      })
    ))

  describe("InvalidInput.render", () => {
    it.each(
      [
        ["a string", "abc", "\"abc\""],
        ["a number", 12, "12"],
        ["a negative number", -3, "-3"],
        ["NaN", Number.NaN, "NaN"],
        ["Infinity", Number.POSITIVE_INFINITY, "Infinity"],
        ["a bigint", 10n, "10n"],
        ["undefined", undefined, "undefined"],
        ["null", null, "null"],
        ["an object", { a: 1 }, "{\"a\":1}"]
      ] as const
    )("renders %s as %s", (_, value, rendered) => {
      expect(BillingError.InvalidInput.render(value)).toBe(rendered)
    })

    it("renders a circular object without throwing", () => {
      const circular: Record<string, unknown> = {}
      circular["self"] = circular
      expect(BillingError.InvalidInput.render(circular)).toBe("[object Object]")
    })
  })
})
