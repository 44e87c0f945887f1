/**
 * Admin operations on plans and subscriptions: create a plan, subscribe an
 * account (the subscription snapshots the plan's total, period and overflow
 * rule), cancel, and read. Every input is decoded with Schema.
 *
 * @since 0.1.0
 */
import { BillingError, Input, Quota } from "@relay-billing/core"
import { KnexClient } from "@relay-billing/knex"
import { Clock, Context, Effect, Layer, Schema } from "effect"
import { fromRow } from "./internal/rows.js"
import type { SubscriptionRow } from "./internal/rows.js"
import * as Period from "./Period.js"

const Id = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(191))
const PositiveInt = Schema.Int.check(Schema.isGreaterThan(0), Schema.isLessThanOrEqualTo(Number.MAX_SAFE_INTEGER))

/**
 * @since 0.1.0
 * @category schemas
 */
export const CreatePlan = Schema.Struct({
  id: Id,
  name: Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(255)),
  /** Quota per period; 0 = unlimited. */
  totalAmount: Quota.Quota,
  resetPeriod: Period.ResetPeriod,
  /** Required for `custom`. */
  resetSeconds: Schema.optionalKey(PositiveInt),
  durationSeconds: PositiveInt,
  /** Overflow above the total goes to the wallet (default true). */
  allowWalletOverflow: Schema.optionalKey(Schema.Boolean)
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const Subscribe = Schema.Struct({
  id: Id,
  accountId: Id,
  planId: Id,
  /** Start time in ms (default now). */
  startAt: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)))
})

/**
 * A plan.
 *
 * @since 0.1.0
 * @category models
 */
export interface Plan {
  readonly id: string
  readonly name: string
  readonly totalAmount: number
  readonly resetPeriod: Period.ResetPeriod
  readonly resetSeconds: number | undefined
  readonly durationSeconds: number
  readonly allowWalletOverflow: boolean
}

/**
 * A subscription as admins see it.
 *
 * @since 0.1.0
 * @category models
 */
export type Subscription = Readonly<SubscriptionRow>

/**
 * @since 0.1.0
 * @category errors
 */
export class PlanNotFound extends Schema.TaggedError<PlanNotFound>()("PlanNotFound", { planId: Schema.String }) {
  /** Stable code. */
  get code(): "plan_not_found" {
    return "plan_not_found"
  }
  override get message(): string {
    return `no plan ${this.planId}`
  }
}

/**
 * @since 0.1.0
 * @category errors
 */
export class SubscriptionNotFound extends Schema.TaggedError<SubscriptionNotFound>()("SubscriptionNotFound", {
  subscriptionId: Schema.String
}) {
  /** Stable code. */
  get code(): "subscription_not_found" {
    return "subscription_not_found"
  }
  override get message(): string {
    return `no subscription ${this.subscriptionId}`
  }
}

/**
 * @since 0.1.0
 * @category errors
 */
export class AlreadyExists extends Schema.TaggedError<AlreadyExists>()("AlreadyExists", {
  kind: Schema.Literals(["plan", "subscription"]),
  id: Schema.String
}) {
  /** Stable code. */
  get code(): "already_exists" {
    return "already_exists"
  }
  override get message(): string {
    return `${this.kind} ${this.id} already exists`
  }
}

type E = BillingError.InvalidInput | BillingError.StoreError

/**
 * The admin service.
 *
 * @since 0.1.0
 * @category services
 */
export class SubscriptionAdmin extends Context.Service<SubscriptionAdmin, {
  readonly createPlan: (input: typeof CreatePlan.Encoded) => Effect.Effect<Plan, E | AlreadyExists | PlanNotFound>
  readonly subscribe: (
    input: typeof Subscribe.Encoded
  ) => Effect.Effect<Subscription, E | AlreadyExists | PlanNotFound | SubscriptionNotFound>
  readonly cancel: (subscriptionId: string) => Effect.Effect<Subscription, E | SubscriptionNotFound>
  readonly subscription: (subscriptionId: string) => Effect.Effect<Subscription, E | SubscriptionNotFound>
  readonly subscriptions: (accountId: string) => Effect.Effect<ReadonlyArray<Subscription>, E>
  readonly plan: (planId: string) => Effect.Effect<Plan, E | PlanNotFound>
}>()("@relay-billing/subscription/SubscriptionAdmin") {
  /** The admin service over the knex client. */
  static readonly layer: Layer.Layer<SubscriptionAdmin, never, KnexClient.KnexClient> = Layer.effect(
    SubscriptionAdmin,
    Effect.gen(function*() {
      return make(yield* KnexClient.KnexClient)
    })
  )

  /** The admin service over the knex client, with calendar resets in `timeZone` (default `"UTC"`). */
  static layerWith(
    options: { readonly timeZone?: string }
  ): Layer.Layer<SubscriptionAdmin, never, KnexClient.KnexClient> {
    return Layer.effect(
      SubscriptionAdmin,
      Effect.gen(function*() {
        return make(yield* KnexClient.KnexClient, options)
      })
    )
  }
}

const toPlan = (row: Record<string, unknown>): Plan => ({
  id: String(row["id"]),
  name: String(row["name"]),
  totalAmount: Number(row["total_amount"]),
  resetPeriod: String(row["reset_period"]) as Period.ResetPeriod,
  resetSeconds: row["reset_seconds"] === null || row["reset_seconds"] === undefined
    ? undefined
    : Number(row["reset_seconds"]),
  durationSeconds: Number(row["duration_seconds"]),
  allowWalletOverflow: Boolean(row["allow_wallet_overflow"])
})

/**
 * Builds the admin service over a client.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  client: KnexClient.Client,
  options: { readonly timeZone?: string } = {}
): SubscriptionAdmin["Service"] => {
  const plans = client.table("plans")
  const subscriptions = client.table("subscriptions")
  const timeZone = options.timeZone ?? "UTC"

  const plan = (planId: string) =>
    client.query("subscription.plan", (db) => db(plans).where({ id: planId }).first()).pipe(
      Effect.flatMap((row) => (row ? Effect.succeed(toPlan(row)) : Effect.fail(new PlanNotFound({ planId }))))
    )
  const subscription = (subscriptionId: string) =>
    client.query("subscription.get", (db) => db(subscriptions).where({ id: subscriptionId }).first()).pipe(
      Effect.flatMap((row) =>
        row ? Effect.succeed<Subscription>(fromRow(row)) : Effect.fail(new SubscriptionNotFound({ subscriptionId }))
      )
    )

  return SubscriptionAdmin.of({
    createPlan: (input) =>
      Effect.gen(function*() {
        const req = yield* Input.decodeInput(CreatePlan, "")(input)
        if (req.resetPeriod === "custom" && req.resetSeconds === undefined) {
          return yield* new BillingError.InvalidInput({
            field: "resetSeconds",
            value: "undefined",
            reason: "required when resetPeriod is custom"
          })
        }
        return yield* client.transaction(Effect.gen(function*() {
          const exists = yield* client.query("subscription.createPlan", (db) =>
            db(plans).where({ id: req.id }).first("id"))
          if (exists) {
            return yield* new AlreadyExists({ kind: "plan", id: req.id })
          }
          const at = yield* Clock.currentTimeMillis
          yield* client.query("subscription.createPlan", (db) =>
            db(plans).insert({
              id: req.id,
              name: req.name,
              total_amount: req.totalAmount,
              reset_period: req.resetPeriod,
              reset_seconds: req.resetSeconds ?? null,
              duration_seconds: req.durationSeconds,
              allow_wallet_overflow: req.allowWalletOverflow ?? true,
              created_at: at
            }))
          return yield* plan(req.id)
        }))
      }),
    subscribe: (input) =>
      Effect.gen(function*() {
        const req = yield* Input.decodeInput(Subscribe, "")(input)
        return yield* client.transaction(Effect.gen(function*() {
          const p = yield* plan(req.planId)
          const exists = yield* client.query("subscription.subscribe", (db) =>
            db(subscriptions).where({ id: req.id }).first("id"))
          if (exists) {
            return yield* new AlreadyExists({ kind: "subscription", id: req.id })
          }
          const at = yield* Clock.currentTimeMillis
          const startAt = req.startAt ?? at
          const period = { period: p.resetPeriod, customSeconds: p.resetSeconds }
          yield* client.query("subscription.subscribe", (db) =>
            db(subscriptions).insert({
              id: req.id,
              account_id: req.accountId,
              plan_id: p.id,
              amount_total: p.totalAmount,
              amount_used: 0,
              start_at: startAt,
              end_at: startAt + p.durationSeconds * 1000,
              status: "active",
              reset_period: p.resetPeriod,
              reset_seconds: p.resetSeconds ?? null,
              allow_wallet_overflow: p.allowWalletOverflow,
              last_reset_at: Period.currentStart(period, startAt, startAt, timeZone) ?? null,
              next_reset_at: Period.nextBoundary(period, startAt, startAt, timeZone) ?? null,
              created_at: at
            }))
          return yield* subscription(req.id)
        }))
      }),
    cancel: (subscriptionId) =>
      Effect.gen(function*() {
        const id = yield* Input.decodeInput(Id, "subscriptionId")(subscriptionId)
        const changed = yield* client.query("subscription.cancel", (db) =>
          db(subscriptions).where({ id }).update({ status: "cancelled" }))
        if (changed === 0) {
          return yield* new SubscriptionNotFound({ subscriptionId: id })
        }
        return yield* subscription(id)
      }),
    subscription: (subscriptionId) =>
      Effect.flatMap(Input.decodeInput(Id, "subscriptionId")(subscriptionId), subscription),
    subscriptions: (accountId) =>
      Effect.gen(function*() {
        const id = yield* Input.decodeInput(Id, "accountId")(accountId)
        const rows = yield* client.query("subscription.list", (db) =>
          db(subscriptions).where({ account_id: id }).orderBy([{ column: "end_at" }, { column: "id" }]))
        return rows.map((r: Record<string, unknown>) =>
          fromRow(r)
        )
      }),
    plan: (planId) => Effect.flatMap(Input.decodeInput(Id, "planId")(planId), plan)
  })
}
