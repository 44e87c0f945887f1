/**
 * The relay's own tables, next to the SDK's (same knex client, same prefix):
 * account metadata (name, group, billing preference), API tokens (stored only
 * as the SHA-256 of their key), request logs (one per settled request, written
 * by {@link Service.recorder} in the settlement's transaction) and the request
 * ids each account used (to find a request by id in the admin API).
 *
 * Token keys are `sk-` plus 48 random base62 characters, generated here and
 * returned once by {@link RelayStore.createToken}; authentication hashes the
 * presented key, looks the hash up and compares it in constant time.
 *
 * @since 0.1.0
 */
import type { Hold } from "@relay-billing/core"
import { BillingError, SettlementRecorder } from "@relay-billing/core"
import { IdColumns, KnexClient, Statements } from "@relay-billing/knex"
import type { Migrations } from "@relay-billing/knex"
import { Clock, Context, Effect, Layer, Schema } from "effect"
import * as Batched from "./internal/batched.js"
import { constantTimeEqualHex, generateKey, hashKey } from "./internal/secrets.js"
import { sourcesOf } from "./internal/sources.js"

// ---------------------------------------------------------------------------
// tables and migrations
// ---------------------------------------------------------------------------

/**
 * Unprefixed names of the relay's tables.
 *
 * @since 0.1.0
 * @category constants
 */
export const tables = {
  accounts: "relay_accounts",
  tokens: "relay_tokens",
  logs: "relay_logs",
  requestIds: "relay_request_ids"
} as const

/**
 * The relay's migrations (migrations table `<prefix>relay_migrations`); run
 * after `Subscription.allMigrations`.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrations: Migrations.MigrationSet = {
  name: "relay",
  migrations: [
    {
      name: "0001_relay_tables",
      up: async (knex, context) => {
        await knex.schema.createTable(context.table(tables.accounts), (t) => {
          t.string("id", 191).primary()
          t.string("name", 255).notNullable().defaultTo("")
          t.string("group_name", 191).notNullable()
          t.string("billing_preference", 64).notNullable()
          t.bigInteger("created_at").notNullable()
        })
        await knex.schema.createTable(context.table(tables.tokens), (t) => {
          t.string("id", 191).primary()
          t.string("account_id", 191).notNullable().index()
          t.string("name", 255).notNullable().defaultTo("")
          t.string("key_hash", 64).notNullable().unique()
          t.text("models").nullable()
          t.bigInteger("expires_at").nullable()
          t.string("status", 16).notNullable()
          t.bigInteger("created_at").notNullable()
        })
        await knex.schema.createTable(context.table(tables.logs), (t) => {
          t.increments("seq").primary()
          t.string("request_id", 191).notNullable().unique()
          t.string("account_id", 191).notNullable()
          t.string("token_id", 191).nullable()
          t.string("model", 255).notNullable()
          t.bigInteger("prompt_tokens").notNullable()
          t.bigInteger("completion_tokens").notNullable()
          t.bigInteger("quota").notNullable()
          t.string("source", 255).notNullable()
          t.bigInteger("created_at").notNullable()
          t.index(["account_id", "created_at"])
          t.index(["created_at"])
        })
      },
      down: async (knex, context) => {
        await knex.schema.dropTableIfExists(context.table(tables.logs))
        await knex.schema.dropTableIfExists(context.table(tables.tokens))
        await knex.schema.dropTableIfExists(context.table(tables.accounts))
      }
    },
    {
      // Ids, request ids and key hashes compare byte for byte on MySQL/MariaDB too
      // (issue 8 #2: `chatcmpl-AbC123` and `chatcmpl-abc123` are two requests); no-op elsewhere.
      name: "0002_binary_ids",
      up: (knex, context) => IdColumns.makeBinary(knex, context, relayIdColumns(context)),
      down: (knex, context) => IdColumns.revertBinary(knex, context, relayIdColumns(context))
    },
    {
      // Issue 9 #8, #9: request ids are scoped to the account (the hold id is derived from
      // (account, request id)), so a log row is keyed by its hold id; the request ids each
      // account used are kept to find a request by id alone.
      name: "0003_request_ids_per_account",
      up: async (knex, context) => {
        const ids = await IdColumns.prepare(knex, context)
        const logs = context.table(tables.logs)
        await knex.schema.alterTable(logs, (t) => {
          if (ids.collation === undefined) t.string("hold_id", 191).nullable()
          else t.specificType("hold_id", `varchar(191) character set utf8mb4 collate ${ids.collation}`).nullable()
        })
        // rows written before: the hold id was the request id
        await knex(logs).update({ hold_id: knex.ref("request_id") })
        await knex.schema.alterTable(logs, (t) => {
          t.dropUnique(["request_id"])
          t.unique(["hold_id"])
          t.index(["account_id", "request_id"])
          t.index(["request_id"])
        })
        await knex.schema.createTable(context.table(tables.requestIds), (t) => {
          ids.id(t, "account_id").notNullable()
          ids.id(t, "request_id").notNullable()
          t.bigInteger("created_at").notNullable()
          t.primary(["account_id", "request_id"])
          t.index(["request_id"])
        })
      },
      down: async (knex, context) => {
        const logs = context.table(tables.logs)
        await knex.schema.dropTableIfExists(context.table(tables.requestIds))
        await knex.schema.alterTable(logs, (t) => {
          t.dropIndex(["request_id"])
          t.dropIndex(["account_id", "request_id"])
          t.dropUnique(["hold_id"])
          t.unique(["request_id"])
        })
        await knex.schema.alterTable(logs, (t) => {
          t.dropColumn("hold_id")
        })
      }
    }
  ]
}

const relayIdColumns = ({ table }: Migrations.MigrationContext): ReadonlyArray<IdColumns.ExistingColumn> => [
  { table: table(tables.accounts), column: "id", length: 191, nullable: false },
  { table: table(tables.accounts), column: "group_name", length: 191, nullable: false },
  { table: table(tables.tokens), column: "id", length: 191, nullable: false },
  { table: table(tables.tokens), column: "account_id", length: 191, nullable: false },
  { table: table(tables.tokens), column: "key_hash", length: 64, nullable: false },
  { table: table(tables.logs), column: "request_id", length: 191, nullable: false },
  { table: table(tables.logs), column: "account_id", length: 191, nullable: false },
  { table: table(tables.logs), column: "token_id", length: 191, nullable: true }
]

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

/**
 * How an account's requests are funded: the name of a preference — one of the
 * SDK's four built-in ones or a `funding.preferences` entry of the config (the
 * admin API checks which names the running relay knows; an engine that does
 * not know a stored name uses `subscription_first`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const BillingPreference = Schema.String.check(
  Schema.isMinLength(1, { message: "expected a preference name" }),
  Schema.isMaxLength(32, { message: "expected at most 32 characters" })
)
/** @since 0.1.0 @category models */
export type BillingPreference = typeof BillingPreference.Type

/**
 * A token's status as stored.
 *
 * @since 0.1.0
 * @category schemas
 */
export const TokenStatus = Schema.Literals(["active", "disabled"])
/** @since 0.1.0 @category models */
export type TokenStatus = typeof TokenStatus.Type

/**
 * An account's relay-side metadata (`id` is the SDK account id).
 *
 * @since 0.1.0
 * @category models
 */
export interface AccountMeta {
  readonly id: string
  readonly name: string
  readonly group: string
  readonly billingPreference: BillingPreference
  readonly createdAt: number
}

/**
 * A token's relay-side record (`id` is the SDK token id). The key is never stored.
 *
 * @since 0.1.0
 * @category models
 */
export interface TokenMeta {
  readonly id: string
  readonly accountId: string
  readonly name: string
  /** Models the token may use; `undefined`: every model. */
  readonly models: ReadonlyArray<string> | undefined
  /** Expiry in epoch milliseconds; `undefined`: never. */
  readonly expiresAt: number | undefined
  readonly status: TokenStatus
  readonly createdAt: number
}

/**
 * What a successful authentication yields.
 *
 * @since 0.1.0
 * @category models
 */
export interface Principal {
  readonly tokenId: string
  readonly accountId: string
  readonly models: ReadonlyArray<string> | undefined
  readonly group: string
  readonly billingPreference: BillingPreference
}

/**
 * One request log (one per settled request).
 *
 * @since 0.1.0
 * @category schemas
 */
export const LogEntry = Schema.Struct({
  requestId: Schema.String.check(Schema.isMinLength(1)),
  /** The SDK hold id of the request (the request id scoped to the account); default: the request id. */
  holdId: Schema.optionalKey(Schema.String.check(Schema.isMinLength(1))),
  accountId: Schema.String.check(Schema.isMinLength(1)),
  tokenId: Schema.NullOr(Schema.String),
  model: Schema.String,
  promptTokens: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  completionTokens: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  quota: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  /** The paying source id(s), `+`-joined in order when split. */
  source: Schema.String,
  /** Epoch milliseconds. */
  createdAt: Schema.Int
})
/** @since 0.1.0 @category models */
export type LogEntry = typeof LogEntry.Type

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

/**
 * An API key that does not authenticate: missing, unknown, disabled or expired.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidApiKey extends Schema.TaggedError<InvalidApiKey>()("InvalidApiKey", {
  reason: Schema.Literals(["missing", "unknown", "disabled", "expired"])
}) {
  /** Stable code (OpenAI's). */
  get code(): "invalid_api_key" {
    return "invalid_api_key"
  }
  override get message(): string {
    switch (this.reason) {
      case "missing":
        return "No API key provided"
      case "unknown":
        return "Incorrect API key provided"
      case "disabled":
        return "This API key has been disabled"
      case "expired":
        return "This API key has expired"
    }
  }
}

/**
 * An unknown account: the SDK's one `AccountNotFound` (tag `AccountNotFound`,
 * code `account_not_found`).
 *
 * @since 0.1.0
 * @category errors
 */
export const AccountNotFound = BillingError.AccountNotFound
/** @since 0.1.0 @category errors */
export type AccountNotFound = BillingError.AccountNotFound

/**
 * An unknown token: the SDK's one `TokenNotFound` (tag `TokenNotFound`, code
 * `token_not_found`).
 *
 * @since 0.1.0
 * @category errors
 */
export const TokenNotFound = BillingError.TokenNotFound
/** @since 0.1.0 @category errors */
export type TokenNotFound = BillingError.TokenNotFound

// ---------------------------------------------------------------------------
// service
// ---------------------------------------------------------------------------

type StoreError = BillingError.StoreError

/**
 * The store's operations.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** Records an account's metadata (the SDK account must be created in the same transaction). */
  readonly createAccount: (input: {
    readonly id: string
    readonly name: string
    readonly group: string
    readonly billingPreference: BillingPreference
  }) => Effect.Effect<AccountMeta, StoreError>
  readonly account: (id: string) => Effect.Effect<AccountMeta, AccountNotFound | StoreError>
  readonly updateAccount: (
    id: string,
    changes: { readonly group?: string; readonly billingPreference?: BillingPreference }
  ) => Effect.Effect<AccountMeta, AccountNotFound | StoreError>
  /**
   * Records a token and returns its key: the only time it exists in clear.
   * The SDK token must be created in the same transaction.
   */
  readonly createToken: (input: {
    readonly id: string
    readonly accountId: string
    readonly name: string
    readonly models: ReadonlyArray<string> | undefined
    readonly expiresAt: number | undefined
  }) => Effect.Effect<{ readonly token: TokenMeta; readonly key: string }, StoreError>
  readonly token: (id: string) => Effect.Effect<TokenMeta, TokenNotFound | StoreError>
  readonly setTokenStatus: (id: string, status: TokenStatus) => Effect.Effect<TokenMeta, TokenNotFound | StoreError>
  /** The principal of an API key; disabled, expired, unknown or missing keys fail. */
  readonly authenticate: (key: string | undefined) => Effect.Effect<Principal, InvalidApiKey | StoreError>
  /**
   * Records a request log outside a settlement, keyed by `holdId` (default:
   * the request id); a repeated key is ignored (returns false). The relay's
   * own rows are written by {@link Service.recorder}, in the settlement's
   * transaction.
   */
  readonly recordLog: (entry: typeof LogEntry.Encoded) => Effect.Effect<boolean, StoreError | Schema.SchemaError>
  /**
   * The SDK's `SettlementRecorder` over this store: writes the log row of a
   * settled hold in the settlement's transaction (request id and model from
   * the hold's open metadata `requestId`/`model`, token counts from the
   * settle's metadata `promptTokens`/`completionTokens`, quota = A, the paying
   * sources, `createdAt` = the settlement time).
   */
  readonly recorder: SettlementRecorder.Recorder
  /** Remembers that `accountId` used `requestId` (idempotent), before its hold is opened. */
  readonly claimRequestId: (accountId: string, requestId: string) => Effect.Effect<void, StoreError>
  /** The accounts that used `requestId`, oldest first. */
  readonly accountsOfRequest: (requestId: string) => Effect.Effect<ReadonlyArray<string>, StoreError>
  /** Logs, newest first (ties: later insert first). */
  readonly logs: (query: {
    readonly accountId?: string | undefined
    readonly limit?: number | undefined
  }) => Effect.Effect<ReadonlyArray<LogEntry>, StoreError>
}

/**
 * The relay store service.
 *
 * @since 0.1.0
 * @category services
 */
export class RelayStore extends Context.Service<RelayStore, Service>()("@relay-billing/relay/RelayStore") {
  /** The store over the knex client in context. */
  static readonly layer: Layer.Layer<RelayStore, never, KnexClient.KnexClient> = Layer.effect(
    RelayStore,
    Effect.gen(function*() {
      return make(yield* KnexClient.KnexClient)
    })
  )

  /** The SDK's `SettlementRecorder` writing request logs (see {@link Service.recorder}); provide it to the engine. */
  static readonly recorderLayer: Layer.Layer<never, never, KnexClient.KnexClient> = Layer.effect(
    SettlementRecorder.SettlementRecorder,
    Effect.gen(function*() {
      return make(yield* KnexClient.KnexClient).recorder
    })
  )
}

const num = (v: unknown): number => {
  const n = Number(v)
  if (!Number.isSafeInteger(n)) throw new Error(`${String(v)} is not a safe integer`)
  return n
}
const optNum = (v: unknown): number | undefined => (v === null || v === undefined ? undefined : num(v))

const toAccount = (row: Record<string, unknown>): AccountMeta => ({
  id: String(row["id"]),
  name: String(row["name"] ?? ""),
  group: String(row["group_name"]),
  billingPreference: String(row["billing_preference"]) as BillingPreference,
  createdAt: num(row["created_at"])
})

const toToken = (row: Record<string, unknown>): TokenMeta => ({
  id: String(row["id"]),
  accountId: String(row["account_id"]),
  name: String(row["name"] ?? ""),
  models: row["models"] === null || row["models"] === undefined
    ? undefined
    : (JSON.parse(String(row["models"])) as ReadonlyArray<string>),
  expiresAt: optNum(row["expires_at"]),
  status: String(row["status"]) as TokenStatus,
  createdAt: num(row["created_at"])
})

const toLog = (row: Record<string, unknown>): LogEntry => ({
  requestId: String(row["request_id"]),
  accountId: String(row["account_id"]),
  tokenId: row["token_id"] === null || row["token_id"] === undefined ? null : String(row["token_id"]),
  model: String(row["model"]),
  promptTokens: num(row["prompt_tokens"]),
  completionTokens: num(row["completion_tokens"]),
  quota: num(row["quota"]),
  source: String(row["source"]),
  createdAt: num(row["created_at"])
})

const decodeLog = Schema.decodeUnknownEffect(LogEntry)

/** A non-negative safe integer from a metadata string, else 0. */
const count = (value: string | undefined): number => {
  const n = value === undefined ? NaN : Number(value)
  return Number.isSafeInteger(n) && n >= 0 ? n : 0
}

/** The log row of a settled hold (see {@link Service.recorder}). */
const settledRow = (hold: Hold.Hold, settlement: Hold.Settlement) => ({
  hold_id: hold.id,
  request_id: hold.metadata?.["requestId"] ?? hold.id,
  account_id: hold.accountId,
  token_id: hold.tokenId ?? null,
  model: hold.metadata?.["model"] ?? "",
  prompt_tokens: count(settlement.metadata?.["promptTokens"]),
  completion_tokens: count(settlement.metadata?.["completionTokens"]),
  quota: settlement.actual,
  source: sourcesOf({ ...hold, settlement }),
  created_at: settlement.settledAt
})

/** Default and maximum page size of {@link Service.logs}. */
const DEFAULT_LIMIT = 100
const MAX_LIMIT = 1000

/**
 * Builds the store over a client.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (client: KnexClient.Client): Service => {
  const accounts = client.table(tables.accounts)
  const tokens = client.table(tables.tokens)
  const logs = client.table(tables.logs)
  const requestIds = client.table(tables.requestIds)
  // The key lookup and the request-id record of concurrent requests share statements.
  const batched = Batched.make(client, { tokens, accounts, requestIds })

  const account = (id: string) =>
    client.query("relay.account", (db) => db(accounts).where({ id }).first()).pipe(
      Effect.flatMap((row) =>
        row === undefined ? Effect.fail(new AccountNotFound({ accountId: id })) : Effect.succeed(toAccount(row))
      )
    )

  const token = (id: string) =>
    client.query("relay.token", (db) => db(tokens).where({ id }).first()).pipe(
      Effect.flatMap((row) =>
        row === undefined ? Effect.fail(new TokenNotFound({ tokenId: id })) : Effect.succeed(toToken(row))
      )
    )

  return {
    createAccount: (input) =>
      Effect.gen(function*() {
        const row = {
          id: input.id,
          name: input.name,
          group_name: input.group,
          billing_preference: input.billingPreference,
          created_at: yield* Clock.currentTimeMillis
        }
        yield* client.query("relay.createAccount", (db) => db(accounts).insert(row))
        return toAccount(row)
      }),
    account,
    updateAccount: (id, changes) =>
      Effect.gen(function*() {
        const patch: Record<string, unknown> = {}
        if (changes.group !== undefined) patch["group_name"] = changes.group
        if (changes.billingPreference !== undefined) patch["billing_preference"] = changes.billingPreference
        if (Object.keys(patch).length > 0) {
          yield* client.query("relay.updateAccount", (db) => db(accounts).where({ id }).update(patch))
        }
        return yield* account(id)
      }),
    createToken: (input) =>
      Effect.gen(function*() {
        const key = generateKey()
        const row = {
          id: input.id,
          account_id: input.accountId,
          name: input.name,
          key_hash: hashKey(key),
          models: input.models === undefined ? null : JSON.stringify(input.models),
          expires_at: input.expiresAt ?? null,
          status: "active",
          created_at: yield* Clock.currentTimeMillis
        }
        yield* client.query("relay.createToken", (db) => db(tokens).insert(row))
        return { token: toToken(row), key }
      }),
    token,
    setTokenStatus: (id, status) =>
      client.query("relay.setTokenStatus", (db) => db(tokens).where({ id }).update({ status })).pipe(
        Effect.andThen(token(id))
      ),
    authenticate: (key) =>
      Effect.gen(function*() {
        if (key === undefined || key.length === 0) return yield* new InvalidApiKey({ reason: "missing" })
        const hash = hashKey(key)
        const row = yield* batched.tokenByHash(hash)
        if (row === undefined || !constantTimeEqualHex(String(row["key_hash"]), hash)) {
          return yield* new InvalidApiKey({ reason: "unknown" })
        }
        if (row["status"] !== "active") return yield* new InvalidApiKey({ reason: "disabled" })
        const expiresAt = optNum(row["expires_at"])
        if (expiresAt !== undefined && expiresAt <= (yield* Clock.currentTimeMillis)) {
          return yield* new InvalidApiKey({ reason: "expired" })
        }
        return {
          tokenId: String(row["id"]),
          accountId: String(row["account_id"]),
          models: row["models"] === null || row["models"] === undefined
            ? undefined
            : (JSON.parse(String(row["models"])) as ReadonlyArray<string>),
          group: String(row["group_name"]),
          billingPreference: String(row["billing_preference"]) as BillingPreference
        }
      }),
    recordLog: (input) =>
      decodeLog(input).pipe(
        Effect.flatMap((entry) =>
          Statements.insertIgnore(client, "relay.recordLog", logs, {
            hold_id: entry.holdId ?? entry.requestId,
            request_id: entry.requestId,
            account_id: entry.accountId,
            token_id: entry.tokenId,
            model: entry.model,
            prompt_tokens: entry.promptTokens,
            completion_tokens: entry.completionTokens,
            quota: entry.quota,
            source: entry.source,
            created_at: entry.createdAt
          }, "hold_id")
        ),
        Effect.map((inserted) => inserted > 0)
      ),
    recorder: {
      storeId: client.id,
      // A plain insert: the engine calls it once per hold, in the transaction that settles it.
      record: (hold, settlement) =>
        client.query("relay.recordSettlement", (db) => db(logs).insert(settledRow(hold, settlement))).pipe(
          Effect.asVoid
        )
    },
    claimRequestId: (accountId, requestId) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => batched.claimRequestId(accountId, requestId, now)),
    accountsOfRequest: (requestId) =>
      client.query(
        "relay.accountsOfRequest",
        (db) =>
          db(requestIds).select("account_id").where({ request_id: requestId }).orderBy([
            { column: "created_at", order: "asc" },
            { column: "account_id", order: "asc" }
          ])
      ).pipe(Effect.map((rows) => (rows as Array<{ account_id: unknown }>).map((r) => String(r.account_id)))),
    logs: (query) => {
      const limit = Math.min(Math.max(1, Math.trunc(query.limit ?? DEFAULT_LIMIT)), MAX_LIMIT)
      return client.query("relay.logs", (db) => {
        const q = db(logs).select("*")
        if (query.accountId !== undefined) q.where({ account_id: query.accountId })
        return q.orderBy([{ column: "created_at", order: "desc" }, { column: "seq", order: "desc" }]).limit(limit)
      }).pipe(Effect.map((rows) => (rows as Array<Record<string, unknown>>).map(toLog)))
    }
  }
}

/**
 * Authenticates an API key with the store in context.
 *
 * @since 0.1.0
 * @category accessors
 */
export const authenticate = (
  key: string | undefined
): Effect.Effect<Principal, InvalidApiKey | StoreError, RelayStore> =>
  Effect.gen(function*() {
    return yield* (yield* RelayStore).authenticate(key)
  })
