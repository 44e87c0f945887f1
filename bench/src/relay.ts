/**
 * `pnpm bench:relay`: the reference relay under autocannon (64 connections),
 * billing on (`relay serve`, as users run it) and off (the same server with a
 * pass-through session, `relayServe.ts`), on SQLite (a file) and on PostgreSQL
 * (its own database, when `BILLING_PG_URL` is set), against the built-in
 * `demo` channel and a local mock upstream answering after 50 ms. Every
 * measured run is verified exactly: no error, no non-2xx, and the account's
 * `usedQuota` grew by (2xx answers × the price) with billing on, by 0 without;
 * the relay's audit is ok at the end. Then 10,000 requests in flight against
 * a held upstream: the relay's RSS before, at the peak and after, every
 * request answered and billed. Writes bench/results/relay-latest.json and
 * relay-latest.svg (with `--save`, also docs/bench/relay.svg and
 * docs/bench/relay.json). See bench/README.md.
 *
 * @since 0.1.0
 */
import autocannon from "autocannon"
import knex from "knex"
import { fork, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Http from "node:http"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { renderChart } from "./relayChart.js"
import type { Relay } from "./relayProcess.js"
import { hasPrlimit, NOFILE, raiseOwnNofile, start as startRelay } from "./relayProcess.js"
import * as MockUpstream from "./relayUpstream.js"

// ------------------------------------------------------------------ configuration

const env = process.env
const num = (name: string, fallback: number) =>
  env[name] !== undefined && env[name] !== "" ? Number(env[name]) : fallback
const list = (name: string, fallback: string) => (env[name] ?? fallback).split(",").filter((s) => s !== "")

const settings = {
  connections: num("BENCH_RELAY_CONNECTIONS", 64),
  seconds: num("BENCH_RELAY_SECONDS", 10),
  warmupSeconds: num("BENCH_RELAY_WARMUP_SECONDS", 3),
  upstreamDelayMs: num("BENCH_RELAY_UPSTREAM_MS", 50),
  stores: list("BENCH_RELAY_STORES", "sqlite,postgres"),
  upstreams: list("BENCH_RELAY_UPSTREAMS", "demo,mock,demo-stream"),
  billing: list("BENCH_RELAY_BILLING", "on,off") as Array<"on" | "off">,
  /** Requests in flight for the memory section (0 skips it). */
  inFlight: num("BENCH_RELAY_IN_FLIGHT", 10_000),
  /** Where `--cpu-prof` profiles of the billed relay go (unset: no profiling). */
  cpuProfDir: env["BENCH_RELAY_CPU_PROF"],
  save: process.argv.includes("--save"),
  memoryOnly: process.argv.includes("--memory-only")
}

const here = path.dirname(fileURLToPath(import.meta.url))
const repoRoot = path.resolve(here, "../..")
const resultsDir = path.join(repoRoot, "bench", "results")
const work = mkdtempSync(path.join(os.tmpdir(), "relay-bench-"))
const progress = (line: string) => process.stderr.write(`${line}\n`)

// ------------------------------------------------------------------ the relay's config and seed

const ADMIN_KEY = `bench-admin-${randomBytes(12).toString("hex")}`

const writeConfig = (upstream: string): string => {
  const file = path.join(work, "relay-config.json")
  writeFileSync(
    file,
    JSON.stringify(
      {
        models: {
          demo: { modelRatio: 1, completionRatio: 1 },
          mock: { modelRatio: 1, completionRatio: 1 },
          "mock-held": { modelRatio: 1, completionRatio: 1 }
        },
        channels: [
          { name: "demo", baseUrl: "demo://local/v1", models: ["demo"] },
          { name: "mock", baseUrl: `${upstream}/v1`, models: ["mock"] },
          { name: "held", baseUrl: `${upstream}/hold/v1`, models: ["mock-held"] }
        ],
        // the held requests of the memory section wait for minutes: no limit may cut them
        limits: { upstreamIdleSeconds: 900, clientIdleSeconds: 900, maxRequestSeconds: 900 }
      },
      null,
      2
    )
  )
  return file
}

const admin = async <A>(relay: Relay, method: string, route: string, body?: unknown): Promise<A> => {
  const response = await fetch(`${relay.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {})
  })
  const text = await response.text()
  if (!response.ok) throw new Error(`bench:relay: ${method} ${route} → ${response.status} ${text}`)
  return JSON.parse(text) as A
}

interface AccountView {
  readonly id: string
  readonly quota: number
  readonly usedQuota: number
  readonly requestCount: number
}

const seed = async (relay: Relay) => {
  const account = await admin<AccountView>(relay, "POST", "/admin/accounts", { name: "bench", quota: 1e13 })
  const token = await admin<{ key: string }>(relay, "POST", "/admin/tokens", {
    accountId: account.id,
    name: "bench",
    unlimited: true
  })
  return { accountId: account.id, key: token.key }
}

// ------------------------------------------------------------------ databases

interface Store {
  readonly name: string
  readonly url: string
  readonly drop: () => Promise<void>
}

const sqliteStore = (label: string): Store => {
  const dir = mkdtempSync(path.join(work, `${label}-`))
  return {
    name: "sqlite",
    url: `sqlite:${path.join(dir, "relay.db")}`,
    drop: async () => rmSync(dir, { recursive: true })
  }
}

const postgresStore = async (base: string, label: string): Promise<Store> => {
  const name = `relaybench_${process.pid}_${label.replace(/[^a-z0-9]/g, "_")}`
  const server = knex({ client: "pg", connection: base, pool: { min: 0, max: 1 } })
  await server.raw(`DROP DATABASE IF EXISTS ${name}`)
  await server.raw(`CREATE DATABASE ${name}`)
  await server.destroy()
  const url = new URL(base)
  url.pathname = `/${name}`
  return {
    name: "postgres",
    url: url.toString(),
    drop: async () => {
      const c = knex({ client: "pg", connection: base, pool: { min: 0, max: 1 } })
      await c.raw(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await c.destroy()
    }
  }
}

const openStore = (store: string, label: string): Promise<Store> => {
  if (store === "sqlite") return Promise.resolve(sqliteStore(label))
  const base = env["BILLING_PG_URL"]
  if (base === undefined) throw new Error("postgres needs BILLING_PG_URL")
  return postgresStore(base, label)
}

// ------------------------------------------------------------------ requests

interface Workload {
  readonly upstream: string
  readonly model: string
  readonly stream: boolean
}

const workloadOf = (name: string): Workload => {
  switch (name) {
    case "demo":
      return { upstream: "demo", model: "demo", stream: false }
    case "demo-stream":
      return { upstream: "demo", model: "demo", stream: true }
    case "mock":
      return { upstream: "mock", model: "mock", stream: false }
    case "mock-stream":
      return { upstream: "mock", model: "mock", stream: true }
    default:
      throw new Error(`unknown upstream row ${name}`)
  }
}

const bodyOf = (w: Workload, model = w.model) =>
  JSON.stringify({
    model,
    messages: [{ role: "user", content: "Say hello to the benchmark." }],
    ...(w.stream ? { stream: true, stream_options: { include_usage: true } } : {})
  })

/** The usage in a chat answer (JSON, or the SSE usage chunk). */
const usageOf = (text: string, stream: boolean): { prompt_tokens: number; completion_tokens: number } => {
  if (!stream) return (JSON.parse(text) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage
  for (const line of text.split("\n")) {
    if (!line.startsWith("data: {")) continue
    const event = JSON.parse(line.slice(6)) as { usage?: { prompt_tokens: number; completion_tokens: number } }
    if (event.usage) return event.usage
  }
  throw new Error(`no usage in the stream: ${text.slice(0, 400)}`)
}

/** The price of one answered request: one request, its usage × the ratios (1 and 1 in the bench's config). */
const calibrate = async (relay: Relay, key: string, w: Workload): Promise<number> => {
  const response = await fetch(`${relay.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: bodyOf(w)
  })
  const text = await response.text()
  if (response.status !== 200) throw new Error(`calibration: ${response.status} ${text}`)
  const usage = usageOf(text, w.stream)
  return usage.prompt_tokens + usage.completion_tokens
}

const cannon = (relay: Relay, key: string, w: Workload, options: { duration?: number; amount?: number }) =>
  autocannon({
    url: `${relay.url}/v1/chat/completions`,
    method: "POST",
    connections: settings.connections,
    pipelining: 1,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: bodyOf(w),
    timeout: 60,
    ...(options.amount !== undefined ? { amount: options.amount } : { duration: options.duration ?? 1 })
  })

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Waits until the account's `usedQuota` stops moving (the warm-up's cut requests are resolved). */
const quiesce = async (relay: Relay, accountId: string): Promise<AccountView> => {
  let last = await admin<AccountView>(relay, "GET", `/admin/accounts/${accountId}`)
  for (let i = 0; i < 50; i++) {
    await sleep(300)
    const now = await admin<AccountView>(relay, "GET", `/admin/accounts/${accountId}`)
    if (now.usedQuota === last.usedQuota && now.requestCount === last.requestCount) return now
    last = now
  }
  return last
}

// ------------------------------------------------------------------ one row

/** One measured configuration. */
export interface Row {
  readonly store: string
  readonly upstream: string
  readonly stream: boolean
  readonly billing: "on" | "off"
  readonly connections: number
  readonly requests: number
  readonly seconds: number
  readonly reqPerSec: number
  readonly p50Ms: number
  readonly p90Ms: number
  readonly p99Ms: number
  readonly maxMs: number
  readonly errors: number
  readonly timeouts: number
  readonly non2xx: number
  readonly ok2xx: number
  readonly cpuMsPerRequest: number
  readonly price: number
  readonly billed: number
  readonly expectedBilled: number
  readonly requestCountDelta: number
  readonly exact: boolean
}

const measure = async (
  relay: Relay,
  seeded: { accountId: string; key: string },
  store: string,
  billing: "on" | "off",
  rowName: string
): Promise<Row> => {
  const w = workloadOf(rowName)
  const price = await calibrate(relay, seeded.key, w)
  const warm = await cannon(relay, seeded.key, w, { duration: settings.warmupSeconds })
  const rate = warm.requests.total / Math.max(warm.duration, 0.001)
  const amount = Math.max(settings.connections * 4, Math.round(rate * settings.seconds))
  // The measured run bills an account and key of its own: a warm-up request cut by autocannon
  // at the end of its duration is still settled (or charged on disconnect) by the relay, possibly
  // seconds later on a slow store, and must not land in the measured account.
  const measured = await seed(relay)
  const before = await quiesce(relay, measured.accountId)
  const cpu0 = relay.cpuMillis()
  const result = await cannon(relay, measured.key, w, { amount })
  const cpu1 = relay.cpuMillis()
  const after = await quiesce(relay, measured.accountId)
  const ok2xx = result["2xx"]
  const billed = after.usedQuota - before.usedQuota
  const expectedBilled = billing === "on" ? ok2xx * price : 0
  const requestCountDelta = after.requestCount - before.requestCount
  const exact = result.errors === 0 && result.timeouts === 0 && result.non2xx === 0 && billed === expectedBilled &&
    requestCountDelta === (billing === "on" ? ok2xx : 0) && ok2xx === amount
  const row: Row = {
    store,
    upstream: w.upstream,
    stream: w.stream,
    billing,
    connections: settings.connections,
    requests: result.requests.total,
    seconds: result.duration,
    reqPerSec: result.requests.total / result.duration,
    p50Ms: result.latency.p50,
    p90Ms: result.latency.p90,
    p99Ms: result.latency.p99,
    maxMs: result.latency.max,
    errors: result.errors,
    timeouts: result.timeouts,
    non2xx: result.non2xx,
    ok2xx,
    cpuMsPerRequest: (cpu1 - cpu0) / Math.max(1, result.requests.total),
    price,
    billed,
    expectedBilled,
    requestCountDelta,
    exact
  }
  progress(
    `  ${store} ${rowName} billing ${billing}: ${
      row.reqPerSec.toFixed(0)
    } req/s, p50 ${row.p50Ms} ms, p99 ${row.p99Ms} ms,` +
      ` cpu ${row.cpuMsPerRequest.toFixed(2)} ms/req, ${ok2xx}/${amount} 2xx, billed ${billed}/${expectedBilled}` +
      (exact ? "" : "  ** NOT EXACT **")
  )
  return row
}

// ------------------------------------------------------------------ memory: N requests in flight

/** The memory section's figures. */
export interface Memory {
  readonly store: string
  readonly inFlight: number
  /** The in-flight count asked for (`BENCH_RELAY_IN_FLIGHT`); `inFlight` is less when the open-files limit caps it. */
  readonly requested: number
  readonly reachedInFlight: number
  readonly rssBeforeMiB: number
  /** RSS once every request was held upstream (all in flight at once). */
  readonly rssHeldMiB: number
  /** The highest RSS sampled (every 100 ms) from the ramp to the last answer (the release settles them all at once). */
  readonly rssPeakMiB: number
  readonly hwmMiB: number
  readonly rssAfterMiB: number
  readonly perRequestKiB: number
  readonly answered: number
  readonly failed: number
  readonly billed: number
  readonly expectedBilled: number
  readonly exact: boolean
  readonly auditOk: boolean
  /** Seconds until every request was in flight. */
  readonly rampSeconds: number
  readonly seconds: number
}

const MiB = 1024 * 1024

/** The mock upstream in its own process (see relayUpstreamMain.ts). */
const forkUpstream = async () => {
  const child = fork(path.join(here, "relayUpstreamMain.js"), [], { stdio: ["ignore", "inherit", "inherit", "ipc"] })
  let held = 0
  const origin = await new Promise<string>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the mock upstream exited (${code})`)))
    child.on("message", (message: { origin?: string; held?: number }) => {
      if (message.origin !== undefined) resolve(message.origin)
      if (message.held !== undefined) held = message.held
    })
  })
  return {
    origin,
    held: () => held,
    release: () => void child.send("release"),
    close: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve()
        child.once("exit", () => resolve())
        child.send("close")
      })
  }
}

/**
 * Requests one relay process can hold in flight against an upstream: each holds two sockets
 * (client and upstream); `RLIMIT_NOFILE` bounds them (hard limit: only a privileged process
 * may raise it).
 */
const inFlightCap = (): number => {
  const soft = Number(spawnSync("sh", ["-c", "ulimit -Hn"], { encoding: "utf8" }).stdout.trim())
  const limit = Number.isFinite(soft) && soft > 0 ? Math.max(soft, hasPrlimit() ? NOFILE : 0) : NOFILE
  return Math.floor((limit - 200) / 2)
}

const memory = async (storeName: string): Promise<Memory> => {
  const cap = inFlightCap()
  const n = Math.min(settings.inFlight, cap)
  if (n < settings.inFlight) {
    progress(
      `  ${settings.inFlight} in flight need ${
        2 * settings.inFlight
      } sockets in the relay; its open-files limit allows ${cap}` +
        " (a hard limit this unprivileged process cannot raise): measuring " + n
    )
  }
  raiseOwnNofile()
  const upstream = await forkUpstream()
  const store = await openStore(storeName, "memory")
  const relay = await startRelay({
    billing: "on",
    databaseUrl: store.url,
    configPath: writeConfig(upstream.origin),
    adminKey: ADMIN_KEY,
    logFile: path.join(resultsDir, `relay-memory-${storeName}.log`),
    cwd: work
  })
  try {
    const seeded = await seed(relay)
    // the same answer (and price) as `mock`, held until released
    const heldWorkload: Workload = { upstream: "mock", model: "mock-held", stream: false }
    const price = await calibrate(relay, seeded.key, workloadOf("mock"))
    // warm the code paths (JIT, pools) through the same route, answered at once
    const warm = await cannon(relay, seeded.key, workloadOf("mock"), { amount: 2_000 })
    if (warm.non2xx + warm.errors > 0) throw new Error("memory: warm-up requests failed")
    const start = await quiesce(relay, seeded.accountId)
    await sleep(1_000)
    const rssBefore = relay.memory().rss
    const started = Date.now()
    const agent = new Http.Agent({ keepAlive: false, maxSockets: Infinity })
    let peakRss = rssBefore
    const sampler = setInterval(() => {
      try {
        peakRss = Math.max(peakRss, relay.memory().rss)
      } catch {
        // the process is gone: the run fails below
      }
    }, 100)
    const answers: Array<Promise<{ status: number; body: string }>> = []
    // Ramp: at most 512 requests between "sent" and "held at the upstream", so the relay's
    // database queue never holds thousands of opens at once (all n end up in flight together).
    while (answers.length < n && Date.now() - started < 600_000) {
      if (answers.length - upstream.held() < 512) {
        const batch = Math.min(128, n - answers.length)
        for (let i = 0; i < batch; i++) answers.push(post(relay, seeded.key, bodyOf(heldWorkload), agent))
      }
      await sleep(5)
    }
    const deadline = Date.now() + 300_000
    while (upstream.held() < answers.length && Date.now() < deadline) await sleep(50)
    const reachedInFlight = upstream.held()
    const rampSeconds = (Date.now() - started) / 1000
    await sleep(1_000)
    const rssHeld = relay.memory().rss
    peakRss = Math.max(peakRss, rssHeld)
    progress(
      `  ${reachedInFlight} requests in flight after ${rampSeconds.toFixed(1)} s; relay RSS ${
        (peakRss / MiB).toFixed(0)
      } MiB`
    )
    upstream.release()
    const results = await Promise.all(answers)
    clearInterval(sampler)
    agent.destroy()
    const hwm = relay.memory().hwm
    const seconds = (Date.now() - started) / 1000
    const answered = results.filter((r) => r.status === 200).length
    const after = await quiesce(relay, seeded.accountId)
    await sleep(2_000)
    const rssAfter = relay.memory().rss
    const billed = after.usedQuota - start.usedQuota
    const expectedBilled = answered * price
    const audit = await admin<{ ok: boolean }>(relay, "GET", "/admin/audit")
    return {
      store: storeName,
      inFlight: n,
      requested: settings.inFlight,
      reachedInFlight,
      rssBeforeMiB: rssBefore / MiB,
      rssHeldMiB: rssHeld / MiB,
      rssPeakMiB: peakRss / MiB,
      hwmMiB: hwm / MiB,
      rssAfterMiB: rssAfter / MiB,
      perRequestKiB: (rssHeld - rssBefore) / 1024 / Math.max(1, reachedInFlight),
      answered,
      failed: results.length - answered,
      billed,
      expectedBilled,
      exact: answered === n && reachedInFlight === n && billed === expectedBilled &&
        after.requestCount - start.requestCount === n,
      auditOk: audit.ok,
      rampSeconds,
      seconds
    }
  } finally {
    await relay.stop()
    await upstream.close()
    await store.drop()
  }
}

const post = (relay: Relay, key: string, body: string, agent: Http.Agent) =>
  new Promise<{ status: number; body: string }>((resolve) => {
    const req = Http.request(`${relay.url}/v1/chat/completions`, {
      method: "POST",
      agent,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }
    }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }))
      res.on("error", (e) => resolve({ status: 0, body: String(e) }))
    })
    req.on("error", (e) => resolve({ status: 0, body: String(e) }))
    req.end(body)
  })

// ------------------------------------------------------------------ main

const table = (rows: ReadonlyArray<Row>): string => {
  const head =
    "| store | upstream | billing | req/s | p50 ms | p99 ms | CPU ms/req | errors + non-2xx | billed exactly |"
  const lines = [head, "|---|---|---|--:|--:|--:|--:|--:|---|"]
  for (const r of rows) {
    lines.push(
      `| ${r.store} | ${r.upstream}${r.stream ? " (stream)" : ""} | ${r.billing} | ${
        r.reqPerSec.toFixed(0)
      } | ${r.p50Ms} | ${r.p99Ms} | ${r.cpuMsPerRequest.toFixed(2)} | ${r.errors + r.timeouts + r.non2xx} | ${
        r.exact ? "yes" : "NO"
      } (${r.billed} = ${r.ok2xx} × ${r.billing === "on" ? r.price : 0}) |`
    )
  }
  return lines.join("\n")
}

/** Billing overhead per configuration: p50 on − p50 off, CPU per request on − off. */
export interface Overhead {
  readonly store: string
  readonly upstream: string
  readonly stream: boolean
  readonly p50OverheadMs: number
  readonly cpuOverheadMs: number
  readonly reqPerSecRatio: number
}

const overheads = (rows: ReadonlyArray<Row>): Array<Overhead> => {
  const out: Array<Overhead> = []
  for (const on of rows.filter((r) => r.billing === "on")) {
    const off = rows.find((r) =>
      r.billing === "off" && r.store === on.store && r.upstream === on.upstream && r.stream === on.stream
    )
    if (off === undefined) continue
    out.push({
      store: on.store,
      upstream: on.upstream,
      stream: on.stream,
      p50OverheadMs: on.p50Ms - off.p50Ms,
      cpuOverheadMs: on.cpuMsPerRequest - off.cpuMsPerRequest,
      reqPerSecRatio: on.reqPerSec / off.reqPerSec
    })
  }
  return out
}

const main = async () => {
  mkdirSync(resultsDir, { recursive: true })
  const loadBefore = os.loadavg()
  const rows: Array<Row> = []
  let auditOk = true
  const stores = settings.stores.filter((s) => s !== "postgres" || env["BILLING_PG_URL"] !== undefined)
  if (!settings.memoryOnly) {
    const upstream = await MockUpstream.start({ delayMs: settings.upstreamDelayMs })
    try {
      for (const storeName of stores) {
        for (const billing of settings.billing) {
          const store = await openStore(storeName, `run_${billing}`)
          const profile = settings.cpuProfDir !== undefined
            ? [
              "--cpu-prof",
              `--cpu-prof-dir=${path.resolve(settings.cpuProfDir)}`,
              `--cpu-prof-name=relay-${storeName}-${billing}.cpuprofile`
            ]
            : []
          progress(`relay ${storeName}, billing ${billing}`)
          const relay = await startRelay({
            billing,
            databaseUrl: store.url,
            configPath: writeConfig(upstream.origin),
            adminKey: ADMIN_KEY,
            logFile: path.join(resultsDir, `relay-${storeName}-${billing}.log`),
            nodeFlags: profile,
            cwd: work
          })
          try {
            const seeded = await seed(relay)
            for (const rowName of settings.upstreams) {
              rows.push(await measure(relay, seeded, storeName, billing, rowName))
            }
            const audit = await admin<{ ok: boolean; problems: Array<unknown> }>(relay, "GET", "/admin/audit")
            if (!audit.ok) {
              auditOk = false
              progress(`  audit NOT ok: ${JSON.stringify(audit.problems).slice(0, 500)}`)
            }
          } finally {
            await relay.stop()
            await store.drop()
          }
        }
      }
    } finally {
      await upstream.close()
    }
  }
  const memories: Array<Memory> = []
  if (settings.inFlight > 0) {
    for (const storeName of list("BENCH_RELAY_MEMORY_STORES", "sqlite")) {
      if (storeName === "postgres" && env["BILLING_PG_URL"] === undefined) continue
      progress(`memory: ${settings.inFlight} requests in flight, ${storeName}`)
      memories.push(await memory(storeName))
    }
  }
  const loadAfter = os.loadavg()
  const over = overheads(rows)
  const report = {
    when: new Date().toISOString(),
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, prlimit: hasPrlimit() },
    loadAverage: { before: loadBefore, after: loadAfter },
    settings,
    rows,
    overhead: over,
    memory: memories,
    auditOk
  }
  const json = JSON.stringify(report, null, 2)
  writeFileSync(path.join(resultsDir, "relay-latest.json"), json)
  const svg = renderChart(report)
  writeFileSync(path.join(resultsDir, "relay-latest.svg"), svg)
  if (settings.save) {
    const docs = path.join(repoRoot, "docs", "bench")
    mkdirSync(docs, { recursive: true })
    writeFileSync(path.join(docs, "relay.svg"), svg)
    writeFileSync(path.join(docs, "relay.json"), json)
  }
  const out: Array<string> = []
  out.push(`# relay bench (${settings.connections} connections, ~${settings.seconds} s per row)`)
  out.push(
    `load average before ${loadBefore.map((l) => l.toFixed(2)).join(" ")}, after ${
      loadAfter.map((l) => l.toFixed(2)).join(" ")
    }`
  )
  out.push("")
  out.push(table(rows))
  out.push("")
  out.push("| store | upstream | p50 overhead ms (on − off) | CPU ms/req overhead | req/s on ÷ off |")
  out.push("|---|---|--:|--:|--:|")
  for (const o of over) {
    out.push(
      `| ${o.store} | ${o.upstream}${o.stream ? " (stream)" : ""} | ${o.p50OverheadMs.toFixed(1)} | ${
        o.cpuOverheadMs.toFixed(2)
      } | ${o.reqPerSecRatio.toFixed(2)} |`
    )
  }
  for (const m of memories) {
    out.push("")
    out.push(
      `memory (${m.store}): ${m.reachedInFlight}/${m.inFlight} in flight; relay RSS before ${
        m.rssBeforeMiB.toFixed(0)
      } MiB,` +
        ` peak ${m.rssPeakMiB.toFixed(0)} MiB (VmHWM ${m.hwmMiB.toFixed(0)}), after ${m.rssAfterMiB.toFixed(0)} MiB;` +
        ` ${
          m.perRequestKiB.toFixed(1)
        } KiB per request in flight (all in flight − before); ${m.answered} answered, ${m.failed} failed;` +
        ` billed ${m.billed} = ${m.expectedBilled} expected: ${m.exact ? "exact" : "NOT EXACT"}; audit ${
          m.auditOk ? "ok" : "NOT ok"
        }`
    )
  }
  out.push("")
  out.push(`audit after every run: ${auditOk ? "ok" : "NOT ok"}`)
  process.stdout.write(`${out.join("\n")}\n`)
  rmSync(work, { recursive: true, force: true })
  const failed = !auditOk || rows.some((r) => !r.exact) || memories.some((m) => !m.exact || !m.auditOk)
  process.exitCode = failed ? 1 : 0
}

/** `--render FILE`: draws the chart of a saved report again (next to it, `.svg`). */
const render = (file: string) => {
  const report = JSON.parse(readFileSync(file, "utf8")) as Parameters<typeof renderChart>[0]
  writeFileSync(file.replace(/\.json$/, "") + ".svg", renderChart(report))
}

const renderArg = process.argv.indexOf("--render")
;(renderArg >= 0 ? Promise.resolve(render(process.argv[renderArg + 1]!)) : main()).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
