/**
 * The relay's pricing: exactly the formulas of `relay-api.md` ("Pricing").
 *
 * All amounts are integers in quota units. Ratios are read as the exact
 * decimals written in the config (`0.075` is 75/1000, not the nearest binary
 * float) and the arithmetic is exact, so `ceil` and half-way rounding never
 * land on the wrong integer. `round` is half away from zero. Token counts must
 * be non-negative safe integers (a violation is a defect); results saturate at
 * `Number.MAX_SAFE_INTEGER`, which no balance can reach, so they always stay
 * safe integers.
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import type { FixedPrice, ModelPrice, RelayConfig, TokenPrice } from "./Config.js"
import { isFixedPrice } from "./Config.js"
import * as X from "./internal/exact.js"

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

/**
 * The model is served by a channel but has no pricing entry: the request is
 * refused (400 `model_price_error`), never billed at 0.
 *
 * @since 0.1.0
 * @category errors
 */
export class ModelPriceError extends Schema.TaggedError<ModelPriceError>()("ModelPriceError", {
  model: Schema.String
}) {
  /** Stable code. */
  get code(): "model_price_error" {
    return "model_price_error"
  }
  /** HTTP status. */
  get status(): 400 {
    return 400
  }
  override get message(): string {
    return `model ${JSON.stringify(this.model)} has no price configured`
  }
}

/**
 * No channel serves the model and it has no pricing entry (400 `model_not_found`).
 *
 * @since 0.1.0
 * @category errors
 */
export class ModelNotFound extends Schema.TaggedError<ModelNotFound>()("ModelNotFound", {
  model: Schema.String
}) {
  /** Stable code. */
  get code(): "model_not_found" {
    return "model_not_found"
  }
  /** HTTP status. */
  get status(): 400 {
    return 400
  }
  override get message(): string {
    return `model ${JSON.stringify(this.model)} does not exist`
  }
}

/**
 * The pricing entry of `model`. A model served by some channel but missing from
 * `models` fails with `ModelPriceError`; a model known nowhere fails with
 * `ModelNotFound`.
 *
 * @since 0.1.0
 * @category lookup
 */
export const priceOf = (
  config: Pick<RelayConfig, "models" | "channels">,
  model: string
): Effect.Effect<ModelPrice, ModelPriceError | ModelNotFound> => {
  if (Object.hasOwn(config.models, model)) return Effect.succeed(config.models[model]!)
  return config.channels.some((channel) => channel.models.includes(model))
    ? Effect.fail(new ModelPriceError({ model }))
    : Effect.fail(new ModelNotFound({ model }))
}

// ---------------------------------------------------------------------------
// formulas
// ---------------------------------------------------------------------------

const ratio = (price: TokenPrice, groupRatio: number): X.Fraction =>
  X.mul(X.fromNumber(price.modelRatio), X.fromNumber(groupRatio))

/** prompt + completion × completionRatio, exactly. */
const weightedTokens = (price: TokenPrice, prompt: number, completion: number): X.Fraction =>
  X.add(X.fromInt(prompt), X.mul(X.fromInt(completion), X.fromNumber(price.completionRatio)))

/**
 * Pre-consumed (reserved) quota of a token-priced request:
 * `ceil((max(promptEstimate, minPreConsumeTokens) + maxTokens × completionRatio) × modelRatio × groupRatio)`.
 * `maxTokens` is the request's `max_tokens`/`max_completion_tokens`, else 0.
 *
 * @since 0.1.0
 * @category token models
 */
export const estimate = (options: {
  readonly price: TokenPrice
  readonly groupRatio: number
  readonly promptEstimate: number
  readonly maxTokens: number
  readonly minPreConsumeTokens: number
}): number => {
  const prompt = Math.max(options.promptEstimate, options.minPreConsumeTokens)
  const tokens = weightedTokens(options.price, prompt, options.maxTokens)
  return X.toSafe(X.ceil(X.mul(tokens, ratio(options.price, options.groupRatio))))
}

/**
 * Actual quota of a token-priced request from the upstream's usage:
 * `round((prompt + completion × completionRatio) × modelRatio × groupRatio)`,
 * at least 1 when `prompt + completion > 0` and `modelRatio × groupRatio > 0`,
 * 0 when the upstream reports no tokens.
 *
 * @since 0.1.0
 * @category token models
 */
export const actual = (options: {
  readonly price: TokenPrice
  readonly groupRatio: number
  readonly promptTokens: number
  readonly completionTokens: number
}): number => {
  const r = ratio(options.price, options.groupRatio)
  const amount = X.round(X.mul(weightedTokens(options.price, options.promptTokens, options.completionTokens), r))
  const anyTokens = options.promptTokens + options.completionTokens > 0
  return X.toSafe(amount === 0n && anyTokens && !X.isZero(r) ? 1n : amount)
}

/**
 * Quota of a fixed-price request, both reserved and charged:
 * `round(price × quotaPerUnit × groupRatio)`.
 *
 * @since 0.1.0
 * @category priced models
 */
export const fixed = (options: {
  readonly price: FixedPrice
  readonly quotaPerUnit: number
  readonly groupRatio: number
}): number =>
  X.toSafe(
    X.round(
      X.mul(
        X.mul(X.fromNumber(options.price.price), X.fromNumber(options.quotaPerUnit)),
        X.fromNumber(options.groupRatio)
      )
    )
  )

/**
 * Actual quota of an embeddings request: `round(prompt × modelRatio × groupRatio)`,
 * at least 1 when `prompt > 0` and the ratio is > 0. (`completionRatio` is unused.)
 *
 * @since 0.1.0
 * @category token models
 */
export const embeddings = (options: {
  readonly price: TokenPrice
  readonly groupRatio: number
  readonly promptTokens: number
}): number => actual({ ...options, completionTokens: 0 })

/**
 * The prompt part alone: `round(promptTokens × modelRatio × groupRatio)`,
 * never more than `reserved`. Used by the `charge-prompt` disconnect policy
 * with the upstream's prompt count when known, else the estimate.
 *
 * @since 0.1.0
 * @category token models
 */
export const promptPart = (options: {
  readonly price: TokenPrice
  readonly groupRatio: number
  readonly promptTokens: number
  readonly reserved: number
}): number => {
  const amount = X.round(X.mul(X.fromInt(options.promptTokens), ratio(options.price, options.groupRatio)))
  return Math.min(X.toSafe(amount), options.reserved)
}

/**
 * The prompt part plus the completion tokens already streamed to the client,
 * priced as {@link actual} and capped at `reserved`.
 *
 * @since 0.1.0
 * @category token models
 */
export const streamedPart = (options: {
  readonly price: TokenPrice
  readonly groupRatio: number
  readonly promptTokens: number
  readonly streamedCompletionTokens: number
  readonly reserved: number
}): number =>
  Math.min(
    actual({
      price: options.price,
      groupRatio: options.groupRatio,
      promptTokens: options.promptTokens,
      completionTokens: options.streamedCompletionTokens
    }),
    options.reserved
  )

// ---------------------------------------------------------------------------
// settlements of interrupted requests
// ---------------------------------------------------------------------------

/**
 * How to resolve a hold: settle it with `amount` (possibly 0), or refund it.
 *
 * @since 0.1.0
 * @category models
 */
export type Resolution =
  | { readonly _tag: "Charge"; readonly amount: number }
  | { readonly _tag: "Refund" }

/** @since 0.1.0 @category constructors */
export const charge = (amount: number): Resolution => ({ _tag: "Charge", amount })

/** @since 0.1.0 @category constructors */
export const refund: Resolution = { _tag: "Refund" }

/**
 * What a client disconnect costs under the `onClientDisconnect` policy:
 *
 * - `refund`: nothing (the hold is refunded);
 * - `charge-prompt`: {@link promptPart} with the upstream's prompt count when
 *   known (`upstreamPromptTokens`), else `promptEstimate`;
 * - `charge-streamed`: {@link streamedPart} with that prompt count and the
 *   completion tokens counted from the text already streamed.
 *
 * A fixed-price model has no prompt part; under both charging policies it
 * costs its fixed amount, capped at the reservation (which equals it).
 *
 * @since 0.1.0
 * @category settlements
 */
export const onClientDisconnect = (options: {
  readonly policy: "charge-prompt" | "refund" | "charge-streamed"
  readonly price: ModelPrice
  readonly groupRatio: number
  readonly quotaPerUnit: number
  readonly promptEstimate: number
  readonly upstreamPromptTokens?: number | undefined
  readonly streamedCompletionTokens: number
  readonly reserved: number
}): Resolution => {
  if (options.policy === "refund") return refund
  const { price } = options
  if (isFixedPrice(price)) {
    return charge(
      Math.min(fixed({ price, quotaPerUnit: options.quotaPerUnit, groupRatio: options.groupRatio }), options.reserved)
    )
  }
  const promptTokens = options.upstreamPromptTokens ?? options.promptEstimate
  return options.policy === "charge-prompt"
    ? charge(promptPart({ price, groupRatio: options.groupRatio, promptTokens, reserved: options.reserved }))
    : charge(
      streamedPart({
        price,
        groupRatio: options.groupRatio,
        promptTokens,
        streamedCompletionTokens: options.streamedCompletionTokens,
        reserved: options.reserved
      })
    )
}

/**
 * An upstream stream that broke before its usage arrived: settle with the
 * prompt estimate plus the completion tokens counted from the text already
 * streamed to the client, capped at the reservation; refund when nothing was
 * streamed.
 *
 * @since 0.1.0
 * @category settlements
 */
export const onBrokenStream = (options: {
  readonly price: TokenPrice
  readonly groupRatio: number
  readonly promptEstimate: number
  readonly streamedCompletionTokens: number
  readonly reserved: number
}): Resolution =>
  options.streamedCompletionTokens === 0
    ? refund
    : charge(
      streamedPart({
        price: options.price,
        groupRatio: options.groupRatio,
        promptTokens: options.promptEstimate,
        streamedCompletionTokens: options.streamedCompletionTokens,
        reserved: options.reserved
      })
    )
