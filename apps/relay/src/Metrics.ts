/**
 * The relay's metrics, exposed at `GET /metrics` (admin key) in the Prometheus
 * text format by `prom-client`. Each relay instance has its own registry (the
 * {@link Metrics} service built by {@link Metrics.layer}), never the library's
 * global one, so two relays in one process (tests) do not share counters.
 *
 * | metric | type | labels |
 * |---|---|---|
 * | `relay_http_requests_total` | counter | `route` (the route template), `method`, `status`, `model` (the priced model of a billed request, else `""`) |
 * | `relay_quota_billed_total` | counter | `model`: quota units charged by settlements |
 * | `relay_holds_opened_total`, `relay_holds_settled_total`, `relay_holds_refunded_total`, `relay_holds_expired_total` | counter | |
 * | `relay_holds_pending` | gauge | pending holds in the database, read at each scrape |
 * | `relay_reaper_runs_total`, `relay_reaper_failures_total` | counter | reaper passes (the background reaper and `POST /admin/holds/reap`) and failed passes |
 * | `relay_reaper_hold_failures_total` | counter | holds a pass could not expire (`ReapReport.failures`) |
 * | `relay_billing_phase_seconds` | histogram | `phase` (`open`, `settle`, `refund`, `reap`), `outcome` (`ok`, `error`) |
 * | `relay_db_pool_connections` | gauge | `state` (`used`, `free`, `pending_acquires`, `pending_creates`): the knex pool, read at each scrape |
 *
 * Billing is measured by decorating the `BillingSession` ({@link Metrics.layerSession}):
 * every open, settle, refund and reaper pass of the relay goes through it (the
 * client API's `withBilling`, the admin API, the background reaper), so the
 * request flow needs no hook of its own. The client and admin APIs count their
 * responses with {@link countRequest} (a no-op when no {@link Metrics} is
 * provided).
 *
 * @since 0.1.0
 */
import { BillingSession } from "@relay-billing/core"
import type { Hold } from "@relay-billing/core"
import { KnexClient } from "@relay-billing/knex"
import { Clock, Context, Effect, Exit, Layer, Option } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { Counter, Gauge, Histogram, Registry } from "prom-client"
import { AdminKey, matchesBearer } from "./AdminKey.js"
import * as Api from "./internal/apiError.js"

/** Buckets of `relay_billing_phase_seconds`: 1 ms … 10 s. */
const PHASE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/**
 * A billing phase timed by `relay_billing_phase_seconds`.
 *
 * @since 0.1.0
 * @category models
 */
export type Phase = "open" | "settle" | "refund" | "reap"

/**
 * The metrics of one relay instance.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** This instance's registry (`registry.metrics()` is the exposition text). */
  readonly registry: Registry
  /** Counts one HTTP response. */
  readonly request: (labels: {
    readonly route: string
    readonly method: string
    readonly status: number
    readonly model: string
  }) => Effect.Effect<void>
  /** The `BillingSession` that records every billing operation it runs. */
  readonly meter: (session: BillingSession.BillingSession["Service"]) => BillingSession.BillingSession["Service"]
  /** The exposition text, after reading the gauges of the database (pending holds, pool). */
  readonly scrape: Effect.Effect<string, never, KnexClient.KnexClient>
}

/** The model a billed request is for, recorded by the client API (see {@link labelModel}). */
const models = new WeakMap<HttpServerRequest.HttpServerRequest, string>()

/**
 * Builds the metrics of one instance on a new registry.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (): Service => {
  const registry = new Registry()
  const registers = [registry]
  const requests = new Counter({
    name: "relay_http_requests_total",
    help: "HTTP responses of the relay, by route template, method, status and model.",
    labelNames: ["route", "method", "status", "model"] as const,
    registers
  })
  const billed = new Counter({
    name: "relay_quota_billed_total",
    help: "Quota units charged by settlements, by model.",
    labelNames: ["model"] as const,
    registers
  })
  const opened = new Counter({ name: "relay_holds_opened_total", help: "Holds opened.", registers })
  const settled = new Counter({ name: "relay_holds_settled_total", help: "Holds settled.", registers })
  const refunded = new Counter({ name: "relay_holds_refunded_total", help: "Holds refunded.", registers })
  const expired = new Counter({ name: "relay_holds_expired_total", help: "Holds expired by the reaper.", registers })
  const pending = new Gauge({ name: "relay_holds_pending", help: "Pending holds in the database.", registers })
  const reaperRuns = new Counter({
    name: "relay_reaper_runs_total",
    help: "Reaper passes (background and POST /admin/holds/reap).",
    registers
  })
  const reaperFailures = new Counter({
    name: "relay_reaper_failures_total",
    help: "Reaper passes that failed.",
    registers
  })
  const reaperHoldFailures = new Counter({
    name: "relay_reaper_hold_failures_total",
    help: "Holds a reaper pass could not expire.",
    registers
  })
  const phases = new Histogram({
    name: "relay_billing_phase_seconds",
    help: "Duration of billing phases (open, settle, refund, reap).",
    labelNames: ["phase", "outcome"] as const,
    buckets: PHASE_BUCKETS,
    registers
  })
  const pool = new Gauge({
    name: "relay_db_pool_connections",
    help: "Database pool connections by state (used, free, pending_acquires, pending_creates).",
    labelNames: ["state"] as const,
    registers
  })

  const timed = <A, E, R>(phase: Phase, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.gen(function*() {
      const start = yield* Clock.currentTimeMillis
      return yield* effect.pipe(
        Effect.onExit((exit) =>
          Effect.flatMap(
            Clock.currentTimeMillis,
            (end) =>
              Effect.sync(() =>
                phases.observe(
                  { phase, outcome: Exit.isSuccess(exit) ? "ok" : "error" },
                  Math.max(0, end - start) / 1000
                )
              )
          )
        )
      )
    })

  const modelOf = (hold: Hold.Hold): string => {
    const model = hold.metadata?.["model"]
    return typeof model === "string" ? model : ""
  }
  const countSettled = (hold: Hold.Hold, actual: number) =>
    Effect.sync(() => {
      settled.inc()
      billed.inc({ model: modelOf(hold) }, actual)
    })
  const countRefund = (status: string) => Effect.sync(() => void (status === "refunded" && refunded.inc()))

  const meter: Service["meter"] = (session) => {
    const holdOf = (holdId: string) => session.get(holdId).pipe(Effect.orElseSucceed(() => undefined))
    return {
      ...session,
      open: (request) =>
        timed("open", session.open(request)).pipe(
          Effect.tap(() => Effect.sync(() => opened.inc())),
          Effect.map((s) => ({
            ...s,
            settle: (actual, options) =>
              timed("settle", s.settle(actual, options)).pipe(
                Effect.tap((settlement) => countSettled(s.hold, settlement.actual))
              ),
            refund: timed("refund", s.refund).pipe(Effect.tap((result) => countRefund(result.status)))
          }))
        ),
      settle: (holdId, actual, options) =>
        timed("settle", session.settle(holdId, actual, options)).pipe(
          Effect.tap((settlement) =>
            Effect.flatMap(holdOf(holdId), (hold) =>
              hold === undefined ? Effect.void : countSettled(hold, settlement.actual))
          )
        ),
      refund: (holdId) =>
        timed("refund", session.refund(holdId)).pipe(Effect.tap((result) => countRefund(result.status))),
      reapExpired: (options) =>
        timed("reap", session.reapExpired(options)).pipe(
          Effect.tap((report) =>
            Effect.sync(() => {
              reaperRuns.inc()
              expired.inc(report.expired)
              reaperHoldFailures.inc(report.failures.length)
            })
          ),
          Effect.tapError(() =>
            Effect.sync(() => {
              reaperRuns.inc()
              reaperFailures.inc()
            })
          )
        )
    }
  }

  const readDatabase = Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const rows = yield* client.query(
      "metrics.pendingHolds",
      (db) => db(client.table("holds")).where("status", "pending").count({ n: "*" })
    )
    pending.set(Number((rows[0] as { n?: unknown } | undefined)?.n ?? 0))
    const tarn = (client.knex.client as { pool?: PoolStats }).pool
    if (tarn !== undefined) {
      pool.set({ state: "used" }, tarn.numUsed())
      pool.set({ state: "free" }, tarn.numFree())
      pool.set({ state: "pending_acquires" }, tarn.numPendingAcquires())
      pool.set({ state: "pending_creates" }, tarn.numPendingCreates())
    }
  }).pipe(
    // a failed read leaves the gauges at their last value; the scrape still answers
    Effect.catchCause((cause) => Effect.logWarning("relay: metrics: cannot read the database gauges", cause))
  )

  return {
    registry,
    request: ({ method, model, route, status }) =>
      Effect.sync(() => requests.inc({ route, method, status: String(status), model })),
    meter,
    scrape: Effect.andThen(readDatabase, Effect.promise(() => registry.metrics()))
  }
}

/** The part of tarn's pool (knex's pool) the gauges read. */
interface PoolStats {
  readonly numUsed: () => number
  readonly numFree: () => number
  readonly numPendingAcquires: () => number
  readonly numPendingCreates: () => number
}

/**
 * The metrics service of a relay instance.
 *
 * @since 0.1.0
 * @category services
 */
export class Metrics extends Context.Service<Metrics, Service>()("@relay-billing/relay/Metrics") {
  /** A new registry for this layer's instance. */
  static readonly layer: Layer.Layer<Metrics> = Layer.sync(Metrics, make)

  /**
   * Replaces the `BillingSession` below it with one that records every open,
   * settle, refund and reaper pass in {@link Metrics}.
   */
  static readonly layerSession: Layer.Layer<
    BillingSession.BillingSession,
    never,
    BillingSession.BillingSession | Metrics
  > = Layer.effect(
    BillingSession.BillingSession,
    Effect.gen(function*() {
      const metrics = yield* Metrics
      return metrics.meter(yield* BillingSession.BillingSession)
    })
  )
}

/**
 * Records the model of the current request for `relay_http_requests_total`
 * (the client API calls it once the model is known to be priced, so the label
 * takes only configured values).
 *
 * @since 0.1.0
 * @category recording
 */
export const labelModel = (model: string): Effect.Effect<void, never, HttpServerRequest.HttpServerRequest> =>
  Effect.map(HttpServerRequest.HttpServerRequest, (request) => void models.set(request, model))

/**
 * Runs a route handler and counts its response in `relay_http_requests_total`
 * under the matched route's template; a no-op without a {@link Metrics}
 * service.
 *
 * @since 0.1.0
 * @category recording
 */
export const countRequest = <E, R>(
  handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, E, R | HttpServerRequest.HttpServerRequest> =>
  Effect.gen(function*() {
    const metrics = yield* Effect.serviceOption(Metrics)
    const response = yield* handler
    if (Option.isNone(metrics)) return response
    const request = yield* HttpServerRequest.HttpServerRequest
    const route = yield* Effect.serviceOption(HttpRouter.RouteContext)
    yield* metrics.value.request({
      route: Option.isSome(route) ? route.value.route.path : "",
      method: request.method,
      status: response.status,
      model: models.get(request) ?? ""
    })
    return response
  })

/**
 * `GET /metrics`: the exposition text of this instance's registry (content
 * type `text/plain; version=0.0.4`), behind the admin key (401
 * `invalid_api_key` in the JSON error shape otherwise; 500 `metrics_error`,
 * logged, if the registry cannot be rendered).
 *
 * @since 0.1.0
 * @category routes
 */
export const routes: Layer.Layer<never, never, HttpRouter.HttpRouter | AdminKey | Metrics | KnexClient.KnexClient> =
  HttpRouter.use((router) =>
    Effect.gen(function*() {
      const { key } = yield* AdminKey
      const metrics = yield* Metrics
      const client = yield* KnexClient.KnexClient
      yield* router.add(
        "GET",
        "/metrics",
        countRequest(
          Effect.gen(function*() {
            const request = yield* HttpServerRequest.HttpServerRequest
            const authorization = request.headers["authorization"]
            if (!matchesBearer(authorization, key)) {
              return Api.toResponse(Api.unauthorized(
                authorization === undefined
                  ? "Missing admin key (Authorization: Bearer <RELAY_ADMIN_KEY>)"
                  : "Incorrect admin key"
              ))
            }
            const text = yield* metrics.scrape.pipe(Effect.provideService(KnexClient.KnexClient, client))
            return HttpServerResponse.text(text, { contentType: metrics.registry.contentType })
          }).pipe(
            // prom-client rejects only when a collector throws; answer in the JSON error shape
            Effect.catchCause((cause) =>
              Effect.as(
                Effect.logError("relay: metrics: cannot render the registry", cause),
                Api.toResponse(Api.internal("metrics_error", "cannot render the metrics"))
              )
            )
          )
        )
      )
    })
  )
