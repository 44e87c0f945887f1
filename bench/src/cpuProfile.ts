/**
 * Where the SDK's CPU goes: `node --cpu-prof` on a `--loop sdk <db> <s> 16
 * random` child of this bench (after a warm-up slice), its `.cpuprofile` cut to
 * the measured window the child reports, and each sample's time charged by the
 * `callFrame.url` of the function it landed in (self time):
 *
 * - `knex` (node_modules/knex: builder, runner, transactions), `effect`,
 *   the driver (`better-sqlite3 + SQLite`, `pg` with pg-protocol / pg-pool /
 *   pg-types, `mysql2`), other npm packages by name;
 * - the SDK's packages (`@relay-billing/core`, `/knex`, `/wallet`), the bench's
 *   own loop (`bench`);
 * - `node internals` (`node:` urls), `GC`, `idle`, and `(program)` (native code
 *   V8 cannot attribute to a JS function).
 *
 * Native functions (empty url: V8 builtins, C++ bindings) are charged to the
 * category of the nearest JS caller. better-sqlite3's statement calls are
 * synchronous C++ (SQLite itself) and V8 mostly charges them to the JS line
 * that calls them: the ticks of a line that calls `statement.all / run / get /
 * iterate`, `prepare` or `exec` (in the SDK's executor and knex's better-sqlite3
 * dialect) are charged to `better-sqlite3 + SQLite` (by the node's per-line
 * ticks, `positionTicks`, in proportion to its windowed self time).
 */
import { spawn } from "node:child_process"
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
}

interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: ReadonlyArray<number>
  readonly positionTicks?: ReadonlyArray<{ readonly line: number; readonly ticks: number }>
}

interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly endTime: number
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

/** What the `--loop` child reported. */
interface LoopResult {
  readonly sessions: number
  readonly millis: number
  readonly cpuMillis: number
  readonly failed: number
  readonly startMicros: number
  readonly endMicros: number
}

/** One category's self time in the measured window. */
export interface CpuShare {
  readonly category: string
  readonly millis: number
  /** Share of all samples in the window (idle included). */
  readonly share: number
  /** Share of the samples that were not idle (NaN for idle itself). */
  readonly busyShare: number
  /** Sampled milliseconds per settled session (wall time: includes time the thread was descheduled). */
  readonly millisPerSession: number
  /** The child's CPU per session × this category's share of the busy samples (NaN for idle). */
  readonly cpuMillisPerSession: number
}

/** One function's self time (the heaviest of the window). */
export interface CpuFunction {
  readonly category: string
  readonly name: string
  readonly location: string
  readonly millis: number
  readonly share: number
}

export interface CpuProfileResult {
  readonly db: string
  readonly side: "sdk"
  readonly workers: number
  readonly mode: string
  readonly seconds: number
  readonly sessions: number
  readonly sessionsPerSecond: number
  /** The child's own CPU (user + system) per session over the window. */
  readonly cpuMillisPerSession: number
  /** Samples' time inside the window, ms (≈ the window's wall time). */
  readonly sampledMillis: number
  /** Of which not idle (the main thread running JS, GC or native code), ms. */
  readonly busyMillis: number
  /** Whether the window could be cut (else: the whole profile, setup included). */
  readonly windowed: boolean
  readonly shares: ReadonlyArray<CpuShare>
  readonly top: ReadonlyArray<CpuFunction>
  /** The .cpuprofile kept for DevTools / speedscope (bench/results/, git-ignored). */
  readonly file: string
}

const SQLITE = "better-sqlite3 + SQLite"

/** The npm package a url belongs to (the last `node_modules/` segment), if any. */
const packageOf = (url: string): string | undefined => {
  const i = url.lastIndexOf("/node_modules/")
  if (i < 0) return undefined
  const rest = url.slice(i + "/node_modules/".length).split("/")
  return rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]
}

/** The category of a function by its url ("" = native: decided by the caller). */
const categoryOfUrl = (url: string): string => {
  if (url === "") return ""
  if (url.startsWith("node:")) return "node internals"
  const pkg = packageOf(url)
  if (pkg !== undefined) {
    if (pkg === "knex") return "knex"
    if (pkg === "effect" || pkg.startsWith("@effect/")) return "effect"
    if (pkg === "better-sqlite3") return SQLITE
    if (pkg === "pg" || pkg.startsWith("pg-") || pkg === "pgpass") return "pg"
    if (pkg === "mysql2") return "mysql2"
    return `npm: ${pkg}`
  }
  const m = /\/packages\/([a-z0-9-]+)\//.exec(url)
  if (m) return `@relay-billing/${m[1]}`
  if (url.includes("/bench/")) return "bench"
  if (url.includes("/apps/")) return "apps"
  return "other"
}

/** A JS line that calls into better-sqlite3's C++ (SQLite work V8 charges to the caller's line). */
const SQLITE_CALL = /\b(?:statement|stmt)\.(?:all|run|get|iterate)\(|\.prepare\(|\.exec\(/

/** Files whose driver-call lines are recognised (the SDK's executor, knex's better-sqlite3 dialect). */
const sqliteCallerFile = (url: string) =>
  /\/packages\/knex\/dist\//.test(url) || /\/knex\/lib\/dialects\/better-sqlite3\//.test(url)

const special: Record<string, string> = {
  "(garbage collector)": "GC",
  "(idle)": "idle",
  "(program)": "(program)",
  "(root)": "(program)"
}

/** Self time per category and per function in [from, to] (µs, the profile's clock). */
export const analyse = (
  profile: Profile,
  window: { readonly from: number; readonly to: number } | undefined,
  sessions: number
) => {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, ProfileNode>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n)
  // Self time per node inside the window: a sample lasts until the next one.
  const self = new Map<number, number>()
  let t = profile.startTime
  let total = 0
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0
    const duration = profile.timeDeltas[i + 1] ?? 0
    if (window && (t < window.from || t > window.to)) continue
    const id = profile.samples[i]!
    self.set(id, (self.get(id) ?? 0) + duration)
    total += duration
  }
  const fileLines = new Map<string, Array<string>>()
  const lineOf = (url: string, line: number): string => {
    let lines = fileLines.get(url)
    if (lines === undefined) {
      try {
        lines = readFileSync(fileURLToPath(url), "utf8").split("\n")
      } catch {
        lines = []
      }
      fileLines.set(url, lines)
    }
    return lines[line - 1] ?? ""
  }
  const categoryOf = (node: ProfileNode): string => {
    const name = node.callFrame.functionName
    if (node.callFrame.url === "" && special[name] !== undefined) return special[name]
    for (let n: ProfileNode | undefined = node; n; n = parent.get(n.id)) {
      const c = categoryOfUrl(n.callFrame.url)
      if (c !== "") return c
      if (special[n.callFrame.functionName] !== undefined) break
    }
    return "native (no JS caller)"
  }
  const categories = new Map<string, number>()
  const functions = new Map<string, { category: string; name: string; location: string; micros: number }>()
  const add = (category: string, node: ProfileNode, micros: number) => {
    categories.set(category, (categories.get(category) ?? 0) + micros)
    const f = node.callFrame
    const location = f.url === ""
      ? "(native)"
      : `${
        f.url.includes("/node_modules/")
          ? f.url.slice(f.url.lastIndexOf("/node_modules/") + "/node_modules/".length)
          : f.url.replace(/^.*\/(packages|bench|apps)\//, "$1/")
      }:${f.lineNumber + 1}`
    const key = `${category}|${f.functionName}|${location}`
    const entry = functions.get(key) ?? { category, name: f.functionName || "(anonymous)", location, micros: 0 }
    entry.micros += micros
    functions.set(key, entry)
  }
  for (const [id, micros] of self) {
    const node = byId.get(id)!
    const category = categoryOf(node)
    const ticks = node.positionTicks
    if (ticks && ticks.length > 0 && sqliteCallerFile(node.callFrame.url)) {
      const all = ticks.reduce((a, p) => a + p.ticks, 0)
      const driver = ticks.filter((p) => SQLITE_CALL.test(lineOf(node.callFrame.url, p.line)))
        .reduce((a, p) => a + p.ticks, 0)
      if (driver > 0 && all > 0) {
        add(SQLITE, node, (micros * driver) / all)
        add(category, node, (micros * (all - driver)) / all)
        continue
      }
    }
    add(category, node, micros)
  }
  const round = (x: number, d = 1000) => Math.round(x * d) / d
  const busy = total - (categories.get("idle") ?? 0)
  const shares: Array<Omit<CpuShare, "cpuMillisPerSession">> = [...categories].map(([category, micros]) => ({
    category,
    millis: round(micros / 1000, 10),
    share: total > 0 ? round(micros / total) : 0,
    busyShare: category === "idle" || busy <= 0 ? Number.NaN : round(micros / busy),
    millisPerSession: sessions > 0 ? round(micros / 1000 / sessions) : Number.NaN
  })).sort((a, b) => b.millis - a.millis)
  const top: Array<CpuFunction> = [...functions.values()].sort((a, b) => b.micros - a.micros).slice(0, 15).map((
    f
  ) => ({
    category: f.category,
    name: f.name,
    location: f.location,
    millis: round(f.micros / 1000, 10),
    share: total > 0 ? round(f.micros / total) : 0
  }))
  return { shares, top, sampledMillis: round(total / 1000, 10), busyMillis: round(busy / 1000, 10) }
}

/**
 * Runs `node --cpu-prof <main> --loop sdk <dialect> <seconds> <workers> <mode>`
 * (500 ms warm-up first), keeps the profile as `results/cpu-sdk-<db>.cpuprofile`
 * and returns the breakdown of the measured window.
 */
export const profileSdk = async (
  main: string,
  dialect: string,
  db: string,
  seconds: number,
  workers: number,
  mode: string,
  resultsDir: string
): Promise<CpuProfileResult> => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "bench-cpuprof-"))
  try {
    const stdout = await new Promise<string>((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [
          "--cpu-prof",
          "--cpu-prof-dir",
          dir,
          main,
          "--loop",
          "sdk",
          dialect,
          String(seconds),
          String(workers),
          mode
        ],
        { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, BENCH_LOOP_WARMUP_MS: "500" } }
      )
      let out = ""
      child.stdout.on("data", (d) => (out += String(d)))
      child.on("error", reject)
      child.on(
        "exit",
        (code) => code === 0 ? resolve(out) : reject(new Error(`CPU-profile child (${dialect}) exited ${code}: ${out}`))
      )
    })
    const line = stdout.split("\n").find((l) => l.startsWith("LOOP-RESULT "))
    if (!line) throw new Error(`CPU-profile child (${dialect}) reported no LOOP-RESULT: ${stdout}`)
    const loop = JSON.parse(line.slice("LOOP-RESULT ".length)) as LoopResult
    const file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile"))
    if (!file) throw new Error(`CPU-profile child (${dialect}) wrote no .cpuprofile`)
    const profile = JSON.parse(readFileSync(path.join(dir, file), "utf8")) as Profile
    // The child's window and the profile share the monotonic clock; if they did not overlap, use the whole profile.
    const windowed = loop.startMicros >= profile.startTime && loop.endMicros <= profile.endTime
    const analysis = analyse(
      profile,
      windowed ? { from: loop.startMicros, to: loop.endMicros } : undefined,
      loop.sessions
    )
    const kept = path.join(resultsDir, `cpu-sdk-${db}.cpuprofile`)
    copyFileSync(path.join(dir, file), kept)
    return {
      db,
      side: "sdk",
      workers,
      mode,
      seconds,
      sessions: loop.sessions,
      sessionsPerSecond: Math.round(loop.sessions / (loop.millis / 1000)),
      cpuMillisPerSession: Math.round((loop.cpuMillis / Math.max(1, loop.sessions)) * 1000) / 1000,
      sampledMillis: analysis.sampledMillis,
      busyMillis: analysis.busyMillis,
      windowed,
      shares: analysis.shares.map((x) => ({
        ...x,
        cpuMillisPerSession: Number.isFinite(x.busyShare)
          ? Math.round(x.busyShare * (loop.cpuMillis / Math.max(1, loop.sessions)) * 1000) / 1000
          : Number.NaN
      })),
      top: analysis.top,
      file: kept
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
