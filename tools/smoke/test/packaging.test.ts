// Packaging hygiene of every publishable package, checked on the tarball `pnpm pack` makes (the
// same one `pnpm publish` uploads, with `workspace:` ranges replaced): a LICENSE, the README and
// the built entry files are in it; its package.json names the repository and the supported Node;
// `knex` is the host's (a peer dependency, `^3`), never a second copy; no declaration map points
// at sources the tarball does not ship; one implementation (the ESM build; every `.cjs` only
// requires it, so `require` and `import` consumers share one class identity); publint and
// are-the-types-wrong (both pinned in this package) find nothing.
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, describe, expect, it } from "vitest"

interface Manifest {
  readonly name: string
  readonly private?: boolean
  readonly license?: string
  readonly engines?: Readonly<Record<string, string>>
  readonly repository?: { readonly type?: string; readonly url?: string; readonly directory?: string }
  readonly dependencies?: Readonly<Record<string, string>>
  readonly peerDependencies?: Readonly<Record<string, string>>
}

const here = path.dirname(fileURLToPath(import.meta.url))
const bin = (name: string) => path.join(here, "..", "node_modules", ".bin", name)
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..")
const packagesDir = path.join(root, "packages")
const publishable = readdirSync(packagesDir)
  .filter((d) => existsSync(path.join(packagesDir, d, "package.json")))
  .filter((d) => (JSON.parse(readFileSync(path.join(packagesDir, d, "package.json"), "utf8")) as Manifest).private !== true)
  .sort()

const scratch = mkdtempSync(path.join(tmpdir(), "rb-pack-"))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

/** Packs `dir` with pnpm and unpacks it; returns the unpacked `package/` folder and its file list. */
const packed = (name: string) => {
  const out = path.join(scratch, name)
  const pack = spawnSync("pnpm", ["pack", "--pack-destination", out], {
    cwd: path.join(packagesDir, name),
    encoding: "utf8",
    timeout: 120_000
  })
  if (pack.status !== 0) throw new Error(`pnpm pack failed in packages/${name}:\n${pack.stdout}\n${pack.stderr}`)
  const tarball = readdirSync(out).find((f) => f.endsWith(".tgz"))
  if (tarball === undefined) throw new Error(`no tarball in ${out}`)
  const list = spawnSync("tar", ["-tzf", path.join(out, tarball)], { encoding: "utf8" })
  const unpack = spawnSync("tar", ["-xzf", path.join(out, tarball), "-C", out], { encoding: "utf8" })
  if (list.status !== 0 || unpack.status !== 0) throw new Error(`cannot read ${tarball}: ${list.stderr}${unpack.stderr}`)
  const files = list.stdout.split("\n").filter((f) => f !== "").map((f) => f.replace(/^package\//, ""))
  return { dir: path.join(out, "package"), files, tarball: path.join(out, tarball) }
}

/** pnpm pack takes a second or two per package; on a busy machine more. */
const PACK_TIMEOUT_MS = 150_000

describe.each(publishable)("the packed tarball of packages/%s", { timeout: PACK_TIMEOUT_MS }, (name) => {
  let tarball: ReturnType<typeof packed> | undefined
  const get = () => (tarball ??= packed(name))

  it("ships LICENSE, README.md and the built entry points, and no tests or sources", () => {
    const { files } = get()
    expect(files).toContain("LICENSE")
    expect(files).toContain("README.md")
    expect(files).toContain("dist/index.js")
    expect(files).toContain("dist/index.d.ts")
    expect(files.filter((f) => f.startsWith("src/") || f.startsWith("test/"))).toEqual([])
  })

  it("has no declaration map pointing at a file the tarball does not ship", () => {
    const { dir, files } = get()
    const dangling: Array<string> = []
    for (const map of files.filter((f) => f.endsWith(".d.ts.map"))) {
      const { sources } = JSON.parse(readFileSync(path.join(dir, map), "utf8")) as { sources: Array<string> }
      for (const source of sources) {
        const target = path.normalize(path.join(path.dirname(map), source))
        if (!files.includes(target)) dangling.push(`${map} → ${target}`)
      }
    }
    expect(dangling).toEqual([])
  })

  it("names its license, repository folder and supported Node; no workspace: range is left", () => {
    const { dir } = get()
    const text = readFileSync(path.join(dir, "package.json"), "utf8")
    const manifest = JSON.parse(text) as Manifest
    expect(manifest.license).toBe("MIT")
    expect(manifest.engines?.["node"]).toBe(">=20.19")
    expect(manifest.repository).toMatchObject({ type: "git", directory: `packages/${name}` })
    expect(text).not.toContain("workspace:")
  })

  it("leaves knex to the host: never a dependency, a ^3 peer where it is used", () => {
    const { dir } = get()
    const manifest = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as Manifest
    expect(manifest.dependencies?.["knex"]).toBeUndefined()
    const usesKnex = readdirSync(path.join(dir, "dist"))
      .filter((f) => f.endsWith(".js"))
      .some((f) => /from\s*["']knex["']|require\(["']knex["']\)/.test(readFileSync(path.join(dir, "dist", f), "utf8")))
    if (usesKnex) expect(manifest.peerDependencies?.["knex"]).toBe("^3.0.0")
  })

  it("ships one implementation: each .cjs file only requires the ES module next to it", () => {
    const { dir, files } = get()
    const cjs = files.filter((f) => f.endsWith(".cjs"))
    expect(cjs.length).toBeGreaterThan(0)
    for (const file of cjs) {
      const code = readFileSync(path.join(dir, file), "utf8")
        .split("\n")
        .filter((line) => line.trim() !== "" && !line.trim().startsWith("//"))
      const esm = `./${path.basename(file, ".cjs")}.js`
      expect(code, file).toEqual([`"use strict"`, `module.exports = require("${esm}")`])
      expect(files, file).toContain(path.join(path.dirname(file), `${path.basename(file, ".cjs")}.js`))
    }
  })

  it("has CommonJS declarations that import no ES module without resolution-mode (no TS1479 under node16)", () => {
    const { dir, files } = get()
    const dcts = files.filter((f) => f.endsWith(".d.cts"))
    expect(dcts.length).toBeGreaterThan(0)
    const bad: Array<string> = []
    for (const file of dcts) {
      const text = readFileSync(path.join(dir, file), "utf8")
      for (const m of text.matchAll(/from\s+"(\.[^"]+)"/g)) if (!m[1]!.endsWith(".cjs")) bad.push(`${file}: ${m[1]}`)
      for (const m of text.matchAll(/^(?:import|export)\b.*from\s+"(effect|vitest)(\/[^"]*)?".*$/gm)) {
        if (!m[0].includes(`"resolution-mode": "import"`)) bad.push(`${file}: ${m[0]}`)
      }
    }
    expect(bad).toEqual([])
  })

  it("is clean for publint (strict, suggestions included)", () => {
    const { tarball } = get()
    const r = spawnSync(bin("publint"), ["run", tarball, "--strict", "--level", "suggestion"], { encoding: "utf8", timeout: 60_000 })
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0)
    expect(r.stdout, `${r.stdout}\n${r.stderr}`).toContain("All good!")
  })

  it("is clean for are-the-types-wrong (node10, node16 from CJS and ESM, bundler)", () => {
    const { tarball } = get()
    const r = spawnSync(bin("attw"), [tarball, "--format", "json"], { encoding: "utf8", timeout: 90_000 })
    const report = JSON.parse(r.stdout) as { analysis?: { problems?: unknown } }
    expect(report.analysis?.problems, r.stdout).toEqual([])
    expect(r.status, r.stderr).toBe(0)
  })
})
