/**
 * The wallet funding source on knex. Reserve is one conditional
 * `UPDATE accounts SET balance = balance − ? WHERE id = ? AND balance >= ? AND balance > 0`
 * checked by affected rows (never read-then-write); settle and refund are
 * idempotent by hold id through the part records; every balance change writes
 * its ledger row in the same transaction.
 *
 * @since 0.1.0
 */
import { Clock, Effect } from "effect"
import { BillingError } from "@relay-billing/core"
import type { FundingSource, Source } from "@relay-billing/core"
import { Corrections, KnexLedger, LateCharges, PartRecords, Statements } from "@relay-billing/knex"
import type { KnexClient } from "@relay-billing/knex"
import { readBalance, refuseOutOfRange, resolved, withinRange } from "./internal/rows.js"
import { makeWalletSource } from "./internal/walletSource.js"

/**
 * Options of the wallet source.
 *
 * @since 0.1.0
 * @category models
 */
export interface WalletOptions {
  /** Source id (default `"wallet"`). */
  readonly id?: string
  /**
   * Settlement policy: by default an extra charge may take the balance below zero
   * (the answer was already delivered). With `floorAtZero` the charge stops at
   * zero and the rest is recorded in the ledger as unbilled.
   */
  readonly floorAtZero?: boolean
}

/**
 * Builds the wallet source over a client.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (client: KnexClient.Client, options: WalletOptions = {}): FundingSource.FundingSource => {
  const id = options.id ?? "wallet"
  const accounts = client.table("accounts")
  const tx = client.transaction

  /** balance += change on one account; returns the balance after (one statement where RETURNING exists). */
  const move = (accountId: string, change: number, operation: string) =>
    Statements.updateReturning(
      client,
      operation,
      accounts,
      (q) => q.where({ id: accountId }),
      { balance: client.knex.raw("balance + ?", [change]) },
      "balance",
      { id: accountId }
    )

  /**
   * balance += change, only while the result stays within ±(2^53−1); otherwise
   * `QuotaOutOfRange` and nothing written (spec §2.10).
   */
  const boundedMove = (accountId: string, change: number, operation: string) =>
    Effect.flatMap(
      Statements.updateReturning(
        client,
        operation,
        accounts,
        (q) => withinRange(q.where({ id: accountId }), "balance", change),
        { balance: client.knex.raw("balance + ?", [change]) },
        "balance",
        { id: accountId }
      ),
      (after) =>
        after !== undefined
          ? Effect.succeed(after)
          : refuseOutOfRange(client, accounts, [{ column: "balance", field: "wallet.balance", change }], accountId, operation)
    )

  return {
    id,
    storeId: client.id,
    balance: (accountId) => readBalance(client, accounts, "balance", accountId, `${id}.balance`).pipe(
      Effect.map((b) => b ?? 0)
    ),
    reserve: (req) =>
      tx(Effect.gen(function*() {
        // Claim the hold id first: one statement on the normal path, and a repeated
        // reserve finds the existing record instead of debiting twice.
        const replay = yield* PartRecords.claimOrReplay(client, {
          sourceId: id,
          holdId: req.holdId,
          subjectId: req.accountId,
          amount: req.amount
        })
        if (replay) return replay
        // Split funding: take what the wallet has (read under a row lock), up to the amount.
        let amount: number = req.amount
        if (req.partial) {
          const current = (yield* readBalance(client, accounts, "balance", req.accountId, `${id}.reserve`, true)) ?? 0
          if (current > 0) amount = Math.min(current, req.amount)
        }
        const balance = yield* Statements.updateReturning(
          client,
          `${id}.reserve`,
          accounts,
          (q) =>
            req.unconditional
              ? q.where({ id: req.accountId })
              : q.where({ id: req.accountId }).andWhere("balance", ">=", amount).andWhere("balance", ">", 0),
          { balance: client.knex.raw("balance - ?", [amount]) },
          "balance",
          { id: req.accountId }
        )
        if (balance === undefined) {
          yield* PartRecords.remove(client, id, req.holdId)
          const available = yield* readBalance(client, accounts, "balance", req.accountId, `${id}.reserve`)
          return yield* new BillingError.InsufficientFunds({
            sourceId: id,
            accountId: req.accountId,
            required: req.amount,
            available: available ?? 0
          })
        }
        if (amount !== req.amount) {
          yield* client.query(`${id}.part.amount`, (db) =>
            db(client.table("hold_parts")).where({ source_id: id, hold_id: req.holdId }).update({ amount }))
        }
        if (amount > 0) {
          const now = yield* Clock.currentTimeMillis
          yield* KnexLedger.append(client, [{
            at: now,
            kind: "reserve",
            sourceId: id,
            subjectId: req.accountId,
            accountId: req.accountId,
            holdId: req.holdId,
            amount: -amount,
            balanceAfter: balance
          }])
        }
        return { amount }
      })),
    settle: (req) =>
      tx(Effect.gen(function*() {
        const part = yield* PartRecords.get(client, id, req.holdId)
        if (!part) {
          return yield* new BillingError.StoreError({ operation: `${id}.settle`, detail: `no reservation for hold ${req.holdId}` })
        }
        if (part.status === "settled" && part.result) return part.result
        if (part.status === "refunded") return yield* resolved(req.holdId, "settle")
        let delta = req.actual - part.amount
        let unbilled = 0
        if (options.floorAtZero && delta > 0) {
          const current = (yield* readBalance(client, accounts, "balance", part.subjectId, `${id}.settle`, true)) ?? 0
          const payable = Math.min(delta, Math.max(0, current))
          unbilled = delta - payable
          delta = payable
        }
        const now = yield* Clock.currentTimeMillis
        const balanceAfter = delta === 0
          ? (yield* readBalance(client, accounts, "balance", part.subjectId, `${id}.settle`)) ?? 0
          : (yield* boundedMove(part.subjectId, -delta, `${id}.settle`)) ?? 0
        const base = { sourceId: id, subjectId: part.subjectId, accountId: req.accountId, holdId: req.holdId, at: now }
        yield* KnexLedger.append(client, [
          ...(delta !== 0 ? [{ ...base, kind: "settle" as const, amount: -delta, balanceAfter }] : []),
          ...(unbilled > 0 ? [{ ...base, kind: "unbilled" as const, amount: 0, balanceAfter, unbilled }] : [])
        ])
        const result: FundingSource.PartResult = { charged: part.amount + delta, unbilled, balanceAfter }
        yield* PartRecords.markSettled(client, id, req.holdId, result)
        return result
      })),
    refund: (req) =>
      tx(Effect.gen(function*() {
        const part = yield* PartRecords.get(client, id, req.holdId)
        if (!part || part.status !== "reserved") return
        const now = yield* Clock.currentTimeMillis
        if (part.amount > 0) {
          const balanceAfter = (yield* move(part.subjectId, part.amount, `${id}.refund`)) ?? 0
          yield* KnexLedger.append(client, [{
            at: now,
            kind: req.reason,
            sourceId: id,
            subjectId: part.subjectId,
            accountId: req.accountId,
            holdId: req.holdId,
            amount: part.amount,
            balanceAfter
          }])
        }
        yield* PartRecords.end(client, id, req.holdId, req.reason)
      })),
    // §6: a settle after the expiry charges the whole share again, without a balance
    // condition (floored at zero with `floorAtZero`, the rest recorded unbilled). The rows
    // carry idempotency keys: a repeat (also as an external source) answers the first result.
    lateSettle: (req) =>
      tx(Effect.gen(function*() {
        const accountId = req.part.subjectId
        const done = yield* LateCharges.replay(client, { sourceId: id, holdId: req.holdId, subjectId: accountId, amount: req.amount })
        if (done) return done
        let amount: number = req.amount
        let unbilled = 0
        if (options.floorAtZero) {
          const current = (yield* readBalance(client, accounts, "balance", accountId, `${id}.lateSettle`, true)) ?? 0
          amount = Math.min(amount, Math.max(0, current))
          unbilled = req.amount - amount
        }
        const balanceAfter = amount === 0
          ? (yield* readBalance(client, accounts, "balance", accountId, `${id}.lateSettle`)) ?? 0
          : (yield* boundedMove(accountId, -amount, `${id}.lateSettle`)) ?? 0
        const at = yield* Clock.currentTimeMillis
        const base = { sourceId: id, subjectId: accountId, accountId: req.accountId, holdId: req.holdId, at, balanceAfter }
        yield* KnexLedger.append(client, [
          ...(amount > 0 ? [{ ...base, kind: "late_settle" as const, amount: -amount, idempotencyKey: LateCharges.key(id, req.holdId, 0) }] : []),
          ...(unbilled > 0
            ? [{ ...base, kind: "unbilled" as const, amount: 0, unbilled, idempotencyKey: LateCharges.key(id, req.holdId, 1) }]
            : [])
        ])
        const result: FundingSource.PartResult = { charged: amount, unbilled, balanceAfter }
        return result
      })),
    correct: (req) =>
      tx(Effect.gen(function*() {
        // A repeat of (hold, correction id) answers the row the first one wrote.
        const [done] = yield* Corrections.recorded(client, id, req.holdId, req.correctionId)
        if (done) return { corrected: done.amount, balanceAfter: done.balanceAfter }
        const balanceAfter = yield* credit(client, {
          accountId: req.part.subjectId,
          amount: req.amount,
          holdId: req.holdId,
          sourceId: id,
          idempotencyKey: Corrections.key(id, req.holdId, req.correctionId)
        })
        if (balanceAfter === undefined) {
          return yield* new BillingError.StoreError({ operation: `${id}.correct`, detail: `no account ${req.part.subjectId}` })
        }
        return { corrected: req.amount, balanceAfter }
      }))
  }
}

/**
 * Gives `amount` back to an account's wallet as a correction of a settled
 * charge (billing-semantics §4.4), in the current transaction, with its
 * `correction` ledger row (carrying `idempotencyKey`, unique in the ledger).
 * Returns the balance after, or `undefined` when the account does not exist.
 *
 * @since 0.2.0
 * @category mutations
 */
export const credit = (
  client: KnexClient.Client,
  input: {
    readonly accountId: string
    readonly amount: number
    readonly holdId: string
    readonly idempotencyKey: string
    readonly note?: string
    readonly sourceId?: string
  }
): Effect.Effect<number | undefined, BillingError.QuotaOutOfRange | BillingError.StoreError> =>
  Effect.gen(function*() {
    const sourceId = input.sourceId ?? "wallet"
    const balanceAfter = yield* Statements.updateReturning(
      client,
      `${sourceId}.correct`,
      client.table("accounts"),
      // The balance stays within ±(2^53−1) (§2.10): a credit past it is refused typed, nothing written.
      (q) => withinRange(q.where({ id: input.accountId }), "balance", input.amount),
      { balance: client.knex.raw("balance + ?", [input.amount]) },
      "balance",
      { id: input.accountId }
    )
    if (balanceAfter === undefined) {
      yield* refuseOutOfRange(client, client.table("accounts"), [
        { column: "balance", field: "wallet.balance", change: input.amount }
      ], input.accountId, `${sourceId}.correct`, true)
      return undefined
    }
    const at = yield* Clock.currentTimeMillis
    yield* KnexLedger.append(client, [{
      at,
      kind: "correction",
      sourceId,
      subjectId: input.accountId,
      accountId: input.accountId,
      holdId: input.holdId,
      amount: input.amount,
      balanceAfter,
      idempotencyKey: input.idempotencyKey,
      ...(input.note !== undefined ? { note: input.note } : {})
    }])
    return balanceAfter
  })

/**
 * Charges `amount` to an account's wallet outside any reservation of the wallet
 * source, in the current transaction, with its ledger row (for example a
 * subscription's overflow above its total). No floor: the balance may go
 * negative, as for any settlement. Returns the balance after, or `undefined`
 * when the account does not exist.
 *
 * @since 0.1.0
 * @category mutations
 */
export const charge = (
  client: KnexClient.Client,
  input: {
    readonly accountId: string
    readonly amount: number
    readonly holdId?: string
    readonly note: string
    readonly sourceId?: string
    /** The ledger kind (default `settle`; `late_settle` for a late charge's overflow, §6). */
    readonly kind?: "settle" | "late_settle"
    /** An idempotency key for the ledger row (unique in the ledger). */
    readonly idempotencyKey?: string
  }
): Effect.Effect<number | undefined, BillingError.QuotaOutOfRange | BillingError.StoreError> =>
  Effect.gen(function*() {
    const sourceId = input.sourceId ?? "wallet"
    const operation = `${sourceId}.charge`
    const balanceAfter = yield* Statements.updateReturning(
      client,
      operation,
      client.table("accounts"),
      (q) => withinRange(q.where({ id: input.accountId }), "balance", -input.amount),
      { balance: client.knex.raw("balance - ?", [input.amount]) },
      "balance",
      { id: input.accountId }
    )
    if (balanceAfter === undefined) {
      // No such account, or (QuotaOutOfRange, nothing written) the balance would leave ±(2^53−1).
      return yield* refuseOutOfRange(
        client,
        client.table("accounts"),
        [{ column: "balance", field: "wallet.balance", change: -input.amount }],
        input.accountId,
        operation
      )
    }
    const at = yield* Clock.currentTimeMillis
    yield* KnexLedger.append(client, [{
      at,
      kind: input.kind ?? "settle",
      sourceId,
      subjectId: input.accountId,
      accountId: input.accountId,
      ...(input.holdId !== undefined ? { holdId: input.holdId } : {}),
      amount: -input.amount,
      balanceAfter,
      note: input.note,
      ...(input.idempotencyKey !== undefined ? { idempotencyKey: input.idempotencyKey } : {})
    }])
    return balanceAfter
  })

/**
 * Options of the wallet as a v2 `Source`.
 *
 * @since 0.4.0
 * @category models
 */
export interface SourceOptions {
  /** Source id (default `"wallet"`). */
  readonly id?: string
  /**
   * Settlement policy: by default a charge may take the balance below zero (the
   * answer was already delivered). With `floorAtZero` a settle or late charge
   * stops at zero and answers what it moved; the engine records the rest.
   */
  readonly floorAtZero?: boolean
}

/**
 * The wallet as a v2 `Source` (role `funding`): the account's `balance`
 * column. A take is one conditional `UPDATE … WHERE balance >= ? AND balance > 0`
 * (`RETURNING` the balance; on MySQL the UPDATE and a read of the row), a move
 * one bounded `UPDATE`. It keeps no hold ids and writes no ledger rows: the
 * engine does both from what it answers.
 *
 * @since 0.4.0
 * @category constructors
 */
export const source = (options: SourceOptions = {}): Source.Source =>
  makeWalletSource(options)
