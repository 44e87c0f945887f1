/**
 * The knex-built raw baseline: the statements one SDK session writes (see
 * statements.ts for the list, in the SDK's order, with the SDK's guards), built
 * with knex's query builder on the SDK's own knex instance (same driver, same
 * pool, same connection settings) into a second set of tables created by the
 * SDK's own migrations (prefix `raw_`). No engine, no Effect, no idempotency
 * reads: the gap between it and the SDK is the SDK's own cost, not knex's.
 *
 * MySQL: RETURNING becomes an UPDATE and a SELECT of the row, and transactions
 * run at READ COMMITTED, as the SDK does there. Deadlocks and serialization
 * failures retry the whole transaction with the SDK's policy.
 */
import type { Knex } from "knex"
import type { Dialect } from "./statements.js"
import { BaselineError, HOLD_TTL_MILLIS, holdPartsJson, settlementJson, withRetry } from "./statements.js"
import type { SessionInput } from "./workload.js"

const MAX = Number.MAX_SAFE_INTEGER

const one = (rows: unknown, column: string): number | undefined => {
  const row = (rows as Array<Record<string, unknown>>)[0]
  return row === undefined ? undefined : Number(row[column])
}

/** Marks the boundary between open and settle (for the statement counter). */
export type PhaseHook = (phase: "open" | "settle") => void

const dialectOf = (knex: Knex): Dialect => {
  const client = String(knex.client.config.client)
  return client.includes("sqlite") ? "sqlite" : client === "pg" ? "postgres" : "mysql"
}

/** Runs one session; resolves once settled. `opened` is set when the open transaction committed. */
export const rawSession = async (
  knex: Knex,
  prefix: string,
  input: SessionInput,
  state: { opened: boolean },
  phase?: PhaseHook
): Promise<void> => {
  const dialect = dialectOf(knex)
  const trxConfig: Knex.TransactionConfig | undefined = dialect === "mysql"
    ? { isolationLevel: "read committed" }
    : undefined
  const holds = `${prefix}holds`
  const ledger = `${prefix}ledger`
  const accounts = `${prefix}accounts`
  const tokens = `${prefix}tokens`
  const { accountId, actual, estimate: P, holdId, tokenId } = input
  const ledgerRow = (at: number, kind: string, sourceId: string, subjectId: string, amount: number, after: number) => ({
    at,
    kind,
    source_id: sourceId,
    subject_id: subjectId,
    account_id: accountId,
    hold_id: holdId,
    amount,
    balance_after: after,
    unbilled: null,
    note: null,
    idempotency_key: null
  })
  /** An UPDATE … RETURNING column, or (MySQL) the UPDATE then a read of the row. */
  const updateReturning = async (
    trx: Knex.Transaction,
    table: string,
    id: string,
    query: Knex.QueryBuilder,
    column: string
  ): Promise<number | undefined> => {
    if (dialect !== "mysql") return one(await query.returning([column]), column)
    const changed = (await query) as unknown as number
    if (changed !== 1) return undefined
    return one(await trx(table).where({ id }).select(column), column)
  }

  phase?.("open")
  await withRetry(() =>
    knex.transaction(async (trx) => {
      const createdAt = Date.now()
      const remain = await updateReturning(
        trx,
        tokens,
        tokenId,
        trx(tokens)
          .where({ id: tokenId, account_id: accountId })
          .whereRaw("not unlimited")
          .andWhere("used", "<=", MAX - P)
          .andWhere("remain", ">=", P)
          .update({ remain: trx.raw("remain - ?", [P]), used: trx.raw("used + ?", [P]) }),
        "remain"
      )
      if (remain === undefined) throw new BaselineError(`token ${tokenId}: budget exceeded`)
      const balance = await updateReturning(
        trx,
        accounts,
        accountId,
        trx(accounts)
          .where({ id: accountId })
          .andWhere("balance", ">=", P)
          .andWhere("balance", ">", 0)
          .update({ balance: trx.raw("balance - ?", [P]) }),
        "balance"
      )
      const at = Date.now()
      if (balance === undefined) throw new BaselineError(`account ${accountId}: insufficient funds`)
      await trx(holds).insert({
        id: holdId,
        account_id: accountId,
        token_id: tokenId,
        estimate: P,
        reserved: P,
        preference: "wallet_only",
        trusted: false,
        status: "pending",
        parts: holdPartsJson(input),
        created_at: createdAt,
        expires_at: createdAt + HOLD_TTL_MILLIS,
        resolved_at: null,
        settlement: null,
        metadata: null
      }).onConflict("id").ignore()
      await trx(ledger).insert([
        ledgerRow(at, "reserve", "token", tokenId, -P, remain),
        ledgerRow(at, "reserve", "wallet", accountId, -P, balance)
      ])
    }, trxConfig)
  )
  state.opened = true

  phase?.("settle")
  await withRetry(() =>
    knex.transaction(async (trx) => {
      const c = P - actual
      const tokenAfter = await updateReturning(
        trx,
        tokens,
        tokenId,
        trx(tokens)
          .where({ id: tokenId })
          .andWhere("remain", "<=", MAX - c)
          .andWhere("used", ">=", c - MAX)
          .update({ remain: trx.raw("remain + ?", [c]), used: trx.raw("used - ?", [c]) }),
        "remain"
      )
      if (tokenAfter === undefined) throw new BaselineError(`token ${tokenId}: settle matched no row`)
      const walletAfter = await updateReturning(
        trx,
        accounts,
        accountId,
        trx(accounts)
          .where({ id: accountId })
          .andWhere("balance", "<=", MAX - c)
          .update({ balance: trx.raw("balance + ?", [c]) }),
        "balance"
      )
      if (walletAfter === undefined) throw new BaselineError(`account ${accountId}: settle matched no row`)
      await trx(accounts)
        .where({ id: accountId })
        .andWhere("used_quota", "<=", MAX - actual)
        .andWhere("request_count", "<=", MAX - 1)
        .update({ used_quota: trx.raw("used_quota + ?", [actual]), request_count: trx.raw("request_count + ?", [1]) })
      const now = Date.now()
      const changed = await trx(holds).where({ id: holdId, status: "pending" }).update({
        status: "settled",
        reserved: P,
        trusted: false,
        parts: holdPartsJson(input),
        resolved_at: now,
        settlement: settlementJson(input, walletAfter, tokenAfter, now)
      })
      if (changed !== 1) throw new BaselineError(`hold ${holdId} was not pending`)
      await trx(ledger).insert([
        ledgerRow(now, "settle", "token", tokenId, c, tokenAfter),
        ledgerRow(now, "settle", "wallet", accountId, c, walletAfter)
      ])
    }, trxConfig)
  )
}
