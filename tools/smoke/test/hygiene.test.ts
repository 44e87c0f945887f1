// Repository-wide packaging hygiene that needs no tarball (issue 10 #8):
// - private workspace packages are never packed: each has the `prepack` guard, `pnpm pack`
//   fails in one, and `pnpm pack:public` selects exactly the public packages;
// - errors are matched by `_tag`, never by `instanceof` of a core error class (a CommonJS and
//   an ESM copy of a class, or two installed copies of core, are different classes);
// - every runtime dependency of a public package is one its sources import (optional peers,
//   the database drivers knex loads by name, excepted);
// - no workspace package imports what it does not declare (a phantom dependency resolves from
//   the root's node_modules here and nowhere else).
import { spawnSync } from "node:child_process"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

interface Manifest {
  readonly name: string
  readonly private?: boolean
  readonly scripts?: Readonly<Record<string, string>>
  readonly dependencies?: Readonly<Record<string, string>>
  readonly devDependencies?: Readonly<Record<string, string>>
  readonly peerDependencies?: Readonly<Record<string, string>>
  readonly peerDependenciesMeta?: Readonly<Record<string, { readonly optional?: boolean }>>
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..")
const read = (dir: string): Manifest => JSON.parse(readFileSync(path.join(root, dir, "package.json"), "utf8")) as Manifest

/** Workspace package folders (relative to the root), from pnpm-workspace.yaml's globs. */
const workspaceDirs = (): ReadonlyArray<string> => {
  const yaml = readFileSync(path.join(root, "pnpm-workspace.yaml"), "utf8")
  const globs = [...yaml.matchAll(/^\s+-\s+(\S+)\s*$/gm)].map((m) => m[1]!)
  return globs
    .flatMap((glob) =>
      glob.endsWith("/*")
        ? readdirSync(path.join(root, glob.slice(0, -2))).map((d) => `${glob.slice(0, -2)}/${d}`)
        : [glob]
    )
    .filter((dir) => existsSync(path.join(root, dir, "package.json")))
    .sort()
}

/** Every .ts file under `dir`, except dependencies and build output. */
const sources = (dir: string): ReadonlyArray<string> =>
  existsSync(dir)
    ? readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
      if (entry.name === "node_modules" || entry.name === "dist") return []
      const full = path.join(dir, entry.name)
      return entry.isDirectory() ? sources(full) : /\.(c|m)?ts$/.test(entry.name) ? [full] : []
    })
    : []

describe("private packages are never packed", () => {
  const dirs = workspaceDirs()
  const privates = dirs.filter((dir) => read(dir).private === true)
  const publics = dirs.filter((dir) => read(dir).private !== true)

  it("the workspace has both", () => {
    expect(privates.length).toBeGreaterThan(0)
    expect(publics.length).toBeGreaterThan(0)
  })

  it.each(privates)("%s has the prepack guard", (dir) => {
    const guard = path.relative(path.join(root, dir), path.join(root, "scripts", "never-pack.mjs"))
    expect(read(dir).scripts?.["prepack"]).toBe(`node ${guard.split(path.sep).join("/")}`)
  })

  it("pnpm pack refuses a private package", { timeout: 60_000 }, () => {
    const r = spawnSync("pnpm", ["pack", "--dry-run"], { cwd: path.join(root, "apps", "relay"), encoding: "utf8", timeout: 50_000 })
    expect(r.status, `${r.stdout}\n${r.stderr}`).not.toBe(0)
    expect(`${r.stdout}${r.stderr}`).toContain("is private: it is never packed")
  })

  it("`pnpm pack:public` selects exactly the public packages (all under packages/)", () => {
    const script = (JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as Manifest).scripts?.["pack:public"]
    expect(script).toContain(`--filter "./packages/*" pack`)
    expect(publics.every((dir) => dir.startsWith("packages/")), publics.join(", ")).toBe(true)
    expect(dirs.filter((dir) => dir.startsWith("packages/")).filter((dir) => read(dir).private === true)).toEqual([])
  })
})

describe("errors are matched by _tag", () => {
  const errorClasses = [
    ...readFileSync(path.join(root, "packages", "core", "src", "BillingError.ts"), "utf8").matchAll(
      /^export class (\w+) extends/gm
    )
  ].map((m) => m[1]!)

  it("core declares its error classes", () => {
    expect(errorClasses).toContain("InsufficientFunds")
    expect(errorClasses).toContain("StoreError")
  })

  it("no instanceof of a core error class in packages/, apps/, bench/ or examples/", () => {
    const pattern = new RegExp(`instanceof\\s+(?:BillingError\\.)?(?:${errorClasses.join("|")})\\b`)
    const offenders = ["packages", "apps", "bench", "examples"]
      .flatMap((dir) => sources(path.join(root, dir)))
      .flatMap((file) =>
        readFileSync(file, "utf8")
          .split("\n")
          .map((line, i) => ({ line, at: `${path.relative(root, file)}:${i + 1}` }))
          .filter(({ line }) => pattern.test(line))
          .map(({ at, line }) => `${at}: ${line.trim()}`)
      )
    expect(offenders).toEqual([])
  })
})

/** The packages the .ts files under `dir` import (static and dynamic imports, by package name). */
const importsOf = (dir: string): ReadonlySet<string> => {
  const imported = new Set<string>()
  for (const file of sources(dir)) {
    const text = readFileSync(file, "utf8")
    for (
      const m of text.matchAll(
        /^\s*(?:import|export)\b[^"'`;]*?from\s+["']([^."'][^"']*)["']|^\s*import\s+["']([^."'][^"']*)["']|import\(\s*["']([^."'][^"']*)["']\s*\)/gm
      )
    ) {
      const specifier = (m[1] ?? m[2] ?? m[3])!
      if (specifier.startsWith("node:")) continue
      const parts = specifier.split("/")
      imported.add(specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!)
    }
  }
  return imported
}

describe("workspace packages import only what they declare", () => {
  // the workspace's tooling (vitest, tsup, typescript, ...) is the root's, shared by every package
  const tooling = Object.keys(read(".").devDependencies ?? {})

  it.each(workspaceDirs())("%s", (dir) => {
    const manifest = read(dir)
    const declared = new Set([
      manifest.name,
      ...tooling,
      ...Object.keys(manifest.dependencies ?? {}),
      ...Object.keys(manifest.devDependencies ?? {}),
      ...Object.keys(manifest.peerDependencies ?? {})
    ])
    const used = new Set([...importsOf(path.join(root, dir, "src")), ...importsOf(path.join(root, dir, "test"))])
    expect([...used].filter((name) => !declared.has(name)).sort()).toEqual([])
  })
})

describe("public packages declare only what they use", () => {
  const publics = workspaceDirs().filter((dir) => read(dir).private !== true)

  it.each(publics)("%s: every dependency and required peer is imported by src/", (dir) => {
    const manifest = read(dir)
    const imported = importsOf(path.join(root, dir, "src"))
    const optional = (name: string) => manifest.peerDependenciesMeta?.[name]?.optional === true
    const declared = [...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {})]
    expect(declared.filter((name) => !optional(name) && !imported.has(name))).toEqual([])
  })

  it.each(publics)("%s: src/ imports nothing that only a devDependency provides (an installer would not get it)", (dir) => {
    const manifest = read(dir)
    const runtime = new Set([
      manifest.name,
      ...Object.keys(manifest.dependencies ?? {}),
      ...Object.keys(manifest.peerDependencies ?? {})
    ])
    expect([...importsOf(path.join(root, dir, "src"))].filter((name) => !runtime.has(name)).sort()).toEqual([])
  })
})
