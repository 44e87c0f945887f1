/**
 * The `LowBalance` webhook notifier: a `BillingEvents` publisher that puts each
 * low-balance warning into a bounded in-process queue and returns at once (a
 * billing operation is never blocked or failed by a notification). A
 * background fiber drains the queue and POSTs each event as JSON
 *
 * ```json
 * {"type":"low_balance","accountId":"acc_1","source":"wallet","subject":"acc_1",
 *  "balance":120,"threshold":1000,"at":"2026-01-01T00:00:00.000Z"}
 * ```
 *
 * with the headers `X-Relay-Signature: sha256=<hex HMAC-SHA256(secret, body)>`
 * and `X-Relay-Event-Id: <uuid>` (the same id on every attempt of one event).
 * A non-2xx answer, a connection error or a timeout is retried with exponential
 * back-off, at most `maxAttempts` attempts in all; then the event is dropped
 * with an error log. When the queue is full the oldest event is dropped with a
 * warning log. Closing the layer's scope stops accepting events, lets the fiber
 * deliver what is queued for at most `drainTimeoutMs`, then interrupts it.
 *
 * Configure it with `notifications.webhook` in the config file;
 * `RelayBilling.layerFromConfig` builds the session with it.
 *
 * @since 0.1.0
 */
import { BillingEvents } from "@relay-billing/core"
import type { Cause } from "effect"
import { Clock, Effect, Fiber, Layer, Queue, Schedule } from "effect"
import { createHmac, randomUUID, timingSafeEqual } from "node:crypto"
import type { RelayConfig, WebhookConfig } from "./Config.js"

/**
 * Options of the notifier: the config section plus tuning knobs.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly url: string
  readonly secret: string
  /** Bound of one attempt (default 5000 ms). */
  readonly timeoutMs?: number | undefined
  /** Attempts of one event in all (default 5). */
  readonly maxAttempts?: number | undefined
  /** Queue capacity; when full the oldest event is dropped (default 1000). */
  readonly capacity?: number | undefined
  /** First back-off delay, doubled after each failed attempt (default 500 ms). */
  readonly backoffMs?: number | undefined
  /** How long closing the scope waits for the queue to drain (default 5000 ms). */
  readonly drainTimeoutMs?: number | undefined
}

/**
 * The JSON body of one webhook call.
 *
 * @since 0.1.0
 * @category models
 */
export interface Payload {
  readonly type: "low_balance"
  readonly accountId: string
  readonly source: string
  readonly subject: string
  readonly balance: number
  readonly threshold: number
  /** When the event was published (ISO 8601). */
  readonly at: string
}

/**
 * One queued delivery: the event id and the exact body that is signed and sent.
 *
 * @since 0.1.0
 * @category models
 */
export interface Delivery {
  readonly id: string
  readonly body: string
}

/**
 * The running notifier: the publisher plus counters (for tests and metrics).
 *
 * @since 0.1.0
 * @category models
 */
export interface Notifier extends BillingEvents.Publisher {
  /** Events waiting in the queue (not counting the one being delivered). */
  readonly pending: Effect.Effect<number>
  /** Events dropped because the queue was full or closed. */
  readonly dropped: Effect.Effect<number>
  /** Events delivered with a 2xx answer. */
  readonly delivered: Effect.Effect<number>
  /** Events given up after `maxAttempts` failed attempts. */
  readonly failed: Effect.Effect<number>
}

type LowBalanceEvent = Extract<BillingEvents.BillingEvent, { readonly _tag: "LowBalance" }>

/**
 * The body for a `LowBalance` event.
 *
 * @since 0.1.0
 * @category encoding
 */
export const payload = (event: LowBalanceEvent, at: Date): Payload => ({
  type: "low_balance",
  accountId: event.accountId,
  source: event.sourceId,
  subject: event.subjectId,
  balance: event.balance,
  threshold: event.threshold,
  at: at.toISOString()
})

/**
 * The `X-Relay-Signature` value of a body: `sha256=` + hex HMAC-SHA256.
 *
 * @since 0.1.0
 * @category signing
 */
export const sign = (secret: string, body: string): string =>
  `sha256=${createHmac("sha256", secret).update(body, "utf8").digest("hex")}`

/**
 * Whether a signature header matches a body (constant-time), for receivers.
 *
 * @since 0.1.0
 * @category signing
 */
export const verify = (secret: string, body: string, signature: string | undefined): boolean => {
  if (signature === undefined) return false
  const expected = Buffer.from(sign(secret, body), "utf8")
  const presented = Buffer.from(signature, "utf8")
  return expected.length === presented.length && timingSafeEqual(expected, presented)
}

class DeliveryFailed {
  readonly _tag = "DeliveryFailed"
  constructor(readonly reason: string) {}
}

/**
 * Starts the notifier in the current scope: the queue, the draining fiber and
 * the finalizer that drains (bounded by `drainTimeoutMs`) and stops it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options) =>
  Effect.gen(function*() {
    const timeoutMs = options.timeoutMs ?? 5000
    const maxAttempts = Math.max(1, options.maxAttempts ?? 5)
    const capacity = Math.max(1, options.capacity ?? 1000)
    const backoffMs = options.backoffMs ?? 500
    const drainTimeoutMs = options.drainTimeoutMs ?? 5000
    const queue = yield* Queue.sliding<Delivery, Cause.Done>(capacity)
    let closed = false
    let dropped = 0
    let delivered = 0
    let failed = 0

    const attempt = (delivery: Delivery) =>
      Effect.tryPromise({
        try: async (signal) => {
          const response = await fetch(options.url, {
            method: "POST",
            headers: {
              "content-type": "application/json",
              "x-relay-signature": sign(options.secret, delivery.body),
              "x-relay-event-id": delivery.id
            },
            body: delivery.body,
            signal
          })
          // drain the body so the connection can be reused
          await response.arrayBuffer().catch(() => undefined)
          return response.status
        },
        catch: (cause) =>
          new DeliveryFailed(
            cause instanceof Error
              ? (cause.cause instanceof Error ? `${cause.message}: ${cause.cause.message}` : cause.message)
              : String(cause)
          )
      }).pipe(
        Effect.timeoutOrElse({
          duration: timeoutMs,
          orElse: () => Effect.fail(new DeliveryFailed(`timed out after ${timeoutMs} ms`))
        }),
        Effect.flatMap((status) =>
          status >= 200 && status < 300 ? Effect.void : Effect.fail(new DeliveryFailed(`HTTP ${status}`))
        ),
        Effect.tapError((error) => Effect.logDebug(`webhook: event ${delivery.id} attempt failed (${error.reason})`))
      )

    const deliver = (delivery: Delivery) =>
      attempt(delivery).pipe(
        Effect.retry({ schedule: Schedule.exponential(backoffMs, 2), times: maxAttempts - 1 }),
        Effect.matchEffect({
          onSuccess: () => Effect.sync(() => void delivered++),
          onFailure: (error) =>
            Effect.sync(() => void failed++).pipe(
              Effect.andThen(Effect.logError(
                `webhook: event ${delivery.id} not delivered after ${maxAttempts} attempt(s) (${error.reason}); dropped`
              ))
            )
        })
      )

    // Queue.take fails with Done once the queue is ended and empty: the loop stops.
    const worker = Effect.forever(Effect.flatMap(Queue.take(queue), deliver)).pipe(Effect.ignore)

    yield* Effect.acquireRelease(
      Effect.forkDetach(worker),
      (fiber) =>
        Effect.gen(function*() {
          closed = true
          Queue.endUnsafe(queue)
          const finished = yield* Fiber.join(fiber).pipe(Effect.timeoutOption(drainTimeoutMs))
          if (finished._tag === "None") {
            const left = Math.max(0, Queue.sizeUnsafe(queue))
            yield* Effect.logWarning(
              `webhook: shutdown after ${drainTimeoutMs} ms with ${left} queued event(s) and one in flight undelivered`
            )
          }
          yield* Fiber.interrupt(fiber)
        })
    )

    const enqueue = (event: LowBalanceEvent): Effect.Effect<void> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const delivery: Delivery = { id: randomUUID(), body: JSON.stringify(payload(event, new Date(now))) }
        if (closed) {
          dropped++
          return Effect.logWarning(`webhook: notifier closed, low_balance event for ${event.accountId} dropped`)
        }
        const full = Queue.sizeUnsafe(queue) >= capacity
        Queue.offerUnsafe(queue, delivery) // sliding: drops the oldest when full
        if (!full) return Effect.void
        dropped++
        return Effect.logWarning(`webhook: queue full (${capacity}), oldest event dropped`)
      })

    const notifier: Notifier = {
      publish: (event) =>
        event._tag === "LowBalance"
          ? enqueue(event).pipe(Effect.catchCause(() => Effect.void))
          : Effect.void,
      pending: Effect.sync(() => Math.max(0, Queue.sizeUnsafe(queue))),
      dropped: Effect.sync(() => dropped),
      delivered: Effect.sync(() => delivered),
      failed: Effect.sync(() => failed)
    }
    return notifier
  })

/**
 * The notifier as the `BillingEvents` publisher, scoped: a `BillingSession`
 * built with this layer in context publishes its low-balance warnings to the
 * webhook.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<never> => Layer.effect(BillingEvents.BillingEvents, make(options))

/**
 * {@link layer} from the config's `notifications.webhook`; an empty layer
 * (events dropped, the SDK's default) when the section is absent.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromConfig = (config: RelayConfig): Layer.Layer<never> => {
  const webhook: WebhookConfig | undefined = config.notifications?.webhook
  return webhook === undefined ? Layer.empty : layer(webhook)
}
