/**
 * Idempotency of corrections (billing-semantics §4.4) for sources that persist
 * through the knex client: every `correction` ledger row of one (source, hold,
 * correction id) carries an idempotency key derived from them, so the ledger's
 * unique key refuses a second application, and a repeat can find the rows the
 * first one wrote and answer from them.
 *
 * @since 0.2.0
 */
import { createHash } from "node:crypto"
import type { Effect } from "effect"
import type { BillingError, Ledger } from "@relay-billing/core"
import type { Client } from "./KnexClient.js"
import * as KnexLedger from "./KnexLedger.js"

const prefix = (sourceId: string, holdId: string, correctionId: string) =>
  `correction:${createHash("sha256").update(JSON.stringify([sourceId, holdId, correctionId])).digest("hex")}`

/**
 * The idempotency key of the `index`-th ledger row a correction writes
 * (fixed length, whatever the lengths of the ids).
 *
 * @since 0.2.0
 * @category keys
 */
export const key = (sourceId: string, holdId: string, correctionId: string, index = 0): string =>
  `${prefix(sourceId, holdId, correctionId)}:${index}`

/**
 * The ledger rows a correction of `sourceId` already wrote, in order (empty
 * when it was never applied).
 *
 * @since 0.2.0
 * @category queries
 */
export const recorded = (
  client: Client,
  sourceId: string,
  holdId: string,
  correctionId: string
): Effect.Effect<ReadonlyArray<Ledger.LedgerEntry>, BillingError.StoreError> =>
  KnexLedger.entries(client, { holdId, idempotencyKeyPrefix: `${prefix(sourceId, holdId, correctionId)}:` })
