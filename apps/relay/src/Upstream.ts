/**
 * The channel client: calls one upstream channel (an OpenAI-compatible API)
 * through effect's `HttpClient`. It only speaks HTTP: the built-in demo
 * channel (a `demo:` base URL) is answered by the `DemoUpstream` layer, which
 * wraps this client.
 *
 * - `chat(channel, body, { stream: false })` POSTs `${baseUrl}/chat/completions`
 *   with `Authorization: Bearer <apiKey>` and returns the parsed JSON and its
 *   `usage`.
 * - `chat(channel, body, { stream: true })` always asks the upstream for usage
 *   (`stream_options.include_usage: true`, whatever the client sent) and
 *   returns a {@link ChatStream}: the upstream's server-sent events, each as
 *   its exact bytes, emitted as they arrive (the body is never buffered whole),
 *   plus a live {@link StreamState} — the usage of the final usage chunk, the
 *   completion text accumulated so far, and whether the stream ended with
 *   `data: [DONE]` or broke.
 * - `embeddings(channel, body)` POSTs `${baseUrl}/embeddings`.
 *
 * Idle limit (`limits.upstreamIdleSeconds`, {@link Options.idleTimeout}): an
 * upstream that sends nothing for that long — before its response headers,
 * before or in the middle of its body, or between two stream chunks — fails
 * the call with an {@link UpstreamConnectionError} (reason `idle: …`), and the
 * request is aborted. Only time spent waiting on the upstream counts: a stream
 * that is not pulled because its consumer is slow is not idle. The timer reads
 * Effect's `Clock` (a `TestClock` drives it in tests).
 *
 * Failures are typed: {@link UpstreamHttpError} (the upstream answered 4xx or
 * 5xx; its status and body), {@link UpstreamConnectionError} (refused, reset,
 * idle too long, or the body broke while being read) and
 * {@link UpstreamProtocolError} (not JSON, not SSE, or a stream that ended
 * without `[DONE]`).
 *
 * @since 0.1.0
 */
import { Context, Duration, Effect, Exit, Layer, Schema, Scope, Stream } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import type { HttpClientResponse } from "effect/http/HttpClientResponse"
import type { Channel } from "./Config.js"
import * as IdleWatch from "./internal/idleWatch.js"
import { SseSplitter } from "./internal/sse.js"

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

/**
 * The upstream answered with an HTTP error status (4xx or 5xx). `body` is the
 * response body as text (OpenAI's `{"error":{…}}` JSON for OpenAI-compatible
 * upstreams), so a 4xx can be returned to the client as is.
 *
 * @since 0.1.0
 * @category errors
 */
export class UpstreamHttpError extends Schema.TaggedError<UpstreamHttpError>()("UpstreamHttpError", {
  channel: Schema.String,
  status: Schema.Number,
  body: Schema.String
}) {
  /** Whether the relay may retry on another channel (a 5xx). */
  get retryable(): boolean {
    return this.status >= 500
  }
  override get message(): string {
    return `channel ${this.channel} answered ${this.status}: ${this.body.slice(0, 200)}`
  }
}

/**
 * The upstream could not be reached or the connection failed: refused, reset,
 * timed out waiting for the response, or broken while the body was read.
 *
 * @since 0.1.0
 * @category errors
 */
export class UpstreamConnectionError extends Schema.TaggedError<UpstreamConnectionError>()(
  "UpstreamConnectionError",
  {
    channel: Schema.String,
    reason: Schema.String
  }
) {
  override get message(): string {
    return `channel ${this.channel}: connection failed (${this.reason})`
  }
}

/**
 * The upstream answered something that is not its protocol: a body that is
 * not JSON, an SSE `data:` payload that is not JSON, or a stream that ended
 * without `data: [DONE]`.
 *
 * @since 0.1.0
 * @category errors
 */
export class UpstreamProtocolError extends Schema.TaggedError<UpstreamProtocolError>()("UpstreamProtocolError", {
  channel: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `channel ${this.channel}: protocol error (${this.reason})`
  }
}

/**
 * Any failure of an upstream call.
 *
 * @since 0.1.0
 * @category errors
 */
export type UpstreamError = UpstreamHttpError | UpstreamConnectionError | UpstreamProtocolError

/**
 * The failures of a running stream (after its 2xx response arrived).
 *
 * @since 0.1.0
 * @category errors
 */
export type StreamError = UpstreamConnectionError | UpstreamProtocolError

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

/**
 * Token usage as reported by the upstream (OpenAI's `usage` object).
 * `total_tokens` defaults to the sum when the upstream omits it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Usage {
  readonly prompt_tokens: number
  readonly completion_tokens: number
  readonly total_tokens: number
}

const count = (u: unknown): number | undefined =>
  typeof u === "number" && Number.isSafeInteger(u) && u >= 0 ? u : undefined

/**
 * Reads an OpenAI `usage` object: `undefined` unless `prompt_tokens` is a
 * non-negative safe integer (`completion_tokens` defaults to 0, as in an
 * embeddings response).
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseUsage = (u: unknown): Usage | undefined => {
  if (u === null || typeof u !== "object") return undefined
  const record = u as Record<string, unknown>
  const prompt = count(record.prompt_tokens)
  if (prompt === undefined) return undefined
  const completion = count(record.completion_tokens) ?? 0
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: count(record.total_tokens) ?? prompt + completion
  }
}

/**
 * A JSON request body (the client's body, passed on with the relay's changes).
 *
 * @since 0.1.0
 * @category models
 */
export type Body = Readonly<Record<string, unknown>>

/**
 * A parsed non-stream response.
 *
 * @since 0.1.0
 * @category models
 */
export interface JsonResponse {
  /** The channel that answered. */
  readonly channel: string
  readonly status: number
  /** The parsed JSON body. */
  readonly body: unknown
  /** The body's `usage`, when present and well-formed. */
  readonly usage: Usage | undefined
}

/**
 * One server-sent event of an upstream stream.
 *
 * @since 0.1.0
 * @category models
 */
export interface StreamEvent {
  /** The event's exact bytes as the upstream sent them (terminating blank line included). */
  readonly bytes: Uint8Array
  /** The joined `data:` lines; `undefined` for a comment or keep-alive. */
  readonly data: string | undefined
  /** `data: [DONE]`. */
  readonly done: boolean
  /**
   * A chunk carrying only usage (empty `choices`), the one added by
   * `include_usage`: forward it to the client only if the client asked for usage.
   */
  readonly usageOnly: boolean
}

/**
 * How a stream stands: `streaming` until its end, then `done` (it sent
 * `data: [DONE]`) or `broken` (the connection failed, a payload was not JSON,
 * or the body ended without `[DONE]`).
 *
 * @since 0.1.0
 * @category models
 */
export type StreamStatus = "streaming" | "done" | "broken"

/**
 * A snapshot of a stream's progress.
 *
 * @since 0.1.0
 * @category models
 */
export interface StreamState {
  readonly status: StreamStatus
  /** The usage of the final usage chunk (or of any chunk carrying one); `undefined` until it arrives. */
  readonly usage: Usage | undefined
  /**
   * The completion text of the events emitted so far (every choice's
   * `delta.content`, `delta.reasoning_content`/`delta.reasoning` and tool-call
   * arguments), for counting completion tokens when the usage never arrives.
   */
  readonly text: string
  /** Events emitted so far. */
  readonly events: number
  /** Why the stream broke, when it did. */
  readonly error: StreamError | undefined
}

/**
 * An upstream stream whose 2xx response has arrived. `events` must be run
 * once (it reads the upstream body; interrupting it aborts the request);
 * `state` can be read at any time, also after the stream broke.
 *
 * @since 0.1.0
 * @category models
 */
export interface ChatStream {
  /** The channel that answered. */
  readonly channel: string
  readonly status: number
  /** The events, in order, each emitted as soon as its bytes arrived. Fails when the stream breaks. */
  readonly events: Stream.Stream<StreamEvent, StreamError>
  /** The current {@link StreamState}. */
  readonly state: Effect.Effect<StreamState>
  /**
   * Releases the upstream connection and its idle timer when `events` will
   * never be run (idempotent; running `events` releases them when it ends).
   */
  readonly release: Effect.Effect<void>
}

/**
 * Options of `chat`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ChatOptions<S extends boolean = boolean> {
  readonly stream: S
}

/**
 * The channel client service.
 *
 * @since 0.1.0
 * @category services
 */
export interface Service {
  readonly chat: {
    (channel: Channel, body: Body, options: ChatOptions<false>): Effect.Effect<JsonResponse, UpstreamError>
    (channel: Channel, body: Body, options: ChatOptions<true>): Effect.Effect<ChatStream, UpstreamError>
  }
  readonly embeddings: (channel: Channel, body: Body) => Effect.Effect<JsonResponse, UpstreamError>
}

/**
 * The channel client.
 *
 * @since 0.1.0
 * @category services
 */
export class Upstream extends Context.Service<Upstream, Service>()("@relay-billing/relay/Upstream") {}

/**
 * Options of {@link make}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * How long the upstream may send nothing (before its headers, before or in
   * its body, between stream chunks); default 60 seconds
   * (`limits.upstreamIdleSeconds`). An idle upstream is an {@link UpstreamConnectionError}.
   */
  readonly idleTimeout?: Duration.Input | undefined
}

// ---------------------------------------------------------------------------
// request bodies
// ---------------------------------------------------------------------------

/**
 * The body sent upstream for a chat request: `stream` set as asked; for a
 * stream, `stream_options.include_usage` forced to `true` (other
 * `stream_options` kept); for a non-stream request, `stream_options` removed
 * (OpenAI refuses it without `stream`).
 *
 * @since 0.1.0
 * @category request
 */
export const chatBody = (body: Body, stream: boolean): Body => {
  if (!stream) {
    const { stream_options: _ignored, ...rest } = body
    return { ...rest, stream: false }
  }
  const options = body.stream_options
  const kept = options !== null && typeof options === "object" && !Array.isArray(options) ? options : {}
  return { ...body, stream: true, stream_options: { ...kept, include_usage: true } }
}

// ---------------------------------------------------------------------------
// stream parsing
// ---------------------------------------------------------------------------

const appendDelta = (text: Array<string>, chunk: Record<string, unknown>): void => {
  const choices = chunk.choices
  if (!Array.isArray(choices)) return
  for (const choice of choices) {
    const delta = (choice as Record<string, unknown> | null)?.delta as Record<string, unknown> | undefined
    if (delta === undefined || delta === null || typeof delta !== "object") continue
    for (const key of ["reasoning_content", "reasoning", "content"]) {
      const value = delta[key]
      if (typeof value === "string") text.push(value)
    }
    const calls = delta.tool_calls
    if (Array.isArray(calls)) {
      for (const call of calls) {
        const args = (call as { function?: { arguments?: unknown } } | null)?.function?.arguments
        if (typeof args === "string") text.push(args)
      }
    }
  }
}

/**
 * Turns a raw SSE body into a {@link ChatStream}: splits events, parses their
 * JSON, tracks usage, text and the end. Used for HTTP bodies and the demo
 * responder alike.
 *
 * @since 0.1.0
 * @category stream
 */
export const fromSseBody = (
  channel: string,
  status: number,
  body: Stream.Stream<Uint8Array, StreamError>,
  release: Effect.Effect<void> = Effect.void
): ChatStream => {
  const text: Array<string> = []
  let usage: Usage | undefined
  let current: StreamStatus = "streaming"
  let events = 0
  let error: StreamError | undefined
  const splitter = new SseSplitter()

  const broke = (e: StreamError): StreamError => {
    if (current === "streaming") {
      current = "broken"
      error = e
    }
    return e
  }

  const toEvent = (raw: { bytes: Uint8Array; data: string | undefined }): Effect.Effect<StreamEvent, StreamError> => {
    const data = raw.data
    if (data === undefined) return Effect.succeed({ bytes: raw.bytes, data, done: false, usageOnly: false })
    if (data.trim() === "[DONE]") {
      if (current === "streaming") current = "done"
      return Effect.succeed({ bytes: raw.bytes, data, done: true, usageOnly: false })
    }
    let json: unknown
    try {
      json = JSON.parse(data)
    } catch {
      return Effect.fail(
        broke(new UpstreamProtocolError({ channel, reason: `an SSE data payload is not JSON: ${data.slice(0, 100)}` }))
      )
    }
    let usageOnly = false
    if (json !== null && typeof json === "object" && !Array.isArray(json)) {
      const chunk = json as Record<string, unknown>
      if (chunk.error !== undefined && chunk.choices === undefined) {
        return Effect.fail(
          broke(new UpstreamProtocolError({ channel, reason: `the stream sent an error: ${data.slice(0, 200)}` }))
        )
      }
      appendDelta(text, chunk)
      const parsed = parseUsage(chunk.usage)
      if (parsed !== undefined) {
        usage = parsed
        usageOnly = Array.isArray(chunk.choices) && chunk.choices.length === 0
      }
    }
    return Effect.succeed({ bytes: raw.bytes, data, done: false, usageOnly })
  }

  // counted as each event is emitted (in the same step as its parse: no stage per event for it)
  const counted = (raw: { bytes: Uint8Array; data: string | undefined }): Effect.Effect<StreamEvent, StreamError> =>
    Effect.map(toEvent(raw), (event) => {
      events++
      return event
    })

  const emit = (raws: ReadonlyArray<{ bytes: Uint8Array; data: string | undefined }>) =>
    Stream.fromIterable(raws).pipe(Stream.mapEffect(counted))

  const end = Stream.suspend(() => {
    const rest = emit(splitter.end())
    return Stream.concat(
      rest,
      Stream.suspend(() =>
        current === "streaming"
          ? Stream.fail(broke(new UpstreamProtocolError({ channel, reason: "the stream ended before data: [DONE]" })))
          : Stream.empty
      )
    )
  })

  const eventStream: Stream.Stream<StreamEvent, StreamError> = body.pipe(
    Stream.mapError(broke),
    Stream.flatMap((chunk) => emit(splitter.push(chunk))),
    Stream.concat(end)
  )

  return {
    channel,
    status,
    events: eventStream,
    state: Effect.sync(() => ({ status: current, usage, text: text.join(""), events, error })),
    release
  }
}

// ---------------------------------------------------------------------------
// constructors
// ---------------------------------------------------------------------------

const url = (channel: Channel, path: string): string => `${channel.baseUrl.replace(/\/+$/, "")}${path}`

const describe = (cause: unknown): string => {
  const parts: Array<string> = []
  let current: unknown = cause
  for (let depth = 0; current !== undefined && current !== null && depth < 5; depth++) {
    if (typeof current === "object") {
      const c = current as { code?: unknown; message?: unknown; cause?: unknown; reason?: unknown; _tag?: unknown }
      if (typeof c.code === "string") parts.push(c.code)
      else if (typeof c.message === "string" && c.message !== "") parts.push(c.message)
      current = c.reason !== undefined && c._tag === "HttpClientError" ? c.reason : c.cause
    } else {
      parts.push(String(current))
      break
    }
  }
  return parts.length === 0 ? "unknown" : [...new Set(parts)].join(": ")
}

/**
 * Builds the channel client on the ambient `HttpClient`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Service, never, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    // Each request's lifetime is a scope: closing it aborts the request (and its body).
    const client = HttpClient.withScope(yield* HttpClient.HttpClient)
    const idle = Duration.fromInputUnsafe(options.idleTimeout ?? Duration.seconds(60))

    /** A watch for one attempt: its idle error names the channel. */
    const watch = (channel: Channel) =>
      IdleWatch.make(
        idle,
        () =>
          new UpstreamConnectionError({
            channel: channel.name,
            reason: `idle: the upstream sent nothing for ${Duration.format(idle)}`
          })
      )

    const connectionError = (channel: Channel) => (cause: unknown) =>
      new UpstreamConnectionError({ channel: channel.name, reason: describe(cause) })

    /** The response (2xx or 3xx) once its headers arrived; a 4xx/5xx fails with its body. */
    const send = (
      channel: Channel,
      path: string,
      body: Body,
      accept: string,
      timer: IdleWatch.IdleWatch<UpstreamConnectionError>
    ): Effect.Effect<HttpClientResponse, UpstreamHttpError | UpstreamConnectionError, Scope.Scope> => {
      let request = HttpClientRequest.post(url(channel, path)).pipe(
        HttpClientRequest.setHeader("accept", accept),
        HttpClientRequest.bodyText(JSON.stringify(body), "application/json")
      )
      if (channel.apiKey !== "") request = HttpClientRequest.bearerToken(request, channel.apiKey)
      return timer.waiting(client.execute(request).pipe(Effect.mapError(connectionError(channel)))).pipe(
        Effect.flatMap((response) =>
          response.status >= 400
            ? readText(channel, response, timer).pipe(
              Effect.orElseSucceed(() => ""),
              Effect.flatMap((text) =>
                Effect.fail(new UpstreamHttpError({ channel: channel.name, status: response.status, body: text }))
              )
            )
            : Effect.succeed(response)
        )
      )
    }

    /** The whole body as text, each chunk timed by the idle watch. */
    const readText = (
      channel: Channel,
      response: HttpClientResponse,
      timer: IdleWatch.IdleWatch<UpstreamConnectionError>
    ): Effect.Effect<string, UpstreamConnectionError> =>
      timer.stream(response.stream.pipe(Stream.mapError(connectionError(channel)))).pipe(
        Stream.decodeText(),
        Stream.mkString
      )

    const readJson = (
      channel: Channel,
      response: HttpClientResponse,
      timer: IdleWatch.IdleWatch<UpstreamConnectionError>
    ): Effect.Effect<JsonResponse, UpstreamError> =>
      readText(channel, response, timer).pipe(
        Effect.flatMap((text) =>
          Effect.try({
            try: () => JSON.parse(text) as unknown,
            catch: () =>
              new UpstreamProtocolError({
                channel: channel.name,
                reason: `status ${response.status}, the body is not JSON: ${text.slice(0, 100)}`
              })
          })
        ),
        Effect.flatMap((json) =>
          response.status >= 200 && response.status < 300
            ? Effect.succeed({
              channel: channel.name,
              status: response.status,
              body: json,
              usage: parseUsage((json as { usage?: unknown } | null)?.usage)
            })
            : Effect.fail(
              new UpstreamProtocolError({ channel: channel.name, reason: `unexpected status ${response.status}` })
            )
        )
      )

    /** A JSON request: headers and body under one idle watch, stopped at the end. */
    const postJson = (channel: Channel, path: string, body: Body): Effect.Effect<JsonResponse, UpstreamError> =>
      Effect.acquireUseRelease(
        watch(channel),
        (timer) =>
          send(channel, path, body, "application/json", timer).pipe(
            Effect.flatMap((response) => readJson(channel, response, timer)),
            Effect.scoped
          ),
        (timer) => timer.stop
      )

    const chatStream = (channel: Channel, body: Body): Effect.Effect<ChatStream, UpstreamError> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const timer = yield* watch(channel)
          const scope = yield* Scope.make()
          // Idempotent: aborts the request (if still open) and stops the watch.
          const release = Effect.andThen(Scope.close(scope, Exit.void), timer.stop)
          const response = yield* restore(
            send(channel, "/chat/completions", chatBody(body, true), "text/event-stream", timer).pipe(
              Scope.provide(scope)
            )
          ).pipe(Effect.onError(() => release))
          if (response.status < 200 || response.status >= 300) {
            yield* release
            return yield* new UpstreamProtocolError({
              channel: channel.name,
              reason: `unexpected status ${response.status}`
            })
          }
          const contentType = response.headers["content-type"] ?? ""
          if (contentType.includes("application/json")) {
            // an upstream that ignored `stream: true`
            yield* release
            return yield* new UpstreamProtocolError({
              channel: channel.name,
              reason: "asked for a stream, got a JSON body"
            })
          }
          // Until `events` runs, the body is unread and the watch is not waiting.
          const bytes = timer.stream(response.stream.pipe(Stream.mapError(connectionError(channel)))).pipe(
            Stream.ensuring(release)
          )
          return fromSseBody(channel.name, response.status, bytes, release)
        })
      )

    const chat = ((channel: Channel, body: Body, options: ChatOptions) =>
      options.stream
        ? chatStream(channel, body)
        : postJson(channel, "/chat/completions", chatBody(body, false))) as Service["chat"]

    const embeddings = (channel: Channel, body: Body): Effect.Effect<JsonResponse, UpstreamError> =>
      postJson(channel, "/embeddings", body)

    return { chat, embeddings }
  })

/**
 * The channel client on the ambient `HttpClient`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Upstream, never, HttpClient.HttpClient> =>
  Layer.effect(Upstream, make(options))

/**
 * The channel client on effect's fetch-based `HttpClient` (Node's `fetch`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFetch = (options: Options = {}): Layer.Layer<Upstream> =>
  layer(options).pipe(Layer.provide(FetchHttpClient.layer))
