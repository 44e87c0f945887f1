/**
 * The vouchers source against the v2 `Source` conformance suite, in one call, on
 * the testkit's SQLite test store (each check gets a fresh in-memory database).
 */
import { SqliteStore } from "@relay-billing/testkit/sqlite"
import { sourceSuite } from "@relay-billing/testkit/vitest"
import { Effect } from "effect"
import { addPack, plugin } from "../src/index.js"

sourceSuite({
  name: "vouchers",
  make: () =>
    Effect.gen(function*() {
      const source = plugin.make({ id: "vouchers", table: "vouchers" })
      const store = yield* SqliteStore.make({ sources: [source] })
      return { source, store: store.layer(), sql: store.sql }
    }),
  seed: ({ sql }, { accountId, amount }) =>
    addPack(sql, { accountId, total: amount, expiresAt: Number.MAX_SAFE_INTEGER })
})
