/**
 * Multi-process tests: real OS processes (`node test/fixtures/worker.mjs`, each with
 * its own knex pool) sharing one isolated database per test, on SQLite (one WAL
 * file), PostgreSQL (one schema) and MariaDB/MySQL (one database).
 *
 * 1. contention: 4 processes × 16 concurrent opens on a wallet that affords exactly 23
 *    (spec case 16 across processes)
 * 2. settles: 4 processes settle 16 holds each of one account at the same moment
 * 3. crash: a process holding reservations is SIGKILLed; one recovery pass after expiry
 *    restores everything exactly once, a second changes nothing (spec case 15)
 * 4. concurrent reapers: 3 processes reap the same crash at the same moment (spec §6)
 * 5. migrations: 4 processes migrate one fresh database at the same moment
 *
 * Processes do not share a TestClock, and nothing here waits for real time to pass: the
 * crashed process's holds live for `TTL` (far longer than any run), and the recovery
 * processes read a `Clock` shifted past that expiry (`clockOffsetMillis`, see the worker).
 * Each scenario gets its own isolated database; workers receive its URL and client
 * options as JSON in argv.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Audit, KnexClient, Migrations, TestDatabase } from "@relay-billing/knex"
import { Duration, Effect, Layer, Semaphore } from "effect"
import type { Scope } from "effect"
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { fileURLToPath } from "node:url"
// The built package, as the workers load it: parent and children must run the same code
// (and the same migrations) even while src is being edited.
import { Wallet, WalletAdmin } from "@relay-billing/wallet"

const packageDir = fileURLToPath(new URL("..", import.meta.url))
const workerPath = fileURLToPath(new URL("./fixtures/worker.mjs", import.meta.url))

// ------------------------------------------------------------------ processes

interface ErrorInfo {
  readonly tag: string
  readonly message: string
  readonly code?: string
  readonly operation?: string
}

interface WorkerLine {
  readonly pid: number
  readonly cmd?: string
  readonly ready?: boolean
  readonly error?: ErrorInfo
  readonly [key: string]: unknown
}

interface ReapReport {
  readonly examined: number
  readonly expired: number
  readonly refunded: number
  readonly failures: ReadonlyArray<{ readonly holdId: string; readonly error: string }>
}

interface Worker {
  readonly name: string
  readonly child: ChildProcess
  readonly lines: Array<WorkerLine>
  readonly stderr: () => string
  /** The first stdout line matching `predicate` (fails after `timeoutMs` or when the process exits first). */
  readonly line: (predicate: (line: WorkerLine) => boolean, timeoutMs?: number) => Promise<WorkerLine>
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
}

/** Every child still running, killed in afterAll whatever happened. */
const running = new Set<ChildProcess>()

afterAll(() => {
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  }
  running.clear()
})

const startWorker = (name: string, config: Record<string, unknown>): Worker => {
  const child = spawn(process.execPath, [workerPath, JSON.stringify(config)], {
    cwd: packageDir,
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, NODE_OPTIONS: "" }
  })
  running.add(child)
  const lines: Array<WorkerLine> = []
  const listeners = new Set<() => void>()
  let stderr = ""
  let pending = ""
  let ended = false
  const notify = () => {
    for (const f of listeners) f()
  }
  child.stdout!.setEncoding("utf8")
  child.stdout!.on("data", (chunk: string) => {
    pending += chunk
    let newline: number
    while ((newline = pending.indexOf("\n")) >= 0) {
      const text = pending.slice(0, newline).trim()
      pending = pending.slice(newline + 1)
      if (text.length === 0) continue
      try {
        lines.push(JSON.parse(text) as WorkerLine)
      } catch {
        stderr += `[stdout, not JSON] ${text}\n`
      }
    }
    notify()
  })
  child.stderr!.setEncoding("utf8")
  child.stderr!.on("data", (chunk: string) => {
    stderr += chunk
  })
  // A child that exits before reading its go signal must not crash the parent with EPIPE.
  child.stdin!.on("error", () => undefined)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("close", (code, signal) => {
      ended = true
      running.delete(child)
      notify()
      resolve({ code, signal })
    })
  })
  const line = (predicate: (line: WorkerLine) => boolean, timeoutMs = 90_000) =>
    new Promise<WorkerLine>((resolve, reject) => {
      const check = () => {
        const found = lines.find(predicate)
        if (found) {
          cleanup()
          resolve(found)
        } else if (ended) {
          cleanup()
          reject(
            new Error(
              `worker ${name} exited without the expected line; stdout: ${JSON.stringify(lines)}; stderr: ${stderr}`
            )
          )
        }
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(
          new Error(
            `worker ${name}: no expected line after ${timeoutMs} ms; stdout: ${
              JSON.stringify(lines)
            }; stderr: ${stderr}`
          )
        )
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        listeners.delete(check)
      }
      listeners.add(check)
      check()
    })
  return { name, child, lines, stderr: () => stderr, line, exited }
}

/** Starts a worker, killed with the test's scope if it is still running then. */
const worker = (name: string, config: Record<string, unknown>): Effect.Effect<Worker, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => startWorker(name, config)),
    (w) =>
      Effect.sync(() => {
        if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL")
      })
  )

/** Waits until every worker has connected and reported ready, then releases them all at once. */
const releaseTogether = (workers: ReadonlyArray<Worker>) =>
  Effect.promise(async () => {
    await Promise.all(workers.map((w) => w.line((l) => l.ready === true)))
    for (const w of workers) w.child.stdin!.write("go\n")
  })

/** The worker's final result line; fails unless it exited 0 with a result and no error. */
const result = (w: Worker, timeoutMs = 90_000) =>
  Effect.promise(async () => {
    const line = await w.line((l) => l.ready !== true && (l.cmd !== undefined), timeoutMs)
    const exit = await w.exited
    if (line.error !== undefined || exit.code !== 0) {
      throw new Error(
        `worker ${w.name} failed (exit ${exit.code}, signal ${exit.signal}): ${
          JSON.stringify(line.error ?? line)
        }\n${w.stderr()}`
      )
    }
    return line
  })

// ------------------------------------------------------------------ database

const dbTargets = TestDatabase.targets()

interface Db {
  readonly isolated: TestDatabase.Isolated
  readonly client: KnexClient.Client
  /** Worker config fields that point at the same isolated database. */
  readonly connection: { readonly url: string; readonly options: KnexClient.ClientOptions }
}

/** A fresh, empty isolated database (dropped with the scope), as workers connect to it. */
const emptyDatabase = (target: TestDatabase.Target) =>
  Effect.map(TestDatabase.isolated(target), (isolated) => ({
    isolated,
    connection: { url: isolated.url, options: isolated.options }
  }))

/** An isolated, migrated database (dropped with the scope) and the parent's own client on it. */
const database = (target: TestDatabase.Target): Effect.Effect<Db, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const { connection, isolated } = yield* emptyDatabase(target)
    const client = yield* KnexClient.fromUrl(isolated.url, isolated.options)
    yield* Effect.provideService(Migrations.run(Wallet.allMigrations), KnexClient.KnexClient, client)
    return { isolated, connection, client }
  })

const withClient = <A, E>(client: KnexClient.Client, effect: Effect.Effect<A, E, KnexClient.KnexClient>) =>
  Effect.provideService(effect, KnexClient.KnexClient, client)

const rows = <T = Record<string, unknown>>(
  client: KnexClient.Client,
  f: (k: KnexClient.Client["knex"]) => PromiseLike<unknown>
) => Effect.promise(() => Promise.resolve(f(client.knex)) as Promise<Array<T>>)

interface LedgerRow {
  readonly seq: number
  readonly kind: string
  readonly sourceId: string
  readonly subjectId: string
  readonly holdId: string | null
  readonly amount: number
  readonly balanceAfter: number
}

const ledger = (client: KnexClient.Client) =>
  Effect.map(
    rows(client, (k) => k(client.table("ledger")).select("*").orderBy("seq")),
    (rs) =>
      rs.map((r): LedgerRow => ({
        seq: Number(r["seq"]),
        kind: String(r["kind"]),
        sourceId: String(r["source_id"]),
        subjectId: String(r["subject_id"]),
        holdId: r["hold_id"] === null ? null : String(r["hold_id"]),
        amount: Number(r["amount"]),
        balanceAfter: Number(r["balance_after"])
      }))
  )

interface HoldRow {
  readonly id: string
  readonly status: string
  readonly reserved: number
  readonly expiresAt: number
  readonly parts: ReadonlyArray<
    { readonly kind: string; readonly sourceId: string; readonly subjectId: string; readonly amount: number }
  >
}

const holds = (client: KnexClient.Client) =>
  Effect.map(
    rows(client, (k) => k(client.table("holds")).select("*").orderBy("id")),
    (rs) =>
      rs.map((r): HoldRow => ({
        id: String(r["id"]),
        status: String(r["status"]),
        reserved: Number(r["reserved"]),
        expiresAt: Number(r["expires_at"]),
        parts: JSON.parse(String(r["parts"]))
      }))
  )

const partRecords = (client: KnexClient.Client) =>
  Effect.map(
    rows(client, (k) => k(client.table("hold_parts")).select("*")),
    (rs) =>
      rs.map((r) => ({
        holdId: String(r["hold_id"]),
        sourceId: String(r["source_id"]),
        status: String(r["status"]),
        amount: Number(r["amount"])
      }))
  )

/** Wallet balances and token budgets, by id. */
const balances = (client: KnexClient.Client) =>
  Effect.gen(function*() {
    const accounts = yield* rows(client, (k) =>
      k(client.table("accounts")).select("id", "balance", "used_quota", "request_count"))
    const tokens = yield* rows(client, (k) =>
      k(client.table("tokens")).select("id", "remain", "used"))
    const out: Record<string, number> = {}
    for (const a of accounts) {
      out[`account:${String(a["id"])}`] = Number(a["balance"])
      out[`usedQuota:${String(a["id"])}`] = Number(a["used_quota"])
      out[`requestCount:${String(a["id"])}`] = Number(a["request_count"])
    }
    for (const t of tokens) {
      out[`token:${String(t["id"])}`] = Number(t["remain"])
      out[`tokenUsed:${String(t["id"])}`] = Number(t["used"])
    }
    return out
  })

/** The audit must be clean and leave nothing pending past its expiry. */
const auditClean = (client: KnexClient.Client) =>
  Effect.gen(function*() {
    const report = yield* withClient(client, Audit.run(Wallet.auditBalances))
    assert.deepStrictEqual(report.problems, [], "audit problems")
    assert.isTrue(report.ok)
    assert.deepStrictEqual(report.pendingPastExpiry, [], "pending holds past their expiry")
    return report
  })

const admin = (client: KnexClient.Client) => WalletAdmin.make(client)

/** The parent's own BillingSession over its client (for set-up and for checks). */
const inParent = <A, E>(client: KnexClient.Client, effect: Effect.Effect<A, E, BillingSession.BillingSession>) =>
  Effect.provide(effect, Wallet.layer().pipe(Layer.provide(Layer.succeed(KnexClient.KnexClient)(client))))

const count = <A>(items: ReadonlyArray<A>, key: (a: A) => string) => {
  const out: Record<string, number> = {}
  for (const item of items) out[key(item)] = (out[key(item)] ?? 0) + 1
  return out
}

// ------------------------------------------------------------------ crash scenario (cases 2 and 3)

/**
 * The crashed process's holds live this long by the wall clock: far longer than the test,
 * so the crashed process's own early recovery pass can never find one expired however
 * slow the machine is.
 */
const TTL = 3_600_000
/** Recovery processes read a Clock this far ahead: every crashed hold is past its expiry for them. */
const AFTER_EXPIRY = { clockOffsetMillis: TTL + 60_000 }
/** Holds the killed process's loop commits before the kill (more holds, more contention among reapers). */
const LOOP_HOLDS = 20

interface Crash {
  /** Balances before anything was opened: what the recovery pass must restore. */
  readonly before: Record<string, number>
  /** Every hold the killed process left behind (all pending). */
  readonly holds: ReadonlyArray<HoldRow>
  readonly ledgerRowsBefore: number
}

/**
 * A process opens reservations (limited token, unlimited token, no token; then an
 * endless loop of opens) and is SIGKILLed before settling any of them.
 */
const crash = (db: Db) =>
  Effect.gen(function*() {
    const { client } = db
    const a = admin(client)
    yield* a.createAccount({ id: "a1", balance: 1_000_000 })
    yield* a.createToken({ id: "t1", accountId: "a1", remain: 800_000 })
    yield* a.createAccount({ id: "a2", balance: 500_000 })
    yield* a.createToken({ id: "t2", accountId: "a2", unlimited: true })
    yield* a.createAccount({ id: "a3", balance: 200_000 })
    yield* a.createAccount({ id: "loop", balance: 1_000_000_000 })
    yield* a.createToken({ id: "loop-t", accountId: "loop", remain: 1_000_000_000 })
    const before = yield* balances(client)
    const ledgerRowsBefore = (yield* ledger(client)).length

    const planned = [
      { holdId: "c-a1-0", accountId: "a1", tokenId: "t1", estimate: 30_000 },
      { holdId: "c-a1-1", accountId: "a1", tokenId: "t1", estimate: 30_000 },
      { holdId: "c-a1-2", accountId: "a1", tokenId: "t1", estimate: 25_000 },
      { holdId: "c-a2-0", accountId: "a2", tokenId: "t2", estimate: 45_000 },
      { holdId: "c-a2-1", accountId: "a2", tokenId: "t2", estimate: 45_000 },
      { holdId: "c-a3-0", accountId: "a3", estimate: 10_000 }
    ]
    const victim = yield* worker("hang", {
      cmd: "hang",
      ...db.connection,
      ttlMillis: TTL,
      holds: planned,
      loop: { idPrefix: "c-loop", accountId: "loop", tokenId: "loop-t", estimate: 1_000 }
    })
    const opened = yield* Effect.promise(() => victim.line((l) => l.cmd === "hang"))
    assert.isUndefined(opened.error, JSON.stringify(opened.error))
    const openedHolds = opened["opened"] as ReadonlyArray<{ id: string; reserved: number; expiresAt: number }>
    assert.deepStrictEqual(openedHolds.map((h) => [h.id, h.reserved]), planned.map((p) => [p.holdId, p.estimate]))
    const early = opened["early"] as ReapReport
    assert.deepStrictEqual(
      { examined: early.examined, expired: early.expired },
      { examined: 0, expired: 0 },
      "a recovery pass before expiresAt touched a hold"
    )

    // Let the loop commit a few holds, then kill the process wherever it is (possibly
    // inside the next open's transaction).
    yield* Effect.promise(() => victim.line((l) => l.cmd === "loop" && Number(l["opened"]) >= LOOP_HOLDS))
    victim.child.kill("SIGKILL")
    const exit = yield* Effect.promise(() => victim.exited)
    assert.strictEqual(
      exit.signal,
      "SIGKILL",
      `the victim exited by itself: ${JSON.stringify(exit)} ${victim.stderr()}`
    )

    // The reservations survived the crash: nothing is settled, everything is still held.
    const left = yield* holds(client)
    assert.isTrue(left.every((h) => h.status === "pending"), JSON.stringify(left.filter((h) => h.status !== "pending")))
    for (const p of planned) assert.isTrue(left.some((h) => h.id === p.holdId), `hold ${p.holdId} lost`)
    const loopHolds = left.filter((h) => h.id.startsWith("c-loop-"))
    assert.isAtLeast(loopHolds.length, LOOP_HOLDS, "holds the loop reported committed")
    const now = yield* balances(client)
    assert.strictEqual(now["account:a1"], 1_000_000 - 85_000)
    assert.strictEqual(now["token:t1"], 800_000 - 85_000)
    assert.strictEqual(now["account:a2"], 500_000 - 90_000)
    assert.strictEqual(now["account:a3"], 200_000 - 10_000)
    assert.strictEqual(now["account:loop"], 1_000_000_000 - 1_000 * loopHolds.length)
    assert.strictEqual(now["token:loop-t"], 1_000_000_000 - 1_000 * loopHolds.length)
    return { before, holds: left, ledgerRowsBefore } satisfies Crash
  })

/** Everything the crash reserved is back exactly once, every hold is expired. */
const assertRecovered = (db: Db, crashed: Crash) =>
  Effect.gen(function*() {
    const { client } = db
    assert.deepStrictEqual(yield* balances(client), crashed.before, "balances after recovery")
    const after = yield* holds(client)
    assert.deepStrictEqual(after.map((h) => h.id), crashed.holds.map((h) => h.id), "the set of holds changed")
    assert.deepStrictEqual(
      after.filter((h) => h.status !== "expired").map((h) => `${h.id}:${h.status}`),
      [],
      "holds not expired"
    )
    // v2: the hold's parts are the only record of a reservation; no source keeps its own.
    assert.deepStrictEqual(yield* partRecords(client), [], "sources keep no part records")

    const entries = yield* ledger(client)
    const holdIds = new Set(after.map((h) => h.id))
    assert.deepStrictEqual(
      entries.filter((e) => e.holdId !== null && !holdIds.has(e.holdId)),
      [],
      "ledger rows of unknown holds"
    )
    // Per reserved part: exactly one reserve row (−amount) and exactly one expire row (+amount).
    const expected: Record<string, number> = {}
    const actual: Record<string, number> = {}
    for (const h of after) {
      for (const p of h.parts) {
        if (p.amount === 0) continue
        expected[`${h.id} ${p.sourceId} ${p.subjectId} reserve ${-p.amount}`] = 1
        expected[`${h.id} ${p.sourceId} ${p.subjectId} expire ${p.amount}`] = 1
      }
    }
    for (const e of entries) {
      if (e.holdId === null) continue
      const key = `${e.holdId} ${e.sourceId} ${e.subjectId} ${e.kind} ${e.amount}`
      actual[key] = (actual[key] ?? 0) + 1
    }
    assert.deepStrictEqual(actual, expected, "ledger rows per hold part")
    const expireRows = entries.filter((e) => e.kind === "expire").length
    const reservedParts = after.reduce((n, h) => n + h.parts.filter((p) => p.amount > 0).length, 0)
    assert.strictEqual(expireRows, reservedParts, "one expire row per reserved part")
    assert.strictEqual(
      entries.length,
      crashed.ledgerRowsBefore + 2 * reservedParts,
      "ledger rows: set-up + one reserve and one expire per part"
    )
    yield* auditClean(client)
    return entries.length
  })

// ------------------------------------------------------------------ scenarios

const P = 10_000
const AFFORDABLE = 23
const PROCESSES = 4
const PER_PROCESS = 16
const PER_SETTLER = 16

const contention = (target: TestDatabase.Target) =>
  Effect.gen(function*() {
    const db = yield* database(target)
    const { client } = db
    const a = admin(client)
    const start = AFFORDABLE * P + (P - 1)
    yield* a.createAccount({ id: "shared", balance: start })
    yield* a.createToken({ id: "shared-t", accountId: "shared", remain: 1_000_000_000 })

    const workers: Array<Worker> = []
    for (let n = 0; n < PROCESSES; n++) {
      workers.push(
        yield* worker(`open-${n}`, {
          cmd: "open",
          ...db.connection,
          barrier: true,
          idPrefix: `w${n}`,
          count: PER_PROCESS,
          accountId: "shared",
          tokenId: "shared-t",
          estimate: P
        })
      )
    }
    yield* releaseTogether(workers)
    const results = yield* Effect.all(workers.map((w) => result(w)))

    const opened = results.flatMap((r) => r["opened"] as ReadonlyArray<string>)
    const failures = results.flatMap((r) => r["failures"] as ReadonlyArray<ErrorInfo>)
    assert.strictEqual(new Set(results.map((r) => r.pid)).size, PROCESSES, "distinct processes")
    assert.deepStrictEqual(count(failures, (f) => `${f.tag}${f.code ? ` ${f.code}` : ""}`), {
      InsufficientFunds: PROCESSES * PER_PROCESS - AFFORDABLE
    }, `failures: ${JSON.stringify(failures.filter((f) => f.tag !== "InsufficientFunds").slice(0, 3))}`)
    assert.strictEqual(opened.length, AFFORDABLE, "successful opens")
    assert.strictEqual(new Set(opened).size, AFFORDABLE)

    const stored = yield* holds(client)
    assert.deepStrictEqual(stored.map((h) => h.id).sort(), [...opened].sort(), "holds in the journal")
    assert.isTrue(stored.every((h) => h.status === "pending" && h.reserved === P))

    const now = yield* balances(client)
    assert.strictEqual(now["account:shared"], P - 1, "final wallet balance")
    assert.strictEqual(now["token:shared-t"], 1_000_000_000 - AFFORDABLE * P)
    assert.strictEqual(now["tokenUsed:shared-t"], AFFORDABLE * P)

    const entries = yield* ledger(client)
    const wallet = entries.filter((e) => e.sourceId === "wallet")
    assert.deepStrictEqual(wallet.filter((e) => e.balanceAfter < 0), [], "a wallet balance below zero")
    assert.deepStrictEqual(count(entries, (e) => `${e.sourceId} ${e.kind}`), {
      "wallet topup": 1,
      "wallet reserve": AFFORDABLE,
      "token adjust": 1,
      "token reserve": AFFORDABLE
    })
    // Each reservation saw the balance the previous one left: no two saw the same one.
    const seen = wallet.filter((e) => e.kind === "reserve").map((e) => e.balanceAfter).sort((x, y) => x - y)
    assert.deepStrictEqual(seen, Array.from({ length: AFFORDABLE }, (_, k) => P - 1 + k * P))
    yield* auditClean(client)
  })

const settles = (target: TestDatabase.Target) =>
  Effect.gen(function*() {
    const db = yield* database(target)
    const { client } = db
    const a = admin(client)
    yield* a.createAccount({ id: "s", balance: 1_000_000 })
    yield* a.createToken({ id: "s-t", accountId: "s", remain: 1_000_000 })
    const before = yield* balances(client)
    // Four processes, already started, settle PER_SETTLER holds each at the same moment; the
    // parent opens the holds meanwhile.
    const plan = Array.from(
      { length: PROCESSES * PER_SETTLER },
      (_, i) => ({ holdId: `s-${i}`, actual: i % 2 === 0 ? 4_000 + i : 13_000 + i })
    )
    const settlers: Array<Worker> = []
    for (let n = 0; n < PROCESSES; n++) {
      settlers.push(
        yield* worker(`settle-${n}`, {
          cmd: "settle",
          ...db.connection,
          barrier: true,
          holds: plan.filter((_, i) => i % PROCESSES === n)
        })
      )
    }
    yield* inParent(
      client,
      Effect.gen(function*() {
        const billing = yield* BillingSession.BillingSession
        yield* Effect.forEach(
          plan,
          (p) =>
            billing.open({ holdId: p.holdId, accountId: "s", tokenId: "s-t", estimate: P, preference: "wallet_only" }),
          { concurrency: 8 }
        )
      })
    )
    assert.strictEqual((yield* balances(client))["account:s"], before["account:s"]! - plan.length * P)
    yield* releaseTogether(settlers)
    const results = yield* Effect.all(settlers.map((w) => result(w)))
    const failures = results.flatMap((r) => r["failures"] as ReadonlyArray<ErrorInfo>)
    const settled = new Set(results.flatMap((r) => r["settled"] as ReadonlyArray<string>))

    // First, whatever happened is consistent: a settle that reported success is settled, one
    // that failed left its hold pending with nothing half-applied.
    yield* auditClean(client)
    const stored = yield* holds(client)
    assert.deepStrictEqual(
      stored.filter((h) => h.status !== (settled.has(h.id) ? "settled" : "pending")).map((h) => `${h.id}:${h.status}`),
      [],
      "hold status vs what the settling process reported"
    )
    const charged = plan.reduce((n, p) => n + (settled.has(p.holdId) ? p.actual : P), 0)
    const used = plan.reduce((n, p) => n + (settled.has(p.holdId) ? p.actual : 0), 0)
    const now = yield* balances(client)
    assert.strictEqual(now["account:s"], before["account:s"]! - charged)
    assert.strictEqual(now["token:s-t"], before["token:s-t"]! - charged)
    assert.strictEqual(now["usedQuota:s"], used)
    assert.strictEqual(now["requestCount:s"], settled.size)
    const entries = yield* ledger(client)
    assert.deepStrictEqual(count(entries.filter((e) => e.holdId !== null), (e) => `${e.sourceId} ${e.kind}`), {
      "wallet reserve": plan.length,
      "token reserve": plan.length,
      ...(settled.size > 0 ? { "wallet settle": settled.size, "token settle": settled.size } : {})
    })

    // Then: every settle succeeded (a concurrent writer in another process is no reason to fail).
    assert.deepStrictEqual(failures, [], "settle failures")
    assert.strictEqual(settled.size, plan.length)
  })

const crashRecovery = (target: TestDatabase.Target) =>
  Effect.gen(function*() {
    const db = yield* database(target)
    const crashed = yield* crash(db)
    // Both recovery processes run after the holds' expiry (by their Clock).
    const first = yield* worker("reap-1", { cmd: "reap", ...db.connection, barrier: true, ...AFTER_EXPIRY })
    const second = yield* worker("reap-2", { cmd: "reap", ...db.connection, barrier: true, ...AFTER_EXPIRY })

    yield* releaseTogether([first])
    const report = (yield* result(first))["report"] as ReapReport
    assert.deepStrictEqual(report.failures, [], "reaper failures")
    assert.strictEqual(report.expired, crashed.holds.length, "holds expired by the recovery pass")
    assert.strictEqual(report.refunded, crashed.holds.reduce((n, h) => n + h.reserved, 0), "amount refunded")
    const rowsAfter = yield* assertRecovered(db, crashed)
    const balancesAfter = yield* balances(db.client)
    const holdsAfter = yield* holds(db.client)

    yield* releaseTogether([second])
    const again = (yield* result(second))["report"] as ReapReport
    assert.deepStrictEqual(again, { examined: 0, expired: 0, refunded: 0, failures: [] }, "second recovery pass")
    assert.strictEqual((yield* ledger(db.client)).length, rowsAfter, "ledger rows added by the second pass")
    assert.deepStrictEqual(yield* balances(db.client), balancesAfter)
    assert.deepStrictEqual(yield* holds(db.client), holdsAfter)
  })

const concurrentReapers = (target: TestDatabase.Target) =>
  Effect.gen(function*() {
    const db = yield* database(target)
    const crashed = yield* crash(db)
    const reapers: Array<Worker> = []
    for (let n = 0; n < 3; n++) {
      reapers.push(yield* worker(`reap-${n}`, { cmd: "reap", ...db.connection, barrier: true, ...AFTER_EXPIRY }))
    }
    yield* releaseTogether(reapers)
    const reports = (yield* Effect.all(reapers.map((w) => result(w)))).map((r) => r["report"] as ReapReport)

    yield* assertRecovered(db, crashed)
    assert.strictEqual(
      reports.reduce((n, r) => n + r.expired, 0),
      crashed.holds.length,
      `holds expired, summed over reapers: ${JSON.stringify(reports.map((r) => r.expired))}`
    )
    assert.strictEqual(
      reports.reduce((n, r) => n + r.refunded, 0),
      crashed.holds.reduce((n, h) => n + h.reserved, 0),
      "amount refunded, summed over reapers"
    )
    assert.deepStrictEqual(reports.flatMap((r) => r.failures), [], "reaper failures")
  })

const migrations = (target: TestDatabase.Target) =>
  Effect.gen(function*() {
    const db = yield* emptyDatabase(target)
    const migrators: Array<Worker> = []
    for (let n = 0; n < 4; n++) {
      migrators.push(yield* worker(`migrate-${n}`, { cmd: "migrate", ...db.connection, barrier: true }))
    }
    yield* releaseTogether(migrators)
    // Wait for every process (no fail-fast), then read what the database holds, so that
    // a failure reports the state of the migrations and lock tables it left behind.
    const outcomes = yield* Effect.promise(() =>
      Promise.all(migrators.map(async (w) => {
        const exit = await w.exited
        return {
          worker: w.name,
          code: exit.code,
          result: w.lines.find((l) => l.cmd === "migrate") ?? null,
          lockRetries: (w.stderr().match(/Migration table is already locked/g) ?? []).length
        }
      }))
    )
    const client = yield* KnexClient.fromUrl(db.isolated.url, db.isolated.options)
    const state: Record<string, unknown> = {}
    const read = <A>(table: string, f: (r: Record<string, unknown>) => A) =>
      Effect.promise(() =>
        Promise.resolve(client.knex(table).select("*")).then(
          (rs: Array<Record<string, unknown>>) => rs.map(f),
          (error: unknown) => `unreadable: ${error instanceof Error ? error.message : String(error)}`
        )
      )
    for (const set of Wallet.allMigrations.map((m) => m.name)) {
      state[client.table(`${set}_migrations`)] = yield* read(
        client.table(`${set}_migrations`),
        (r) => String(r["name"])
      )
      state[client.table(`${set}_migrations_lock`)] = yield* read(
        client.table(`${set}_migrations_lock`),
        (r) => ({ index: Number(r["index"]), is_locked: Number(r["is_locked"]) })
      )
    }
    const context = JSON.stringify({ outcomes, state })
    assert.deepStrictEqual(outcomes.map((o) => o.code), [0, 0, 0, 0], `every migrating process exits 0: ${context}`)
    assert.isTrue(outcomes.every((o) => o.result !== null && o.result.error === undefined), context)
    const reports = outcomes.map((o) => o.result!["report"] as Record<string, ReadonlyArray<string>>)
    const expected: Record<string, number> = {}
    for (const set of Wallet.allMigrations) for (const m of set.migrations) expected[`${set.name}/${m.name}`] = 1
    const applied = count(
      reports.flatMap((r) => Object.entries(r).flatMap(([set, names]) => names.map((name) => `${set}/${name}`))),
      (x) => x
    )
    assert.deepStrictEqual(applied, expected, `migrations applied, over all processes: ${context}`)
    const expectedState: Record<string, unknown> = {}
    for (const set of Wallet.allMigrations) {
      expectedState[client.table(`${set.name}_migrations`)] = set.migrations.map((m) => m.name)
      expectedState[client.table(`${set.name}_migrations_lock`)] = [{ index: 1, is_locked: 0 }]
    }
    assert.deepStrictEqual(state, expectedState, "migrations and lock tables")
    // Nothing left to apply, and the tables work.
    const again = yield* withClient(client, Migrations.run(Wallet.allMigrations))
    assert.deepStrictEqual(again, Object.fromEntries(Wallet.allMigrations.map((set) => [set.name, []])))
    const a = admin(client)
    yield* a.createAccount({ id: "m", balance: 100_000 })
    yield* a.createToken({ id: "m-t", accountId: "m", remain: 100_000 })
    const settlement = yield* inParent(
      client,
      Effect.gen(function*() {
        const billing = yield* BillingSession.BillingSession
        const session = yield* billing.open({
          holdId: "m-h",
          accountId: "m",
          tokenId: "m-t",
          estimate: 30_000,
          preference: "wallet_only"
        })
        return yield* session.settle(12_000)
      })
    )
    assert.strictEqual(settlement.actual, 12_000)
    const now = yield* balances(client)
    assert.strictEqual(now["account:m"], 88_000)
    assert.strictEqual(now["token:m-t"], 88_000)
    yield* auditClean(client)
  })

// ------------------------------------------------------------------ tests

/**
 * Scenarios run concurrently (each on its own isolated database), at most this many at a
 * time, so that the file stays short on 2 cores without starving the processes.
 */
const slots = Semaphore.makeUnsafe(3)

/**
 * How long one scenario may run once it holds a slot. The time spent queueing for a slot
 * does not count (with 15 scenarios and 3 slots, the last ones wait for four rounds on a
 * busy machine: counting that wait made them time out at random).
 */
const SCENARIO_TIMEOUT = Duration.minutes(3)
/** vitest's limit for one test: queueing for a slot plus running; only a hang reaches it. */
const TEST_TIMEOUT_MS = 15 * 60_000

const limited = (title: string, scenario: Effect.Effect<unknown, unknown, Scope.Scope>) =>
  slots.withPermit(
    scenario.pipe(
      Effect.timeoutOrElse({
        duration: SCENARIO_TIMEOUT,
        orElse: () => Effect.die(new Error(`${title}: still running after ${Duration.format(SCENARIO_TIMEOUT)}`))
      })
    )
  )

const scenarios: ReadonlyArray<
  readonly [string, (target: TestDatabase.Target) => Effect.Effect<unknown, unknown, Scope.Scope>]
> = [
  [
    `${PROCESSES} processes × ${PER_PROCESS} concurrent opens on a wallet that affords ${AFFORDABLE}: exactly ${AFFORDABLE} succeed, never below zero (case 16)`,
    contention
  ],
  [
    `${PROCESSES} processes settle ${
      PROCESSES * PER_SETTLER
    } holds of one account at the same moment: every settle succeeds once`,
    settles
  ],
  [
    "a process killed after opening: after expiry one recovery pass restores everything, a second changes nothing (case 15)",
    crashRecovery
  ],
  ["3 processes reap the same crash at the same moment: every hold expires exactly once (§6)", concurrentReapers],
  ["4 processes migrate one fresh database at the same moment: all succeed, each migration applied once", migrations]
]

describe.concurrent("relay-billing across OS processes", () => {
  for (const [title, scenario] of scenarios) {
    for (const target of dbTargets) {
      const name = `[${target.name}] ${title}`
      it.live(name, () => limited(name, scenario(target)), TEST_TIMEOUT_MS)
    }
  }
})
