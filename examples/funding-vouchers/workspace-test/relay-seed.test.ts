/**
 * test/relay-seed.sql (the packaging test runs it against the relay's SQLite
 * database) gives an account a pack in the table the plugin's default options
 * and the relay's default prefix name, and a take then draws on it.
 */
import { assert, describe, it } from "@effect/vitest"
import { SqliteStore } from "@relay-billing/testkit/sqlite"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { plugin } from "../src/index.js"

const seed = readFileSync(fileURLToPath(new URL("../test/relay-seed.sql", import.meta.url)), "utf8")
// split and bound as the packaging test does: statements by ";", every "?" is the account id
const statements = seed.split(";").map((s) => s.trim()).filter((s) => s !== "")

describe("test/relay-seed.sql", () => {
  it.effect("gives the account a balance in the vouchers table of the default options and prefix", () =>
    Effect.gen(function*() {
      const source = plugin.make({ id: "vouchers", table: "vouchers" })
      const store = yield* SqliteStore.make({ sources: [source], prefix: "billing_" })
      for (const statement of statements) {
        yield* store.sql.execute("seed", statement, Array((statement.match(/\?/g) ?? []).length).fill("acct"))
      }
      assert.strictEqual(yield* source.balance!(store.sql, "acct"), 1_000_000)
    }))
})
