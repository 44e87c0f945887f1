/**
 * The built-in demo channel: a deterministic local responder for a channel
 * whose base URL uses the `demo:` scheme (`Config.DEMO_BASE_URL`). It
 * answers in OpenAI's shapes, without any network, so a new relay works
 * offline.
 *
 * - chat: the reply is `You said: <the last user message's text>` (or
 *   {@link EMPTY_REPLY} when there is no user text); usage is counted with the
 *   relay's tokenizer (`prompt_tokens` = the chat estimate of the messages,
 *   `completion_tokens` = the tokens of the reply).
 * - stream: a role chunk, one chunk per word of the reply, a chunk with
 *   `finish_reason: "stop"`, then — when the request has
 *   `stream_options.include_usage` — a chunk with empty `choices` and the
 *   usage, then `data: [DONE]`.
 * - embeddings: one 8-dimension unit vector per input, derived from a hash of
 *   the input; `prompt_tokens` counted with the tokenizer.
 *
 * The same request always gets the same bytes (`created` is fixed, ids are
 * hashes of the request).
 *
 * @since 0.1.0
 */
import { Effect, Schema, Stream } from "effect"
import * as Tokenizer from "./Tokenizer.js"

/**
 * The demo refused the request: `status` and an OpenAI error body.
 *
 * @since 0.1.0
 * @category errors
 */
export class DemoError extends Schema.TaggedError<DemoError>()("DemoError", {
  status: Schema.Number,
  body: Schema.Struct({
    error: Schema.Struct({ message: Schema.String, type: Schema.String, code: Schema.String })
  })
}) {
  override get message(): string {
    return this.body.error.message
  }
}

/**
 * The reply when the request has no user text.
 *
 * @since 0.1.0
 * @category constants
 */
export const EMPTY_REPLY = "Hello from the relay's demo channel."

/**
 * The `created` timestamp of every demo response (fixed, for determinism).
 *
 * @since 0.1.0
 * @category constants
 */
export const CREATED = 1_700_000_000

/** Dimensions of a demo embedding. @since 0.1.0 @category constants */
export const EMBEDDING_DIMENSIONS = 8

const invalid = (message: string) =>
  new DemoError({ status: 400, body: { error: { message, type: "invalid_request_error", code: "invalid_request" } } })

const decodeMessages = Schema.decodeUnknownOption(Schema.Array(Tokenizer.ChatMessage))
const decodeInput = Schema.decodeUnknownOption(Tokenizer.EmbeddingsInput)

/** FNV-1a, 32 bits. */
const fnv = (text: string): number => {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash >>> 0
}

const hex = (n: number) => n.toString(16).padStart(8, "0")

const textOf = (content: Tokenizer.ChatMessage["content"]): string => {
  if (content === undefined || content === null) return ""
  if (typeof content === "string") return content
  return content.flatMap((part) => (part.type === "text" && part.text !== undefined ? [part.text] : [])).join(" ")
}

interface Prepared {
  readonly id: string
  readonly model: string
  readonly reply: string
  readonly usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number }
}

const prepare = (body: Readonly<Record<string, unknown>>): Effect.Effect<Prepared, DemoError> =>
  Effect.gen(function*() {
    const decoded = decodeMessages(body.messages)
    if (decoded._tag === "None") return yield* invalid("messages: expected an array of chat messages")
    const messages = decoded.value
    if (messages.length === 0) return yield* invalid("messages: expected at least one message")
    const model = typeof body.model === "string" ? body.model : "demo"
    const lastUser = [...messages].reverse().find((m) => m.role === "user")
    const said = lastUser === undefined ? "" : textOf(lastUser.content).trim()
    const reply = said === "" ? EMPTY_REPLY : `You said: ${said}`
    const prompt = Tokenizer.countMessages(messages)
    const completion = Tokenizer.countText(reply)
    return {
      id: `chatcmpl-demo-${hex(fnv(JSON.stringify([model, messages])))}`,
      model,
      reply,
      usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
    }
  })

/**
 * A non-stream chat completion.
 *
 * @since 0.1.0
 * @category responders
 */
export const chat = (body: Readonly<Record<string, unknown>>) =>
  prepare(body).pipe(
    Effect.map((p) => ({
      id: p.id,
      object: "chat.completion" as const,
      created: CREATED,
      model: p.model,
      choices: [{ index: 0, message: { role: "assistant", content: p.reply }, logprobs: null, finish_reason: "stop" }],
      usage: p.usage
    }))
  )

/**
 * The reply split into stream deltas: each word with the whitespace before it.
 *
 * @since 0.1.0
 * @category responders
 */
export const deltas = (reply: string): Array<string> => reply.match(/\s*\S+/g) ?? [reply]

const encoder = new TextEncoder()

/**
 * The SSE events of a stream, as strings (`data: …\n\n`).
 *
 * @since 0.1.0
 * @category responders
 */
export const chatEvents = (body: Readonly<Record<string, unknown>>): Effect.Effect<Array<string>, DemoError> =>
  prepare(body).pipe(
    Effect.map((p) => {
      const options = body.stream_options as { include_usage?: unknown } | null | undefined
      const includeUsage = options !== null && typeof options === "object" && options.include_usage === true
      const base = { id: p.id, object: "chat.completion.chunk", created: CREATED, model: p.model }
      const extra = includeUsage ? { usage: null } : {}
      const chunk = (delta: Record<string, unknown>, finish: string | null) => ({
        ...base,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
        ...extra
      })
      const chunks: Array<unknown> = [
        chunk({ role: "assistant", content: "" }, null),
        ...deltas(p.reply).map((content) => chunk({ content }, null)),
        chunk({}, "stop")
      ]
      if (includeUsage) chunks.push({ ...base, choices: [], usage: p.usage })
      return [...chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`), "data: [DONE]\n\n"]
    })
  )

/**
 * A stream chat completion: the bytes of {@link chatEvents}, one chunk per event.
 *
 * @since 0.1.0
 * @category responders
 */
export const chatStream = (
  body: Readonly<Record<string, unknown>>
): Effect.Effect<Stream.Stream<Uint8Array>, DemoError> =>
  chatEvents(body).pipe(Effect.map((events) => Stream.fromIterable(events.map((e) => encoder.encode(e)))))

const vector = (seed: string): Array<number> => {
  const values: Array<number> = []
  let h = fnv(seed)
  for (let i = 0; i < EMBEDDING_DIMENSIONS; i++) {
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0
    values.push((h / 0xffffffff) * 2 - 1)
  }
  const norm = Math.sqrt(values.reduce((s, v) => s + v * v, 0)) || 1
  return values.map((v) => Math.round((v / norm) * 1e6) / 1e6)
}

/**
 * An embeddings response.
 *
 * @since 0.1.0
 * @category responders
 */
export const embeddings = (body: Readonly<Record<string, unknown>>) =>
  Effect.gen(function*() {
    const decoded = decodeInput(body.input)
    if (decoded._tag === "None") return yield* invalid("input: expected a string, an array of strings or token ids")
    const input = decoded.value
    const items: ReadonlyArray<unknown> = typeof input === "string"
      ? [input]
      : input.length > 0 && typeof input[0] === "number"
      ? [input]
      : input
    const prompt = Tokenizer.countEmbeddingsInput(input)
    return {
      object: "list" as const,
      data: items.map((item, index) => ({
        object: "embedding" as const,
        index,
        embedding: vector(JSON.stringify(item))
      })),
      model: typeof body.model === "string" ? body.model : "demo",
      usage: { prompt_tokens: prompt, total_tokens: prompt }
    }
  })
