/**
 * The v2 Source conformance suite, in one call, against a SQL source (the
 * credits fixture: one balance row per account) on the SQLite test store: the
 * suite's direct takes and moves join the store's transactions, and its engine
 * checks run over the store's journal, ledger and counters.
 */
import { Effect } from "effect"
import { SqliteStore } from "../src/sqlite.js"
import { sourceSuite } from "../src/VitestSuite.js"
import { credits } from "./sqlite-fixtures.js"

sourceSuite({
  name: "SQL credits on the SQLite test store",
  make: () =>
    Effect.gen(function*() {
      const store = yield* SqliteStore.make({ sources: [credits] })
      return { source: credits, store: store.layer(), sqlite: store }
    }),
  seed: ({ sqlite }, { accountId, amount }) =>
    sqlite.sql.execute("seed", `INSERT INTO ${sqlite.sql.table("credits")} VALUES (?, ?)`, [accountId, amount])
})
