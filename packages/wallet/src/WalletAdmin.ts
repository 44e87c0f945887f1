/**
 * Admin operations on the money of accounts and on tokens: create an account
 * with an opening balance (the row through `Accounts` of `@relay-billing/knex`),
 * top up (idempotent by key), adjust, create and adjust tokens, read balances.
 * The account's own settings (low-balance threshold, split funding) are
 * `Accounts`'. Every input is
 * decoded with Schema (a typed `InvalidInput` naming the field and value, and
 * nothing written); every balance change writes a ledger row in the same
 * transaction.
 *
 * @since 0.1.0
 */
import { BillingError, Input, Quota } from "@relay-billing/core"
import { Accounts, KnexClient, KnexLedger } from "@relay-billing/knex"
import { Clock, Context, Effect, Layer, Predicate, Schema } from "effect"
import type { AccountExists } from "./WalletError.js"
import { AccountNotFound, TokenExists, TokenNotFound } from "./WalletError.js"

const Id = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(191))
const Positive = Quota.Quota.check(Schema.isGreaterThan(0))
const NonZero = Quota.SignedQuota.check(Schema.makeFilter((n: number) => n !== 0 || "expected a non-zero amount"))

/**
 * @since 0.1.0
 * @category schemas
 */
export const CreateAccount = Schema.Struct({
  id: Id,
  balance: Schema.optionalKey(Quota.Quota),
  lowBalanceThreshold: Schema.optionalKey(Quota.Quota)
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const TopUp = Schema.Struct({ accountId: Id, amount: Positive, key: Id })

/**
 * @since 0.1.0
 * @category schemas
 */
export const Adjust = Schema.Struct({
  accountId: Id,
  amount: NonZero,
  reason: Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(255)),
  key: Schema.optionalKey(Id)
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const CreateToken = Schema.Struct({
  id: Id,
  accountId: Id,
  remain: Schema.optionalKey(Quota.Quota),
  unlimited: Schema.optionalKey(Schema.Boolean)
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const AdjustToken = Schema.Struct({
  tokenId: Id,
  amount: NonZero,
  reason: Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(255))
})

/**
 * An account with its wallet balance.
 *
 * @since 0.1.0
 * @category models
 */
export interface Account extends Accounts.Account {
  readonly balance: number
}

/**
 * A token's budget.
 *
 * @since 0.1.0
 * @category models
 */
export interface Token {
  readonly id: string
  readonly accountId: string
  readonly remain: number
  readonly used: number
  readonly unlimited: boolean
}

/**
 * The outcome of a top-up: `applied` is false when the key was used before.
 *
 * @since 0.1.0
 * @category models
 */
export interface TopUpResult {
  readonly applied: boolean
  readonly balance: number
}

type E = BillingError.InvalidInput | BillingError.StoreError

/**
 * The admin service.
 *
 * @since 0.1.0
 * @category services
 */
export class WalletAdmin extends Context.Service<WalletAdmin, {
  readonly createAccount: (
    input: typeof CreateAccount.Encoded
  ) => Effect.Effect<Account, E | AccountExists | AccountNotFound>
  readonly topUp: (
    input: typeof TopUp.Encoded
  ) => Effect.Effect<
    TopUpResult,
    E | AccountNotFound | BillingError.IdempotencyConflict | BillingError.InsufficientFunds
  >
  /** A negative adjustment never takes the balance below zero (`InsufficientFunds`). */
  readonly adjust: (
    input: typeof Adjust.Encoded
  ) => Effect.Effect<
    TopUpResult,
    E | AccountNotFound | BillingError.IdempotencyConflict | BillingError.InsufficientFunds
  >
  readonly createToken: (
    input: typeof CreateToken.Encoded
  ) => Effect.Effect<Token, E | TokenExists | AccountNotFound | TokenNotFound>
  readonly adjustToken: (input: typeof AdjustToken.Encoded) => Effect.Effect<Token, E | TokenNotFound>
  readonly account: (accountId: string) => Effect.Effect<Account, E | AccountNotFound>
  readonly token: (tokenId: string) => Effect.Effect<Token, E | TokenNotFound>
}>()("@relay-billing/wallet/WalletAdmin") {
  /** The admin service over the knex client. */
  static readonly layer: Layer.Layer<WalletAdmin, never, KnexClient.KnexClient> = Layer.effect(
    WalletAdmin,
    Effect.gen(function*() {
      return make(yield* KnexClient.KnexClient)
    })
  )
}

/** Reads a money column and checks it is a safe integer (a corrupt row is a defect, not a number). */
const safe = (value: unknown, column: string): number => {
  const n = Number(value)
  if (!Number.isSafeInteger(n)) throw new Error(`${column} ${String(value)} is not a safe integer`)
  return n
}

const toAccount = (row: Record<string, unknown>): Account => ({
  ...Accounts.fromRow(row),
  balance: safe(row["balance"], "balance")
})

const toToken = (row: Record<string, unknown>): Token => ({
  id: String(row["id"]),
  accountId: String(row["account_id"]),
  remain: safe(row["remain"], "remain"),
  used: safe(row["used"], "used"),
  unlimited: Boolean(row["unlimited"])
})

/**
 * Builds the admin service over a client.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (client: KnexClient.Client): WalletAdmin["Service"] => {
  const accounts = client.table("accounts")
  const tokens = client.table("tokens")
  const ledger = client.table("ledger")
  const accountRows = Accounts.make(client)

  const account = (accountId: string) =>
    client.query("wallet.account", (db) => db(accounts).where({ id: accountId }).first()).pipe(
      Effect.flatMap((row) => row ? Effect.succeed(toAccount(row)) : Effect.fail(new AccountNotFound({ accountId })))
    )
  const token = (tokenId: string) =>
    client.query("wallet.token", (db) => db(tokens).where({ id: tokenId }).first()).pipe(
      Effect.flatMap((row) => row ? Effect.succeed(toToken(row)) : Effect.fail(new TokenNotFound({ tokenId })))
    )

  /** A previous use of `key`: same account and amount → its result; otherwise a conflict. */
  const replay = (key: string, accountId: string, amount: number) =>
    client.query("wallet.idempotency", (db) => db(ledger).where({ idempotency_key: key }).first()).pipe(
      Effect.flatMap((row): Effect.Effect<
        TopUpResult | undefined,
        BillingError.IdempotencyConflict | BillingError.StoreError | AccountNotFound
      > => {
        if (!row) return Effect.succeed(undefined)
        if (String(row.account_id) !== accountId || Number(row.amount) !== amount) {
          return Effect.fail(
            new BillingError.IdempotencyConflict({
              holdId: key,
              field: String(row.account_id) !== accountId ? "accountId" : "amount",
              existing: String(String(row.account_id) !== accountId ? row.account_id : row.amount),
              requested: String(String(row.account_id) !== accountId ? accountId : amount)
            })
          )
        }
        return Effect.map(account(accountId), (a): TopUpResult => ({ applied: false, balance: a.balance }))
      })
    )

  const credit = (
    accountId: string,
    amount: number,
    kind: "topup" | "adjust",
    key: string | undefined,
    note: string
  ) =>
    Effect.gen(function*() {
      if (key !== undefined) {
        const previous = yield* replay(key, accountId, amount)
        if (previous) return previous
      }
      const applied = client.transaction(Effect.gen(function*() {
        // Guarded in the statement: an admin debit never takes a balance below zero (only a
        // settlement may), and a credit never takes it past the largest safe integer.
        const changed = yield* client.query("wallet.credit", (db) => {
          const q = db(accounts).where({ id: accountId })
          if (amount < 0) q.andWhere("balance", ">=", -amount)
          else q.andWhere("balance", "<=", Number.MAX_SAFE_INTEGER - amount)
          return q.update({ balance: db.raw("balance + ?", [amount]) })
        })
        if (changed === 0) {
          const current = yield* account(accountId)
          if (amount < 0) {
            return yield* new BillingError.InsufficientFunds({
              sourceId: "wallet",
              accountId,
              required: -amount,
              available: current.balance,
              reason: "an adjustment may not take the balance below zero"
            })
          }
          return yield* new BillingError.InvalidInput({
            field: "amount",
            value: String(amount),
            reason: `the balance ${current.balance} would exceed ${Number.MAX_SAFE_INTEGER}`
          })
        }
        const after = yield* account(accountId)
        const at = yield* Clock.currentTimeMillis
        yield* KnexLedger.append(client, [{
          at,
          kind,
          sourceId: "wallet",
          subjectId: accountId,
          accountId,
          amount,
          balanceAfter: after.balance,
          note,
          ...(key !== undefined ? { idempotencyKey: key } : {})
        }])
        return { applied: true, balance: after.balance } satisfies TopUpResult
      }))
      // Two concurrent uses of one key: the unique index rejects the second; answer as a replay.
      return yield* applied.pipe(Effect.catchTag("StoreError", (error) =>
        key === undefined
          ? Effect.fail(error)
          : replay(key, accountId, amount).pipe(Effect.flatMap((r) => (r ? Effect.succeed(r) : Effect.fail(error))))))
    })

  /** A unique-key violation from a concurrent create becomes the typed "exists" error. */
  const existsAfter = <A, E, X>(
    effect: Effect.Effect<A, E>,
    exists: Effect.Effect<boolean, BillingError.StoreError>,
    error: () => X
  ): Effect.Effect<A, E | X | BillingError.StoreError> =>
    Effect.catch(
      effect,
      (cause): Effect.Effect<A, E | X | BillingError.StoreError> =>
        Predicate.isTagged(cause, "StoreError")
          ? Effect.flatMap(exists, (found) => Effect.fail(found ? error() : cause))
          : Effect.fail(cause)
    )

  return WalletAdmin.of({
    createAccount: (input) =>
      Effect.gen(function*() {
        const req = yield* Input.decodeInput(CreateAccount, "")(input)
        return yield* client.transaction(Effect.gen(function*() {
          yield* accountRows.create({
            id: req.id,
            ...(req.lowBalanceThreshold !== undefined ? { lowBalanceThreshold: req.lowBalanceThreshold } : {})
          })
          const balance = req.balance ?? 0
          if (balance > 0) {
            yield* client.query("wallet.openingBalance", (db) => db(accounts).where({ id: req.id }).update({ balance }))
            yield* KnexLedger.append(client, [{
              at: yield* Clock.currentTimeMillis,
              kind: "topup",
              sourceId: "wallet",
              subjectId: req.id,
              accountId: req.id,
              amount: balance,
              balanceAfter: balance,
              note: "opening balance"
            }])
          }
          return yield* account(req.id)
        }))
      }),
    topUp: (input) =>
      Effect.flatMap(
        Input.decodeInput(TopUp, "")(input),
        (req) => credit(req.accountId, req.amount, "topup", req.key, `top-up ${req.key}`)
      ),
    adjust: (input) =>
      Effect.flatMap(
        Input.decodeInput(Adjust, "")(input),
        (req) => credit(req.accountId, req.amount, "adjust", req.key, req.reason)
      ),
    createToken: (input) =>
      Effect.gen(function*() {
        const req = yield* Input.decodeInput(CreateToken, "")(input)
        const exists = client.query("wallet.exists", (db) => db(tokens).where({ id: req.id }).first("id")).pipe(
          Effect.map(Boolean)
        )
        return yield* existsAfter(
          client.transaction(Effect.gen(function*() {
            yield* account(req.accountId)
            const exists = yield* client.query(
              "wallet.createToken",
              (db) => db(tokens).where({ id: req.id }).first("id")
            )
            if (exists) return yield* new TokenExists({ tokenId: req.id })
            const at = yield* Clock.currentTimeMillis
            const remain = req.remain ?? 0
            yield* client.query("wallet.createToken", (db) =>
              db(tokens).insert({
                id: req.id,
                account_id: req.accountId,
                remain,
                used: 0,
                unlimited: req.unlimited ?? false,
                created_at: at
              }))
            if (remain > 0) {
              yield* KnexLedger.append(client, [{
                at,
                kind: "adjust",
                sourceId: "token",
                subjectId: req.id,
                accountId: req.accountId,
                amount: remain,
                balanceAfter: remain,
                note: "opening budget"
              }])
            }
            return yield* token(req.id)
          })),
          exists,
          () => new TokenExists({ tokenId: req.id })
        )
      }),
    adjustToken: (input) =>
      Effect.gen(function*() {
        const req = yield* Input.decodeInput(AdjustToken, "")(input)
        return yield* client.transaction(Effect.gen(function*() {
          const changed = yield* client.query("wallet.adjustToken", (db) =>
            db(tokens).where({ id: req.tokenId }).update({ remain: db.raw("remain + ?", [req.amount]) }))
          if (changed === 0) {
            return yield* new TokenNotFound({ tokenId: req.tokenId })
          }
          const after = yield* token(req.tokenId)
          const at = yield* Clock.currentTimeMillis
          yield* KnexLedger.append(client, [{
            at,
            kind: "adjust",
            sourceId: "token",
            subjectId: req.tokenId,
            accountId: after.accountId,
            amount: req.amount,
            balanceAfter: after.remain,
            note: req.reason
          }])
          return after
        }))
      }),
    account: (accountId) => Effect.flatMap(Input.decodeInput(Id, "accountId")(accountId), account),
    token: (tokenId) => Effect.flatMap(Input.decodeInput(Id, "tokenId")(tokenId), token)
  })
}
