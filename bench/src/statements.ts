/**
 * The statements one SDK session writes, as the SDK issues them on this tree
 * (captured at the driver, see README "What each side writes"), written out once
 * so that every baseline writes exactly the same rows with the same guards:
 *
 * open (1 transaction):
 *   1. UPDATE tokens SET remain −= P, used += P WHERE id, account_id, NOT unlimited, used ≤ MAX − P, remain ≥ P RETURNING remain
 *   2. UPDATE accounts SET balance −= P WHERE id, balance ≥ P, balance > 0 RETURNING balance
 *   3. INSERT holds (pending, final parts JSON, reserved P) ON CONFLICT (id) DO NOTHING — 1 row or the open fails
 *   4. INSERT ledger, 2 rows (token reserve −P, wallet reserve −P)
 * settle (1 transaction; c = P − actual):
 *   1. UPDATE tokens SET remain += c, used −= c WHERE id, remain ≤ MAX − c, used ≥ c − MAX RETURNING remain
 *   2. UPDATE accounts SET balance += c WHERE id, balance ≤ MAX − c RETURNING balance
 *   3. UPDATE accounts SET used_quota += actual, request_count += 1 WHERE id (+ overflow guards)
 *   4. UPDATE holds SET status, reserved, trusted, parts, resolved_at, settlement WHERE id AND status = 'pending' — 1 row or the settle fails
 *   5. INSERT ledger, 2 rows (token settle +c, wallet settle +c)
 * MySQL has no RETURNING: each RETURNING UPDATE is an UPDATE and a SELECT of the
 * same row (as the SDK does), and `INSERT IGNORE` stands for ON CONFLICT DO NOTHING.
 */
import type { SessionInput } from "./workload.js"

/** A SQL dialect the bench runs on. */
export type Dialect = "sqlite" | "postgres" | "mysql"

/** Hold time-to-live the SDK uses by default (10 minutes). */
export const HOLD_TTL_MILLIS = 10 * 60 * 1000
const MAX = Number.MAX_SAFE_INTEGER

const HOLD_COLUMNS = [
  "id",
  "account_id",
  "token_id",
  "estimate",
  "reserved",
  "preference",
  "trusted",
  "status",
  "parts",
  "created_at",
  "expires_at",
  "resolved_at",
  "settlement",
  "metadata"
] as const

const LEDGER_COLUMNS = [
  "at",
  "kind",
  "source_id",
  "subject_id",
  "account_id",
  "hold_id",
  "amount",
  "balance_after",
  "unbilled",
  "note",
  "idempotency_key"
] as const

/** The hold's parts JSON (what the SDK stores in `holds.parts`). */
export const holdPartsJson = (input: SessionInput): string =>
  JSON.stringify([
    { kind: "funding", sourceId: "wallet", subjectId: input.accountId, amount: input.estimate },
    { kind: "budget", sourceId: "token", subjectId: input.tokenId, amount: input.estimate }
  ])

/** The settlement JSON the SDK stores in `holds.settlement`. */
export const settlementJson = (input: SessionInput, walletAfter: number, tokenAfter: number, at: number): string => {
  const result = { charged: input.actual, unbilled: 0 }
  return JSON.stringify({
    holdId: input.holdId,
    actual: input.actual,
    reserved: input.estimate,
    delta: input.actual - input.estimate,
    parts: [
      {
        kind: "funding",
        sourceId: "wallet",
        subjectId: input.accountId,
        reserved: input.estimate,
        ...result,
        balanceAfter: walletAfter
      },
      {
        kind: "budget",
        sourceId: "token",
        subjectId: input.tokenId,
        reserved: input.estimate,
        ...result,
        balanceAfter: tokenAfter
      }
    ],
    settledAt: at
  })
}

/** SQL texts of one session for one dialect and table prefix, `?` placeholders (`$n` on PostgreSQL). */
export interface SessionSql {
  readonly openToken: string
  readonly openAccount: string
  readonly insertHold: string
  readonly insertLedger2: string
  readonly settleToken: string
  readonly settleAccount: string
  readonly counters: string
  readonly updateHold: string
  /** MySQL only: the reads that stand for RETURNING. */
  readonly selectRemain: string
  readonly selectBalance: string
}

const numbered = (sql: string) => {
  let i = 0
  return sql.replace(/\?/g, () => `$${++i}`)
}

/** The session's statements for `dialect` over the tables of `prefix`. */
export const sessionSql = (dialect: Dialect, prefix: string): SessionSql => {
  const returning = (column: string) => (dialect === "mysql" ? "" : ` returning ${column}`)
  const marks = (n: number) => `(${Array.from({ length: n }, () => "?").join(", ")})`
  const insertHold = dialect === "mysql"
    ? `insert ignore into ${prefix}holds (${HOLD_COLUMNS.join(", ")}) values ${marks(HOLD_COLUMNS.length)}`
    : `insert into ${prefix}holds (${HOLD_COLUMNS.join(", ")}) values ${
      marks(HOLD_COLUMNS.length)
    } on conflict (id) do nothing`
  const sql: SessionSql = {
    openToken: `update ${prefix}tokens set remain = remain - ?, used = used + ? where id = ? and account_id = ? ` +
      `and not unlimited and used <= ? and remain >= ?${returning("remain")}`,
    openAccount: `update ${prefix}accounts set balance = balance - ? where id = ? and balance >= ? and balance > 0${
      returning("balance")
    }`,
    insertHold,
    insertLedger2: `insert into ${prefix}ledger (${LEDGER_COLUMNS.join(", ")}) values ${
      marks(LEDGER_COLUMNS.length)
    }, ${marks(LEDGER_COLUMNS.length)}`,
    settleToken:
      `update ${prefix}tokens set remain = remain + ?, used = used - ? where id = ? and remain <= ? and used >= ?${
        returning("remain")
      }`,
    settleAccount: `update ${prefix}accounts set balance = balance + ? where id = ? and balance <= ?${
      returning("balance")
    }`,
    counters: `update ${prefix}accounts set used_quota = used_quota + ?, request_count = request_count + ? ` +
      `where id = ? and used_quota <= ? and request_count <= ?`,
    updateHold: `update ${prefix}holds set status = ?, reserved = ?, trusted = ?, parts = ?, resolved_at = ?, ` +
      `settlement = ? where id = ? and status = ?`,
    selectRemain: `select remain from ${prefix}tokens where id = ?`,
    selectBalance: `select balance from ${prefix}accounts where id = ?`
  }
  if (dialect !== "postgres") return sql
  return Object.fromEntries(Object.entries(sql).map(([k, v]) => [k, numbered(v)])) as unknown as SessionSql
}

/** Bind values of each statement (booleans as 0/1 except on PostgreSQL). */
export const sessionParams = (dialect: Dialect) => {
  const bool = (b: boolean) => (dialect === "postgres" ? b : b ? 1 : 0)
  const ledger = (
    input: SessionInput,
    at: number,
    kind: string,
    sourceId: string,
    subjectId: string,
    amount: number,
    after: number
  ) => [at, kind, sourceId, subjectId, input.accountId, input.holdId, amount, after, null, null, null]
  return {
    openToken: (i: SessionInput) => [i.estimate, i.estimate, i.tokenId, i.accountId, MAX - i.estimate, i.estimate],
    openAccount: (i: SessionInput) => [i.estimate, i.accountId, i.estimate],
    insertHold: (i: SessionInput, createdAt: number) => [
      i.holdId,
      i.accountId,
      i.tokenId,
      i.estimate,
      i.estimate,
      "wallet_only",
      bool(false),
      "pending",
      holdPartsJson(i),
      createdAt,
      createdAt + HOLD_TTL_MILLIS,
      null,
      null,
      null
    ],
    openLedger: (i: SessionInput, at: number, remain: number, balance: number) => [
      ...ledger(i, at, "reserve", "token", i.tokenId, -i.estimate, remain),
      ...ledger(i, at, "reserve", "wallet", i.accountId, -i.estimate, balance)
    ],
    settleToken: (i: SessionInput) => {
      const c = i.estimate - i.actual
      return [c, c, i.tokenId, MAX - c, c - MAX]
    },
    settleAccount: (i: SessionInput) => {
      const c = i.estimate - i.actual
      return [c, i.accountId, MAX - c]
    },
    counters: (i: SessionInput) => [i.actual, 1, i.accountId, MAX - i.actual, MAX - 1],
    updateHold: (i: SessionInput, at: number, remain: number, balance: number) => [
      "settled",
      i.estimate,
      bool(false),
      holdPartsJson(i),
      at,
      settlementJson(i, balance, remain, at),
      i.holdId,
      "pending"
    ],
    settleLedger: (i: SessionInput, at: number, remain: number, balance: number) => {
      const c = i.estimate - i.actual
      return [
        ...ledger(i, at, "settle", "token", i.tokenId, c, remain),
        ...ledger(i, at, "settle", "wallet", i.accountId, c, balance)
      ]
    }
  }
}

/** A failure of a baseline session (a guard matched no row): the transaction is rolled back. */
export class BaselineError extends Error {}

/** Deadlocks, serialization failures, SQLite busy: the whole transaction may run again. */
export const retryable = (error: unknown): boolean => {
  const e = error as { code?: unknown; errno?: unknown } | undefined
  const code = e?.code
  return code === "40P01" || code === "40001" || e?.errno === 1213 || e?.errno === 1205 ||
    (typeof code === "string" && code.startsWith("SQLITE_BUSY"))
}

/** Retries counted across baselines. */
export const baselineRetries = { count: 0 }

/** The SDK's retry policy: the whole transaction, up to 8 times, exponential from 5 ms, jittered. */
export const withRetry = async <A>(f: () => Promise<A>): Promise<A> => {
  for (let attempt = 0;; attempt++) {
    try {
      return await f()
    } catch (error) {
      if (attempt >= 8 || !retryable(error)) throw error
      baselineRetries.count++
      const wait = 5 * 2 ** attempt * (0.8 + Math.random() * 0.4)
      await new Promise((resolve) => setTimeout(resolve, wait))
    }
  }
}
