/**
 * A small SQL funding source for the SQLite store's tests (not a test file itself):
 * one balance row per account in its own table.
 */
import { BillingError, Source } from "@relay-billing/core"
import { Effect } from "effect"

/** A small SQL funding source: one balance per account in its own table. */
export const credits = Source.make({
  id: "credits",
  role: "funding",
  take: ({ accountId, amount, mode, sql }) =>
    Effect.gen(function*() {
      const t = sql.table("credits")
      const floor = mode === "unconditional" ? Number.MIN_SAFE_INTEGER : mode === "upTo" ? 1 : amount
      const read = yield* sql.execute("credits.read", `SELECT balance FROM ${t} WHERE account_id = ?`, [accountId])
      const balance = Number(read.rows[0]?.["balance"] ?? 0)
      const taken = mode === "upTo" ? Math.min(balance, amount) : amount
      const r = yield* sql.execute(
        "credits.take",
        `UPDATE ${t} SET balance = balance - ? WHERE account_id = ? AND balance >= ? AND balance = ? RETURNING balance`,
        [taken, accountId, floor, balance]
      )
      const row = r.rows[0]
      if (row === undefined) {
        return yield* new BillingError.InsufficientFunds({
          sourceId: "credits",
          accountId,
          required: amount,
          available: Math.max(balance, 0)
        })
      }
      return { amount: taken, balanceAfter: Number(row["balance"]) }
    }),
  move: ({ delta, sql, subjectId }) =>
    Effect.map(
      sql.execute(
        "credits.move",
        `UPDATE ${sql.table("credits")} SET balance = balance + ? WHERE account_id = ? RETURNING balance`,
        [delta, subjectId]
      ),
      (r) => ({ moved: delta, balanceAfter: Number(r.rows[0]?.["balance"] ?? 0) })
    ),
  balance: (sql, subjectId) =>
    Effect.map(
      sql.execute("credits.balance", `SELECT balance FROM ${sql.table("credits")} WHERE account_id = ?`, [subjectId]),
      (r) => Number(r.rows[0]?.["balance"] ?? 0)
    ),
  migrations: [{
    name: "create_credits",
    up: (sql) =>
      Effect.asVoid(
        sql.execute(
          "credits.create",
          `CREATE TABLE ${sql.table("credits")} (account_id TEXT PRIMARY KEY, balance INTEGER NOT NULL)`
        )
      )
  }],
  audit: [{ table: "credits", subject: "account_id", column: "balance" }]
})
