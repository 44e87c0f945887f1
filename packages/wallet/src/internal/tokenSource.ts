import { BillingError } from "@relay-billing/core"
import type { Source, SqlStore } from "@relay-billing/core"
import { Effect } from "effect"
import { conditions, inRange, num, outOfRange, readRow, updateReturning } from "./statements.js"

type Sql = SqlStore.SqlStore["Service"]

/** Both counters stay within ±(2^53−1) (spec §2.10): remain moves by `change`, used by `−change`. */
const range = (change: number) => [
  { column: "remain", field: "token.remain", change },
  { column: "used", field: "token.used", change: -change }
]

export const makeTokenSource = (options: { readonly id?: string }): Source.Source => {
  const id = options.id ?? "token"
  const tokens = (sql: Sql) => sql.table("tokens")

  const readToken = (sql: Sql, tokenId: string, operation: string) =>
    Effect.flatMap(
      readRow(sql, operation, tokens(sql), tokenId, ["remain", "used", "unlimited", "account_id"]),
      (row) =>
        row
          ? Effect.map(num(row["remain"], "remain", operation), (remain) => ({
            row,
            remain,
            unlimited: Boolean(Number(row["unlimited"])) || row["unlimited"] === true,
            accountId: String(row["account_id"])
          }))
          : Effect.succeed(undefined)
    )

  const take: Source.Source["take"] = (req) =>
    Effect.gen(function*() {
      const operation = `${id}.take`
      const amount: number = req.amount
      // The account is in the conditional write too: a token of another account never matches.
      // An unlimited token holds nothing (it still moves at settlement: a usage counter).
      const c = conditions([
        { sql: "account_id = ?", param: req.accountId },
        { sql: "not unlimited" },
        inRange("used", amount),
        req.mode === "unconditional" ? undefined : { sql: "remain >= ?", param: amount }
      ])
      const row = yield* updateReturning(req.sql, operation, {
        table: tokens(req.sql),
        set: "remain = remain - ?, used = used + ?",
        setParams: [amount, amount],
        id: req.subjectId,
        ...c,
        columns: ["remain"]
      })
      if (row) return { amount, balanceAfter: yield* num(row["remain"], "remain", operation) }
      const token = yield* readToken(req.sql, req.subjectId, operation)
      // A token belongs to one account (§2.9): another account's token is not found for it.
      if (token && token.accountId !== req.accountId) {
        return yield* new BillingError.TokenNotFound({ tokenId: req.subjectId, accountId: req.accountId })
      }
      if (token?.unlimited) return { amount: 0, balanceAfter: token.remain }
      // The bound on `used` (§2.10) may be what failed; otherwise the budget is short.
      const error = token
        ? outOfRange(token.row, req.subjectId, [{ column: "used", field: "token.used", change: amount }])
        : undefined
      if (error) return yield* error
      return yield* new BillingError.TokenBudgetExceeded({
        budgetId: id,
        tokenId: req.subjectId,
        required: amount,
        remaining: token?.remain ?? 0
      })
    })

  const move: Source.Source["move"] = (req) =>
    Effect.gen(function*() {
      const operation = `${id}.${req.kind}`
      if (req.delta === 0) {
        const token = yield* readToken(req.sql, req.subjectId, operation)
        return { moved: 0, balanceAfter: token?.remain ?? 0 }
      }
      // remain += delta, used −= delta, both bounded; unlimited tokens move too (usage counter).
      const c = conditions([inRange("remain", req.delta), inRange("used", -req.delta)])
      const row = yield* updateReturning(req.sql, operation, {
        table: tokens(req.sql),
        set: "remain = remain + ?, used = used - ?",
        setParams: [req.delta, req.delta],
        id: req.subjectId,
        ...c,
        columns: ["remain"]
      })
      if (row) return { moved: req.delta, balanceAfter: yield* num(row["remain"], "remain", operation) }
      const token = yield* readToken(req.sql, req.subjectId, operation)
      // A token deleted since: nothing to move.
      if (!token) return { moved: 0, balanceAfter: 0 }
      const error = outOfRange(token.row, req.subjectId, range(req.delta))
      if (error) return yield* error
      return yield* new BillingError.StoreError({
        operation,
        detail: `tokens ${req.subjectId}: a bounded update matched no row`
      })
    })

  return {
    id,
    role: "budget",
    take,
    move,
    balance: (sql, tokenId) =>
      Effect.map(
        readToken(sql, tokenId, `${id}.balance`),
        (t) => (t === undefined ? 0 : t.unlimited ? Number.MAX_SAFE_INTEGER : t.remain)
      ),
    audit: [{ table: "tokens", subject: "id", column: "remain" }]
  }
}
