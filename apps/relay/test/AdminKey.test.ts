import { Effect, Exit, Logger } from "effect"
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import path from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import * as AdminKey from "../src/AdminKey.js"

/** Runs `resolve` capturing every log message. */
const resolveLogged = async (options: Parameters<typeof AdminKey.resolve>[0]) => {
  const lines: Array<string> = []
  const capture = Logger.make(({ message }) => {
    lines.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
  })
  const exit = await Effect.runPromiseExit(AdminKey.resolve(options).pipe(Effect.provide(Logger.layer([capture]))))
  return { exit, lines }
}

describe("AdminKey", () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "relay-admin-key-"))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("uses RELAY_ADMIN_KEY when set, without touching the file", async () => {
    const file = path.join(dir, "data", "admin-key")
    const { exit, lines } = await resolveLogged({ envKey: "env-secret-key", path: file })
    expect(exit).toEqual(Exit.succeed({ key: "env-secret-key", source: "environment" }))
    await expect(stat(file)).rejects.toThrow()
    expect(lines.join("\n")).not.toContain("env-secret-key")
    expect(lines.join("\n")).toContain("RELAY_ADMIN_KEY")
  })

  it("generates a key into a new directory with mode 0600, logs the path but never the key, and reuses it", async () => {
    const file = path.join(dir, "nested", "data", "admin-key")
    const first = await resolveLogged({ envKey: undefined, path: file })
    expect(Exit.isSuccess(first.exit)).toBe(true)
    const resolved = (first.exit as Exit.Success<AdminKey.Resolved>).value
    expect(resolved.source).toBe("generated")
    expect(resolved.path).toBe(file)
    expect(resolved.key).toMatch(/^sk-admin-[0-9A-Za-z]{48}$/)
    expect((await readFile(file, "utf8")).trim()).toBe(resolved.key)
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    const log = first.lines.join("\n")
    expect(log).toContain(file)
    expect(log).not.toContain(resolved.key)

    // an empty env value counts as unset; the stored key is read back
    const second = await resolveLogged({ envKey: "", path: file })
    expect(second.exit).toEqual(Exit.succeed({ key: resolved.key, source: "file", path: file }))
    expect(second.lines.join("\n")).not.toContain(resolved.key)
  })

  it("tightens a readable key file to 0600 and refuses an empty one", async () => {
    const file = path.join(dir, "admin-key")
    await writeFile(file, "sk-admin-handmade\n", { mode: 0o644 })
    const { exit } = await resolveLogged({ path: file })
    expect(exit).toEqual(Exit.succeed({ key: "sk-admin-handmade", source: "file", path: file }))
    expect((await stat(file)).mode & 0o777).toBe(0o600)

    await writeFile(file, "  \n")
    const empty = await resolveLogged({ path: file })
    expect(Exit.isFailure(empty.exit)).toBe(true)
    expect(JSON.stringify(empty.exit)).toContain("AdminKeyError")
  })

  it("matches only `Bearer <key>`", () => {
    const key = "sk-admin-abc"
    expect(AdminKey.matchesBearer("Bearer sk-admin-abc", key)).toBe(true)
    expect(AdminKey.matchesBearer("bearer   sk-admin-abc ", key)).toBe(true)
    expect(AdminKey.matchesBearer(undefined, key)).toBe(false)
    expect(AdminKey.matchesBearer("", key)).toBe(false)
    expect(AdminKey.matchesBearer("Bearer ", key)).toBe(false)
    expect(AdminKey.matchesBearer("sk-admin-abc", key)).toBe(false)
    expect(AdminKey.matchesBearer("Basic sk-admin-abc", key)).toBe(false)
    expect(AdminKey.matchesBearer("Bearer sk-admin-ab", key)).toBe(false)
    expect(AdminKey.matchesBearer("Bearer sk-admin-abcd", key)).toBe(false)
  })
})
