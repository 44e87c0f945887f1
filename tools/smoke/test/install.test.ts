// The packaging test of issue 10 (#7): what a third-party host and a plugin author get from npm.
// Every public package is packed with `pnpm pack` (the tarball `pnpm publish` uploads) and
// installed with npm into a project in os.tmpdir(), outside the workspace, with nothing of the
// workspace on its resolution path. npm runs no install script (`--ignore-scripts`):
// better-sqlite3 13 loads its N-API prebuild, and the npm cache keeps later runs offline.
//
// Stages, in order (each uses the previous one's project):
//  1. the tarballs install and load, better-sqlite3 opens under the pinned Node;
//  2. a CommonJS consumer type-checks with `module: node16` and skipLibCheck off: no TS1479;
//  3. that consumer, built as ESM and as CommonJS, sees ONE core: an error core defines, made
//     by either build, is the same class from `import` and `require` and is caught by `_tag`;
//  4. the plugin under test (`RB_PLUGIN_DIR`, default examples/funding-vouchers: a directory
//     with package.json, src/index.ts exporting `plugin` (or default), and its tests in test/;
//     `RB_PLUGIN_OPTIONS`, JSON, default `{}`, are the options it is made with) is built
//     there with tsc as ESM and as CommonJS; `import` and `require` of the builds give a
//     `Source.Plugin` over the same core;
//  5. its conformance suite runs with vitest from the installed testkit;
//  6. the plugin's ESM build is composed with the wallet and the token budget on SQLite through
//     the one-call composition (`KnexBilling.sessionLayer`, the installed packages' migrations), a
//     custom preference [plugin, "wallet"]: an account seeded by `test/relay-seed.sql` (below) and
//     given a wallet, one request drawn from the plugin, one it cannot cover falling back to the
//     wallet; the knex audit and the plugin's own audit columns are clean;
//  7. the plugin, packed and installed with npm in the host, is loaded by package name by the
//     reference relay (the workspace's build of the private apps/relay, started as a process
//     in the host, so the plugin and its @relay-billing/core come from the host's
//     node_modules): its migrations run, an account whose chain is [plugin] gets a balance
//     from the plugin's `test/relay-seed.sql` (SQL run on the relay's SQLite database, each `?`
//     bound to the account id, `{{prefix}}` the relay's table prefix, e.g.
//     `INSERT INTO {{prefix}}vouchers (account_id, amount, expires_at) VALUES (?, 1000, 4102444800000)`),
//     and one request to the built-in `demo` model is billed from it.
// Stages 4 to 7 run when the plugin directory exists.
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process"
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

interface Manifest {
  readonly name: string
  readonly version?: string
  readonly private?: boolean
  readonly dependencies?: Readonly<Record<string, string>>
  readonly peerDependencies?: Readonly<Record<string, string>>
  readonly devDependencies?: Readonly<Record<string, string>>
}

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, "..", "..", "..")
const readManifest = (dir: string): Manifest =>
  JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as Manifest
const writeJson = (file: string, value: unknown) => writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`)

const publicPackages = readdirSync(path.join(root, "packages"))
  .map((d) => path.join(root, "packages", d))
  .filter((dir) => existsSync(path.join(dir, "package.json")) && readManifest(dir).private !== true)
  .sort()

/** The third-party versions the workspace builds and tests with, so the host matches them. */
const pinned = (name: string): string => {
  for (const dir of [path.join(root, "packages", "knex"), path.join(root, "packages", "core"), root]) {
    const m = readManifest(dir)
    const version = m.devDependencies?.[name] ?? m.dependencies?.[name]
    if (version !== undefined) return version
  }
  throw new Error(`no pinned version of ${name} in the workspace`)
}

const pluginDir = path.resolve(root, process.env["RB_PLUGIN_DIR"] ?? path.join("examples", "funding-vouchers"))
const pluginPresent = existsSync(path.join(pluginDir, "package.json"))
/** The options the plugin is made with in stage 4b (JSON; the plugin's schema decodes them). */
const pluginOptions: unknown = JSON.parse(process.env["RB_PLUGIN_OPTIONS"] ?? "{}")

const tsc = path.join(root, "node_modules", "typescript", "bin", "tsc")
const scratch = mkdtempSync(path.join(tmpdir(), "rb-install-"))
const host = path.join(scratch, "host")
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

const env = (): NodeJS.ProcessEnv => {
  const e: NodeJS.ProcessEnv = { ...process.env }
  delete e["NODE_OPTIONS"] // nothing of vitest's loader in the children
  delete e["NODE_PATH"]
  delete e["VITEST"]
  delete e["VITEST_JSON_DIR"] // the plugin's own vitest run must not write into CI's reports
  e["NO_COLOR"] = "1"
  delete e["FORCE_COLOR"]
  for (const key of Object.keys(e)) if (key.startsWith("npm_") || key.startsWith("PNPM_")) delete e[key]
  return e
}

const run = (command: string, args: ReadonlyArray<string>, cwd: string, timeout = 120_000): SpawnSyncReturns<string> =>
  spawnSync(command, args, { cwd, env: env(), encoding: "utf8", timeout })

const show = (label: string, r: SpawnSyncReturns<string>) =>
  `${label}: exit=${String(r.status)} signal=${String(r.signal)}${r.error ? ` error=${r.error.message}` : ""}\n` +
  `--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`

/** Runs a script with the pinned Node (the one running vitest) and parses its last stdout line. */
const node = (
  file: string,
  cwd: string,
  args: ReadonlyArray<string> = []
): { readonly r: SpawnSyncReturns<string>; readonly out: unknown } => {
  const r = run(process.execPath, [file, ...args], cwd)
  const last = r.stdout.trim().split("\n").at(-1) ?? ""
  let out: unknown
  try {
    out = JSON.parse(last)
  } catch {
    out = undefined
  }
  return { r, out }
}

/** A TCP port nobody listens on now (the relay binds it next). */
const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(
        () => (typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port")))
      )
    })
  })

/** tsc with the workspace's TypeScript (the host needs no compiler of its own). */
const typescript = (project: string) => run(process.execPath, [tsc, "-p", project], path.dirname(project))

/** Packs every public package and installs the tarballs (and the peers a host provides) with npm. */
const install = () => {
  const tarballs = path.join(scratch, "tarballs")
  mkdirSync(tarballs, { recursive: true })
  const dependencies: Record<string, string> = {}
  for (const dir of publicPackages) {
    const r = run("pnpm", ["pack", "--pack-destination", tarballs], dir)
    if (r.status !== 0) throw new Error(show(`pnpm pack in ${dir}`, r))
    const name = readManifest(dir).name
    const file = readdirSync(tarballs).find((f) => f.startsWith(`${name.slice(1).replace("/", "-")}-`))
    if (file === undefined) throw new Error(`no tarball for ${name} in ${tarballs}`)
    dependencies[name] = `file:${path.join(tarballs, file)}`
  }
  for (const name of ["effect", "knex", "better-sqlite3", "vitest", "@types/node"]) dependencies[name] = pinned(name)
  mkdirSync(host, { recursive: true })
  writeJson(path.join(host, "package.json"), {
    name: "rb-host",
    version: "0.0.0",
    private: true,
    type: "module",
    dependencies
  })
  const r = run(
    "npm",
    ["install", "--ignore-scripts", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
    host,
    240_000
  )
  if (r.status !== 0) throw new Error(show("npm install", r))
}

/** A tsconfig for a build in `dir` (CommonJS or ESM by the folder's package.json). */
const tsconfig = (dir: string, module: "node16" | "nodenext", extra: Record<string, unknown> = {}) => {
  writeJson(path.join(dir, "tsconfig.json"), {
    compilerOptions: {
      target: "ES2022",
      // effect's declarations name DOM types (Storage, fetch's Request): a Node project with
      // skipLibCheck off needs the DOM lib for them, whatever it does with ours
      lib: ["ES2022", "DOM"],
      module,
      moduleResolution: module,
      strict: true,
      declaration: true,
      skipLibCheck: false,
      types: ["node"],
      rootDir: "src",
      outDir: "dist",
      ...extra
    },
    include: ["src"]
  })
  return path.join(dir, "tsconfig.json")
}

// Stage 2-3's consumer: no plugin, just core's error and every public package's types.
const CONSUMER = `import { BillingError, Quota } from "@relay-billing/core"
import type * as Knex from "@relay-billing/knex"
import type * as Wallet from "@relay-billing/wallet"
import type * as Subscription from "@relay-billing/subscription"
import type * as PostConsume from "@relay-billing/post-consume"
import type * as Testkit from "@relay-billing/testkit"

/** Every public package's declarations, loaded (and checked: skipLibCheck is off). */
export type Everything = [typeof Knex, typeof Wallet, typeof Subscription, typeof PostConsume, typeof Testkit]

/** A shortfall as a plugin raises it. */
export const shortfall = (available: number): BillingError.InsufficientFunds =>
  new BillingError.InsufficientFunds({ sourceId: "consumer", accountId: "acct-1", required: 10, available })

/** Matching by _tag, the one way that holds across copies of a class. */
export const isShortfall = (error: unknown): error is BillingError.InsufficientFunds =>
  typeof error === "object" && error !== null && (error as { readonly _tag?: unknown })._tag === "InsufficientFunds"

export const quota = (n: number): Quota.Quota => n as Quota.Quota
`

// Stage 6's script, run in the host: the plugin's ESM build (stage 4) beside the wallet and the
// token budget in one knex store on SQLite, through `KnexBilling.sessionLayer`, with a custom
// preference whose chain is [plugin, "wallet"]. Arguments: the database file, the plugin's
// relay-seed.sql and its options (JSON). Prints what it saw as one JSON line.
const COMPOSE = String.raw`import { readFileSync } from "node:fs"
import { BillingSession, Ledger, SqlStore } from "@relay-billing/core"
import { Accounts, Audit, KnexBilling, KnexClient, Migrations, SourceMigrations } from "@relay-billing/knex"
import { TokenBudget, Wallet, WalletAdmin, WalletSource } from "@relay-billing/wallet"
import { Effect, Layer } from "effect"
const [database, seedFile, options] = process.argv.slice(2)
const m = await import("./plugin-esm/dist/index.js")
const plugin = m.plugin ?? m.default
const decoded = plugin.decodeOptions(JSON.parse(options))
if (decoded._tag !== "Success") throw new Error("the plugin's options: " + String(decoded.error))
const source = plugin.make(decoded.value)
const chain = [source.id, "wallet"]
const accountId = "acct-stage6", tokenId = "tok-stage6"
const migrations = Effect.all([Migrations.run(Wallet.allMigrations), SourceMigrations.run([source])])
let migrated = []
const store = Layer.effectDiscard(Effect.map(migrations, ([sdk, plugin]) => {
  migrated = Object.entries({ ...sdk, ...plugin }).map(([name, applied]) => ({ name, applied }))
})).pipe(Layer.provideMerge(KnexClient.KnexClient.layerUrl("sqlite:" + database)))
const billing = Layer.merge(
  KnexBilling.sessionLayer({
    funding: [WalletSource.make(), source],
    budgets: [TokenBudget.make()],
    session: { preferences: { plugin_first: chain } }
  }),
  WalletAdmin.WalletAdmin.layer
).pipe(Layer.provideMerge(store))
const pairs = (parts, amount) => parts.map((p) => [p.sourceId, p[amount]]).sort()
const program = Effect.gen(function*() {
  const sql = yield* SqlStore.SqlStore
  const admin = yield* WalletAdmin.WalletAdmin
  const session = yield* BillingSession.BillingSession
  const statements = readFileSync(seedFile, "utf8").replaceAll("{{prefix}}", sql.table(""))
    .split(";").map((s) => s.trim()).filter((s) => s !== "")
  for (const statement of statements) {
    yield* sql.execute("stage6.seed", statement, Array((statement.match(/\?/g) ?? []).length).fill(accountId))
  }
  // a wallet of twice the pack, a token budget of four times it
  const pack = yield* source.balance(sql, accountId)
  yield* admin.createAccount({ id: accountId, balance: 2 * pack })
  yield* admin.createToken({ id: tokenId, accountId, remain: 4 * pack })
  const balances = Effect.gen(function*() {
    return {
      wallet: (yield* admin.account(accountId)).balance,
      pack: yield* source.balance(sql, accountId),
      token: (yield* admin.token(tokenId)).remain
    }
  })
  const request = (holdId, estimate, actual) => Effect.gen(function*() {
    const opened = yield* session.open({ holdId, accountId, tokenId, estimate, preference: "plugin_first" })
    const settled = yield* session.settle(holdId, actual)
    return {
      opened: pairs(opened.hold.parts, "amount"),
      settled: {
        actual: settled.actual,
        unbilled: settled.parts.reduce((n, p) => n + p.unbilled, 0),
        charged: pairs(settled.parts, "charged")
      }
    }
  })
  const before = yield* balances
  const amounts = [Math.floor(before.pack / 4), Math.floor(before.pack / 2), before.pack, Math.floor(before.pack * 0.8)]
  const first = yield* request("stage6-1", amounts[0], amounts[1])
  const afterFirst = yield* balances
  const second = yield* request("stage6-2", amounts[2], amounts[3])
  const afterSecond = yield* balances
  const rows = yield* (yield* Ledger.Ledger).entries({ subjectId: accountId })
  const ledger = rows.filter((r) => r.sourceId !== "token")
    .map((r) => [r.sourceId, r.kind, r.amount, r.balanceAfter, r.holdId])
  const account = yield* admin.account(accountId)
  const audit = yield* Audit.run(Wallet.auditBalances, { counters: Accounts.auditCounters })
  // the plugin's own audit columns (sign x the column, per subject) against its ledger rows
  const pluginAudit = []
  for (const a of source.audit ?? []) {
    const r = yield* sql.execute("stage6.audit", "SELECT SUM(" + a.column + ") AS n FROM " + sql.table(a.table) +
      " WHERE " + a.subject + " = ?", [accountId])
    const own = yield* (yield* Ledger.Ledger).entries({ sourceId: source.id, subjectId: accountId })
    pluginAudit.push({ table: a.table, column: (a.sign ?? 1) * Number(r.rows[0]?.n ?? 0), ledger: Ledger.sum(own) })
  }
  return {
    sourceId: source.id, chain, migrated, before, amounts, first, afterFirst, second, afterSecond, ledger,
    counters: { usedQuota: account.usedQuota, requestCount: account.requestCount },
    audit, pluginAudit
  }
})
const out = await Effect.runPromise(program.pipe(Effect.provide(billing)))
console.log(JSON.stringify(out))
`

/** What stage 6's script prints. */
interface Composed {
  readonly sourceId: string
  readonly chain: ReadonlyArray<string>
  readonly migrated: ReadonlyArray<{ readonly name: string; readonly applied: ReadonlyArray<string> }>
  readonly before: Balances
  readonly amounts: readonly [number, number, number, number]
  readonly first: Request
  readonly afterFirst: Balances
  readonly second: Request
  readonly afterSecond: Balances
  readonly ledger: ReadonlyArray<readonly [string, string, number, number, string]>
  readonly counters: { readonly usedQuota: number; readonly requestCount: number }
  readonly audit: { readonly ok: boolean; readonly problems: ReadonlyArray<string> }
  readonly pluginAudit: ReadonlyArray<{ readonly table: string; readonly column: number; readonly ledger: number }>
}
interface Balances {
  readonly wallet: number
  readonly pack: number
  readonly token: number
}
interface Request {
  readonly opened: ReadonlyArray<readonly [string, number]>
  readonly settled: {
    readonly actual: number
    readonly unbilled: number
    readonly charged: ReadonlyArray<readonly [string, number]>
  }
}

describe("the packed packages installed with npm outside the workspace", { timeout: 300_000 }, () => {
  beforeAll(install, 300_000)

  it("stage 1: installs every public tarball; better-sqlite3 opens under the pinned Node, nothing compiled", () => {
    expect(path.relative(root, host).startsWith(".."), `${host} is inside ${root}`).toBe(true)
    for (const dir of publicPackages) {
      const name = readManifest(dir).name
      const installed = path.join(host, "node_modules", ...name.split("/"))
      expect(existsSync(path.join(installed, "dist", "index.js")), name).toBe(true)
      expect(readFileSync(path.join(installed, "package.json"), "utf8")).not.toContain("workspace:")
    }
    expect(existsSync(path.join(host, "node_modules", "better-sqlite3", "build"))).toBe(false)
    writeFileSync(
      path.join(host, "sqlite.cjs"),
      `const Database = require("better-sqlite3")\nconsole.log(JSON.stringify(new Database(":memory:").prepare("SELECT 41 + 1 AS answer").get()))\n`
    )
    const { out, r } = node("sqlite.cjs", host)
    expect(out, show("sqlite.cjs", r)).toEqual({ answer: 42 })
  })

  it("stage 2: a CommonJS consumer type-checks under module node16 with skipLibCheck off (no TS1479)", () => {
    const dir = path.join(host, "consumer-cjs")
    mkdirSync(path.join(dir, "src"), { recursive: true })
    writeJson(path.join(dir, "package.json"), { name: "consumer-cjs", private: true, type: "commonjs" })
    writeFileSync(path.join(dir, "src", "index.ts"), CONSUMER)
    const r = typescript(tsconfig(dir, "node16"))
    expect(r.status, show("tsc (node16, CommonJS)", r)).toBe(0)
    expect(readFileSync(path.join(dir, "dist", "index.js"), "utf8")).toContain(`require("@relay-billing/core")`)
  })

  it("stage 3: ESM and CommonJS builds of a consumer share one core: one class per error, matched by _tag", () => {
    const dir = path.join(host, "consumer-esm")
    mkdirSync(path.join(dir, "src"), { recursive: true })
    writeJson(path.join(dir, "package.json"), { name: "consumer-esm", private: true, type: "module" })
    writeFileSync(path.join(dir, "src", "index.ts"), CONSUMER)
    const build = typescript(tsconfig(dir, "node16", { skipLibCheck: true })) // stage 2 checked the libraries
    expect(build.status, show("tsc (node16, ESM)", build)).toBe(0)
    writeFileSync(
      path.join(host, "identity.mjs"),
      `import { createRequire } from "node:module"
import { Effect } from "effect"
import * as esmCore from "@relay-billing/core"
import * as esm from "./consumer-esm/dist/index.js"
const require = createRequire(import.meta.url)
const cjsCore = require("@relay-billing/core")
const cjs = require("./consumer-cjs/dist/index.js")
const fromCjs = cjs.shortfall(3)
const fromEsm = esm.shortfall(4)
const caught = Effect.runSync(
  Effect.fail(fromCjs).pipe(Effect.catchTag("InsufficientFunds", (e) => Effect.succeed(e.available)))
)
console.log(JSON.stringify({
  sameNamespace: cjsCore.BillingError === esmCore.BillingError,
  sameClass: cjsCore.BillingError.InsufficientFunds === esmCore.BillingError.InsufficientFunds,
  cjsErrorIsEsmClass: fromCjs instanceof esmCore.BillingError.InsufficientFunds,
  esmErrorIsCjsClass: fromEsm instanceof cjsCore.BillingError.InsufficientFunds,
  byTag: [cjs.isShortfall(fromEsm), esm.isShortfall(fromCjs), fromCjs._tag, fromEsm._tag],
  caught,
  code: fromCjs.code
}))
`
    )
    const { out, r } = node("identity.mjs", host)
    expect(out, show("identity.mjs", r)).toEqual({
      sameNamespace: true,
      sameClass: true,
      cjsErrorIsEsmClass: true,
      esmErrorIsCjsClass: true,
      byTag: [true, true, "InsufficientFunds", "InsufficientFunds"],
      caught: 3,
      code: "insufficient_user_quota"
    })
  })

  // Never skipped: the example plugin is part of the repository (RB_PLUGIN_DIR may point elsewhere).
  describe(`the plugin in ${path.relative(root, pluginDir)}`, () => {
    const manifest = pluginPresent ? readManifest(pluginDir) : { name: "" }

    it("exists", () => {
      expect(pluginPresent, `${pluginDir}/package.json is missing`).toBe(true)
    })
    /** The plugin's package.json for a build: its name, version and peers; the module kind of the build. */
    const prepare = (kind: "esm" | "cjs") => {
      const dir = path.join(host, `plugin-${kind}`)
      cpSync(path.join(pluginDir, "src"), path.join(dir, "src"), { recursive: true })
      if (existsSync(path.join(pluginDir, "test"))) {
        cpSync(path.join(pluginDir, "test"), path.join(dir, "test"), { recursive: true })
      }
      writeJson(path.join(dir, "package.json"), {
        name: manifest.name,
        version: manifest.version ?? "0.0.0",
        type: kind === "esm" ? "module" : "commonjs",
        main: "./dist/index.js",
        types: "./dist/index.d.ts",
        exports: {
          ".": { types: "./dist/index.d.ts", default: "./dist/index.js" },
          "./package.json": "./package.json"
        },
        files: ["dist"],
        peerDependencies: manifest.peerDependencies ?? {}
      })
      // effect is ESM-only: a CommonJS build needs `nodenext` (TS >= 5.8 compiles require(esm))
      return tsconfig(dir, "nodenext", { skipLibCheck: true })
    }

    it("stage 4a: builds as ESM and as CommonJS with tsc", () => {
      for (const kind of ["esm", "cjs"] as const) {
        const r = typescript(prepare(kind))
        expect(r.status, show(`tsc (plugin, ${kind})`, r)).toBe(0)
      }
    })

    it("stage 4b: import and require of the builds give a Source.Plugin over one core", () => {
      writeFileSync(
        path.join(host, "plugin-identity.mjs"),
        `import { createRequire } from "node:module"
import * as core from "@relay-billing/core"
import { Schema } from "effect"
const options = ${JSON.stringify(pluginOptions)}
const esm = await import("./plugin-esm/dist/index.js")
const require = createRequire(import.meta.url)
const cjs = require("./plugin-cjs/dist/index.js")
const shape = (m) => {
  const plugin = m.plugin ?? m.default
  const decoded = Schema.decodeUnknownSync(plugin.options)(options)
  const source = plugin.make(decoded)
  return [typeof plugin.id, typeof source.id, source.role, typeof source.take, typeof source.move]
}
const coreOf = (file) => createRequire(new URL(file, import.meta.url))("@relay-billing/core")
console.log(JSON.stringify({
  esm: shape(esm),
  cjs: shape(cjs),
  oneCore: coreOf("./plugin-cjs/dist/index.js") === core && coreOf("./plugin-esm/dist/index.js") === core
}))
`
      )
      const { out, r } = node("plugin-identity.mjs", host)
      const expected = ["string", "string", expect.stringMatching(/^(funding|budget)$/), "function", "function"]
      expect(out, show("plugin-identity.mjs", r)).toEqual({ esm: expected, cjs: expected, oneCore: true })
    })

    it("stage 5: its conformance suite passes with vitest from the installed testkit", () => {
      const dir = path.join(host, "plugin-esm")
      expect(existsSync(path.join(dir, "test")), `${pluginDir} has no test/ folder`).toBe(true)
      writeFileSync(
        path.join(dir, "vitest.config.mjs"),
        `export default { test: { include: ["test/**/*.test.ts"] } }\n`
      )
      const vitest = path.join(host, "node_modules", "vitest", "vitest.mjs")
      const r = run(process.execPath, [vitest, "run", "--root", dir, "--reporter", "default"], dir, 240_000)
      expect(r.status, show("vitest run (plugin conformance)", r)).toBe(0)
      expect(r.stdout).toMatch(/Tests\s+\d+ passed/)
    })

    it(
      "stage 6: composed with the wallet and the token budget on SQLite in one call (KnexBilling.sessionLayer)",
      () => {
        const seedFile = path.join(pluginDir, "test", "relay-seed.sql")
        expect(existsSync(seedFile), `${seedFile} (the seed, see stage 7) is missing`).toBe(true)
        writeFileSync(path.join(host, "compose.mjs"), COMPOSE)
        const database = path.join(host, "compose.db")
        const { out, r } = node("compose.mjs", host, [database, seedFile, JSON.stringify(pluginOptions)])
        expect(out, show("compose.mjs", r)).toBeDefined()
        const o = out as Composed
        const chain = [o.sourceId, "wallet"]
        expect(o.chain).toEqual(chain)
        expect(o.migrated.map((set) => set.name)).toEqual(["knex", "wallet", `source_${o.sourceId}`])
        for (const set of o.migrated) expect(set.applied.length, set.name).toBeGreaterThan(0)
        const pack = o.before.pack
        expect(pack, "the seed gives the account a balance in the plugin").toBeGreaterThanOrEqual(4)
        expect(o.before).toEqual({ wallet: 2 * pack, pack, token: 4 * pack })
        const wallet = 2 * pack, token = 4 * pack
        const [estimate1, actual1, estimate2, actual2] = o.amounts
        expect(o.amounts).toEqual([Math.floor(pack / 4), Math.floor(pack / 2), pack, Math.floor(pack * 0.8)])
        // request 1: the pack carries the hold and its settle; the wallet is untouched; the token pays too
        expect(o.first.opened).toEqual([["token", estimate1], [o.sourceId, estimate1]].sort())
        expect(o.first.settled).toEqual({
          actual: actual1,
          unbilled: 0,
          charged: [["token", actual1], [o.sourceId, actual1]].sort()
        })
        expect(o.afterFirst).toEqual({ wallet, pack: pack - actual1, token: token - actual1 })
        // request 2: more than the pack has left: the chain falls back to the wallet, the pack is untouched
        expect(o.second.opened).toEqual([["token", estimate2], ["wallet", estimate2]].sort())
        expect(o.second.settled).toEqual({
          actual: actual2,
          unbilled: 0,
          charged: [["token", actual2], ["wallet", actual2]].sort()
        })
        expect(o.afterSecond).toEqual({
          wallet: wallet - actual2,
          pack: pack - actual1,
          token: token - actual1 - actual2
        })
        // the ledger: the wallet's opening top-up, then each funding move in order, with the balance it left
        expect(o.ledger).toEqual([
          ["wallet", "topup", wallet, wallet, null],
          [o.sourceId, "reserve", -estimate1, pack - estimate1, "stage6-1"],
          [o.sourceId, "settle", estimate1 - actual1, pack - actual1, "stage6-1"],
          ["wallet", "reserve", -estimate2, wallet - estimate2, "stage6-2"],
          ["wallet", "settle", estimate2 - actual2, wallet - actual2, "stage6-2"]
        ])
        expect(o.counters).toEqual({ usedQuota: actual1 + actual2, requestCount: 2 })
        // the knex audit (wallet, token, counters, holds and parts) and the plugin's own column against its ledger
        expect(o.audit, JSON.stringify(o.audit)).toEqual(
          expect.objectContaining({ ok: true, problems: [], holdsChecked: 2 })
        )
        expect(o.pluginAudit.length, "the plugin declares what its ledger sums to").toBeGreaterThan(0)
        for (const a of o.pluginAudit) expect(a.ledger, JSON.stringify(a)).toBe(a.column)
      },
      60_000
    )

    it("stage 7: the relay loads it by package name from the host and bills one request from it", async () => {
      const seedFile = path.join(pluginDir, "test", "relay-seed.sql")
      expect(existsSync(seedFile), `${seedFile}: the SQL that gives an account (each ?) a balance in the plugin`).toBe(
        true
      )
      const relayMain = path.join(root, "apps", "relay", "dist", "main.js")
      expect(existsSync(relayMain), `${relayMain} is missing: build the relay`).toBe(true)

      // the plugin installed by package name, as a deployment would: npm pack + npm install
      const packed = run(
        "npm",
        ["pack", "--pack-destination", scratch, "--loglevel=error"],
        path.join(host, "plugin-esm")
      )
      expect(packed.status, show("npm pack (plugin)", packed)).toBe(0)
      const tarball = path.join(scratch, packed.stdout.trim().split("\n").at(-1)!)
      const added = run(
        "npm",
        [
          "install",
          "--no-save",
          "--ignore-scripts",
          "--prefer-offline",
          "--no-audit",
          "--no-fund",
          "--loglevel=error",
          tarball
        ],
        host,
        240_000
      )
      expect(added.status, show("npm install (plugin)", added)).toBe(0)

      const esm = await import(path.join(host, "plugin-esm", "dist", "index.js")) as {
        readonly plugin?: { readonly id: string }
        readonly default?: { readonly id: string }
      }
      const sourceId = (esm.plugin ?? esm.default)!.id
      const adminKey = "sk-admin-packaging-0123456789"
      const database = path.join(host, "relay.db")
      writeJson(path.join(host, "relay.json"), {
        models: { demo: { modelRatio: 1, completionRatio: 1 } },
        channels: [{ name: "demo", baseUrl: "demo://local/v1", models: ["demo"] }],
        funding: {
          sources: [{ id: sourceId, package: manifest.name, options: pluginOptions }],
          preferences: { plugin_only: [sourceId] }
        }
      })
      const port = await freePort()
      const relay = spawn(process.execPath, [relayMain, "serve"], {
        cwd: host,
        env: {
          ...env(),
          RELAY_PORT: String(port),
          RELAY_HOST: "127.0.0.1",
          RELAY_DATABASE_URL: `sqlite:${database}`,
          RELAY_ADMIN_KEY: adminKey,
          RELAY_CONFIG: path.join(host, "relay.json")
        },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let log = ""
      relay.stdout.on("data", (chunk: Buffer) => (log += chunk.toString()))
      relay.stderr.on("data", (chunk: Buffer) => (log += chunk.toString()))
      const exited = new Promise<number | null>((resolve) => relay.on("exit", (code) => resolve(code)))
      try {
        const url = `http://127.0.0.1:${port}`
        const listening = await Promise.race([
          (async () => {
            // event-driven: resolved by the relay's own "Listening on" log line
            while (!log.includes(`Listening on`)) {
              await new Promise((r) => {
                relay.stdout.once("data", r)
                relay.stderr.once("data", r)
              })
            }
            return true
          })(),
          exited.then(() => false)
        ])
        expect(listening, `the relay did not start:\n${log}`).toBe(true)
        const call = async (method: string, route: string, body?: unknown, key = adminKey) => {
          const response = await fetch(`${url}${route}`, {
            method,
            headers: {
              authorization: `Bearer ${key}`,
              ...(body !== undefined ? { "content-type": "application/json" } : {})
            },
            ...(body !== undefined ? { body: JSON.stringify(body) } : {})
          })
          const text = await response.text()
          return { status: response.status, body: (text === "" ? undefined : JSON.parse(text)) as any }
        }
        const account = await call("POST", "/admin/accounts", { quota: 0, billingPreference: "plugin_only" })
        expect(account.status, JSON.stringify(account.body)).toBe(201)
        const token = await call("POST", "/admin/tokens", { accountId: account.body.id, unlimited: true })
        expect(token.status, JSON.stringify(token.body)).toBe(201)

        writeFileSync(
          path.join(host, "seed.cjs"),
          String.raw`const [database, file, accountId] = process.argv.slice(2)
const db = new (require("better-sqlite3"))(database)
db.pragma("busy_timeout = 10000")
// {{prefix}}: the relay's table prefix, read off the SDK's own migrations table
const knexTable = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%knex_migrations'").get()
if (knexTable === undefined) throw new Error("the relay did not migrate its database")
const prefix = knexTable.name.slice(0, -"knex_migrations".length)
const statements = require("node:fs").readFileSync(file, "utf8").replaceAll("{{prefix}}", prefix)
  .split(";").map((s) => s.trim()).filter((s) => s !== "")
for (const statement of statements) db.prepare(statement).run(...Array((statement.match(/\?/g) ?? []).length).fill(accountId))
db.close()
`
        )
        const seeded = run(process.execPath, ["seed.cjs", database, seedFile, account.body.id], host)
        expect(seeded.status, show("relay-seed.sql", seeded)).toBe(0)

        const requestId = `packaging-${process.pid}-${Date.now()}`
        const completion = await fetch(`${url}/v1/chat/completions`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${token.body.key}`,
            "content-type": "application/json",
            "x-request-id": requestId
          },
          body: JSON.stringify({ model: "demo", messages: [{ role: "user", content: "Say hello" }], max_tokens: 5 })
        })
        expect(completion.status, await completion.clone().text()).toBe(200)
        await completion.text()
        let hold = await call("GET", `/admin/holds/${encodeURIComponent(requestId)}`)
        while (hold.status === 200 && hold.body.status === "pending") {
          hold = await call("GET", `/admin/holds/${encodeURIComponent(requestId)}`) // the settle follows the answer
        }
        expect(hold.status, JSON.stringify(hold.body)).toBe(200)
        expect(hold.body.status).toBe("settled")
        const paid = (hold.body.parts as Array<{ source: string; charged?: number }>).filter((p) =>
          p.source !== "token"
        )
        expect(paid).toEqual([expect.objectContaining({ source: sourceId, charged: hold.body.actual })])
        expect(hold.body.actual).toBeGreaterThan(0)
        const audit = await call("GET", "/admin/audit")
        expect(audit.body, JSON.stringify(audit.body)).toEqual(expect.objectContaining({ ok: true }))
      } finally {
        relay.kill("SIGTERM")
        await exited
      }
    }, 240_000)
  })
})
