/**
 * The soak probe (issue 9): a mixed burst against the built relay running as
 * a child process, with a SIGKILL and a SIGTERM in the middle, then the
 * checks of {@link SoakChecks}.
 *
 * The run:
 * 1. starts the upstream ({@link SoakUpstream}), a fresh database
 *    ({@link SoakDatabase}) and the relay (`node dist/main.js serve`, built if
 *    stale) with a short hold lifetime (`billing.holdTtlSeconds`, default 3 s)
 *    and a fast reaper; `limits` (upstream and client idle bounds) are written
 *    into the config only when the relay accepts them (probed with
 *    `relay migrate`, which validates the config first);
 * 2. creates funded accounts and tokens through the admin API;
 * 3. phase 1: fires the first 35 % of the planned requests at the chosen
 *    concurrency, and once the last of them is on its way (and a stream is
 *    delivering), SIGKILLs the relay and restarts it on the same database;
 * 4. phase 2: the next 45 % (the last two are long streams, an upstream that
 *    drips a chunk every 250 ms for a minute), then SIGTERM under load once
 *    they are delivering; the time to exit is
 *    measured (past `sigtermBoundMs` the process is SIGKILLed so the probe
 *    always ends); restart;
 * 5. phase 3: the rest; then waits (bounded) until no hold is pending, which
 *    needs the restarted relay's reaper for the holds the SIGKILL orphaned;
 * 6. reads the holds, ledger and request logs (knex), the accounts, tokens and
 *    audit (admin API), SIGTERMs the idle relay, and evaluates.
 *
 * Wall-clock time is real here (a real process, real sockets): the pauses are
 * derived from the relay's own timings (a slow reader pauses longer than a
 * hold's lifetime plus two reaper passes), never asserted as durations except
 * the contract's 15 s bound on exiting after SIGTERM.
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import path from "node:path"
import * as RelayProcess from "./RelayProcess.js"
import type { Check, Row, Snapshot, Termination } from "./SoakChecks.js"
import { evaluate } from "./SoakChecks.js"
import type { ClientSettings, Kind as RequestKind, Outcome } from "./SoakClients.js"
import { fire, KINDS } from "./SoakClients.js"
import * as SoakDatabase from "./SoakDatabase.js"
import * as SoakPlan from "./SoakPlan.js"
import * as SoakUpstream from "./SoakUpstream.js"

/** What a run does. */
export interface Options {
  readonly db: SoakDatabase.Kind
  readonly requests: number
  readonly concurrency: number
  /** PRNG seed of the mix (printed in the report). */
  readonly seed?: number | undefined
  /** PostgreSQL server URL (default `BILLING_PG_URL`). */
  readonly pgUrl?: string | undefined
  readonly holdTtlSeconds?: number | undefined
  readonly reapIntervalSeconds?: number | undefined
  readonly upstreamIdleSeconds?: number | undefined
  /** How long the probe waits for the exit after SIGTERM before it SIGKILLs (default 20 s). */
  readonly sigtermBoundMs?: number | undefined
  /** Keep the work directory (config, relay log, SQLite file) even when every check passed. */
  readonly keep?: boolean | undefined
  /** Progress lines. */
  readonly log?: ((line: string) => void) | undefined
}

/** Per request kind: what the clients saw. */
export interface KindFigures {
  count: number
  statuses: Record<string, number>
  delivered: number
  completed: number
  aborted: number
  timedOut: number
  failures: number
}

/** The result of a run. */
export interface Report {
  readonly db: SoakDatabase.Kind
  readonly requests: number
  readonly concurrency: number
  readonly seed: number
  /** Whether the relay accepted the `limits` section. */
  readonly limitsSupported: boolean
  readonly durationMs: number
  /** SIGTERM sent mid-burst. */
  readonly sigterm: Termination
  /** SIGTERM of the idle relay at the end. */
  readonly sigtermIdle: Termination
  readonly inFlightAtKill: number
  readonly inFlightAtTerm: number
  /** Milliseconds the probe waited after the burst until no hold was pending (or its bound). */
  readonly pendingWaitMs: number
  readonly byKind: Record<RequestKind, KindFigures>
  readonly upstream: Record<SoakUpstream.Mode, number>
  /** `level=ERROR` lines in the relay's log (informative). */
  readonly relayErrorLines: number
  readonly checks: ReadonlyArray<Check>
  /** Kept when a check failed or `keep` was set; removed otherwise. */
  readonly workDir: string
  /** Every request as the checks saw it. */
  readonly rows: ReadonlyArray<Row>
}

const INITIAL_QUOTA = 10_000_000
/** The relay's table prefix (the knex package's default; the relay sets no other). */
const PREFIX = "billing_"

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Runs `tasks` with at most `concurrency` at once. */
const pool = async (items: ReadonlyArray<number>, concurrency: number, task: (i: number) => Promise<void>) => {
  let next = 0
  const worker = async () => {
    while (next < items.length) await task(items[next++]!)
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker))
}

/** Runs the probe and returns its report (it throws only when it cannot run at all). */
export const run = async (options: Options): Promise<Report> => {
  const began = performance.now()
  const log = options.log ?? (() => {})
  const seed = options.seed ?? (randomBytes(4).readUInt32LE(0) >>> 0)
  const holdTtlSeconds = options.holdTtlSeconds ?? 3
  const reapIntervalSeconds = options.reapIntervalSeconds ?? 1
  const upstreamIdleSeconds = options.upstreamIdleSeconds ?? 2
  const sigtermBoundMs = options.sigtermBoundMs ?? 20_000
  // Longer than a hold's lifetime plus two reaper passes: a hold that is not
  // renewed is reaped under a request that outlives it.
  const outliveMs = (holdTtlSeconds + 2 * reapIntervalSeconds) * 1000
  const base = SoakUpstream.defaultProfile
  const profile: SoakUpstream.Profile = { ...base, slowDelayMs: Math.ceil(outliveMs / base.okChunks.length) }
  const pauseMs = outliveMs + 1000
  const timings: SoakPlan.Timings = {
    holdTtlSeconds,
    reapIntervalSeconds,
    upstreamIdleSeconds,
    clientIdleSeconds: Math.ceil(pauseMs / 1000) + 10
  }

  RelayProcess.ensureBuilt()
  const workDir = mkdtempSync(path.join(tmpdir(), "relay-soak-"))
  const logFile = path.join(workDir, "relay.log")
  const configFile = path.join(workDir, "config.json")
  const runId = randomBytes(3).toString("hex")
  const adminKey = `sk-admin-soak-${randomBytes(12).toString("hex")}`
  const upstream = await SoakUpstream.start(profile)
  const db = await SoakDatabase.create(options.db, { dir: workDir, pgUrl: options.pgUrl ?? process.env["BILLING_PG_URL"] })
  let relay: RelayProcess.RelayProcess | undefined
  let keep = options.keep === true
  try {
    const port = await RelayProcess.freePort()
    const env = {
      RELAY_HOST: "127.0.0.1",
      RELAY_DATABASE_URL: db.url,
      RELAY_CONFIG: configFile,
      RELAY_ADMIN_KEY: adminKey
    }

    // --- config: `limits` only when this relay knows it ------------------------------------------
    writeFileSync(configFile, JSON.stringify(SoakPlan.relayConfig(upstream.origin, timings, true), null, 2))
    let migrated = RelayProcess.runCommand(["migrate"], { env, cwd: workDir })
    let limitsSupported = true
    if (migrated.status !== 0 && /limits/.test(migrated.output)) {
      limitsSupported = false
      writeFileSync(configFile, JSON.stringify(SoakPlan.relayConfig(upstream.origin, timings, false), null, 2))
      migrated = RelayProcess.runCommand(["migrate"], { env, cwd: workDir })
    }
    if (migrated.status !== 0) throw new Error(`soak: relay migrate failed (exit ${migrated.status}):\n${migrated.output}`)
    log(`soak: ${options.db}, ${options.requests} requests at ${options.concurrency}, seed ${seed}, limits ${limitsSupported ? "on" : "not supported by this relay"}, work dir ${workDir}`)

    const startRelay = async () => {
      relay = await RelayProcess.start({ port, env, cwd: workDir, logFile, readyTimeoutMs: 60_000 })
      return relay
    }
    await startRelay()
    const url = `http://127.0.0.1:${port}`

    // --- accounts --------------------------------------------------------------------------------
    const admin = async (method: string, route: string, body?: unknown) => {
      const response = await fetch(`${url}${route}`, {
        method,
        headers: { authorization: `Bearer ${adminKey}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {})
      })
      const text = await response.text()
      return { status: response.status, body: text === "" ? undefined : JSON.parse(text) }
    }
    const fund = async (quota: number, remainQuota: number) => {
      const account = await admin("POST", "/admin/accounts", { name: `soak-${runId}`, quota })
      if (account.status !== 201) throw new Error(`soak: POST /admin/accounts answered ${account.status}: ${JSON.stringify(account.body)}`)
      const token = await admin("POST", "/admin/tokens", { accountId: account.body.id, remainQuota })
      if (token.status !== 201) throw new Error(`soak: POST /admin/tokens answered ${token.status}: ${JSON.stringify(token.body)}`)
      return {
        accountId: String(account.body.id),
        tokenId: String(token.body.id),
        key: String(token.body.key),
        initialQuota: Number(account.body.quota),
        initialRemain: Number(token.body.remainQuota)
      }
    }
    const accountCount = Math.min(16, Math.max(4, Math.ceil(options.requests / 250)))
    const funded = []
    for (let i = 0; i < accountCount; i++) funded.push(await fund(INITIAL_QUOTA, INITIAL_QUOTA))
    const poor = await fund(10, 1_000_000) // too poor for any reservation: 403s
    const accounts = [...funded, poor]

    // --- the burst -------------------------------------------------------------------------------
    const killAt = Math.floor(options.requests * 0.35)
    const termAt = Math.floor(options.requests * 0.8)
    // The last two requests before the SIGTERM are long streams: still running when it comes.
    const longStreams = termAt - killAt >= 4 ? [termAt - 2, termAt - 1] : []
    const plans = SoakPlan.plan({ count: options.requests, seed, runId, accounts: funded, longStreams })
    const outcomes: Array<Outcome> = plans.map((p) => ({
      index: p.index,
      kind: p.kind,
      variant: p.variant,
      requestId: p.requestId,
      accountId: p.accountId,
      model: p.model,
      stream: p.stream,
      maxTokens: p.maxTokens,
      phase: 0,
      startedAt: 0,
      endedAt: 0,
      status: undefined,
      errorBody: undefined,
      delivered: false,
      contentChunks: 0,
      completed: false,
      clientAborted: false,
      clientTimedOut: false,
      failure: undefined,
      inFlightAtKill: false,
      inFlightAtTerm: false
    }))
    const settings: ClientSettings = {
      url,
      pauseMs,
      // past the relay's own bound on a hung upstream (two channels, `upstreamIdleSeconds` each)
      hungClientMs: (upstreamIdleSeconds * 3 + 3) * 1000,
      requestBoundMs: 60_000,
      poorKey: poor.key
    }
    const inFlight = new Set<Outcome>()
    const launch = async (i: number, phase: number) => {
      const outcome = outcomes[i]!
      outcome.phase = phase
      inFlight.add(outcome)
      try {
        await fire(settings, plans[i]!, outcome)
      } finally {
        inFlight.delete(outcome)
      }
    }
    /** Whether the burst is at a point worth an event: the long streams in flight (else any stream) are delivering. */
    const delivering = () => {
      const running = [...inFlight]
      const long = running.filter((o) => o.kind === "long-stream")
      return long.length > 0 ? long.every((o) => o.delivered) : running.some((o) => o.delivered)
    }
    /** Fires `indexes`; once the last is launched, runs `event` (once {@link delivering}, or after 20 s). */
    const phase = async (number: number, indexes: ReadonlyArray<number>, event?: () => Promise<void>) => {
      const started = performance.now()
      let eventDone: Promise<void> = Promise.resolve()
      const all = pool(indexes, options.concurrency, async (i) => {
        const running = launch(i, number)
        if (i === indexes[indexes.length - 1] && event !== undefined) {
          eventDone = (async () => {
            const bound = performance.now() + 20_000
            while (performance.now() < bound && !delivering()) await sleep(25)
            await event()
          })()
        }
        await running
      })
      await all
      await eventDone
      log(`soak: phase ${number}: ${indexes.length} requests in ${Math.round(performance.now() - started)} ms`)
    }
    const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from) }, (_, k) => from + k)

    let inFlightAtKill = 0
    await phase(1, range(0, killAt), async () => {
      for (const o of inFlight) o.inFlightAtKill = true
      inFlightAtKill = inFlight.size
      log(`soak: SIGKILL with ${inFlight.size} requests in flight`)
      relay!.signal("SIGKILL")
      await relay!.exited
    })
    await startRelay()

    let inFlightAtTerm = 0
    let sigterm: Termination = { exitMs: undefined, boundMs: sigtermBoundMs }
    await phase(2, range(killAt, termAt), async () => {
      for (const o of inFlight) o.inFlightAtTerm = true
      inFlightAtTerm = inFlight.size
      log(`soak: SIGTERM with ${inFlight.size} requests in flight`)
      const { exitMs, exit } = await RelayProcess.terminate(relay!, sigtermBoundMs)
      sigterm = { exitMs, boundMs: sigtermBoundMs }
      log(`soak: ${exitMs === undefined ? `no exit within ${sigtermBoundMs} ms, killed` : `exited in ${Math.round(exitMs)} ms`} (code ${exit.code}, signal ${exit.signal})`)
    })
    await startRelay()
    await phase(3, range(termAt, options.requests))

    // --- let the reaper finish -------------------------------------------------------------------
    const reader = db.read()
    const pendingCount = async () => Number((await reader(`${PREFIX}holds`).where({ status: "pending" }).count({ n: "*" }))[0]!["n"])
    const waitStart = performance.now()
    const waitBound = waitStart + (holdTtlSeconds + 5 * reapIntervalSeconds) * 1000 + 15_000
    let pending = await pendingCount()
    while (pending > 0 && performance.now() < waitBound) {
      await sleep(250)
      pending = await pendingCount()
    }
    const pendingWaitMs = performance.now() - waitStart
    log(`soak: ${pending} holds pending after ${Math.round(pendingWaitMs)} ms`)

    // --- read everything back --------------------------------------------------------------------
    const settlementCharge = (text: unknown): number | undefined => {
      if (text === null || text === undefined || text === "") return undefined
      const s = JSON.parse(String(text)) as { actual?: number; parts?: Array<{ kind?: string; charged?: number }> }
      const funding = (s.parts ?? []).filter((p) => p.kind === "funding")
      return funding.length > 0 ? funding.reduce((sum, p) => sum + Number(p.charged ?? 0), 0) : Number(s.actual ?? 0)
    }
    const holdRows = await reader(`${PREFIX}holds`).select("id", "account_id", "token_id", "status", "reserved", "settlement")
    const ledgerRows = await reader(`${PREFIX}ledger`).select("hold_id", "source_id", "kind", "amount")
    const logRows = await reader(`${PREFIX}relay_logs`).select("request_id", "quota")
    const accountStates = []
    for (const a of accounts) {
      const account = await admin("GET", `/admin/accounts/${encodeURIComponent(a.accountId)}`)
      const token = await admin("GET", `/admin/tokens/${encodeURIComponent(a.tokenId)}`)
      accountStates.push({
        accountId: a.accountId,
        tokenId: a.tokenId,
        initialQuota: a.initialQuota,
        quota: Number(account.body?.quota),
        usedQuota: Number(account.body?.usedQuota),
        initialRemain: a.initialRemain,
        remainQuota: Number(token.body?.remainQuota)
      })
    }
    const audit = await admin("GET", "/admin/audit")
    const snapshot: Snapshot = {
      holds: holdRows.map((r: Record<string, unknown>) => ({
        id: String(r["id"]),
        accountId: String(r["account_id"]),
        tokenId: r["token_id"] === null ? null : String(r["token_id"]),
        status: String(r["status"]),
        reserved: Number(r["reserved"]),
        settledCharge: settlementCharge(r["settlement"])
      })),
      ledger: ledgerRows.map((r: Record<string, unknown>) => ({
        holdId: r["hold_id"] === null ? null : String(r["hold_id"]),
        sourceId: String(r["source_id"]),
        kind: String(r["kind"]),
        amount: Number(r["amount"])
      })),
      logs: logRows.map((r: Record<string, unknown>) => ({ requestId: String(r["request_id"]), quota: Number(r["quota"]) })),
      accounts: accountStates,
      audit: {
        status: audit.status,
        ok: audit.body?.ok === true,
        problems: Array.isArray(audit.body?.problems) ? audit.body.problems : []
      },
      pending
    }

    const idle = await RelayProcess.terminate(relay!, sigtermBoundMs)
    const sigtermIdle: Termination = { exitMs: idle.exitMs, boundMs: sigtermBoundMs }
    relay = undefined

    const { checks, rows } = evaluate({ plans, outcomes, snapshot, profile, sigterm })
    if (checks.some((c) => !c.ok)) keep = true

    const byKind = Object.fromEntries(KINDS.map((k) => [k, {
      count: 0,
      statuses: {},
      delivered: 0,
      completed: 0,
      aborted: 0,
      timedOut: 0,
      failures: 0
    } satisfies KindFigures])) as Record<RequestKind, KindFigures>
    for (const o of outcomes) {
      const f = byKind[o.kind]
      f.count++
      const status = o.status === undefined ? "none" : String(o.status)
      f.statuses[status] = (f.statuses[status] ?? 0) + 1
      if (o.delivered) f.delivered++
      if (o.completed) f.completed++
      if (o.clientAborted) f.aborted++
      if (o.clientTimedOut) f.timedOut++
      if (o.failure !== undefined) f.failures++
    }
    const relayErrorLines = readFileSync(logFile, "utf8").split("\n").filter((l) => /level=ERROR/.test(l)).length

    return {
      db: options.db,
      requests: options.requests,
      concurrency: options.concurrency,
      seed,
      limitsSupported,
      durationMs: performance.now() - began,
      sigterm,
      sigtermIdle,
      inFlightAtKill,
      inFlightAtTerm,
      pendingWaitMs,
      byKind,
      upstream: { ...upstream.received },
      relayErrorLines,
      checks,
      workDir,
      rows
    }
  } catch (error) {
    keep = true
    throw error
  } finally {
    if (relay !== undefined) {
      relay.signal("SIGKILL")
      await relay.exited
    }
    await upstream.close()
    await db.drop()
    if (!keep) rmSync(workDir, { recursive: true, force: true })
  }
}

/** One line per request (for `--verbose`). */
export const formatRows = (report: Report): string =>
  report.rows.map((r) =>
    [
      r.requestId,
      r.variant.padEnd(22),
      `p${r.phase}`,
      String(r.status ?? "-").padStart(3),
      r.delivered ? `delivered:${r.chunks}` : "-",
      r.completed ? "completed" : r.aborted ? "aborted" : "-",
      r.cut ?? "-",
      `hold:${r.hold ?? "-"}`,
      `reserved:${r.reserved ?? "-"}`,
      `charged:${r.charged}`,
      `logs:${r.logRows}`,
      r.failure ?? ""
    ].join(" ")
  ).join("\n")

/** The report as text: the figures, then one line per check. */
export const format = (report: Report): string => {
  const ms = (t: number | undefined) => (t === undefined ? "not exited (killed)" : `${(t / 1000).toFixed(2)} s`)
  const lines = [
    `soak on ${report.db}: ${report.requests} requests at ${report.concurrency} concurrent, seed ${report.seed}, ${
      (report.durationMs / 1000).toFixed(1)
    } s, limits ${report.limitsSupported ? "on" : "not supported by this relay"}`,
    `  SIGKILL with ${report.inFlightAtKill} in flight; SIGTERM with ${report.inFlightAtTerm} in flight: ${ms(report.sigterm.exitMs)}; idle SIGTERM: ${ms(report.sigtermIdle.exitMs)}`,
    `  pending wait ${(report.pendingWaitMs / 1000).toFixed(1)} s; relay ERROR log lines ${report.relayErrorLines}; upstream requests ${JSON.stringify(report.upstream)}`,
    `  by kind (count delivered/completed/aborted/timed-out/failures statuses):`,
    ...Object.entries(report.byKind).map(([kind, f]) =>
      `    ${kind.padEnd(13)} ${String(f.count).padStart(5)}  ${f.delivered}/${f.completed}/${f.aborted}/${f.timedOut}/${f.failures}  ${JSON.stringify(f.statuses)}`
    ),
    ...report.checks.flatMap((c) => [
      `  ${c.ok ? "ok  " : "FAIL"} ${c.name}: ${c.figure}`,
      ...(c.ok ? [] : c.examples.map((e) => `         ${e}`))
    ]),
    `  ${report.checks.filter((c) => !c.ok).length === 0 ? "all checks passed" : `${report.checks.filter((c) => !c.ok).length} checks failed; work dir kept: ${report.workDir}`}`
  ]
  return lines.join("\n")
}
