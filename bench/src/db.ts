/**
 * Database plumbing of the bench: seeding the accounts and tokens of one table
 * set, statement labels, and an error counter on knex's driver call
 * (`client._query`).
 */
import type { Knex } from "knex"
import { allAccounts, OPENING, tokenIdOf } from "./workload.js"

/** Table prefixes: the SDK's tables, the raw loop's, the driver loop's (same migrations, same shapes). */
export const SDK_PREFIX = "billing_"
export const RAW_PREFIX = "raw_"
export const DRIVER_PREFIX = "drv_"

/**
 * Seeds `n` random-pool accounts plus the hot account, each with a token, and
 * the opening ledger rows WalletAdmin would write (so the audit holds from the
 * start). Identical for both table sets.
 */
export const seed = async (knex: Knex, prefix: string, n: number): Promise<number> => {
  const at = Date.now()
  const ids = allAccounts(n)
  const chunk = <A>(rows: Array<A>, size = 100) =>
    Array.from({ length: Math.ceil(rows.length / size) }, (_, i) => rows.slice(i * size, (i + 1) * size))
  await knex.transaction(async (trx) => {
    for (const part of chunk(ids)) {
      await trx(`${prefix}accounts`).insert(part.map((id) => ({
        id,
        balance: OPENING,
        used_quota: 0,
        request_count: 0,
        low_balance_threshold: null,
        created_at: at
      })))
      await trx(`${prefix}tokens`).insert(part.map((id) => ({
        id: tokenIdOf(id),
        account_id: id,
        remain: OPENING,
        used: 0,
        unlimited: false,
        created_at: at
      })))
      await trx(`${prefix}ledger`).insert(part.flatMap((id) => [
        {
          at,
          kind: "topup",
          source_id: "wallet",
          subject_id: id,
          account_id: id,
          hold_id: null,
          amount: OPENING,
          balance_after: OPENING,
          unbilled: null,
          note: "opening balance",
          idempotency_key: null
        },
        {
          at,
          kind: "adjust",
          source_id: "token",
          subject_id: tokenIdOf(id),
          account_id: id,
          hold_id: null,
          amount: OPENING,
          balance_after: OPENING,
          unbilled: null,
          note: "opening budget",
          idempotency_key: null
        }
      ]))
    }
  })
  return ids.length * 2
}

/** A statement as a short, prefix-free label: `UPDATE accounts SET balance RETURNING`. */
export const normalize = (sql: string): string => {
  const s = sql.trim().replace(/\s+/g, " ")
  const lower = s.toLowerCase()
  if (lower.startsWith("begin") || lower.startsWith("start transaction")) return "BEGIN"
  if (lower.startsWith("commit")) return "COMMIT"
  if (lower.startsWith("rollback to")) return "ROLLBACK TO SAVEPOINT"
  if (lower.startsWith("rollback")) return "ROLLBACK"
  if (lower.startsWith("savepoint")) return "SAVEPOINT"
  if (lower.startsWith("set transaction")) return "SET TRANSACTION ISOLATION LEVEL"
  if (lower.startsWith("release")) return "RELEASE SAVEPOINT"
  const verb = lower.split(" ")[0]!.toUpperCase()
  const table = /(?:from|into|update)\s+[`"]?(?:[a-z0-9_]+[`"]?\.[`"]?)?([a-z0-9_]+)[`"]?/.exec(lower)?.[1] ?? "?"
  const bare = table.replace(/^(billing_|raw_|drv_)/, "")
  let label = `${verb} ${bare}`
  if (verb === "UPDATE") {
    const set = /\bset (.*?)(?: where | returning |$)/.exec(lower)?.[1] ?? ""
    const cols = [...set.matchAll(/(?:^|,)\s*[`"]?([a-z_]+)[`"]?\s*=/g)].map((m) => m[1])
    label += cols.length > 6 ? " SET <all columns>" : ` SET ${cols.join(",")}`
  }
  // several VALUES tuples, or knex's SQLite form (`insert … select ? as a, … union all select …`)
  if (verb === "INSERT" && (/ values \(.*\), \(/.test(lower) || / union all select /.test(lower))) {
    label += " (multi-row)"
  }
  if (lower.includes(" on conflict ") || lower.startsWith("insert or ignore") || lower.startsWith("insert ignore")) {
    label += " ON CONFLICT DO NOTHING"
  }
  if (lower.includes(" for update")) label += " FOR UPDATE"
  if (lower.includes(" returning ")) label += " RETURNING"
  return label
}

/** What a statement hook has seen since `reset` (see driverHook.ts). */
export interface StatementStats {
  /** label → phase → count */
  readonly counts: Map<string, Map<string, number>>
  /** label → time inside the driver, ms */
  readonly millis: Map<string, number>
  /** Total time inside the driver call, ms. */
  sqlMillis: number
  statements: number
  /** Driver errors by SQLSTATE / code (deadlocks, serialization failures, busy). */
  readonly errors: Map<string, number>
}

/**
 * Counts failed statements by error code on knex's driver call
 * (`client._query`) during the measured slices. It sees every statement of the
 * raw loop, but of the SDK only what still goes through knex (its transactions'
 * BEGIN / COMMIT / ROLLBACK): the SDK's hot path runs its statements on the
 * driver directly. Statements are counted and timed by the driver hook
 * (driverHook.ts), installed for the statement-profile pass only.
 */
export const hookStatements = (knex: Knex) => {
  const proto = Object.getPrototypeOf(knex.client) as {
    _query: (conn: unknown, obj: { sql: string }) => Promise<unknown>
  }
  const original = proto._query
  const errors = new Map<string, number>()
  proto._query = function(this: unknown, conn, obj) {
    return original.call(this, conn, obj).catch((error: unknown) => {
      const code = String((error as { code?: unknown })?.code ?? "other")
      errors.set(code, (errors.get(code) ?? 0) + 1)
      throw error
    })
  }
  return {
    stats: { errors },
    restore: () => {
      proto._query = original
    }
  }
}

export type StatementHook = ReturnType<typeof hookStatements>
