/**
 * Issue 8 #14, #15 and the usedQuota part of #10 through the relay's admin API,
 * on every database: `POST /admin/holds/:requestId/corrections`, the account's
 * `usedQuota` shown by the admin API equal to the SDK's counter, and the audit
 * reporting a tampered `used_quota`.
 */
import { BillingSession } from "@relay-billing/core"
import { KnexClient, TestDatabase } from "@relay-billing/knex"
import { Subscription } from "@relay-billing/subscription"
import { WalletAdmin } from "@relay-billing/wallet"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Harness, startAdmin } from "./support/AdminHarness.js"

describe.each(TestDatabase.targets())("corrections and usedQuota in the admin API on $name", (target) => {
  let h: Harness
  beforeAll(async () => {
    h = await startAdmin(target)
  }, 60_000)
  afterAll(async () => {
    await h?.close()
  })

  const newAccount = async (quota: number) => {
    const r = await h.call("POST", "/admin/accounts", { quota })
    expect(r.status).toBe(201)
    return r.body.id as string
  }

  /** The SDK's own counter for an account (not through the admin API). */
  const sdkUsedQuota = (accountId: string) =>
    h.run(Effect.gen(function*() {
      const admin = yield* WalletAdmin.WalletAdmin
      return (yield* admin.account(accountId)).usedQuota
    }))

  const settle = (
    holdId: string,
    accountId: string,
    estimate: number,
    actual: number,
    extra: Record<string, unknown> = {}
  ) =>
    h.run(Effect.flatMap(
      BillingSession.open({ holdId, accountId, estimate, preference: "wallet_only", ...extra }),
      (s) => s.settle(actual)
    ))

  it("issue 8 #15: after a settle with unbilled overflow the SDK counter and GET /admin/accounts/:id show the same usedQuota", async () => {
    const accountId = await newAccount(50_000)
    const plan = await h.call("POST", "/admin/plans", {
      title: "Capped",
      totalAmount: 1_000,
      resetPeriod: "never",
      durationSeconds: 86_400,
      allowWalletOverflow: false
    })
    await h.call("POST", "/admin/subscriptions", { accountId, planId: plan.body.id })
    const holdId = `u15-${target.name}`
    await h.run(Effect.flatMap(
      BillingSession.open({ holdId, accountId, estimate: 600, preference: "subscription_only" }),
      (s) => s.settle(1_500)
    ))
    expect((await h.call("GET", `/admin/holds/${holdId}`)).body).toMatchObject({ actual: 1_500, unbilled: 500 })
    const shown = (await h.call("GET", `/admin/accounts/${accountId}`)).body.usedQuota
    expect(await sdkUsedQuota(accountId)).toBe(1_000)
    expect(shown).toBe(1_000)
    expect((await h.call("GET", "/admin/audit")).body).toEqual({ ok: true, problems: [] })
  })

  it("issue 8 #14: POST /admin/holds/:requestId/corrections gives part of a settled charge back, idempotent by id", async () => {
    const accountId = await newAccount(100_000)
    const token = await h.call("POST", "/admin/tokens", { accountId, remainQuota: 50_000 })
    const tokenId = token.body.id as string
    const holdId = `c14-${target.name}`
    await settle(holdId, accountId, 3_000, 2_000, { tokenId })

    const first = await h.call("POST", `/admin/holds/${holdId}/corrections`, { amount: 1_500, id: "ticket-1" })
    expect(first.status).toBe(200)
    expect(first.body).toEqual({
      requestId: holdId,
      id: "ticket-1",
      amount: 1_500,
      remaining: 500,
      parts: [
        { source: "wallet", ref: accountId, amount: 1_500 },
        { source: "token", ref: tokenId, amount: 1_500 }
      ],
      correctedAt: expect.any(String)
    })
    expect((await h.call("GET", `/admin/accounts/${accountId}`)).body).toMatchObject({
      quota: 99_500,
      usedQuota: 500,
      requestCount: 1
    })
    expect((await h.call("GET", `/admin/tokens/${tokenId}`)).body).toMatchObject({
      remainQuota: 49_500,
      usedQuota: 500
    })
    expect(await sdkUsedQuota(accountId)).toBe(500)

    // the same id and amount: the first result, nothing moves
    const again = await h.call("POST", `/admin/holds/${holdId}/corrections`, { amount: 1_500, id: "ticket-1" })
    expect(again.status).toBe(200)
    expect(again.body).toEqual(first.body)
    expect((await h.call("GET", `/admin/accounts/${accountId}`)).body.quota).toBe(99_500)

    // the same id with another amount: 409
    const conflict = await h.call("POST", `/admin/holds/${holdId}/corrections`, { amount: 100, id: "ticket-1" })
    expect(conflict.status).toBe(409)
    expect(conflict.body.error).toMatchObject({ code: "idempotency_conflict", field: "id" })

    // more than what is still charged: 409 naming the amount, nothing moves
    const over = await h.call("POST", `/admin/holds/${holdId}/corrections`, { amount: 501, id: "ticket-2" })
    expect(over.status).toBe(409)
    expect(over.body.error).toMatchObject({ code: "correction_exceeds_charge", field: "amount" })
    expect(over.body.error.message).toContain("501")
    expect(over.body.error.message).toContain("500")
    expect((await h.call("GET", `/admin/accounts/${accountId}`)).body).toMatchObject({ quota: 99_500, usedQuota: 500 })

    expect((await h.call("GET", "/admin/audit")).body).toEqual({ ok: true, problems: [] })
  })

  it("issue 8 #14: the corrections route answers 404 for an unknown request, 409 for one not settled, 400 for a bad body, 401 without the key", async () => {
    const accountId = await newAccount(10_000)
    const unknown = await h.call("POST", "/admin/holds/req-nope/corrections", { amount: 1, id: "x" })
    expect(unknown.status).toBe(404)
    expect(unknown.body.error).toMatchObject({ code: "not_found", field: "requestId" })

    const pendingId = `c14-pending-${target.name}`
    await h.run(BillingSession.open({ holdId: pendingId, accountId, estimate: 100, preference: "wallet_only" }))
    const pending = await h.call("POST", `/admin/holds/${pendingId}/corrections`, { amount: 1, id: "x" })
    expect(pending.status).toBe(409)
    expect(pending.body.error).toMatchObject({ code: "hold_not_settled", field: "requestId" })

    const settledId = `c14-bad-${target.name}`
    await settle(settledId, accountId, 100, 100)
    for (
      const [body, field] of [
        [{ amount: 0, id: "x" }, "amount"],
        [{ amount: -1, id: "x" }, "amount"],
        [{ amount: 1.5, id: "x" }, "amount"],
        [{ amount: "10", id: "x" }, "amount"],
        [{ amount: 1 }, "id"],
        [{ amount: 1, id: "" }, "id"],
        [{ amount: 1, id: "x", extra: true }, "extra"]
      ] as const
    ) {
      const r = await h.call("POST", `/admin/holds/${settledId}/corrections`, body)
      expect(r.status, JSON.stringify(body)).toBe(400)
      expect(r.body.error).toMatchObject({ code: "invalid_request", field })
    }
    const noKey = await h.call("POST", `/admin/holds/${settledId}/corrections`, { amount: 1, id: "x" }, { key: null })
    expect(noKey.status).toBe(401)
    expect((await h.call("GET", `/admin/accounts/${accountId}`)).body).toMatchObject({ quota: 9_800, usedQuota: 100 })
  })

  // last: it corrupts the shared database on purpose
  it("issue 8 #10: the audit reports used_quota += 5000 written by raw SQL, naming the account", async () => {
    const accountId = await newAccount(10_000)
    await settle(`a10-${target.name}`, accountId, 1_000, 700)
    await h.call("POST", `/admin/holds/a10-${target.name}/corrections`, { amount: 200, id: "c" })
    expect((await h.call("GET", "/admin/audit")).body).toEqual({ ok: true, problems: [] })
    await h.run(Effect.gen(function*() {
      const c = yield* KnexClient.KnexClient
      const counters = Subscription.auditCounters
      yield* c.query(
        "test.tamper",
        (db) =>
          db(c.table(counters.table)).where({ [counters.idColumn]: accountId }).update({
            [counters.usedColumn]: db.raw(`${counters.usedColumn} + 5000`)
          })
      )
    }))
    const audit = await h.call("GET", "/admin/audit")
    expect(audit.body.ok).toBe(false)
    const mine = (audit.body.problems as Array<string>).filter((p) => p.includes(accountId))
    expect(mine).toHaveLength(1)
    expect(mine[0]).toContain("5500")
    expect(mine[0]).toContain("500")
  })
})
