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
import { insertRowsSql, memo } from "./internal/statements.js"
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

const columns = [
  "at",
  "kind",
  "source_id",
  "subject_id",
  "account_id",
  "hold_id",
  "amount",
  "balance_after",
  "unbilled",
  "note",
  "idempotency_key"
] as const

/** The INSERT of `n` rows of each client, by row count (written once per count). */
const insertTexts = new WeakMap<Client, (n: number) => string>()

const insertText = (client: Client): (n: number) => string => {
  let text = insertTexts.get(client)
  if (text === undefined) {
    const table = client.table("ledger")
    text = memo((n: number) => insertRowsSql(client.dialect, table, columns, n))
    insertTexts.set(client, text)
  }
  return text
}

/**
 * Appends rows through the client (the current transaction, if any), in one
 * multi-row INSERT.
 *
 * @since 0.1.0
 * @category mutations
 */
export const append = (client: Client, rows: ReadonlyArray<NewRow>): Effect.Effect<void, BillingError.StoreError> => {
  if (rows.length === 0) return Effect.void
  const params: Array<unknown> = []
  for (const r of rows) {
    params.push(
      r.at,
      r.kind,
      r.sourceId,
      r.subjectId,
      r.accountId,
      r.holdId ?? null,
      r.amount,
      r.balanceAfter,
      r.unbilled ?? null,
      r.note ?? null,
      r.idempotencyKey ?? null
    )
  }
  return Effect.asVoid(client.execute("ledger.append", insertText(client)(rows.length), params))
}

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
