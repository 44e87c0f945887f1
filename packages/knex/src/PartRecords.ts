/**
 * Per-source reservation records, keyed by (source id, hold id): what makes a
 * funding source's reserve, settle and refund idempotent. Used by the wallet,
 * token-budget and subscription sources; available to plugins that persist in
 * the same database.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import { BillingError as BillingErrors } from "@relay-billing/core"
import type { BillingError, FundingSource } from "@relay-billing/core"
import type { Client } from "./KnexClient.js"
import { decodeRows, insertIgnore, int } from "./internal/sql.js"

/**
 * The status of one source's reservation.
 *
 * @since 0.1.0
 * @category models
 */
export type PartStatus = "reserved" | "settled" | "refunded"

/**
 * One record.
 *
 * @since 0.1.0
 * @category models
 */
export interface PartRecord {
  readonly sourceId: string
  readonly holdId: string
  readonly subjectId: string
  readonly amount: number
  readonly ref?: string
  readonly status: PartStatus
  readonly result?: FundingSource.PartResult
}

const fromRow = (row: Record<string, unknown>): PartRecord => ({
  sourceId: String(row["source_id"]),
  holdId: String(row["hold_id"]),
  subjectId: String(row["subject_id"]),
  amount: int(row["amount"], "amount"),
  ...(row["ref"] !== null && row["ref"] !== undefined ? { ref: String(row["ref"]) } : {}),
  status: String(row["status"]) as PartStatus,
  ...(row["result"] ? { result: JSON.parse(String(row["result"])) as FundingSource.PartResult } : {})
})

/**
 * Reads a record, locking it until the transaction ends where the dialect can.
 *
 * @since 0.1.0
 * @category queries
 */
export const get = (
  client: Client,
  sourceId: string,
  holdId: string
): Effect.Effect<PartRecord | undefined, BillingError.StoreError> =>
  client.query(`${sourceId}.part.get`, (db) => {
    const q = db(client.table("hold_parts")).where({ source_id: sourceId, hold_id: holdId }).first()
    return client.dialect === "sqlite" ? q : q.forUpdate()
  }).pipe(
    Effect.flatMap((row) => decodeRows(`${sourceId}.part.get`, () => (row ? fromRow(row) : undefined)))
  )

/**
 * Inserts a new `reserved` record.
 *
 * @since 0.1.0
 * @category mutations
 */
export const insert = (
  client: Client,
  record: { readonly sourceId: string; readonly holdId: string; readonly subjectId: string; readonly amount: number; readonly ref?: string }
): Effect.Effect<void, BillingError.StoreError> =>
  client.query(`${record.sourceId}.part.insert`, (db) =>
    db(client.table("hold_parts")).insert({
      source_id: record.sourceId,
      hold_id: record.holdId,
      subject_id: record.subjectId,
      amount: record.amount,
      ref: record.ref ?? null,
      status: "reserved",
      result: null
    })).pipe(Effect.asVoid)

/**
 * Inserts a new `reserved` record unless one exists for (source, hold); returns
 * whether it inserted. Lets a reserve claim its hold id in one statement.
 *
 * @since 0.1.0
 * @category mutations
 */
export const claim = (
  client: Client,
  record: { readonly sourceId: string; readonly holdId: string; readonly subjectId: string; readonly amount: number; readonly ref?: string }
): Effect.Effect<boolean, BillingError.StoreError> =>
  insertIgnore(client, `${record.sourceId}.part.claim`, client.table("hold_parts"), {
    source_id: record.sourceId,
    hold_id: record.holdId,
    subject_id: record.subjectId,
    amount: record.amount,
    ref: record.ref ?? null,
    status: "reserved",
    result: null
  }, ["source_id", "hold_id"]).pipe(Effect.map((n) => n === 1))

/**
 * Claims the hold id for a new reservation, or replays the reservation already
 * recorded for it: `undefined` when this call claimed it (go on and reserve),
 * the existing reservation when there is one, and a typed `HoldResolved` when
 * the hold id was refunded. Makes every source's reserve idempotent by hold id
 * in one statement on the normal path.
 *
 * @since 0.1.0
 * @category mutations
 */
export const claimOrReplay = (
  client: Client,
  record: { readonly sourceId: string; readonly holdId: string; readonly subjectId: string; readonly amount: number }
): Effect.Effect<FundingSource.Reservation | undefined, BillingError.HoldResolved | BillingError.StoreError> =>
  Effect.gen(function*() {
    if (yield* claim(client, record)) return undefined
    const existing = yield* get(client, record.sourceId, record.holdId)
    if (existing?.status === "refunded") {
      return yield* new BillingErrors.HoldResolved({ holdId: record.holdId, status: "refunded", operation: "reserve" })
    }
    if (existing) return { amount: existing.amount, ...(existing.ref !== undefined ? { ref: existing.ref } : {}) }
    return yield* new BillingErrors.StoreError({
      operation: `${record.sourceId}.reserve`,
      detail: `hold ${record.holdId} is being reserved concurrently`
    })
  })

/**
 * Deletes a record (a claim whose reservation then failed).
 *
 * @since 0.1.0
 * @category mutations
 */
export const remove = (client: Client, sourceId: string, holdId: string): Effect.Effect<void, BillingError.StoreError> =>
  client.query(`${sourceId}.part.remove`, (db) =>
    db(client.table("hold_parts")).where({ source_id: sourceId, hold_id: holdId }).delete()).pipe(Effect.asVoid)

/**
 * Marks a record settled with its result (stored so a repeat returns it).
 *
 * @since 0.1.0
 * @category mutations
 */
export const markSettled = (
  client: Client,
  sourceId: string,
  holdId: string,
  result: FundingSource.PartResult
): Effect.Effect<void, BillingError.StoreError> =>
  client.query(`${sourceId}.part.settle`, (db) =>
    db(client.table("hold_parts"))
      .where({ source_id: sourceId, hold_id: holdId })
      .update({ status: "settled", result: JSON.stringify(result) })).pipe(Effect.asVoid)

/**
 * Marks a record refunded.
 *
 * @since 0.1.0
 * @category mutations
 */
export const markRefunded = (
  client: Client,
  sourceId: string,
  holdId: string
): Effect.Effect<void, BillingError.StoreError> =>
  client.query(`${sourceId}.part.refund`, (db) =>
    db(client.table("hold_parts"))
      .where({ source_id: sourceId, hold_id: holdId })
      .update({ status: "refunded" })).pipe(Effect.asVoid)

/**
 * Ends a record after giving its amount back: a refund or expiry keeps it as
 * `refunded` (the hold id is never reserved again); a release (the open failed)
 * deletes it, so the same hold id can be reserved afresh.
 *
 * @since 0.1.0
 * @category mutations
 */
export const end = (
  client: Client,
  sourceId: string,
  holdId: string,
  reason: "refund" | "expire" | "release"
): Effect.Effect<void, BillingError.StoreError> =>
  reason === "release" ? remove(client, sourceId, holdId) : markRefunded(client, sourceId, holdId)
