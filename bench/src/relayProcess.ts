/**
 * The relay under test as a child process, for `pnpm bench:relay`: the built
 * `relay serve` (`apps/relay/dist/main.js`), or the same server with the
 * pass-through session (`bench/dist/relayServe.js`), configured only through
 * its documented environment. Its output goes straight to a log file (no
 * pipe through the bench). Its open-files limit is raised with `prlimit`
 * when the machine has it (10,000 requests in flight hold 20,000 sockets).
 * CPU time and memory are read from `/proc/<pid>`.
 *
 * @since 0.1.0
 */
import { spawn, spawnSync } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { closeSync, openSync, readFileSync } from "node:fs"
import * as Net from "node:net"
import path from "node:path"
import { fileURLToPath } from "node:url"

const here = path.dirname(fileURLToPath(import.meta.url))
/** The built `relay` executable. */
export const relayMain = path.resolve(here, "../../apps/relay/dist/main.js")
/** The built pass-through entry (next to this file once built). */
export const passThroughMain = path.resolve(here, "relayServe.js")

/** Open files the relay child may hold. */
export const NOFILE = 65_536

/** Whether `prlimit` can raise limits here (it is util-linux; root may raise the hard limit). */
export const hasPrlimit = (): boolean =>
  spawnSync("prlimit", ["--nofile=" + NOFILE + ":" + NOFILE, "true"], { stdio: "ignore" }).status === 0

/** Raises this process's open-files limit (for the bench's own 10,000 client sockets); false when it cannot. */
export const raiseOwnNofile = (): boolean =>
  spawnSync("prlimit", ["--pid", String(process.pid), `--nofile=${NOFILE}:${NOFILE}`], { stdio: "ignore" }).status ===
    0

/** A free TCP port on 127.0.0.1. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resolve(port))
    })
  })

/** A running relay. */
export interface Relay {
  readonly pid: number
  readonly url: string
  /** User + system CPU time of the process so far, in milliseconds. */
  readonly cpuMillis: () => number
  /** `VmRSS` and `VmHWM` (peak) of the process, in bytes. */
  readonly memory: () => { readonly rss: number; readonly hwm: number }
  /** SIGTERM (a graceful shutdown), then SIGKILL after `graceMs`; resolves on exit. */
  readonly stop: (graceMs?: number) => Promise<void>
}

/** What to start. */
export interface StartOptions {
  readonly billing: "on" | "off"
  readonly databaseUrl: string
  readonly configPath: string
  readonly adminKey: string
  readonly logFile: string
  /** Extra node flags (e.g. `--cpu-prof`). */
  readonly nodeFlags?: ReadonlyArray<string>
  readonly cwd: string
}

const CLK_TCK = 100 // Linux's USER_HZ: /proc/<pid>/stat times are in 1/100 s

const cpuOf = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  // fields[0] is field 3 (state); utime is field 14, stime field 15
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK
}

const memoryOf = (pid: number) => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") }
}

/** Starts the relay and resolves once it answers HTTP (any status); throws if it exits first. */
export const start = async (options: StartOptions): Promise<Relay> => {
  const port = await freePort()
  const main = options.billing === "on" ? relayMain : passThroughMain
  const nodeArgs = [...(options.nodeFlags ?? []), main, ...(options.billing === "on" ? ["serve"] : [])]
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("RELAY_") && key !== "NODE_OPTIONS") env[key] = value
  }
  Object.assign(env, {
    RELAY_HOST: "127.0.0.1",
    RELAY_PORT: String(port),
    RELAY_DATABASE_URL: options.databaseUrl,
    RELAY_CONFIG: options.configPath,
    RELAY_ADMIN_KEY: options.adminKey
  })
  const log = openSync(options.logFile, "a")
  const [command, args] = hasPrlimit()
    ? ["prlimit", [`--nofile=${NOFILE}:${NOFILE}`, process.execPath, ...nodeArgs]] as const
    : [process.execPath, nodeArgs] as const
  const child: ChildProcess = spawn(command, [...args], { cwd: options.cwd, env, stdio: ["ignore", log, log] })
  closeSync(log)
  let exited = false
  let how = ""
  const exit = new Promise<void>((resolve) =>
    child.once("exit", (code, signal) => {
      exited = true
      how = `code ${code}, signal ${signal}`
      resolve()
    })
  )
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 60_000
  for (;;) {
    if (exited) throw new Error(`bench:relay: the relay exited during start-up (${how}); see ${options.logFile}`)
    try {
      await fetch(`${url}/v1/models`, { signal: AbortSignal.timeout(1_000) })
      break
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGKILL")
        throw new Error(`bench:relay: the relay did not listen within 60 s; see ${options.logFile}`)
      }
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  const pid = child.pid!
  return {
    pid,
    url,
    cpuMillis: () => cpuOf(pid),
    memory: () => memoryOf(pid),
    stop: async (graceMs = 15_000) => {
      if (exited) return
      child.kill("SIGTERM")
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
      await exit
      clearTimeout(timer)
    }
  }
}
