/**
 * The built relay as a child process (`node <relay>/dist/main.js serve`),
 * configured only through its documented interface — the environment
 * (`RELAY_HOST`, `RELAY_PORT`, `RELAY_DATABASE_URL`, `RELAY_CONFIG`,
 * `RELAY_ADMIN_KEY`) and the config file — so the probe does not depend on
 * how the server is built inside.
 *
 * @since 0.1.0
 */
import { spawn, spawnSync } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { createWriteStream, existsSync, readdirSync, statSync } from "node:fs"
import * as Net from "node:net"
import path from "node:path"
import { fileURLToPath } from "node:url"

/** The relay package's directory (`apps/relay`). */
export const relayDir = fileURLToPath(new URL("..", import.meta.url))
/** The built entry point. */
export const mainJs = path.join(relayDir, "dist", "main.js")

const newestMtime = (dir: string): number => {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(full) : statSync(full).mtimeMs)
  }
  return newest
}

/**
 * Builds the relay (`pnpm run build` in its directory) when `dist/main.js` is
 * missing or older than a file of `src/`, so the probe never runs stale code.
 */
export const ensureBuilt = (): void => {
  if (existsSync(mainJs) && statSync(mainJs).mtimeMs >= newestMtime(path.join(relayDir, "src"))) return
  const result = spawnSync("pnpm", ["run", "build"], { cwd: relayDir, stdio: "pipe", encoding: "utf8" })
  if (result.status !== 0) {
    throw new Error(`soak: building the relay failed (exit ${result.status}):\n${result.stdout}\n${result.stderr}`)
  }
}

/** A free TCP port on 127.0.0.1 (kept for every restart of the relay). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resolve(port))
    })
  })

/** How a relay process ended. */
export interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** A running relay process. */
export interface RelayProcess {
  readonly pid: number
  readonly url: string
  readonly exited: Promise<Exit>
  /** Whether the process has exited. */
  readonly hasExited: () => boolean
  /** Sends a signal. */
  readonly signal: (signal: NodeJS.Signals) => void
}

/** What a relay process is started with. */
export interface StartOptions {
  readonly port: number
  readonly env: Readonly<Record<string, string>>
  /** Working directory (the relay's `./data` would go there). */
  readonly cwd: string
  /** File the child's stdout and stderr are appended to. */
  readonly logFile: string
  /** Bound on start-up (listening), in milliseconds. */
  readonly readyTimeoutMs: number
}

const childEnv = (env: Readonly<Record<string, string>>): NodeJS.ProcessEnv => {
  // Only PATH/HOME etc. from the parent, never its RELAY_* settings.
  const base: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("RELAY_") && !key.startsWith("VITEST") && key !== "NODE_OPTIONS") base[key] = value
  }
  return { ...base, ...env }
}

/** The relay exited during start-up; `output` is what it printed. */
export class StartError extends Error {
  constructor(message: string, readonly output: string) {
    super(message)
  }
}

/**
 * Starts `relay serve` and resolves once it answers HTTP on `port` (any
 * status); fails when the process exits first or the bound passes.
 */
export const start = async (options: StartOptions): Promise<RelayProcess> => {
  const log = createWriteStream(options.logFile, { flags: "a" })
  const child: ChildProcess = spawn(process.execPath, [mainJs, "serve"], {
    cwd: options.cwd,
    env: childEnv({ ...options.env, RELAY_PORT: String(options.port) }),
    stdio: ["ignore", "pipe", "pipe"]
  })
  child.stdout!.pipe(log, { end: false })
  child.stderr!.pipe(log, { end: false })
  let startupOutput = ""
  const keepOutput = (chunk: Buffer) => {
    if (startupOutput.length < 65_536) startupOutput += chunk.toString("utf8")
  }
  child.stdout!.on("data", keepOutput)
  child.stderr!.on("data", keepOutput)
  let done = false
  const exited = new Promise<Exit>((resolve) => {
    child.once("exit", (code, signal) => {
      done = true
      resolve({ code, signal })
    })
  })
  const closed = new Promise<void>((resolve) => child.once("close", () => resolve()))
  void closed.then(() => log.end())
  const url = `http://127.0.0.1:${options.port}`
  const deadline = Date.now() + options.readyTimeoutMs
  for (;;) {
    if (done) {
      const exit = await exited
      await closed // every byte of its output has arrived
      throw new StartError(
        `soak: the relay exited during start-up (code ${exit.code}, signal ${exit.signal}): ${
          startupOutput.slice(0, 2000)
        }`,
        startupOutput
      )
    }
    try {
      await fetch(`${url}/v1/models`, { signal: AbortSignal.timeout(1_000) })
      break
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGKILL")
        throw new Error(
          `soak: the relay did not listen on ${url} within ${options.readyTimeoutMs} ms; see ${options.logFile}`
        )
      }
      await new Promise((resolve) => setTimeout(resolve, 100)) // a poll interval while the child starts
    }
  }
  child.stdout!.off("data", keepOutput)
  child.stderr!.off("data", keepOutput)
  return {
    pid: child.pid!,
    url,
    exited,
    hasExited: () => done,
    signal: (signal) => {
      if (!done) child.kill(signal)
    }
  }
}

/**
 * Sends SIGTERM and waits for the exit, at most `boundMs`; past the bound the
 * process is killed (SIGKILL) so the probe always ends. Returns the time from
 * the signal to the exit, or `undefined` when it had to be killed.
 */
export const terminate = async (
  relay: RelayProcess,
  boundMs: number
): Promise<{ readonly exitMs: number | undefined; readonly exit: Exit }> => {
  const sent = performance.now()
  relay.signal("SIGTERM")
  let timer: NodeJS.Timeout | undefined
  const bound = new Promise<"bound">((resolve) => (timer = setTimeout(() => resolve("bound"), boundMs)))
  const first = await Promise.race([relay.exited.then(() => "exited" as const), bound])
  clearTimeout(timer)
  if (first === "exited") return { exitMs: performance.now() - sent, exit: await relay.exited }
  relay.signal("SIGKILL")
  return { exitMs: undefined, exit: await relay.exited }
}
