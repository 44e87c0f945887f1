/**
 * issue 10 #5 end to end: the relay loads a funding-source plugin by package
 * name (`funding.sources`, resolved from the working directory), runs its
 * migrations, and an account whose `billingPreference` names a
 * `funding.preferences` chain is billed from the plugin for one request sent
 * with the official `openai` client: the hold's part, the request log's
 * `source`, the plugin's own table and the audit all say so. When the plugin
 * cannot pay, the chain falls back to the wallet. A CommonJS plugin package
 * (`module.exports` is the plugin) is a chain member like the ESM one.
 */
import { Ledger } from "@relay-billing/core"
import { KnexClient } from "@relay-billing/knex"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CREDITS, CREDITS_CJS, pluginHome } from "./support/PluginHome.js"
import { actualOf, MESSAGES, MODEL, type Relay, rid, startRelay } from "./support/RelayHarness.js"

const A = actualOf(10, 3) // the mock's default usage

describe("a plugin loaded by package name pays for a request", () => {
  let relay: Relay
  beforeAll(async () => {
    relay = await startRelay({
      pluginCwd: pluginHome(["credits-plugin", "credits-plugin-cjs"]),
      funding: {
        sources: [
          { id: "credits", package: CREDITS, options: { table: "credits" } },
          { id: "legacy", package: CREDITS_CJS, options: { table: "legacy_credits" } }
        ],
        preferences: { credits_first: ["credits", "wallet"], legacy_first: ["legacy", "credits", "wallet"] }
      }
    })
  }, 60_000)
  afterAll(async () => {
    await relay?.close()
  })

  const credits = (accountId: string, table = "credits") =>
    relay.run(Effect.gen(function*() {
      const client = yield* KnexClient.KnexClient
      const rows = yield* client.query("t", (db) =>
        db(client.table(table)).where({ account_id: accountId }).select("balance"))
      return rows[0] === undefined ? undefined : Number(rows[0]["balance"])
    }))

  const account = async (
    wallet: number,
    creditBalance: number,
    preference = "credits_first",
    legacyBalance?: number
  ) => {
    const acc = await relay.admin("POST", "/admin/accounts", { quota: wallet, billingPreference: preference })
    expect(acc.status).toBe(201)
    expect(acc.body.billingPreference).toBe(preference)
    await relay.run(Effect.gen(function*() {
      const client = yield* KnexClient.KnexClient
      const ledger = yield* Ledger.Ledger
      const id = String(acc.body.id)
      // A grant is a balance change: its ledger row goes in the same transaction (the audit checks the plugins' tables).
      const grant = (sourceId: string, table: string, balance: number) =>
        client.transaction(Effect.gen(function*() {
          yield* client.query("t", (db) => db(client.table(table)).insert({ account_id: id, balance }))
          yield* ledger.append([
            { at: 0, kind: "topup", sourceId, subjectId: id, accountId: id, amount: balance, balanceAfter: balance }
          ])
        }))
      yield* grant("credits", "credits", creditBalance)
      if (legacyBalance !== undefined) yield* grant("legacy", "legacy_credits", legacyBalance)
    }))
    const tok = await relay.admin("POST", "/admin/tokens", { accountId: acc.body.id, unlimited: true })
    expect(tok.status).toBe(201)
    const { default: OpenAI } = await import("openai")
    const client = new OpenAI({ apiKey: tok.body.key, baseURL: `${relay.url}/v1`, maxRetries: 0, timeout: 60_000 })
    return { accountId: acc.body.id as string, client }
  }

  it("bills the plugin: hold part, request log and the plugin's table", async () => {
    const { accountId, client } = await account(500, 1_000)
    const requestId = rid("plugin")
    const completion = await client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 5 },
      { headers: { "x-request-id": requestId } }
    )
    expect(completion.usage?.total_tokens).toBe(13)
    const hold = await relay.resolved(requestId)
    expect(hold.status).toBe("settled")
    expect(hold.actual).toBe(A)
    expect(hold.parts.filter((p: { source: string }) => p.source !== "token")).toEqual([
      expect.objectContaining({ source: "credits", charged: A })
    ])
    expect(await credits(accountId)).toBe(1_000 - A)
    const after = await relay.admin("GET", `/admin/accounts/${accountId}`)
    expect(after.body.quota).toBe(500)
    expect(after.body.usedQuota).toBe(A)
    const logs = await relay.admin("GET", `/admin/logs?accountId=${accountId}`)
    expect(logs.body.map((l: { requestId: string; source: string; quota: number }) => [l.requestId, l.source, l.quota]))
      .toEqual([[requestId, "credits", A]])
    const audit = await relay.admin("GET", "/admin/audit")
    expect(audit.body).toEqual(expect.objectContaining({ ok: true, problems: [] }))
  })

  it("falls back along the chain to the wallet when the plugin cannot pay", async () => {
    const { accountId, client } = await account(500, 3)
    const requestId = rid("fallback")
    await client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 5 }, {
      headers: { "x-request-id": requestId }
    })
    const hold = await relay.resolved(requestId)
    expect(hold.status).toBe("settled")
    expect(hold.parts.filter((p: { source: string }) => p.source !== "token").map((p: { source: string }) => p.source))
      .toEqual(["wallet"])
    expect(await credits(accountId)).toBe(3)
    expect((await relay.admin("GET", `/admin/accounts/${accountId}`)).body.quota).toBe(500 - A)
    const logs = await relay.admin("GET", `/admin/logs?accountId=${accountId}`)
    expect(logs.body.map((l: { source: string }) => l.source)).toEqual(["wallet"])
  })

  it("a CommonJS plugin is a chain member like any other: its shortfall moves on to the next plugin", async () => {
    const { accountId, client } = await account(0, 1_000, "legacy_first", 2)
    const requestId = rid("cjs")
    await client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 5 }, {
      headers: { "x-request-id": requestId }
    })
    const hold = await relay.resolved(requestId)
    expect(hold.status).toBe("settled")
    expect(hold.parts.filter((p: { source: string }) => p.source !== "token").map((p: { source: string }) => p.source))
      .toEqual(["credits"])
    expect(await credits(accountId, "legacy_credits")).toBe(2)
    expect(await credits(accountId)).toBe(1_000 - A)
    // With enough legacy credits, the CommonJS plugin pays.
    const { accountId: rich, client: richClient } = await account(0, 0, "legacy_first", 500)
    const paid = rid("cjs-paid")
    await richClient.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 5 }, {
      headers: { "x-request-id": paid }
    })
    expect(
      (await relay.resolved(paid)).parts.filter((p: { source: string }) => p.source !== "token").map((
        p: { source: string }
      ) => p.source)
    )
      .toEqual(["legacy"])
    expect(await credits(rich, "legacy_credits")).toBe(500 - A)
    const logs = await relay.admin("GET", `/admin/logs?accountId=${rich}`)
    expect(logs.body.map((l: { source: string }) => l.source)).toEqual(["legacy"])
    expect((await relay.admin("GET", "/admin/audit")).body.ok).toBe(true)
  })
})
