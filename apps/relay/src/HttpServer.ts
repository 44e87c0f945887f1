/**
 * An `effect/http` server on Node 20's `node:http`.
 *
 * `@effect/platform-node` needs Node ≥ 22.19, so this module provides the same
 * shape for Node 20: a `Layer` that listens on a port and provides effect's
 * `HttpServer` service (plus `HttpServer.layerServices`), so an app is served
 * with the stock `HttpRouter.serve(routes)` or `HttpServer.serve(effect)`.
 *
 * Each request runs through `HttpEffect.toWebHandlerWith`: a client that
 * disconnects before its response is complete interrupts the handler fiber (or
 * the response body's stream), so finalizers run. Response bodies are written
 * chunk by chunk as they are produced (server-sent events flush per event).
 *
 * When the scope closes the server stops accepting connections, waits for
 * in-flight requests up to `drainTimeout`, then drops the remaining
 * connections (interrupting their handlers). The drain runs when the served
 * app's scope closes, before the app's own resources are released.
 *
 * @since 0.1.0
 */
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Duration, Effect, Layer, Schema, Scope } from "effect"
import { HttpEffect, HttpServer as EffectHttpServer } from "effect/http"
import type { HttpServerRequest } from "effect/http/HttpServerRequest"
import { NetAddress } from "effect/net"
import { NodeBridge } from "./internal/nodeHttp.js"

/**
 * The server could not listen (port in use, permission denied, …).
 *
 * @since 0.1.0
 * @category errors
 */
export class ServeError extends Schema.TaggedError<ServeError>()("ServeError", {
  port: Schema.Number,
  host: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot listen on ${this.host}:${this.port}: ${this.reason}`
  }
}

/**
 * Options of {@link make} and {@link layer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** TCP port; 0 picks a free one. */
  readonly port: number
  /** Interface to bind; default `0.0.0.0`. */
  readonly host?: string | undefined
  /** How long a shutdown waits for in-flight requests; default 10 seconds. */
  readonly drainTimeout?: Duration.Input | undefined
}

const toSocketAddress = (info: AddressInfo): NetAddress.SocketAddress =>
  NetAddress.socketAddressFromInputUnsafe(
    info.family === "IPv6" ? `[${info.address}]:${info.port}` : `${info.address}:${info.port}`
  )

/**
 * Listens on a port and returns effect's `HttpServer` service for it. The
 * server is closed gracefully (see the module docs) when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<EffectHttpServer.HttpServer["Service"], ServeError, Scope.Scope> =>
  Effect.gen(function*() {
    const host = options.host ?? "0.0.0.0"
    const drainMillis = Duration.toMillis(Duration.fromInputUnsafe(options.drainTimeout ?? Duration.seconds(10)))
    const bridge = yield* Effect.acquireRelease(
      Effect.callback<NodeBridge, ServeError>((resume) => {
        const server = Http.createServer({ noDelay: true, keepAliveTimeout: 5_000 })
        const onError = (error: NodeJS.ErrnoException) =>
          resume(Effect.fail(new ServeError({ port: options.port, host, reason: error.code ?? error.message })))
        server.once("error", onError)
        server.listen(options.port, host, () => {
          server.off("error", onError)
          resume(Effect.succeed(new NodeBridge(server)))
        })
      }),
      (bridge) => Effect.promise(() => bridge.shutdown(drainMillis))
    )
    const address = toSocketAddress(bridge.server.address() as AddressInfo)
    return EffectHttpServer.make({
      address,
      serve: (httpEffect, middleware) =>
        Effect.gen(function*() {
          const context = yield* Effect.context<never>()
          const toHandler = HttpEffect.toWebHandlerWith<never, Scope.Scope | HttpServerRequest>(context)
          const handler = middleware === undefined ? toHandler(httpEffect) : toHandler(httpEffect, middleware)
          const listener = bridge.listener((request) => handler(request))
          bridge.server.on("request", listener)
          // Registered in the serving scope, so it runs before the app's own
          // finalizers: in-flight requests still see their services while draining.
          yield* Effect.addFinalizer(() => Effect.promise(() => bridge.shutdown(drainMillis)))
        })
    })
  })

/**
 * A layer providing effect's `HttpServer` (listening on `options.port`) and
 * `HttpServer.layerServices`. Serve an app on it with `HttpRouter.serve`
 * (which logs the address) or `HttpServer.serve`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<EffectHttpServer.HttpServer | Layer.Success<typeof EffectHttpServer.layerServices>, ServeError> =>
  Layer.mergeAll(Layer.effect(EffectHttpServer.HttpServer, make(options)), EffectHttpServer.layerServices)

/**
 * The URL of the running server (`http://127.0.0.1:PORT` for a wildcard
 * bind), for clients and tests.
 *
 * @since 0.1.0
 * @category accessors
 */
export const url: Effect.Effect<string, never, EffectHttpServer.HttpServer> = EffectHttpServer.addressFormattedWith(
  (address) => Effect.succeed(address.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://127.0.0.1:"))
)
