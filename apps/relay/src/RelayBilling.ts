/**
 * Wires the relay's billing: a knex client (from `RELAY_DATABASE_URL`), every
 * migration (`Subscription.allMigrations`, the relay's own, then the plugins'),
 * a `BillingSession` funded by the subscription source, the wallet and the
 * `funding.sources` plugins, with the token budget (`KnexBilling.sessionLayer`),
 * WalletAdmin, SubscriptionAdmin and the {@link RelayStore} (whose
 * `SettlementRecorder` writes the request log of every settlement); plus the
 * admin key. The session's `BillingEvents` publisher is the
 * `notifications.webhook` notifier when configured (see {@link Webhook}). The
 * server module mounts {@link AdminApi.routes} (and the client API) over
 * {@link layerFromConfig}.
 *
 * @since 0.1.0
 */
import type {
  AccountCounters,
  BillingError,
  BillingSession,
  FundingRegistry,
  HoldJournal,
  Ledger,
  Source,
  SqlStore
} from "@relay-billing/core"
import { Audit as KnexAudit, KnexBilling, KnexClient, Migrations, SourceMigrations } from "@relay-billing/knex"
import type { Accounts, Audit } from "@relay-billing/knex"
import { Subscription, SubscriptionAdmin, SubscriptionSource } from "@relay-billing/subscription"
import { TokenBudget, Wallet, WalletAdmin, WalletSource } from "@relay-billing/wallet"
import { Effect, Layer } from "effect"
import { AdminKey } from "./AdminKey.js"
import type { AdminKeyError } from "./AdminKey.js"
import type { ConfigError, Loaded } from "./Config.js"
import * as Plugins from "./Plugins.js"
import * as RelayStore from "./RelayStore.js"
import * as Webhook from "./Webhook.js"

/**
 * Every migration set the relay runs, in order.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrationSets: ReadonlyArray<Migrations.MigrationSet> = [
  ...Subscription.allMigrations,
  RelayStore.migrations
]

/**
 * Applies every pending migration of {@link migrationSets}.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrate: Effect.Effect<Migrations.MigrationReport, BillingError.StoreError, KnexClient.KnexClient> =
  Migrations
    .run(migrationSets)

/**
 * Applies every pending migration of {@link migrationSets}, then those of the
 * plugin sources (`funding.sources`), each in its own migrations table
 * (`SourceMigrations`: `<prefix>source_<id>_migrations`).
 *
 * @since 0.4.0
 * @category migrations
 */
export const migrateWith = (
  sources: ReadonlyArray<Pick<Source.Source, "id" | "migrations">>
): Effect.Effect<Migrations.MigrationReport, BillingError.StoreError, KnexClient.KnexClient> =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const plugins = sources.filter((s) => (s.migrations ?? []).length > 0).map((s) => SourceMigrations.toSet(client, s))
    return yield* Migrations.run([...migrationSets, ...plugins])
  })

/**
 * Loads the plugins of the config's `funding.sources` (see {@link Plugins.load}),
 * resolving package names from `cwd` (default: the working directory).
 *
 * @since 0.4.0
 * @category plugins
 */
export const loadPlugins = (
  loaded: Loaded,
  cwd?: string
): Effect.Effect<ReadonlyArray<Source.Source>, ConfigError> =>
  Plugins.load(loaded.config.funding.sources, { cwd, configSource: loaded.configSource }).pipe(
    Effect.map((all) => all.map((l) => l.source))
  )

/**
 * Options of the SDK services (see {@link sdkLayer}).
 *
 * @since 0.4.0
 * @category models
 */
export interface LayerOptions {
  readonly wallet?: WalletSource.WalletOptions
  readonly subscription?: SubscriptionSource.SubscriptionOptions
  readonly session?: BillingSession.Options
  readonly lowBalance?: Accounts.LowBalanceOptions
  /**
   * Plugin sources (`funding.sources`, loaded): registered after the
   * subscription and the wallet (in the default order; preferences pick their
   * own); their migrations run with the others (see {@link migrateWith}).
   */
  readonly sources?: ReadonlyArray<Source.Source> | undefined
}

/**
 * The SDK services of the relay over the knex client in context: a
 * `BillingSession` funded by subscriptions, then the wallet, then the plugin
 * `sources` (token budgets too), `WalletAdmin`, `SubscriptionAdmin` and `Accounts`.
 *
 * @since 0.4.0
 * @category layers
 */
export const sdkLayer = (options: LayerOptions = {}) =>
  Layer.mergeAll(
    KnexBilling.sessionLayer({
      funding: [
        SubscriptionSource.make(options.subscription),
        WalletSource.make(options.wallet),
        ...(options.sources ?? [])
      ],
      budgets: [TokenBudget.make()],
      ...(options.session ? { session: options.session } : {}),
      ...(options.lowBalance ? { lowBalance: options.lowBalance } : {})
    }),
    WalletAdmin.WalletAdmin.layer,
    SubscriptionAdmin.SubscriptionAdmin.layerWith(
      options.subscription?.timeZone !== undefined ? { timeZone: options.subscription.timeZone } : {}
    )
  )

/**
 * The balances the audit checks: wallets, token budgets and subscription usage.
 *
 * @since 0.4.0
 * @category audit
 */
export const auditBalances: ReadonlyArray<Audit.BalanceColumn> = [
  ...Wallet.auditBalances,
  ...Subscription.auditBalances
]

/**
 * The relay's audit (`Audit.run` of `@relay-billing/knex`): the built-in
 * {@link auditBalances}, the `usedQuota` counters (`Subscription.auditCounters`),
 * and every `audit` column the given v2 `sources` declare (the plugins of
 * `funding.sources`; a built-in source's columns already in
 * {@link auditBalances} are checked once), each summed per subject against the
 * source's ledger rows.
 *
 * @since 0.4.0
 * @category audit
 */
export const audit = (
  sources: ReadonlyArray<Pick<Source.Source, "id" | "audit">>
): Effect.Effect<Audit.AuditReport, BillingError.StoreError, KnexClient.KnexClient> =>
  KnexAudit.run(auditBalances, { counters: Subscription.auditCounters, sources })

/**
/**
 * The services the relay's billing provides.
 *
 * @since 0.1.0
 * @category models
 */
export type Services =
  | KnexClient.KnexClient
  | BillingSession.BillingSession
  | WalletAdmin.WalletAdmin
  | SubscriptionAdmin.SubscriptionAdmin
  | HoldJournal.HoldJournal
  | Ledger.Ledger
  | AccountCounters.AccountCounters
  | FundingRegistry.FundingRegistry
  | Accounts.Accounts
  | SqlStore.SqlStore
  | RelayStore.RelayStore

/**
 * The billing services over a given client layer; migrations run first. The
 * session is funded by the subscription, then the wallet, then the plugin
 * `sources` (in the default order; preferences pick their own), with the
 * token budget (`KnexBilling.sessionLayer`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerClient = <E, R>(
  client: Layer.Layer<KnexClient.KnexClient, E, R>,
  options: LayerOptions & {
    /**
     * What the `BillingSession` publishes its events to: a layer providing
     * `BillingEvents.BillingEvents` (e.g. {@link Webhook.layer}); default:
     * events are dropped.
     */
    readonly events?: Layer.Layer<never> | undefined
  } = {}
): Layer.Layer<Services, E | BillingError.StoreError | BillingError.InvalidInput, R> => {
  const migrated = Layer.effectDiscard(migrateWith(options.sources ?? [])).pipe(Layer.provideMerge(client))
  // The request log is written by the engine in each settlement's transaction (issue 9 #9).
  const recorded = sdkLayer(options).pipe(Layer.provide(RelayStore.RelayStore.recorderLayer))
  const billing = options.events === undefined ? recorded : recorded.pipe(Layer.provide(options.events))
  return Layer.mergeAll(billing, RelayStore.RelayStore.layer).pipe(Layer.provideMerge(migrated))
}

/**
 * The billing services over a database URL (`sqlite:PATH`, `postgres://…`, `mysql://…`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerUrl = (
  url: string,
  options: LayerOptions & {
    readonly client?: KnexClient.ClientOptions
    /** See {@link layerClient}. */
    readonly events?: Layer.Layer<never> | undefined
  } = {}
): Layer.Layer<Services, BillingError.StoreError | BillingError.InvalidInput> =>
  layerClient(KnexClient.KnexClient.layerUrl(url, options.client), options)

/**
 * The SDK options the relay's config implies: hold lifetime
 * (`billing.holdTtlSeconds`), the trust bypass (`billing.trustQuota`) and the
 * named preferences (`funding.preferences`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const sdkOptions = (loaded: Loaded): LayerOptions => ({
  session: {
    holdTtlMillis: loaded.config.billing.holdTtlSeconds * 1000,
    ...(loaded.config.billing.trustQuota !== null
      ? { trustBypass: { threshold: loaded.config.billing.trustQuota } }
      : {}),
    ...(Object.keys(loaded.config.funding.preferences).length > 0
      ? { preferences: loaded.config.funding.preferences }
      : {})
  }
})

/**
 * Everything the admin API (and the request flow) needs, from the loaded
 * configuration: the billing services over `RELAY_DATABASE_URL` and the admin
 * key (`RELAY_ADMIN_KEY`, else `adminKeyPath`, default `./data/admin-key`).
 * The plugins of `funding.sources` are loaded first (package names resolved
 * from `pluginCwd`, default the working directory; a `ConfigError` naming the
 * entry stops the build) and their migrations run with the others.
 * The session publishes its events to `options.events` when given, else to
 * the `notifications.webhook` of the config ({@link Webhook.layerFromConfig};
 * events are dropped when the section is absent).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromConfig = (
  loaded: Loaded,
  options: {
    readonly adminKeyPath?: string
    readonly client?: KnexClient.ClientOptions
    /** Overrides the config's notifier (see {@link layerClient}). */
    readonly events?: Layer.Layer<never> | undefined
    /** Where plugin package names are resolved from (default `process.cwd()`). */
    readonly pluginCwd?: string | undefined
  } = {}
): Layer.Layer<
  Services | AdminKey,
  BillingError.StoreError | BillingError.InvalidInput | AdminKeyError | ConfigError
> =>
  Layer.merge(
    Layer.unwrap(Effect.map(loadPlugins(loaded, options.pluginCwd), (sources) =>
      layerUrl(loaded.databaseUrl, {
        ...sdkOptions(loaded),
        ...(options.client ? { client: options.client } : {}),
        events: options.events ?? Webhook.layerFromConfig(loaded.config),
        sources
      }))),
    AdminKey.layer({ envKey: loaded.adminKey, path: options.adminKeyPath })
  )
