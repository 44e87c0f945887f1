/**
 * The soak probe's mix: a seeded, reproducible list of planned requests
 * (kind, variant, model, account, abort point), and the relay config file
 * that serves it (one channel per upstream behaviour; every model priced
 * `modelRatio` 1 and `completionRatio` 1, `minPreConsumeTokens` 0, so that
 * a completed answer costs `prompt_tokens + completion_tokens` and a
 * reservation is `promptEstimate + max_tokens`).
 *
 * @since 0.1.0
 */
import type { Kind, Plan } from "./SoakClients.js"
import { INVALID_VARIANTS, KINDS, MODELS, WEIGHTS } from "./SoakClients.js"

/** mulberry32: a small seeded PRNG (uniform in [0, 1)). */
export const prng = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** `max_tokens` of big streams (their completion is longer than the other answers). */
export const BIG_MAX_TOKENS = 4000
/** `max_tokens` of long (drip) streams: more than their whole completion. */
export const DRIP_MAX_TOKENS = 400
/** `max_tokens` of every other chat request. */
export const MAX_TOKENS = 64

/** An account the burst bills, with the token its requests use. */
export interface Caller {
  readonly accountId: string
  readonly key: string
}

/** Plans `count` requests over `accounts` (round robin). */
export const plan = (options: {
  readonly count: number
  readonly seed: number
  readonly runId: string
  readonly accounts: ReadonlyArray<Caller>
  /** Indexes that are long streams (instead of a drawn kind). */
  readonly longStreams?: ReadonlyArray<number>
}): Array<Plan> => {
  const random = prng(options.seed)
  const total = KINDS.reduce((sum, k) => sum + WEIGHTS[k], 0)
  const pickKind = (): Kind => {
    let r = random() * total
    for (const k of KINDS) {
      r -= WEIGHTS[k]
      if (r < 0) return k
    }
    return "json"
  }
  const coin = () => random() < 0.5
  const plans: Array<Plan> = []
  for (let index = 0; index < options.count; index++) {
    const drawn = pickKind()
    const kind: Kind = options.longStreams?.includes(index) ? "long-stream" : drawn
    const account = options.accounts[index % options.accounts.length]!
    let model: string = MODELS.ok
    let stream = false
    let variant: string = kind
    let abortAt = 0
    let includeUsage = coin()
    switch (kind) {
      case "json":
        break
      case "stream":
        stream = true
        break
      case "embed":
        model = MODELS.embed
        break
      case "flaky":
        model = MODELS.flaky
        stream = coin()
        break
      case "slow-json":
        model = MODELS.slow
        break
      case "slow-stream":
        model = MODELS.slow
        stream = true
        break
      case "slow-reader":
        model = MODELS.big
        stream = true
        break
      case "abort-stream":
        model = MODELS.slow
        stream = true
        abortAt = 1 + Math.floor(random() * 3) // after 1 to 3 content chunks
        break
      case "abort-early":
        model = coin() ? MODELS.slow : MODELS.ok
        stream = coin()
        abortAt = Math.floor(random() * 300) // 0 to 299 ms after sending
        break
      case "hang":
        model = MODELS.hang
        stream = coin()
        break
      case "stall":
        model = MODELS.stall
        stream = coin()
        break
      case "fail":
        model = MODELS.fail
        stream = coin()
        break
      case "long-stream":
        model = MODELS.drip
        stream = true
        break
      case "invalid":
        variant = INVALID_VARIANTS[Math.floor(random() * INVALID_VARIANTS.length)]!
        includeUsage = false
        break
    }
    if (kind !== "invalid") variant = `${kind}${stream ? "/stream" : "/json"}`
    plans.push({
      index,
      kind,
      variant,
      requestId: `soak-${options.runId}-${String(index).padStart(5, "0")}-r`,
      accountId: account.accountId,
      key: account.key,
      model,
      stream,
      maxTokens: model === MODELS.big ? BIG_MAX_TOKENS : model === MODELS.drip ? DRIP_MAX_TOKENS : MAX_TOKENS,
      includeUsage,
      abortAt
    })
  }
  return plans
}

/** Timings of the relay config. */
export interface Timings {
  readonly holdTtlSeconds: number
  readonly reapIntervalSeconds: number
  readonly upstreamIdleSeconds: number
  readonly clientIdleSeconds: number
}

/** The relay config file (JSON) for an upstream at `origin`; `limits` only when `withLimits`. */
export const relayConfig = (origin: string, timings: Timings, withLimits: boolean) => {
  const channel = (name: string, mode: string, models: ReadonlyArray<string>, priority = 0) => ({
    name,
    baseUrl: `${origin}/${mode}/v1`,
    apiKey: "sk-soak-upstream",
    models,
    priority
  })
  const price = { modelRatio: 1, completionRatio: 1 }
  return {
    quotaPerUnit: 500000,
    groups: { default: 1 },
    models: Object.fromEntries(Object.values(MODELS).map((m) => [m, price])),
    channels: [
      channel("ok", "ok", [MODELS.ok, MODELS.embed]),
      channel("slow", "slow", [MODELS.slow]),
      channel("big", "big", [MODELS.big]),
      // one channel each: a hung request costs one idle bound, not one per retry
      channel("hang", "hang", [MODELS.hang]),
      channel("stall", "stall", [MODELS.stall]),
      channel("fail-1", "fail", [MODELS.fail, MODELS.flaky], 0),
      channel("fail-2", "fail", [MODELS.fail], 1),
      channel("flaky-ok", "ok", [MODELS.flaky], 1),
      channel("drip", "drip", [MODELS.drip])
    ],
    billing: {
      holdTtlSeconds: timings.holdTtlSeconds,
      minPreConsumeTokens: 0,
      onClientDisconnect: "charge-prompt",
      retries: 2,
      reapIntervalSeconds: timings.reapIntervalSeconds
    },
    ...(withLimits
      ? {
        limits: {
          upstreamIdleSeconds: timings.upstreamIdleSeconds,
          clientIdleSeconds: timings.clientIdleSeconds,
          maxRequestSeconds: 120
        }
      }
      : {})
  }
}
