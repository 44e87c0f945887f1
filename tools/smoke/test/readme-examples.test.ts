// Every package README's "Runnable example" must run as written: the first ```ts block after
// that heading is compiled with esbuild and executed by plain Node from this package (which
// depends on every published package), in a temporary working directory.
import { transformSync } from "esbuild"
import { spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { preload, runtimes } from "./runtimes.js"

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, "..", "..", "..")
const packagesDir = path.join(root, "packages")

const exampleOf = (readme: string): string | undefined => {
  const heading = readme.search(/^## Runnable example/m)
  if (heading < 0) return undefined
  const block = /```ts\n([\s\S]*?)```/.exec(readme.slice(heading))
  return block?.[1]
}

const packages = readdirSync(packagesDir).filter((name) => {
  const pkg = JSON.parse(readFileSync(path.join(packagesDir, name, "package.json"), "utf8")) as { private?: boolean }
  return !pkg.private
})

/**
 * These tests start plain Node processes (spawnSync, up to 60 s each): 15 s each under
 * `.ci/run` on a busy 2-core machine, against the default 30 s. Only a hang reaches this.
 */
const SPAWN_TEST_TIMEOUT_MS = 150_000

describe.each(runtimes)(
  "README runnable examples on the $label ($version)",
  { timeout: SPAWN_TEST_TIMEOUT_MS },
  (runtime) => {
    for (const name of packages) {
      it(`packages/${name}/README.md has a runnable example that runs`, () => {
        const readme = readFileSync(path.join(packagesDir, name, "README.md"), "utf8")
        const source = exampleOf(readme)
        expect(source, `packages/${name}/README.md needs a "## Runnable example" section with a ts block`).toBeDefined()
        const js = transformSync(source!, { loader: "ts", format: "esm", target: "node20" }).code
        const scratch = path.join(here, "..", ".examples")
        mkdirSync(scratch, { recursive: true })
        const file = path.join(scratch, `${name}-${runtime.version}.mjs`)
        writeFileSync(file, js)
        const cwd = mkdtempSync(path.join(tmpdir(), `rb-readme-${name}-`))
        try {
          const env = { ...process.env }
          delete env["NODE_OPTIONS"]
          const run = spawnSync(runtime.executable, [...preload(runtime), file], {
            cwd,
            env,
            encoding: "utf8",
            timeout: 60_000
          })
          console.log(`${name} example output:\n${run.stdout}`)
          expect(run.stderr, run.stderr).not.toMatch(/Error|error:/)
          expect(run.status, run.stderr).toBe(0)
          expect(run.stdout.trim().length).toBeGreaterThan(0)
        } finally {
          rmSync(cwd, { recursive: true, force: true })
        }
      })
    }
  }
)
