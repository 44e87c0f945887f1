/**
 * relay-billing bench: the SDK's open+settle loop against its baselines, in one
 * process run — the knex-built raw loop (same knex instance), the driver-level
 * loop (better-sqlite3 / pg / mysql2 prepared statements) and, on PostgreSQL
 * when pgbench is on PATH, pgbench with the same statements and with one
 * PL/pgSQL function per phase — on SQLite (file, WAL), PostgreSQL
 * (BILLING_PG_URL) and MySQL/MariaDB (BILLING_MYSQL_URL); 1 and 16 workers;
 * random accounts and one hot account. Every side writes the same rows into its
 * own table set, verified at the end. Prints a table and the issue's targets,
 * writes bench/results/latest.json. See bench/README.md.
 */
import { KnexClient, Migrations, TestDatabase } from "@relay-billing/knex"
import { Wallet } from "@relay-billing/wallet"
import { Effect } from "effect"
import type { Knex } from "knex"
import { execFileSync, spawn } from "node:child_process"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import type { CpuProfileResult } from "./cpuProfile.js"
import { profileSdk } from "./cpuProfile.js"
import type { StatementHook } from "./db.js"
import { DRIVER_PREFIX, hookStatements, RAW_PREFIX, SDK_PREFIX, seed } from "./db.js"
import type { DriverLoop } from "./driver.js"
import { driverLoop } from "./driver.js"
import type { DriverHook } from "./driverHook.js"
import { hookDrivers } from "./driverHook.js"
import type { PgbenchKind, PgbenchRun } from "./pgbench.js"
import { installFunctions, PGBENCH_PREFIX, pgbenchAvailable, runPgbench } from "./pgbench.js"
import { rawSession } from "./raw.js"
import type { Slice } from "./runner.js"
import { loopSlice, percentile, sdkSlice } from "./runner.js"
import type { Billing } from "./sdk.js"
import { makeBilling, sdkSession } from "./sdk.js"
import { baselineRetries } from "./statements.js"
import type { Verification } from "./verify.js"
import { expectedFromHolds, verify } from "./verify.js"
import type { AccountMode, Side } from "./workload.js"
import { allAccounts, Expected, inputs } from "./workload.js"

// ------------------------------------------------------------------ configuration

const env = process.env
const num = (
  name: string,
  fallback: number
) => (env[name] !== undefined && env[name] !== "" ? Number(env[name]) : fallback)

const SIDES: ReadonlyArray<Side> = ["sdk", "raw", "driver"]

const config = {
  /** Length of one measured slice of one side (ms). */
  sliceMillis: num("BENCH_SLICE_MS", 600),
  /** Measured rounds per row; each round runs every side, the order rotating. */
  rounds: num("BENCH_ROUNDS", 3),
  /** Warm-up per side per row (ms), not measured. */
  warmupMillis: num("BENCH_WARMUP_MS", 300),
  /** Accounts in the random pool. */
  accounts: num("BENCH_ACCOUNTS", 1_000),
  workers: (env["BENCH_WORKERS"] ?? "1,16").split(",").map(Number),
  modes: (env["BENCH_MODES"] ?? "random,hot").split(",") as Array<AccountMode>,
  /** Sessions per side in the statement-profile pass (1 worker, counted and timed per statement at the driver). */
  profileSessions: num("BENCH_PROFILE_SESSIONS", 200),
  /** Workers of the profile's second pass (one slice per side, statements per session where group commit batches). */
  profileWorkers: num("BENCH_PROFILE_WORKERS", 16),
  /** Length of that second pass's slice per side (ms). */
  profileSliceMillis: num("BENCH_PROFILE_SLICE_MS", 1_000),
  /** Seconds per side of the peak-RSS child processes (0 = skip them). */
  rssSeconds: num("BENCH_RSS_SECONDS", 2),
  /** SDK slices are interrupted this long after their deadline (see runner.ts). */
  capGraceMillis: num("BENCH_CAP_GRACE_MS", 2_000),
  /** Pool size for PostgreSQL and MySQL, SDK and driver loops (the largest worker count). */
  poolMax: num("BENCH_PG_POOL", 16),
  /** Seconds (`-T`) of each pgbench invocation; each round of a row runs both forms once (0 = skip pgbench). */
  pgbenchSeconds: num("BENCH_PGBENCH_SECONDS", 1),
  only: env["BENCH_ONLY"],
  /** Warm-up slice of `--loop` before its measured one (ms; the CPU-profile children use it). */
  loopWarmupMillis: num("BENCH_LOOP_WARMUP_MS", 0),
  /** CPU profile of the SDK side (`node --cpu-prof` on a `--loop sdk` child per database): on unless "0". */
  cpuProfile: env["BENCH_CPU_PROFILE"] !== "0",
  /** Seconds of the profiled loop (after a 500 ms warm-up). */
  cpuProfileSeconds: num("BENCH_CPU_PROFILE_SECONDS", 2),
  /** Databases the CPU profile runs on (those of this run among them). */
  cpuProfileDbs: (env["BENCH_CPU_PROFILE_DBS"] ?? "sqlite,postgres").split(","),
  /**
   * The SDK client's group commit: "default" (the client's default: on for SQLite, off for
   * PostgreSQL and MySQL), "off", "on" or N batches in flight.
   */
  groupCommit: env["BENCH_GROUP_COMMIT"] ?? "default"
}

interface Target {
  readonly name: "sqlite" | "postgres" | "mysql"
  readonly url?: string
}

const targets: Array<Target> = [
  { name: "sqlite" as const },
  ...(env["BILLING_PG_URL"] ? [{ name: "postgres" as const, url: env["BILLING_PG_URL"] }] : []),
  ...(env["BILLING_MYSQL_URL"] ? [{ name: "mysql" as const, url: env["BILLING_MYSQL_URL"] }] : [])
].filter((t) => !config.only || config.only.split(",").includes(t.name))

const dbLabel = (t: Target) => (t.name === "sqlite" ? "sqlite-file" : t.name)

const pgbenchVersion = config.pgbenchSeconds > 0 ? pgbenchAvailable() : undefined
const PGBENCH_KINDS: ReadonlyArray<PgbenchKind> = ["pgbench", "pgbenchFn"]

// ------------------------------------------------------------------ one database

interface Bench {
  readonly target: Target
  readonly knex: Knex
  readonly clients: Record<Side, KnexClient.Client>
  readonly pgbenchClients: Partial<Record<PgbenchKind, KnexClient.Client>>
  readonly schema?: string
  readonly billing: Billing
  readonly driver: DriverLoop
  readonly hook: StatementHook
  readonly openingLedgerRows: number
  readonly accounts: ReadonlyArray<string>
}

/**
 * An isolated database (dropped when the scope closes) with every side's table
 * set migrated by the SDK's migrations and seeded identically; `sides` limits
 * which in-process sides get seeded (the RSS children seed only their own).
 */
const setup = (target: Target, options: { readonly pgbench: boolean } = { pgbench: true }) =>
  Effect.gen(function*() {
    const db = yield* TestDatabase.isolated(target.url ? { name: target.name, url: target.url } : { name: target.name })
    const groupCommit = config.groupCommit === "default"
      ? undefined
      : config.groupCommit === "off"
      ? false
      : config.groupCommit === "on"
      ? true
      : { maxConcurrentBatches: Number(config.groupCommit) }
    const sdkClient = yield* KnexClient.fromUrl(db.url, {
      ...db.options,
      prefix: SDK_PREFIX,
      poolMax: config.poolMax,
      ...(groupCommit === undefined ? {} : { groupCommit })
    })
    const knex = sdkClient.knex
    // The baselines' tables: the same migrations, other prefixes, the same knex instance.
    const other = (prefix: string) => KnexClient.fromKnex(knex, { ...db.options, prefix })
    const clients: Record<Side, KnexClient.Client> = {
      sdk: sdkClient,
      raw: yield* other(RAW_PREFIX),
      driver: yield* other(DRIVER_PREFIX)
    }
    const pgbenchClients: Partial<Record<PgbenchKind, KnexClient.Client>> = {}
    if (options.pgbench && target.name === "postgres" && pgbenchVersion) {
      for (const kind of PGBENCH_KINDS) pgbenchClients[kind] = yield* other(PGBENCH_PREFIX[kind])
    }
    const all = [...Object.values(clients), ...Object.values(pgbenchClients)]
    let openingLedgerRows = 0
    for (const client of all) {
      yield* Migrations.run(Wallet.allMigrations).pipe(Effect.provideService(KnexClient.KnexClient, client))
      openingLedgerRows = yield* Effect.promise(() => seed(knex, client.prefix, config.accounts))
    }
    if (pgbenchClients.pgbenchFn) yield* Effect.promise(() => installFunctions(knex))
    const billing = yield* makeBilling(sdkClient)
    const driver = yield* Effect.acquireRelease(
      Effect.sync(() =>
        driverLoop({
          dialect: target.name,
          url: target.name === "sqlite" ? db.url.slice("sqlite:".length) : db.url,
          ...(db.options.schema !== undefined ? { schema: db.options.schema } : {}),
          poolMax: config.poolMax
        }, DRIVER_PREFIX)
      ),
      (d) => Effect.promise(() => d.close())
    )
    const hook = hookStatements(knex)
    yield* Effect.addFinalizer(() => Effect.sync(hook.restore))
    const bench: Bench = {
      target,
      knex,
      clients,
      pgbenchClients,
      ...(db.options.schema !== undefined ? { schema: db.options.schema } : {}),
      billing,
      driver,
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
    ? sdkSlice(b.billing, b.knex, b.clients.sdk.table("holds"), workers, millis, config.capGraceMillis, next, expected)
    : side === "raw"
    ? loopSlice((input, state) => rawSession(b.knex, RAW_PREFIX, input, state), workers, millis, next, expected)
    : loopSlice(b.driver.session, workers, millis, next, expected)

interface SideResult {
  readonly sessions: number
  readonly seconds: number
  readonly perSecond: number
  readonly p50Millis: number
  readonly p99Millis: number
  /** Process CPU time per completed session (ms): client-side only on PostgreSQL/MySQL, SQLite's own work included on SQLite. */
  readonly cpuMillisPerSession: number
  /** Sessions that failed with an error, and their messages. */
  readonly failed: number
  readonly errors: Record<string, number>
  /** Sessions interrupted at the hard cap of a slice (SDK only). */
  readonly abandoned: number
  /** Driver errors during this side's slices, by code (knex sides only: 40P01 = deadlock, 40001 = serialization). */
  readonly driverErrors: Record<string, number>
  /** Peak RSS sampled in this process while this side's slices ran (MB). */
  readonly sampledPeakRssMB: number
}

interface Row {
  readonly db: string
  readonly workers: number
  readonly mode: AccountMode
  readonly accounts: string
  readonly sides: Record<Side, SideResult>
  readonly pgbench: Partial<Record<PgbenchKind, PgbenchRun>>
  /** SDK sessions/s ÷ each baseline's sessions/s. */
  readonly ratios: Partial<Record<Exclude<Side, "sdk"> | PgbenchKind, number>>
  /** Per-round SDK ÷ raw and SDK ÷ driver. */
  readonly roundRatios: Record<"raw" | "driver", ReadonlyArray<number>>
  readonly baselineRetries: number
}

const mb = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10

/**
 * This process's peak RSS in bytes. On Linux from `VmHWM` (per address space, so a child
 * starts from its own image): `getrusage`'s `ru_maxrss` (`resourceUsage().maxRSS`) survives
 * `execve`, so a child spawned by a large parent would report the parent's RSS at fork time.
 */
const peakRssBytes = (): number => {
  try {
    const kb = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1]
    if (kb !== undefined) return Number(kb) * 1024
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024
}
const ratio = (a: number, b: number | undefined) =>
  b === undefined || b === 0 ? Number.NaN : Math.round((a / b) * 1000) / 1000

/** One row's pgbench invocations of one form as one result: sessions over the summed run time. */
const mergeRuns = (runs: ReadonlyArray<PgbenchRun>): PgbenchRun => {
  const sessions = runs.reduce((a, r) => a + r.sessions, 0)
  // pgbench's tps excludes connection set-up: time = sessions ÷ tps (the -T length for a run without sessions).
  const seconds = runs.reduce((a, r) => a + (r.sessions > 0 && r.tps > 0 ? r.sessions / r.tps : r.seconds), 0)
  return {
    kind: runs[0]!.kind,
    clients: runs[0]!.clients,
    mode: runs[0]!.mode,
    seconds: Math.round(seconds * 1000) / 1000,
    sessions,
    failed: runs.reduce((a, r) => a + r.failed, 0),
    perSecond: seconds > 0 ? Math.round(sessions / seconds) : 0,
    tps: seconds > 0 ? sessions / seconds : 0,
    latencyAvgMillis:
      Math.round((runs.reduce((a, r) => a + r.latencyAvgMillis * r.sessions, 0) / Math.max(1, sessions)) * 1000) /
      1000,
    aborted: runs.some((r) => r.aborted),
    errors: runs.flatMap((r) => r.errors).slice(0, 5)
  }
}

const runRow = async (
  b: Bench,
  workers: number,
  mode: AccountMode,
  index: number,
  expected: Record<Side, Expected>
) => {
  const label = `${workers}w-${mode}`
  const seed = 1_000 + index
  const next = Object.fromEntries(
    SIDES.map((side) => [side, inputs(side, label, mode, config.accounts, seed)])
  ) as Record<
    Side,
    ReturnType<typeof inputs>
  >
  for (const side of SIDES) {
    await slice(b, side, workers, config.warmupMillis, next[side], expected[side])
  }
  const acc: Record<Side, Array<Slice>> = { sdk: [], raw: [], driver: [] }
  const before = Object.fromEntries(SIDES.map((side) => [side, expected[side].snapshot()])) as Record<
    Side,
    ReturnType<Expected["snapshot"]>
  >
  const errors: Record<Side, Record<string, number>> = { sdk: {}, raw: {}, driver: {} }
  const retriesBefore = baselineRetries.count
  const kinds = b.schema !== undefined && b.target.url ? PGBENCH_KINDS.filter((k) => b.pgbenchClients[k]) : []
  const all: Array<Side | PgbenchKind> = [...SIDES, ...kinds]
  const pgbenchRuns: Record<PgbenchKind, Array<PgbenchRun>> = { pgbench: [], pgbenchFn: [] }
  for (let round = 0; round < config.rounds; round++) {
    // The order rotates, and reverses every other round: drift hits every side, pgbench included.
    const rotated = all.map((_, i) => all[(i + round) % all.length]!)
    const order = round % 2 === 0 ? rotated : rotated.reverse()
    for (const side of order) {
      if (side === "pgbench" || side === "pgbenchFn") {
        const run = await runPgbench(
          b.target.url!,
          b.schema!,
          side,
          mode,
          config.accounts,
          workers,
          config.pgbenchSeconds
        )
        if (run.aborted) log(`  pgbench ${side} ${workers}c ${mode}: ABORTED ${run.errors.join(" | ")}`)
        pgbenchRuns[side].push(run)
        continue
      }
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
  const sides = Object.fromEntries(SIDES.map((side) => [side, summarize(side)])) as Record<Side, SideResult>
  const pgbench: Partial<Record<PgbenchKind, PgbenchRun>> = {}
  for (const kind of kinds) pgbench[kind] = mergeRuns(pgbenchRuns[kind])
  const sdk = sides.sdk.perSecond
  const roundRatio = (side: "raw" | "driver") =>
    acc.sdk.map((s, i) => {
      const r = acc[side][i]!
      return Math.round(((s.sessions / s.millis) / (r.sessions / r.millis)) * 1000) / 1000
    })
  const row: Row = {
    db: dbLabel(b.target),
    workers,
    mode,
    accounts: mode === "hot" ? "1 hot" : `${config.accounts} random`,
    sides,
    pgbench,
    ratios: {
      raw: ratio(sdk, sides.raw.perSecond),
      driver: ratio(sdk, sides.driver.perSecond),
      ...(pgbench.pgbench ? { pgbench: ratio(sdk, pgbench.pgbench.perSecond) } : {}),
      ...(pgbench.pgbenchFn ? { pgbenchFn: ratio(sdk, pgbench.pgbenchFn.perSecond) } : {})
    },
    roundRatios: { raw: roundRatio("raw"), driver: roundRatio("driver") },
    baselineRetries: baselineRetries.count - retriesBefore
  }
  log(
    `  ${row.db.padEnd(11)} ${String(workers).padStart(2)}w ${
      row.accounts.padEnd(12)
    } sdk ${sdk}/s  raw ${sides.raw.perSecond}/s  driver ${sides.driver.perSecond}/s` +
      (pgbench.pgbench ? `  pgbench ${pgbench.pgbench.perSecond}/s` : "") +
      (pgbench.pgbenchFn ? `  pgbench fn ${pgbench.pgbenchFn.perSecond}/s` : "")
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
  /** better-sqlite3 `prepare` calls per session (knex prepares every statement it runs); 0 elsewhere. */
  readonly preparesPerSession: number
  readonly prepareMillisPerSession: number
  /** The driver loop's own count of what it sent (a cross-check of the hook); driver side only. */
  readonly ownCount?: { readonly open: number; readonly settle: number }
}

/** Statements per session with many workers (no phase split: group commit mixes the phases of a batch). */
interface ConcurrentProfile {
  readonly workers: number
  readonly sessions: number
  readonly failed: number
  readonly sessionsPerSecond: number
  readonly statementsPerSession: number
  /** BEGIN per settled session: below 2 when group commit batches (a session is two transactions alone). */
  readonly transactionsPerSession: number
  /** label → statements per session */
  readonly statements: Record<string, number>
  /** better-sqlite3 `prepare` calls per session (0 elsewhere). */
  readonly preparesPerSession: number
}

const r3 = (x: number) => Math.round(x * 1000) / 1000

/** One side at 1 worker, counted and timed at the driver, each statement labelled with its phase. */
const profileSide = async (b: Bench, hook: DriverHook, side: Side, expected: Expected): Promise<SideProfile> => {
  const next = inputs(side, "profile", "random", config.accounts, 7)
  const setPhase = (p: string) => {
    hook.state.phase = p
  }
  const once = async (count: boolean) => {
    const input = next()
    const state = { opened: false }
    const phase = count ? setPhase : undefined
    try {
      if (side === "sdk") {
        await Effect.runPromise(sdkSession(b.billing, input, state, phase))
      } else if (side === "raw") {
        await rawSession(b.knex, RAW_PREFIX, input, state, phase)
      } else {
        await b.driver.session(input, state, phase)
      }
      expected.settle(input)
    } catch (error) {
      expected.fail(input, error, state.opened)
    }
  }
  // warm the code path (and the prepared-statement caches) without counting
  hook.state.phase = "-"
  for (let i = 0; i < 50; i++) await once(false)
  hook.reset()
  const driverBefore = { ...b.driver.statements }
  const cpu = process.cpuUsage()
  const start = performance.now()
  for (let i = 0; i < config.profileSessions; i++) await once(true)
  const wall = performance.now() - start
  const used = process.cpuUsage(cpu)
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
  const driverMillisByStatement = Object.fromEntries([...hook.stats.millis].map(([l, ms]) => [l, r3(ms / n)]))
  return {
    driverMillisByStatement,
    sessions: n,
    statementsPerSession: r3(hook.stats.statements / n),
    byPhase,
    statements,
    wallMillisPerSession: r3(wall / n),
    driverMillisPerSession: r3(hook.stats.sqlMillis / n),
    nonDriverMillisPerSession: r3((wall - hook.stats.sqlMillis) / n),
    cpuMillisPerSession: r3((used.user + used.system) / 1000 / n),
    preparesPerSession: r3(hook.stats.prepares / n),
    prepareMillisPerSession: r3(hook.stats.prepareMillis / n),
    ...(side === "driver"
      ? {
        ownCount: {
          open: r3((b.driver.statements.open - driverBefore.open) / n),
          settle: r3((b.driver.statements.settle - driverBefore.settle) / n)
        }
      }
      : {})
  }
}

/** One side with `workers` workers for one slice, counted at the driver (statements per settled session). */
const profileConcurrent = async (
  b: Bench,
  hook: DriverHook,
  side: Side,
  workers: number,
  expected: Expected
): Promise<ConcurrentProfile> => {
  const next = inputs(side, `profile${workers}`, "random", config.accounts, 8)
  const failedBefore = expected.failed
  hook.state.phase = "*"
  hook.reset()
  const s = await slice(b, side, workers, config.profileSliceMillis, next, expected)
  hook.state.phase = "-"
  const n = Math.max(1, s.sessions)
  const statements: Record<string, number> = {}
  for (const [label, phases] of hook.stats.counts) {
    statements[label] = r3([...phases.values()].reduce((a, c) => a + c, 0) / n)
  }
  return {
    workers,
    sessions: s.sessions,
    failed: expected.failed - failedBefore,
    sessionsPerSecond: Math.round(s.sessions / (s.millis / 1000)),
    statementsPerSession: r3(hook.stats.statements / n),
    transactionsPerSession: statements["BEGIN"] ?? 0,
    statements,
    preparesPerSession: r3(hook.stats.prepares / n)
  }
}

// ------------------------------------------------------------------ a dialect

interface DialectResult {
  readonly db: string
  readonly rows: ReadonlyArray<Row>
  readonly profile: Record<Side, SideProfile>
  /** The same sides with `BENCH_PROFILE_WORKERS` workers (group commit batches there). */
  readonly concurrentProfile: Record<Side, ConcurrentProfile>
  /** The driver modules the hook patched. */
  readonly hookedDrivers: ReadonlyArray<string>
  /** Every side that wrote through our tables: sdk, raw, driver, and pgbench / pgbenchFn when they ran. */
  readonly verification: Record<string, Verification>
  /** Sides whose settled-hold count differs from the sessions they reported (pgbench: its processed transactions). */
  readonly countMismatches: ReadonlyArray<string>
  /** Sides whose one settled hold (with its ledger rows) is shaped differently from the SDK's. */
  readonly shapeMismatches: ReadonlyArray<string>
}

const dialectOk = (d: DialectResult) =>
  Object.values(d.verification).every((v) => v.ok) && d.shapeMismatches.length === 0 && d.countMismatches.length === 0

const runDialect = (target: Target) =>
  Effect.scoped(Effect.gen(function*() {
    const b = yield* setup(target)
    const tableSets = 3 + Object.keys(b.pgbenchClients).length
    log(`${dbLabel(target)}: isolated database, ${tableSets} table sets migrated, ${config.accounts + 1} accounts each`)
    const expected: Record<Side, Expected> = { sdk: new Expected(), raw: new Expected(), driver: new Expected() }
    const rows: Array<Row> = []
    let index = 0
    for (const workers of config.workers) {
      for (const mode of config.modes) {
        rows.push(yield* Effect.promise(() => runRow(b, workers, mode, index++, expected)))
      }
    }
    const profile = {} as Record<Side, SideProfile>
    const concurrentProfile = {} as Record<Side, ConcurrentProfile>
    // The driver hook is installed for the profile pass only (the measured rows above ran without it).
    const driverHook = hookDrivers()
    yield* Effect.addFinalizer(() => Effect.sync(driverHook.restore))
    const hookedDrivers = [...driverHook.drivers]
    for (const side of SIDES) {
      profile[side] = yield* Effect.promise(() => profileSide(b, driverHook, side, expected[side]))
    }
    for (const side of SIDES) {
      concurrentProfile[side] = yield* Effect.promise(() =>
        profileConcurrent(b, driverHook, side, config.profileWorkers, expected[side])
      )
    }
    driverHook.restore()
    const verification: Record<string, Verification> = {}
    for (const side of SIDES) {
      verification[side] = yield* verify(b.clients[side], expected[side], b.accounts, b.openingLedgerRows)
    }
    const countMismatches: Array<string> = []
    for (const kind of PGBENCH_KINDS) {
      const client = b.pgbenchClients[kind]
      if (!client) continue
      const fromHolds = new Expected()
      yield* expectedFromHolds(client, fromHolds)
      verification[kind] = yield* verify(client, fromHolds, b.accounts, b.openingLedgerRows)
      const reported = rows.reduce((a, r) => a + (r.pgbench[kind]?.sessions ?? 0), 0)
      const aborted = rows.some((r) => r.pgbench[kind]?.aborted)
      // pgbench counts a session once its script ended; an aborted client may leave one open hold, no more.
      if (fromHolds.settled !== reported) {
        countMismatches.push(`${kind}: ${fromHolds.settled} settled holds, pgbench reported ${reported} sessions`)
      }
      if (!aborted && fromHolds.pendingHolds !== 0) {
        countMismatches.push(`${kind}: ${fromHolds.pendingHolds} pending holds after a run without aborts`)
      }
    }
    const shapeMismatches: Array<string> = []
    for (const [side, v] of Object.entries(verification)) {
      log(
        `  verify ${side}: ${
          v.ok ? "ok" : "FAILED"
        } (${v.sessionsSettled} sessions, ${v.ledgerRows} ledger rows, audit ${v.audit.ok ? "clean" : "NOT clean"})`
      )
      for (const p of v.problems.slice(0, 10)) log(`    ${p}`)
      if (side !== "sdk" && v.shape !== verification["sdk"]!.shape) {
        shapeMismatches.push(side)
        log(`  row shapes differ:\n    sdk ${verification["sdk"]!.shape}\n    ${side} ${v.shape}`)
      }
    }
    for (const m of countMismatches) log(`  ${m}`)
    const result: DialectResult = {
      db: dbLabel(target),
      rows,
      profile,
      concurrentProfile,
      hookedDrivers,
      verification,
      countMismatches,
      shapeMismatches
    }
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
  /** Peak RSS of the whole child process (VmHWM on Linux, MB). */
  readonly peakRssMB: number
  readonly heapUsedAfterMB: number
  readonly verified: boolean
}

const RSS_WORKERS = 16
const RSS_SIDES = (env["BENCH_RSS_SIDES"] ?? "sdk,raw").split(",") as Array<Side>

const rssChild = async (side: Side, dialect: Target["name"]) => {
  const target = targets.find((t) => t.name === dialect)!
  const out = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const b = yield* setup(target, { pgbench: false })
    const expected = new Expected()
    const next = inputs(side, "rss", "random", config.accounts, 99)
    yield* Effect.promise(() => slice(b, side, RSS_WORKERS, 500, next, expected))
    const before = process.memoryUsage.rss()
    const s = yield* Effect.promise(() => slice(b, side, RSS_WORKERS, config.rssSeconds * 1000, next, expected))
    const peak = peakRssBytes()
    const heap = process.memoryUsage().heapUsed
    const v = yield* verify(b.clients[side], expected, b.accounts, b.openingLedgerRows)
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
 * After an optional warm-up slice (`BENCH_LOOP_WARMUP_MS`) it prints
 * `LOOP-RESULT {…}` on stdout: the sessions and the measured window on the
 * monotonic clock, which the CPU-profile pass (cpuProfile.ts) cuts the profile to.
 */
const loopOnly = async (side: Side, dialect: Target["name"], seconds: number, workers: number, mode: AccountMode) => {
  const target = targets.find((t) => t.name === dialect)!
  await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const b = yield* setup(target, { pgbench: false })
    const expected = new Expected()
    const next = inputs(side, "loop", mode, config.accounts, 5)
    if (config.loopWarmupMillis > 0) {
      yield* Effect.promise(() => slice(b, side, workers, config.loopWarmupMillis, next, expected))
    }
    // The measured window on the monotonic clock in µs (the clock of a .cpuprofile's timestamps).
    const startMicros = Number(process.hrtime.bigint() / 1000n)
    const s = yield* Effect.promise(() => slice(b, side, workers, seconds * 1000, next, expected))
    const endMicros = Number(process.hrtime.bigint() / 1000n)
    process.stdout.write(
      `LOOP-RESULT ${
        JSON.stringify({
          side,
          dialect,
          workers,
          mode,
          sessions: s.sessions,
          millis: s.millis,
          cpuMillis: s.cpuMillis,
          failed: expected.failed,
          startMicros,
          endMicros
        })
      }\n`
    )
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
    const v = yield* verify(b.clients[side], expected, b.accounts, b.openingLedgerRows)
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

// ------------------------------------------------------------------ targets (issue 11)

interface TargetRow {
  readonly target: string
  readonly row: string
  readonly measured: string
  readonly ratio: number
  readonly threshold: number
  readonly met: boolean
}

/** The issue's targets, read off the rows of this run (16 workers / 16 clients). */
const issueTargets = (dialects: ReadonlyArray<DialectResult>): Array<TargetRow> => {
  const find = (db: string, mode: AccountMode) => {
    const rows = dialects.find((d) => d.db === db)?.rows.filter((r) => r.mode === mode) ?? []
    return rows.find((r) => r.workers === 16) ?? rows.at(-1)
  }
  const out: Array<TargetRow> = []
  const add = (
    target: string,
    db: string,
    mode: AccountMode,
    baseline: Exclude<Side, "sdk"> | PgbenchKind,
    threshold: number
  ) => {
    const r = find(db, mode)
    const base = r
      ? baseline === "raw" || baseline === "driver" ? r.sides[baseline].perSecond : r.pgbench[baseline]?.perSecond
      : undefined
    const value = r ? r.ratios[baseline] ?? Number.NaN : Number.NaN
    out.push({
      target,
      row: r ? `${r.db} ${r.workers}w ${r.accounts}` : `${db} (not run)`,
      measured: r && base !== undefined ? `${r.sides.sdk.perSecond} / ${base}` : "not measured",
      ratio: value,
      threshold,
      met: Number.isFinite(value) && value >= threshold
    })
  }
  add("SQLite: SDK ≥ 0.5× the driver-level loop", "sqlite-file", "random", "driver", 0.5)
  add("SQLite, hot account: SDK ≥ 0.5× the driver-level loop", "sqlite-file", "hot", "driver", 0.5)
  add("PostgreSQL: SDK ≥ 1.0× pgbench, same statements", "postgres", "random", "pgbench", 1)
  add("PostgreSQL: SDK ≥ 0.5× pgbench, one function per phase", "postgres", "random", "pgbenchFn", 0.5)
  add("PostgreSQL, one hot account: SDK ≥ 1.0× pgbench's one-function hot row", "postgres", "hot", "pgbenchFn", 1)
  return out
}

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
const ratioText = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(3))

const errorsText = (e: Record<string, number>) =>
  Object.keys(e).length === 0 ? "" : Object.entries(e).map(([k, v]) => `${k}×${v}`).join(" ")

const SIDE_NAMES: Record<Side, string> = { sdk: "SDK", raw: "raw", driver: "driver" }

/** BEGIN first, COMMIT / ROLLBACK last, SAVEPOINTs after BEGIN, the rest by name. */
const labelOrder = (l: string) =>
  l === "BEGIN"
    ? 0
    : l.startsWith("SET TRANSACTION")
    ? 1
    : l === "SAVEPOINT"
    ? 2
    : l === "ROLLBACK"
    ? 5
    : l === "COMMIT"
    ? 6
    : l.includes("SAVEPOINT")
    ? 4
    : 3

/** The statement profile of one database: phase by phase at 1 worker, then per session at N workers. */
const profileText = (d: DialectResult): Array<string> => {
  const out: Array<string> = [""]
  const p = d.profile
  out.push(
    `statements per session on ${d.db} (1 worker, ${p.sdk.sessions} sessions per side, counted and timed at the driver: ${
      [...new Set(d.hookedDrivers)].join(", ")
    }):`
  )
  const labels = [...new Set(SIDES.flatMap((s) => Object.keys(p[s].statements)))]
  labels.sort((a, b) => labelOrder(a) - labelOrder(b) || a.localeCompare(b))
  const cell = (sp: SideProfile, label: string, phase: string) => {
    const v = sp.statements[label]?.[phase]
    return v === undefined ? "" : String(v)
  }
  out.push(table(
    [
      "statement",
      ...SIDES.flatMap((s) => [`${SIDE_NAMES[s]} open`, `${SIDE_NAMES[s]} settle`]),
      ...SIDES.map((s) => `${SIDE_NAMES[s]} driver ms`)
    ],
    [
      ...labels.map((l) => [
        l,
        ...SIDES.flatMap((s) => [cell(p[s], l, "open"), cell(p[s], l, "settle")]),
        ...SIDES.map((s) => String(p[s].driverMillisByStatement[l] ?? ""))
      ]),
      [
        "total",
        ...SIDES.flatMap((s) => [String(p[s].byPhase["open"] ?? 0), String(p[s].byPhase["settle"] ?? 0)]),
        ...SIDES.map((s) => String(p[s].driverMillisPerSession))
      ]
    ],
    new Set([1, 2, 3, 4, 5, 6, 7, 8, 9])
  ))
  const own = p.driver.ownCount
  if (own) {
    const agree = own.open === (p.driver.byPhase["open"] ?? 0) && own.settle === (p.driver.byPhase["settle"] ?? 0)
    out.push(
      `driver loop's own count: ${own.open} + ${own.settle} per session (${
        agree ? "agrees with the hook" : "DIFFERS from the hook"
      }).`
    )
  }
  if (SIDES.some((s) => p[s].preparesPerSession > 0)) {
    out.push(
      `better-sqlite3 prepare() calls per session (not statements; timed apart): ${
        SIDES.map((s) => `${SIDE_NAMES[s]} ${p[s].preparesPerSession} (${p[s].prepareMillisPerSession} ms)`).join(", ")
      }.`
    )
  }
  out.push(
    `time per session, 1 worker: ${
      SIDES.map((s) =>
        `${SIDE_NAMES[s]} ${p[s].wallMillisPerSession} ms (in the driver ${p[s].driverMillisPerSession}, outside ${
          p[s].nonDriverMillisPerSession
        }; CPU ${p[s].cpuMillisPerSession})`
      ).join("; ")
    }`
  )
  const c = d.concurrentProfile
  const w = c.sdk.workers
  out.push("")
  out.push(
    `statements per settled session on ${d.db} with ${w} workers (one ${config.profileSliceMillis} ms slice per side, random accounts; ` +
      `no phase split: group commit runs the phases of concurrent sessions in one transaction):`
  )
  const cLabels = [...new Set(SIDES.flatMap((s) => Object.keys(c[s].statements)))]
  cLabels.sort((a, b) => labelOrder(a) - labelOrder(b) || a.localeCompare(b))
  out.push(table(
    ["statement", ...SIDES.map((s) => SIDE_NAMES[s])],
    [
      ...cLabels.map((l) => [l, ...SIDES.map((s) => String(c[s].statements[l] ?? ""))]),
      ["statements per session", ...SIDES.map((s) => String(c[s].statementsPerSession))],
      ["transactions per session (BEGIN)", ...SIDES.map((s) => String(c[s].transactionsPerSession))],
      ...(SIDES.some((s) => c[s].preparesPerSession > 0)
        ? [["better-sqlite3 prepare() calls per session", ...SIDES.map((s) => String(c[s].preparesPerSession))]]
        : []),
      ["settled sessions (failed)", ...SIDES.map((s) => `${c[s].sessions} (${c[s].failed})`)],
      ["sessions/s (hooked)", ...SIDES.map((s) => String(c[s].sessionsPerSecond))]
    ],
    new Set([1, 2, 3])
  ))
  out.push(
    `verified: ${
      Object.entries(d.verification).map(([side, v]) =>
        `${side} ${v.ok ? "ok" : "FAILED"} (${v.sessionsSettled} sessions, audit ${v.audit.ok ? "clean" : "NOT clean"})`
      ).join(", ")
    }; row shapes identical to the SDK's: ${
      d.shapeMismatches.length === 0 ? "yes" : `NO (${d.shapeMismatches.join(", ")})`
    }` +
      (d.countMismatches.length ? `; ${d.countMismatches.join("; ")}` : "")
  )
  return out
}

const CPU_PROFILE_WORKERS = 16

/** The SDK's CPU-profile breakdown: self time per category, side by side per database, then the heaviest functions. */
const cpuText = (cpu: ReadonlyArray<CpuProfileResult>): Array<string> => {
  const out: Array<string> = [""]
  out.push(
    `where the SDK's time goes (node --cpu-prof on a --loop sdk child, ${CPU_PROFILE_WORKERS} workers, random accounts, ` +
      `${
        cpu[0]!.seconds
      } s after a 500 ms warm-up; self time by the function's url; natives charged to their JS caller, ` +
      `better-sqlite3 calls by the calling line):`
  )
  for (const c of cpu) {
    out.push(
      `- ${c.db}: ${c.sessions} sessions, ${c.sessionsPerSecond}/s, CPU ${c.cpuMillisPerSession} ms/session, ` +
        `${c.sampledMillis} ms sampled, ${c.busyMillis} ms busy (not idle)${
          c.windowed ? "" : " (whole profile: the window could not be cut)"
        }; ${path.relative(process.cwd(), c.file)}`
    )
  }
  const categories = [...new Set(cpu.flatMap((c) => c.shares.map((s) => s.category)))]
  const weight = (cat: string) =>
    cat === "idle" ? 2 : Math.max(...cpu.map((c) => c.shares.find((s) => s.category === cat)?.busyShare ?? 0))
  categories.sort((a, b) => weight(b) - weight(a))
  out.push(table(
    ["category", ...cpu.flatMap((c) => [`${c.db} % of busy`, `${c.db} ≈ CPU ms/session`])],
    categories.map((cat) => [
      cat,
      ...cpu.flatMap((c) => {
        const s = c.shares.find((x) => x.category === cat)
        if (!s) return ["", ""]
        return cat === "idle"
          ? [`(${(s.share * 100).toFixed(1)} % of wall)`, ""]
          : [`${(s.busyShare * 100).toFixed(1)} %`, s.cpuMillisPerSession.toFixed(3)]
      })
    ]),
    new Set(cpu.flatMap((_, i) => [1 + 2 * i, 2 + 2 * i]))
  ))
  for (const c of cpu) {
    out.push(`heaviest functions on ${c.db} (self time):`)
    out.push(table(
      ["function", "where", "category", "% of wall"],
      c.top.slice(0, 10).map((f) => [f.name, f.location, f.category, `${(f.share * 100).toFixed(1)} %`]),
      new Set([3])
    ))
  }
  return out
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
    }${env["BILLING_MYSQL_URL"] ? "" : " (set BILLING_MYSQL_URL for MySQL/MariaDB)"}; pgbench: ${
      pgbenchVersion ?? "not run (not on PATH, or BENCH_PGBENCH_SECONDS=0)"
    }`
  )
  const dialects: Array<DialectResult> = []
  for (const target of targets) dialects.push(await Effect.runPromise(runDialect(target)))
  const mainPeakRssMB = mb(peakRssBytes())
  const rss: Array<RssResult> = []
  if (config.rssSeconds > 0) {
    for (const target of targets) {
      for (const side of RSS_SIDES) {
        log(`peak RSS: ${dbLabel(target)} ${side} in a child process (${RSS_WORKERS} workers, ${config.rssSeconds}s)`)
        rss.push(await spawnRssChild(side, target.name))
      }
    }
  }
  const here = path.dirname(fileURLToPath(import.meta.url))
  const resultsDir = path.resolve(here, "..", "results")
  mkdirSync(resultsDir, { recursive: true })
  const cpu: Array<CpuProfileResult> = []
  const cpuStart = performance.now()
  if (config.cpuProfile) {
    for (const target of targets.filter((t) => config.cpuProfileDbs.includes(t.name))) {
      log(
        `CPU profile: ${
          dbLabel(target)
        } sdk, ${CPU_PROFILE_WORKERS} workers, random, ${config.cpuProfileSeconds}s (node --cpu-prof child)`
      )
      cpu.push(
        await profileSdk(
          fileURLToPath(import.meta.url),
          target.name,
          dbLabel(target),
          config.cpuProfileSeconds,
          CPU_PROFILE_WORKERS,
          "random",
          resultsDir
        )
      )
    }
  }
  const cpuProfileSeconds = Math.round((performance.now() - cpuStart) / 100) / 10
  if (cpu.length > 0) log(`CPU profile pass: ${cpuProfileSeconds} s`)
  const rows = dialects.flatMap((d) => d.rows)
  const goals = issueTargets(dialects)
  const loadAfter = os.loadavg()

  const out: Array<string> = []
  out.push("")
  out.push(
    `relay-billing bench — ${startedAt.toISOString()} — ${os.cpus().length} × ${
      os.cpus()[0]?.model ?? "cpu"
    }, node ${process.version}${pgbenchVersion ? `, ${pgbenchVersion}` : ""}`
  )
  out.push(
    `packages built from ${git.commit}${
      git.packagesChangedFiles ? ` + ${git.packagesChangedFiles} locally changed files under packages/` : ""
    }`
  )
  out.push(
    `load average before/after: ${loadBefore.map((l) => l.toFixed(1)).join(" ")} / ${
      loadAfter.map((l) => l.toFixed(1)).join(" ")
    }`
  )
  out.push(
    `sessions/s = open + settle (2 transactions) per session; the sides rotate in ${config.rounds} rounds of ${config.sliceMillis} ms per side after ${config.warmupMillis} ms warm-up; ` +
      `pgbench (clients = workers) takes its turn in each round, ${config.pgbenchSeconds} s per form`
  )
  out.push("")
  out.push(table(
    [
      "db",
      "workers",
      "accounts",
      "SDK sess/s",
      "raw sess/s",
      "driver sess/s",
      "pgbench sess/s",
      "pgbench fn sess/s",
      "SDK/raw",
      "SDK/driver",
      "SDK/pgbench",
      "SDK/pgbench fn",
      "SDK/raw per round",
      "SDK p50/p99 ms",
      "driver p50/p99 ms",
      "CPU ms/sess SDK/raw/driver",
      "driver errors SDK / raw",
      "failed SDK/raw/driver"
    ],
    rows.map((r) => [
      r.db,
      String(r.workers),
      r.accounts,
      String(r.sides.sdk.perSecond),
      String(r.sides.raw.perSecond),
      String(r.sides.driver.perSecond),
      r.pgbench.pgbench ? String(r.pgbench.pgbench.perSecond) : "–",
      r.pgbench.pgbenchFn ? String(r.pgbench.pgbenchFn.perSecond) : "–",
      ratioText(r.ratios.raw),
      ratioText(r.ratios.driver),
      ratioText(r.ratios.pgbench),
      ratioText(r.ratios.pgbenchFn),
      `${Math.min(...r.roundRatios.raw).toFixed(2)}–${Math.max(...r.roundRatios.raw).toFixed(2)}`,
      latencyText(r.sides.sdk),
      latencyText(r.sides.driver),
      SIDES.map((s) => (r.sides[s].sessions ? String(r.sides[s].cpuMillisPerSession) : "–")).join(" / "),
      `${errorsText(r.sides.sdk.driverErrors) || "0"} / ${errorsText(r.sides.raw.driverErrors) || "0"}`,
      `${r.sides.sdk.failed}${
        r.sides.sdk.abandoned ? `+${r.sides.sdk.abandoned} cut` : ""
      } / ${r.sides.raw.failed} / ${r.sides.driver.failed}`
    ]),
    new Set([1, 3, 4, 5, 6, 7, 8, 9, 10, 11])
  ))
  out.push("")
  out.push("targets (issue 11; ratio = SDK sess/s ÷ baseline sess/s in this run):")
  out.push(table(
    ["target", "row", "SDK / baseline sess/s", "ratio", "needed", "met"],
    goals.map((
      g
    ) => [
      g.target,
      g.row,
      g.measured,
      ratioText(g.ratio),
      `≥ ${g.threshold}`,
      Number.isFinite(g.ratio) ? (g.met ? "met" : "not met") : "not measured"
    ]),
    new Set([3, 4])
  ))
  const verifiedAll = dialects.every(dialectOk)
  out.push(
    `end-of-run verification exact for every side (${
      [...new Set(dialects.flatMap((d) => Object.keys(d.verification)))].join(", ")
    }): ${verifiedAll ? "met" : "NOT met"}; the relay targets are measured by pnpm bench:relay`
  )
  out.push("")
  out.push(`peak RSS: whole bench process ${mainPeakRssMB} MB (all sides, all rows)`)
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
  for (const d of dialects) out.push(...profileText(d))
  if (cpu.length > 0) out.push(...cpuText(cpu))
  const failing = rows.filter((r) =>
    SIDES.some((s) => r.sides[s].failed > 0) || Object.values(r.pgbench).some((p) => p.aborted || p.failed > 0)
  )
  if (failing.length > 0) {
    out.push("")
    out.push("failed sessions (errors the side reported; the database is verified to hold exactly what they left):")
    for (const r of failing) {
      for (const side of SIDES) {
        for (const [message, count] of Object.entries(r.sides[side].errors)) {
          out.push(`- ${r.db} ${r.workers}w ${r.accounts} ${side} ×${count}: ${message}`)
        }
      }
      for (const p of Object.values(r.pgbench)) {
        if (p.aborted || p.failed > 0) {
          out.push(
            `- ${r.db} ${r.workers}c ${r.accounts} ${p.kind}: ${p.failed} failed${p.aborted ? ", aborted" : ""} ${
              p.errors.join(" | ")
            }`
          )
        }
      }
    }
  }
  process.stdout.write(`${out.join("\n")}\n`)

  const json = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    git,
    loadAverage: { before: loadBefore, after: loadAfter },
    machine: {
      cpus: os.cpus().length,
      model: os.cpus()[0]?.model,
      memoryMB: mb(os.totalmem()),
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
      pgbench: pgbenchVersion ?? null
    },
    config,
    rows,
    targets: goals,
    verifiedAll,
    peakRss: { mainProcessMB: mainPeakRssMB, perSide: rss },
    cpuProfile: { seconds: cpuProfileSeconds, profiles: cpu },
    dialects: dialects.map((d) => ({
      db: d.db,
      profile: d.profile,
      concurrentProfile: d.concurrentProfile,
      hookedDrivers: d.hookedDrivers,
      verification: d.verification,
      countMismatches: d.countMismatches,
      shapeMismatches: d.shapeMismatches
    }))
  }
  const file = path.join(resultsDir, "latest.json")
  writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`)
  log(`\nwrote ${path.relative(process.cwd(), file)}`)
  const failed = !verifiedAll || rss.some((r) => !r.verified)
  if (failed) {
    log("verification FAILED: the numbers above do not measure a correct path")
    process.exitCode = 1
  }
}

main().catch((error) => {
  log(error instanceof Error ? error.stack ?? error.message : String(error))
  process.exitCode = 1
})
