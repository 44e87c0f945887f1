/**
 * The raw baseline: the same logical writes as one SDK session (open + settle),
 * hand-written with knex on the same knex instance (same driver, same pool),
 * into a second set of tables created by the SDK's own migrations (prefix
 * `raw_`), so every row has the shape the SDK writes.
 *
 * Open, one transaction:
 *   1. INSERT the hold row (status pending, final parts JSON and reserved amount)
 *   2. UPDATE tokens SET remain -= P, used += P WHERE id AND NOT unlimited AND remain >= P RETURNING remain
 *   3. INSERT the token ledger row (reserve, −P, balance_after = remain)
 *   4. UPDATE accounts SET balance -= P WHERE id AND balance >= P AND balance > 0 RETURNING balance
 *   5. INSERT the wallet ledger row (reserve, −P, balance_after = balance)
 *   6. INSERT both part records (wallet, token; status reserved) in one statement
 * Settle, a second transaction (the hold comes from open, as the SDK's session handle has it):
 *   1. UPDATE tokens SET remain += P − actual, used −= P − actual RETURNING remain
 *   2. INSERT the token ledger row (settle, P − actual)
 *   3. UPDATE accounts SET balance -= delta RETURNING balance   (delta = actual − P)
 *   4. INSERT the wallet ledger row (settle, −delta)
 *   5. UPDATE accounts SET used_quota += actual, request_count += 1 (the counters)
 *   6–7. UPDATE each part record: status settled, result JSON
 *   8. UPDATE the hold SET status settled, resolved_at, settlement JSON WHERE id AND status = 'pending'
 *      (0 rows → the transaction fails: the hold resolves exactly once)
 *
 * Both transactions lock the token row before the account row. (The SDK's
 * settle, like the order first sketched for this baseline, updates the account
 * before the token while open locks the token first: on PostgreSQL, concurrent
 * sessions on one account then deadlock. A hand-written loop would not ship
 * that, so the baseline takes the locks in one order; the statements and rows
 * are the same. See README "Findings".)
 *
 * Deadlocks and serialization failures retry the whole transaction with the
 * SDK's policy (up to 8 times, exponential from 5 ms, jittered).
 */
import type { Knex } from "knex"
import type { SessionInput } from "./workload.js"

const HOLD_TTL_MILLIS = 10 * 60 * 1000

const retryable = (error: unknown) => {
  const code = (error as { code?: unknown } | undefined)?.code
  return code === "40P01" || code === "40001" || (typeof code === "string" && code.startsWith("SQLITE_BUSY"))
}

export const rawRetries = { count: 0 }

/**
 * `BENCH_RAW_LOCK_ORDER=sdk` makes the raw settle update the account before the
 * token, as the SDK's settle does (open locks the token first): to reproduce
 * the deadlocks that order causes on PostgreSQL with a hot account.
 */
const accountFirstInSettle = process.env["BENCH_RAW_LOCK_ORDER"] === "sdk"

const withRetry = async <A>(f: () => Promise<A>): Promise<A> => {
  for (let attempt = 0;; attempt++) {
    try {
      return await f()
    } catch (error) {
      if (attempt >= 8 || !retryable(error)) throw error
      rawRetries.count++
      const wait = 5 * 2 ** attempt * (0.8 + Math.random() * 0.4)
      await new Promise((resolve) => setTimeout(resolve, wait))
    }
  }
}

class RawError extends Error {}

const one = (rows: unknown, column: string): number | undefined => {
  const row = (rows as Array<Record<string, unknown>>)[0]
  return row === undefined ? undefined : Number(row[column])
}

/** Marks the boundary between open and settle (for the statement counter). */
export type PhaseHook = (phase: "open" | "settle") => void

/** Runs one session; resolves once settled. `opened` is set when the open transaction committed. */
export const rawSession = async (
  knex: Knex,
  prefix: string,
  input: SessionInput,
  state: { opened: boolean },
  phase?: PhaseHook
): Promise<void> => {
  const holds = `${prefix}holds`
  const parts = `${prefix}hold_parts`
  const ledger = `${prefix}ledger`
  const accounts = `${prefix}accounts`
  const tokens = `${prefix}tokens`
  const { accountId, actual, estimate: P, holdId, tokenId } = input
  const holdParts = [
    { kind: "funding", sourceId: "wallet", subjectId: accountId, amount: P },
    { kind: "budget", sourceId: "token", subjectId: tokenId, amount: P }
  ]
  const ledgerRow = (
    at: number,
    kind: string,
    sourceId: string,
    subjectId: string,
    amount: number,
    balanceAfter: number
  ) => ({
    at,
    kind,
    source_id: sourceId,
    subject_id: subjectId,
    account_id: accountId,
    hold_id: holdId,
    amount,
    balance_after: balanceAfter,
    unbilled: null,
    note: null,
    idempotency_key: null
  })

  phase?.("open")
  const createdAt = Date.now()
  await withRetry(() =>
    knex.transaction(async (trx) => {
      const at = Date.now()
      await trx(holds).insert({
        id: holdId,
        account_id: accountId,
        token_id: tokenId,
        estimate: P,
        reserved: P,
        preference: "wallet_only",
        trusted: false,
        status: "pending",
        parts: JSON.stringify(holdParts),
        created_at: createdAt,
        expires_at: createdAt + HOLD_TTL_MILLIS,
        resolved_at: null,
        settlement: null,
        metadata: null
      })
      const remain = one(
        await trx(tokens)
          .where({ id: tokenId, unlimited: false })
          .andWhere("remain", ">=", P)
          .update({ remain: trx.raw("remain - ?", [P]), used: trx.raw("used + ?", [P]) }, ["remain"]),
        "remain"
      )
      if (remain === undefined) throw new RawError(`token ${tokenId}: budget exceeded`)
      await trx(ledger).insert(ledgerRow(at, "reserve", "token", tokenId, -P, remain))
      const balance = one(
        await trx(accounts)
          .where({ id: accountId })
          .andWhere("balance", ">=", P)
          .andWhere("balance", ">", 0)
          .update({ balance: trx.raw("balance - ?", [P]) }, ["balance"]),
        "balance"
      )
      if (balance === undefined) throw new RawError(`account ${accountId}: insufficient funds`)
      await trx(ledger).insert(ledgerRow(at, "reserve", "wallet", accountId, -P, balance))
      await trx(parts).insert(holdParts.map((p) => ({
        source_id: p.sourceId,
        hold_id: holdId,
        subject_id: p.subjectId,
        amount: P,
        ref: null,
        status: "reserved",
        result: null
      })))
    })
  )
  state.opened = true

  phase?.("settle")
  await withRetry(() =>
    knex.transaction(async (trx) => {
      const now = Date.now()
      const change = P - actual
      const delta = actual - P
      const settleToken = async () => {
        const after = one(
          await trx(tokens).where({ id: tokenId }).update({
            remain: trx.raw("remain + ?", [change]),
            used: trx.raw("used - ?", [change])
          }, ["remain"]),
          "remain"
        )
        if (after === undefined) throw new RawError(`token ${tokenId} vanished`)
        await trx(ledger).insert(ledgerRow(now, "settle", "token", tokenId, change, after))
        return after
      }
      const settleWallet = async () => {
        const after = one(
          await trx(accounts).where({ id: accountId }).update({ balance: trx.raw("balance + ?", [-delta]) }, [
            "balance"
          ]),
          "balance"
        )
        if (after === undefined) throw new RawError(`account ${accountId} vanished`)
        await trx(ledger).insert(ledgerRow(now, "settle", "wallet", accountId, -delta, after))
        return after
      }
      let tokenAfter: number
      let walletAfter: number
      if (accountFirstInSettle) {
        walletAfter = await settleWallet()
        tokenAfter = await settleToken()
      } else {
        tokenAfter = await settleToken()
        walletAfter = await settleWallet()
      }
      await trx(accounts).where({ id: accountId }).update({
        used_quota: trx.raw("used_quota + ?", [actual]),
        request_count: trx.raw("request_count + ?", [1])
      })
      const walletResult = { charged: actual, unbilled: 0, balanceAfter: walletAfter }
      const tokenResult = { charged: actual, unbilled: 0, balanceAfter: tokenAfter }
      await trx(parts).where({ source_id: "wallet", hold_id: holdId }).update({
        status: "settled",
        result: JSON.stringify(walletResult)
      })
      await trx(parts).where({ source_id: "token", hold_id: holdId }).update({
        status: "settled",
        result: JSON.stringify(tokenResult)
      })
      const settlement = {
        holdId,
        actual,
        reserved: P,
        delta,
        parts: [
          { kind: "funding", sourceId: "wallet", subjectId: accountId, reserved: P, ...walletResult },
          { kind: "budget", sourceId: "token", subjectId: tokenId, reserved: P, ...tokenResult }
        ],
        settledAt: now
      }
      const changed = await trx(holds).where({ id: holdId, status: "pending" }).update({
        status: "settled",
        resolved_at: now,
        settlement: JSON.stringify(settlement)
      })
      if (changed !== 1) throw new RawError(`hold ${holdId} was not pending`)
    })
  )
}
