/**
 * Post-consume (legacy) billing, for work whose price is only known afterwards
 * or that is billed per call: an optional balance check before the work (a
 * typed error, nothing written), then one charge after success through the
 * source the preference picks (fallback on insufficient funds only), with its
 * ledger rows and counters, idempotent by request id. The settler it returns
 * is a `BillingSettler`, so relay handlers call `settleBilling` for both paths.
 *
 * @since 0.1.0
 */
import {
  BillingError,
  BillingSession,
  FundingRegistry,
  FundingResolver,
  Input,
  Preference,
  Quota,
  SqlStore
} from "@relay-billing/core"
import type { BillingSettler } from "@relay-billing/core"
import { Context, Effect, Layer, Schema } from "effect"

const Id = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(191))

/**
 * A post-consume request.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Request = Schema.Struct({
  /** The idempotency key of the charge. */
  requestId: Id,
  accountId: Id,
  tokenId: Schema.optionalKey(Id),
  preference: Schema.optionalKey(Schema.String),
  playground: Schema.optionalKey(Schema.Boolean),
  /**
   * Check before the work that a source the preference allows (a subscription
   * for the quota it has left, the wallet for its balance) and the token can
   * cover this much.
   */
  check: Schema.optionalKey(Quota.Quota),
  metadata: Schema.optionalKey(Schema.Record(Schema.String, Schema.String))
})

/**
 * @since 0.1.0
 * @category models
 */
export type Request = typeof Request.Encoded

/**
 * Errors of the balance check.
 *
 * @since 0.1.0
 * @category errors
 */
export type CheckError =
  | BillingError.InvalidInput
  | BillingError.InsufficientFunds
  | BillingError.TokenBudgetExceeded
  | BillingError.StoreError
  | BillingError.UnknownSource

/**
 * The service.
 *
 * @since 0.1.0
 * @category services
 */
export class PostConsume extends Context.Service<PostConsume, {
  /** Checks, without writing anything, that the request could pay `request.check`. */
  readonly check: (request: Request) => Effect.Effect<void, CheckError>
  /** Runs the optional check and returns the settler whose `settle(actual)` makes the one charge. */
  readonly settler: (request: Request) => Effect.Effect<BillingSettler.BillingSettler, CheckError>
}>()("@relay-billing/post-consume/PostConsume") {
  /**
   * The service over the `BillingSession` and the registry in context (and the
   * store's `SqlStore`, when provided, to read the registry's `Source`s).
   */
  static readonly layer: Layer.Layer<
    PostConsume,
    never,
    BillingSession.BillingSession | FundingRegistry.FundingRegistry
  > = Layer.effect(
    PostConsume,
    Effect.gen(function*() {
      const sql = yield* Effect.serviceOption(SqlStore.SqlStore)
      return make(
        yield* BillingSession.BillingSession,
        yield* FundingRegistry.FundingRegistry,
        sql._tag === "Some" ? { sql: sql.value } : {}
      )
    })
  )
}

/**
 * Builds the service.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  engine: BillingSession.BillingSession["Service"],
  registry: FundingRegistry.FundingRegistry["Service"],
  options: {
    readonly roles?: FundingResolver.Roles
    readonly tokenBudgetId?: string
    /** The engine's custom preferences (`BillingSession.Options.preferences`), so that their names resolve alike. */
    readonly preferences?: Preference.Chains
    /** The store's executor, to read the registry's `Source`s (since 0.4.0). */
    readonly sql?: SqlStore.SqlStore["Service"]
  } = {}
): PostConsume["Service"] => {
  const sources = FundingRegistry.reader(registry, options.sql)
  const decode = Input.decodeInput(Request, "")

  const check = (req: typeof Request.Type) =>
    Effect.gen(function*() {
      const amount = req.check
      if (amount === undefined) return
      const order = yield* FundingResolver.resolve(
        sources,
        Preference.normalize(req.preference, options.preferences),
        req.accountId,
        options.roles,
        options.preferences
      )
      // Passes only if one source the preference allows can pay the whole amount now:
      // a subscription counts for the room it has left, the wallet for its balance.
      let best = 0
      let covered = false
      for (const id of order) {
        const source = yield* sources.funding(id)
        const room = source.room
          ? yield* source.room(req.accountId)
          : source.balance
          ? yield* source.balance(req.accountId)
          : undefined
        if (room !== undefined) {
          best = Math.max(best, room)
          covered = room > 0 && room >= amount
        } else if (source.availability) {
          // A source that can tell neither its room nor its balance is trusted when usable.
          covered = (yield* source.availability(req.accountId)).available
        }
        if (covered) break
      }
      if (!covered) {
        return yield* new BillingError.InsufficientFunds({
          sourceId: order[0] ?? "",
          accountId: req.accountId,
          required: amount,
          available: best,
          reason: "post-consume balance check"
        })
      }
      if (req.tokenId !== undefined && !req.playground) {
        const budget = yield* sources.budget(options.tokenBudgetId ?? "token")
        if (budget.remaining) {
          const left = yield* budget.remaining(req.tokenId)
          if (!left.unlimited && left.remaining < amount) {
            return yield* new BillingError.TokenBudgetExceeded({
              budgetId: budget.id,
              tokenId: req.tokenId,
              required: amount,
              remaining: left.remaining
            })
          }
        }
      }
    })

  const settlerFor = (req: typeof Request.Type): BillingSettler.BillingSettler => {
    const open: BillingSession.OpenRequest = {
      holdId: req.requestId,
      accountId: req.accountId,
      estimate: 0,
      ...(req.tokenId !== undefined ? { tokenId: req.tokenId } : {}),
      ...(req.preference !== undefined ? { preference: req.preference } : {}),
      ...(req.playground !== undefined ? { playground: req.playground } : {}),
      ...(req.metadata !== undefined ? { metadata: req.metadata } : {})
    }
    return {
      holdId: req.requestId,
      preConsumed: 0,
      // Nothing is taken before the work, so there is never anything to give back.
      needsRefund: Effect.succeed(false),
      settle: (actual, options) => engine.charge(open, actual, options),
      refund: engine.get(req.requestId).pipe(
        Effect.map((hold): BillingSettler.RefundResult => ({
          holdId: req.requestId,
          status: hold.status,
          refunded: 0
        })),
        Effect.catchTag(
          "HoldNotFound",
          () => Effect.succeed<BillingSettler.RefundResult>({ holdId: req.requestId, status: "refunded", refunded: 0 })
        )
      )
    }
  }

  return PostConsume.of({
    check: (request) => Effect.flatMap(decode(request), check),
    settler: (request) =>
      Effect.gen(function*() {
        const req = yield* decode(request)
        yield* check(req)
        return settlerFor(req)
      })
  })
}
