/**
 * The relay's HTTP listener: `@effect/platform-node`'s `NodeHttpServer` on a
 * `node:http` server, with the relay's shutdown.
 *
 * It provides effect's `HttpServer` (serve an app on it with
 * `HttpRouter.serve`, which logs "Listening on http://HOST:PORT") and the
 * Node HTTP services of `NodeHttpServer.layer`.
 *
 * Shutdown (when the serving scope closes, e.g. on SIGTERM under
 * `NodeRuntime.runMain`), before any request fiber is interrupted:
 *
 * 1. stop accepting connections, close idle keep-alive sockets and answer
 *    every further response with `Connection: close`;
 * 2. let in-flight requests finish for up to `drainTimeout` (default 10 s);
 * 3. then complete the stream deadline: responses still streaming end (a chat
 *    stream ends with an error event and is billed for what it delivered),
 *    waiting up to `streamGrace` (default 3 s, so the process is gone within about 15 s of the signal) for them;
 * 4. close every remaining connection (their handlers are interrupted) so
 *    nothing keeps the event loop alive.
 *
 * @since 0.1.0
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Deferred, Duration, Effect, Layer, Schema } from "effect"
import { HttpServer } from "effect/http"
import * as Http from "node:http"
import { StreamDeadline } from "./internal/limits.js"

/**
 * The server could not listen (port in use, permission denied, bad address, …).
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
 * Options of {@link layer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** TCP port; 0 picks a free one. */
  readonly port: number
  /** Address to bind; default `127.0.0.1`. */
  readonly host?: string | undefined
  /** How long a shutdown waits for in-flight requests before ending streams; default 10 seconds. */
  readonly drainTimeout?: Duration.Input | undefined
  /** How long a shutdown then waits for the ended streams to finish; default 3 seconds. */
  readonly streamGrace?: Duration.Input | undefined
}

/** The requests being served by a Node server, and a wait for none. */
const track = (server: Http.Server) => {
  const active = new Set<Http.ServerResponse>()
  const idle = new Set<() => void>()
  let closing = false
  const onRequest = (_req: Http.IncomingMessage, res: Http.ServerResponse) => {
    if (closing) res.shouldKeepAlive = false
    active.add(res)
    res.once("close", () => {
      active.delete(res)
      // A keep-alive socket whose response is done is idle now: close it.
      if (closing) setImmediate(() => server.closeIdleConnections())
      if (active.size === 0) { for (const resume of idle) resume() }
    })
  }
  // `Expect: 100-continue` requests come as `checkContinue` (platform-node serves both)
  server.on("request", onRequest)
  server.on("checkContinue", onRequest)
  return {
    get size() {
      return active.size
    },
    /** Stops accepting and keeping connections alive. */
    close: () => {
      closing = true
      for (const res of active) if (!res.headersSent) res.shouldKeepAlive = false
      if (server.listening) server.close()
      server.closeIdleConnections()
    },
    /** Completes when no request is in flight. */
    idle: Effect.callback<void>((resume) => {
      if (active.size === 0) return resume(Effect.void)
      const done = () => {
        idle.delete(done)
        resume(Effect.void)
      }
      idle.add(done)
      return Effect.sync(() => void idle.delete(done))
    })
  }
}

/**
 * Listens on `options.port`/`options.host` and provides effect's
 * `HttpServer` with the Node HTTP services (see the module docs for the
 * shutdown).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<HttpServer.HttpServer | Layer.Success<typeof NodeHttpServer.layerHttpServices>, ServeError> => {
  const host = options.host ?? "127.0.0.1"
  const drainTimeout = options.drainTimeout ?? Duration.seconds(10)
  const streamGrace = options.streamGrace ?? Duration.seconds(3)
  const listener = Effect.gen(function*() {
    const deadline = yield* Deferred.make<void>()
    const server = Http.createServer({ noDelay: true, keepAliveTimeout: 5_000 })
    const requests = track(server)
    const inner = yield* NodeHttpServer.make(() => server, {
      port: options.port,
      host,
      disablePreemptiveShutdown: true
    })
      .pipe(
        Effect.mapError((e) =>
          new ServeError({
            port: options.port,
            host,
            reason: String((e.cause as { code?: unknown } | undefined)?.code ?? e.message)
          })
        )
      )
    const drain = Effect.gen(function*() {
      requests.close()
      if (requests.size > 0) {
        yield* Effect.logInfo(`relay: shutting down, draining ${requests.size} request(s)`)
      }
      const drained = yield* Effect.timeoutOption(requests.idle, drainTimeout)
      if (drained._tag === "None") {
        yield* Effect.logInfo(`relay: drain timeout, ending ${requests.size} request(s)`)
        yield* Deferred.succeed(deadline, undefined)
        yield* Effect.timeoutOption(requests.idle, streamGrace)
      }
      server.closeAllConnections()
    })
    const withDrain = HttpServer.make({
      address: inner.address,
      serve: (httpEffect, middleware) =>
        Effect.gen(function*() {
          yield* (middleware === undefined ? inner.serve(httpEffect) : inner.serve(httpEffect, middleware))
          // Added after the platform's own finalizers of this scope, so it runs first:
          // request fibers still run (and the app's services are up) while draining.
          yield* Effect.addFinalizer(() => drain)
        })
    })
    return Layer.mergeAll(
      Layer.succeed(HttpServer.HttpServer, withDrain),
      Layer.succeed(StreamDeadline, Deferred.await(deadline))
    )
  })
  return Layer.mergeAll(Layer.unwrap(listener), NodeHttpServer.layerHttpServices)
}

/**
 * The URL clients use for the running server (`http://127.0.0.1:PORT` for a
 * wildcard bind).
 *
 * @since 0.1.0
 * @category accessors
 */
export const url: Effect.Effect<string, never, HttpServer.HttpServer> = HttpServer.addressFormattedWith(
  (address) => Effect.succeed(address.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://127.0.0.1:"))
)
