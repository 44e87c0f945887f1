/**
 * What a relay handler sees of billing: one object to settle or refund, whether
 * the request was billed with a hold (`BillingSession`) or after the fact
 * (post-consume). `withBilling` ties a settler's life cycle to the upstream work
 * so that every exit — success, failure, defect, interruption — ends it.
 *
 * @since 0.1.0
 */
import { Cause, Duration, Effect, Exit, Fiber } from "effect"
import type {
  ContractViolation,
  HoldInFlight,
  HoldNotFound,
  HoldResolved,
  IdempotencyConflict,
  InsufficientFunds,
  InvalidInput,
  QuotaOutOfRange,
  SettleIncomplete,
  StoreError,
  TokenBudgetExceeded,
  TokenNotFound,
  UnknownSource
} from "./BillingError.js"
import type { HoldStatus, Settlement } from "./Hold.js"

/**
 * Errors a settle can fail with. The open-time errors (`InsufficientFunds`,
 * `TokenBudgetExceeded`, `TokenNotFound`, `IdempotencyConflict`, `HoldInFlight`)
 * come only from post-consume settlers, whose settle is the charge itself.
 *
 * @since 0.1.0
 * @category errors
 */
export type SettleError =
  | InsufficientFunds
  | TokenBudgetExceeded
  | TokenNotFound
  | IdempotencyConflict
  | HoldInFlight
  | QuotaOutOfRange
  | InvalidInput
  | HoldNotFound
  | HoldResolved
  | StoreError
  | UnknownSource
  | ContractViolation
  | SettleIncomplete

/**
 * Errors a refund can fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type RefundError = HoldNotFound | StoreError | UnknownSource

/**
 * The outcome of a refund: the final status of the hold and how much funding
 * this call gave back (0 when it was a no-op).
 *
 * @since 0.1.0
 * @category models
 */
export interface RefundResult {
  readonly holdId: string
  readonly status: HoldStatus
  readonly refunded: number
}

/**
 * Errors a lease renewal can fail with: the hold is gone (`HoldNotFound`), no
 * longer pending (`HoldResolved`: settled, refunded or already expired — a
 * renewal never resurrects it), a lease length out of bounds (`InvalidInput`),
 * or the store failed.
 *
 * @since 0.3.0
 * @category errors
 */
export type RenewError = HoldNotFound | HoldResolved | InvalidInput | StoreError

/**
 * A renewed lease: the hold's new `expiresAt` (epoch milliseconds).
 *
 * @since 0.3.0
 * @category models
 */
export interface Lease {
  readonly holdId: string
  readonly expiresAt: number
}

/**
 * The lease of a settler's hold (billing-semantics §6): the recovery pass
 * only expires a hold whose lease lapsed, so whoever runs the work renews it.
 *
 * @since 0.3.0
 * @category models
 */
export interface LeaseControl {
  /** The lease length: a renewal moves `expiresAt` to now + `ttlMillis` (never past 7 days after the open). */
  readonly ttlMillis: number
  /** Renews the lease once (a conditional write: only while the hold is pending). */
  readonly renew: Effect.Effect<Lease, RenewError>
}

/**
 * Options of a settle.
 *
 * @since 0.3.0
 * @category models
 */
export interface SettleOptions {
  /**
   * Stored on the settlement (`Settlement.metadata`) by the settle that
   * settles the hold, for the host's `SettlementRecorder` (which writes its
   * record in the same transaction); a replayed settle ignores it.
   */
  readonly metadata?: Readonly<Record<string, string>> | undefined
}

/**
 * The settler contract (new-api's `BillingSettler`).
 *
 * @since 0.1.0
 * @category models
 */
export interface BillingSettler {
  /** The request id the billing is keyed by. */
  readonly holdId: string
  /** What was reserved before the upstream call (0 for post-consume and trusted holds). */
  readonly preConsumed: number
  /** Whether a refund would still do something (the hold is pending). */
  readonly needsRefund: Effect.Effect<boolean, StoreError>
  /** Charges the actual cost, exactly once; a repeat returns the first result. */
  readonly settle: (actual: number, options?: SettleOptions) => Effect.Effect<Settlement, SettleError>
  /** Gives the reservation back, exactly once; a no-op after a settle. */
  readonly refund: Effect.Effect<RefundResult, RefundError>
  /**
   * The hold's lease, for settlers with a hold (`BillingSession`); absent for
   * post-consume settlers, which hold nothing. `withBilling` and `withLease`
   * renew it while the work runs.
   *
   * @since 0.3.0
   */
  readonly lease?: LeaseControl
}

/**
 * What the upstream work returns to `withBilling`: its value and the actual cost.
 *
 * @since 0.1.0
 * @category models
 */
export interface Billed<A> {
  readonly value: A
  readonly cost: number
}

/**
 * What to do when the work is interrupted (for example a client disconnect):
 * refund everything, or settle with a given amount (e.g. the prompt cost).
 *
 * @since 0.1.0
 * @category models
 */
export type InterruptionPolicy =
  | RefundOnInterrupt
  | ChargeOnInterrupt
  | { readonly _tag: "Decide"; readonly policy: Effect.Effect<RefundOnInterrupt | ChargeOnInterrupt> }

/**
 * Refund everything on interruption.
 *
 * @since 0.1.0
 * @category models
 */
export interface RefundOnInterrupt {
  readonly _tag: "Refund"
}

/**
 * Settle with `amount` (read when the interruption happens) on interruption.
 *
 * @since 0.1.0
 * @category models
 */
export interface ChargeOnInterrupt {
  readonly _tag: "Charge"
  readonly amount: Effect.Effect<number>
}

/**
 * Refund on interruption (the SDK's default).
 *
 * @since 0.1.0
 * @category constructors
 */
export const refundOnInterrupt: RefundOnInterrupt = { _tag: "Refund" }

/**
 * Settle with `amount` on interruption. `amount` may be an effect, read when the
 * interruption happens (for example the cost of what was streamed so far).
 *
 * @since 0.1.0
 * @category constructors
 */
export const chargeOnInterrupt = (amount: number | Effect.Effect<number>): ChargeOnInterrupt => ({
  _tag: "Charge",
  amount: typeof amount === "number" ? Effect.succeed(amount) : amount
})

/**
 * Decides the policy when the interruption happens, from what the work had
 * done by then: e.g. refund when nothing was sent upstream yet, else charge
 * the prompt.
 *
 * @since 0.3.0
 * @category constructors
 */
export const decideOnInterrupt = (
  policy: Effect.Effect<RefundOnInterrupt | ChargeOnInterrupt>
): InterruptionPolicy => ({ _tag: "Decide", policy })

/**
 * Settles `settler` with `actual`; with no settler (a free request, nothing was
 * opened) it does nothing. The one call relay handlers make for every path.
 * Handlers that run the work themselves (not through {@link withBilling}) keep
 * the hold's lease renewed with {@link withLease} until they settle; a settle
 * that still finds the hold expired is charged late (billing-semantics §6).
 *
 * @since 0.1.0
 * @category combinators
 */
export const settleBilling = (
  settler: BillingSettler | undefined,
  actual: number,
  options?: SettleOptions
): Effect.Effect<Settlement | undefined, SettleError> =>
  settler === undefined ? Effect.succeed(undefined) : settler.settle(actual, options)

const bestEffortRefund = (settler: BillingSettler) =>
  settler.refund.pipe(
    Effect.asVoid,
    Effect.catchCause((cause) =>
      Effect.logError("relay-billing: refund failed; the hold stays pending until the recovery pass", cause).pipe(
        Effect.annotateLogs({ holdId: settler.holdId })
      )
    )
  )

/**
 * How often `withLease` renews a lease of `ttlMillis`: every third of it (at
 * least every millisecond), so two renewals can fail before the lease lapses.
 *
 * @since 0.3.0
 * @category getters
 */
export const renewalInterval = (ttlMillis: number): Duration.Duration =>
  Duration.millis(Math.max(1, Math.floor(ttlMillis / 3)))

/**
 * The renewal loop of one lease: sleeps for the interval (Effect's `Clock`,
 * so `TestClock` drives it), renews, and again. A failed renewal is logged and
 * never ends the work; once the hold is no longer pending (or gone) the loop
 * stops.
 */
const renewLoop = (holdId: string, lease: LeaseControl): Effect.Effect<void> =>
  Effect.gen(function*() {
    const interval = renewalInterval(lease.ttlMillis)
    while (true) {
      yield* Effect.sleep(interval)
      const exit = yield* Effect.exit(lease.renew)
      if (Exit.isSuccess(exit)) {
        yield* Effect.logDebug("relay-billing: lease renewed").pipe(
          Effect.annotateLogs({ holdId, expiresAt: exit.value.expiresAt })
        )
        continue
      }
      yield* Effect.logWarning("relay-billing: lease renewal failed", exit.cause).pipe(
        Effect.annotateLogs({ holdId })
      )
      const error = Cause.findErrorOption(exit.cause)
      if (error._tag === "Some" && (error.value._tag === "HoldResolved" || error.value._tag === "HoldNotFound")) return
    }
  })

/**
 * Runs `work` while renewing `settler`'s lease (every third of its length, see
 * {@link renewalInterval}). The renewal fiber is a child of `work`'s fiber:
 * it stops when `work` ends, however it ends. A failed renewal is logged and
 * never fails `work`. A settler without a lease (post-consume) runs `work` as
 * is. For hand-written integrations that do not use {@link withBilling}.
 *
 * @since 0.3.0
 * @category combinators
 */
export const withLease = <A, E, R>(
  settler: BillingSettler,
  work: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> => {
  const lease = settler.lease
  if (lease === undefined) return work
  return Effect.gen(function*() {
    // Started at once: the first renewal is due exactly one interval after `work` starts.
    const renewal = yield* Effect.forkChild(renewLoop(settler.holdId, lease), {
      startImmediately: true,
      uninterruptible: false
    })
    return yield* work.pipe(Effect.ensuring(Fiber.interrupt(renewal)))
  })
}

/**
 * Runs `use` under a billing settler and guarantees how it ends:
 *
 * - `use` succeeds → settle with its `cost`, return its `value`;
 * - `use` fails or dies (a thrown exception) → refund, then re-raise;
 * - `use` is interrupted → apply `onInterrupt` (default: refund), then re-raise.
 *
 * `metadata`, when given, is read right before each settle (after `use` or the
 * interruption policy computed the amount) and passed to it (see
 * `SettleOptions`).
 *
 * Opening is not interruptible, so a reservation is never left without an owner.
 * While `use` runs, the hold's lease is renewed (see {@link withLease}), so the
 * recovery pass never expires a hold in use; if it still did (the renewals
 * failed), the settle is charged late (billing-semantics §6). If settling fails, the reservation is refunded (best effort; otherwise the
 * recovery pass refunds it at expiry) and the settle error is returned.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withBilling = <E1, R1, A, E2, R2>(
  open: Effect.Effect<BillingSettler, E1, R1>,
  use: (settler: BillingSettler) => Effect.Effect<Billed<A>, E2, R2>,
  options?: {
    readonly onInterrupt?: InterruptionPolicy
    readonly metadata?: Effect.Effect<Readonly<Record<string, string>>> | undefined
  }
): Effect.Effect<A, E1 | E2 | SettleError, R1 | R2> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      const metadata = options?.metadata
      const settleWith = (settler: BillingSettler, amount: number) =>
        metadata === undefined
          ? settler.settle(amount)
          : Effect.flatMap(metadata, (m) => settler.settle(amount, { metadata: m }))
      const settler = yield* open
      const exit = yield* Effect.exit(restore(withLease(settler, Effect.suspend(() => use(settler)))))
      if (Exit.isSuccess(exit)) {
        yield* settleWith(settler, exit.value.cost).pipe(Effect.tapError(() => bestEffortRefund(settler)))
        return exit.value.value
      }
      const given: InterruptionPolicy = options?.onInterrupt ?? refundOnInterrupt
      const policy = given._tag === "Decide" && Cause.hasInterruptsOnly(exit.cause) ? yield* given.policy : given
      if (Cause.hasInterruptsOnly(exit.cause) && policy._tag === "Charge") {
        yield* policy.amount.pipe(
          Effect.flatMap((amount) => settleWith(settler, amount)),
          Effect.asVoid,
          Effect.catchCause((cause) =>
            Effect.logError("relay-billing: interruption charge failed; refunding instead", cause).pipe(
              Effect.andThen(bestEffortRefund(settler))
            )
          )
        )
      } else {
        yield* bestEffortRefund(settler)
      }
      return yield* Effect.failCause(exit.cause)
    })
  )
