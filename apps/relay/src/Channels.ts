/**
 * Channel selection and retries (`relay-api.md`, "Retries").
 *
 * The channels serving a model are tried in ascending `priority`, ties in
 * config order. An upstream 5xx, a connection error (refused, reset, timeout)
 * or a protocol error (a 2xx that is not the protocol) moves on to the NEXT
 * channel serving the model — always a different channel, never a wrap-around
 * — for at most `billing.retries` more attempts. An upstream 4xx is never
 * retried: it fails with the {@link Upstream.UpstreamHttpError} as is. When
 * every attempt failed the call fails with {@link AllChannelsFailed}, whose
 * `status` is 502 when no channel answered with an HTTP status, else the last
 * upstream status.
 *
 * For streams a channel is committed to only once its first event has been
 * read: a stream that fails before its first event (a 5xx, a refused or reset
 * connection, an empty or broken body) is retried like any other failure; once
 * the first event is in hand no retry happens, so no byte of a failed attempt
 * ever reaches the client.
 *
 * @since 0.1.0
 */
import type { Cause } from "effect"
import { Effect, Exit, Schema, Scope, Stream } from "effect"
import * as Pull from "effect/Pull"
import type { Channel, RelayConfig } from "./Config.js"
import * as Upstream from "./Upstream.js"

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

/**
 * One failed attempt.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Attempt = Schema.Struct({
  channel: Schema.String,
  /** The failure's tag: `UpstreamHttpError`, `UpstreamConnectionError` or `UpstreamProtocolError`. */
  error: Schema.String,
  /** The upstream's HTTP status, for an `UpstreamHttpError`. */
  status: Schema.optionalKey(Schema.Number),
  message: Schema.String
})
/** @since 0.1.0 @category models */
export type Attempt = typeof Attempt.Type

/**
 * Every attempt failed (with a 5xx, a connection or a protocol error).
 * `status` is what the relay answers: 502 when no channel answered with an
 * HTTP status, else the last upstream status. `body` is the last upstream
 * error body, when there is one.
 *
 * @since 0.1.0
 * @category errors
 */
export class AllChannelsFailed extends Schema.TaggedError<AllChannelsFailed>()("AllChannelsFailed", {
  model: Schema.String,
  status: Schema.Number,
  body: Schema.optionalKey(Schema.String),
  attempts: Schema.Array(Attempt)
}) {
  /** Stable code. */
  get code(): "upstream_error" {
    return "upstream_error"
  }
  override get message(): string {
    const tried = this.attempts.map((a) => `${a.channel}: ${a.message}`).join("; ")
    return `every channel failed for model ${this.model} (${this.attempts.length} attempt(s)): ${tried}`
  }
}

/**
 * No channel serves the model.
 *
 * @since 0.1.0
 * @category errors
 */
export class NoChannel extends Schema.TaggedError<NoChannel>()("NoChannel", {
  model: Schema.String
}) {
  /** Stable code. */
  get code(): "model_not_found" {
    return "model_not_found"
  }
  override get message(): string {
    return `no channel serves the model ${this.model}`
  }
}

/**
 * The failures of a routed call: a 4xx (as is), all channels failed, or no channel.
 *
 * @since 0.1.0
 * @category errors
 */
export type RouteError = Upstream.UpstreamHttpError | AllChannelsFailed | NoChannel

// ---------------------------------------------------------------------------
// selection
// ---------------------------------------------------------------------------

/**
 * What routing needs from the config.
 *
 * @since 0.1.0
 * @category models
 */
export interface Routing {
  readonly channels: ReadonlyArray<Channel>
  /** More attempts allowed after the first (`billing.retries`). */
  readonly retries: number
}

/**
 * The routing part of a relay config.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromConfig = (config: RelayConfig): Routing => ({
  channels: config.channels,
  retries: config.billing.retries
})

/**
 * The channels serving `model`, in the order they are tried: ascending
 * `priority`, ties in config order.
 *
 * @since 0.1.0
 * @category selection
 */
export const candidates = (channels: ReadonlyArray<Channel>, model: string): Array<Channel> =>
  channels
    .map((channel, index) => ({ channel, index }))
    .filter(({ channel }) => channel.models.includes(model))
    .sort((a, b) => a.channel.priority - b.channel.priority || a.index - b.index)
    .map(({ channel }) => channel)

/**
 * The channels an attempt sequence uses: the first `1 + retries` candidates.
 *
 * @since 0.1.0
 * @category selection
 */
export const plan = (routing: Routing, model: string): Array<Channel> =>
  candidates(routing.channels, model).slice(0, 1 + Math.max(0, routing.retries))

// ---------------------------------------------------------------------------
// routing
// ---------------------------------------------------------------------------

/**
 * A successful routed call: the value, and the attempts that failed before it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Routed<A> {
  readonly channel: string
  readonly value: A
  readonly failed: ReadonlyArray<Attempt>
}

const toAttempt = (error: Upstream.UpstreamError): Attempt => ({
  channel: error.channel,
  error: error._tag,
  ...(error._tag === "UpstreamHttpError" ? { status: error.status } : {}),
  message: error.message
})

const allFailed = (model: string, failures: ReadonlyArray<Upstream.UpstreamError>): AllChannelsFailed => {
  let status = 502
  let body: string | undefined
  for (const failure of failures) {
    if (failure._tag === "UpstreamHttpError") {
      status = failure.status
      body = failure.body
    }
  }
  return new AllChannelsFailed({
    model,
    status,
    ...(body !== undefined ? { body } : {}),
    attempts: failures.map(toAttempt)
  })
}

/**
 * Runs `attempt` on the planned channels until one succeeds, a 4xx stops it,
 * or the plan is exhausted.
 *
 * @since 0.1.0
 * @category routing
 */
export const route = <A, R>(
  routing: Routing,
  model: string,
  attempt: (channel: Channel) => Effect.Effect<A, Upstream.UpstreamError, R>
): Effect.Effect<Routed<A>, RouteError, R> =>
  Effect.suspend(() => {
    const channels = plan(routing, model)
    if (channels.length === 0) return Effect.fail(new NoChannel({ model }))
    const failures: Array<Upstream.UpstreamError> = []
    const loop = (i: number): Effect.Effect<Routed<A>, RouteError, R> =>
      i >= channels.length
        ? Effect.fail(allFailed(model, failures))
        : attempt(channels[i]!).pipe(
          Effect.map((value): Routed<A> => ({ channel: channels[i]!.name, value, failed: failures.map(toAttempt) })),
          Effect.catch((error) => {
            if (error._tag === "UpstreamHttpError" && !error.retryable) return Effect.fail(error)
            failures.push(error)
            return loop(i + 1)
          })
        )
    return loop(0)
  })

/**
 * A non-stream chat completion, routed.
 *
 * @since 0.1.0
 * @category routing
 */
export const chat = (
  routing: Routing,
  model: string,
  body: Upstream.Body
): Effect.Effect<Routed<Upstream.JsonResponse>, RouteError, Upstream.Upstream> =>
  Effect.flatMap(
    Upstream.Upstream,
    (upstream) => route(routing, model, (channel) => upstream.chat(channel, body, { stream: false }))
  )

/**
 * An embeddings request, routed.
 *
 * @since 0.1.0
 * @category routing
 */
export const embeddings = (
  routing: Routing,
  model: string,
  body: Upstream.Body
): Effect.Effect<Routed<Upstream.JsonResponse>, RouteError, Upstream.Upstream> =>
  Effect.flatMap(
    Upstream.Upstream,
    (upstream) => route(routing, model, (channel) => upstream.embeddings(channel, body))
  )

/**
 * Opens a stream and reads its first event; fails (so the caller can retry)
 * when the stream breaks or ends before it. The returned stream replays that
 * event then continues with the rest; it owns the upstream connection and
 * releases it when it ends or is interrupted.
 */
const openCommitted = (
  stream: Upstream.ChatStream
): Effect.Effect<Upstream.ChatStream, Upstream.StreamError> =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const close = Scope.close(scope, Exit.void)
    const pull = yield* Stream.toPull(stream.events).pipe(Scope.provide(scope))
    const first = yield* pull.pipe(
      Effect.catchCause((cause) => {
        const closeAnd = <E>(e: Effect.Effect<never, E>) => Effect.andThen(close, e)
        if (Pull.isDoneCause(cause)) {
          return closeAnd(
            Effect.fail(
              new Upstream.UpstreamProtocolError({
                channel: stream.channel,
                reason: "the stream ended before its first event"
              })
            )
          )
        }
        return closeAnd(Effect.failCause(cause as Cause.Cause<Upstream.StreamError>))
      }),
      Effect.onInterrupt(() => close)
    )
    const events = Stream.concat(
      Stream.fromIterable(first),
      Stream.fromPull(Effect.succeed(pull))
    ).pipe(Stream.ensuring(close))
    return { ...stream, events }
  })

/**
 * A stream chat completion, routed. Each attempt opens the stream and reads
 * its first event; a failure before it moves on to the next channel (see the
 * module docs). The result's `events` start with that first event; run them
 * once (they own the upstream connection).
 *
 * @since 0.1.0
 * @category routing
 */
export const chatStream = (
  routing: Routing,
  model: string,
  body: Upstream.Body
): Effect.Effect<Routed<Upstream.ChatStream>, RouteError, Upstream.Upstream> =>
  Effect.flatMap(
    Upstream.Upstream,
    (upstream) =>
      route(routing, model, (channel) =>
        upstream.chat(channel, body, { stream: true }).pipe(Effect.flatMap(openCommitted)))
  )
