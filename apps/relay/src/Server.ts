/**
 * The relay server: one HTTP server on `RELAY_HOST`:`RELAY_PORT` (default
 * `127.0.0.1:3000`; the start-up log says where it listens) serving the admin
 * API (`/admin/*`) and the client API (`/v1/*`) over the billing services of
 * {@link RelayBilling.layerFromConfig} (migrations applied on start), plus a
 * reaper fiber that refunds expired holds every `billing.reapIntervalSeconds`.
 *
 * The server is `@effect/platform-node`'s (see {@link HttpListener}); the
 * router's middleware applies `limits.maxBodyBytes` / `limits.maxJsonDepth`
 * and gives every error response the JSON error shape (unknown routes 404,
 * wrong methods 405, admin ids up to 191 characters).
 *
 * Shutdown is graceful: interrupting {@link serve} (e.g. SIGINT/SIGTERM under
 * `NodeRuntime.runMain`) stops accepting connections, waits for in-flight
 * requests (up to `drainTimeout`, default 10 s), then ends the remaining
 * streams (each billed for what it delivered), and only then closes the
 * database.
 *
 * Usage (a CLI):
 *
 * ```ts
 * NodeRuntime.runMain(Effect.flatMap(Config.load(), Server.serve))
 * ```
 *
 * @since 0.1.0
 */
import type { BillingError } from "@relay-billing/core"
import { BillingSession } from "@relay-billing/core"
import type { KnexClient } from "@relay-billing/knex"
import { Duration, Effect, Layer } from "effect"
import { HttpRouter } from "effect/http"
import type { HttpServer as EffectHttpServer } from "effect/http"
import * as AdminApi from "./AdminApi.js"
import type { AdminKey, AdminKeyError } from "./AdminKey.js"
import * as ClientApi from "./ClientApi.js"
import type { ConfigError, Loaded } from "./Config.js"
import * as DemoUpstream from "./DemoUpstream.js"
import * as HttpListener from "./HttpListener.js"
import * as HttpErrors from "./internal/httpErrors.js"
import * as Metrics from "./Metrics.js"
import * as RelayBilling from "./RelayBilling.js"
import * as Upstream from "./Upstream.js"

/**
 * Options of {@link serve} / {@link layer}; all optional.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Port to listen on instead of `loaded.port` (0 picks a free one). */
  readonly port?: number | undefined
  /** Address to bind instead of `loaded.host` (default `127.0.0.1`). */
  readonly host?: string | undefined
  /** How long a shutdown waits for in-flight requests before ending streams; default 10 seconds. */
  readonly drainTimeout?: Duration.Input | undefined
  /** How long a shutdown then waits for the ended streams; default 3 seconds. */
  readonly streamGrace?: Duration.Input | undefined
  /** Where a generated admin key is stored; default `./data/admin-key`. */
  readonly adminKeyPath?: string | undefined
  /** knex client options (schema, table prefix, pool). */
  readonly client?: KnexClient.ClientOptions | undefined
  /** Log each HTTP request (effect's HTTP logger); default false. */
  readonly httpLogger?: boolean | undefined
  /** Where `funding.sources` package names are resolved from; default the working directory. */
  readonly pluginCwd?: string | undefined
  /**
   * The `BillingSession` the client API bills through instead of the SDK's
   * (the admin API, the reaper and the audit keep the SDK's). Code-only, for
   * benchmarks: `pnpm bench:relay` measures the same server with a
   * pass-through session to price the billing. No config or environment
   * setting reaches it, so a deployed relay always bills.
   */
  readonly clientSession?: Layer.Layer<BillingSession.BillingSession> | undefined
}

/**
 * One reaper pass: refunds expired holds and finishes pending intents. Each
 * hold it could not finish (`ReapReport.failures`, typed) is logged at ERROR
 * with its hold id, step and error tag (the next pass tries again); a pass
 * that fails as a whole (`StoreError`) is logged too. Never fails; returns the
 * report (`undefined` when the pass failed). A pass that ran ends with a
 * debug log `relay: reaper pass: examined N, expired N`.
 *
 * @since 0.2.0
 * @category reaper
 */
export const reapPass: Effect.Effect<BillingSession.ReapReport | undefined, never, BillingSession.BillingSession> =
  Effect
    .gen(function*() {
      const session = yield* BillingSession.BillingSession
      const report = yield* session.reapExpired()
      if (report.expired > 0) yield* Effect.log(`relay: reaper refunded ${report.expired} expired hold(s)`)
      for (const failure of report.failures) {
        yield* Effect.logError(
          `relay: reaper could not finish hold ${failure.holdId} (${failure.step}): ${failure.failure._tag}`
        ).pipe(
          Effect.annotateLogs({
            holdId: failure.holdId,
            step: failure.step,
            error: failure.failure._tag,
            detail: failure.error
          })
        )
      }
      yield* Effect.logDebug(`relay: reaper pass: examined ${report.examined}, expired ${report.expired}`)
      return report
    }).pipe(
      Effect.catchTag("StoreError", (error) =>
        Effect.as(
          Effect.logError(`relay: reaper pass failed: ${error.message}`).pipe(
            Effect.annotateLogs({ error: error._tag, operation: error.operation })
          ),
          undefined
        )),
      Effect.catchCause((cause) => Effect.as(Effect.logError("relay: reaper pass failed", cause), undefined))
    )

/**
 * Runs {@link reapPass} every `intervalSeconds`, until interrupted. The
 * interval and the holds' expiry both read Effect's `Clock` (a `TestClock`
 * drives them in tests).
 *
 * @since 0.1.0
 * @category reaper
 */
export const reaper = (intervalSeconds: number): Effect.Effect<never, never, BillingSession.BillingSession> =>
  Effect.forever(Effect.andThen(Effect.sleep(Duration.seconds(intervalSeconds)), reapPass))

/**
 * The whole relay as a layer: the HTTP server (listening), both APIs and
 * `GET /metrics`, the reaper, and the billing services (also provided to the
 * caller, e.g. tests) with the `BillingSession` metered by this instance's
 * {@link Metrics.Metrics}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  loaded: Loaded,
  options: Options = {}
): Layer.Layer<
  EffectHttpServer.HttpServer | RelayBilling.Services | AdminKey | Metrics.Metrics,
  HttpListener.ServeError | BillingError.StoreError | BillingError.InvalidInput | AdminKeyError | ConfigError
> => {
  const services = Metrics.Metrics.layerSession.pipe(
    Layer.provideMerge(RelayBilling.layerFromConfig(loaded, {
      ...(options.adminKeyPath !== undefined ? { adminKeyPath: options.adminKeyPath } : {}),
      ...(options.client !== undefined ? { client: options.client } : {}),
      ...(options.pluginCwd !== undefined ? { pluginCwd: options.pluginCwd } : {})
    })),
    Layer.provideMerge(Metrics.Metrics.layer)
  )
  const routes = new HttpErrors.RouteTable()
  const apis = Layer.mergeAll(
    AdminApi.routes({
      groups: Object.keys(loaded.config.groups),
      preferences: Object.keys(loaded.config.funding.preferences)
    }),
    ClientApi.routes(loaded.config).pipe(
      Layer.provide(DemoUpstream.layer),
      Layer.provide(Upstream.layerFetch({ idleTimeout: Duration.seconds(loaded.config.limits.upstreamIdleSeconds) })),
      (client) => options.clientSession === undefined ? client : Layer.provide(client, options.clientSession)
    ),
    Metrics.routes
  ).pipe(Layer.provide(HttpErrors.recordRoutes(routes)))
  const middleware = HttpErrors.middleware({ ...loaded.config.limits, routes })
  const app = HttpRouter.serve(Layer.mergeAll(apis, middleware), {
    disableLogger: options.httpLogger !== true,
    routerConfig: { maxParamLength: HttpErrors.MAX_PARAM_LENGTH }
  }).pipe(
    Layer.provideMerge(
      HttpListener.layer({
        port: options.port ?? loaded.port,
        host: options.host ?? loaded.host ?? "127.0.0.1",
        ...(options.drainTimeout !== undefined ? { drainTimeout: options.drainTimeout } : {}),
        ...(options.streamGrace !== undefined ? { streamGrace: options.streamGrace } : {})
      })
    )
  )
  const reap = Layer.effectDiscard(Effect.forkScoped(reaper(loaded.config.billing.reapIntervalSeconds)))
  return Layer.mergeAll(app, reap).pipe(Layer.provideMerge(services))
}

/**
 * Serves the relay until interrupted (then shuts down gracefully, see the
 * module docs). Fails at start-up when the port cannot be bound, the database
 * cannot be reached or migrated, the admin key cannot be read or written, or a
 * `funding.sources` plugin cannot be loaded (a `ConfigError` naming the entry).
 *
 * @since 0.1.0
 * @category running
 */
export const serve = (
  loaded: Loaded,
  options: Options = {}
): Effect.Effect<
  never,
  HttpListener.ServeError | BillingError.StoreError | BillingError.InvalidInput | AdminKeyError | ConfigError
> => Layer.launch(layer(loaded, options))

/**
 * The URL clients use for the running relay (`http://127.0.0.1:PORT` for a
 * wildcard bind), for tests and tools.
 *
 * @since 0.1.0
 * @category accessors
 */
export const url: Effect.Effect<string, never, EffectHttpServer.HttpServer> = HttpListener.url
