/**
 * Idempotency of late charges (billing-semantics §6) for sources that persist
 * through the knex client: every ledger row a source's `lateSettle` writes for
 * one (source, hold) carries an idempotency key derived from them, so the
 * ledger's unique key refuses a second application, and a repeat finds the
 * rows the first one wrote and answers from them — also when the source is
 * used as an external source of another store's holds.
 *
 * @since 0.3.0
 */
import { createHash } from "node:crypto"
import { Effect } from "effect"
import type { BillingError, FundingSource, Ledger } from "@relay-billing/core"
import type { Client } from "./KnexClient.js"
import * as KnexLedger from "./KnexLedger.js"

const prefix = (sourceId: string, holdId: string) =>
  `late_settle:${createHash("sha256").update(JSON.stringify([sourceId, holdId])).digest("hex")}`

/**
 * The idempotency key of the `index`-th ledger row a late charge of
 * `sourceId` for `holdId` writes (fixed length, whatever the ids).
 *
 * @since 0.3.0
 * @category keys
 */
export const key = (sourceId: string, holdId: string, index = 0): string => `${prefix(sourceId, holdId)}:${index}`

/**
 * The ledger rows a late charge of `sourceId` for `holdId` already wrote, in
 * order (empty when it was never applied).
 *
 * @since 0.3.0
 * @category queries
 */
export const recorded = (
  client: Client,
  sourceId: string,
  holdId: string
): Effect.Effect<ReadonlyArray<Ledger.LedgerEntry>, BillingError.StoreError> =>
  KnexLedger.entries(client, { holdId, idempotencyKeyPrefix: `${prefix(sourceId, holdId)}:` })

/**
 * The answer of a late charge of `amount`, rebuilt from the rows it wrote
 * (`undefined` when none were written): what was not charged is what its
 * rows recorded as unbilled; the balance after is the last row's on
 * `subjectId`, if any.
 *
 * @since 0.3.0
 * @category queries
 */
export const replay = (
  client: Client,
  request: { readonly sourceId: string; readonly holdId: string; readonly subjectId: string; readonly amount: number }
): Effect.Effect<FundingSource.PartResult | undefined, BillingError.StoreError> =>
  Effect.map(recorded(client, request.sourceId, request.holdId), (rows) => {
    if (rows.length === 0) return undefined
    const unbilled = rows.reduce((s, r) => s + (r.unbilled ?? 0), 0)
    const own = rows.filter((r) => r.subjectId === request.subjectId)
    const last = own[own.length - 1]
    return { charged: request.amount - unbilled, unbilled, ...(last ? { balanceAfter: last.balanceAfter } : {}) }
  })
