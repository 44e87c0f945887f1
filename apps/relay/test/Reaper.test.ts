/**
 * The reaper inside the server: a hold abandoned by a crash (opened, never
 * settled) is refunded after its expiry by the server's own reaper fiber,
 * without anyone calling `relay reap`.
 */
import { Effect, Exit, Layer, Scope } from "effect"
import { BillingSession } from "@relay-billing/core"
import { TestDatabase } from "@relay-billing/knex"
import { WalletAdmin } from "@relay-billing/wallet"
import { afterAll, describe, expect, it } from "vitest"
import { decodeConfig } from "../src/Config.js"
import type { Loaded } from "../src/Config.js"
import * as Server from "../src/Server.js"

const scope = Effect.runSync(Scope.make())
afterAll(() => Effect.runPromise(Scope.close(scope, Exit.void)))

describe("the reaper inside serve", () => {
  it("refunds an expired hold on its own and marks it expired, exactly once", async () => {
    const config = await Effect.runPromise(decodeConfig({
      quotaPerUnit: 500000,
      groups: { default: 1 },
      models: { demo: { modelRatio: 1, completionRatio: 1 } },
      channels: [{ name: "demo", baseUrl: "demo://local/v1", apiKey: "", models: ["demo"], priority: 0 }],
      billing: { holdTtlSeconds: 1, reapIntervalSeconds: 1 }
    }))
    const db = await Effect.runPromise(Scope.provide(TestDatabase.isolated({ name: "sqlite" }), scope))
    const loaded: Loaded = { port: 0, databaseUrl: db.url, adminKey: "sk-admin-reaper-test", configSource: "test", config }
    const context = await Effect.runPromise(
      Layer.buildWithScope(Server.layer(loaded, { port: 0, host: "127.0.0.1", client: db.options }), scope)
    )
    type Services = WalletAdmin.WalletAdmin | BillingSession.BillingSession
    const services = <A, E>(effect: Effect.Effect<A, E, Services>): Promise<A> =>
      Effect.runPromise(Effect.provideContext(effect, context))
    const wallet = WalletAdmin.WalletAdmin
    const billing = BillingSession.BillingSession

    await services(Effect.flatMap(wallet, (w) => w.createAccount({ id: "crash", balance: 10_000 })))
    await services(Effect.flatMap(billing, (b) =>
      b.open({ holdId: "abandoned", accountId: "crash", estimate: 4_000, preference: "wallet_only" })))
    const balance = () => services(Effect.flatMap(wallet, (w) => w.account("crash")))
    const status = () => services(Effect.flatMap(billing, (b) => b.get("abandoned")))
    expect((await balance()).balance).toBe(6_000)
    expect((await status()).status).toBe("pending")

    // Nobody settles: after the 1 s expiry the server's reaper (every 1 s) refunds it.
    const deadline = Date.now() + 8_000
    while ((await status()).status === "pending" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200))
    expect((await status()).status).toBe("expired")
    expect((await balance()).balance).toBe(10_000)
    // Later passes change nothing.
    await new Promise((r) => setTimeout(r, 1_500))
    expect((await balance()).balance).toBe(10_000)
    expect((await status()).status).toBe("expired")
  }, 30_000)
})
