import { BillingSession } from "@relay-billing/core"
import { KnexClient } from "@relay-billing/knex"
import { WalletAdmin } from "@relay-billing/wallet"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { TestClock } from "effect/testing"
import { execFile } from "node:child_process"
import { mkdir, mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { build } from "tsup"
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import * as Cli from "../src/Cli.js"
import * as Config from "../src/Config.js"
import * as RelayBilling from "../src/RelayBilling.js"

const appDir = path.resolve(fileURLToPath(new URL(".", import.meta.url)), "..")
let binDir: string
let bin: string

// The real executable, bundled from src/main.ts like `pnpm build` does, but into a
// private directory under node_modules/.cache (so `effect` and the workspace
// packages resolve, and dist/ is left alone).
beforeAll(async () => {
  const cache = path.join(appDir, "node_modules", ".cache")
  await mkdir(cache, { recursive: true })
  binDir = await mkdtemp(path.join(cache, "relay-cli-test-"))
  await build({
    entry: { main: path.join(appDir, "src/main.ts") },
    outDir: binDir,
    format: ["esm"],
    target: "node24",
    dts: false,
    sourcemap: false,
    clean: false,
    silent: true,
    config: false
  })
  bin = path.join(binDir, "main.js")
}, 60_000)

afterAll(async () => {
  if (binDir) await rm(binDir, { recursive: true, force: true })
})

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

const relay = (args: ReadonlyArray<string>, env: Record<string, string>, cwd: string): Promise<Run> =>
  new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], {
      cwd,
      env: { PATH: process.env["PATH"] ?? "", ...env },
      timeout: 120_000
    }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1
      resolve({ code, stdout, stderr })
    })
  })

/** Runs `f` with the billing services over the database (migrating it), then closes them. */
const withBilling = async <A>(
  url: string,
  f: (context: Context.Context<RelayBilling.Services>) => Promise<A>
): Promise<A> => {
  const scope = Effect.runSync(Scope.make())
  try {
    const context = await Effect.runPromise(Layer.buildWithScope(RelayBilling.layerUrl(url), scope))
    return await f(context)
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

const sql = (context: Context.Context<RelayBilling.Services>, f: Parameters<KnexClient.Client["query"]>[1]) =>
  Effect.runPromise(Context.get(context, KnexClient.KnexClient).query("test", f))

/**
 * Each test below starts the executable two to five times (a fresh Node process loading
 * the bundle each time). On a quiet machine a start takes well under a second; on a
 * 2-core machine shared with other suites one start took several seconds, and the tests
 * timed out at the default 30 s. Their outcome never depends on time: this limit only
 * catches a hang.
 */
const CLI_TEST_TIMEOUT_MS = 180_000

describe("relay CLI (the built executable, SQLite)", { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  let dir: string
  let env: Record<string, string>
  let url: string
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "relay-cli-"))
    url = `sqlite:${path.join(dir, "relay.db")}`
    env = { RELAY_DATABASE_URL: url }
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("migrate applies every migration once and prints them; a second run is up to date", async () => {
    const first = await relay(["migrate"], env, dir)
    expect(first.code).toBe(0)
    const applied = first.stdout.split("\n").filter((l) => l.startsWith("applied "))
    const expected = RelayBilling.migrationSets.flatMap((set) =>
      set.migrations.map((m) => `applied ${set.name}/${m.name}`)
    )
    expect(applied).toEqual(expected)
    expect(first.stdout).toContain(`migrations: ${expected.length} applied`)
    const second = await relay(["migrate", "--json"], env, dir)
    expect(second.code).toBe(0)
    const report = JSON.parse(second.stdout.trim()) as Record<string, Array<string>>
    expect(Object.values(report).flat()).toEqual([])
    const third = await relay(["migrate"], env, dir)
    expect(third.stdout.trim()).toBe("migrations: up to date")
  })

  it("reap refunds an expired hold once and prints the report", async () => {
    await withBilling(url, async (context) => {
      const wallet = Context.get(context, WalletAdmin.WalletAdmin)
      const session = Context.get(context, BillingSession.BillingSession)
      await Effect.runPromise(wallet.createAccount({ id: "acc_r", balance: 5000 }))
      // opened (by Effect's Clock) in 2020 with a minute to live: long expired, no sleeping
      await Effect.runPromise(
        TestClock.setTime(Date.parse("2020-01-01T00:00:00Z")).pipe(
          Effect.andThen(
            session.open({
              holdId: "hold_r",
              accountId: "acc_r",
              estimate: 700,
              preference: "wallet_only",
              ttlMillis: 60_000
            })
          ),
          Effect.provide(TestClock.layer())
        )
      )
      expect((await Effect.runPromise(wallet.account("acc_r"))).balance).toBe(4300)
    })
    const reaped = await relay(["reap"], env, dir)
    expect(reaped.code).toBe(0)
    expect(reaped.stdout.trim()).toBe("reap: examined 1, expired 1, refunded 700, failures 0")
    const again = await relay(["reap", "--json"], env, dir)
    expect(again.code).toBe(0)
    expect(JSON.parse(again.stdout.trim())).toEqual({ examined: 0, expired: 0, refunded: 0, failures: [] })
    await withBilling(url, async (context) => {
      const wallet = Context.get(context, WalletAdmin.WalletAdmin)
      expect((await Effect.runPromise(wallet.account("acc_r"))).balance).toBe(5000)
      const hold = await Effect.runPromise(Context.get(context, BillingSession.BillingSession).get("hold_r"))
      expect(hold.status).toBe("expired")
    })
  })

  it("audit prints ok (exit 0), then the problems with exit 1 once a balance or relay row is inconsistent", async () => {
    await withBilling(url, async (context) => {
      const wallet = Context.get(context, WalletAdmin.WalletAdmin)
      await Effect.runPromise(wallet.createAccount({ id: "acc_a", balance: 1000 }))
      await Effect.runPromise(
        Context.get(context, BillingSession.BillingSession).charge(
          { holdId: "req_a", accountId: "acc_a", estimate: 0, preference: "wallet_only" },
          250
        )
      )
    })
    const ok = await relay(["audit"], env, dir)
    expect(ok.stderr).toBe("")
    expect(ok.code).toBe(0)
    expect(ok.stdout).toMatch(/^audit: ok \(\d+ balances, 1 holds checked\)/)

    await withBilling(url, async (context) => {
      const client = Context.get(context, KnexClient.KnexClient)
      await sql(context, (db) => db(client.table("accounts")).where({ id: "acc_a" }).update({ balance: 999 }))
      await sql(context, (db) =>
        db(client.table("relay_accounts")).insert({
          id: "acc_orphan",
          name: "",
          group_name: "default",
          billing_preference: "wallet_only",
          created_at: 1
        }))
    })
    const bad = await relay(["audit"], env, dir)
    expect(bad.code).toBe(1)
    expect(bad.stdout).toContain("audit: 2 problem(s)")
    expect(bad.stdout).toContain("problem: wallet acc_a: accounts.balance 999 but the ledger sums to 750")
    expect(bad.stdout).toContain("problem: relay account acc_orphan has no wallet account")
    expect(bad.stderr).toContain("audit: not ok")
    const json = await relay(["audit", "--json"], env, dir)
    expect(json.code).toBe(1)
    const report = JSON.parse(json.stdout.trim()) as { ok: boolean; problems: Array<string> }
    expect(report.ok).toBe(false)
    expect(report.problems).toHaveLength(2)
  })

  it("audit of a database that was never migrated fails with exit 1 and a hint", async () => {
    const run = await relay(["audit"], env, dir)
    expect(run.code).toBe(1)
    expect(run.stderr).toContain("relay migrate")
  })

  it("usage errors exit 2, invalid config exits 1 naming the field, --help exits 0", async () => {
    const unknown = await relay(["frobnicate"], env, dir)
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain("frobnicate")
    const none = await relay([], env, dir)
    expect(none.code).toBe(2)
    const help = await relay(["--help"], env, dir)
    expect(help.code).toBe(0)
    for (const name of ["serve", "migrate", "reap", "audit"]) expect(help.stdout).toContain(name)
    const badEnv = await relay(["migrate"], { RELAY_DATABASE_URL: "oracle://x" }, dir)
    expect(badEnv.code).toBe(1)
    expect(badEnv.stderr).toContain("RELAY_DATABASE_URL")
  })
})

describe("Cli effects (in-process)", () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "relay-cli-fx-"))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("runMigrate, runReap and runAudit return the reports", async () => {
    const loaded: Config.Loaded = {
      port: 0,
      databaseUrl: `sqlite:${path.join(dir, "r.db")}`,
      adminKey: undefined,
      configSource: "built-in",
      config: await Effect.runPromise(Config.defaultConfig)
    }
    const report = await Effect.runPromise(Cli.runMigrate(loaded))
    expect(report["relay"]).toEqual(["0001_relay_tables", "0002_binary_ids", "0003_request_ids_per_account"])
    expect(Cli.formatMigrations(report)).toContain("applied relay/0001_relay_tables")
    expect(await Effect.runPromise(Cli.runReap(loaded))).toEqual({ examined: 0, expired: 0, refunded: 0, failures: [] })
    const audit = await Effect.runPromise(Cli.runAudit(loaded))
    expect(audit.ok).toBe(true)
    expect(Cli.formatAudit(audit)).toMatch(/^audit: ok/)
    expect(await Effect.runPromise(Cli.run(["migrate"], { RELAY_DATABASE_URL: loaded.databaseUrl }))).toBe(0)
    expect(await Effect.runPromise(Cli.run(["nope"], {}))).toBe(2)
  })
})
