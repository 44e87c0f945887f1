/**
 * The built-in demo channel as a layer of its own: it provides the
 * {@link Upstream.Upstream} channel client over another one, answering every
 * channel whose base URL uses the `demo:` scheme (`Config.DEMO_BASE_URL`)
 * in-process with the {@link DemoResponder} (no network), and passing every
 * other channel to the client underneath (the HTTP one of `Upstream.layer`).
 *
 * `Upstream.ts` therefore only speaks HTTP; a relay without a demo channel
 * need not include this layer.
 *
 * ```ts
 * const channels = DemoUpstream.layer.pipe(Layer.provide(Upstream.layerFetch()))
 * ```
 *
 * A demo refusal (a malformed body) is an `UpstreamHttpError` with the
 * responder's status and OpenAI error body, like an upstream's 4xx.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import type { Channel } from "./Config.js"
import * as DemoResponder from "./DemoResponder.js"
import * as Upstream from "./Upstream.js"

/**
 * Whether a channel is answered by the demo responder (its base URL uses the `demo:` scheme).
 *
 * @since 0.1.0
 * @category predicates
 */
export const isDemoChannel = (channel: Channel): boolean => channel.baseUrl.startsWith("demo:")

const refused = (channel: Channel) => (error: DemoResponder.DemoError) =>
  new Upstream.UpstreamHttpError({ channel: channel.name, status: error.status, body: JSON.stringify(error.body) })

const toJson = (channel: Channel) => (json: { readonly usage?: unknown }): Upstream.JsonResponse => ({
  channel: channel.name,
  status: 200,
  body: json,
  usage: Upstream.parseUsage(json.usage)
})

/**
 * The demo channel client alone: answers a demo channel; any other channel
 * is delegated to `other`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (other: Upstream.Service): Upstream.Service => {
  const chatJson = (
    channel: Channel,
    body: Upstream.Body
  ): Effect.Effect<Upstream.JsonResponse, Upstream.UpstreamError> =>
    DemoResponder.chat(Upstream.chatBody(body, false)).pipe(
      Effect.mapError(refused(channel)),
      Effect.map(toJson(channel))
    )

  const chatStream = (
    channel: Channel,
    body: Upstream.Body
  ): Effect.Effect<Upstream.ChatStream, Upstream.UpstreamError> =>
    DemoResponder.chatStream(Upstream.chatBody(body, true)).pipe(
      Effect.mapError(refused(channel)),
      Effect.map((bytes) => Upstream.fromSseBody(channel.name, 200, bytes))
    )

  const chat = ((channel: Channel, body: Upstream.Body, options: Upstream.ChatOptions) => {
    if (isDemoChannel(channel)) return options.stream ? chatStream(channel, body) : chatJson(channel, body)
    return options.stream ? other.chat(channel, body, { stream: true }) : other.chat(channel, body, { stream: false })
  }) as Upstream.Service["chat"]

  const embeddings = (
    channel: Channel,
    body: Upstream.Body
  ): Effect.Effect<Upstream.JsonResponse, Upstream.UpstreamError> =>
    isDemoChannel(channel)
      ? DemoResponder.embeddings(body).pipe(Effect.mapError(refused(channel)), Effect.map(toJson(channel)))
      : other.embeddings(channel, body)

  return { chat, embeddings }
}

/**
 * Provides {@link Upstream.Upstream} with the demo channel answered
 * in-process, over the channel client it is given (see the module docs).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Upstream.Upstream, never, Upstream.Upstream> = Layer.effect(
  Upstream.Upstream,
  Effect.gen(function*() {
    return make(yield* Upstream.Upstream)
  })
)
