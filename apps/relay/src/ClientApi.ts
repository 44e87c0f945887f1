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
 * `billing.onClientDisconnect`. After a settle one request log is recorded.
 * A request id whose hold already exists is refused by the SDK's atomic open
 * (409 `request_id_conflict`: `HoldInFlight` while the first request runs,
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
 * @since 0.1.0
 */
import { randomUUID } from "node:crypto"
import { Cause, Deferred, Effect, Exit, Fiber, Layer, Schema, Stream } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { BillingSession, BillingSettler } from "@relay-billing/core"
import type { Hold } from "@relay-billing/core"
import { bearer } from "./AdminKey.js"
import * as Channels from "./Channels.js"
import type { ModelPrice, RelayConfig } from "./Config.js"
import { isFixedPrice } from "./Config.js"
import * as Api from "./internal/apiError.js"
import * as Pricing from "./Pricing.js"
import { RelayStore } from "./RelayStore.js"
import type { Principal } from "./RelayStore.js"
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
  messages: Schema.Array(Tokenizer.ChatMessage).check(Schema.isMinLength(1, { message: "expected at least one message" })),
  stream: Schema.optionalKey(Schema.NullOr(Schema.Boolean)),
  stream_options: Schema.optionalKey(Schema.NullOr(Schema.Struct({ include_usage: Schema.optionalKey(Schema.NullOr(Schema.Boolean)) }))),
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

/** A stream that broke with nothing forwarded: the hold is refunded. */
class StreamBrokenRefund {
  readonly _tag = "StreamBrokenRefund"
}

const MAX_REQUEST_ID = 191

/** Maps any failure of the flow to a response. */
const toResponse = (error: unknown): HttpServerResponse.HttpServerResponse => {
  if (error instanceof UpstreamReply) {
    return HttpServerResponse.text(error.body, { status: error.status, contentType: "application/json" })
  }
  return Api.toResponse(toApiError(error))
}

const toApiError = (error: unknown): Api.ApiError => {
  const e = error as { readonly _tag?: string; readonly message?: string; readonly [k: string]: unknown }
  switch (e?._tag) {
    case "ApiError":
      return error as Api.ApiError
    case "InvalidApiKey":
      return Api.unauthorized(e.message ?? "Incorrect API key provided")
    case "ModelNotFound":
    case "NoChannel":
      return apiError(400, "model_not_found", e.message ?? "model not found")
    case "ModelPriceError":
      return apiError(400, "model_price_error", e.message ?? "model has no price")
    case "InsufficientFunds":
      return apiError(403, "insufficient_user_quota", e.message ?? "insufficient quota", "insufficient_quota")
    case "TokenBudgetExceeded":
      return apiError(403, "pre_consume_token_quota_failed", e.message ?? "token quota insufficient", "insufficient_quota")
    case "IdempotencyConflict":
    case "HoldInFlight":
    case "HoldResolved":
      return Api.conflict("request_id_conflict", "X-Request-Id", "this request id was already used")
    case "AllChannelsFailed":
      return new Api.ApiError({
        status: e["status"] as number,
        type: "upstream_error",
        code: "upstream_error",
        message: e.message ?? "every channel failed"
      })
    case "InvalidInput":
      return Api.invalidRequest(String(e["field"] ?? "body"), e.message ?? "invalid input")
    case "StoreError":
      return Api.internal("store_error", "database error")
    default:
      return Api.internal("internal_error", "internal error")
  }
}

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

const decode = <S extends Schema.Decoder<unknown>>(schema: S) =>
  Effect.flatMap(Api.jsonObjectBody, (json) =>
    Schema.decodeUnknownEffect(schema)(json).pipe(
      Effect.mapError((error) => Api.fromSchemaError(json, error)),
      Effect.map((decoded) => ({ json, decoded: decoded as S["Type"] }))
    ))

const requestIdOf = (request: HttpServerRequest.HttpServerRequest): string | Api.ApiError => {
  const given = request.headers["x-request-id"]
  if (given === undefined) return `req_${randomUUID().replace(/-/g, "")}`
  const id = given.trim()
  if (id.length === 0 || id.length > MAX_REQUEST_ID || !/^[\x21-\x7e]+$/.test(id)) {
    return Api.invalidRequest(
      "X-Request-Id",
      `X-Request-Id: expected 1 to ${MAX_REQUEST_ID} visible ASCII characters`
    )
  }
  return id
}

/** The paying source ids of a settlement, `+`-joined in order. */
export const sourcesOf = (hold: Hold.Hold): string => {
  const funding = (hold.settlement?.parts ?? []).filter((p) => p.kind === "funding")
  const paying = funding.filter((p) => p.charged > 0)
  const chosen = paying.length > 0 ? paying : funding.length > 0 ? funding : hold.parts.filter((p) => p.kind === "funding")
  return [...new Set(chosen.map((p) => p.sourceId))].join("+")
}

interface Tokens {
  prompt: number
  completion: number
}

/** What the flow knows about one billed request. */
interface Request {
  readonly requestId: string
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

      const groupRatio = (group: string): number =>
        Object.hasOwn(config.groups, group) ? config.groups[group]! : (config.groups["default"] ?? 1)

      /** Runs a handler with a request id, rendering every failure and echoing the id. */
      const handle = (
        handler: (
          requestId: string
        ) => Effect.Effect<HttpServerResponse.HttpServerResponse, unknown, HttpServerRequest.HttpServerRequest>
      ) =>
        Effect.gen(function*() {
          const request = yield* HttpServerRequest.HttpServerRequest
          const id = requestIdOf(request)
          const echo = typeof id === "string" ? id : `req_${randomUUID().replace(/-/g, "")}`
          const response = typeof id === "string"
            ? yield* handler(id).pipe(Effect.catch((error) => Effect.succeed(toResponse(error))))
            : toResponse(id)
          return HttpServerResponse.setHeader(response, "x-request-id", echo)
        })

      const authenticate = Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        return yield* store.authenticate(bearer(request.headers["authorization"]))
      })

      /** Price, permission, conflict and estimate checks shared by chat and embeddings. */
      const prepare = (
        requestId: string,
        principal: Principal,
        model: string,
        promptEstimate: number,
        maxTokens: number
      ): Effect.Effect<Request, unknown> =>
        Effect.gen(function*() {
          const price = yield* Pricing.priceOf(config, model)
          if (principal.models !== undefined && !principal.models.includes(model)) {
            return yield* apiError(403, "model_not_allowed", `this token may not use the model ${JSON.stringify(model)}`)
          }
          if (Channels.candidates(config.channels, model).length === 0) {
            return yield* apiError(400, "model_not_found", `no channel serves the model ${JSON.stringify(model)}`)
          }
          const ratio = groupRatio(principal.group)
          const estimate = isFixedPrice(price)
            ? Pricing.fixed({ price, quotaPerUnit: config.quotaPerUnit, groupRatio: ratio })
            : Pricing.estimate({
              price,
              groupRatio: ratio,
              promptEstimate,
              maxTokens,
              minPreConsumeTokens: config.billing.minPreConsumeTokens
            })
          return { requestId, principal, model, price, groupRatio: ratio, promptEstimate, estimate }
        })

      /** Requests whose own hold was opened (only those record a log when they end). */
      const opened = new WeakSet<Request>()

      /** A used request id: 409 with a JSON body; the first request's hold is never touched. */
      const usedId = (r: Request, detail: string) => () =>
        Effect.fail(Api.conflict("request_id_conflict", "X-Request-Id", `request id ${r.requestId} ${detail}`))

      // The SDK's open is the one atomic check of the request id (no read before it).
      const open = (r: Request) =>
        session.open({
          holdId: r.requestId,
          accountId: r.principal.accountId,
          tokenId: r.principal.tokenId,
          estimate: r.estimate,
          preference: r.principal.billingPreference,
          metadata: { model: r.model }
        }).pipe(
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

      /** The interruption policy: `onClientDisconnect`, read when the disconnect happens. */
      const interruption = (
        r: Request,
        reserved: () => number,
        progress: () => Effect.Effect<{ readonly usage: Upstream.Usage | undefined; readonly text: string }>,
        tokens: Tokens
      ): BillingSettler.InterruptionPolicy =>
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
            return resolution._tag === "Charge" ? resolution.amount : 0
          })
        )

      /** After the hold is resolved: records the log of a settled hold and logs the request. */
      const finish = (r: Request, tokens: Tokens) =>
        Effect.gen(function*() {
          // A request refused at open (e.g. a used request id) has no hold of its own.
          if (!opened.has(r)) return
          const hold = yield* session.get(r.requestId)
          // Settled, or charged late after the reaper expired it (billing-semantics §6): billed either way.
          const billed = hold.status === "settled" || hold.settlement?.late === true
          const quota = billed ? hold.settlement?.actual ?? 0 : 0
          if (billed) {
            yield* store.recordLog({
              requestId: r.requestId,
              accountId: r.principal.accountId,
              tokenId: r.principal.tokenId,
              model: r.model,
              promptTokens: tokens.prompt,
              completionTokens: tokens.completion,
              quota: hold.settlement?.actual ?? 0,
              source: sourcesOf(hold),
              createdAt: yield* Effect.clockWith((clock) => clock.currentTimeMillis)
            })
          }
          yield* Effect.log("relay request").pipe(
            Effect.annotateLogs({ status: hold.status, reserved: hold.reserved, quota })
          )
        }).pipe(
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.logError("relay: cannot record the request log", cause)
          ),
          Effect.annotateLogs({ requestId: r.requestId, accountId: r.principal.accountId, model: r.model }),
          Effect.uninterruptible
        )

      /** A non-stream request (chat or embeddings) billed end to end. */
      const billedJson = (
        r: Request,
        call: Effect.Effect<Channels.Routed<Upstream.JsonResponse>, Channels.RouteError>,
        cost: (response: Upstream.JsonResponse, tokens: Tokens) => number
      ) =>
        Effect.gen(function*() {
          const tokens: Tokens = { prompt: 0, completion: 0 }
          let reserved = r.estimate
          const routed = yield* BillingSettler.withBilling(
            Effect.tap(open(r), (s) => Effect.sync(() => void (reserved = s.hold.reserved))),
            () =>
              call.pipe(
                Effect.mapError((e) => e._tag === "UpstreamHttpError" ? new UpstreamReply(e.status, e.body) : e),
                Effect.map((routed) => ({ value: routed, cost: cost(routed.value, tokens) }))
              ),
            {
              onInterrupt: interruption(r, () => reserved, () => Effect.succeed({ usage: undefined, text: "" }), tokens)
            }
          ).pipe(Effect.onExit(() => finish(r, tokens)))
          return HttpServerResponse.jsonUnsafe(routed.value.body, { status: routed.value.status })
        })

      const chat = (requestId: string) =>
        Effect.gen(function*() {
          const principal = yield* authenticate
          const { decoded: body, json } = yield* decode(ChatBody)
          const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? 0
          const r = yield* prepare(requestId, principal, body.model, Tokenizer.countMessages(body.messages), maxTokens)
          if (body.stream !== true) {
            return yield* billedJson(
              r,
              Channels.chat(routing, r.model, Upstream.chatBody(json, false)).pipe(
                Effect.provideService(Upstream.Upstream, upstream)
              ),
              (response, tokens) => chatCost(r, response.usage, completionText(response.body), tokens)
            )
          }
          return yield* chatStream(r, json, body.stream_options?.include_usage === true)
        })

      const chatStream = (r: Request, json: Upstream.Body, includeUsage: boolean) =>
        Effect.gen(function*() {
          const tokens: Tokens = { prompt: 0, completion: 0 }
          let reserved = r.estimate
          let committed: Upstream.ChatStream | undefined
          const ready = yield* Deferred.make<Upstream.ChatStream, unknown>()
          const finished = yield* Deferred.make<"done" | "broken">()
          const progress = () =>
            committed === undefined
              ? Effect.succeed({ usage: undefined, text: "" })
              : Effect.map(committed.state, (s) => ({ usage: s.usage, text: s.text }))

          const billing = BillingSettler.withBilling(
            Effect.tap(open(r), (s) => Effect.sync(() => void (reserved = s.hold.reserved))),
            () =>
              Effect.gen(function*() {
                const routed = yield* Channels.chatStream(routing, r.model, Upstream.chatBody(json, true)).pipe(
                  Effect.provideService(Upstream.Upstream, upstream),
                  Effect.mapError((e) => e._tag === "UpstreamHttpError" ? new UpstreamReply(e.status, e.body) : e)
                )
                committed = routed.value
                yield* Deferred.succeed(ready, routed.value)
                const outcome = yield* Deferred.await(finished)
                const state = yield* routed.value.state
                if (outcome === "done" || state.usage !== undefined) {
                  return { value: undefined, cost: chatCost(r, state.usage, state.text, tokens) }
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
                return { value: undefined, cost: resolution.amount }
              }),
            { onInterrupt: interruption(r, () => reserved, progress, tokens) }
          ).pipe(
            Effect.onExit((exit) =>
              Effect.andThen(
                Exit.isFailure(exit) ? Deferred.failCause(ready, exit.cause) : Effect.void,
                finish(r, tokens)
              )
            )
          )

          // The billing runs in its own fiber: it outlives this handler (whose
          // response is the stream) and ends with the stream, or is
          // interrupted when the client goes away.
          const fiber = yield* Effect.forkDetach(billing)
          const stream = yield* Deferred.await(ready).pipe(Effect.onInterrupt(() => Fiber.interrupt(fiber)))

          let status: "done" | "broken" = "done"
          const settle = Stream.fromEffectDrain(
            Effect.andThen(Effect.suspend(() => Deferred.succeed(finished, status)), Fiber.await(fiber))
          )
          const trailer = Stream.suspend(() =>
            status === "broken"
              ? Stream.succeed(
                new TextEncoder().encode(
                  `data: ${
                    JSON.stringify({
                      error: { message: "the upstream stream broke", type: "upstream_error", code: "upstream_error" }
                    })
                  }\n\n`
                )
              )
              : Stream.empty
          )
          const body = stream.events.pipe(
            Stream.filter((event) => includeUsage || !event.usageOnly),
            Stream.map((event) => event.bytes),
            Stream.catch(() => Stream.fromEffectDrain(Effect.sync(() => void (status = "broken")))),
            Stream.concat(settle),
            Stream.concat(trailer),
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
          const principal = yield* authenticate
          const { decoded: body, json } = yield* decode(EmbeddingsBody)
          const r = yield* prepare(requestId, principal, body.model, Tokenizer.countEmbeddingsInput(body.input), 0)
          return yield* billedJson(
            r,
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
