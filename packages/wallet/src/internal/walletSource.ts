import { BillingError } from "@relay-billing/core"
import type { Source, SqlStore } from "@relay-billing/core"
import { Effect } from "effect"
import { conditions, inRange, num, outOfRange, readRow, updateReturning } from "./statements.js"

type Sql = SqlStore.SqlStore["Service"]

const range = (change: number) => [{ column: "balance", field: "wallet.balance", change }]

/** The balance of a row (read by the statement that wrote it). */
const balanceOf = (row: Record<string, unknown>, operation: string) => num(row["balance"], "balance", operation)

export const makeWalletSource = (options: { readonly id?: string; readonly floorAtZero?: boolean }): Source.Source => {
  const id = options.id ?? "wallet"
  const accounts = (sql: Sql) => sql.table("accounts")

  const read = (sql: Sql, accountId: string, operation: string, lock = false) =>
    Effect.flatMap(
      readRow(sql, operation, accounts(sql), accountId, ["balance"], lock),
      (row) => (row ? Effect.map(balanceOf(row, operation), (b): number | undefined => b) : Effect.succeed(undefined))
    )

  /** A take or move that matched no row: the range is what failed, or the account does not exist. */
  const missed = (sql: Sql, accountId: string, change: number, operation: string) =>
    Effect.flatMap(readRow(sql, operation, accounts(sql), accountId, ["balance"]), (row) => {
      const error = row ? outOfRange(row, accountId, range(change)) : undefined
      return error ? Effect.fail(error) : Effect.succeed(row)
    })

  const insufficient = (accountId: string, required: number, available: number) =>
    new BillingError.InsufficientFunds({ sourceId: id, accountId, required, available })

  /** balance −= amount where `condition` holds, reading the balance after. */
  const debit = (sql: Sql, accountId: string, amount: number, condition: string, params: ReadonlyArray<unknown>) =>
    updateReturning(sql, `${id}.take`, {
      table: accounts(sql),
      set: "balance = balance - ?",
      setParams: [amount],
      id: accountId,
      where: condition,
      whereParams: params,
      columns: ["balance"]
    })

  /**
   * Split funding: as much as the wallet has, at most `amount`. PostgreSQL: one
   * statement (the row locked by a CTE, the amount taken returned); elsewhere the
   * balance read under a row lock (SQLite serialises writers) and one conditional
   * UPDATE of what it showed.
   */
  const takeUpTo = (sql: Sql, accountId: string, amount: number) =>
    Effect.gen(function*() {
      const operation = `${id}.take`
      if (sql.dialect === "postgres") {
        const t = accounts(sql)
        const r = yield* sql.execute(
          operation,
          `with cur as (select id, balance from ${t} where id = ? and balance > 0 for update)
           update ${t} set balance = ${t}.balance - least(cur.balance, ?) from cur where ${t}.id = cur.id
           returning ${t}.balance as balance, least(cur.balance, ?) as taken`,
          [accountId, amount, amount]
        )
        const row = r.rows[0]
        if (!row) return undefined
        return { amount: yield* num(row["taken"], "taken", operation), balanceAfter: yield* balanceOf(row, operation) }
      }
      const current = yield* read(sql, accountId, operation, true)
      if (current === undefined || current <= 0) return undefined
      const taken = Math.min(current, amount)
      const row = yield* debit(sql, accountId, taken, "balance >= ? and balance > 0", [taken])
      return row ? { amount: taken, balanceAfter: yield* balanceOf(row, operation) } : undefined
    })

  const take: Source.Source["take"] = (req) =>
    Effect.gen(function*() {
      const operation = `${id}.take`
      const amount: number = req.amount
      // The wallet of an account is the account's own row: any other subject has nothing.
      if (req.subjectId !== req.accountId) return yield* insufficient(req.accountId, amount, 0)
      if (req.mode === "upTo") {
        const taken = yield* takeUpTo(req.sql, req.accountId, amount)
        if (taken) return taken
      } else if (req.mode === "unconditional") {
        // Post-consume: the work is done; only the range bounds the debit (§2.10).
        const bound = inRange("balance", -amount)
        const row = yield* debit(req.sql, req.accountId, amount, bound?.sql ?? "1 = 1", bound ? [bound.param] : [])
        if (row) return { amount, balanceAfter: yield* balanceOf(row, operation) }
        yield* missed(req.sql, req.accountId, -amount, operation)
      } else {
        // A balance ≤ 0 is always insufficient (§2.3).
        const row = yield* debit(req.sql, req.accountId, amount, "balance >= ? and balance > 0", [amount])
        if (row) return { amount, balanceAfter: yield* balanceOf(row, operation) }
      }
      const available = yield* read(req.sql, req.accountId, operation)
      return yield* insufficient(req.accountId, amount, available ?? 0)
    })

  /** balance += delta within ±(2^53−1); QuotaOutOfRange (nothing written) outside it. */
  const shift = (sql: Sql, accountId: string, delta: number, operation: string) =>
    Effect.gen(function*() {
      const bound = inRange("balance", delta)
      const c = conditions([bound])
      const row = yield* updateReturning(sql, operation, {
        table: accounts(sql),
        set: "balance = balance + ?",
        setParams: [delta],
        id: accountId,
        ...(c.where ? c : {}),
        columns: ["balance"]
      })
      if (row) return { moved: delta, balanceAfter: yield* balanceOf(row, operation) }
      // No such account: nothing moved (a row in range cannot miss an UPDATE bounded only by the range).
      const existing = yield* missed(sql, accountId, delta, operation)
      if (existing) {
        return yield* new BillingError.StoreError({
          operation,
          detail: `accounts ${accountId}: a bounded update matched no row`
        })
      }
      return { moved: 0, balanceAfter: 0 }
    })

  /**
   * A charge floored at zero (`floorAtZero`): what the balance has, at most the
   * charge; PostgreSQL in one statement, elsewhere read under a lock first.
   */
  const floored = (sql: Sql, accountId: string, charge: number, operation: string) =>
    Effect.gen(function*() {
      if (sql.dialect === "postgres") {
        const t = accounts(sql)
        const r = yield* sql.execute(
          operation,
          `with cur as (select id, balance from ${t} where id = ? for update)
           update ${t} set balance = ${t}.balance - least(greatest(cur.balance, 0), ?) from cur where ${t}.id = cur.id
           returning ${t}.balance as balance, least(greatest(cur.balance, 0), ?) as taken`,
          [accountId, charge, charge]
        )
        const row = r.rows[0]
        if (!row) return { moved: 0, balanceAfter: 0 }
        const taken = yield* num(row["taken"], "taken", operation)
        return { moved: taken === 0 ? 0 : -taken, balanceAfter: yield* balanceOf(row, operation) }
      }
      const current = yield* read(sql, accountId, operation, true)
      if (current === undefined) return { moved: 0, balanceAfter: 0 }
      const payable = Math.min(charge, Math.max(0, current))
      if (payable === 0) return { moved: 0, balanceAfter: current }
      return yield* shift(sql, accountId, -payable, operation)
    })

  const move: Source.Source["move"] = (req) =>
    Effect.gen(function*() {
      const operation = `${id}.${req.kind}`
      if (req.delta === 0) {
        return { moved: 0, balanceAfter: (yield* read(req.sql, req.subjectId, operation)) ?? 0 }
      }
      if (options.floorAtZero && req.delta < 0 && (req.kind === "settle" || req.kind === "late_settle")) {
        return yield* floored(req.sql, req.subjectId, -req.delta, operation)
      }
      return yield* shift(req.sql, req.subjectId, req.delta, operation)
    })

  return {
    id,
    role: "funding",
    take,
    move,
    balance: (sql, accountId) => Effect.map(read(sql, accountId, `${id}.balance`), (b) => b ?? 0),
    audit: [{ table: "accounts", subject: "id", column: "balance" }]
  }
}
