/**
 * Accounts on knex, apart from any money source: the account rows and their
 * tables (migrations), the counters a settlement moves (`usedQuota` /
 * `requestCount`, the core `AccountCounters` service), the split-funding
 * opt-in, and the low-balance threshold with its rate-limited notices (the core
 * `LowBalance` policy). A wallet is one money source of an account (its
 * `balance` column); a subscription another; neither owns the account.
 *
 * Every input is decoded with Schema (`InvalidInput` naming the field and value,
 * nothing written).
 *
 * @since 0.4.0
 */
import { AccountCounters, BillingError, Input, LowBalance, Quota } from "@relay-billing/core"
import { Clock, Context, Effect, Layer, Schema } from "effect"
import type { CounterColumn } from "./Audit.js"
import { accountsMigrations } from "./internal/accountsSchema.js"
import { refuseOutOfRange } from "./internal/range.js"
import { insertIgnore } from "./internal/sql.js"
import { ident, memo } from "./internal/statements.js"
import type { Client } from "./KnexClient.js"
import { KnexClient } from "./KnexClient.js"
import type { MigrationSet } from "./Migrations.js"

/**
 * The accounts' tables: accounts (with the wallet's `balance` column), their API
 * tokens, and the low-balance notices. The set is named `wallet` (its name
 * before the accounts module existed), so databases migrated earlier find it applied.
 *
 * @since 0.4.0
 * @category migrations
 */
export const migrations: MigrationSet = accountsMigrations

/**
 * The counter the audit proves against the holds: `accounts.used_quota` must
 * equal each account's settled charges less corrections
 * (`Audit.run(balances, { counters: auditCounters })`).
 *
 * @since 0.4.0
 * @category audit
 */
export const auditCounters: CounterColumn = { table: "accounts", idColumn: "id", usedColumn: "used_quota" }

/**
 * What the low-balance policies over one client share with the accounts service
 * over the same client: the threshold ceiling (the largest threshold set in the
 * table, 0 when none is, cached; each policy raises it to its own default) and a generation bumped by every threshold write, so a ceiling
 * read that raced a write is not cached.
 */
interface ThresholdState {
  ceiling: { readonly value: number; readonly at: number } | undefined
  generation: number
}

const thresholdStates = new WeakMap<Client, ThresholdState>()

const thresholdState = (client: Client): ThresholdState => {
  let state = thresholdStates.get(client)
  if (!state) {
    state = { ceiling: undefined, generation: 0 }
    thresholdStates.set(client, state)
  }
  return state
}

/** A threshold written through this process: the cached ceiling rises to it at once. */
const thresholdWritten = (client: Client, threshold: number | null | undefined) => {
  const state = thresholdState(client)
  state.generation++
  if (state.ceiling && threshold !== null && threshold !== undefined && threshold > state.ceiling.value) {
    state.ceiling = { value: threshold, at: state.ceiling.at }
  }
}

const Id = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(191))

/**
 * @since 0.4.0
 * @category schemas
 */
export const CreateAccount = Schema.Struct({
  id: Id,
  lowBalanceThreshold: Schema.optionalKey(Quota.Quota)
})

/**
 * @since 0.4.0
 * @category schemas
 */
export const SetThreshold = Schema.Struct({
  accountId: Id,
  /** Below this balance (after a settle) a `LowBalance` event is published; null restores the default. */
  threshold: Schema.NullOr(Quota.Quota)
})

/**
 * @since 0.4.0
 * @category schemas
 */
export const SetSplitFunding = Schema.Struct({ accountId: Id, enabled: Schema.Boolean })

/**
 * An account, without its money (each source reports its own balance).
 *
 * @since 0.4.0
 * @category models
 */
export interface Account {
  readonly id: string
  readonly usedQuota: number
  readonly requestCount: number
  readonly lowBalanceThreshold: number | undefined
  readonly splitFunding: boolean
}

/**
 * An account with this id already exists.
 *
 * @since 0.4.0
 * @category errors
 */
export class AccountExists extends Schema.TaggedError<AccountExists>()("AccountExists", {
  accountId: Schema.String
}) {
  /** Stable code. */
  get code(): "account_exists" {
    return "account_exists"
  }
  override get message(): string {
    return `account ${this.accountId} already exists`
  }
}

type E = BillingError.InvalidInput | BillingError.StoreError

/**
 * The accounts service.
 *
 * @since 0.4.0
 * @category services
 */
export class Accounts extends Context.Service<Accounts, {
  /**
   * Creates an account row (in the current transaction, if any), money at 0:
   * a source's own admin gives it an opening balance.
   */
  readonly create: (input: typeof CreateAccount.Encoded) => Effect.Effect<Account, E | AccountExists>
  readonly account: (accountId: string) => Effect.Effect<Account, E | BillingError.AccountNotFound>
  readonly setLowBalanceThreshold: (
    input: typeof SetThreshold.Encoded
  ) => Effect.Effect<Account, E | BillingError.AccountNotFound>
  readonly setSplitFunding: (
    input: typeof SetSplitFunding.Encoded
  ) => Effect.Effect<Account, E | BillingError.AccountNotFound>
  /** Whether the account opted into split funding (§7); false for an unknown account. */
  readonly splitFunding: (accountId: string) => Effect.Effect<boolean, BillingError.StoreError>
}>()("@relay-billing/knex/Accounts") {
  /** The service over the knex client in context. */
  static readonly layer: Layer.Layer<Accounts, never, KnexClient> = Layer.effect(
    Accounts,
    Effect.gen(function*() {
      return make(yield* KnexClient)
    })
  )
}

/** Reads an integer column and checks it is a safe integer (a corrupt row is a defect, not a number). */
const safe = (value: unknown, column: string): number => {
  const n = Number(value)
  if (!Number.isSafeInteger(n)) throw new Error(`${column} ${String(value)} is not a safe integer`)
  return n
}

/**
 * Decodes an accounts row.
 *
 * @since 0.4.0
 * @category models
 */
export const fromRow = (row: Record<string, unknown>): Account => ({
  id: String(row["id"]),
  usedQuota: safe(row["used_quota"], "used_quota"),
  requestCount: safe(row["request_count"], "request_count"),
  lowBalanceThreshold: row["low_balance_threshold"] === null || row["low_balance_threshold"] === undefined
    ? undefined
    : safe(row["low_balance_threshold"], "low_balance_threshold"),
  splitFunding: Boolean(row["split_funding"])
})

/**
 * Builds the accounts service over a client.
 *
 * @since 0.4.0
 * @category constructors
 */
export const make = (client: Client): Accounts["Service"] => {
  const accounts = client.table("accounts")

  const account = (accountId: string) =>
    client.query("accounts.account", (db) => db(accounts).where({ id: accountId }).first()).pipe(
      Effect.flatMap((row) =>
        row ? Effect.succeed(fromRow(row)) : Effect.fail(new BillingError.AccountNotFound({ accountId }))
      )
    )

  const create = (input: typeof CreateAccount.Encoded) =>
    Effect.gen(function*() {
      const req = yield* Input.decodeInput(CreateAccount, "")(input)
      const at = yield* Clock.currentTimeMillis
      const inserted = yield* insertIgnore(client, "accounts.create", accounts, {
        id: req.id,
        balance: 0,
        used_quota: 0,
        request_count: 0,
        low_balance_threshold: req.lowBalanceThreshold ?? null,
        created_at: at
      }, "id")
      if (inserted === 0) return yield* new AccountExists({ accountId: req.id })
      thresholdWritten(client, req.lowBalanceThreshold)
      return yield* account(req.id).pipe(
        Effect.catchTag("AccountNotFound", () =>
          Effect.fail(
            new BillingError.StoreError({ operation: "accounts.create", detail: `account ${req.id} vanished` })
          ))
      )
    })

  const update = (operation: string, accountId: string, changes: Record<string, unknown>) =>
    Effect.gen(function*() {
      const changed = yield* client.query(operation, (db) => db(accounts).where({ id: accountId }).update(changes))
      if (changed === 0) return yield* new BillingError.AccountNotFound({ accountId })
      return yield* account(accountId)
    })

  return Accounts.of({
    create,
    account: (accountId) => Effect.flatMap(Input.decodeInput(Id, "accountId")(accountId), account),
    setLowBalanceThreshold: (input) =>
      Effect.flatMap(
        Input.decodeInput(SetThreshold, "")(input),
        (req) =>
          update("accounts.setThreshold", req.accountId, { low_balance_threshold: req.threshold }).pipe(
            Effect.tap(() => Effect.sync(() => thresholdWritten(client, req.threshold)))
          )
      ),
    setSplitFunding: (input) =>
      Effect.flatMap(
        Input.decodeInput(SetSplitFunding, "")(input),
        (req) => update("accounts.setSplitFunding", req.accountId, { split_funding: req.enabled })
      ),
    splitFunding: (accountId) => splitFundingFor(client)(accountId)
  })
}

/**
 * Whether an account opted into split funding (the `BillingSession` option
 * `splitFundingFor`); false for an unknown account.
 *
 * @since 0.4.0
 * @category queries
 */
export const splitFundingFor =
  (client: Client) => (accountId: string): Effect.Effect<boolean, BillingError.StoreError> =>
    client.query(
      "accounts.splitFunding",
      (db) => db(client.table("accounts")).where({ id: accountId }).first("split_funding")
    ).pipe(
      Effect.map((row) => Boolean(row?.split_funding))
    )

const counterChecks = (change: AccountCounters.CounterChange) => [
  { column: "used_quota", field: "account.usedQuota", change: change.usedQuota },
  { column: "request_count", field: "account.requestCount", change: change.requestCount }
]

/**
 * `usedQuota` / `requestCount` on the accounts table: one bounded UPDATE (a
 * counter that would leave ±(2^53−1) is `QuotaOutOfRange`, nothing written; an
 * unknown account is nothing to count).
 *
 * @since 0.4.0
 * @category constructors
 */
export const makeCounters = (client: Client): AccountCounters.AccountCounters["Service"] => {
  const d = client.dialect
  const table = client.table("accounts")
  const used = ident(d, "used_quota")
  const requests = ident(d, "request_count")
  const bound = (column: string, sign: number) =>
    sign > 0 ? ` and ${column} <= ?` : sign < 0 ? ` and ${column} >= ?` : ""
  // One text per pair of signs (at most 9), written once: both counters move, each bounded.
  const updateSql = memo((signs: string) => {
    const [u, r] = signs.split(",").map(Number) as [number, number]
    return `update ${ident(d, table)} set ${used} = ${used} + ?, ${requests} = ${requests} + ? where ${
      ident(d, "id")
    } = ?${bound(used, u)}${bound(requests, r)}`
  })
  const limit = (change: number) =>
    change > 0 ? [Number.MAX_SAFE_INTEGER - change] : change < 0 ? [Number.MIN_SAFE_INTEGER - change] : []
  return AccountCounters.AccountCounters.of({
    add: (accountId, change) =>
      change.usedQuota === 0 && change.requestCount === 0 ?
        Effect.void :
        client.execute(
          "accounts.counters",
          updateSql(`${Math.sign(change.usedQuota)},${Math.sign(change.requestCount)}`),
          [
            change.usedQuota,
            change.requestCount,
            accountId,
            ...limit(change.usedQuota),
            ...limit(change.requestCount)
          ]
        ).pipe(
          Effect.flatMap((r) =>
            r.affected > 0
              ? Effect.void
              : refuseOutOfRange(client, table, counterChecks(change), accountId, "accounts.counters").pipe(
                Effect.asVoid
              )
          )
        ),
    // Read only: what `add` would refuse (an unknown account is nothing to count).
    check: (accountId, change) =>
      refuseOutOfRange(
        client,
        client.table("accounts"),
        counterChecks(change),
        accountId,
        "accounts.counters.check",
        true
      )
        .pipe(Effect.asVoid)
  })
}

/**
 * The account counters over the client in context.
 *
 * @since 0.4.0
 * @category layers
 */
export const countersLayer: Layer.Layer<AccountCounters.AccountCounters, never, KnexClient> = Layer.effect(
  AccountCounters.AccountCounters,
  Effect.gen(function*() {
    return makeCounters(yield* KnexClient)
  })
)

/**
 * Options of the low-balance policy.
 *
 * @since 0.4.0
 * @category models
 */
export interface LowBalanceOptions {
  /** Threshold for accounts without one (default 1,000). */
  readonly defaultThreshold?: number
  /**
   * How long a threshold read — an account's, or the ceiling over all accounts —
   * is reused in this process (default 30 s). A threshold written through
   * `Accounts` over the same client raises the cached ceiling at once; one
   * written by another process is seen within this bound.
   */
  readonly cacheMillis?: number
}

/**
 * The low-balance policy backed by the database: the threshold is the account's
 * `low_balance_threshold` (default 1,000), cached in the process for a short
 * time so the settle path does not read it on every request; the `ceiling` (the
 * largest threshold of any account, one `MAX` read per `cacheMillis` per process)
 * lets the engine skip the account's threshold when the balance is at or above
 * it, so a healthy account's settle reads no threshold at all; the rate limit (at
 * most 2 warnings per account and source in any 10 minutes) is a compare-and-set
 * on the last two send times, so it holds across processes sharing the database.
 *
 * @since 0.4.0
 * @category constructors
 */
export const makeLowBalance = (client: Client, options: LowBalanceOptions = {}): LowBalance.Policy => {
  const fallback = options.defaultThreshold ?? LowBalance.defaultThreshold
  const ttl = options.cacheMillis ?? 30_000
  const cache = new Map<string, { readonly value: number; readonly at: number }>()
  const notices = client.table("low_balance_notices")
  const state = thresholdState(client)
  const d = client.dialect
  const thresholdSql = `select ${ident(d, "low_balance_threshold")} from ${ident(d, client.table("accounts"))} where ${
    ident(d, "id")
  } = ?`
  return {
    ceiling: Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const hit = state.ceiling
      if (hit && now - hit.at < ttl) return Math.max(fallback, hit.value)
      const generation = state.generation
      const row = yield* client.query(
        "accounts.thresholdCeiling",
        (db) => db(client.table("accounts")).max({ ceiling: "low_balance_threshold" }).first()
      )
      const raw = row?.ceiling
      // The largest threshold set on any account (none set: no account is above the default).
      const value = raw === null || raw === undefined ? 0 : Number(raw)
      // A threshold written while this read ran may be missing from it: use it once, do not cache it.
      if (state.generation === generation) state.ceiling = { value, at: now }
      return Math.max(fallback, value)
    }),
    threshold: (accountId) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const hit = cache.get(accountId)
        if (hit && now - hit.at < ttl) return hit.value
        const result = yield* client.execute("accounts.threshold", thresholdSql, [accountId])
        const raw = result.rows[0]?.["low_balance_threshold"]
        const value = raw === null || raw === undefined ? fallback : Number(raw)
        cache.set(accountId, { value, at: now })
        return value
      }),
    claim: (accountId, sourceId, now) =>
      client.transaction(Effect.gen(function*() {
        const key = { account_id: accountId, source_id: sourceId }
        yield* insertIgnore(client, "accounts.notice", notices, { ...key, sent1: 0, sent2: 0 }, [
          "account_id",
          "source_id"
        ])
        for (let attempt = 0; attempt < 5; attempt++) {
          const row = yield* client.query("accounts.notice", (db) => db(notices).where(key).first("sent1", "sent2"))
          const sent1 = Number(row?.sent1 ?? 0)
          const sent2 = Number(row?.sent2 ?? 0)
          // sent1 is the older of the last two warnings (0 = none yet): a third inside the
          // window is refused.
          if (sent1 > 0 && sent1 > now - LowBalance.windowMillis) return false
          const changed = yield* client.query("accounts.notice", (db) =>
            db(notices).where({ ...key, sent1, sent2 }).update({ sent1: sent2, sent2: now }))
          if (changed === 1) {
            return true
          }
        }
        return false
      }))
  }
}

/**
 * The low-balance policy as the core `LowBalance` service, over the client in
 * context. Provide it where the `BillingSession` layer is built.
 *
 * @since 0.4.0
 * @category layers
 */
export const lowBalanceLayer = (options: LowBalanceOptions = {}): Layer.Layer<never, never, KnexClient> =>
  Layer.effect(
    LowBalance.LowBalance,
    Effect.gen(function*() {
      return makeLowBalance(yield* KnexClient, options)
    })
  )

/**
 * The accounts service, the counters and the low-balance policy (the core
 * `LowBalance` reference) over the client in context.
 *
 * @since 0.4.0
 * @category layers
 */
export const layer = (
  options: { readonly lowBalance?: LowBalanceOptions } = {}
): Layer.Layer<Accounts | AccountCounters.AccountCounters, never, KnexClient> =>
  Layer.mergeAll(Accounts.layer, countersLayer, lowBalanceLayer(options.lowBalance))
