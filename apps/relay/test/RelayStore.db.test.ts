import { KnexClient, TestDatabase } from "@relay-billing/knex"
import { Context, Effect, Exit } from "effect"
import { TestClock } from "effect/testing"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { RelayStore } from "../src/RelayStore.js"
import * as RelayStoreModule from "../src/RelayStore.js"
import { type Harness, startAdmin } from "./support/AdminHarness.js"

/** Runs `effect` with a TestClock set to `millis` (epoch). */
const at = <A, E, R>(millis: number, effect: Effect.Effect<A, E, R>) =>
  TestClock.setTime(millis).pipe(Effect.andThen(effect), Effect.provide(TestClock.layer()))

describe.each(TestDatabase.targets())("RelayStore on $name", (target) => {
  let h: Harness
  let store: RelayStoreModule.Service
  beforeAll(async () => {
    h = await startAdmin(target)
    store = Context.get(h.context, RelayStore)
  }, 60_000)
  afterAll(async () => {
    await h?.close()
  })

  const rejection = async (key: string | undefined) => {
    const exit = await Effect.runPromiseExit(store.authenticate(key))
    expect(Exit.isFailure(exit)).toBe(true)
    const error = await Effect.runPromise(Effect.flip(store.authenticate(key)))
    expect(error._tag).toBe("InvalidApiKey")
    return error as RelayStoreModule.InvalidApiKey
  }

  it("authenticates a token's key and rejects wrong, missing, disabled and expired keys", async () => {
    const account = await h.call("POST", "/admin/accounts", {
      group: "vip",
      billingPreference: "wallet_only",
      quota: 10
    })
    const accountId = account.body.id as string
    const token = await h.call("POST", "/admin/tokens", { accountId, models: ["demo", "gpt-4o-mini"] })
    const { id: tokenId, key } = token.body as { id: string; key: string }

    expect(await h.run(store.authenticate(key))).toEqual({
      tokenId,
      accountId,
      models: ["demo", "gpt-4o-mini"],
      group: "vip",
      billingPreference: "wallet_only"
    })
    // the accessor agrees
    expect((await h.run(RelayStoreModule.authenticate(key))).tokenId).toBe(tokenId)

    const unknown = await rejection(`sk-${"A".repeat(48)}`)
    expect(unknown.reason).toBe("unknown")
    expect(unknown.code).toBe("invalid_api_key")
    const last = key.at(-1) === "a" ? "b" : "a"
    expect((await rejection(key.slice(0, -1) + last)).reason).toBe("unknown")
    expect((await rejection(key + " ")).reason).toBe("unknown")
    expect((await rejection(undefined)).reason).toBe("missing")
    expect((await rejection("")).reason).toBe("missing")

    // disabled, then enabled again
    expect((await h.call("PATCH", `/admin/tokens/${tokenId}`, { status: "disabled" })).body.status).toBe("disabled")
    const disabled = await rejection(key)
    expect(disabled.reason).toBe("disabled")
    expect(disabled.message).toMatch(/disabled/)
    expect((await h.call("PATCH", `/admin/tokens/${tokenId}`, { status: "active" })).body.status).toBe("active")
    expect((await h.run(store.authenticate(key))).tokenId).toBe(tokenId)

    // a token without a model list may use every model; the account's changes show at once
    const open = await h.call("POST", "/admin/tokens", { accountId, remainQuota: 5 })
    await h.call("PATCH", `/admin/accounts/${accountId}`, { group: "default", billingPreference: "subscription_first" })
    expect(await h.run(store.authenticate(open.body.key))).toEqual({
      tokenId: open.body.id,
      accountId,
      models: undefined,
      group: "default",
      billingPreference: "subscription_first"
    })

    // expired, and a token that expires shortly after creation
    const expired = await h.call("POST", "/admin/tokens", { accountId, expiresAt: "2020-02-02T00:00:00Z" })
    expect(expired.status).toBe(201)
    expect((await rejection(expired.body.key)).reason).toBe("expired")
    // expiry is read from Effect's Clock: a token is valid up to its expiresAt, not at it
    const expiresAt = Date.parse("2031-05-06T07:08:09.010Z")
    const soon = await h.call("POST", "/admin/tokens", { accountId, expiresAt: new Date(expiresAt).toISOString() })
    expect((await h.run(at(expiresAt - 1, store.authenticate(soon.body.key)))).tokenId).toBe(soon.body.id)
    const expiredNow = await h.run(at(expiresAt, Effect.flip(store.authenticate(soon.body.key))))
    expect(expiredNow._tag === "InvalidApiKey" && expiredNow.reason).toBe("expired")
  })

  it("generates distinct keys and stores only their hashes", async () => {
    const account = await h.call("POST", "/admin/accounts", {})
    const keys = new Set<string>()
    for (let i = 0; i < 5; i++) {
      const t = await h.call("POST", "/admin/tokens", { accountId: account.body.id })
      expect(t.body.key).toMatch(/^sk-[0-9A-Za-z]{48}$/)
      keys.add(t.body.key)
    }
    expect(keys.size).toBe(5)
    const meta = await h.run(
      store.token((await h.call("POST", "/admin/tokens", { accountId: account.body.id })).body.id)
    )
    expect(Object.keys(meta).sort()).toEqual(["accountId", "createdAt", "expiresAt", "id", "models", "name", "status"])
  })

  it("records one log per request and lists logs newest first, later insert first on ties", async () => {
    const account = await h.call("POST", "/admin/accounts", {})
    const accountId = account.body.id as string
    const base = {
      accountId,
      tokenId: null,
      model: "m",
      promptTokens: 1,
      completionTokens: 2,
      quota: 3,
      source: "wallet"
    }
    const t = 1_900_000_000_000
    for (const [requestId, createdAt] of [["a", t], ["b", t + 5], ["c", t], ["d", t + 5], ["e", t - 1]] as const) {
      expect(await h.run(store.recordLog({ ...base, requestId: `${target.name}-${requestId}`, createdAt }))).toBe(true)
    }
    expect(await h.run(store.recordLog({ ...base, requestId: `${target.name}-a`, createdAt: t + 99, quota: 9 }))).toBe(
      false
    )
    const logs = await h.run(store.logs({ accountId }))
    expect(logs.map((l) => l.requestId.split("-").at(-1))).toEqual(["d", "b", "c", "a", "e"])
    expect(logs[0]).toEqual({ ...base, requestId: `${target.name}-d`, createdAt: t + 5 })
    expect((await h.run(store.logs({ accountId, limit: 2 }))).length).toBe(2)
    // bad entries are refused by the schema, nothing is written
    const bad = await Effect.runPromiseExit(
      store.recordLog({ ...base, requestId: `${target.name}-x`, quota: -1, createdAt: t })
    )
    expect(Exit.isFailure(bad)).toBe(true)
    expect((await h.run(store.logs({ accountId }))).length).toBe(5)
  })

  it("concurrent key lookups and request-id records share statements, and each request gets its own answer", async () => {
    const client = Context.get(h.context, KnexClient.KnexClient)
    const accounts = await Promise.all(
      [0, 1].map(async () => (await h.call("POST", "/admin/accounts", { quota: 1 })).body.id as string)
    )
    const tokens = await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const body = (await h.call("POST", "/admin/tokens", { accountId: accounts[i % 2] })).body
        return { id: body.id as string, key: body.key as string, accountId: accounts[i % 2]! }
      })
    )
    await h.call("PATCH", `/admin/tokens/${tokens[11]!.id}`, { status: "disabled" })
    const statements: Array<string> = []
    const onQuery = (query: { sql: string }) => void statements.push(query.sql)
    client.knex.on("query", onQuery)
    try {
      const keys = [...tokens.map((t) => t.key), tokens[0]!.key, `sk-${"Z".repeat(48)}`]
      const results = await h.run(
        Effect.forEach(keys, (key) => Effect.exit(store.authenticate(key)), { concurrency: "unbounded" })
      )
      results.slice(0, 11).forEach((exit, i) => {
        expect(Exit.isSuccess(exit) && exit.value.tokenId).toBe(tokens[i]!.id)
        expect(Exit.isSuccess(exit) && exit.value.accountId).toBe(tokens[i]!.accountId)
      })
      const refused = (exit: Exit.Exit<unknown, unknown>) =>
        Exit.isFailure(exit) ? (Exit.findErrorOption(exit) as { value?: { reason?: string } }).value?.reason : "ok"
      expect(refused(results[11]!)).toBe("disabled")
      expect(Exit.isSuccess(results[12]!) && results[12].value.tokenId).toBe(tokens[0]!.id)
      expect(refused(results[13]!)).toBe("unknown")
      // 14 lookups, fewer statements: they were batched
      const lookups = statements.filter((sql) => sql.includes("key_hash"))
      expect(lookups.length).toBeGreaterThanOrEqual(1)
      expect(lookups.length).toBeLessThan(14)

      statements.length = 0
      // the same request id for both accounts, a repeated pair, and ids of one account only
      const claims = [
        [accounts[0]!, "shared-id"],
        [accounts[1]!, "shared-id"],
        [accounts[0]!, "shared-id"],
        ...Array.from({ length: 10 }, (_, i) => [accounts[i % 2]!, `own-${i}`])
      ] as const
      await h.run(
        Effect.forEach(claims, ([accountId, requestId]) => store.claimRequestId(accountId, requestId), {
          concurrency: "unbounded"
        })
      )
      expect(statements.filter((sql) => sql.includes("relay_request_ids")).length).toBeLessThan(claims.length)
      expect([...(await h.run(store.accountsOfRequest("shared-id")))].sort()).toEqual([...accounts].sort())
      for (let i = 0; i < 10; i++) expect(await h.run(store.accountsOfRequest(`own-${i}`))).toEqual([accounts[i % 2]])
      // a record is idempotent across batches too
      await h.run(store.claimRequestId(accounts[0]!, "shared-id"))
      expect((await h.run(store.accountsOfRequest("shared-id"))).length).toBe(2)
    } finally {
      client.knex.off("query", onQuery)
    }
  })
})
