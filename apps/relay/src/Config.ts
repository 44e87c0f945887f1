/**
 * The relay's configuration: the JSON config file of `relay-api.md` (pricing,
 * channels, billing options, limits, funding plugins and preferences) plus the environment (`RELAY_PORT`,
 * `RELAY_HOST`, `RELAY_DATABASE_URL`, `RELAY_ADMIN_KEY`, `RELAY_CONFIG`).
 *
 * Every input is decoded with a Schema; a bad value becomes a `ConfigError`
 * whose message names the field path and the value found there, e.g.
 * `billing.holdTtlSeconds: expected ≥ 1, got 0`.
 *
 * @since 0.1.0
 */
import { Effect, Schema, SchemaIssue, SchemaTransformation } from "effect"
import { readFile } from "node:fs/promises"
import { isIP } from "node:net"

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

/**
 * The configuration (file or environment) is unreadable or invalid. `field` is
 * the dotted path of the offending value (`billing.holdTtlSeconds`,
 * `channels.0.baseUrl`, `RELAY_PORT`), `value` its rendering (empty when the
 * key is missing), `reason` what was expected, and `source` where it came
 * from (the config file's path, `built-in`, `environment`, or `input`).
 *
 * @since 0.1.0
 * @category errors
 */
export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  source: Schema.String,
  field: Schema.String,
  value: Schema.String,
  reason: Schema.String
}) {
  /** Stable code. */
  get code(): "config_error" {
    return "config_error"
  }
  override get message(): string {
    const at = this.source === "input" ? "" : ` (in ${this.source})`
    return this.value === ""
      ? `${this.field}: ${this.reason}${at}`
      : `${this.field}: ${this.reason}, got ${this.value}${at}`
  }
}

// ---------------------------------------------------------------------------
// building blocks
// ---------------------------------------------------------------------------

const nonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0, { message: "expected a finite number ≥ 0" }))
const positive = Schema.Finite.check(Schema.isGreaterThan(0, { message: "expected a finite number > 0" }))
const intAtLeast = (min: number) =>
  Schema.Number.check(
    Schema.isInt({ message: `expected an integer ≥ ${min}` }),
    Schema.isGreaterThanOrEqualTo(min, { message: `expected ≥ ${min}` }),
    Schema.isLessThanOrEqualTo(Number.MAX_SAFE_INTEGER, { message: "expected a safe integer" })
  )
const nonEmptyString = Schema.String.check(Schema.isMinLength(1, { message: "expected a non-empty string" }))

/**
 * The base URL of the built-in demo responder. A channel whose `baseUrl` uses
 * the `demo:` scheme is answered in-process, without any network.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEMO_BASE_URL = "demo://local/v1"

const isBaseUrl = (s: string): boolean => {
  try {
    const url = new URL(s)
    return url.protocol === "http:" || url.protocol === "https:" || url.protocol === "demo:"
  } catch {
    return false
  }
}

/**
 * Token pricing (new-api's model ratio): quota per prompt token is
 * `modelRatio × groupRatio`, a completion token costs `completionRatio` prompt tokens.
 *
 * @since 0.1.0
 * @category schemas
 */
export const TokenPrice = Schema.Struct({
  modelRatio: nonNegative,
  completionRatio: nonNegative
})
/** @since 0.1.0 @category models */
export type TokenPrice = typeof TokenPrice.Type

/**
 * Fixed pricing per request: `price` in currency units, charged as
 * `round(price × quotaPerUnit × groupRatio)`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const FixedPrice = Schema.Struct({
  price: nonNegative
})
/** @since 0.1.0 @category models */
export type FixedPrice = typeof FixedPrice.Type

/**
 * A model's pricing entry: token-priced or fixed-price.
 *
 * @since 0.1.0
 * @category schemas
 */
export const ModelPrice = Schema.Union([TokenPrice, FixedPrice])
/** @since 0.1.0 @category models */
export type ModelPrice = typeof ModelPrice.Type

/**
 * Whether a pricing entry is a fixed price per request.
 *
 * @since 0.1.0
 * @category guards
 */
export const isFixedPrice = (price: ModelPrice): price is FixedPrice => "price" in price

/**
 * An upstream channel. `baseUrl` includes the version prefix (`…/v1`); the
 * relay appends `/chat/completions`, `/embeddings`, `/models`. A `demo:` base
 * URL ({@link DEMO_BASE_URL}) is the built-in offline responder.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Channel = Schema.Struct({
  name: nonEmptyString,
  baseUrl: Schema.String.check(
    Schema.makeFilter((s: string) =>
      isBaseUrl(s) ? undefined : "expected an http(s) URL (or demo:) with its version prefix"
    )
  ),
  apiKey: Schema.String.pipe(Schema.withDecodingDefaultKey(Effect.succeed(""))),
  models: Schema.Array(nonEmptyString).check(Schema.isMinLength(1, { message: "expected at least one model" })),
  priority: Schema.Number.check(Schema.isInt({ message: "expected an integer" })).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0))
  )
})
/** @since 0.1.0 @category models */
export type Channel = typeof Channel.Type

/**
 * What happens to a request's hold when its client disconnects mid-request.
 *
 * @since 0.1.0
 * @category schemas
 */
export const OnClientDisconnect = Schema.Literals(["charge-prompt", "refund", "charge-streamed"])
/** @since 0.1.0 @category models */
export type OnClientDisconnect = typeof OnClientDisconnect.Type

/**
 * Billing options, each with the default of `relay-api.md`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Billing = Schema.Struct({
  trustQuota: Schema.NullOr(intAtLeast(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(null))),
  // At most 7 days, the SDK's bound on a hold's lifetime (spec §2.10).
  holdTtlSeconds: intAtLeast(1).check(Schema.isLessThanOrEqualTo(604_800, { message: "expected ≤ 604800 (7 days)" }))
    .pipe(
      Schema.withDecodingDefaultKey(Effect.succeed(600))
    ),
  minPreConsumeTokens: intAtLeast(0).pipe(Schema.withDecodingDefaultKey(Effect.succeed(500))),
  onClientDisconnect: OnClientDisconnect.pipe(Schema.withDecodingDefaultKey(Effect.succeed("charge-prompt" as const))),
  retries: intAtLeast(0).pipe(Schema.withDecodingDefaultKey(Effect.succeed(2))),
  reapIntervalSeconds: intAtLeast(1).pipe(Schema.withDecodingDefaultKey(Effect.succeed(30)))
})
/** @since 0.1.0 @category models */
export type Billing = typeof Billing.Type

const intBetween = (min: number, max: number, unit: string) =>
  intAtLeast(min).check(Schema.isLessThanOrEqualTo(max, { message: `expected ≤ ${max}${unit}` }))

/**
 * Request limits (`limits`), each a positive integer with the default of
 * `relay-api.md`:
 *
 * - `maxBodyBytes` (8 MiB, at most 1 GiB): a larger request body is refused
 *   with 413 before it is read whole;
 * - `maxJsonDepth` (64, at most 1024): JSON nested deeper gives 400;
 * - `upstreamIdleSeconds` (60, at most 1 day): an upstream that sends nothing
 *   for that long (before its headers, before its body, or between two stream
 *   chunks) counts as a failed attempt;
 * - `clientIdleSeconds` (60, at most 1 day): a client that reads nothing for
 *   that long is disconnected and billed by `billing.onClientDisconnect`;
 * - `maxRequestSeconds` (300, at most 1 day): no request runs longer.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Limits = Schema.Struct({
  maxBodyBytes: intBetween(1, 1_073_741_824, " (1 GiB)").pipe(Schema.withDecodingDefaultKey(Effect.succeed(8_388_608))),
  maxJsonDepth: intBetween(1, 1024, "").pipe(Schema.withDecodingDefaultKey(Effect.succeed(64))),
  upstreamIdleSeconds: intBetween(1, 86_400, " (1 day)").pipe(Schema.withDecodingDefaultKey(Effect.succeed(60))),
  clientIdleSeconds: intBetween(1, 86_400, " (1 day)").pipe(Schema.withDecodingDefaultKey(Effect.succeed(60))),
  maxRequestSeconds: intBetween(1, 86_400, " (1 day)").pipe(Schema.withDecodingDefaultKey(Effect.succeed(300)))
})
/** @since 0.1.0 @category models */
export type Limits = typeof Limits.Type

const isHttpUrl = (s: string): boolean => {
  try {
    const url = new URL(s)
    return url.protocol === "http:" || url.protocol === "https:"
  } catch {
    return false
  }
}

/**
 * The `LowBalance` webhook (`notifications.webhook`): every low-balance warning
 * is POSTed as JSON to `url`, signed with `X-Relay-Signature: sha256=<hex
 * HMAC-SHA256(secret, body)>`. `timeoutMs` bounds one attempt (default 5000);
 * `maxAttempts` bounds the attempts of one event, retried with exponential
 * back-off (default 5). See the `Webhook` module.
 *
 * @since 0.1.0
 * @category schemas
 */
export const WebhookConfig = Schema.Struct({
  url: Schema.String.check(
    Schema.makeFilter((s: string) => isHttpUrl(s) ? undefined : "expected an http(s) URL")
  ),
  secret: nonEmptyString,
  timeoutMs: intAtLeast(1).pipe(Schema.withDecodingDefaultKey(Effect.succeed(5000))),
  maxAttempts: intAtLeast(1).pipe(Schema.withDecodingDefaultKey(Effect.succeed(5)))
})
/** @since 0.1.0 @category models */
export type WebhookConfig = typeof WebhookConfig.Type

/**
 * Notification options (optional section `notifications`); today only
 * `webhook` ({@link WebhookConfig}).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Notifications = Schema.Struct({
  webhook: Schema.optionalKey(WebhookConfig)
})
/** @since 0.1.0 @category models */
export type Notifications = typeof Notifications.Type

// ---------------------------------------------------------------------------
// funding: plugin sources and named preferences
// ---------------------------------------------------------------------------

/**
 * The ids the relay's own sources use; a plugin entry may not take them.
 *
 * @since 0.4.0
 * @category constants
 */
export const BUILT_IN_SOURCE_IDS: ReadonlyArray<string> = ["wallet", "subscription", "token"]

/**
 * The preference names every relay knows (the SDK's four aliases).
 *
 * @since 0.4.0
 * @category constants
 */
export const BUILT_IN_PREFERENCES: ReadonlyArray<string> = [
  "subscription_first",
  "wallet_first",
  "subscription_only",
  "wallet_only"
]

// A source id is stored in the ledger's and the hold parts' `source_id` (64 characters);
// a preference name in the hold's `preference` (32) and the account's (64).
const identifier = (max: number, what: string) =>
  Schema.String.check(
    Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/, {
      message: `expected a ${what}: letters, digits, _ . : - (starting with a letter or digit)`
    }),
    Schema.isMaxLength(max, { message: `expected at most ${max} characters` })
  )
const SourceId = identifier(64, "source id")
const PreferenceName = identifier(32, "preference name")

/**
 * One funding-source plugin (`funding.sources[i]`): the package to load by
 * name (resolved from the relay's working directory), the id to register its
 * source under (used in preferences, hold parts, ledger rows and request
 * logs), and the plugin's own `options` (decoded by the plugin's schema at
 * start-up; default `{}`).
 *
 * @since 0.4.0
 * @category schemas
 */
export const FundingSourceEntry = Schema.Struct({
  id: SourceId.check(
    Schema.makeFilter((id: string) =>
      BUILT_IN_SOURCE_IDS.includes(id)
        ? `expected an id other than the built-in ${BUILT_IN_SOURCE_IDS.join(", ")}`
        : undefined
    )
  ),
  package: nonEmptyString,
  options: Schema.Unknown.pipe(Schema.withDecodingDefaultKey(Effect.succeed({})))
})
/** @since 0.4.0 @category models */
export type FundingSourceEntry = typeof FundingSourceEntry.Type

const uniqueSourceIds = Schema.makeFilter((sources: ReadonlyArray<FundingSourceEntry>) => {
  const seen = new Set<string>()
  for (let i = 0; i < sources.length; i++) {
    const id = sources[i]!.id
    if (seen.has(id)) return { path: [i, "id"], issue: `expected a unique source id, "${id}" is repeated` }
    seen.add(id)
  }
  return undefined
})

const Chain = Schema.Array(SourceId).check(
  Schema.isMinLength(1, { message: "expected a non-empty list of source ids" }),
  Schema.makeFilter((chain: ReadonlyArray<string>) => {
    const seen = new Set<string>()
    for (let i = 0; i < chain.length; i++) {
      if (seen.has(chain[i]!)) return { path: [i], issue: `expected each source once, "${chain[i]}" is repeated` }
      seen.add(chain[i]!)
    }
    return undefined
  })
)

const knownChains = Schema.makeFilter(
  (
    funding: {
      readonly sources: ReadonlyArray<FundingSourceEntry>
      readonly preferences: Readonly<Record<string, ReadonlyArray<string>>>
    }
  ) => {
    const known = new Set([...BUILT_IN_SOURCE_IDS.filter((id) => id !== "token"), ...funding.sources.map((s) => s.id)])
    for (const [name, chain] of Object.entries(funding.preferences)) {
      if (BUILT_IN_PREFERENCES.includes(name)) {
        return {
          path: ["preferences", name],
          issue: `expected a name other than the built-in ${BUILT_IN_PREFERENCES.join(", ")}`
        }
      }
      for (let i = 0; i < chain.length; i++) {
        if (!known.has(chain[i]!)) {
          return {
            path: ["preferences", name, i],
            issue: `expected a funding source id (${[...known].join(", ")})`
          }
        }
      }
    }
    return undefined
  }
)

/**
 * Funding options (`funding`): third-party funding-source plugins loaded by
 * package name (`sources`, see {@link FundingSourceEntry}) and named
 * preferences (`preferences`: name → ordered source ids) an account's
 * `billingPreference` may name next to the four built-ins. A chain may name
 * `wallet`, `subscription` and the `sources`' ids; a name may not redefine a
 * built-in one. Both default to empty.
 *
 * @since 0.4.0
 * @category schemas
 */
export const Funding = Schema.Struct({
  sources: Schema.Array(FundingSourceEntry).check(uniqueSourceIds).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed([]))
  ),
  preferences: Schema.Record(PreferenceName, Chain).pipe(Schema.withDecodingDefaultKey(Effect.succeed({})))
}).check(knownChains)
/** @since 0.4.0 @category models */
export type Funding = typeof Funding.Type

const uniqueChannelNames = Schema.makeFilter((channels: ReadonlyArray<Channel>) => {
  const seen = new Set<string>()
  for (let i = 0; i < channels.length; i++) {
    const name = channels[i]!.name
    if (seen.has(name)) return { path: [i, "name"], issue: `expected a unique channel name, "${name}" is repeated` }
    seen.add(name)
  }
  return undefined
})

/**
 * The config file (`RELAY_CONFIG`). Unknown keys are refused (a typo must not
 * silently fall back to a default). Defaults: `quotaPerUnit` 500000, `groups`
 * `{ default: 1 }` (a `default` group with ratio 1 is added when absent),
 * `models` `{}`, `channels` `[]`, channel `priority` 0 and `apiKey` `""`, the
 * billing defaults of {@link Billing}, the limits of {@link Limits} and no
 * plugins or custom preferences ({@link Funding}). `notifications` is optional and
 * stays absent when not given.
 *
 * @since 0.1.0
 * @category schemas
 */
export const RelayConfig = Schema.Struct({
  quotaPerUnit: positive.pipe(Schema.withDecodingDefaultKey(Effect.succeed(500_000))),
  groups: Schema.Record(Schema.String, nonNegative).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed({ default: 1 }))
  ),
  models: Schema.Record(Schema.String, ModelPrice).pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  channels: Schema.Array(Channel).check(uniqueChannelNames).pipe(Schema.withDecodingDefaultKey(Effect.succeed([]))),
  billing: Billing.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  limits: Limits.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  funding: Funding.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  /** Optional: absent when the file has no `notifications` section. */
  notifications: Schema.optionalKey(Notifications)
})
/** @since 0.1.0 @category models */
export type RelayConfig = typeof RelayConfig.Type

/**
 * The built-in config used without `RELAY_CONFIG`: the default pricing and
 * billing options, one channel (the local demo responder) serving the model
 * `demo`, token-priced at `modelRatio` 1 and `completionRatio` 1.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultConfigJson = {
  models: { demo: { modelRatio: 1, completionRatio: 1 } },
  channels: [{ name: "demo", baseUrl: DEMO_BASE_URL, models: ["demo"] }]
} as const

// ---------------------------------------------------------------------------
// decoding
// ---------------------------------------------------------------------------

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()
const EXCESS = "Expected no excess property"

const render = (value: unknown): string => {
  if (value === undefined) return ""
  if (typeof value === "string") return JSON.stringify(value)
  if (typeof value === "number" && !Number.isFinite(value)) return String(value)
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

const lookup = (input: unknown, path: ReadonlyArray<PropertyKey>): unknown => {
  let current: unknown = input
  for (const key of path) {
    if (current === null || typeof current !== "object") return undefined
    current = (current as Record<PropertyKey, unknown>)[key]
  }
  return current
}

const lowerFirst = (s: string): string =>
  s.startsWith("Expected") || s.startsWith("Missing") ? s.charAt(0).toLowerCase() + s.slice(1) : s

/** @internal turns a Schema failure into a `ConfigError` naming the most useful issue. */
export const toConfigError = (
  source: string,
  prefix: string,
  input: unknown,
  error: Schema.SchemaError
): ConfigError => {
  const issues = formatter(error.issue).issues
  // A union reports every branch; an "excess property" from the branch that did
  // not apply is noise next to a real type or range error.
  const first = issues.find((i) => i.message !== EXCESS) ?? issues[0]
  const path = (first?.path ?? []).map((segment) =>
    typeof segment === "object" && segment !== null && "key" in segment ? segment.key : segment
  ) as ReadonlyArray<PropertyKey>
  const field = [prefix, ...path.map(String)].filter((s) => s.length > 0).join(".")
  const reason = lowerFirst(first?.message ?? error.message)
  const value = first?.message === "Missing key" ? "" : render(lookup(input, path))
  return new ConfigError({
    source,
    field: field === "" ? "(root)" : field,
    value,
    reason: reason === EXCESS.charAt(0).toLowerCase() + EXCESS.slice(1) ? "unknown key" : reason
  })
}

const decodeRelayConfig = Schema.decodeUnknownEffect(RelayConfig)

/**
 * Decodes a parsed config file, filling the defaults.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeConfig = (input: unknown, source = "input"): Effect.Effect<RelayConfig, ConfigError> =>
  decodeRelayConfig(input, { onExcessProperty: "error" }).pipe(
    Effect.map((
      config
    ) => ("default" in config.groups ? config : { ...config, groups: { default: 1, ...config.groups } })),
    Effect.mapError((error) => toConfigError(source, "", input, error))
  )

/**
 * The built-in default config (see {@link defaultConfigJson}), decoded.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultConfig: Effect.Effect<RelayConfig, ConfigError> = decodeConfig(defaultConfigJson, "built-in")

/**
 * Reads and decodes a config file: JSON, decoded with {@link RelayConfig}.
 *
 * @since 0.1.0
 * @category loading
 */
export const loadConfigFile = (path: string): Effect.Effect<RelayConfig, ConfigError> =>
  Effect.tryPromise({
    try: () => readFile(path, "utf8"),
    catch: (cause) =>
      new ConfigError({
        source: "environment",
        field: "RELAY_CONFIG",
        value: JSON.stringify(path),
        reason: `cannot read the config file (${(cause as NodeJS.ErrnoException)?.code ?? String(cause)})`
      })
  }).pipe(
    Effect.flatMap((text) =>
      Effect.try({
        try: () => JSON.parse(text) as unknown,
        catch: (cause) =>
          new ConfigError({
            source: path,
            field: "(root)",
            value: "",
            reason: `expected JSON (${cause instanceof Error ? cause.message : String(cause)})`
          })
      })
    ),
    Effect.flatMap((json) => decodeConfig(json, path))
  )

const Port = Schema.String.check(
  Schema.isPattern(/^\d{1,5}$/, { message: "expected a TCP port (an integer from 0 to 65535)" })
).pipe(
  Schema.decodeTo(
    Schema.Number.check(
      Schema.isLessThanOrEqualTo(65535, { message: "expected a TCP port (an integer from 0 to 65535)" })
    ),
    SchemaTransformation.numberFromString
  )
)

// An IP address or a host name to bind (`0.0.0.0`, `::`, `127.0.0.1`, `localhost`, …).
const Host = Schema.String.check(
  Schema.makeFilter((s: string) =>
    isIP(s) !== 0 || /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(s)
      ? undefined
      : "expected an IP address or a host name to bind (e.g. 127.0.0.1, 0.0.0.0, ::)"
  )
)

const DatabaseUrl = Schema.String.check(
  Schema.makeFilter((s: string) =>
    /^(sqlite:.+|postgres(ql)?:\/\/.+|mysql:\/\/.+)$/.test(s)
      ? undefined
      : "expected sqlite:PATH, postgres://… or mysql://…"
  )
)

/**
 * The environment the relay reads. Empty strings count as unset.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Env = Schema.Struct({
  RELAY_PORT: Port.pipe(Schema.withDecodingDefaultKey(Effect.succeed("3000"))),
  RELAY_HOST: Host.pipe(Schema.withDecodingDefaultKey(Effect.succeed("127.0.0.1"))),
  RELAY_DATABASE_URL: DatabaseUrl.pipe(Schema.withDecodingDefaultKey(Effect.succeed("sqlite:./data/relay.db"))),
  RELAY_ADMIN_KEY: Schema.optionalKey(nonEmptyString),
  RELAY_CONFIG: Schema.optionalKey(nonEmptyString)
})
/** @since 0.1.0 @category models */
export type Env = typeof Env.Type

const decodeEnvSchema = Schema.decodeUnknownEffect(Env)

/**
 * Decodes the relay's variables from an environment (default `process.env`);
 * other variables are ignored and empty values count as unset.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeEnv = (
  env: Readonly<Record<string, string | undefined>> = process.env
): Effect.Effect<Env, ConfigError> => {
  const picked: Record<string, string> = {}
  for (const key of ["RELAY_PORT", "RELAY_HOST", "RELAY_DATABASE_URL", "RELAY_ADMIN_KEY", "RELAY_CONFIG"]) {
    const value = env[key]
    if (value !== undefined && value !== "") picked[key] = value
  }
  return decodeEnvSchema(picked).pipe(Effect.mapError((error) => toConfigError("environment", "", picked, error)))
}

/**
 * Everything the relay is configured with.
 *
 * @since 0.1.0
 * @category models
 */
export interface Loaded {
  readonly port: number
  /** The address to bind (`RELAY_HOST`); absent means `127.0.0.1`. */
  readonly host?: string | undefined
  readonly databaseUrl: string
  /** `undefined`: the relay generates one on first start (a later concern). Never log it. */
  readonly adminKey: string | undefined
  /** The config file's path, or `"built-in"`. */
  readonly configSource: string
  readonly config: RelayConfig
}

/**
 * Loads the configuration: the environment, then the config file named by
 * `RELAY_CONFIG` or the built-in default.
 *
 * @since 0.1.0
 * @category loading
 */
export const load = (
  env: Readonly<Record<string, string | undefined>> = process.env
): Effect.Effect<Loaded, ConfigError> =>
  Effect.gen(function*() {
    const vars = yield* decodeEnv(env)
    const path = vars.RELAY_CONFIG
    const config = path === undefined ? yield* defaultConfig : yield* loadConfigFile(path)
    return {
      port: vars.RELAY_PORT,
      host: vars.RELAY_HOST,
      databaseUrl: vars.RELAY_DATABASE_URL,
      adminKey: vars.RELAY_ADMIN_KEY,
      configSource: path ?? "built-in",
      config
    }
  })
