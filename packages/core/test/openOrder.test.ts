import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { OpenRequest } from "../src/BillingSession.js"
import type { OpenInput } from "../src/internal/openOrder.js"
import { postConsumeOrder, reserveOrder } from "../src/internal/openOrder.js"

const decode = (request: typeof OpenRequest.Encoded): OpenInput => Schema.decodeUnknownSync(OpenRequest)(request)

const base = { holdId: "h", accountId: "a", tokenId: "t", estimate: 500 }

describe("internal/openOrder: an open request's flags read once into a mode (issue 10 #9.4)", () => {
  it("the decoded request is the schema's type, kept as given", () => {
    const request = decode({ ...base, preference: " wallet_first ", ttlMillis: 1000, metadata: { k: "v" } })
    const order = reserveOrder(request)
    expect(order.request).toBe(request)
    expect(order.preference).toBe("wallet_first")
  })

  it("the budgeted token: the request's token, none for a playground request or without one", () => {
    expect(reserveOrder(decode(base)).budgetedTokenId).toBe("t")
    expect(reserveOrder(decode({ ...base, playground: true })).budgetedTokenId).toBeUndefined()
    expect(reserveOrder(decode({ ...base, playground: false })).budgetedTokenId).toBe("t")
    const { tokenId: _token, ...withoutToken } = base
    expect(reserveOrder(decode(withoutToken)).budgetedTokenId).toBeUndefined()
  })

  it("reserve mode: force refuses the trust bypass; split on / off as asked, else the account's default", () => {
    expect(reserveOrder(decode(base)).mode).toEqual({ _tag: "Reserve", trustBypass: "allowed", split: "account" })
    expect(reserveOrder(decode({ ...base, force: true, split: true })).mode)
      .toEqual({ _tag: "Reserve", trustBypass: "refused", split: "on" })
    expect(reserveOrder(decode({ ...base, force: false, split: false })).mode)
      .toEqual({ _tag: "Reserve", trustBypass: "allowed", split: "off" })
  })

  it("post-consume: an estimate of 0, whatever the request's flags; its token and preference as an open's", () => {
    const order = postConsumeOrder(
      decode({ ...base, force: false, split: true, playground: true, preference: "wallet_only" })
    )
    expect(order.mode).toEqual({ _tag: "PostConsume" })
    expect(order.request.estimate).toBe(0)
    expect(order.budgetedTokenId).toBeUndefined()
    expect(order.preference).toBe("wallet_only")
  })
})
