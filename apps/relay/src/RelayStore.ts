/**
 * The relay's own tables, next to the SDK's (same knex client, same prefix):
 * account metadata (name, group, billing preference), API tokens (stored only
 * as the SHA-256 of their key) and request logs (one per settled request).
 *
 * Token keys are `sk-` plus 48 random base62 characters, generated here and
 * returned once by {@link RelayStore.createToken}; authentication hashes the
 * presented key, looks the hash up and compares it in constant time.
 *
 * @since 0.1.0
 */
import { Clock, Context, Effect, Layer, Schema } from "effect"
import type { BillingError } from "@relay-billing/core"
import { IdColumns, KnexClient, Statements } from "@relay-billing/knex"
import type { Migrations } from "@relay-billing/knex"
import { constantTimeEqualHex, generateKey, hashKey } from "./internal/secrets.js"

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
  logs: "relay_logs"
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
 * How an account's requests are funded (the SDK's preferences).
 *
 * @since 0.1.0
 * @category schemas
 */
export const BillingPreference = Schema.Literals(["subscription_first", "wallet_first", "subscription_only", "wallet_only"])
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
 * An unknown relay account.
 *
 * @since 0.1.0
 * @category errors
 */
export class AccountNotFound extends Schema.TaggedError<AccountNotFound>()("RelayAccountNotFound", {
  accountId: Schema.String
}) {
  /** Stable code. */
  get code(): "account_not_found" {
    return "account_not_found"
  }
  override get message(): string {
    return `account ${this.accountId} not found`
  }
}

/**
 * An unknown relay token.
 *
 * @since 0.1.0
 * @category errors
 */
export class TokenNotFound extends Schema.TaggedError<TokenNotFound>()("RelayTokenNotFound", {
  tokenId: Schema.String
}) {
  /** Stable code. */
  get code(): "token_not_found" {
    return "token_not_found"
  }
  override get message(): string {
    return `token ${this.tokenId} not found`
  }
}

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
  /** Records a settled request's log; a repeated `requestId` is ignored (returns false). */
  readonly recordLog: (entry: typeof LogEntry.Encoded) => Effect.Effect<boolean, StoreError | Schema.SchemaError>
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
        const row = yield* client.query(
          "relay.authenticate",
          (db) =>
            db(`${tokens} as t`)
              .join(`${accounts} as a`, "a.id", "t.account_id")
              .where("t.key_hash", hash)
              .first(
                "t.id",
                "t.account_id",
                "t.key_hash",
                "t.models",
                "t.expires_at",
                "t.status",
                "a.group_name",
                "a.billing_preference"
              )
        )
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
            request_id: entry.requestId,
            account_id: entry.accountId,
            token_id: entry.tokenId,
            model: entry.model,
            prompt_tokens: entry.promptTokens,
            completion_tokens: entry.completionTokens,
            quota: entry.quota,
            source: entry.source,
            created_at: entry.createdAt
          }, "request_id")
        ),
        Effect.map((inserted) => inserted > 0)
      ),
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
export const authenticate = (key: string | undefined): Effect.Effect<Principal, InvalidApiKey | StoreError, RelayStore> =>
  Effect.gen(function*() {
    return yield* (yield* RelayStore).authenticate(key)
  })
