/**
 * Spawning `test/fixtures/worker.mjs` processes (each its own knex pool) on one
 * isolated database, released together through a stdin barrier.
 */
import { afterAll } from "@effect/vitest"
import { Effect } from "effect"
import type { Scope } from "effect"
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { fileURLToPath } from "node:url"

const packageDir = fileURLToPath(new URL("..", import.meta.url))
const workerPath = fileURLToPath(new URL("./fixtures/worker.mjs", import.meta.url))

export interface WorkerLine {
  readonly pid: number
  readonly cmd?: string
  readonly ready?: boolean
  readonly error?: { readonly tag: string; readonly message: string }
  readonly [key: string]: unknown
}

export interface Worker {
  readonly name: string
  readonly child: ChildProcess
  readonly stderr: () => string
  readonly line: (predicate: (line: WorkerLine) => boolean, timeoutMs?: number) => Promise<WorkerLine>
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
}

const running = new Set<ChildProcess>()
afterAll(() => {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
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
  child.stdin!.on("error", () => undefined)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("close", (code, signal) => {
      ended = true
      running.delete(child)
      notify()
      resolve({ code, signal })
    })
  })
  const line = (predicate: (line: WorkerLine) => boolean, timeoutMs = 20_000) =>
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
  return { name, child, stderr: () => stderr, line, exited }
}

/** Starts a worker, killed with the scope if it still runs then. */
export const worker = (name: string, config: Record<string, unknown>): Effect.Effect<Worker, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => startWorker(name, config)),
    (w) =>
      Effect.sync(() => {
        if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL")
      })
  )

/** Waits until every worker is ready, then releases them all at once. */
export const releaseTogether = (workers: ReadonlyArray<Worker>) =>
  Effect.promise(async () => {
    await Promise.all(workers.map((w) => w.line((l) => l.ready === true)))
    for (const w of workers) w.child.stdin!.write("go\n")
  })

/** The worker's result line; fails unless it exited 0 without an error. */
export const result = (w: Worker, timeoutMs = 30_000) =>
  Effect.promise(async () => {
    const line = await w.line((l) => l.ready !== true && l.cmd !== undefined, timeoutMs)
    const exit = await w.exited
    if (line.error !== undefined || exit.code !== 0) {
      throw new Error(
        `worker ${w.name} failed (exit ${exit.code}): ${JSON.stringify(line.error ?? line)}\n${w.stderr()}`
      )
    }
    return line
  })
