/**
 * The v2 source contract: a source in the hold's store only moves balances.
 *
 * The engine owns every hold and its parts (status, amounts, idempotency, ledger
 * rows, audit). A source is told, inside the transaction the engine runs,
 * "take `amount` from `subject` if it has it" ({@link Source.take}) and "move
 * `subject` by `delta`" ({@link Source.move}), does one conditional statement
 * each, and answers what it moved and the balance after. It keeps no hold ids:
 * a repeated settle or refund never reaches it, because the hold's own
 * conditional status transition, written in the same transaction, decides first.
 *
 * One shape for money and for caps: a `"funding"` source pays (the wallet, a
 * subscription, a plugin's vouchers); a `"budget"` is a cap that every charge also
 * hits (a token's `remainQuota`).
 *
 * A source outside the hold's store (an external credits API) implements the
 * two-phase contract of `FundingSource` instead (reserve / settle / refund keyed
 * by hold id, each idempotent), and the engine records durable intents around it.
 *
 * @since 0.4.0
 */
import { Exit, Schema } from "effect"
import type { Effect } from "effect"
import type {
  InsufficientFunds,
  QuotaOutOfRange,
  StoreError,
  TokenBudgetExceeded,
  TokenNotFound
} from "./BillingError.js"
import type { Availability } from "./FundingSource.js"
import type { Quota } from "./Quota.js"
import type { SqlStore } from "./SqlStore.js"

/**
 * What a source is: `"funding"` pays for requests; `"budget"` caps them (every
 * charge hits one budget part, if any, and the funding parts).
 *
 * @since 0.4.0
 * @category models
 */
export type Role = "funding" | "budget"

/**
 * How much a take may take:
 *
 * - `"exact"`: all of `amount` or nothing (fail with the shortfall error);
 * - `"upTo"`: split funding, as much as the subject has, more than 0, at most
 *   `amount` (fail with the shortfall error when it has nothing);
 * - `"unconditional"`: post-consume, the work is done: take `amount` with no
 *   balance condition (a wallet may go negative).
 *
 * @since 0.4.0
 * @category models
 */
export type TakeMode = "exact" | "upTo" | "unconditional"

/**
 * Take `amount` from `subjectId` (the account for funding sources, the token
 * for budgets), in the engine's transaction (`sql`).
 *
 * @since 0.4.0
 * @category models
 */
export interface TakeRequest {
  /** The store's executor, bound to the engine's transaction. */
  readonly sql: SqlStore["Service"]
  /** The hold being opened: for logs only; a source never stores it. */
  readonly holdId: string
  readonly accountId: string
  readonly subjectId: string
  readonly amount: Quota
  readonly mode: TakeMode
  readonly metadata?: Readonly<Record<string, string>>
}

/**
 * What a take did: `amount` taken (equal to the request for `"exact"` and
 * `"unconditional"`, `0 < amount ≤ requested` for `"upTo"`), the subject's
 * balance after it (read by the same statement), and an optional `ref` the engine
 * records in the part and hands back on every later move (for example the
 * subscription row and period it drew from).
 *
 * @since 0.4.0
 * @category models
 */
export interface Taken {
  readonly amount: number
  readonly balanceAfter: number
  readonly ref?: string
  /**
   * The subject whose balance moved, when it is not the request's `subjectId`
   * (a subscription row drawn for the account): the ledger row names it, and the
   * audit sums the source's rows by it.
   */
  readonly subjectId?: string
}

/**
 * Why a balance moves; it becomes the ledger row's kind (an `"overflow"` row
 * takes the kind of the phase that overflowed, `settle` or `late_settle`, with
 * the note `overflow of <capped source id>`, by which a correction finds it).
 *
 * - `"settle"`: the settlement adjusts a part by `actual − reserved`;
 * - `"refund"` / `"expire"`: the hold is refunded / its lease lapsed;
 * - `"release"`: the open that took it failed or moved on along the chain;
 * - `"correction"`: part of a settled charge is given back (§4.4);
 * - `"late_settle"`: a settle arrived after expiry and charges afresh (§6);
 * - `"overflow"`: the rest of a charge the previous source of the hold's chain
 *   capped (§3.2, case 13): a subscription at its total sends it to the wallet.
 *
 * @since 0.4.0
 * @category models
 */
export type MoveKind = "settle" | "refund" | "expire" | "release" | "correction" | "late_settle" | "overflow"

/**
 * Move `subjectId`'s balance by `delta`: negative charges the subject, positive
 * gives back. No balance condition, except the source's own cap for a charge
 * (a subscription's period total, a wallet floored at zero): it then moves what
 * it can and answers it, and the engine sends the rest along the chain or
 * records it as unbilled.
 *
 * @since 0.4.0
 * @category models
 */
export interface MoveRequest {
  readonly sql: SqlStore["Service"]
  readonly holdId: string
  readonly accountId: string
  readonly subjectId: string
  /** What the take answered, if anything. */
  readonly ref?: string
  readonly delta: number
  readonly kind: MoveKind
}

/**
 * What a move did: `moved` has the sign of `delta` and `|moved| ≤ |delta|`
 * (equal unless the source capped a charge), and the balance after.
 *
 * @since 0.4.0
 * @category models
 */
export interface Moved {
  readonly moved: number
  /** The balance after the move; `Number.MAX_SAFE_INTEGER` for an unlimited subject (no low-balance warning). */
  readonly balanceAfter: number
  /** The subject whose balance moved, when it is not the request's `subjectId` (see {@link Taken.subjectId}). */
  readonly subjectId?: string
  /**
   * For a capped charge (`|moved| < |delta|`): whether the rest may go on to the
   * next funding source of the hold's chain (a plan's `allowWalletOverflow`).
   * Default: the source's `availability(…).allowFallback`, and no overflow for a
   * source without `availability` (its cap is final: the rest is unbilled).
   */
  readonly overflow?: boolean
}

/**
 * A column the SDK's audit checks: for each subject, the column summed over
 * the subject's rows, times `sign`, must equal the sum of the source's ledger
 * rows for that subject (for example
 * `{ table: "accounts", subject: "id", column: "balance" }`).
 *
 * @since 0.4.0
 * @category models
 */
export interface AuditColumn {
  readonly table: string
  readonly subject: string
  readonly column: string
  /** `-1` when the column counts up as the ledger counts down (a used amount). */
  readonly sign?: 1 | -1
}

/**
 * One migration of a source's own tables, run by the store's migration runner
 * with the others (`name` unique within the source).
 *
 * @since 0.4.0
 * @category models
 */
export interface Migration {
  readonly name: string
  readonly up: (sql: SqlStore["Service"]) => Effect.Effect<void, StoreError>
  readonly down?: (sql: SqlStore["Service"]) => Effect.Effect<void, StoreError>
}

/**
 * The contract of a source in the hold's store.
 *
 * @since 0.4.0
 * @category models
 */
export interface Source {
  /** Unique id, the name used in preference chains and ledger rows. */
  readonly id: string
  readonly role: Role
  /**
   * Takes from the subject with one conditional statement. Shortfall:
   * `InsufficientFunds` for funding, `TokenBudgetExceeded` for budgets; a subject
   * that does not belong to `accountId` fails with `TokenNotFound` (budgets) or
   * `InsufficientFunds` with `available: 0`.
   */
  readonly take: (
    request: TakeRequest
  ) => Effect.Effect<Taken, InsufficientFunds | TokenBudgetExceeded | TokenNotFound | QuotaOutOfRange | StoreError>
  /** Moves the subject's balance with one statement; `QuotaOutOfRange` (nothing written) outside ±(2^53−1). */
  readonly move: (request: MoveRequest) => Effect.Effect<Moved, QuotaOutOfRange | StoreError>
  /** The amount taken for a request of `requested` (default `requested`; a subscription takes at least 1). */
  readonly minimumReservation?: (requested: Quota) => Quota
  /** Whether the account can use this source now, and may go on along the chain after it. */
  readonly availability?: (
    sql: SqlStore["Service"],
    accountId: string
  ) => Effect.Effect<Availability, StoreError>
  /** The spendable balance (trust bypass, post-consume check); `MAX_SAFE_INTEGER` when unlimited. */
  readonly balance?: (sql: SqlStore["Service"], subjectId: string) => Effect.Effect<number, StoreError>
  /** The source's own tables. */
  readonly migrations?: ReadonlyArray<Migration>
  /** The columns the audit checks against this source's ledger rows. */
  readonly audit?: ReadonlyArray<AuditColumn>
}

/**
 * A plugin package's entry: what the reference relay (and `Billing.layer` users)
 * load by package name. The package exports it as `plugin` (or `default`).
 *
 * @since 0.4.0
 * @category models
 */
export interface Plugin<Options = unknown> {
  /** The default source id (`options.id` overrides it where the plugin allows). */
  readonly id: string
  /** Decodes the plugin's options from the host's config (unknown input). */
  readonly options: Schema.Decoder<Options>
  /** Builds the source. */
  readonly make: (options: Options) => Source
  /**
   * Decodes the options with the plugin's own copy of `effect` (set by
   * {@link plugin}). A host loads a plugin by package name, and the plugin may
   * resolve another copy of `effect` than the host (a schema's checks do not run
   * under another copy's parser): the host calls this instead of decoding
   * `options` itself. Excess properties are refused.
   */
  readonly decodeOptions?: (input: unknown) => DecodedOptions<Options>
}

/**
 * What {@link Plugin.decodeOptions} answers: the options, or the schema's error
 * (a `SchemaError` of the plugin's copy of `effect`).
 *
 * @since 0.4.0
 * @category models
 */
export type DecodedOptions<Options> =
  | { readonly _tag: "Success"; readonly value: Options }
  | { readonly _tag: "Failure"; readonly error: Schema.SchemaError }

/**
 * Whether a registered value is a `Source` (a balance mover in the hold's store)
 * rather than an external two-phase `FundingSource` or `Budget`: told apart by
 * shape (`take` versus `reserve`).
 *
 * @since 0.4.0
 * @category guards
 */
export const isSource = (value: object): value is Source =>
  typeof (value as { readonly take?: unknown }).take === "function" &&
  typeof (value as { readonly reserve?: unknown }).reserve !== "function"

/**
 * Declares a source (an identity function for type inference).
 *
 * @since 0.4.0
 * @category constructors
 */
export const make = (source: Source): Source => source

/**
 * Declares a plugin (an identity function for type inference).
 *
 * @since 0.4.0
 * @category constructors
 */
export const plugin = <Options>(plugin: Plugin<Options>): Plugin<Options> => {
  if (plugin.decodeOptions !== undefined) return plugin
  const decode = Schema.decodeUnknownExit(plugin.options, { onExcessProperty: "error" })
  return {
    ...plugin,
    decodeOptions: (input) => {
      const exit = decode(input)
      if (Exit.isSuccess(exit)) return { _tag: "Success", value: exit.value }
      const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")
      if (error?._tag === "Fail") return { _tag: "Failure", error: error.error }
      throw new Error(`the options schema of plugin ${plugin.id} died while decoding`)
    }
  }
}
