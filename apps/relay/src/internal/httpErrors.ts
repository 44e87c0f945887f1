/**
 * The server-level middleware of the relay's router:
 *
 * - limits: a `Content-Length` over `limits.maxBodyBytes` is refused with 413
 *   before any handler runs; otherwise the request's `MaxBodySize` is set, so
 *   a chunked body is cut off (413) as soon as it passes the limit, and
 *   `MaxJsonDepth` is set for the JSON decoders;
 * - error shapes: every response with status ≥ 400 has the JSON error body
 *   `{"error":{"message","type","code"}}`, the router's own included — 404
 *   `not_found` (unknown route, or an id longer than the router accepts), 405
 *   `method_not_allowed` with an `Allow` header (a known path with another
 *   method), 400 for a path with bad percent-encoding or an invalid `Host`,
 *   413 `request_too_large`, and 500 `internal_error` for anything unexpected
 *   (logged with its cause). A client that went away is not answered.
 *
 * {@link recordRoutes} wraps the router the API layers add their routes to,
 * so the 405 check knows every route without a second list.
 *
 * @internal
 */
import { ByteSize, Cause, Effect, Layer } from "effect"
import {
  FindMyWay,
  HttpIncomingMessage,
  HttpRouter,
  HttpServerError,
  HttpServerRequest,
  HttpServerResponse
} from "effect/http"
import * as Api from "./apiError.js"
import { MaxJsonDepth } from "./limits.js"

/** The longest path parameter the router accepts: the longest request id (191). */
export const MAX_PARAM_LENGTH = 191

/** The routes added through {@link recordRoutes}: which methods serve a path. */
export class RouteTable {
  private readonly router = FindMyWay.make<string>({ maxParamLength: MAX_PARAM_LENGTH })
  private readonly methods = new Set<string>()

  add(method: string, path: string): void {
    const methods = method === "*" ? ["GET", "POST", "PUT", "PATCH", "DELETE"] : [method]
    for (const m of methods) {
      this.router.on(m, path as FindMyWay.PathInput, m)
      this.methods.add(m)
    }
  }

  /** The methods some route serves `url` with (`HEAD` with `GET`). */
  allowed(url: string): ReadonlyArray<string> {
    const allowed = [...this.methods].filter((m) => this.router.find(m, url) !== undefined)
    if (allowed.includes("GET")) allowed.push("HEAD")
    return allowed
  }
}

/**
 * A layer providing the router to the API layers it is given to, recording
 * each route they add into `table` (and adding it to the real router).
 */
export const recordRoutes = (table: RouteTable): Layer.Layer<HttpRouter.HttpRouter, never, HttpRouter.HttpRouter> =>
  Layer.effect(
    HttpRouter.HttpRouter,
    Effect.map(HttpRouter.HttpRouter, (router) =>
      HttpRouter.HttpRouter.of({
        ...router,
        addAll: (routes) => {
          for (const route of routes) table.add(route.method, route.path)
          return router.addAll(routes)
        },
        add: (method, path, handler, options) => {
          table.add(method, path)
          return router.add(method, path, handler, options)
        }
      }))
  )

const error = (status: number, type: string, code: string, message: string, headers: Record<string, string> = {}) =>
  HttpServerResponse.jsonUnsafe({ error: { message, type, code } }, { status, headers })

const tooLarge = (maxBytes: number) =>
  HttpServerResponse.setHeader(Api.toResponse(Api.tooLarge(maxBytes)), "connection", "close")

const pathOf = (url: string): string => {
  const q = url.indexOf("?")
  return q === -1 ? url : url.slice(0, q)
}

const badEncoding = (url: string): boolean => {
  try {
    decodeURIComponent(url)
    return false
  } catch {
    return true
  }
}

/** A `Host` header that is not a valid authority (e.g. `[::1`). */
const badHost = (host: string | undefined): boolean => {
  if (host === undefined) return false
  try {
    return new URL(`http://${host}/`).host === ""
  } catch {
    return true
  }
}

const statusText: Record<number, readonly [string, string]> = {
  400: ["invalid_request", "bad request"],
  401: ["invalid_request_error", "unauthorized"],
  403: ["invalid_request_error", "forbidden"],
  404: ["invalid_request", "not found"],
  405: ["invalid_request", "method not allowed"],
  408: ["invalid_request", "request timeout"],
  409: ["invalid_request", "conflict"],
  413: ["invalid_request", "request too large"],
  429: ["rate_limit_error", "too many requests"]
}

/** A JSON error body for a response that has none. */
const withErrorBody = (response: HttpServerResponse.HttpServerResponse): HttpServerResponse.HttpServerResponse => {
  if (response.status < 400 || response.body._tag !== "Empty") return response
  const [type, message] = statusText[response.status] ?? (response.status >= 500
    ? ["server_error", "internal error"] as const
    : ["invalid_request", `HTTP ${response.status}`] as const)
  const code = message.replace(/ /g, "_")
  return HttpServerResponse.jsonUnsafe({ error: { message, type, code } }, {
    status: response.status,
    headers: response.headers
  })
}

/**
 * The global middleware (see the module docs), as a layer for
 * `HttpRouter.serve`'s app.
 */
export const middleware = (options: {
  readonly maxBodyBytes: number
  readonly maxJsonDepth: number
  readonly routes: RouteTable
}): Layer.Layer<never, never, HttpRouter.HttpRouter> =>
  HttpRouter.middleware(
    (httpEffect) =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        if (badHost(request.headers["host"])) {
          return error(400, "invalid_request", "invalid_request", "the Host header is not a valid host")
        }
        const length = request.headers["content-length"]
        if (length !== undefined && /^\d+$/.test(length) && Number(length) > options.maxBodyBytes) {
          return tooLarge(options.maxBodyBytes)
        }
        return yield* httpEffect.pipe(
          Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(options.maxBodyBytes)),
          Effect.provideService(MaxJsonDepth, options.maxJsonDepth),
          Effect.map(withErrorBody),
          Effect.catchCause((cause) => {
            if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause)
            const failure = Cause.findErrorOption(cause)
            const reason = failure._tag === "Some" && HttpServerError.isHttpServerError(failure.value)
              ? failure.value.reason
              : undefined
            if (reason?._tag === "RouteNotFound") {
              const path = pathOf(request.url)
              if (badEncoding(path)) {
                return Effect.succeed(
                  error(400, "invalid_request", "invalid_request", "the path has malformed percent-encoding")
                )
              }
              const allowed = options.routes.allowed(request.url)
              if (allowed.length > 0) {
                return Effect.succeed(error(
                  405,
                  "invalid_request",
                  "method_not_allowed",
                  `${request.method} is not allowed on ${path}; allowed: ${allowed.join(", ")}`,
                  { allow: allowed.join(", ") }
                ))
              }
              return Effect.succeed(
                error(404, "invalid_request", "not_found", `no route for ${request.method} ${path}`)
              )
            }
            if (reason?._tag === "RequestParseError") {
              // the body passed MaxBodySize while a handler read it
              return Effect.succeed(
                reason.reason === "BodyTooLarge"
                  ? tooLarge(options.maxBodyBytes)
                  : error(400, "invalid_request", "invalid_request", "cannot read the request")
              )
            }
            return Effect.as(
              Effect.logError(`relay: internal error on ${request.method} ${pathOf(request.url)}`, cause),
              error(500, "server_error", "internal_error", "internal error")
            )
          })
        )
      }),
    { global: true }
  ) as Layer.Layer<never, never, HttpRouter.HttpRouter>
