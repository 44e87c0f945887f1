// Smoke test of the built packages: each package listed as a `workspace:` devDependency of
// @relay-billing/smoke is loaded from its dist/ by a plain `node` child process (not vitest's
// module loader, whose interop hides CJS/ESM mistakes), once with `import` and once with
// `require`, resolved from this package's own node_modules, exactly as a consumer would.
// To cover a new package, add `"@relay-billing/<name>": "workspace:*"` to devDependencies.
// turbo's `test` task depends on `^build`, so those packages are built before this runs.
import { spawnSync } from "node:child_process"
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { runtimes } from "./runtimes.js"

interface PackageJson {
  readonly name?: string
  readonly private?: boolean
  readonly main?: string
  readonly module?: string
  readonly types?: string
  readonly exports?: unknown
  readonly devDependencies?: Readonly<Record<string, string>>
}

const smokeDir = fileURLToPath(new URL("..", import.meta.url))
const repoRoot = path.resolve(smokeDir, "..", "..")
const readPackageJson = (dir: string): PackageJson =>
  JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as PackageJson

const smokePackage = readPackageJson(smokeDir)
const targets = Object.entries(smokePackage.devDependencies ?? {})
  .filter(([, spec]) => spec.startsWith("workspace:"))
  .map(([name]) => name)
  // the private relay is a devDependency so that turbo builds it before the packaging test
  // (install.test.ts) starts it; it is no library to load
  .filter((name) => readPackageJson(path.join(smokeDir, "node_modules", ...name.split("/"))).private !== true)
  .sort()

/** Directory of `name` as linked into this package's node_modules (following the symlink). */
const packageDir = (name: string): string => {
  const link = path.join(smokeDir, "node_modules", ...name.split("/"))
  if (!existsSync(link)) {
    throw new Error(`${name} is not linked at ${link}: run \`pnpm install\``)
  }
  return realpathSync(link)
}

/** Every relative file named by main/module/types/exports, except ./package.json. */
const entryFiles = (pkg: PackageJson): ReadonlyArray<string> => {
  const files = new Set<string>()
  const walk = (value: unknown): void => {
    if (typeof value === "string") {
      const file = value.startsWith("./") ? value : `./${value}`
      if (file !== "./package.json" && !file.includes("*")) files.add(file)
    } else if (value !== null && typeof value === "object") {
      for (const v of Object.values(value)) walk(v)
    }
  }
  walk([pkg.main, pkg.module, pkg.types, pkg.exports])
  return [...files].sort()
}

const MARK = "__SMOKE_EXPORT_KEYS__"
const printKeys = `console.log(${
  JSON.stringify(MARK)
} + JSON.stringify(Object.keys(m).filter((k) => k !== "__esModule").sort()))`

/** Runs plain node in this package's directory, so the bare specifier resolves from its node_modules. */
const runNode = (executable: string, args: ReadonlyArray<string>) => {
  const env = { ...process.env }
  delete env["NODE_OPTIONS"] // no loader or flags leaking in from the test runner
  const result = spawnSync(executable, args, { cwd: smokeDir, env, encoding: "utf8", timeout: 60_000 })
  const line = result.stdout.split("\n").find((l) => l.startsWith(MARK))
  const keys = line === undefined ? undefined : (JSON.parse(line.slice(MARK.length)) as Array<string>)
  return {
    status: result.status,
    signal: result.signal,
    error: result.error,
    stdout: result.stdout,
    stderr: result.stderr,
    keys
  }
}

const describeRun = (label: string, r: ReturnType<typeof runNode>): string =>
  `${label}: exit=${String(r.status)} signal=${String(r.signal)}${r.error ? ` error=${r.error.message}` : ""}\n` +
  `--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`

describe("smoke package setup", () => {
  it("lists at least one workspace package to smoke-test", () => {
    expect(targets.length, "no `workspace:` devDependencies in tools/smoke/package.json").toBeGreaterThan(0)
  })

  it("covers every publishable package under packages/*", () => {
    const packagesDir = path.join(repoRoot, "packages")
    const publishable = readdirSync(packagesDir)
      .map((entry) => path.join(packagesDir, entry))
      .filter((dir) => existsSync(path.join(dir, "package.json")))
      .map(readPackageJson)
      .filter((pkg) => pkg.private !== true && typeof pkg.name === "string")
      .map((pkg) => pkg.name as string)
    const missing = publishable.filter((name) => !targets.includes(name))
    expect(missing, `add these as "workspace:*" devDependencies of @relay-billing/smoke`).toEqual([])
  })
})

/**
 * These tests start plain Node processes (spawnSync, up to 60 s each): 15 s each under
 * `.ci/run` on a busy 2-core machine, against the default 30 s. Only a hang reaches this.
 */
const SPAWN_TEST_TIMEOUT_MS = 150_000

describe.each(targets)("%s", { timeout: SPAWN_TEST_TIMEOUT_MS }, (name) => {
  it("has a built dist/ with every entry file of its package.json", () => {
    const dir = packageDir(name)
    const dist = path.join(dir, "dist")
    expect(existsSync(dist) && statSync(dist).isDirectory(), `${dist} is missing: the package was not built`).toBe(true)
    const files = entryFiles(readPackageJson(dir))
    expect(files.length, `${name}/package.json names no entry files`).toBeGreaterThan(0)
    const absent = files.filter((f) => !existsSync(path.join(dir, f)))
    expect(absent, `${name}: entry files missing from the build`).toEqual([])
  })

  describe.each(runtimes)("on the $label ($version)", (runtime) => {
    it("loads under plain node as ESM (import)", () => {
      const r = runNode(runtime.executable, [
        "--input-type=module",
        "-e",
        `import * as m from ${JSON.stringify(name)}; ${printKeys}`
      ])
      expect(r.status, describeRun(`node --input-type=module -e "import * as m from '${name}'"`, r)).toBe(0)
      expect(r.keys, describeRun("no export keys printed", r)).toBeDefined()
      console.log(`${name} (import, ${runtime.version}): ${r.keys?.length} exports: ${r.keys?.join(", ")}`)
      expect(r.keys?.length ?? 0).toBeGreaterThan(0)
    })

    it("loads under plain node as CJS (require)", () => {
      const r = runNode(runtime.executable, ["-e", `const m = require(${JSON.stringify(name)}); ${printKeys}`])
      expect(r.status, describeRun(`node -e "require('${name}')"`, r)).toBe(0)
      expect(r.keys, describeRun("no export keys printed", r)).toBeDefined()
      console.log(`${name} (require, ${runtime.version}): ${r.keys?.length} exports: ${r.keys?.join(", ")}`)
      expect(r.keys?.length ?? 0).toBeGreaterThan(0)
    })
  })
})
