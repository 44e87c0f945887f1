/**
 * Issue 8 #2 for the relay's own tables: request ids, account and token ids
 * compare byte for byte on every database (on MySQL/MariaDB through the binary
 * NO PAD collation its 0002 migration sets).
 */
import { TestDatabase } from "@relay-billing/knex"
import { Context } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { RelayStore } from "../src/RelayStore.js"
import type * as RelayStoreModule from "../src/RelayStore.js"
import { type Harness, startAdmin } from "./support/AdminHarness.js"

const pairs: ReadonlyArray<readonly [string, string]> = [
  ["chatcmpl-AbC123", "chatcmpl-abc123"],
  ["req-77", "req-77 "],
  ["req-é", "req-e"]
]

describe.each(TestDatabase.targets())("relay ids on $name", (target) => {
  let h: Harness
  let store: RelayStoreModule.Service
  beforeAll(async () => {
    h = await startAdmin(target)
    store = Context.get(h.context, RelayStore)
  }, 60_000)
  afterAll(async () => {
    await h?.close()
  })

  it("issue 8 #2: request logs whose ids differ only by case, a trailing space or an accent are distinct", async () => {
    const account = await h.call("POST", "/admin/accounts", {})
    const accountId = account.body.id as string
    const base = { accountId, tokenId: null, model: "m", promptTokens: 1, completionTokens: 2, source: "wallet" }
    let quota = 0
    for (const [a, b] of pairs) {
      expect(await h.run(store.recordLog({ ...base, requestId: a, quota: ++quota, createdAt: quota }))).toBe(true)
      expect(await h.run(store.recordLog({ ...base, requestId: b, quota: ++quota, createdAt: quota }))).toBe(true)
      // The same id again is still one log.
      expect(await h.run(store.recordLog({ ...base, requestId: b, quota: 99, createdAt: 99 }))).toBe(false)
    }
    const logs = await h.run(store.logs({ accountId }))
    expect(logs.map((l) => [l.requestId, l.quota]).sort()).toEqual(
      pairs.flat().map((id, i) => [id, i + 1]).sort()
    )
  })

  it("issue 8 #2: relay accounts and tokens whose ids differ only by case are distinct", async () => {
    const upper = await h.run(
      store.createAccount({ id: "Relay-Acct", name: "upper", group: "VIP", billingPreference: "wallet_only" })
    )
    const lower = await h.run(
      store.createAccount({ id: "relay-acct", name: "lower", group: "vip", billingPreference: "subscription_first" })
    )
    expect([upper.id, lower.id]).toEqual(["Relay-Acct", "relay-acct"])
    expect((await h.run(store.account("Relay-Acct"))).name).toBe("upper")
    expect((await h.run(store.account("relay-acct"))).name).toBe("lower")
    const t1 = await h.run(
      store.createToken({
        id: "Relay-Tok",
        accountId: "Relay-Acct",
        name: "T",
        models: undefined,
        expiresAt: undefined
      })
    )
    const t2 = await h.run(
      store.createToken({
        id: "relay-tok",
        accountId: "relay-acct",
        name: "t",
        models: undefined,
        expiresAt: undefined
      })
    )
    expect((await h.run(store.authenticate(t1.key))).accountId).toBe("Relay-Acct")
    expect((await h.run(store.authenticate(t2.key))).accountId).toBe("relay-acct")
    expect((await h.run(store.token("Relay-Tok"))).name).toBe("T")
    expect((await h.run(store.token("relay-tok"))).name).toBe("t")
  })
})
