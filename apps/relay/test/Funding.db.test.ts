/**
 * The relay's `funding` section end to end below HTTP billing: plugin
 * migrations run with the others (on every database), accounts may name a
 * `funding.preferences` entry through the admin API, and a plugin that cannot
 * be loaded stops start-up (layer, `relay migrate`, `relay reap`) naming the
 * entry.
 */
import { BillingSession, Ledger } from "@relay-billing/core"
import type { Hold } from "@relay-billing/core"
import { KnexClient, TestDatabase } from "@relay-billing/knex"
import { WalletAdmin } from "@relay-billing/wallet"
import { Effect, Exit, Layer, Scope } from "effect"
import { existsSync, mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Cli from "../src/Cli.js"
import * as Config from "../src/Config.js"
import * as Plugins from "../src/Plugins.js"
import * as RelayBilling from "../src/RelayBilling.js"
import { type Harness, startAdmin } from "./support/AdminHarness.js"
import { CREDITS, pluginHome } from "./support/PluginHome.js"

const home = pluginHome()

describe.each(TestDatabase.targets())("funding on $name", (target) => {
  let h: Harness
  beforeAll(async () => {
    const sources = await Effect.runPromise(
      Plugins.load([{ id: "credits", package: CREDITS, options: { table: "relay_credits" } }], { cwd: home })
    )
    h = await startAdmin(target, { preferences: ["wallet_then_plan"] }, {
      sources: sources.map((l) => l.source),
      session: { preferences: { wallet_then_plan: ["wallet", "subscription"], credits_first: ["credits", "wallet"] } }
    })
  }, 60_000)
  afterAll(async () => {
    await h?.close()
  })

  it("a plugin's migrations run with the others, in its own migrations table, once", async () => {
    const tables = await h.run(Effect.gen(function*() {
      const client = yield* KnexClient.KnexClient
      return {
        credits: yield* client.query("t", (db) => db.schema.hasTable(client.table("relay_credits"))),
        record: yield* client.query("t", (db) => db.schema.hasTable(`${client.prefix}source_credits_migrations`))
      }
    }))
    expect(tables).toEqual({ credits: true, record: true })
    // The table is usable and a second run applies nothing.
    const sources = await Effect.runPromise(
      Plugins.load([{ id: "credits", package: CREDITS, options: { table: "relay_credits" } }], { cwd: home })
    )
    const again = await h.run(RelayBilling.migrateWith(sources.map((l) => l.source)))
    expect(again["source_credits"]).toEqual([])
    const rows = await h.run(Effect.gen(function*() {
      const client = yield* KnexClient.KnexClient
      const ledger = yield* Ledger.Ledger
      // A grant with its ledger row, in one transaction (the audit checks the plugin's balances).
      yield* client.transaction(Effect.gen(function*() {
        yield* client.query("t", (db) => db(client.table("relay_credits")).insert({ account_id: "a", balance: 5 }))
        yield* ledger.append([
          { at: 0, kind: "topup", sourceId: "credits", subjectId: "a", accountId: "a", amount: 5, balanceAfter: 5 }
        ])
      }))
      return yield* client.query("t", (db) => db(client.table("relay_credits")).select("account_id", "balance"))
    }))
    expect(rows.map((r) => [r["account_id"], Number(r["balance"])])).toEqual([["a", 5]])
  })

  it("the engine drives the plugin's source along a configured chain: take, settle, ledger rows, fallback, audit", async () => {
    const credits = (accountId: string) =>
      h.run(Effect.gen(function*() {
        const client = yield* KnexClient.KnexClient
        const rows = yield* client.query("t", (db) =>
          db(client.table("relay_credits")).where({ account_id: accountId }).select("balance"))
        return Number(rows[0]?.["balance"])
      }))
    const funding = (hold: Hold.Hold) =>
      hold.parts.filter((p) => p.kind === "funding").map((p) => `${p.sourceId}:${p.amount}`)
    await h.run(Effect.gen(function*() {
      const wallet = yield* WalletAdmin.WalletAdmin
      const client = yield* KnexClient.KnexClient
      const ledger = yield* Ledger.Ledger
      for (const [id, balance] of [["fc-rich", 1_000], ["fc-poor", 3]] as const) {
        yield* wallet.createAccount({ id, balance: 100 })
        // A credit grant is a balance change: its ledger row goes in the same transaction (the audit checks it).
        yield* client.transaction(Effect.gen(function*() {
          yield* client.query("t", (db) => db(client.table("relay_credits")).insert({ account_id: id, balance }))
          yield* ledger.append([{
            at: 0,
            kind: "topup",
            sourceId: "credits",
            subjectId: id,
            accountId: id,
            amount: balance,
            balanceAfter: balance
          }])
        }))
      }
    }))
    const paid = await h.run(Effect.gen(function*() {
      const session = yield* BillingSession.BillingSession
      const s = yield* session.open({ holdId: "fc-1", accountId: "fc-rich", estimate: 50, preference: "credits_first" })
      const settlement = yield* s.settle(30)
      const ledger = yield* Ledger.Ledger
      const rows = yield* ledger.entries({ sourceId: "credits", subjectId: "fc-rich" })
      return {
        parts: funding(s.hold),
        preference: s.hold.preference,
        actual: settlement.actual,
        ledger: rows.reduce((n, r) => n + r.amount, 0)
      }
    }))
    // The grant of 1,000, less the charge of 30: the ledger sums to the credits' balance.
    expect(paid).toEqual({ parts: ["credits:50"], preference: "credits_first", actual: 30, ledger: 970 })
    expect(await credits("fc-rich")).toBe(970)
    const fellBack = await h.run(Effect.gen(function*() {
      const session = yield* BillingSession.BillingSession
      const s = yield* session.open({ holdId: "fc-2", accountId: "fc-poor", estimate: 50, preference: "credits_first" })
      yield* s.settle(40)
      return { parts: funding(s.hold), wallet: (yield* (yield* WalletAdmin.WalletAdmin).account("fc-poor")).balance }
    }))
    expect(fellBack).toEqual({ parts: ["wallet:50"], wallet: 60 })
    expect(await credits("fc-poor")).toBe(3)
    const audit = await h.call("GET", "/admin/audit")
    expect(audit.body).toEqual({ ok: true, problems: [] })
    // The audit checks the plugin's declared column (`Source.audit`): a balance the ledger does not explain is reported.
    const setCredits = (accountId: string, balance: number) =>
      h.run(Effect.gen(function*() {
        const client = yield* KnexClient.KnexClient
        yield* client.query("t", (db) =>
          db(client.table("relay_credits")).where({ account_id: accountId }).update({ balance }))
      }))
    await setCredits("fc-rich", 1_970)
    expect((await h.call("GET", "/admin/audit")).body).toEqual({
      ok: false,
      problems: ["credits fc-rich: relay_credits.balance 1970 but the ledger sums to 970"]
    })
    await setCredits("fc-rich", 970)
    expect((await h.call("GET", "/admin/audit")).body).toEqual({ ok: true, problems: [] })
  })

  it("the admin API accepts a funding.preferences name next to the built-ins, and refuses others naming the field", async () => {
    const created = await h.call("POST", "/admin/accounts", { quota: 10, billingPreference: "wallet_then_plan" })
    expect(created.status).toBe(201)
    expect(created.body.billingPreference).toBe("wallet_then_plan")
    const read = await h.call("GET", `/admin/accounts/${created.body.id}`)
    expect(read.body.billingPreference).toBe("wallet_then_plan")
    const patched = await h.call("PATCH", `/admin/accounts/${created.body.id}`, { billingPreference: "wallet_only" })
    expect(patched.body.billingPreference).toBe("wallet_only")
    for (
      const [method, url] of [["POST", "/admin/accounts"], ["PATCH", `/admin/accounts/${created.body.id}`]] as const
    ) {
      const refused = await h.call(method, url, { billingPreference: "vouchers_first" })
      expect(refused.status).toBe(400)
      expect(refused.body.error.field).toBe("billingPreference")
      expect(refused.body.error.message).toContain("wallet_then_plan")
      expect(refused.body.error.message).toContain("\"vouchers_first\"")
    }
    expect((await h.call("GET", `/admin/accounts/${created.body.id}`)).body.billingPreference).toBe("wallet_only")
  })
})

describe("a plugin that cannot be loaded stops start-up", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "relay-funding-"))
  const loadedWith = async (funding: unknown): Promise<Config.Loaded> => ({
    port: 0,
    databaseUrl: `sqlite:${path.join(dir, "relay.db")}`,
    adminKey: "sk-admin-test",
    configSource: "relay.json",
    config: await Effect.runPromise(Config.decodeConfig({ funding }))
  })
  const missing = { sources: [{ id: "vouchers", package: "relay-billing-source-vouchers" }] }

  it("the server's billing layer fails with the ConfigError naming the entry", async () => {
    const loaded = await loadedWith(missing)
    const scope = Effect.runSync(Scope.make())
    const exit = await Effect.runPromiseExit(
      Layer.buildWithScope(
        RelayBilling.layerFromConfig(loaded, { pluginCwd: home, adminKeyPath: path.join(dir, "key") }),
        scope
      )
    )
    await Effect.runPromise(Scope.close(scope, Exit.void))
    expect(Exit.isFailure(exit)).toBe(true)
    const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
    const failure = error?._tag === "Fail"
      ? (error.error as { _tag: string; field?: string; message: string })
      : undefined
    expect(failure?._tag).toBe("ConfigError")
    expect(failure?.field).toBe("funding.sources.0.package")
    expect(failure?.message).toContain("funding source \"vouchers\"")
    expect(failure?.message).toContain("(in relay.json)")
  })

  it("relay migrate, relay reap and relay audit fail the same way, before touching the database", async () => {
    const loaded = await loadedWith(missing)
    const database = path.join(dir, "cli.db")
    const at = { ...loaded, databaseUrl: `sqlite:${database}` }
    const runs: ReadonlyArray<Effect.Effect<unknown, { readonly _tag: string; readonly message: string }>> = [
      Cli.runMigrate(at),
      Cli.runReap(at),
      Cli.runAudit(at)
    ]
    for (const run of runs) {
      const error = await Effect.runPromise(Effect.flip(run))
      expect(error._tag).toBe("ConfigError")
      expect(error.message).toContain(
        "funding.sources.0.package: cannot find the package of funding source \"vouchers\""
      )
    }
    expect(existsSync(database)).toBe(false)
  })
})

describe("relay audit loads the plugins and checks their audit columns", () => {
  it("a plugin balance with no ledger row is reported; with its topup row the audit is ok", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "relay-audit-"))
    const loaded: Config.Loaded = {
      port: 0,
      databaseUrl: `sqlite:${path.join(dir, "relay.db")}`,
      adminKey: "sk-admin-test",
      configSource: "relay.json",
      config: await Effect.runPromise(Config.decodeConfig({
        funding: { sources: [{ id: "credits", package: CREDITS, options: { table: "relay_credits" } }] }
      }))
    }
    const sources = await Effect.runPromise(RelayBilling.loadPlugins(loaded, home))
    const sdk = RelayBilling.layerUrl(loaded.databaseUrl, { ...RelayBilling.sdkOptions(loaded), sources })
    const grant = (balance: number, ledgerRow: boolean) =>
      Effect.runPromise(
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const ledger = yield* Ledger.Ledger
          yield* client.transaction(Effect.gen(function*() {
            yield* client.query("t", (db) => db(client.table("relay_credits")).insert({ account_id: "x", balance }))
            if (ledgerRow) {
              yield* ledger.append([
                {
                  at: 0,
                  kind: "topup",
                  sourceId: "credits",
                  subjectId: "x",
                  accountId: "x",
                  amount: balance,
                  balanceAfter: balance
                }
              ])
            }
          }))
        }).pipe(Effect.provide(sdk))
      )
    await grant(5, false)
    const tampered = await Effect.runPromise(Cli.runAudit(loaded, { pluginCwd: home }))
    expect(tampered.ok).toBe(false)
    expect(tampered.problems).toEqual(["credits x: relay_credits.balance 5 but the ledger sums to 0"])
    expect(Cli.formatAudit(tampered)).toContain("credits x: relay_credits.balance 5 but the ledger sums to 0")
    // Repaired: the row goes, and comes back with its ledger row.
    await Effect.runPromise(
      Effect.gen(function*() {
        const client = yield* KnexClient.KnexClient
        yield* client.query("t", (db) => db(client.table("relay_credits")).where({ account_id: "x" }).delete())
      }).pipe(Effect.provide(KnexClient.KnexClient.layerUrl(loaded.databaseUrl)))
    )
    await grant(5, true)
    const clean = await Effect.runPromise(Cli.runAudit(loaded, { pluginCwd: home }))
    expect(clean.problems).toEqual([])
    expect(clean.ok).toBe(true)
  })
})
