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
 *    into the config only when the relay accepts them (a relay that refuses
 *    the key exits at start-up naming it; it is started again without);
 * 2. creates funded accounts and tokens through the admin API;
 * 3. phase 1: fires the first 35 % of the planned requests at the chosen
 *    concurrency, and once the last of them is on its way (and a stream is
 *    delivering), SIGKILLs the relay, notes the holds it left pending, and
 *    restarts it on the same database;
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
import * as SoakAdmin from "./SoakAdmin.js"
import type { Termination } from "./SoakChecks.js"
import { evaluate } from "./SoakChecks.js"
import type { ClientSettings, Outcome } from "./SoakClients.js"
import { fire, newOutcome } from "./SoakClients.js"
import * as SoakDatabase from "./SoakDatabase.js"
import * as SoakPlan from "./SoakPlan.js"
import type { Report } from "./SoakReport.js"
import { byKind } from "./SoakReport.js"
import * as SoakSnapshot from "./SoakSnapshot.js"
import * as SoakUpstream from "./SoakUpstream.js"

export type { Report } from "./SoakReport.js"
export { format, formatRows } from "./SoakReport.js"

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
  /** Default: longer than the slow upstream's silence (`holdTtlSeconds` + 2 reaper passes + 2 s). */
  readonly upstreamIdleSeconds?: number | undefined
  /** How long the probe waits for the exit after SIGTERM before it SIGKILLs (default 20 s). */
  readonly sigtermBoundMs?: number | undefined
  /** Keep the work directory (config, relay log, SQLite file) even when every check passed. */
  readonly keep?: boolean | undefined
  /** Progress lines. */
  readonly log?: ((line: string) => void) | undefined
}

const INITIAL_QUOTA = 10_000_000

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Runs `task` over `items` with at most `concurrency` at once. */
const pool = async (items: ReadonlyArray<number>, concurrency: number, task: (i: number) => Promise<void>) => {
  let next = 0
  const worker = async () => {
    while (next < items.length) await task(items[next++]!)
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker))
}

const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from) }, (_, k) => from + k)

/** Runs the probe and returns its report (it throws only when it cannot run at all). */
export const run = async (options: Options): Promise<Report> => {
  const began = performance.now()
  const log = options.log ?? (() => {})
  const seed = options.seed ?? (randomBytes(4).readUInt32LE(0) >>> 0)
  const holdTtlSeconds = options.holdTtlSeconds ?? 3
  const reapIntervalSeconds = options.reapIntervalSeconds ?? 1
  const sigtermBoundMs = options.sigtermBoundMs ?? 20_000
  // Longer than a hold's lifetime plus two reaper passes: a hold that is not
  // renewed is reaped under a request that outlives it.
  const outliveMs = (holdTtlSeconds + 2 * reapIntervalSeconds) * 1000
  // A slow non-stream upstream is silent for `outliveMs`: the idle bound must be longer.
  const upstreamIdleSeconds = options.upstreamIdleSeconds ?? Math.ceil(outliveMs / 1000) + 2
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
  let upstream: SoakUpstream.SoakUpstream | undefined
  let db: SoakDatabase.SoakDatabase | undefined
  let relay: RelayProcess.RelayProcess | undefined
  let keep = options.keep === true
  try {
    upstream = await SoakUpstream.start(profile)
    db = await SoakDatabase.create(options.db, { dir: workDir, pgUrl: options.pgUrl ?? process.env["BILLING_PG_URL"] })
    const reader = db.read()
    const port = await RelayProcess.freePort()
    const url = `http://127.0.0.1:${port}`
    const env = {
      RELAY_HOST: "127.0.0.1",
      RELAY_DATABASE_URL: db.url,
      RELAY_CONFIG: configFile,
      RELAY_ADMIN_KEY: adminKey
    }
    const startRelay = async () => {
      relay = await RelayProcess.start({ port, env, cwd: workDir, logFile, readyTimeoutMs: 60_000 })
    }

    // --- config: `limits` only when this relay knows it (the config refuses unknown keys) ------
    writeFileSync(configFile, JSON.stringify(SoakPlan.relayConfig(upstream.origin, timings, true), null, 2))
    let limitsSupported = true
    try {
      await startRelay()
    } catch (error) {
      if (!(error instanceof RelayProcess.StartError) || !/\blimits\b/.test(error.output)) throw error
      limitsSupported = false
      writeFileSync(configFile, JSON.stringify(SoakPlan.relayConfig(upstream.origin, timings, false), null, 2))
      await startRelay()
    }
    log(
      `soak: ${options.db}, ${options.requests} requests at ${options.concurrency}, seed ${seed}, limits ${
        limitsSupported ? "on" : "not supported by this relay"
      }, work dir ${workDir}`
    )

    // --- accounts --------------------------------------------------------------------------------
    const admin = SoakAdmin.client(url, adminKey)
    const funded: Array<SoakAdmin.Funded> = []
    const accountCount = Math.min(16, Math.max(4, Math.ceil(options.requests / 250)))
    for (let i = 0; i < accountCount; i++) {
      funded.push(await admin.fund(`soak-${runId}-${i}`, INITIAL_QUOTA, INITIAL_QUOTA))
    }
    const poor = await admin.fund(`soak-${runId}-poor`, 10, 1_000_000) // too poor for any reservation: 403s

    // --- the burst -------------------------------------------------------------------------------
    const killAt = Math.floor(options.requests * 0.35)
    const termAt = Math.floor(options.requests * 0.8)
    // The last two requests before the SIGTERM are long streams: still running when it comes.
    const longStreams = termAt - killAt >= 4 ? [termAt - 2, termAt - 1] : []
    const plans = SoakPlan.plan({ count: options.requests, seed, runId, accounts: funded, longStreams })
    const outcomes: Array<Outcome> = plans.map(newOutcome)
    const settings: ClientSettings = {
      url,
      pauseMs,
      // past the relay's own bound on a hung upstream (one channel, `upstreamIdleSeconds`)
      hungClientMs: (upstreamIdleSeconds * 2 + 5) * 1000,
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
      await pool(indexes, options.concurrency, async (i) => {
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
      await eventDone
      log(`soak: phase ${number}: ${indexes.length} requests in ${Math.round(performance.now() - started)} ms`)
    }

    let inFlightAtKill = 0
    let orphaned: ReadonlySet<string> = new Set()
    await phase(1, range(0, killAt), async () => {
      for (const o of inFlight) o.inFlightAtKill = true
      inFlightAtKill = inFlight.size
      relay!.signal("SIGKILL")
      await relay!.exited
      // the holds the crash left open: only the reaper can end them (§6)
      orphaned = await SoakSnapshot.pendingHolds(reader)
      log(`soak: SIGKILL with ${inFlightAtKill} requests in flight, ${orphaned.size} holds left pending`)
    })
    await startRelay()

    let inFlightAtTerm = 0
    let sigterm: Termination = { exitMs: undefined, boundMs: sigtermBoundMs }
    await phase(2, range(killAt, termAt), async () => {
      for (const o of inFlight) o.inFlightAtTerm = true
      inFlightAtTerm = inFlight.size
      log(`soak: SIGTERM with ${inFlight.size} requests in flight`)
      const { exit, exitMs } = await RelayProcess.terminate(relay!, sigtermBoundMs)
      sigterm = { exitMs, boundMs: sigtermBoundMs }
      log(
        `soak: ${
          exitMs === undefined ? `no exit within ${sigtermBoundMs} ms, killed` : `exited in ${Math.round(exitMs)} ms`
        } (code ${exit.code}, signal ${exit.signal})`
      )
    })
    await startRelay()
    await phase(3, range(termAt, options.requests))

    // --- let the reaper finish (bounded) ---------------------------------------------------------
    const waitStart = performance.now()
    const waitBound = waitStart + (holdTtlSeconds + 5 * reapIntervalSeconds) * 1000 + 15_000
    let pending = (await SoakSnapshot.pendingHolds(reader)).size
    while (pending > 0 && performance.now() < waitBound) {
      await sleep(250)
      pending = (await SoakSnapshot.pendingHolds(reader)).size
    }
    const pendingWaitMs = performance.now() - waitStart
    log(`soak: ${pending} holds pending after ${Math.round(pendingWaitMs)} ms`)

    // --- read everything back, stop, judge -------------------------------------------------------
    const stored = await SoakSnapshot.read(reader)
    const accounts = []
    for (const a of [...funded, poor]) accounts.push(await admin.state(a))
    const audit = await admin.audit()
    const idle = await RelayProcess.terminate(relay!, sigtermBoundMs)
    relay = undefined

    const { checks, rows } = evaluate({
      plans,
      outcomes,
      snapshot: { ...stored, accounts, audit, pending, orphaned },
      profile,
      sigterm
    })
    if (checks.some((c) => !c.ok)) keep = true
    return {
      db: options.db,
      requests: options.requests,
      concurrency: options.concurrency,
      seed,
      limitsSupported,
      durationMs: performance.now() - began,
      sigterm,
      sigtermIdle: { exitMs: idle.exitMs, boundMs: sigtermBoundMs },
      inFlightAtKill,
      orphanedByKill: orphaned.size,
      inFlightAtTerm,
      pendingWaitMs,
      byKind: byKind(outcomes),
      upstream: { ...upstream.received },
      relayErrorLines: readFileSync(logFile, "utf8").split("\n").filter((l) => /\bERROR\b/.test(l)).length,
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
    await upstream?.close()
    await db?.drop()
    if (!keep) rmSync(workDir, { recursive: true, force: true })
  }
}
