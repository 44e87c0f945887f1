/**
 * The client API of `relay-api.md` (OpenAI-compatible, `Authorization: Bearer
 * <token key>`): `POST /v1/chat/completions` (JSON and `stream: true`),
 * `POST /v1/embeddings` and `GET /v1/models`, billed through the SDK.
 *
 * Flow of a billed request: authenticate the token (401 `invalid_api_key`),
 * decode the body (400 `invalid_request` naming the field; other OpenAI
 * fields are passed upstream untouched), look the model's price up (400
 * `model_not_found` / `model_price_error`), check the token's `models` (403
 * `model_not_allowed`), estimate P (Tokenizer + Pricing × the account's
 * group ratio) and open the hold inside `BillingSettler.withBilling`, so that
 * every exit ends it: success settles with the actual cost from the upstream
 * usage, a failure refunds, a client disconnect applies
 * `billing.onClientDisconnect`. The request log row is written by the
 * `SettlementRecorder` ({@link RelayStore.recorder}) in the settlement's
 * transaction: the settle passes its token counts as settle metadata.
 *
 * Request ids are scoped to the account: the hold id is derived from
 * `(accountId, requestId)` (`internal/requestIds.ts`), so one account can
 * neither see nor block another's ids. A request id whose hold already exists
 * for the account is refused by the SDK's atomic open (409
 * `request_id_conflict`: `HoldInFlight` while the first request runs,
 * `HoldResolved` after it, `IdempotencyConflict` for other parameters); the
 * refused request never touches the first one's hold.
 *
 * Every response carries `X-Request-Id` (the client's, else a generated one).
 *
 * Decisions where the contract is silent:
 * - a non-stream answer without `usage`, or a stream that ends with `[DONE]`
 *   but no usage chunk, is billed with the prompt estimate plus the completion
 *   tokens counted from the returned text;
 * - a stream that breaks after the relay committed to a channel ends with an
 *   SSE `data: {"error":{…,"code":"upstream_error"}}` event (sent after the
 *   settlement), so OpenAI clients see an error rather than a silent end;
 * - the response of a stream completes only once its hold is resolved, so a
 *   client that read the whole stream sees its settlement.
 *
 * Client disconnects (issue 9 #2) are decided by what the client received, not
 * by event-loop timing: before the upstream is called, and before the part of
 * the response that completes it is written (a non-stream answer; a stream's
 * `data: [DONE]`), the relay lets the event loop report a close that already
 * reached the process (see `internal/clientConnection.ts`). A client gone by
 * then is billed by `onClientDisconnect`; a close after that came after the
 * delivery. A non-stream answer is settled after it was written (its final
 * byte after the settlement).
 *
 * Limits: `limits.maxRequestSeconds` bounds a request (before the answer: 504
 * `request_timeout`, refunded; in the middle of a stream: the stream ends and
 * what was delivered is billed, as for a broken stream);
 * `limits.clientIdleSeconds` bounds how long the client may read nothing of
 * the response: the request is then billed by `onClientDisconnect`, its
 * upstream released, and the connection dropped.
 *
 * @since 0.1.0
 */
import { BillingSession, BillingSettler } from "@relay-billing/core"
import type { Hold } from "@relay-billing/core"
import type { Layer } from "effect"
import { Cause, Clock, Deferred, Duration, Effect, Exit, Fiber, Schema, Stream } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { randomUUID } from "node:crypto"
import { bearer } from "./AdminKey.js"
import * as Channels from "./Channels.js"
import type { ModelPrice, RelayConfig } from "./Config.js"
import { isFixedPrice } from "./Config.js"
import * as Api from "./internal/apiError.js"
import * as ClientConnection from "./internal/clientConnection.js"
import * as IdleWatch from "./internal/idleWatch.js"
import { StreamDeadline } from "./internal/limits.js"
import { holdIdOf, isRequestId, MAX_REQUEST_ID } from "./internal/requestIds.js"
import * as Sources from "./internal/sources.js"
import * as Metrics from "./Metrics.js"
import * as Pricing from "./Pricing.js"
import { RelayStore } from "./RelayStore.js"
import type { InvalidApiKey, Principal } from "./RelayStore.js"
import * as Tokenizer from "./Tokenizer.js"
import * as Upstream from "./Upstream.js"

// ---------------------------------------------------------------------------
// bodies
// ---------------------------------------------------------------------------

const TokenCount = Schema.Int.check(
  Schema.isGreaterThanOrEqualTo(0, { message: "expected an integer ≥ 0" }),
  Schema.isLessThanOrEqualTo(Number.MAX_SAFE_INTEGER, { message: "expected a safe integer" })
)
const ModelName = Schema.String.check(Schema.isMinLength(1, { message: "expected a non-empty string" }))

/**
 * The fields of a chat request the relay reads (every other field is passed
 * upstream as sent).
 *
 * @since 0.1.0
 * @category schemas
 */
export const ChatBody = Schema.Struct({
  model: ModelName,
  messages: Schema.Array(Tokenizer.ChatMessage).check(
    Schema.isMinLength(1, { message: "expected at least one message" })
  ),
  stream: Schema.optionalKey(Schema.NullOr(Schema.Boolean)),
  stream_options: Schema.optionalKey(
    Schema.NullOr(Schema.Struct({ include_usage: Schema.optionalKey(Schema.NullOr(Schema.Boolean)) }))
  ),
  max_tokens: Schema.optionalKey(Schema.NullOr(TokenCount)),
  max_completion_tokens: Schema.optionalKey(Schema.NullOr(TokenCount))
})

/**
 * The fields of an embeddings request the relay reads.
 *
 * @since 0.1.0
 * @category schemas
 */
export const EmbeddingsBody = Schema.Struct({
  model: ModelName,
  input: Tokenizer.EmbeddingsInput
})

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

const apiError = (status: number, code: string, message: string, type = "invalid_request_error"): Api.ApiError =>
  new Api.ApiError({ status, type, code, message })

/** The upstream's own answer (a 4xx), returned as is. */
class UpstreamReply {
  readonly _tag = "UpstreamReply"
  constructor(readonly status: number, readonly body: string) {}
}

/**
 * The largest write of a non-stream answer (Node's default `highWaterMark`): a
 * client reading at least this much every `limits.clientIdleSeconds` is not idle.
 */
const WRITE_PIECE = 16 * 1024

/** A stream that broke with nothing forwarded: the hold is refunded. */
class StreamBrokenRefund {
  readonly _tag = "StreamBrokenRefund"
}

/**
 * The client left before its request was sent upstream: nothing was consumed
 * or delivered, so the hold is refunded (whatever `onClientDisconnect` says,
 * which prices what a client that left had already caused upstream).
 */
class ClientClosedRequest {
  readonly _tag = "ClientClosedRequest"
}

/**
 * Renders every failure of a client handler, matched by tag: the SDK's and the
 * relay's typed errors get their contract status and code (relay-api.md), an
 * upstream 4xx is returned as is, anything else is a 500 without internals.
 */
const renderFailure = <A, R>(
  effect: Effect.Effect<A, ClientError, R>
): Effect.Effect<A | HttpServerResponse.HttpServerResponse, never, R> =>
  Effect.catchTags(
    effect,
    {
      ApiError: (e) => Effect.succeed(Api.toResponse(e)),
      UpstreamReply: (e) =>
        Effect.succeed(HttpServerResponse.text(e.body, { status: e.status, contentType: "application/json" })),
      InvalidApiKey: (e) => rendered(Api.unauthorized(e.message)),
      ModelNotFound: (e) => rendered(apiError(400, "model_not_found", e.message)),
      NoChannel: (e) => rendered(apiError(400, "model_not_found", e.message)),
      ModelPriceError: (e) => rendered(apiError(400, "model_price_error", e.message)),
      InsufficientFunds: (e) => rendered(apiError(403, "insufficient_user_quota", e.message, "insufficient_quota")),
      TokenBudgetExceeded: (e) =>
        rendered(apiError(403, "pre_consume_token_quota_failed", e.message, "insufficient_quota")),
      IdempotencyConflict: () => rendered(usedRequestId),
      HoldInFlight: () => rendered(usedRequestId),
      HoldResolved: () => rendered(usedRequestId),
      AllChannelsFailed: (e) =>
        rendered(
          new Api.ApiError({ status: e.status, type: "upstream_error", code: "upstream_error", message: e.message })
        ),
      InvalidInput: (e) => rendered(Api.invalidRequest(e.field, e.message)),
      // nobody reads it (the client is gone); nginx's 499 for the logs and metrics
      ClientClosedRequest: () =>
        rendered(
          new Api.ApiError({
            status: 499,
            type: "invalid_request_error",
            code: "client_closed_request",
            message: "the client closed the request before it was sent upstream"
          })
        ),
      StoreError: () => rendered(Api.internal("store_error", "database error"))
    },
    () => rendered(Api.internal("internal_error", "internal error"))
  )

/** Every failure of a client handler; {@link renderFailure} maps each by its tag. */
type ClientError =
  | Api.ApiError
  | UpstreamReply
  | StreamBrokenRefund
  | ClientClosedRequest
  | InvalidApiKey
  | Pricing.ModelNotFound
  | Pricing.ModelPriceError
  | Channels.NoChannel
  | Channels.AllChannelsFailed
  | BillingSession.OpenError
  | BillingSettler.SettleError

const rendered = (error: Api.ApiError) => Effect.succeed(Api.toResponse(error))

const usedRequestId = Api.conflict("request_id_conflict", "X-Request-Id", "this request id was already used")

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/** Reads the JSON body and decodes it with `schema` (its decoder built once, here). */
const decode = <S extends Schema.Decoder<unknown>>(schema: S) => {
  const decodeUnknown = Schema.decodeUnknownEffect(schema)
  return Effect.flatMap(Api.jsonObjectBody, (json) =>
    decodeUnknown(json).pipe(
      Effect.mapError((error) => Api.fromSchemaError(json, error)),
      Effect.map((decoded) => ({ json, decoded: decoded as S["Type"] }))
    ))
}

const decodeChat = decode(ChatBody)
const decodeEmbeddings = decode(EmbeddingsBody)

const requestIdOf = (request: HttpServerRequest.HttpServerRequest): string | Api.ApiError => {
  const given = request.headers["x-request-id"]
  if (given === undefined) return `req_${randomUUID().replace(/-/g, "")}`
  const id = given.trim()
  if (!isRequestId(id)) {
    return Api.invalidRequest(
      "X-Request-Id",
      `X-Request-Id: expected 1 to ${MAX_REQUEST_ID} visible ASCII characters`
    )
  }
  return id
}

/**
 * The paying source ids of a settlement, `+`-joined in order.
 *
 * @since 0.1.0
 * @category logs
 */
export const sourcesOf: (hold: Hold.Hold) => string = Sources.sourcesOf

interface Tokens {
  prompt: number
  completion: number
  /** The amount the relay settles with, once decided (the work's cost or the disconnect charge). */
  quota?: number | undefined
}

/** What the flow knows about one billed request. */
interface Request {
  readonly requestId: string
  /** The SDK hold id: the request id scoped to the account. */
  readonly holdId: string
  readonly principal: Principal
  readonly model: string
  readonly price: ModelPrice
  readonly groupRatio: number
  readonly promptEstimate: number
  readonly estimate: number
}

// ---------------------------------------------------------------------------
// routes
// ---------------------------------------------------------------------------

/**
 * The client routes over a relay config. Requires the SDK's
 * `BillingSession`, the {@link RelayStore} and the {@link Upstream.Upstream}
 * channel client.
 *
 * @since 0.1.0
 * @category routes
 */
export const routes = (config: RelayConfig): Layer.Layer<
  never,
  never,
  HttpRouter.HttpRouter | RelayStore | BillingSession.BillingSession | Upstream.Upstream
> =>
  HttpRouter.use((router) =>
    Effect.gen(function*() {
      const store = yield* RelayStore
      const session = yield* BillingSession.BillingSession
      const upstream = yield* Upstream.Upstream
      const routing = Channels.fromConfig(config)
      const policy = config.billing.onClientDisconnect
      const limits = config.limits
      const encoder = new TextEncoder()

      /**
       * Before the upstream call: fails with `ClientClosedRequest` (the hold is refunded:
       * nothing was sent upstream or delivered) when the client is gone.
       */
      const stillConnected = (request: HttpServerRequest.HttpServerRequest) =>
        Effect.flatMap(
          ClientConnection.connected(request),
          (connected) => connected ? Effect.void : Effect.fail(new ClientClosedRequest())
        )

      /**
       * In a response body, before the part that completes it: when the client
       * is gone, ends the `billing` fiber by `onClientDisconnect` and the body.
       */
      const stillThere = (request: HttpServerRequest.HttpServerRequest, billing: Fiber.Fiber<unknown, unknown>) =>
        Effect.flatMap(
          ClientConnection.connected(request),
          (connected) => connected ? Effect.void : Effect.andThen(Fiber.interrupt(billing), Effect.interrupt)
        )

      /** When a request started now must end (`limits.maxRequestSeconds`). */
      const deadlineOf = Effect.map(Clock.currentTimeMillis, (now) => now + limits.maxRequestSeconds * 1000)
      const untilDeadline = (deadline: number) =>
        Effect.map(Clock.currentTimeMillis, (now) => Duration.millis(Math.max(0, deadline - now)))
      const requestTimeout = () =>
        new Api.ApiError({
          status: 504,
          type: "upstream_error",
          code: "request_timeout",
          message: `the request ran longer than limits.maxRequestSeconds (${limits.maxRequestSeconds} s)`
        })
      /** `effect`, failing with 504 `request_timeout` at the deadline. */
      const withDeadline = <A, E, R>(deadline: number, effect: Effect.Effect<A, E, R>) =>
        Effect.flatMap(
          untilDeadline(deadline),
          (left) => Effect.timeoutOrElse(effect, { duration: left, orElse: () => Effect.fail(requestTimeout()) })
        )

      /**
       * A response body whose client may read nothing for at most
       * `limits.clientIdleSeconds`: then `onIdle` runs (it ends the billing by
       * `onClientDisconnect`) and the connection is dropped.
       */
      const clientIdle = <A, E>(
        body: Stream.Stream<A, E>,
        request: HttpServerRequest.HttpServerRequest,
        onIdle: Effect.Effect<void>
      ) =>
        IdleWatch.consumer(
          body,
          Duration.seconds(limits.clientIdleSeconds),
          () => new Cause.TimeoutError(`the client read nothing for ${limits.clientIdleSeconds} s`),
          Effect.andThen(onIdle, ClientConnection.disconnect(request))
        )

      /**
       * `bytes` as a stream of pieces of at most {@link WRITE_PIECE} bytes, one per
       * pull: each is its own write, so `limits.clientIdleSeconds` times what the client
       * reads of each piece, not the draining of a whole large answer by a slow but
       * steady reader.
       */
      const pieces = (bytes: Uint8Array): Stream.Stream<Uint8Array> =>
        Stream.fromIterable(
          Array.from(
            { length: Math.ceil(bytes.length / WRITE_PIECE) },
            (_, i) => bytes.subarray(i * WRITE_PIECE, (i + 1) * WRITE_PIECE)
          )
        ).pipe(Stream.rechunk(1))

      const groupRatio = (group: string): number =>
        Object.hasOwn(config.groups, group) ? config.groups[group]! : (config.groups["default"] ?? 1)

      /** Runs a handler with a request id, rendering every failure and echoing the id. */
      const handle = (
        handler: (
          requestId: string
        ) => Effect.Effect<HttpServerResponse.HttpServerResponse, ClientError, HttpServerRequest.HttpServerRequest>
      ) =>
        Metrics.countRequest(Effect.gen(function*() {
          const request = yield* HttpServerRequest.HttpServerRequest
          const id = requestIdOf(request)
          const echo = typeof id === "string" ? id : `req_${randomUUID().replace(/-/g, "")}`
          const response = typeof id === "string"
            ? yield* renderFailure(handler(id))
            : Api.toResponse(id)
          return HttpServerResponse.setHeader(response, "x-request-id", echo)
        }))

      const authenticate = Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        return yield* store.authenticate(bearer(request.headers["authorization"]))
      })

      /**
       * Price, permission, conflict and estimate checks shared by chat and embeddings.
       * `prompt` is the prompt-token count, computed only when needed (`count`, once):
       * not for the reservation when its upper `bound` is under `minPreConsumeTokens`
       * (the reservation is then the same whatever the exact count), only later if a
       * settlement needs the estimate (no usage from the upstream, a disconnect).
       */
      const prepare = (
        requestId: string,
        principal: Principal,
        model: string,
        prompt: { readonly count: () => number; readonly bound: number },
        maxTokens: number
      ) =>
        Effect.gen(function*() {
          const price = yield* Pricing.priceOf(config, model)
          yield* Metrics.labelModel(model)
          if (principal.models !== undefined && !principal.models.includes(model)) {
            return yield* apiError(
              403,
              "model_not_allowed",
              `this token may not use the model ${JSON.stringify(model)}`
            )
          }
          if (Channels.candidates(config.channels, model).length === 0) {
            return yield* apiError(400, "model_not_found", `no channel serves the model ${JSON.stringify(model)}`)
          }
          const ratio = groupRatio(principal.group)
          let counted: number | undefined
          const promptTokens = () => (counted ??= prompt.count())
          const minPreConsumeTokens = config.billing.minPreConsumeTokens
          const estimate = isFixedPrice(price)
            ? Pricing.fixed({ price, quotaPerUnit: config.quotaPerUnit, groupRatio: ratio })
            : Pricing.estimate({
              price,
              groupRatio: ratio,
              // max(count, min) = min = max(bound, min) when count ≤ bound ≤ min
              promptEstimate: prompt.bound <= minPreConsumeTokens ? prompt.bound : promptTokens(),
              maxTokens,
              minPreConsumeTokens
            })
          const holdId = yield* Effect.try({
            try: () => holdIdOf(principal.accountId, requestId),
            catch: () => Api.internal("internal_error", "this account cannot scope request ids")
          })
          const request: Request = {
            requestId,
            holdId,
            principal,
            model,
            price,
            groupRatio: ratio,
            get promptEstimate() {
              return promptTokens()
            },
            estimate
          }
          return request
        })

      /** Requests whose own hold was opened (only those record a log when they end). */
      const opened = new WeakSet<Request>()

      /** A used request id: 409 with a JSON body; the first request's hold is never touched. */
      const usedId = (r: Request, detail: string) => () =>
        Effect.fail(Api.conflict("request_id_conflict", "X-Request-Id", `request id ${r.requestId} ${detail}`))

      // The SDK's open is the one atomic check of the request id (no read before it); the
      // account's use of the id is remembered first, for the admin API's lookup by id.
      const open = (r: Request) =>
        store.claimRequestId(r.principal.accountId, r.requestId).pipe(
          Effect.andThen(session.open({
            holdId: r.holdId,
            accountId: r.principal.accountId,
            tokenId: r.principal.tokenId,
            estimate: r.estimate,
            preference: r.principal.billingPreference,
            metadata: { model: r.model, requestId: r.requestId }
          })),
          Effect.tap(() => Effect.sync(() => opened.add(r))),
          Effect.catchTags({
            HoldInFlight: usedId(r, "is still being processed"),
            HoldResolved: usedId(r, "was already used"),
            IdempotencyConflict: usedId(r, "was already used with other parameters")
          })
        )

      /** Cost and tokens of a completion with (or without) the upstream's usage. */
      const chatCost = (r: Request, usage: Upstream.Usage | undefined, text: string, tokens: Tokens): number => {
        tokens.prompt = usage?.prompt_tokens ?? r.promptEstimate
        tokens.completion = usage?.completion_tokens ?? Tokenizer.countText(text)
        return isFixedPrice(r.price)
          ? Pricing.fixed({ price: r.price, quotaPerUnit: config.quotaPerUnit, groupRatio: r.groupRatio })
          : Pricing.actual({
            price: r.price,
            groupRatio: r.groupRatio,
            promptTokens: tokens.prompt,
            completionTokens: tokens.completion
          })
      }

      /**
       * The interruption policy, decided when the disconnect happens: a refund while
       * nothing was sent upstream (nothing consumed, nothing delivered), else
       * `onClientDisconnect`.
       */
      const interruption = (
        r: Request,
        reserved: () => number,
        progress: () => Effect.Effect<{ readonly usage: Upstream.Usage | undefined; readonly text: string }>,
        tokens: Tokens,
        sentUpstream: () => boolean
      ): BillingSettler.InterruptionPolicy =>
        BillingSettler.decideOnInterrupt(
          Effect.sync(() =>
            sentUpstream() ? disconnectPolicy(r, reserved, progress, tokens) : BillingSettler.refundOnInterrupt
          )
        )

      /** `onClientDisconnect` for a request that was sent upstream. */
      const disconnectPolicy = (
        r: Request,
        reserved: () => number,
        progress: () => Effect.Effect<{ readonly usage: Upstream.Usage | undefined; readonly text: string }>,
        tokens: Tokens
      ): BillingSettler.RefundOnInterrupt | BillingSettler.ChargeOnInterrupt =>
        policy === "refund" ? BillingSettler.refundOnInterrupt : BillingSettler.chargeOnInterrupt(
          Effect.gen(function*() {
            const { text, usage } = yield* progress()
            const streamed = policy === "charge-streamed" ? Tokenizer.countText(text) : 0
            const resolution = Pricing.onClientDisconnect({
              policy,
              price: r.price,
              groupRatio: r.groupRatio,
              quotaPerUnit: config.quotaPerUnit,
              promptEstimate: r.promptEstimate,
              upstreamPromptTokens: usage?.prompt_tokens,
              streamedCompletionTokens: streamed,
              reserved: reserved()
            })
            tokens.prompt = usage?.prompt_tokens ?? r.promptEstimate
            tokens.completion = streamed
            tokens.quota = resolution._tag === "Charge" ? resolution.amount : 0
            return tokens.quota
          })
        )

      /** What the settle stores on its settlement for the request log (read when it settles). */
      const settleMetadata = (tokens: Tokens) =>
        Effect.sync(() => ({ promptTokens: String(tokens.prompt), completionTokens: String(tokens.completion) }))

      /**
       * After the hold is resolved: logs the request as the relay resolved it (its log row
       * was written with the settlement), from what the flow knows — no read of the hold:
       * `settled` with the amount when the work succeeded (the settle succeeded, late or
       * not), `charged-on-disconnect` when an interruption was charged, else `refunded`.
       * A request refused at open (insufficient quota, a used request id, a client gone
       * before the open) has no hold of its own: nothing to log.
       */
      const finish = (r: Request, exit: Exit.Exit<unknown, unknown>, tokens: Tokens, reserved: number) =>
        Effect.suspend(() => {
          if (!opened.has(r)) return Effect.void
          const outcome = Exit.isSuccess(exit)
            ? "settled"
            : Cause.hasInterruptsOnly(exit.cause) && tokens.quota !== undefined && tokens.quota > 0
            ? "charged-on-disconnect"
            : "refunded"
          // One logfmt line, formatted here: no log annotations for the logger to render
          // (the default logger prints annotations as a multi-line inspected object).
          return Effect.log(
            `relay request requestId=${logfmt(r.requestId)} accountId=${logfmt(r.principal.accountId)} model=${
              logfmt(r.model)
            } status=${outcome} reserved=${reserved} quota=${outcome === "refunded" ? 0 : tokens.quota ?? 0}`
          )
        }).pipe(Effect.uninterruptible)

      /**
       * A non-stream request (chat or embeddings) billed end to end. The
       * billing runs in its own fiber: it opens the hold, checks the client is
       * still there, calls the upstream, and settles only once the answer was
       * written to a client still connected (the body's final byte follows
       * the settlement); a client gone before that is billed by
       * `onClientDisconnect`.
       */
      const billedJson = (
        r: Request,
        request: HttpServerRequest.HttpServerRequest,
        deadline: number,
        call: Effect.Effect<Channels.Routed<Upstream.JsonResponse>, Channels.RouteError>,
        cost: (response: Upstream.JsonResponse, tokens: Tokens) => number
      ) =>
        Effect.gen(function*() {
          const tokens: Tokens = { prompt: 0, completion: 0 }
          let reserved = r.estimate
          let answered: Upstream.JsonResponse | undefined
          let sentUpstream = false
          const ready = yield* Deferred.make<Channels.Routed<Upstream.JsonResponse>, ClientError>()
          const delivered = yield* Deferred.make<void>()
          const billing = BillingSettler.withBilling(
            Effect.tap(open(r), (s) => Effect.sync(() => void (reserved = s.hold.reserved))),
            () =>
              Effect.gen(function*() {
                yield* stillConnected(request)
                sentUpstream = true
                const routed = yield* withDeadline(
                  deadline,
                  call.pipe(
                    Effect.catchTag("UpstreamHttpError", (e) => Effect.fail(new UpstreamReply(e.status, e.body)))
                  )
                )
                answered = routed.value
                const amount = cost(routed.value, tokens)
                tokens.quota = amount
                yield* Deferred.succeed(ready, routed)
                yield* Deferred.await(delivered)
                return { value: undefined, cost: amount }
              }),
            {
              onInterrupt: interruption(
                r,
                () => reserved,
                () => Effect.sync(() => ({ usage: answered?.usage, text: "" })),
                tokens,
                () => sentUpstream
              ),
              metadata: settleMetadata(tokens)
            }
          ).pipe(
            Effect.onExit((exit) =>
              Effect.andThen(
                Exit.isFailure(exit) ? Deferred.failCause(ready, exit.cause) : Effect.void,
                finish(r, exit, tokens, reserved)
              )
            )
          )
          const fiber = yield* Effect.forkDetach(billing)
          const routed = yield* Deferred.await(ready).pipe(Effect.onInterrupt(() => Fiber.interrupt(fiber)))
          const text = JSON.stringify(routed.value.body)
          const settle = Effect.andThen(Deferred.succeed(delivered, undefined), Fiber.join(fiber))
          if (Buffer.byteLength(text, "utf8") <= WRITE_PIECE) {
            // An answer of one piece is written whole after the settlement, headers and body
            // in one write, with the client still there when it is settled (a client gone by
            // then is billed by `onClientDisconnect`). The socket takes one piece at once, so
            // there is no reading for `limits.clientIdleSeconds` to watch; the deadline
            // (`limits.maxRequestSeconds`) still bounds the wait for the settlement.
            yield* withDeadline(deadline, Effect.andThen(stillThere(request, fiber), settle)).pipe(
              Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : Fiber.interrupt(fiber))
            )
            return HttpServerResponse.text(text, { status: routed.value.status, contentType: "application/json" })
          }
          const bytes = encoder.encode(text)
          // A larger answer, with the client still there when it is written: all but its last
          // byte (in pieces), the settlement, the last byte. A client gone by then is billed by
          // `onClientDisconnect`.
          // `limits.maxRequestSeconds` bounds the delivery too: a client still reading the answer
          // at the deadline is cut off there (billed by `onClientDisconnect`: it did not get it all).
          const expiry = Effect.flatMap(untilDeadline(deadline), Effect.sleep).pipe(
            Effect.andThen(Effect.fail(requestTimeout()))
          )
          const body = Stream.fromEffectDrain(stillThere(request, fiber)).pipe(
            Stream.concat(pieces(bytes.subarray(0, bytes.length - 1))),
            Stream.concat(Stream.fromEffectDrain(settle)),
            Stream.concat(Stream.make(bytes.subarray(bytes.length - 1))),
            Stream.interruptWhen(expiry),
            (stream) => clientIdle(stream, request, Fiber.interrupt(fiber)),
            Stream.ensuring(Fiber.interrupt(fiber))
          )
          return HttpServerResponse.stream(body, { status: routed.value.status, contentType: "application/json" })
        })

      const chat = (requestId: string) =>
        Effect.gen(function*() {
          const deadline = yield* deadlineOf
          const request = yield* HttpServerRequest.HttpServerRequest
          const principal = yield* authenticate
          const { decoded: body, json } = yield* decodeChat
          const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? 0
          const r = yield* prepare(requestId, principal, body.model, {
            count: () => Tokenizer.countMessages(body.messages),
            bound: Tokenizer.messagesUpperBound(body.messages)
          }, maxTokens)
          if (body.stream !== true) {
            return yield* billedJson(
              r,
              request,
              deadline,
              Channels.chat(routing, r.model, Upstream.chatBody(json, false)).pipe(
                Effect.provideService(Upstream.Upstream, upstream)
              ),
              (response, tokens) => chatCost(r, response.usage, completionText(response.body), tokens)
            )
          }
          return yield* chatStream(r, request, deadline, json, body.stream_options?.include_usage === true)
        })

      const chatStream = (
        r: Request,
        request: HttpServerRequest.HttpServerRequest,
        deadline: number,
        json: Upstream.Body,
        includeUsage: boolean
      ) =>
        Effect.gen(function*() {
          const tokens: Tokens = { prompt: 0, completion: 0 }
          let reserved = r.estimate
          let committed: Upstream.ChatStream | undefined
          let sentUpstream = false
          const ready = yield* Deferred.make<Upstream.ChatStream, ClientError>()
          const finished = yield* Deferred.make<"done" | "broken">()
          const progress = () =>
            committed === undefined
              ? Effect.succeed({ usage: undefined, text: "" })
              : Effect.map(committed.state, (s) => ({ usage: s.usage, text: s.text }))

          const billing = BillingSettler.withBilling(
            Effect.tap(open(r), (s) => Effect.sync(() => void (reserved = s.hold.reserved))),
            () =>
              Effect.gen(function*() {
                yield* stillConnected(request)
                sentUpstream = true
                const routed = yield* withDeadline(
                  deadline,
                  Channels.chatStream(routing, r.model, Upstream.chatBody(json, true)).pipe(
                    Effect.provideService(Upstream.Upstream, upstream),
                    Effect.catchTag("UpstreamHttpError", (e) => Effect.fail(new UpstreamReply(e.status, e.body)))
                  )
                )
                committed = routed.value
                yield* Deferred.succeed(ready, routed.value)
                const outcome = yield* Deferred.await(finished)
                const state = yield* routed.value.state
                if (outcome === "done" || state.usage !== undefined) {
                  tokens.quota = chatCost(r, state.usage, state.text, tokens)
                  return { value: undefined, cost: tokens.quota }
                }
                // broken before the usage arrived
                const streamed = Tokenizer.countText(state.text)
                const resolution = isFixedPrice(r.price)
                  ? (streamed === 0 ? Pricing.refund : Pricing.charge(r.estimate))
                  : Pricing.onBrokenStream({
                    price: r.price,
                    groupRatio: r.groupRatio,
                    promptEstimate: r.promptEstimate,
                    streamedCompletionTokens: streamed,
                    reserved
                  })
                if (resolution._tag === "Refund") return yield* Effect.fail(new StreamBrokenRefund())
                tokens.prompt = r.promptEstimate
                tokens.completion = streamed
                tokens.quota = resolution.amount
                return { value: undefined, cost: resolution.amount }
              }),
            {
              onInterrupt: interruption(r, () => reserved, progress, tokens, () => sentUpstream),
              metadata: settleMetadata(tokens)
            }
          ).pipe(
            Effect.onExit((exit) =>
              Effect.andThen(
                Exit.isFailure(exit) ? Deferred.failCause(ready, exit.cause) : Effect.void,
                // the upstream is released however the billing ended (also if the body never ran)
                Effect.andThen(committed?.release ?? Effect.void, finish(r, exit, tokens, reserved))
              )
            )
          )

          // The billing runs in its own fiber: it outlives this handler (whose
          // response is the stream) and ends with the stream, or is
          // interrupted when the client goes away.
          const fiber = yield* Effect.forkDetach(billing)
          const stream = yield* Deferred.await(ready).pipe(Effect.onInterrupt(() => Fiber.interrupt(fiber)))

          let status: "done" | "broken" = "done"
          /** A broken stream ended by the deadline (`limits.maxRequestSeconds`), not by the upstream. */
          let timedOut = false
          // The stream settles by how it ended if the client was still there when its end was
          // written (`data: [DONE]`, or the end of a broken stream); else by `onClientDisconnect`.
          const settle = Stream.fromEffectDrain(
            Effect.andThen(
              Effect.suspend(() => status === "broken" ? stillThere(request, fiber) : Effect.void),
              Effect.andThen(Effect.suspend(() => Deferred.succeed(finished, status)), Fiber.await(fiber))
            )
          )
          // `limits.maxRequestSeconds`: the stream ends at the deadline, like a broken one.
          const expiry = Effect.flatMap(untilDeadline(deadline), Effect.sleep).pipe(
            Effect.andThen(Effect.sync(() => void (timedOut = true))),
            Effect.andThen(Effect.fail(requestTimeout()))
          )
          const trailer = Stream.suspend(() =>
            status === "broken"
              ? Stream.succeed(
                encoder.encode(
                  `data: ${
                    JSON.stringify({
                      error: timedOut
                        ? { message: requestTimeout().message, type: "upstream_error", code: "request_timeout" }
                        : shuttingDown
                        ? { message: "the relay is shutting down", type: "server_error", code: "shutting_down" }
                        : { message: "the upstream stream broke", type: "upstream_error", code: "upstream_error" }
                    })
                  }\n\n`
                )
              )
              : done !== undefined
              ? Stream.succeed(done)
              : Stream.empty
          )
          // `data: [DONE]` is held back until the request is billed: a client that stops
          // reading at [DONE] (as the openai 7 client does) then sees a settled request.
          let done: Uint8Array | undefined
          // A shutdown's drain is over: end the stream like a broken one (billed for what it delivered).
          const shutdown = yield* StreamDeadline
          let shuttingDown = false
          const body = stream.events.pipe(
            // one merge for both ends (each `interruptWhen` is a merge every event goes through)
            Stream.interruptWhen(Effect.raceFirst(
              expiry,
              Effect.andThen(shutdown, Effect.suspend(() => Effect.fail(void (shuttingDown = true))))
            )),
            // the client must still be there when the answer is complete (before the settle)
            Stream.tap((event) => event.done ? stillThere(request, fiber) : Effect.void),
            Stream.filter((event) => {
              if (event.done) done = event.bytes
              return !event.done && (includeUsage || !event.usageOnly)
            }),
            Stream.map((event) => event.bytes),
            Stream.catch(() => Stream.fromEffectDrain(Effect.sync(() => void (status = "broken")))),
            Stream.concat(settle),
            Stream.concat(trailer),
            (events) => clientIdle(events, request, Fiber.interrupt(fiber)),
            Stream.ensuring(Fiber.interrupt(fiber))
          )
          return HttpServerResponse.stream(body, {
            status: 200,
            contentType: "text/event-stream",
            headers: { "cache-control": "no-cache" }
          })
        })

      const embeddings = (requestId: string) =>
        Effect.gen(function*() {
          const deadline = yield* deadlineOf
          const request = yield* HttpServerRequest.HttpServerRequest
          const principal = yield* authenticate
          const { decoded: body, json } = yield* decodeEmbeddings
          const r = yield* prepare(requestId, principal, body.model, {
            count: () => Tokenizer.countEmbeddingsInput(body.input),
            bound: Number.POSITIVE_INFINITY
          }, 0)
          return yield* billedJson(
            r,
            request,
            deadline,
            Channels.embeddings(routing, r.model, json).pipe(Effect.provideService(Upstream.Upstream, upstream)),
            (response, tokens) => {
              tokens.prompt = response.usage?.prompt_tokens ?? r.promptEstimate
              tokens.completion = 0
              return isFixedPrice(r.price)
                ? Pricing.fixed({ price: r.price, quotaPerUnit: config.quotaPerUnit, groupRatio: r.groupRatio })
                : Pricing.embeddings({ price: r.price, groupRatio: r.groupRatio, promptTokens: tokens.prompt })
            }
          )
        })

      const models = (_requestId: string) =>
        Effect.gen(function*() {
          const principal = yield* authenticate
          const ids = principal.models ?? servedPricedModels(config)
          return HttpServerResponse.jsonUnsafe({
            object: "list",
            data: ids.map((id) => ({ id, object: "model", created: 0, owned_by: "relay" }))
          })
        })

      yield* router.addAll([
        HttpRouter.route("POST", "/v1/chat/completions", handle(chat)),
        HttpRouter.route("POST", "/v1/embeddings", handle(embeddings)),
        HttpRouter.route("GET", "/v1/models", handle(models))
      ])
    })
  )

/**
 * Every priced model some channel serves, in config order of the channels.
 *
 * @since 0.1.0
 * @category models
 */
export const servedPricedModels = (config: Pick<RelayConfig, "models" | "channels">): Array<string> => {
  const out = new Set<string>()
  for (const channel of config.channels) {
    for (const model of channel.models) {
      if (Object.hasOwn(config.models, model)) out.add(model)
    }
  }
  return [...out]
}

/** A logfmt value: as is when it needs no quoting, else JSON-quoted. */
const logfmt = (value: string): string => /^[^\s"=\\]+$/.test(value) ? value : JSON.stringify(value)

/** The completion text of a non-stream chat answer (for counting when usage is missing). */
const completionText = (body: unknown): string => {
  const choices = (body as { choices?: unknown } | null)?.choices
  if (!Array.isArray(choices)) return ""
  let text = ""
  for (const choice of choices) {
    const content = (choice as { message?: { content?: unknown } } | null)?.message?.content
    if (typeof content === "string") text += content
  }
  return text
}
