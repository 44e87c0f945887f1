/**
 * The relay's command line (`relay`, built with `effect/cli`):
 *
 * - `relay migrate` — applies every pending migration and prints what it applied;
 * - `relay reap` — refunds the pending holds past their expiry once (applying
 *   pending migrations first, as `serve` does) and prints the report;
 * - `relay audit` — read-only: checks the ledger against every balance, holds
 *   against their parts and the relay's accounts and tokens against the
 *   wallet's; prints ok or the problems, exit code 1 when not ok.
 *
 * - `relay serve` — serves the relay (`Server.serve`) until interrupted; with
 *   the built-in demo config it first runs `Demo.bootstrap` (creates the demo
 *   account and token once, prints the key and a `curl` to try).
 *
 * Each command reads the same configuration as the server (`RELAY_DATABASE_URL`,
 * `RELAY_CONFIG`, …); `--json` prints the report as JSON. Exit codes: 0 ok,
 * 1 failure (invalid config, database error, audit problems), 2 usage error.
 *
 * The CLI runs with `Command.runWith` on the Node services of
 * `@effect/platform-node` (`NodeServices.layer`: stdio, terminal, file
 * system, path, child processes); `main.ts` runs it under
 * `NodeRuntime.runMain`, which interrupts it on SIGINT/SIGTERM.
 *
 * @since 0.1.0
 */
import { NodeServices } from "@effect/platform-node"
import { BillingSession } from "@relay-billing/core"
import type { BillingError } from "@relay-billing/core"
import { KnexClient } from "@relay-billing/knex"
import type { Audit, Migrations } from "@relay-billing/knex"
import { Console, Effect, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import * as Config from "./Config.js"
import * as Demo from "./Demo.js"
import * as RelayBilling from "./RelayBilling.js"
import * as RelayStore from "./RelayStore.js"
import * as Server from "./Server.js"

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

/**
 * A command failed: `message` is printed to stderr and the process exits with
 * `exitCode`.
 *
 * @since 0.1.0
 * @category errors
 */
export class CliFailure extends Schema.TaggedError<CliFailure>()("CliFailure", {
  reason: Schema.String,
  exitCode: Schema.Number
}) {
  override get message(): string {
    return this.reason
  }
}

const toFailure = (error: { readonly message: string }): CliFailure =>
  new CliFailure({ reason: error.message, exitCode: 1 })

// ---------------------------------------------------------------------------
// the commands' effects
// ---------------------------------------------------------------------------

/**
 * Applies every pending migration of `RelayBilling.migrationSets` and of the
 * `funding.sources` plugins (loaded from the working directory) on the
 * configured database; the report lists, per set, the migrations applied.
 *
 * @since 0.1.0
 * @category commands
 */
export const runMigrate = (
  loaded: Config.Loaded
): Effect.Effect<Migrations.MigrationReport, BillingError.StoreError | Config.ConfigError> =>
  Effect.flatMap(
    RelayBilling.loadPlugins(loaded),
    (sources) =>
      RelayBilling.migrateWith(sources).pipe(Effect.provide(KnexClient.KnexClient.layerUrl(loaded.databaseUrl)))
  )

/**
 * Refunds the pending holds past their expiry once (pending migrations are
 * applied first).
 *
 * @since 0.1.0
 * @category commands
 */
export const runReap = (
  loaded: Config.Loaded,
  options: { readonly limit?: number | undefined } = {}
): Effect.Effect<BillingSession.ReapReport, BillingError.StoreError | BillingError.InvalidInput | Config.ConfigError> =>
  Effect.flatMap(RelayBilling.loadPlugins(loaded), (sources) =>
    Effect.flatMap(
      BillingSession.BillingSession,
      (session) => session.reapExpired(options.limit !== undefined ? { limit: options.limit } : {})
    ).pipe(Effect.provide(RelayBilling.layerUrl(loaded.databaseUrl, { ...RelayBilling.sdkOptions(loaded), sources }))))

/**
 * The relay's own consistency checks: every relay account has a wallet
 * account and every relay token has a token budget.
 *
 * @since 0.1.0
 * @category commands
 */
export const relayProblems: Effect.Effect<ReadonlyArray<string>, BillingError.StoreError, KnexClient.KnexClient> =
  Effect
    .gen(function*() {
      const client = yield* KnexClient.KnexClient
      const relayAccounts = client.table(RelayStore.tables.accounts)
      const relayTokens = client.table(RelayStore.tables.tokens)
      const accounts = client.table("accounts")
      const tokens = client.table("tokens")
      const [orphanAccounts, orphanTokens] = yield* Effect.all([
        client.query("audit.relay.accounts", (db) =>
          db(relayAccounts)
            .leftJoin(accounts, `${accounts}.id`, `${relayAccounts}.id`)
            .whereNull(`${accounts}.id`)
            .select({ id: `${relayAccounts}.id` })),
        client.query("audit.relay.tokens", (db) =>
          db(relayTokens)
            .leftJoin(tokens, `${tokens}.id`, `${relayTokens}.id`)
            .whereNull(`${tokens}.id`)
            .select({ id: `${relayTokens}.id` }))
      ])
      return [
        ...(orphanAccounts as Array<{ id: unknown }>).map((r) => `relay account ${String(r.id)} has no wallet account`),
        ...(orphanTokens as Array<{ id: unknown }>).map((r) => `relay token ${String(r.id)} has no token budget`)
      ]
    })

/**
 * The audit (read-only, no migrations): {@link RelayBilling.audit} (the built-in balances,
 * the `usedQuota` check and the `audit` columns of the `funding.sources` plugins, loaded
 * from `options.pluginCwd`, default the working directory) plus {@link relayProblems}; `ok` only when both found nothing.
 *
 * @since 0.1.0
 * @category commands
 */
export const runAudit = (
  loaded: Config.Loaded,
  options: {
    /** Where plugin package names are resolved from (default `process.cwd()`). */
    readonly pluginCwd?: string | undefined
  } = {}
): Effect.Effect<Audit.AuditReport, BillingError.StoreError | Config.ConfigError> =>
  Effect.gen(function*() {
    const sources = yield* RelayBilling.loadPlugins(loaded, options.pluginCwd)
    const report = yield* RelayBilling.audit(sources)
    const relay = yield* relayProblems
    const problems = [...report.problems, ...relay]
    return { ...report, ok: problems.length === 0, problems }
  }).pipe(Effect.provide(KnexClient.KnexClient.layerUrl(loaded.databaseUrl)))

/** The host a client on this machine uses for a bind address (a wildcard → loopback). */
const clientHost = (host: string | undefined): string =>
  host === undefined || host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host

/**
 * The demo bootstrap `relay serve` runs before serving when the config is the
 * built-in demo config (see {@link Demo.bootstrap}); `undefined` otherwise.
 * It opens the database on its own (migrating it) and closes it before the
 * server starts.
 *
 * @since 0.1.0
 * @category commands
 */
export const runDemoBootstrap = (
  loaded: Config.Loaded,
  options: Demo.Options = {}
): Effect.Effect<Demo.Bootstrapped | undefined, BillingError.StoreError | BillingError.InvalidInput | Demo.DemoError> =>
  Demo.isDemoConfig(loaded)
    ? Demo.bootstrap({ baseUrl: `http://${clientHost(loaded.host)}:${loaded.port}`, ...options }).pipe(
      Effect.provide(RelayBilling.layerUrl(loaded.databaseUrl, RelayBilling.sdkOptions(loaded)))
    )
    : Effect.succeed(undefined)

// ---------------------------------------------------------------------------
// formatting
// ---------------------------------------------------------------------------

/**
 * The text `relay migrate` prints.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatMigrations = (report: Migrations.MigrationReport): string => {
  const lines: Array<string> = []
  for (const [set, names] of Object.entries(report)) {
    for (const name of names) lines.push(`applied ${set}/${name}`)
  }
  return lines.length === 0 ? "migrations: up to date" : `${lines.join("\n")}\nmigrations: ${lines.length} applied`
}

/**
 * The text `relay reap` prints.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatReap = (report: BillingSession.ReapReport): string =>
  [
    `reap: examined ${report.examined}, expired ${report.expired}, refunded ${report.refunded}, failures ${report.failures.length}`,
    ...report.failures.map((f) => `  hold ${f.holdId}: ${f.error}`)
  ].join("\n")

/**
 * The text `relay audit` prints.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatAudit = (report: Audit.AuditReport): string =>
  [
    `audit: ${report.ok ? "ok" : `${report.problems.length} problem(s)`} ` +
    `(${report.subjectsChecked} balances, ${report.holdsChecked} holds checked)`,
    ...report.problems.map((p) => `  problem: ${p}`),
    ...(report.pendingPastExpiry.length > 0
      ? [
        `  ${report.pendingPastExpiry.length} pending hold(s) past expiry (run \`relay reap\`): ${
          report.pendingPastExpiry.join(", ")
        }`
      ]
      : [])
  ].join("\n")

// ---------------------------------------------------------------------------
// the command tree
// ---------------------------------------------------------------------------

const json = Flag.Boolean("json").pipe(Flag.withDescription("Print the report as JSON"), Flag.withDefault(false))

const print = (asJson: boolean, value: unknown, text: string) => Console.log(asJson ? JSON.stringify(value) : text)

/**
 * The `relay` command and its subcommands, reading the configuration from `env`.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = (env: Readonly<Record<string, string | undefined>> = process.env) => {
  const load = Config.load(env).pipe(Effect.mapError(toFailure))

  const migrate = Command.make("migrate", { json }, ({ json }) =>
    Effect.gen(function*() {
      const loaded = yield* load
      const report = yield* runMigrate(loaded).pipe(Effect.mapError(toFailure))
      yield* print(json, report, formatMigrations(report))
    })).pipe(Command.withDescription("Apply every pending migration and print what was applied"))

  const reap = Command.make("reap", {
    json,
    limit: Flag.Int("limit").pipe(
      Flag.withDescription("Most holds to handle in this pass (default: the engine's batch, 500)"),
      Flag.optional
    )
  }, ({ json, limit }) =>
    Effect.gen(function*() {
      const loaded = yield* load
      const report = yield* runReap(loaded, { limit: limit._tag === "Some" ? limit.value : undefined }).pipe(
        Effect.mapError(toFailure)
      )
      yield* print(json, report, formatReap(report))
      if (report.failures.length > 0) {
        return yield* new CliFailure({ reason: `reap: ${report.failures.length} hold(s) failed`, exitCode: 1 })
      }
    })).pipe(Command.withDescription("Refund the pending holds past their expiry, once"))

  const audit = Command.make("audit", { json }, ({ json }) =>
    Effect.gen(function*() {
      const loaded = yield* load
      const report = yield* runAudit(loaded).pipe(
        Effect.mapError((e) =>
          toFailure(e._tag === "ConfigError" ? e : { message: `${e.message} (has \`relay migrate\` been run?)` })
        )
      )
      yield* print(json, report, formatAudit(report))
      if (!report.ok) return yield* new CliFailure({ reason: "audit: not ok", exitCode: 1 })
    })).pipe(
      Command.withDescription("Check balances against the ledger and holds against their parts (exit 1 when not ok)")
    )

  const serve = Command.make("serve", {}, () =>
    Effect.gen(function*() {
      const loaded = yield* load
      yield* runDemoBootstrap(loaded).pipe(Effect.mapError(toFailure))
      return yield* Server.serve(loaded).pipe(Effect.mapError(toFailure))
    })).pipe(Command.withDescription("Serve the relay on RELAY_HOST:RELAY_PORT until interrupted (SIGINT/SIGTERM)"))

  return Command.make("relay").pipe(
    Command.withDescription("The reference relay of relay-billing"),
    Command.withSubcommands([serve, migrate, reap, audit])
  )
}

// ---------------------------------------------------------------------------
// running
// ---------------------------------------------------------------------------

/**
 * Runs the CLI on `args` (without the node and script paths) and returns the
 * exit code: 0 ok, 1 failure (the message is printed to stderr), 2 usage error
 * (effect/cli has printed the help and the error).
 *
 * @since 0.1.0
 * @category running
 */
export const run = (
  args: ReadonlyArray<string>,
  env: Readonly<Record<string, string | undefined>> = process.env
): Effect.Effect<number> =>
  Command.runWith(command(env), { version: "0.0.0" })(args).pipe(
    Effect.as(0),
    Effect.catch((error) =>
      error._tag === "CliFailure"
        ? Effect.as(Console.error(error.message), error.exitCode)
        : Effect.succeed(2) // a usage error (ShowHelp carries it): effect/cli has printed help and errors
    ),
    Effect.catchDefect((defect) =>
      Effect.as(
        Console.error(
          `relay: unexpected error: ${defect instanceof Error && defect.stack ? defect.stack : String(defect)}`
        ),
        1
      )
    ),
    Effect.provide(NodeServices.layer)
  )
