/**
 * The billing session engine. `open` reserves the estimate (token budget first,
 * then funding in preference order, each part acquired with `acquireRelease` so
 * a failure gives back everything before it) and records a hold; `settle`
 * charges the actual cost exactly once; `refund` gives the reservation back
 * exactly once; `reapExpired` refunds abandoned holds after their expiry.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Option, Schema } from "effect"
import { AccountCounters } from "./AccountCounters.js"
import type {
  ContractViolation,
  CorrectionExceedsCharge,
  CorrectionUnsupported,
  HoldInFlight,
  HoldNotFound,
  HoldResolved,
  IdempotencyConflict,
  InsufficientFunds,
  QuotaOutOfRange,
  StoreError,
  TokenBudgetExceeded,
  TokenNotFound,
  UnknownSource
} from "./BillingError.js"
import { InvalidInput } from "./BillingError.js"
import { BillingEvents } from "./BillingEvents.js"
import type {
  BillingSettler,
  Lease,
  LeaseControl,
  RefundError,
  RefundResult,
  RenewError,
  SettleError,
  SettleOptions
} from "./BillingSettler.js"
import { FundingRegistry } from "./FundingRegistry.js"
import * as FundingResolver from "./FundingResolver.js"
import type { Correction, Hold, Settlement } from "./Hold.js"
import { HoldJournal } from "./HoldJournal.js"
import { decodeInput } from "./Input.js"
import type { ReapError, ReapFailure, ReapReport } from "./internal/engine.js"
import { makeEngine } from "./internal/engine.js"
import { MAX_LEASE_MILLIS } from "./internal/lease.js"
import { Ledger } from "./Ledger.js"
import { LowBalance } from "./LowBalance.js"
import type * as Preference from "./Preference.js"
import { Quota } from "./Quota.js"
import * as QuotaModule from "./Quota.js"
import { SettlementRecorder } from "./SettlementRecorder.js"
import { SqlStore } from "./SqlStore.js"

const Id = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(191))

/**
 * The longest lifetime of a hold: 7 days (spec §2.10). Longer leases would
 * keep money reserved beyond any request and overflow `expiresAt`.
 *
 * @since 0.2.0
 * @category constants
 */
export const MAX_TTL_MILLIS: number = MAX_LEASE_MILLIS

/**
 * A hold lifetime: a positive integer number of milliseconds, at most
 * {@link MAX_TTL_MILLIS}.
 *
 * @since 0.2.0
 * @category schemas
 */
export const TtlMillis = Schema.Int.check(Schema.isGreaterThan(0), Schema.isLessThanOrEqualTo(MAX_TTL_MILLIS))

const decodeTtlMillis = decodeInput(TtlMillis, "holdTtlMillis")

/** The metadata a settle stores on its settlement. */
const SettleMetadata = Schema.Record(Schema.String, Schema.String)
const decodeTtl = (value: number): Effect.Effect<number, InvalidInput> => decodeTtlMillis(value)
const decodeLeaseTtl = decodeInput(TtlMillis, "ttlMillis")

/**
 * The input of `open`, decoded at the boundary.
 *
 * @since 0.1.0
 * @category schemas
 */
export const OpenRequest = Schema.Struct({
  /** The request id: the idempotency key of the hold. */
  holdId: Id,
  accountId: Id,
  /** The API key whose budget is capped; omit for playground requests. */
  tokenId: Schema.optionalKey(Id),
  /** The estimate P to reserve. */
  estimate: Quota,
  /**
   * A billing preference: a built-in name or one of the engine's `preferences`;
   * empty or unknown values mean `subscription_first`.
   */
  preference: Schema.optionalKey(Schema.String),
  /** No token budget is reserved or charged. */
  playground: Schema.optionalKey(Schema.Boolean),
  /** Never apply the trust bypass. */
  force: Schema.optionalKey(Schema.Boolean),
  /** An explicit order of funding source ids, overriding the preference. */
  sources: Schema.optionalKey(Schema.Array(Id).check(Schema.isMinLength(1))),
  /**
   * Split funding for this request: when no single source can cover the
   * estimate, draw from several in order (default: the engine's
   * `splitFundingFor`, else off).
   */
  split: Schema.optionalKey(Schema.Boolean),
  /** Lifetime of the hold before the recovery pass may refund it (at most 7 days). */
  ttlMillis: Schema.optionalKey(TtlMillis),
  metadata: Schema.optionalKey(Schema.Record(Schema.String, Schema.String))
})

/**
 * The encoded (plain) form of {@link OpenRequest} that callers pass.
 *
 * @since 0.1.0
 * @category models
 */
export type OpenRequest = typeof OpenRequest.Encoded

/**
 * The input of `correct` (billing-semantics §4.4), decoded at the boundary.
 *
 * @since 0.2.0
 * @category schemas
 */
export const CorrectRequest = Schema.Struct({
  /** The settled hold (request id) whose charge is corrected. */
  holdId: Id,
  /** The correction's own idempotency key (unique per hold). */
  correctionId: Id,
  /** How much of the charge to give back (> 0, at most what is still charged). */
  amount: Quota.check(Schema.isGreaterThan(0, { message: "expected an integer > 0" }))
})

/**
 * The encoded (plain) form of {@link CorrectRequest} that callers pass.
 *
 * @since 0.2.0
 * @category models
 */
export type CorrectRequest = typeof CorrectRequest.Encoded

/**
 * The result of a correction: the correction as recorded on the hold (what
 * each part got back, and what is still charged after it). A repeat with the
 * same id and amount returns exactly this.
 *
 * @since 0.2.0
 * @category models
 */
export interface CorrectionResult extends Correction {
  readonly holdId: string
}

/**
 * Errors `correct` can fail with; each leaves every balance unchanged.
 *
 * @since 0.2.0
 * @category errors
 */
export type CorrectError =
  | InvalidInput
  | HoldNotFound
  | HoldResolved
  | IdempotencyConflict
  | CorrectionExceedsCharge
  | CorrectionUnsupported
  | ContractViolation
  | QuotaOutOfRange
  | UnknownSource
  | StoreError

/**
 * Engine options.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Lifetime of a hold (default 10 minutes, at most 7 days: `make` fails with `InvalidInput` above). */
  readonly holdTtlMillis?: number
  /**
   * Trust bypass (off by default): when the wallet balance and the token's
   * remaining budget (or an unlimited token) are strictly above `threshold`,
   * reserve nothing and charge everything at settlement. It trades overdraft
   * protection for fewer writes: concurrent trusted requests can overdraw.
   */
  readonly trustBypass?: { readonly threshold: number }
  /** Ids of the wallet and subscription roles (default `"wallet"`, `"subscription"`). */
  readonly roles?: FundingResolver.Roles
  /**
   * Named custom preferences: name → ordered funding source ids (for example
   * `{ vouchers_first: ["vouchers", "subscription", "wallet"] }`), usable next
   * to the four built-in names as an open's `preference`. A chain naming an
   * unregistered source, a built-in name or a malformed name fails `make`
   * with `InvalidInput` naming the field.
   */
  readonly preferences?: Preference.Chains
  /** Id of the token budget (default `"token"`). */
  readonly tokenBudgetId?: string
  /** How many expired holds one `reapExpired` call handles (default 500). */
  readonly reapBatch?: number
  /**
   * Per-account opt-in to split funding, asked when an open does not set
   * `split` and no single source can cover the estimate.
   */
  readonly splitFundingFor?: (accountId: string) => Effect.Effect<boolean, StoreError>
}

/**
 * An open session: the settler handle plus the hold as recorded.
 *
 * @since 0.1.0
 * @category models
 */
export interface Session extends BillingSettler {
  readonly hold: Hold
  /** The hold's lease: renew it while the work runs (`withBilling` does it for you). */
  readonly lease: LeaseControl
}

/**
 * Options of `renew`.
 *
 * @since 0.3.0
 * @category models
 */
export interface RenewOptions {
  /** The new lease: now + `ttlMillis` (default: the engine's `holdTtlMillis`; at most 7 days). */
  readonly ttlMillis?: number
}

/**
 * Errors `open` can fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type OpenError =
  | InvalidInput
  | InsufficientFunds
  | TokenBudgetExceeded
  | IdempotencyConflict
  | HoldResolved
  | HoldInFlight
  | TokenNotFound
  | QuotaOutOfRange
  | StoreError
  | UnknownSource
  | ContractViolation

export type { ReapError, ReapFailure, ReapReport }

/**
 * The engine service.
 *
 * @since 0.1.0
 * @category services
 */
export class BillingSession extends Context.Service<BillingSession, {
  /**
   * Reserves the estimate and records a hold. Idempotent by `holdId`: a second
   * open never debits. While the first hold is pending it fails with
   * `HoldInFlight` (no handle to the running request's hold); once resolved,
   * `HoldResolved` carrying the first outcome; another amount, account or token
   * is an `IdempotencyConflict`.
   */
  readonly open: (request: OpenRequest) => Effect.Effect<Session, OpenError>
  /**
   * Settles a hold with the actual cost, exactly once. A hold the recovery pass
   * already expired is charged late (billing-semantics §6: ledger kind
   * `late_settle`, the same sources, unbilled what nothing can pay; the result
   * has `late: true`); a refunded hold fails with `HoldResolved`.
   * `options.metadata` is stored on the settlement (for the
   * `SettlementRecorder`, which writes its record in the settle's transaction).
   */
  readonly settle: (holdId: string, actual: number, options?: SettleOptions) => Effect.Effect<Settlement, SettleError>
  /**
   * Renews the lease of a pending hold (billing-semantics §6): `expiresAt`
   * becomes now + `ttlMillis`, never more than 7 days after the open, with one
   * conditional write. A settled, refunded or expired hold is never
   * resurrected: `HoldResolved` (operation `renew`), nothing written.
   *
   * @since 0.3.0
   */
  readonly renew: (holdId: string, options?: RenewOptions) => Effect.Effect<Lease, RenewError>
  /** Refunds a hold, exactly once; a no-op after settle or expiry. */
  readonly refund: (holdId: string) => Effect.Effect<RefundResult, RefundError>
  /**
   * Post-consume: charges `actual` once after the work, through the source the
   * preference picks (fallback on insufficient funds only), without a balance
   * condition — the work is done, so the charge may take a balance negative.
   * Idempotent by `holdId`: a repeat with the same amount returns the first
   * settlement; another amount (or account, or token) is an
   * `IdempotencyConflict`. The request's `estimate` is ignored.
   */
  readonly charge: (
    request: OpenRequest,
    actual: number,
    options?: SettleOptions
  ) => Effect.Effect<Settlement, OpenError | SettleError>
  /**
   * Corrects a settled hold (a support refund, a billing dispute): gives back
   * `amount` of its charge through the sources that were charged (last charged
   * first) and the token, with ledger rows of kind `correction`, and lowers the
   * account's `usedQuota` by `amount` — in one transaction. Idempotent by
   * `correctionId`: the same id and amount returns the first result, the same
   * id with another amount is an `IdempotencyConflict`.
   */
  readonly correct: (request: CorrectRequest) => Effect.Effect<CorrectionResult, CorrectError>
  /** Reads a hold. */
  readonly get: (holdId: string) => Effect.Effect<Hold, HoldNotFound | StoreError>
  /** Refunds pending holds past their expiry and marks them expired, exactly once. */
  readonly reapExpired: (options?: { readonly limit?: number }) => Effect.Effect<ReapReport, StoreError>
}>()("@relay-billing/core/BillingSession") {
  /**
   * Builds the engine from a journal, a registry of sources and the account
   * counters. `BillingEvents` (default: dropped), `LowBalance` (default: in
   * memory, threshold 1,000) and `SettlementRecorder` (default: none) are read
   * when the layer is built; a recorder over another store than the journal's
   * fails it with `InvalidInput`. With `Source`s in the registry (since 0.4.0)
   * the engine also reads the store's `Ledger` (it writes their rows, one append
   * per transaction) and `SqlStore` (handed to them inside its transactions);
   * without them, moving such a source fails with a `StoreError` naming the
   * missing service.
   */
  static layer(
    options: Options = {}
  ): Layer.Layer<BillingSession, InvalidInput, HoldJournal | FundingRegistry | AccountCounters> {
    return Layer.effect(BillingSession, BillingSession.make(options))
  }

  /**
   * Builds the engine value; an option out of bounds (`holdTtlMillis`) or a
   * custom preference naming an unknown source fails with `InvalidInput`.
   */
  static make(options: Options = {}) {
    return Effect.gen(function*() {
      if (options.holdTtlMillis !== undefined) yield* decodeTtl(options.holdTtlMillis)
      const journal = yield* HoldJournal
      const recorder = yield* SettlementRecorder
      if (recorder !== undefined && recorder.storeId !== journal.storeId) {
        return yield* new InvalidInput({
          field: "SettlementRecorder.storeId",
          value: InvalidInput.render(recorder.storeId),
          reason: `must be the journal's store (${journal.storeId}): the record is written in the settle's transaction`
        })
      }
      const config = { holdTtlMillis: options.holdTtlMillis ?? 10 * 60 * 1000 }
      const registry = yield* FundingRegistry
      const preferences = options.preferences === undefined
        ? {}
        : yield* FundingResolver.validate(options.preferences, registry.fundingIds)
      const ledger = yield* Effect.serviceOption(Ledger)
      const sql = yield* Effect.serviceOption(SqlStore)
      if (sql._tag === "Some" && sql.value.id !== journal.storeId) {
        return yield* new InvalidInput({
          field: "SqlStore.id",
          value: InvalidInput.render(sql.value.id),
          reason: `must be the journal's store (${journal.storeId}): a Source moves inside the hold's transaction`
        })
      }
      const engine = makeEngine({
        journal,
        ledger: Option.getOrUndefined(ledger),
        sql: Option.getOrUndefined(sql),
        recorder,
        registry,
        counters: yield* AccountCounters,
        events: yield* BillingEvents,
        lowBalance: yield* LowBalance,
        config: {
          holdTtlMillis: config.holdTtlMillis,
          trustThreshold: options.trustBypass?.threshold,
          roles: options.roles ?? FundingResolver.defaultRoles,
          preferences,
          tokenBudgetId: options.tokenBudgetId ?? "token",
          reapBatch: options.reapBatch ?? 500,
          splitFundingFor: options.splitFundingFor
        }
      })
      const decodeRequest = decodeInput(OpenRequest, "")
      const decodeCorrect = decodeInput(CorrectRequest, "")
      const decodeMetadata = decodeInput(SettleMetadata, "metadata")
      const metadataOf = (options: SettleOptions | undefined) =>
        options?.metadata === undefined ? Effect.succeed(undefined) : decodeMetadata(options.metadata)
      // -0 is a valid quota but is stored and compared as 0.
      const decodeOpen = (request: unknown) =>
        Effect.map(decodeRequest(request), (r) => ({ ...r, estimate: QuotaModule.normalize(r.estimate) }))
      return BillingSession.of({
        open: (request) => Effect.flatMap(decodeOpen(request), engine.open),
        settle: (holdId, actual, opts) => Effect.flatMap(metadataOf(opts), (m) => engine.settle(holdId, actual, m)),
        renew: (holdId, renewOptions) =>
          renewOptions?.ttlMillis === undefined
            ? engine.renew(holdId, config.holdTtlMillis)
            : Effect.flatMap(decodeLeaseTtl(renewOptions.ttlMillis), (ttl) => engine.renew(holdId, ttl)),
        refund: (holdId) => engine.refund(holdId),
        get: (holdId) => engine.get(holdId),
        charge: (request, actual, opts) =>
          Effect.flatMap(
            Effect.zip(decodeOpen({ ...request, estimate: 0 }), metadataOf(opts)),
            ([r, m]) => engine.charge(r, actual, m)
          ),
        reapExpired: (opts) => engine.reapExpired(opts),
        correct: (request) => Effect.flatMap(decodeCorrect(request), engine.correct)
      })
    })
  }
}

/**
 * Opens a session with the `BillingSession` in context.
 *
 * @since 0.1.0
 * @category accessors
 */
export const open = (request: OpenRequest): Effect.Effect<Session, OpenError, BillingSession> =>
  Effect.gen(function*() {
    const engine = yield* BillingSession
    return yield* engine.open(request)
  })
