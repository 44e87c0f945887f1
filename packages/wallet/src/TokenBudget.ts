/**
 * Token (API-key) budgets on knex: a cap, not money. A limited token reserves
 * with one conditional UPDATE (`remain >= ?`); an unlimited token reserves
 * nothing and still moves `remain`/`used` at settlement, so it doubles as a
 * usage counter. Idempotent by hold id; ledger rows in the same transaction.
 *
 * @since 0.1.0
 */
import { Clock, Effect } from "effect"
import { BillingError } from "@relay-billing/core"
import type { Budget, FundingSource, Source } from "@relay-billing/core"
import { Corrections, KnexLedger, LateCharges, PartRecords, Statements } from "@relay-billing/knex"
import type { KnexClient } from "@relay-billing/knex"
import { readBalance, refuseOutOfRange, resolved, withinRange } from "./internal/rows.js"
import { makeTokenSource } from "./internal/tokenSource.js"

/**
 * Builds the token budget over a client.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (client: KnexClient.Client, options: { readonly id?: string } = {}): Budget.Budget => {
  const id = options.id ?? "token"
  const tokens = client.table("tokens")
  const tx = client.transaction

  const readToken = (tokenId: string, operation: string) =>
    client.query(operation, (db) => db(tokens).where({ id: tokenId }).first("remain", "unlimited", "account_id")).pipe(
      Effect.map((row) =>
        row
          ? { remain: Number(row.remain), unlimited: Boolean(row.unlimited), accountId: String(row.account_id) }
          : undefined
      )
    )

  /** Both counters stay within ±(2^53−1) (spec §2.10). */
  const rangeChecks = (change: number) => [
    { column: "remain", field: "token.remain", change },
    { column: "used", field: "token.used", change: -change }
  ]

  /**
   * remain += change, used −= change, only while both stay within ±(2^53−1)
   * (otherwise `QuotaOutOfRange`, nothing written); returns remain after.
   */
  const move = (tokenId: string, change: number, operation: string) =>
    Statements.updateReturning(
      client,
      operation,
      tokens,
      (q) => withinRange(withinRange(q.where({ id: tokenId }), "remain", change), "used", -change),
      { remain: client.knex.raw("remain + ?", [change]), used: client.knex.raw("used - ?", [change]) },
      "remain",
      { id: tokenId }
    ).pipe(
      Effect.flatMap((r) =>
        r !== undefined
          ? Effect.succeed(r)
          : Effect.map(refuseOutOfRange(client, tokens, rangeChecks(change), tokenId, operation), () => 0)
      )
    )

  const ledger = (
    kind: "reserve" | "settle" | "refund" | "expire" | "release" | "late_settle",
    req: { readonly holdId: string; readonly accountId: string },
    tokenId: string,
    amount: number,
    balanceAfter: number,
    idempotencyKey?: string
  ) =>
    amount === 0 ? Effect.void : Effect.flatMap(Clock.currentTimeMillis, (at) =>
      KnexLedger.append(client, [{
        at,
        kind,
        sourceId: id,
        subjectId: tokenId,
        accountId: req.accountId,
        holdId: req.holdId,
        amount,
        balanceAfter,
        ...(idempotencyKey !== undefined ? { idempotencyKey } : {})
      }]))

  return {
    id,
    storeId: client.id,
    remaining: (tokenId) =>
      readToken(tokenId, `${id}.remaining`).pipe(
        Effect.map((t) => ({ unlimited: t?.unlimited ?? false, remaining: t?.remain ?? 0 }))
      ),
    reserve: (req) =>
      tx(Effect.gen(function*() {
        const replay = yield* PartRecords.claimOrReplay(client, {
          sourceId: id,
          holdId: req.holdId,
          subjectId: req.subjectId,
          amount: req.amount
        })
        if (replay) return replay
        const remain = yield* Statements.updateReturning(
          client,
          `${id}.reserve`,
          tokens,
          (q) => {
            // The account is in the conditional write too: a token of another account never matches.
            const own = withinRange(
              q.where({ id: req.subjectId, account_id: req.accountId, unlimited: false }),
              "used",
              req.amount
            )
            return req.unconditional ? own : own.andWhere("remain", ">=", req.amount)
          },
          { remain: client.knex.raw("remain - ?", [req.amount]), used: client.knex.raw("used + ?", [req.amount]) },
          "remain",
          { id: req.subjectId }
        )
        if (remain !== undefined) {
          yield* ledger("reserve", req, req.subjectId, -req.amount, remain)
          return { amount: req.amount }
        }
        const token = yield* readToken(req.subjectId, `${id}.reserve`)
        // A token belongs to one account (§2.9): another account's token is not found for it.
        if (token && token.accountId !== req.accountId) {
          yield* PartRecords.remove(client, id, req.holdId)
          return yield* new BillingError.TokenNotFound({ tokenId: req.subjectId, accountId: req.accountId })
        }
        if (!token || !token.unlimited) {
          yield* PartRecords.remove(client, id, req.holdId)
          if (token) {
            // The bound on `used` (§2.10) may be what failed; otherwise the budget is short.
            yield* refuseOutOfRange(
              client,
              tokens,
              [{ column: "used", field: "token.used", change: req.amount }],
              req.subjectId,
              `${id}.reserve`,
              true
            )
          }
          return yield* new BillingError.TokenBudgetExceeded({
            budgetId: id,
            tokenId: req.subjectId,
            required: req.amount,
            remaining: token?.remain ?? 0
          })
        }
        // Unlimited: nothing is held (the claim recorded the requested amount; record 0).
        yield* client.query(`${id}.reserve`, (db) =>
          db(client.table("hold_parts")).where({ source_id: id, hold_id: req.holdId }).update({ amount: 0 }))
        return { amount: 0 }
      })),
    settle: (req) =>
      tx(Effect.gen(function*() {
        const part = yield* PartRecords.get(client, id, req.holdId)
        if (!part) {
          return yield* new BillingError.StoreError({ operation: `${id}.settle`, detail: `no reservation for hold ${req.holdId}` })
        }
        if (part.status === "settled" && part.result) return part.result
        if (part.status === "refunded") return yield* resolved(req.holdId, "settle")
        const change = part.amount - req.actual
        const balanceAfter = change === 0
          ? (yield* readBalance(client, tokens, "remain", part.subjectId, `${id}.settle`)) ?? 0
          : yield* move(part.subjectId, change, `${id}.settle`)
        yield* ledger("settle", req, part.subjectId, change, balanceAfter)
        const result: FundingSource.PartResult = { charged: req.actual, unbilled: 0, balanceAfter }
        yield* PartRecords.markSettled(client, id, req.holdId, result)
        return result
      })),
    refund: (req) =>
      tx(Effect.gen(function*() {
        const part = yield* PartRecords.get(client, id, req.holdId)
        if (!part || part.status !== "reserved") return
        if (part.amount > 0) {
          // Giving a reservation back returns to counters that were in range.
          const after = yield* move(part.subjectId, part.amount, `${id}.refund`).pipe(
            Effect.catchTag("QuotaOutOfRange", (e) =>
              Effect.fail(new BillingError.StoreError({ operation: `${id}.refund`, detail: e.message })))
          )
          yield* ledger(req.reason, req, part.subjectId, part.amount, after)
        }
        yield* PartRecords.end(client, id, req.holdId, req.reason)
      })),
    // §6: a settle after the expiry charges the token the whole cost again (remain down,
    // used up; unlimited tokens count usage too), once per hold (keyed ledger row).
    lateSettle: (req) =>
      tx(Effect.gen(function*() {
        const tokenId = req.part.subjectId
        const done = yield* LateCharges.replay(client, { sourceId: id, holdId: req.holdId, subjectId: tokenId, amount: req.amount })
        if (done) return done
        const token = yield* readToken(tokenId, `${id}.lateSettle`)
        if (!token) return { charged: 0, unbilled: req.amount }
        const after = yield* move(tokenId, -req.amount, `${id}.lateSettle`)
        yield* ledger("late_settle", req, tokenId, -req.amount, after, LateCharges.key(id, req.holdId))
        const result: FundingSource.PartResult = { charged: req.amount, unbilled: 0, balanceAfter: after }
        return result
      })),
    correct: (req) =>
      tx(Effect.gen(function*() {
        // A repeat of (hold, correction id) answers the row the first one wrote.
        const [done] = yield* Corrections.recorded(client, id, req.holdId, req.correctionId)
        if (done) return { corrected: done.amount, balanceAfter: done.balanceAfter }
        const token = yield* readToken(req.part.subjectId, `${id}.correct`)
        if (!token) {
          return yield* new BillingError.StoreError({ operation: `${id}.correct`, detail: `no token ${req.part.subjectId}` })
        }
        const balanceAfter = yield* move(req.part.subjectId, req.amount, `${id}.correct`)
        const at = yield* Clock.currentTimeMillis
        yield* KnexLedger.append(client, [{
          at,
          kind: "correction",
          sourceId: id,
          subjectId: req.part.subjectId,
          accountId: req.accountId,
          holdId: req.holdId,
          amount: req.amount,
          balanceAfter,
          idempotencyKey: Corrections.key(id, req.holdId, req.correctionId)
        }])
        return { corrected: req.amount, balanceAfter }
      }))
  }
}

/**
 * The token budget as a v2 `Source` (role `budget`): the token's `remain` and
 * `used` columns. A take is one conditional UPDATE (the token's account, not
 * unlimited, `remain >= ?` unless unconditional; `RETURNING` remain); an
 * unlimited token takes nothing and still moves at settlement, so it counts
 * usage. A move is one bounded UPDATE. No hold ids, no ledger rows: the engine
 * keeps both.
 *
 * @since 0.4.0
 * @category constructors
 */
export const source = (options: { readonly id?: string } = {}): Source.Source => makeTokenSource(options)
