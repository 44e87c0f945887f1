// The Node executables the smoke tests run the built packages under: the repository's pinned
// Node (the one running vitest: `node_modules/.bin/node`, first on PATH in pnpm scripts) and the
// system Node (the first `node` on PATH outside any node_modules/.bin). The published SDK
// packages promise Node >= 20.19 (`engines`), so they must load and run on both.
import { spawnSync } from "node:child_process"
import { existsSync, realpathSync } from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"

/** A Node executable and the version it reports. */
export interface Runtime {
  readonly label: string
  readonly executable: string
  readonly version: string
}

const versionOf = (executable: string): string =>
  spawnSync(executable, ["-p", "process.version"], { encoding: "utf8" }).stdout.trim()

const systemExecutable = (): string | undefined => {
  for (const dir of (process.env["PATH"] ?? "").split(path.delimiter)) {
    if (dir === "" || dir.includes(`node_modules${path.sep}.bin`)) continue
    const candidate = path.join(dir, "node")
    if (existsSync(candidate)) return realpathSync(candidate)
  }
  return undefined
}

/** The pinned Node running the tests. */
export const pinned: Runtime = { label: "pinned node", executable: process.execPath, version: process.version }

/** The system Node, when there is one with a different version than {@link pinned}. */
export const system: Runtime | undefined = (() => {
  const executable = systemExecutable()
  if (executable === undefined) return undefined
  const version = versionOf(executable)
  return version === process.version ? undefined : { label: "system node", executable, version }
})()

/** Every runtime to smoke-test under. */
export const runtimes: ReadonlyArray<Runtime> = system === undefined ? [pinned] : [pinned, system]

/**
 * Arguments that go before the script for `runtime`: on a Node older than 22, preload
 * `sqlite12.cjs` (better-sqlite3 12.x, the version a Node 20 user installs; see there).
 */
export const preload = (runtime: Runtime): ReadonlyArray<string> =>
  Number(runtime.version.replace(/^v/, "").split(".")[0]) < 22
    ? ["-r", path.join(path.dirname(fileURLToPath(import.meta.url)), "sqlite12.cjs")]
    : []
