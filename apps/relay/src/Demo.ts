/**
 * The first-start demo bootstrap of `relay serve` with the built-in (demo)
 * config: a demo account (1,000,000 quota by default) and a demo token,
 * created once. The token's key exists in clear only at creation, so it is
 * kept in `./data/demo-token` (JSON, file mode 0600) and reused on later
 * starts while it still authenticates; the start-up output prints the key and
 * a ready-to-paste `curl` for the `demo` model.
 *
 * @since 0.1.0
 */
import type { BillingError } from "@relay-billing/core"
import { KnexClient } from "@relay-billing/knex"
import { WalletAdmin } from "@relay-billing/wallet"
import { Console, Effect, Schema } from "effect"
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises"
import path from "node:path"
import type { Loaded } from "./Config.js"
import { randomBase62 } from "./internal/secrets.js"
import { RelayStore } from "./RelayStore.js"

/**
 * The default location of the demo token file.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_PATH = "./data/demo-token"

/**
 * The demo account's id.
 *
 * @since 0.1.0
 * @category constants
 */
export const ACCOUNT_ID = "acc_demo"

/**
 * The demo token file cannot be read or written.
 *
 * @since 0.1.0
 * @category errors
 */
export class DemoError extends Schema.TaggedError<DemoError>()("DemoError", {
  path: Schema.String,
  reason: Schema.String
}) {
  /** Stable code. */
  get code(): "demo_error" {
    return "demo_error"
  }
  override get message(): string {
    return `demo token file ${this.path}: ${this.reason}`
  }
}

/**
 * Options of {@link bootstrap}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Where the demo token is kept (default {@link DEFAULT_PATH}). */
  readonly path?: string | undefined
  /** The demo account's initial quota (default 1,000,000). */
  readonly quota?: number | undefined
  /** The relay's base URL for the printed `curl` (default `http://127.0.0.1:3000`). */
  readonly baseUrl?: string | undefined
  /** The model of the printed `curl` (default `demo`). */
  readonly model?: string | undefined
  /** Print the banner with `Console.log` (default true). */
  readonly print?: boolean | undefined
}

/**
 * What {@link bootstrap} set up or found.
 *
 * @since 0.1.0
 * @category models
 */
export interface Bootstrapped {
  readonly accountId: string
  readonly tokenId: string
  /** The demo token's key (a secret for the demo account only). */
  readonly key: string
  /** Whether the account was created by this call. */
  readonly createdAccount: boolean
  /** Whether the token was created by this call. */
  readonly createdToken: boolean
  /** The token file's absolute path. */
  readonly path: string
  /** A ready-to-paste request for the demo model. */
  readonly curl: string
}

const Stored = Schema.Struct({ accountId: Schema.String, tokenId: Schema.String, key: Schema.String })
const decodeStored = Schema.decodeUnknownOption(Schema.fromJsonString(Stored))

const errnoCode = (cause: unknown): string => (cause as NodeJS.ErrnoException)?.code ?? String(cause)

/**
 * The `curl` command for a chat completion with the demo token.
 *
 * @since 0.1.0
 * @category formatting
 */
export const curlCommand = (baseUrl: string, key: string, model = "demo"): string =>
  `curl ${baseUrl.replace(/\/+$/, "")}/v1/chat/completions -H "Authorization: Bearer ${key}" ` +
  `-H "Content-Type: application/json" -d '${
    JSON.stringify({ model, messages: [{ role: "user", content: "Hello!" }] })
  }'`

/**
 * The start-up text printed for the demo.
 *
 * @since 0.1.0
 * @category formatting
 */
export const banner = (result: Bootstrapped): string =>
  [
    `demo account: ${result.accountId}${result.createdAccount ? " (created)" : ""}`,
    `demo token:   ${result.key}${result.createdToken ? " (created, " : " (from "}${result.path})`,
    "try it:",
    `  ${result.curl}`
  ].join("\n")

/**
 * Whether the loaded configuration is the built-in demo config (no `RELAY_CONFIG`).
 *
 * @since 0.1.0
 * @category predicates
 */
export const isDemoConfig = (loaded: Loaded): boolean => loaded.configSource === "built-in"

/**
 * Creates the demo account and token once and returns the token's key: an
 * existing token file whose key still authenticates is reused; otherwise the
 * account is created when missing (wallet account and relay metadata in one
 * transaction) and a new unlimited token is created and written to the file
 * (mode 0600, replaced atomically). Needs the migrated billing services.
 *
 * @since 0.1.0
 * @category bootstrap
 */
export const bootstrap = (
  options: Options = {}
): Effect.Effect<
  Bootstrapped,
  DemoError | BillingError.StoreError,
  RelayStore | WalletAdmin.WalletAdmin | KnexClient.KnexClient
> =>
  Effect.gen(function*() {
    const file = path.resolve(options.path ?? DEFAULT_PATH)
    const baseUrl = options.baseUrl ?? "http://127.0.0.1:3000"
    const model = options.model ?? "demo"
    const fail = (reason: string) => new DemoError({ path: file, reason })
    const store = yield* RelayStore
    const wallet = yield* WalletAdmin.WalletAdmin
    const client = yield* KnexClient.KnexClient

    const finish = (result: Omit<Bootstrapped, "path" | "curl">) =>
      Effect.gen(function*() {
        const out: Bootstrapped = { ...result, path: file, curl: curlCommand(baseUrl, result.key, model) }
        if (options.print !== false) yield* Console.log(banner(out))
        return out
      })

    // 1. a stored token that still authenticates for the demo account
    const text = yield* Effect.tryPromise({ try: () => readFile(file, "utf8"), catch: (cause) => cause }).pipe(
      Effect.map((t): string | undefined => t),
      Effect.catch((cause) =>
        errnoCode(cause) === "ENOENT"
          ? Effect.succeed(undefined)
          : Effect.fail(fail(`cannot read (${errnoCode(cause)})`))
      )
    )
    if (text !== undefined) {
      const stored = decodeStored(text.trim())
      if (stored._tag === "Some") {
        const principal = yield* store.authenticate(stored.value.key).pipe(
          Effect.map((p) => p.accountId === stored.value.accountId ? p : undefined),
          Effect.catchTag("InvalidApiKey", () => Effect.succeed(undefined))
        )
        if (principal !== undefined) {
          yield* Effect.tryPromise({
            try: () => chmod(file, 0o600),
            catch: (c) => fail(`cannot chmod (${errnoCode(c)})`)
          })
          return yield* finish({
            accountId: stored.value.accountId,
            tokenId: stored.value.tokenId,
            key: stored.value.key,
            createdAccount: false,
            createdToken: false
          })
        }
      }
      yield* Effect.logWarning(`demo token in ${file} no longer authenticates; creating a new one`)
    }

    // 2. the account, once
    const exists = yield* store.account(ACCOUNT_ID).pipe(
      Effect.as(true),
      Effect.catchTag("AccountNotFound", () => Effect.succeed(false))
    )
    if (!exists) {
      yield* client.transaction(Effect.gen(function*() {
        yield* wallet.createAccount({ id: ACCOUNT_ID, balance: options.quota ?? 1_000_000 })
        yield* store.createAccount({
          id: ACCOUNT_ID,
          name: "demo",
          group: "default",
          billingPreference: "subscription_first"
        })
      })).pipe(
        Effect.mapError((e) => e._tag === "StoreError" ? e : fail(`cannot create the demo account (${e.message})`))
      )
    }

    // 3. a token, written to the file before it is reported
    const tokenId = `tok_demo_${randomBase62(12)}`
    const { key } = yield* client.transaction(Effect.gen(function*() {
      yield* wallet.createToken({ id: tokenId, accountId: ACCOUNT_ID, remain: 0, unlimited: true })
      return yield* store.createToken({
        id: tokenId,
        accountId: ACCOUNT_ID,
        name: "demo",
        models: undefined,
        expiresAt: undefined
      })
    })).pipe(Effect.mapError((e) => e._tag === "StoreError" ? e : fail(`cannot create the demo token (${e.message})`)))
    yield* Effect.tryPromise({
      try: async () => {
        await mkdir(path.dirname(file), { recursive: true })
        const tmp = `${file}.${process.pid}.tmp`
        await writeFile(tmp, `${JSON.stringify({ accountId: ACCOUNT_ID, tokenId, key })}\n`, { mode: 0o600 })
        await chmod(tmp, 0o600)
        await rename(tmp, file)
      },
      catch: (c) => fail(`cannot write (${errnoCode(c)})`)
    })
    return yield* finish({ accountId: ACCOUNT_ID, tokenId, key, createdAccount: !exists, createdToken: true })
  })
