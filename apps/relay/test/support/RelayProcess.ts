/**
 * The real `relay` executable for tests that need a separate process (signals,
 * exit codes): `buildRelay` bundles `src/main.ts` like `pnpm build` does, into a
 * private directory under `node_modules/.cache` (so `effect` and the workspace
 * packages resolve and `dist/` is left alone); `spawnRelay` runs it on the Node
 * that runs the tests and collects its output.
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { mkdir, mkdtemp, rm } from "node:fs/promises"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { build } from "tsup"

const appDir = path.resolve(fileURLToPath(new URL(".", import.meta.url)), "..", "..")

/** A bundled `main.js` (and `index.js`, the modules) in `dir`; `remove` deletes it. */
export interface BuiltRelay {
  readonly dir: string
  readonly bin: string
  readonly remove: () => Promise<void>
}

/** Bundles `src/main.ts` and `src/index.ts` into a fresh directory. */
export const buildRelay = async (): Promise<BuiltRelay> => {
  const cache = path.join(appDir, "node_modules", ".cache")
  await mkdir(cache, { recursive: true })
  const dir = await mkdtemp(path.join(cache, "relay-bin-test-"))
  await build({
    entry: { main: path.join(appDir, "src/main.ts"), index: path.join(appDir, "src/index.ts") },
    outDir: dir,
    format: ["esm"],
    target: "node24",
    dts: false,
    sourcemap: false,
    clean: false,
    silent: true,
    config: false
  })
  return { dir, bin: path.join(dir, "main.js"), remove: () => rm(dir, { recursive: true, force: true }) }
}

/** A running relay process. */
export interface RelayProcess {
  readonly child: ChildProcess
  /** Everything written to stdout and stderr so far. */
  readonly output: () => string
  /** Resolves with the first match of `pattern` in the output (rejects if the process exits first). */
  readonly waitFor: (pattern: RegExp) => Promise<RegExpMatchArray>
  /** Resolves with the exit code (or the signal's name) once the process has exited. */
  readonly exited: Promise<number | string>
}

/** Starts `node BIN ...args` with `env` (plus `PATH`) in `cwd`. */
export const spawnRelay = (
  bin: string,
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  cwd: string
): RelayProcess => {
  const child = spawn(process.execPath, [bin, ...args], {
    cwd,
    env: { PATH: process.env["PATH"] ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  const listeners = new Set<() => void>()
  const onData = (chunk: Buffer) => {
    output += chunk.toString("utf8")
    for (const listener of listeners) listener()
  }
  child.stdout!.on("data", onData)
  child.stderr!.on("data", onData)
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => {
      for (const listener of listeners) listener()
      resolve(code ?? signal ?? -1)
    })
  })
  const waitFor = (pattern: RegExp) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        const match = output.match(pattern)
        if (match !== null) {
          listeners.delete(check)
          resolve(match)
        } else if (child.exitCode !== null || child.signalCode !== null) {
          listeners.delete(check)
          reject(new Error(`relay exited before printing ${pattern}:\n${output}`))
        }
      }
      listeners.add(check)
      check()
    })
  return { child, output: () => output, waitFor, exited }
}
