import { BillingSession } from "@relay-billing/core"
import { KnexClient, TestDatabase } from "@relay-billing/knex"
import { WalletAdmin } from "@relay-billing/wallet"
import { Context, Effect } from "effect"
import { TestClock } from "effect/testing"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as RelayBilling from "../src/RelayBilling.js"
import { RelayStore } from "../src/RelayStore.js"
import { type Harness, startAdmin } from "./support/AdminHarness.js"

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

const expectError = (
  response: { status: number; body: any },
  status: number,
  code: string,
  field?: string
) => {
  expect(response.status).toBe(status)
  expect(response.body.error.code).toBe(code)
  expect(typeof response.body.error.message).toBe("string")
  expect(response.body.error.message.length).toBeGreaterThan(0)
  if (status === 400) expect(response.body.error.type).toBe("invalid_request")
  if (field !== undefined) expect(response.body.error.field).toBe(field)
}

describe.each(TestDatabase.targets())("admin API on $name", (target) => {
  let h: Harness
  beforeAll(async () => {
    h = await startAdmin(target, { groups: ["default", "vip"] })
  }, 60_000)
  afterAll(async () => {
    await h?.close()
  })

  const newAccount = async (body: Record<string, unknown> = {}) => {
    const r = await h.call("POST", "/admin/accounts", body)
    expect(r.status).toBe(201)
    return r.body as { id: string; quota: number }
  }

  it("rejects a missing, wrong or non-bearer admin key with 401 invalid_api_key", async () => {
    for (const key of [null, "wrong-key", "Basic c2stYWRtaW4=", "Bearer "]) {
      for (const [method, path] of [["GET", "/admin/audit"], ["POST", "/admin/accounts"], ["GET", "/admin/logs"]]) {
        const r = await h.call(method!, path!, method === "POST" ? {} : undefined, { key })
        expectError(r, 401, "invalid_api_key")
        expect(r.body.error.type).toBe("invalid_request_error")
      }
    }
  })

  it("creates, reads and patches accounts with the exact shape", async () => {
    const created = await h.call("POST", "/admin/accounts", {
      name: "alice",
      quota: 5000,
      group: "vip",
      billingPreference: "wallet_first",
      quotaWarningThreshold: 700
    })
    expect(created.status).toBe(201)
    expect(created.body).toEqual({
      id: expect.any(String),
      name: "alice",
      quota: 5000,
      usedQuota: 0,
      requestCount: 0,
      group: "vip",
      billingPreference: "wallet_first"
    })
    const id = created.body.id as string
    const wallet = await h.run(Context.get(h.context, WalletAdmin.WalletAdmin).account(id))
    expect(wallet.lowBalanceThreshold).toBe(700)

    const read = await h.call("GET", `/admin/accounts/${id}`)
    expect(read.status).toBe(200)
    expect(read.body).toEqual(created.body)

    const defaults = await h.call("POST", "/admin/accounts", undefined)
    expect(defaults.status).toBe(201)
    expect(defaults.body).toEqual({
      id: expect.any(String),
      name: "",
      quota: 0,
      usedQuota: 0,
      requestCount: 0,
      group: "default",
      billingPreference: "subscription_first"
    })
    expect(defaults.body.id).not.toBe(id)

    const patched = await h.call("PATCH", `/admin/accounts/${id}`, {
      group: "default",
      billingPreference: "subscription_only",
      quotaWarningThreshold: 42
    })
    expect(patched.status).toBe(200)
    expect(patched.body).toEqual({ ...created.body, group: "default", billingPreference: "subscription_only" })
    const after = await h.run(Context.get(h.context, WalletAdmin.WalletAdmin).account(id))
    expect(after.lowBalanceThreshold).toBe(42)
    const reset = await h.call("PATCH", `/admin/accounts/${id}`, { quotaWarningThreshold: null })
    expect(reset.status).toBe(200)
    const cleared = await h.run(Context.get(h.context, WalletAdmin.WalletAdmin).account(id))
    expect(cleared.lowBalanceThreshold).toBeUndefined()
    expect((await h.call("GET", `/admin/accounts/${id}`)).body.group).toBe("default")
  })

  it("answers 400 naming the field for bad account bodies, 404 for unknown ids", async () => {
    expectError(await h.call("POST", "/admin/accounts", { quota: -1 }), 400, "invalid_request", "quota")
    expectError(await h.call("POST", "/admin/accounts", { quota: 1.5 }), 400, "invalid_request", "quota")
    expectError(await h.call("POST", "/admin/accounts", { quota: "10" }), 400, "invalid_request", "quota")
    expectError(
      await h.call("POST", "/admin/accounts", { billingPreference: "cheapest" }),
      400,
      "invalid_request",
      "billingPreference"
    )
    expectError(await h.call("POST", "/admin/accounts", { group: "gold" }), 400, "invalid_request", "group")
    expectError(
      await h.call("POST", "/admin/accounts", { quotaWarningThreshold: -5 }),
      400,
      "invalid_request",
      "quotaWarningThreshold"
    )
    expectError(await h.call("POST", "/admin/accounts", { name: 7 }), 400, "invalid_request", "name")
    expectError(await h.call("POST", "/admin/accounts", { qouta: 7 }), 400, "invalid_request", "qouta")
    expectError(await h.call("POST", "/admin/accounts", undefined, { raw: "{nope" }), 400, "invalid_request", "body")
    expectError(await h.call("POST", "/admin/accounts", [1, 2]), 400, "invalid_request", "body")

    expectError(await h.call("GET", "/admin/accounts/acc_missing"), 404, "not_found", "id")
    expectError(await h.call("PATCH", "/admin/accounts/acc_missing", { group: "vip" }), 404, "not_found", "id")
    expectError(await h.call("POST", "/admin/accounts/acc_missing/topup", { amount: 5 }), 404, "not_found", "id")

    const { id } = await newAccount()
    expectError(await h.call("PATCH", `/admin/accounts/${id}`, { group: "" }), 400, "invalid_request", "group")
    expectError(await h.call("PATCH", `/admin/accounts/${id}`, { quota: 5 }), 400, "invalid_request", "quota")
    expectError(await h.call("POST", `/admin/accounts/${id}/topup`, { amount: 0 }), 400, "invalid_request", "amount")
    expectError(await h.call("POST", `/admin/accounts/${id}/topup`, {}), 400, "invalid_request", "amount")
    expectError(
      await h.call("POST", `/admin/accounts/${id}/topup`, { amount: 5, idempotencyKey: "" }),
      400,
      "invalid_request",
      "idempotencyKey"
    )
    // nothing was written by the refused requests
    expect((await h.call("GET", `/admin/accounts/${id}`)).body.quota).toBe(0)
  })

  it("tops up once per idempotency key, and every time without one", async () => {
    const { id } = await newAccount({ quota: 100 })
    const first = await h.call("POST", `/admin/accounts/${id}/topup`, { amount: 250, idempotencyKey: "pay-1" })
    expect(first.status).toBe(200)
    expect(first.body).toEqual({
      id,
      name: "",
      quota: 350,
      usedQuota: 0,
      requestCount: 0,
      group: "default",
      billingPreference: "subscription_first"
    })
    const repeat = await h.call("POST", `/admin/accounts/${id}/topup`, { amount: 250, idempotencyKey: "pay-1" })
    expect(repeat.status).toBe(200)
    expect(repeat.body.quota).toBe(350)
    const other = await h.call("POST", `/admin/accounts/${id}/topup`, { amount: 50, idempotencyKey: "pay-2" })
    expect(other.body.quota).toBe(400)
    // the same key with another amount is a conflict, not a silent second top-up
    const clash = await h.call("POST", `/admin/accounts/${id}/topup`, { amount: 999, idempotencyKey: "pay-1" })
    expectError(clash, 409, "idempotency_conflict", "idempotencyKey")
    // keys are scoped to the account
    const { id: other2 } = await newAccount()
    const scoped = await h.call("POST", `/admin/accounts/${other2}/topup`, { amount: 250, idempotencyKey: "pay-1" })
    expect(scoped.body.quota).toBe(250)
    // without a key each call tops up
    await h.call("POST", `/admin/accounts/${id}/topup`, { amount: 10 })
    const twice = await h.call("POST", `/admin/accounts/${id}/topup`, { amount: 10 })
    expect(twice.body.quota).toBe(420)
    expect((await h.call("GET", `/admin/accounts/${id}`)).body.quota).toBe(420)
  })

  it("creates tokens (key shown once, stored hashed) and reads them with their status", async () => {
    const { id: accountId } = await newAccount({ quota: 1000 })
    const created = await h.call("POST", "/admin/tokens", {
      accountId,
      name: "ci",
      remainQuota: 300,
      models: ["gpt-4o-mini"],
      expiresAt: "2999-01-01T00:00:00.000Z"
    })
    expect(created.status).toBe(201)
    expect(created.body).toEqual({
      id: expect.any(String),
      key: expect.stringMatching(/^sk-[0-9A-Za-z]{48}$/),
      accountId,
      remainQuota: 300,
      usedQuota: 0,
      unlimited: false
    })
    const { id, key } = created.body as { id: string; key: string }

    const read = await h.call("GET", `/admin/tokens/${id}`)
    expect(read.status).toBe(200)
    expect(read.body).toEqual({ id, accountId, remainQuota: 300, usedQuota: 0, unlimited: false, status: "active" })
    expect(JSON.stringify(read.body)).not.toContain(key)

    // the database holds the SHA-256 of the key, never the key
    const rows = await h.run(
      Effect.gen(function*() {
        const c = yield* KnexClient.KnexClient
        return yield* c.query("test.tokens", (db) => db(c.table("relay_tokens")).select("*"))
      })
    )
    const dump = JSON.stringify(rows)
    expect(dump).not.toContain(key)
    expect(dump).not.toContain(key.slice(3))
    const row = (rows as Array<Record<string, unknown>>).find((r) => r["id"] === id)!
    const { createHash } = await import("node:crypto")
    expect(row["key_hash"]).toBe(createHash("sha256").update(key).digest("hex"))

    const unlimited = await h.call("POST", "/admin/tokens", { accountId })
    expect(unlimited.status).toBe(201)
    expect(unlimited.body).toMatchObject({ accountId, remainQuota: 0, usedQuota: 0, unlimited: true })
    expect(unlimited.body.key).not.toBe(key)

    const disabled = await h.call("PATCH", `/admin/tokens/${id}`, { status: "disabled" })
    expect(disabled.status).toBe(200)
    expect(disabled.body.status).toBe("disabled")
    const expired = await h.call("POST", "/admin/tokens", { accountId, expiresAt: "2001-01-01T00:00:00Z" })
    expect((await h.call("GET", `/admin/tokens/${expired.body.id}`)).body.status).toBe("expired")
  })

  it("answers 400/404 for bad token bodies and unknown ids", async () => {
    const { id: accountId } = await newAccount()
    expectError(await h.call("POST", "/admin/tokens", {}), 400, "invalid_request", "accountId")
    expectError(await h.call("POST", "/admin/tokens", { accountId: "acc_nope" }), 404, "not_found", "accountId")
    expectError(
      await h.call("POST", "/admin/tokens", { accountId, remainQuota: -1 }),
      400,
      "invalid_request",
      "remainQuota"
    )
    expectError(
      await h.call("POST", "/admin/tokens", { accountId, unlimited: "yes" }),
      400,
      "invalid_request",
      "unlimited"
    )
    expectError(await h.call("POST", "/admin/tokens", { accountId, models: "gpt" }), 400, "invalid_request", "models")
    expectError(
      await h.call("POST", "/admin/tokens", { accountId, models: ["ok", ""] }),
      400,
      "invalid_request",
      "models.1"
    )
    expectError(
      await h.call("POST", "/admin/tokens", { accountId, expiresAt: "tomorrow" }),
      400,
      "invalid_request",
      "expiresAt"
    )
    expectError(await h.call("GET", "/admin/tokens/tok_nope"), 404, "not_found", "id")
    expectError(await h.call("PATCH", "/admin/tokens/tok_nope", { status: "disabled" }), 404, "not_found", "id")
  })

  it("creates plans and subscriptions with the exact shapes", async () => {
    const plan = await h.call("POST", "/admin/plans", {
      title: "Pro",
      totalAmount: 10_000,
      resetPeriod: "monthly",
      durationSeconds: 30 * 86_400
    })
    expect(plan.status).toBe(201)
    expect(plan.body).toEqual({
      id: expect.any(String),
      title: "Pro",
      totalAmount: 10_000,
      resetPeriod: "monthly",
      durationSeconds: 2_592_000,
      allowWalletOverflow: true
    })
    const custom = await h.call("POST", "/admin/plans", {
      title: "Burst",
      totalAmount: 0,
      resetPeriod: "custom",
      resetSeconds: 3600,
      durationSeconds: 86_400,
      allowWalletOverflow: false
    })
    expect(custom.body).toEqual({
      id: expect.any(String),
      title: "Burst",
      totalAmount: 0,
      resetPeriod: "custom",
      resetSeconds: 3600,
      durationSeconds: 86_400,
      allowWalletOverflow: false
    })

    const { id: accountId } = await newAccount()
    const before = Date.now()
    const sub = await h.call("POST", "/admin/subscriptions", { accountId, planId: plan.body.id })
    expect(sub.status).toBe(201)
    expect(sub.body).toEqual({
      id: expect.any(String),
      accountId,
      planId: plan.body.id,
      amountTotal: 10_000,
      amountUsed: 0,
      startAt: expect.stringMatching(ISO),
      endAt: expect.stringMatching(ISO),
      status: "active"
    })
    const startAt = Date.parse(sub.body.startAt)
    expect(startAt).toBeGreaterThanOrEqual(before - 1000)
    expect(Date.parse(sub.body.endAt) - startAt).toBe(2_592_000_000)
    const read = await h.call("GET", `/admin/subscriptions/${sub.body.id}`)
    expect(read.status).toBe(200)
    expect(read.body).toEqual(sub.body)

    expectError(
      await h.call("POST", "/admin/plans", { title: "x", totalAmount: 1, resetPeriod: "yearly", durationSeconds: 1 }),
      400,
      "invalid_request",
      "resetPeriod"
    )
    expectError(
      await h.call("POST", "/admin/plans", { title: "x", totalAmount: 1, resetPeriod: "custom", durationSeconds: 1 }),
      400,
      "invalid_request",
      "resetSeconds"
    )
    expectError(
      await h.call("POST", "/admin/plans", { title: "", totalAmount: 1, resetPeriod: "never", durationSeconds: 1 }),
      400,
      "invalid_request",
      "title"
    )
    expectError(
      await h.call("POST", "/admin/plans", { title: "x", totalAmount: 1, resetPeriod: "never" }),
      400,
      "invalid_request",
      "durationSeconds"
    )
    expectError(
      await h.call("POST", "/admin/plans", { title: "x", totalAmount: -3, resetPeriod: "never", durationSeconds: 1 }),
      400,
      "invalid_request",
      "totalAmount"
    )
    expectError(await h.call("POST", "/admin/subscriptions", { accountId }), 400, "invalid_request", "planId")
    expectError(
      await h.call("POST", "/admin/subscriptions", { accountId, planId: "plan_nope" }),
      404,
      "not_found",
      "planId"
    )
    expectError(
      await h.call("POST", "/admin/subscriptions", { accountId: "acc_nope", planId: plan.body.id }),
      404,
      "not_found",
      "accountId"
    )
    expectError(await h.call("GET", "/admin/subscriptions/sub_nope"), 404, "not_found", "id")
  })

  it("shows holds (pending, settled, expired), reaps them, logs requests and audits clean", async () => {
    const { id: accountId } = await newAccount({ quota: 10_000 })
    const token = await h.call("POST", "/admin/tokens", { accountId, remainQuota: 5_000 })
    const tokenId = token.body.id as string
    const holdId = `req-${target.name}-1`

    const session = await h.run(
      BillingSession.open({ holdId, accountId, tokenId, estimate: 400, preference: "wallet_first" })
    )
    const pending = await h.call("GET", `/admin/holds/${holdId}`)
    expect(pending.status).toBe(200)
    expect(pending.body).toEqual({
      id: holdId,
      accountId,
      tokenId,
      status: "pending",
      reserved: 400,
      parts: expect.arrayContaining([
        { source: "token", ref: tokenId, reserved: 400 },
        { source: "wallet", ref: accountId, reserved: 400 }
      ]),
      expiresAt: expect.stringMatching(ISO)
    })
    expect(pending.body.parts).toHaveLength(2)
    expect(Date.parse(pending.body.expiresAt)).toBeGreaterThan(Date.now())
    // while pending, the token and the account show the reservation
    expect((await h.call("GET", `/admin/tokens/${tokenId}`)).body).toMatchObject({ remainQuota: 4_600, usedQuota: 400 })
    expect((await h.call("GET", `/admin/accounts/${accountId}`)).body.quota).toBe(9_600)

    await h.run(session.settle(250))
    const settled = await h.call("GET", `/admin/holds/${holdId}`)
    expect(settled.body).toEqual({
      id: holdId,
      accountId,
      tokenId,
      status: "settled",
      reserved: 400,
      actual: 250,
      unbilled: 0,
      parts: expect.arrayContaining([
        { source: "token", ref: tokenId, reserved: 400, charged: 250 },
        { source: "wallet", ref: accountId, reserved: 400, charged: 250 }
      ]),
      expiresAt: expect.stringMatching(ISO)
    })
    expect(settled.body.parts).toHaveLength(2)
    expect((await h.call("GET", `/admin/accounts/${accountId}`)).body).toMatchObject({
      quota: 9_750,
      usedQuota: 250,
      requestCount: 1
    })
    expect((await h.call("GET", `/admin/tokens/${tokenId}`)).body).toMatchObject({ remainQuota: 4_750, usedQuota: 250 })

    // a subscription-funded hold names its source
    const plan = await h.call("POST", "/admin/plans", {
      title: "S",
      totalAmount: 1000,
      resetPeriod: "never",
      durationSeconds: 3600
    })
    const sub = await h.call("POST", "/admin/subscriptions", { accountId, planId: plan.body.id })
    await h.run(Effect.flatMap(
      BillingSession.open({ holdId: `${holdId}-sub`, accountId, tokenId, estimate: 100 }),
      (s) => s.settle(80)
    ))
    const subHold = await h.call("GET", `/admin/holds/${holdId}-sub`)
    expect(subHold.body.parts.map((p: any) => p.source).sort()).toEqual(["subscription", "token"])
    expect(subHold.body.parts.find((p: any) => p.source === "subscription")).toMatchObject({
      ref: expect.any(String),
      reserved: 100,
      charged: 80
    })
    expect((await h.call("GET", `/admin/subscriptions/${sub.body.id}`)).body.amountUsed).toBe(80)

    // an abandoned hold expires and is reaped once
    // opened (by Effect's Clock) in 2020 with a minute to live: long expired, no sleeping
    await h.run(
      TestClock.setTime(Date.parse("2020-01-01T00:00:00Z")).pipe(
        Effect.andThen(
          BillingSession.open({
            holdId: `${holdId}-lost`,
            accountId,
            tokenId,
            estimate: 300,
            preference: "wallet_only",
            ttlMillis: 60_000
          })
        ),
        Effect.provide(TestClock.layer())
      )
    )
    const reaped = await h.call("POST", "/admin/holds/reap")
    expect(reaped.status).toBe(200)
    expect(reaped.body).toEqual({ expired: 1 })
    expect((await h.call("POST", "/admin/holds/reap")).body).toEqual({ expired: 0 })
    const lost = await h.call("GET", `/admin/holds/${holdId}-lost`)
    expect(lost.body.status).toBe("expired")
    expect(lost.body.actual).toBeUndefined()
    expect((await h.call("GET", `/admin/accounts/${accountId}`)).body.quota).toBe(9_750)

    expectError(await h.call("GET", "/admin/holds/req-unknown"), 404, "not_found", "requestId")

    // the two settled holds got their log rows with their settlements (issue 9 #9), the expired one none
    const settledLogs = await h.call("GET", `/admin/logs?accountId=${accountId}`)
    expect(settledLogs.body.map((r: any) => [r.requestId, r.quota, r.source]).sort()).toEqual(
      [[holdId, 250, "wallet"], [`${holdId}-sub`, 80, "subscription"]].sort()
    )

    // request logs, newest first; ties: later insert first
    const t = Date.parse("2030-01-01T00:00:00.000Z")
    const log = (requestId: string, createdAt: number, quota: number, source = "wallet") =>
      h.run(
        Context.get(h.context, RelayStore).recordLog({
          requestId,
          accountId,
          tokenId,
          model: "demo",
          promptTokens: 10,
          completionTokens: 5,
          quota,
          source,
          createdAt
        })
      )
    expect(await log(`${holdId}-log`, t, 250)).toBe(true)
    expect(await log(`${holdId}-log-sub`, t + 1000, 80, "subscription")).toBe(true)
    expect(await log(`${holdId}-zero`, t + 1000, 0, "subscription+wallet")).toBe(true)
    expect(await log(`${holdId}-log`, t, 250)).toBe(false) // one per request
    const logs = await h.call("GET", `/admin/logs?accountId=${accountId}`)
    expect(logs.status).toBe(200)
    expect(logs.body).toHaveLength(5)
    expect(logs.body.slice(0, 3)).toEqual([
      {
        requestId: `${holdId}-zero`,
        accountId,
        tokenId,
        model: "demo",
        promptTokens: 10,
        completionTokens: 5,
        quota: 0,
        source: "subscription+wallet",
        createdAt: "2030-01-01T00:00:01.000Z"
      },
      expect.objectContaining({
        requestId: `${holdId}-log-sub`,
        quota: 80,
        source: "subscription",
        createdAt: "2030-01-01T00:00:01.000Z"
      }),
      expect.objectContaining({
        requestId: `${holdId}-log`,
        quota: 250,
        source: "wallet",
        createdAt: "2030-01-01T00:00:00.000Z"
      })
    ])
    const limited = await h.call("GET", `/admin/logs?accountId=${accountId}&limit=1`)
    expect(limited.body.map((l: any) => l.requestId)).toEqual([`${holdId}-zero`])
    const all = await h.call("GET", "/admin/logs?limit=1000")
    expect(all.body.length).toBeGreaterThanOrEqual(3)
    expectError(await h.call("GET", `/admin/logs?accountId=${accountId}&limit=0`), 400, "invalid_request", "limit")
    expectError(await h.call("GET", "/admin/logs?limit=abc"), 400, "invalid_request", "limit")
    expectError(await h.call("GET", "/admin/logs?accountId=acc_nope"), 404, "not_found", "accountId")

    const audit = await h.call("GET", "/admin/audit")
    expect(audit.status).toBe(200)
    expect(audit.body).toEqual({ ok: true, problems: [] })
  })

  // last: it corrupts the shared database on purpose
  it("usedQuota is what was actually paid: a subscription overflow nobody could pay is not counted", async () => {
    const { id: accountId } = await newAccount({ quota: 50_000 })
    const plan = await h.call("POST", "/admin/plans", {
      title: "Capped",
      totalAmount: 1_000,
      resetPeriod: "never",
      durationSeconds: 86_400,
      allowWalletOverflow: false
    })
    const sub = await h.call("POST", "/admin/subscriptions", { accountId, planId: plan.body.id })
    expect(sub.status).toBe(201)
    const holdId = `req-${target.name}-overflow`
    const session = await h.run(
      BillingSession.open({ holdId, accountId, estimate: 600, preference: "subscription_only" })
    )
    await h.run(session.settle(1_500)) // 1,000 paid by the subscription, 500 unbilled
    const hold = await h.call("GET", `/admin/holds/${holdId}`)
    expect(hold.body).toMatchObject({ status: "settled", actual: 1_500, unbilled: 500 })
    const account = await h.call("GET", `/admin/accounts/${accountId}`)
    expect(account.body).toMatchObject({ quota: 50_000, usedQuota: 1_000, requestCount: 1 })
    expect((await h.call("GET", `/admin/subscriptions/${sub.body.id}`)).body).toMatchObject({ amountUsed: 1_000 })
    expect((await h.call("GET", "/admin/audit")).body).toEqual({ ok: true, problems: [] })
  })

  it("reports a balance that disagrees with the ledger", async () => {
    const { id } = await newAccount({ quota: 500 })
    const column = RelayBilling.auditBalances.find((b) => b.sourceId === "wallet")!
    await h.run(Effect.gen(function*() {
      const c = yield* KnexClient.KnexClient
      yield* c.query(
        "test.tamper",
        (db) => db(c.table(column.table)).where({ [column.idColumn]: id }).update({ [column.balanceColumn]: 501 })
      )
    }))
    const audit = await h.call("GET", "/admin/audit")
    expect(audit.status).toBe(200)
    expect(audit.body.ok).toBe(false)
    expect(audit.body.problems.length).toBeGreaterThan(0)
    expect(audit.body.problems.join("\n")).toContain(id)
  })
})
