/**
 * The durable ledger: an append-only table with one row for every balance
 * change, written inside the transaction that changes the balance (by the
 * engine, from what the sources answer; by the admin operations).
 *
 * @since 0.1.0
 */
import { Ledger } from "@relay-billing/core"
import type { BillingError } from "@relay-billing/core"
import { Effect, Layer } from "effect"
import { decodeRows, int, intOrNull } from "./internal/sql.js"
import type { Client } from "./KnexClient.js"
import { KnexClient } from "./KnexClient.js"

/**
 * A row to append, with an optional idempotency key (unique: a second row with
 * the same key is rejected by the database).
 *
 * @since 0.1.0
 * @category models
 */
export type NewRow = Ledger.NewLedgerEntry & { readonly idempotencyKey?: string }

/**
 * Appends rows through the client (the current transaction, if any).
 *
 * @since 0.1.0
 * @category mutations
 */
export const append = (client: Client, rows: ReadonlyArray<NewRow>): Effect.Effect<void, BillingError.StoreError> =>
  rows.length === 0 ?
    Effect.void :
    client.query("ledger.append", (db) =>
      db(client.table("ledger")).insert(rows.map((r) => ({
        at: r.at,
        kind: r.kind,
        source_id: r.sourceId,
        subject_id: r.subjectId,
        account_id: r.accountId,
        hold_id: r.holdId ?? null,
        amount: r.amount,
        balance_after: r.balanceAfter,
        unbilled: r.unbilled ?? null,
        note: r.note ?? null,
        idempotency_key: r.idempotencyKey ?? null
      })))).pipe(Effect.asVoid)

const fromRow = (row: Record<string, unknown>): Ledger.LedgerEntry => {
  const holdId = row["hold_id"]
  const unbilled = intOrNull(row["unbilled"], "unbilled")
  const note = row["note"]
  return {
    id: String(row["seq"]),
    at: int(row["at"], "at"),
    kind: String(row["kind"]) as Ledger.EntryKind,
    sourceId: String(row["source_id"]),
    subjectId: String(row["subject_id"]),
    accountId: String(row["account_id"]),
    ...(holdId !== null && holdId !== undefined ? { holdId: String(holdId) } : {}),
    amount: int(row["amount"], "amount"),
    balanceAfter: int(row["balance_after"], "balance_after"),
    ...(unbilled !== undefined ? { unbilled } : {}),
    ...(note !== null && note !== undefined ? { note: String(note) } : {})
  }
}

/**
 * Reads rows matching a filter, in append order.
 *
 * @since 0.1.0
 * @category queries
 */
export const entries = (
  client: Client,
  filter: Ledger.LedgerFilter & {
    /** Only rows whose idempotency key starts with this (hex and `:` only: no LIKE wildcards). */
    readonly idempotencyKeyPrefix?: string
  }
) =>
  client.query("ledger.entries", (db) => {
    const q = db(client.table("ledger")).select("*").orderBy("seq", "asc")
    if (filter.accountId !== undefined) q.where("account_id", filter.accountId)
    if (filter.subjectId !== undefined) q.where("subject_id", filter.subjectId)
    if (filter.sourceId !== undefined) q.where("source_id", filter.sourceId)
    if (filter.holdId !== undefined) q.where("hold_id", filter.holdId)
    if (filter.idempotencyKeyPrefix !== undefined) q.where("idempotency_key", "like", `${filter.idempotencyKeyPrefix}%`)
    return q
  }).pipe(Effect.flatMap((rows) => decodeRows("ledger.entries", () => rows.map(fromRow))))

/**
 * The core `Ledger` service over a client.
 *
 * @since 0.4.0
 * @category constructors
 */
export const make = (client: Client): Ledger.Ledger["Service"] =>
  Ledger.Ledger.of({
    append: (rows) => append(client, rows),
    entries: (filter) => entries(client, filter)
  })

/**
 * The core `Ledger` service over the knex client.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Ledger.Ledger, never, KnexClient> = Layer.effect(
  Ledger.Ledger,
  Effect.gen(function*() {
    return make(yield* KnexClient)
  })
)
