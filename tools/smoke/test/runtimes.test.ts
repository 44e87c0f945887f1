// The repository runs on its pinned Node 24 (the `node-runtime` devDependency) even where the
// system Node is older; the SDK packages are smoke-tested on both (exports, README examples).
import { describe, expect, it } from "vitest"
import { pinned, system } from "./runtimes.js"

const major = (version: string): number => Number(/^v(\d+)\./.exec(version)?.[1])

describe("runtimes", () => {
  it("tests run on the pinned Node 24", () => {
    expect(major(pinned.version), pinned.version).toBe(24)
  })

  it("the system Node, when present, is one the SDK supports (>= 20.19)", () => {
    if (system === undefined) return
    const [maj, min] = system.version.slice(1).split(".").map(Number) as [number, number]
    expect(maj > 20 || (maj === 20 && min >= 19), system.version).toBe(true)
  })
})
