/**
 * Prompt-token estimates and completion-token counts, with a real BPE tokenizer
 * (`gpt-tokenizer`, encoding `o200k_base`: the encoding of the GPT-4o, GPT-4.1,
 * o-series and GPT-5 families; its ranks ship inside the package, nothing is
 * downloaded at run time).
 *
 * Text is tokenized as plain text: a special-token string such as
 * `<|endoftext|>` typed by a user counts as the ordinary tokens of its
 * characters (it is never refused nor turned into a control token).
 *
 * Counting is linear in the input. The o200k split pattern leaves runs of
 * letters, punctuation and whitespace unbounded, and BPE merging is quadratic
 * in the length of one piece (`"x" × 40,000` was one piece: 4 s of blocked
 * event loop). Every repetition of the split pattern is bounded to
 * {@link MAX_RUN_LENGTH} code points (pieces of at most 2 × 128 + 4 code
 * points), so the work is at most ~1 KB of merging per character. On text whose
 * runs of one class of the pattern (letters and marks; other non-space
 * characters, marks included; whitespace) are at most {@link MAX_RUN_LENGTH}
 * long (ordinary prose, code, CJK, 80-column separator lines) the count is
 * exactly o200k's; a longer run is
 * counted in chunks of {@link MAX_RUN_LENGTH}: tested to be within one token
 * per chunk of the exact count (either side), and never more than the text's
 * UTF-8 byte length.
 *
 * Chat overhead follows OpenAI's published counting convention for chat models
 * (the "How to count tokens with tiktoken" cookbook, models after
 * gpt-3.5-turbo-0301): every message costs {@link TOKENS_PER_MESSAGE} (3)
 * tokens plus the tokens of its role and content, a `name` adds its tokens plus
 * {@link TOKENS_PER_NAME} (1), and every reply is primed with
 * {@link REPLY_PRIMING} (3) tokens (`<|start|>assistant<|message|>`).
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import o200kRanks from "gpt-tokenizer/bpeRanks/o200k_base"
import { BytePairEncodingCore } from "gpt-tokenizer/BytePairEncodingCore"
import { O200K_TOKEN_SPLIT_REGEX } from "gpt-tokenizer/encodingParams/constants"
import { createO200KSpecialTokenMap } from "gpt-tokenizer/encodingParams/o200k_base"
import { boundedSplitRegex } from "./internal/boundedSplit.js"

/**
 * The BPE encoding used for every count.
 *
 * @since 0.1.0
 * @category constants
 */
export const ENCODING = "o200k_base"

/** Tokens added per chat message. @since 0.1.0 @category constants */
export const TOKENS_PER_MESSAGE = 3
/** Tokens added per message `name`. @since 0.1.0 @category constants */
export const TOKENS_PER_NAME = 1
/** Tokens that prime the assistant's reply, once per request. @since 0.1.0 @category constants */
export const REPLY_PRIMING = 3

/**
 * The longest run (in code points) of one repetition of the split pattern
 * that is counted as one piece; longer runs are counted in chunks of this size.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_RUN_LENGTH = 128

/**
 * o200k_base over the bounded split pattern. No special tokens are allowed, so
 * `<|endoftext|>` counts as the ordinary tokens of its characters.
 */
const o200k = new BytePairEncodingCore({
  bytePairRankDecoder: o200kRanks,
  specialTokensEncoder: createO200KSpecialTokenMap(),
  tokenSplitRegex: boundedSplitRegex(O200K_TOKEN_SPLIT_REGEX, MAX_RUN_LENGTH)
})

/**
 * The number of tokens of `text` (e.g. completion text streamed to a client).
 *
 * @since 0.1.0
 * @category counting
 */
export const countText = (text: string): number => (text.length === 0 ? 0 : o200k.countNative(text))

/**
 * A content part of a chat message. Only `text` parts are counted; other parts
 * (images, audio, files) are accepted and add no tokens to the estimate.
 *
 * @since 0.1.0
 * @category schemas
 */
export const ContentPart = Schema.Struct({
  type: Schema.String,
  text: Schema.optionalKey(Schema.String)
})
/** @since 0.1.0 @category models */
export type ContentPart = typeof ContentPart.Type

/**
 * The counted fields of an OpenAI chat message (other fields are ignored).
 *
 * @since 0.1.0
 * @category schemas
 */
export const ChatMessage = Schema.Struct({
  role: Schema.String,
  content: Schema.optionalKey(Schema.NullOr(Schema.Union([Schema.String, Schema.Array(ContentPart)]))),
  name: Schema.optionalKey(Schema.String)
})
/** @since 0.1.0 @category models */
export type ChatMessage = typeof ChatMessage.Type

const contentTokens = (content: ChatMessage["content"]): number => {
  if (content === undefined || content === null) return 0
  if (typeof content === "string") return countText(content)
  let total = 0
  for (const part of content) {
    if (part.type === "text" && part.text !== undefined) total += countText(part.text)
  }
  return total
}

/**
 * Prompt-token estimate of a chat request:
 * `Σ (3 + tokens(role) + tokens(content) [+ tokens(name) + 1]) + 3`.
 *
 * @since 0.1.0
 * @category counting
 */
export const countMessages = (messages: ReadonlyArray<ChatMessage>): number => {
  let total = REPLY_PRIMING
  for (const message of messages) {
    total += TOKENS_PER_MESSAGE + countText(message.role) + contentTokens(message.content)
    if (message.name !== undefined) total += countText(message.name) + TOKENS_PER_NAME
  }
  return total
}

/**
 * An upper bound of {@link countMessages} computed without tokenizing: every
 * token encodes at least one UTF-8 byte and every UTF-16 code unit is at most
 * three UTF-8 bytes, so `countText(s) ≤ 3 × s.length`. The relay uses it to
 * skip the tokenizer when the bound cannot change the reservation (a prompt
 * whose bound is under `minPreConsumeTokens` reserves `minPreConsumeTokens`
 * whatever its exact count).
 *
 * @since 0.5.0
 * @category counting
 */
export const messagesUpperBound = (messages: ReadonlyArray<ChatMessage>): number => {
  let total = REPLY_PRIMING
  for (const message of messages) {
    total += TOKENS_PER_MESSAGE + 3 * message.role.length
    const content = message.content
    if (typeof content === "string") total += 3 * content.length
    else if (content !== undefined && content !== null) {
      for (const part of content) {
        if (part.type === "text" && part.text !== undefined) total += 3 * part.text.length
      }
    }
    if (message.name !== undefined) total += 3 * message.name.length + TOKENS_PER_NAME
  }
  return total
}

/**
 * The `input` of an embeddings request: a string, an array of strings, or
 * pre-tokenized input (an array of token ids, or an array of those).
 *
 * @since 0.1.0
 * @category schemas
 */
export const EmbeddingsInput = Schema.Union([
  Schema.String,
  Schema.Array(Schema.String),
  Schema.Array(Schema.Number),
  Schema.Array(Schema.Array(Schema.Number))
])
/** @since 0.1.0 @category models */
export type EmbeddingsInput = typeof EmbeddingsInput.Type

/**
 * Prompt-token estimate of an embeddings request: the tokens of each input
 * string (no per-input overhead); pre-tokenized input counts its token ids.
 *
 * @since 0.1.0
 * @category counting
 */
export const countEmbeddingsInput = (input: EmbeddingsInput): number => {
  if (typeof input === "string") return countText(input)
  let total = 0
  for (const item of input) {
    if (typeof item === "string") total += countText(item)
    else if (typeof item === "number") total += 1
    else total += item.length
  }
  return total
}
