// Packaging hygiene of every publishable package, checked on the tarball `pnpm pack` makes (the
// same one `pnpm publish` uploads, with `workspace:` ranges replaced): a LICENSE, the README and
// the built entry files are in it; its package.json names the repository and the supported Node;
// `knex` is the host's (a peer dependency, `^3`), never a second copy; no declaration map points
// at sources the tarball does not ship.
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
  return { dir: path.join(out, "package"), files }
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
})
