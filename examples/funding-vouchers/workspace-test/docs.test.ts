/**
 * docs/plugins.md shows this example's code: every TypeScript block in it (except
 * those marked `<!-- sketch -->`, the contract's outline) must appear verbatim in
 * the example's source or tests (test/, workspace-test/), so the guide's code is
 * code that compiles and runs.
 */
import { assert, describe, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url))
const guide = readFileSync(here("../../../docs/plugins.md"), "utf8")
const files = (dir: string) =>
  readdirSync(here(dir)).filter((f) => f.endsWith(".ts")).map((f) => readFileSync(here(`${dir}/${f}`), "utf8"))
const code = [readFileSync(here("../src/index.ts"), "utf8"), ...files("../test"), ...files(".")].join("\n")

const blocks = [...guide.matchAll(/(<!-- sketch -->\n)?```ts\n([\s\S]*?)```/g)]
  .filter((m) => m[1] === undefined)
  .map((m) => m[2]!)

describe("docs/plugins.md", () => {
  it("has code blocks from the example", () => {
    assert.isAtLeast(blocks.length, 6)
  })
  for (const block of blocks) {
    it(`shows code of the example: ${block.split("\n")[0]!.trim().slice(0, 60)}`, () => {
      assert.include(code, block, "the block is not (or no longer) in the example: copy it again")
    })
  }
})
