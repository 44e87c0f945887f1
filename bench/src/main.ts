/**
 * relay-billing bench: the SDK's open+settle loop against a hand-written raw
 * SQL loop doing the same writes with the same knex instance, in one process
 * run, on SQLite (file, WAL) and on PostgreSQL when BILLING_PG_URL is set;
 * 1 and 16 workers; random accounts and one hot account. Prints a table and
 * writes bench/results/latest.json. See bench/README.md.
 */
import { KnexClient, Migrations, TestDatabase } from "@relay-billing/knex"
import { Wallet } from "@relay-billing/wallet"
import { Effect } from "effect"
import type { Knex } from "knex"
import { execFileSync, spawn } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import type { StatementHook } from "./db.js"
import { hookStatements, RAW_PREFIX, SDK_PREFIX, seed } from "./db.js"
import { rawRetries, rawSession } from "./raw.js"
import type { Slice } from "./runner.js"
import { percentile, rawSlice, sdkSlice } from "./runner.js"
import type { Billing } from "./sdk.js"
import { makeBilling, sdkSession } from "./sdk.js"
import type { Verification } from "./verify.js"
import { verify } from "./verify.js"
import type { AccountMode, Side } from "./workload.js"
import { allAccounts, Expected, inputs } from "./workload.js"

// ------------------------------------------------------------------ configuration

const env = process.env
const num = (
  name: string,
  fallback: number
) => (env[name] !== undefined && env[name] !== "" ? Number(env[name]) : fallback)

const config = {
  /** Length of one measured slice of one side (ms). */
  sliceMillis: num("BENCH_SLICE_MS", 750),
  /** Measured rounds per row; each round runs both sides, the order alternating (ABBA…). */
  rounds: num("BENCH_ROUNDS", 4),
  /** Warm-up per side per row (ms), not measured. */
  warmupMillis: num("BENCH_WARMUP_MS", 400),
  /** Accounts in the random pool. */
  accounts: num("BENCH_ACCOUNTS", 1_000),
  workers: (env["BENCH_WORKERS"] ?? "1,16").split(",").map(Number),
  modes: (env["BENCH_MODES"] ?? "random,hot").split(",") as Array<AccountMode>,
  /** Sessions per side in the statement-profile pass (1 worker, counted and timed per statement). */
  profileSessions: num("BENCH_PROFILE_SESSIONS", 300),
  /** Seconds per side of the peak-RSS child processes (0 = skip them). */
  rssSeconds: num("BENCH_RSS_SECONDS", 2),
  /** SDK slices are interrupted this long after their deadline (see runner.ts). */
  capGraceMillis: num("BENCH_CAP_GRACE_MS", 2_000),
  /** Pool size for PostgreSQL (the largest worker count, so 16 workers are 16 connections). */
  poolMax: num("BENCH_PG_POOL", 16),
  only: env["BENCH_ONLY"],
  /** The SDK client's group commit: "off", "on" (the client's default) or N batches in flight. */
  groupCommit: env["BENCH_GROUP_COMMIT"] ?? "on",
  target: 0.85
}

interface Target {
  readonly name: "sqlite" | "postgres"
  readonly url?: string
}

const targets: Array<Target> = [
  { name: "sqlite" as const },
  ...(env["BILLING_PG_URL"] ? [{ name: "postgres" as const, url: env["BILLING_PG_URL"] }] : [])
].filter((t) => !config.only || config.only === t.name)

const dbLabel = (t: Target) => (t.name === "sqlite" ? "sqlite-file" : "postgres")

// ------------------------------------------------------------------ one database

interface Bench {
  readonly target: Target
  readonly knex: Knex
  readonly sdkClient: KnexClient.Client
  readonly rawClient: KnexClient.Client
  readonly billing: Billing
  readonly hook: StatementHook
  readonly openingLedgerRows: number
  readonly accounts: ReadonlyArray<string>
}

/** An isolated database (dropped when the scope closes) with both table sets migrated and seeded. */
const setup = (target: Target) =>
  Effect.gen(function*() {
    const db = yield* TestDatabase.isolated(target.url ? { name: target.name, url: target.url } : { name: target.name })
    const groupCommit = config.groupCommit === "off"
      ? false
      : config.groupCommit === "on"
      ? true
      : { maxConcurrentBatches: Number(config.groupCommit) }
    const sdkClient = yield* KnexClient.fromUrl(db.url, {
      ...db.options,
      prefix: SDK_PREFIX,
      poolMax: config.poolMax,
      groupCommit
    })
    const knex = sdkClient.knex
    // The raw side's tables: the same migrations, another prefix, the same knex instance.
    const rawClient = yield* KnexClient.fromKnex(knex, { ...db.options, prefix: RAW_PREFIX })
    for (const client of [sdkClient, rawClient]) {
      yield* Migrations.run(Wallet.allMigrations).pipe(Effect.provideService(KnexClient.KnexClient, client))
    }
    const openingLedgerRows = yield* Effect.promise(() => seed(knex, SDK_PREFIX, config.accounts))
    yield* Effect.promise(() => seed(knex, RAW_PREFIX, config.accounts))
    const billing = yield* makeBilling(sdkClient)
    const hook = hookStatements(knex)
    yield* Effect.addFinalizer(() => Effect.sync(hook.restore))
    const bench: Bench = {
      target,
      knex,
      sdkClient,
      rawClient,
      billing,
      hook,
      openingLedgerRows,
      accounts: allAccounts(config.accounts)
    }
    return bench
  })

const slice = (
  b: Bench,
  side: Side,
  workers: number,
  millis: number,
  next: ReturnType<typeof inputs>,
  expected: Expected
) =>
  side === "sdk"
    ? sdkSlice(b.billing, b.knex, b.sdkClient.table("holds"), workers, millis, config.capGraceMillis, next, expected)
    : rawSlice(b.knex, RAW_PREFIX, workers, millis, next, expected)

interface SideResult {
  readonly sessions: number
  readonly seconds: number
  readonly perSecond: number
  readonly p50Millis: number
  readonly p99Millis: number
  /** Process CPU time per completed session (ms): client-side only on PostgreSQL, SQLite's own work included on SQLite. */
  readonly cpuMillisPerSession: number
  /** Sessions that failed with an error, and their messages. */
  readonly failed: number
  readonly errors: Record<string, number>
  /** Sessions interrupted at the hard cap of a slice (SDK only). */
  readonly abandoned: number
  /** Driver errors during this side's slices, by code (40P01 = deadlock, 40001 = serialization). */
  readonly driverErrors: Record<string, number>
  /** Peak RSS sampled in this process while this side's slices ran (MB). */
  readonly sampledPeakRssMB: number
}

interface Row {
  readonly db: string
  readonly workers: number
  readonly accounts: string
  readonly sdk: SideResult
  readonly raw: SideResult
  readonly ratio: number
  readonly roundRatios: ReadonlyArray<number>
  readonly meetsTarget: boolean
  readonly rawRetries: number
}

const mb = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10

const runRow = async (
  b: Bench,
  workers: number,
  mode: AccountMode,
  index: number,
  expected: Record<Side, Expected>
) => {
  const label = `${workers}w-${mode}`
  const seed = 1_000 + index
  const next = {
    sdk: inputs("sdk", label, mode, config.accounts, seed),
    raw: inputs("raw", label, mode, config.accounts, seed)
  }
  for (const side of ["sdk", "raw"] as const) {
    await slice(b, side, workers, config.warmupMillis, next[side], expected[side])
  }
  const acc: Record<Side, Array<Slice>> = { sdk: [], raw: [] }
  const before = { sdk: expected.sdk.snapshot(), raw: expected.raw.snapshot() }
  const errors: Record<Side, Record<string, number>> = { sdk: {}, raw: {} }
  const retriesBefore = rawRetries.count
  for (let round = 0; round < config.rounds; round++) {
    const order: Array<Side> = round % 2 === 0 ? ["sdk", "raw"] : ["raw", "sdk"]
    for (const side of order) {
      b.hook.stats.errors.clear()
      acc[side].push(await slice(b, side, workers, config.sliceMillis, next[side], expected[side]))
      for (const [code, count] of b.hook.stats.errors) errors[side][code] = (errors[side][code] ?? 0) + count
    }
  }
  const summarize = (side: Side): SideResult => {
    const slices = acc[side]
    const sessions = slices.reduce((a, s) => a + s.sessions, 0)
    const seconds = slices.reduce((a, s) => a + s.millis, 0) / 1000
    const latencies = slices.flatMap((s) => s.latencies).sort((x, y) => x - y)
    const failures = expected[side].since(before[side])
    return {
      sessions,
      seconds: Math.round(seconds * 1000) / 1000,
      perSecond: Math.round(sessions / seconds),
      p50Millis: Math.round(percentile(latencies, 50) * 100) / 100,
      p99Millis: Math.round(percentile(latencies, 99) * 100) / 100,
      cpuMillisPerSession: Math.round((slices.reduce((a, s) => a + s.cpuMillis, 0) / Math.max(1, sessions)) * 1000) /
        1000,
      failed: failures.failed,
      errors: failures.errors,
      abandoned: failures.abandoned,
      driverErrors: errors[side],
      sampledPeakRssMB: mb(Math.max(...slices.map((s) => s.peakRss)))
    }
  }
  const sdk = summarize("sdk")
  const raw = summarize("raw")
  const ratio = Math.round((sdk.perSecond / raw.perSecond) * 1000) / 1000
  const roundRatios = acc.sdk.map((s, i) => {
    const r = acc.raw[i]!
    return Math.round(((s.sessions / s.millis) / (r.sessions / r.millis)) * 1000) / 1000
  })
  const row: Row = {
    db: dbLabel(b.target),
    workers,
    accounts: mode === "hot" ? "1 hot" : `${config.accounts} random`,
    sdk,
    raw,
    ratio,
    roundRatios,
    meetsTarget: ratio >= config.target,
    rawRetries: rawRetries.count - retriesBefore
  }
  log(
    `  ${row.db.padEnd(11)} ${String(workers).padStart(2)}w ${
      row.accounts.padEnd(12)
    } sdk ${sdk.perSecond}/s  raw ${raw.perSecond}/s  ratio ${ratio}`
  )
  return row
}

// ------------------------------------------------------------------ statement profile

interface SideProfile {
  readonly sessions: number
  readonly statementsPerSession: number
  readonly byPhase: Record<string, number>
  /** label → { open, settle } statements per session */
  readonly statements: Record<string, Record<string, number>>
  /** label → time inside the driver per session, ms */
  readonly driverMillisByStatement: Record<string, number>
  readonly wallMillisPerSession: number
  readonly driverMillisPerSession: number
  readonly nonDriverMillisPerSession: number
  /** Process CPU time per session (user + system). */
  readonly cpuMillisPerSession: number
}

const profileSide = async (b: Bench, side: Side, expected: Expected): Promise<SideProfile> => {
  const next = inputs(side, "profile", "random", config.accounts, 7)
  const { hook } = b
  const setPhase = (p: string) => {
    hook.state.phase = p
  }
  // warm the code path without counting
  const once = async (count: boolean) => {
    const input = next()
    const state = { opened: false }
    try {
      if (side === "sdk") {
        await Effect.runPromise(sdkSession(b.billing, input, state, count ? setPhase : undefined))
      } else {
        await rawSession(b.knex, RAW_PREFIX, input, state, count ? setPhase : undefined)
      }
      expected.settle(input)
    } catch (error) {
      expected.fail(input, error, state.opened)
    }
  }
  for (let i = 0; i < 50; i++) await once(false)
  hook.reset()
  hook.state.detail = true
  const cpu = process.cpuUsage()
  const start = performance.now()
  for (let i = 0; i < config.profileSessions; i++) await once(true)
  const wall = performance.now() - start
  const used = process.cpuUsage(cpu)
  hook.state.detail = false
  hook.state.phase = "-"
  const n = config.profileSessions
  const statements: Record<string, Record<string, number>> = {}
  const byPhase: Record<string, number> = {}
  for (const [label, phases] of hook.stats.counts) {
    statements[label] = {}
    for (const [phase, count] of phases) {
      statements[label]![phase] = Math.round((count / n) * 100) / 100
      byPhase[phase] = Math.round(((byPhase[phase] ?? 0) + count / n) * 100) / 100
    }
  }
  const r2 = (x: number) => Math.round(x * 1000) / 1000
  const driverMillisByStatement = Object.fromEntries([...hook.stats.millis].map(([l, ms]) => [l, r2(ms / n)]))
  return {
    driverMillisByStatement,
    sessions: n,
    statementsPerSession: r2(hook.stats.statements / n),
    byPhase,
    statements,
    wallMillisPerSession: r2(wall / n),
    driverMillisPerSession: r2(hook.stats.sqlMillis / n),
    nonDriverMillisPerSession: r2((wall - hook.stats.sqlMillis) / n),
    cpuMillisPerSession: r2((used.user + used.system) / 1000 / n)
  }
}

// ------------------------------------------------------------------ a dialect

interface DialectResult {
  readonly db: string
  readonly rows: ReadonlyArray<Row>
  readonly profile: Record<Side, SideProfile>
  readonly verification: Record<Side, Verification>
  readonly sameRowShapes: boolean
}

const runDialect = (target: Target) =>
  Effect.scoped(Effect.gen(function*() {
    log(`${dbLabel(target)}: isolated database, migrations, ${config.accounts + 1} accounts per side`)
    const b = yield* setup(target)
    const expected: Record<Side, Expected> = { sdk: new Expected(), raw: new Expected() }
    const rows: Array<Row> = []
    let index = 0
    for (const workers of config.workers) {
      for (const mode of config.modes) {
        rows.push(yield* Effect.promise(() => runRow(b, workers, mode, index++, expected)))
      }
    }
    const profile = {
      sdk: yield* Effect.promise(() => profileSide(b, "sdk", expected.sdk)),
      raw: yield* Effect.promise(() => profileSide(b, "raw", expected.raw))
    }
    const verification = {
      sdk: yield* verify(b.sdkClient, expected.sdk, b.accounts, b.openingLedgerRows),
      raw: yield* verify(b.rawClient, expected.raw, b.accounts, b.openingLedgerRows)
    }
    for (const side of ["sdk", "raw"] as const) {
      const v = verification[side]
      log(
        `  verify ${side}: ${
          v.ok ? "ok" : "FAILED"
        } (${v.sessionsSettled} sessions, ${v.ledgerRows} ledger rows, audit ${v.audit.ok ? "clean" : "NOT clean"})`
      )
      for (const p of v.problems.slice(0, 10)) log(`    ${p}`)
    }
    const sameRowShapes = verification.sdk.shape === verification.raw.shape
    if (!sameRowShapes) {
      log(`  row shapes differ:\n    sdk ${verification.sdk.shape}\n    raw ${verification.raw.shape}`)
    }
    const result: DialectResult = { db: dbLabel(target), rows, profile, verification, sameRowShapes }
    return result
  }))

// ------------------------------------------------------------------ peak RSS, one child process per side

interface RssResult {
  readonly db: string
  readonly side: Side
  readonly workers: number
  readonly sessions: number
  readonly perSecond: number
  /** RSS after setup, right before the measured loop (MB). */
  readonly rssBeforeMB: number
  /** Peak RSS of the whole child process (resourceUsage().maxRSS, MB). */
  readonly peakRssMB: number
  readonly heapUsedAfterMB: number
  readonly verified: boolean
}

const RSS_WORKERS = 16

const rssChild = async (side: Side, dialect: Target["name"]) => {
  const target = targets.find((t) => t.name === dialect)!
  const out = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const b = yield* setup(target)
    const expected = new Expected()
    const next = inputs(side, "rss", "random", config.accounts, 99)
    yield* Effect.promise(() => slice(b, side, RSS_WORKERS, 500, next, expected))
    const before = process.memoryUsage.rss()
    const s = yield* Effect.promise(() => slice(b, side, RSS_WORKERS, config.rssSeconds * 1000, next, expected))
    const peak = process.resourceUsage().maxRSS * 1024
    const heap = process.memoryUsage().heapUsed
    const v = yield* verify(side === "sdk" ? b.sdkClient : b.rawClient, expected, b.accounts, b.openingLedgerRows)
    const result: RssResult = {
      db: dbLabel(target),
      side,
      workers: RSS_WORKERS,
      sessions: s.sessions,
      perSecond: Math.round(s.sessions / (s.millis / 1000)),
      rssBeforeMB: mb(before),
      peakRssMB: mb(peak),
      heapUsedAfterMB: mb(heap),
      verified: v.ok
    }
    return result
  })))
  process.stdout.write(`RSS-RESULT ${JSON.stringify(out)}\n`)
}

/**
 * `--loop SIDE DIALECT SECONDS [WORKERS] [MODE]`: one side only, nothing else
 * measured (for `node --cpu-prof`, or to watch the database while it runs).
 */
const loopOnly = async (side: Side, dialect: Target["name"], seconds: number, workers: number, mode: AccountMode) => {
  const target = targets.find((t) => t.name === dialect)!
  await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const b = yield* setup(target)
    const expected = new Expected()
    const next = inputs(side, "loop", mode, config.accounts, 5)
    const s = yield* Effect.promise(() => slice(b, side, workers, seconds * 1000, next, expected))
    log(
      `${side} ${dialect} ${workers}w ${mode}: ${s.sessions} sessions, ${
        (s.sessions / (s.millis / 1000)).toFixed(1)
      }/s, ` +
        `CPU ${
          (s.cpuMillis / Math.max(1, s.sessions)).toFixed(3)
        } ms/session, failed ${expected.failed}, driver errors ${
          JSON.stringify(Object.fromEntries(b.hook.stats.errors))
        }`
    )
    const v = yield* verify(side === "sdk" ? b.sdkClient : b.rawClient, expected, b.accounts, b.openingLedgerRows)
    log(`verified: ${v.ok ? "ok" : v.problems.join("; ")}`)
  })))
}

const spawnRssChild = (side: Side, dialect: Target["name"]) =>
  new Promise<RssResult>((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "--rss-child", side, dialect], {
      stdio: ["ignore", "pipe", "inherit"],
      env: process.env
    })
    let stdout = ""
    child.stdout.on("data", (d) => (stdout += String(d)))
    child.on("error", reject)
    child.on("exit", (code) => {
      const line = stdout.split("\n").find((l) => l.startsWith("RSS-RESULT "))
      if (code !== 0 || !line) return reject(new Error(`RSS child ${side}/${dialect} exited ${code}: ${stdout}`))
      resolve(JSON.parse(line.slice("RSS-RESULT ".length)) as RssResult)
    })
  })

// ------------------------------------------------------------------ output

const log = (line: string) => process.stderr.write(`${line}\n`)

const table = (headers: Array<string>, rows: Array<Array<string>>, right: Set<number> = new Set()) => {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const fmt = (cells: Array<string>) =>
    `| ${cells.map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(" | ")} |`
  return [
    fmt(headers),
    `|${widths.map((w, i) => (right.has(i) ? `${"-".repeat(w + 1)}:` : `${"-".repeat(w + 2)}`)).join("|")}|`,
    ...rows.map(fmt)
  ].join("\n")
}

const latencyText = (s: SideResult) => (s.sessions ? `${s.p50Millis} / ${s.p99Millis}` : "–")

const errorsText = (e: Record<string, number>) =>
  Object.keys(e).length === 0 ? "" : Object.entries(e).map(([k, v]) => `${k}×${v}`).join(" ")

const explain = (row: Row, d: DialectResult): string => {
  const s = d.profile.sdk
  const r = d.profile.raw
  const parts = [
    `SDK ${s.statementsPerSession} statements/session vs raw ${r.statementsPerSession}`,
    `CPU ${row.sdk.cpuMillisPerSession} vs ${row.raw.cpuMillisPerSession} ms/session in this row`,
    `1-worker profile: driver ${s.driverMillisPerSession} vs ${r.driverMillisPerSession} ms/session, outside the driver (Effect, engine, knex builder) ${s.nonDriverMillisPerSession} vs ${r.nonDriverMillisPerSession} ms/session`
  ]
  const sdkErr = errorsText(row.sdk.driverErrors)
  const rawErr = errorsText(row.raw.driverErrors)
  if (sdkErr || rawErr) {
    parts.push(
      `driver errors SDK ${sdkErr || "none"}, raw ${
        rawErr || "none"
      } (40P01 deadlock, 25P02 statement in an aborted transaction)`
    )
  }
  if (row.sdk.failed || row.raw.failed) parts.push(`failed sessions SDK ${row.sdk.failed}, raw ${row.raw.failed}`)
  if (row.sdk.abandoned) parts.push(`${row.sdk.abandoned} SDK sessions still running at the slice cap`)
  return parts.join("; ")
}

/** The commit the packages were built from, and whether the tree had local changes. */
const gitState = () => {
  try {
    const cwd = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..")
    const git = (...args: Array<string>) =>
      execFileSync("git", args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim()
    const commit = git("rev-parse", "--short", "HEAD")
    const dirty = git("status", "--porcelain", "--", "packages").split("\n").filter(Boolean).length
    return { commit, packagesChangedFiles: dirty }
  } catch {
    return { commit: "unknown", packagesChangedFiles: 0 }
  }
}

const main = async () => {
  if (process.argv[2] === "--rss-child") return rssChild(process.argv[3] as Side, process.argv[4] as Target["name"])
  if (process.argv[2] === "--loop") {
    const [side, dialect, seconds, workers, mode] = process.argv.slice(3)
    return loopOnly(
      side as Side,
      dialect as Target["name"],
      Number(seconds ?? 5),
      Number(workers ?? 1),
      (mode ?? "random") as AccountMode
    )
  }
  const startedAt = new Date()
  const loadBefore = os.loadavg()
  const git = gitState()
  log(
    `relay-billing bench: ${targets.map(dbLabel).join(", ")}${
      env["BILLING_PG_URL"] ? "" : " (set BILLING_PG_URL for PostgreSQL)"
    }`
  )
  const dialects: Array<DialectResult> = []
  for (const target of targets) dialects.push(await Effect.runPromise(runDialect(target)))
  const mainPeakRssMB = mb(process.resourceUsage().maxRSS * 1024)
  const rss: Array<RssResult> = []
  if (config.rssSeconds > 0) {
    for (const target of targets) {
      for (const side of ["sdk", "raw"] as const) {
        log(`peak RSS: ${dbLabel(target)} ${side} in a child process (${RSS_WORKERS} workers, ${config.rssSeconds}s)`)
        rss.push(await spawnRssChild(side, target.name))
      }
    }
  }
  const rows = dialects.flatMap((d) => d.rows)

  const out: Array<string> = []
  out.push("")
  out.push(
    `relay-billing bench — ${startedAt.toISOString()} — ${os.cpus().length} × ${
      os.cpus()[0]?.model ?? "cpu"
    }, node ${process.version}`
  )
  out.push(
    `packages built from ${git.commit}${
      git.packagesChangedFiles ? ` + ${git.packagesChangedFiles} locally changed files under packages/` : ""
    }`
  )
  out.push(
    `load average before/after: ${loadBefore.map((l) => l.toFixed(1)).join(" ")} / ${
      os.loadavg().map((l) => l.toFixed(1)).join(" ")
    }`
  )
  out.push(
    `sessions/s = open + settle (2 transactions) per session; SDK and raw alternate in ${config.rounds} rounds of ${config.sliceMillis} ms per side after ${config.warmupMillis} ms warm-up`
  )
  out.push("")
  out.push(table(
    [
      "db",
      "workers",
      "accounts",
      "SDK sess/s",
      "raw sess/s",
      "SDK/raw",
      "per round",
      "SDK p50/p99 ms",
      "raw p50/p99 ms",
      "CPU ms/sess SDK/raw",
      "driver errors SDK / raw",
      "failed SDK/raw",
      "≥ 0.85"
    ],
    rows.map((r) => [
      r.db,
      String(r.workers),
      r.accounts,
      String(r.sdk.perSecond),
      String(r.raw.perSecond),
      r.ratio.toFixed(3),
      `${Math.min(...r.roundRatios).toFixed(2)}–${Math.max(...r.roundRatios).toFixed(2)}`,
      latencyText(r.sdk),
      latencyText(r.raw),
      `${r.sdk.sessions ? r.sdk.cpuMillisPerSession : "–"} / ${r.raw.sessions ? r.raw.cpuMillisPerSession : "–"}`,
      `${errorsText(r.sdk.driverErrors) || "0"} / ${errorsText(r.raw.driverErrors) || "0"}`,
      `${r.sdk.failed}${r.sdk.abandoned ? `+${r.sdk.abandoned} cut` : ""} / ${r.raw.failed}`,
      r.meetsTarget ? "yes" : "NO"
    ]),
    new Set([1, 3, 4, 5])
  ))
  out.push("")
  out.push(`peak RSS: whole bench process ${mainPeakRssMB} MB (both sides, all rows)`)
  if (rss.length > 0) {
    out.push(table(
      ["db", "side", "workers", "sess/s", "RSS before loop MB", "peak RSS MB", "heap after MB", "verified"],
      rss.map((
        r
      ) => [
        r.db,
        r.side,
        String(r.workers),
        String(r.perSecond),
        String(r.rssBeforeMB),
        String(r.peakRssMB),
        String(r.heapUsedAfterMB),
        r.verified ? "yes" : "NO"
      ]),
      new Set([2, 3, 4, 5, 6])
    ))
  }
  for (const d of dialects) {
    out.push("")
    out.push(
      `statements per session on ${d.db} (1 worker, ${d.profile.sdk.sessions} sessions per side, counted at the driver):`
    )
    const labels = [...new Set([...Object.keys(d.profile.sdk.statements), ...Object.keys(d.profile.raw.statements)])]
    const cell = (p: SideProfile, label: string, phase: string) => {
      const v = p.statements[label]?.[phase]
      return v === undefined ? "" : String(v)
    }
    const order = (l: string) => (l === "BEGIN" ? 0 : l === "COMMIT" ? 2 : 1)
    labels.sort((a, b) => order(a) - order(b) || a.localeCompare(b))
    out.push(table(
      ["statement", "SDK open", "SDK settle", "raw open", "raw settle", "SDK driver ms", "raw driver ms"],
      [
        ...labels.map((l) => [
          l,
          cell(d.profile.sdk, l, "open"),
          cell(d.profile.sdk, l, "settle"),
          cell(d.profile.raw, l, "open"),
          cell(d.profile.raw, l, "settle"),
          String(d.profile.sdk.driverMillisByStatement[l] ?? ""),
          String(d.profile.raw.driverMillisByStatement[l] ?? "")
        ]),
        [
          "total",
          String(d.profile.sdk.byPhase["open"] ?? 0),
          String(d.profile.sdk.byPhase["settle"] ?? 0),
          String(d.profile.raw.byPhase["open"] ?? 0),
          String(d.profile.raw.byPhase["settle"] ?? 0),
          String(d.profile.sdk.driverMillisPerSession),
          String(d.profile.raw.driverMillisPerSession)
        ]
      ],
      new Set([1, 2, 3, 4, 5, 6])
    ))
    out.push(
      `time per session, 1 worker: SDK ${d.profile.sdk.wallMillisPerSession} ms (driver ${d.profile.sdk.driverMillisPerSession}, outside the driver ${d.profile.sdk.nonDriverMillisPerSession}); ` +
        `raw ${d.profile.raw.wallMillisPerSession} ms (driver ${d.profile.raw.driverMillisPerSession}, outside ${d.profile.raw.nonDriverMillisPerSession}); ` +
        `CPU SDK ${d.profile.sdk.cpuMillisPerSession} ms, raw ${d.profile.raw.cpuMillisPerSession} ms`
    )
    const v = d.verification
    out.push(
      `verified: SDK ${v.sdk.ok ? "ok" : "FAILED"} (${v.sdk.sessionsSettled} sessions, audit ${
        v.sdk.audit.ok ? "clean" : "NOT clean"
      }), ` +
        `raw ${v.raw.ok ? "ok" : "FAILED"} (${v.raw.sessionsSettled} sessions, audit ${
          v.raw.audit.ok ? "clean" : "NOT clean"
        }); ` +
        `row shapes identical: ${d.sameRowShapes ? "yes" : "NO"}`
    )
  }
  const failing = rows.filter((r) => r.sdk.failed + r.raw.failed > 0)
  if (failing.length > 0) {
    out.push("")
    out.push("failed sessions (errors the side reported; the database is verified to hold exactly what they left):")
    for (const r of failing) {
      for (const side of ["sdk", "raw"] as const) {
        for (const [message, count] of Object.entries(r[side].errors)) {
          out.push(`- ${r.db} ${r.workers}w ${r.accounts} ${side} ×${count}: ${message}`)
        }
      }
    }
  }
  const below = dialects.flatMap((d) => d.rows.filter((r) => !r.meetsTarget).map((r) => ({ r, d })))
  if (below.length > 0) {
    out.push("")
    out.push(`below ${config.target}:`)
    for (const { d, r } of below) {
      out.push(`- ${r.db} ${r.workers}w ${r.accounts}: ${r.ratio.toFixed(3)} — ${explain(r, d)}`)
    }
  }
  process.stdout.write(`${out.join("\n")}\n`)

  const here = path.dirname(fileURLToPath(import.meta.url))
  const resultsDir = path.resolve(here, "..", "results")
  mkdirSync(resultsDir, { recursive: true })
  const json = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    git,
    loadAverage: { before: loadBefore, after: os.loadavg() },
    machine: {
      cpus: os.cpus().length,
      model: os.cpus()[0]?.model,
      memoryMB: mb(os.totalmem()),
      node: process.version,
      platform: `${os.platform()} ${os.release()}`
    },
    config,
    target: config.target,
    rows,
    belowTarget: below.map(({ d, r }) => ({
      db: r.db,
      workers: r.workers,
      accounts: r.accounts,
      ratio: r.ratio,
      why: explain(r, d)
    })),
    peakRss: { mainProcessMB: mainPeakRssMB, perSide: rss },
    dialects: dialects.map((d) => ({
      db: d.db,
      profile: d.profile,
      verification: d.verification,
      sameRowShapes: d.sameRowShapes
    }))
  }
  const file = path.join(resultsDir, "latest.json")
  writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`)
  log(`\nwrote ${path.relative(process.cwd(), file)}`)
  const failed = dialects.some((d) => !d.verification.sdk.ok || !d.verification.raw.ok || !d.sameRowShapes) ||
    rss.some((r) => !r.verified)
  if (failed) {
    log("verification FAILED: the numbers above do not measure a correct path")
    process.exitCode = 1
  }
}

main().catch((error) => {
  log(error instanceof Error ? error.stack ?? error.message : String(error))
  process.exitCode = 1
})
