/**
 * The durable hold journal: one row per hold with its parts, status, expiry and
 * settlement, in the `<prefix>holds` table. Holds are inserted with
 * INSERT … ON CONFLICT DO NOTHING (INSERT IGNORE on MySQL) so that two
 * processes opening the same request id cannot both reserve, and updated with a
 * compare-and-set on the status so a hold resolves exactly once.
 *
 * @since 0.1.0
 */
import { Hold, HoldIntent, HoldJournal } from "@relay-billing/core"
import { Effect, Layer, Schema } from "effect"
import { decodeRows, insertIgnore, int, intOrNull } from "./internal/sql.js"
import { ident, insertIgnoreSql } from "./internal/statements.js"
import type { Client } from "./KnexClient.js"
import { KnexClient } from "./KnexClient.js"

const decodeHold = Schema.decodeUnknownSync(Hold.Hold)
const decodeIntent = Schema.decodeUnknownSync(HoldIntent.HoldIntent)

const intentRow = (intent: HoldIntent.HoldIntent) => ({
  hold_id: intent.holdId,
  phase: intent.phase,
  step: intent.step,
  account_id: intent.accountId,
  token_id: intent.tokenId ?? null,
  amount: intent.amount,
  targets: JSON.stringify(intent.targets),
  status: intent.status,
  outcome: intent.outcome ?? null,
  created_at: intent.createdAt,
  due_at: intent.dueAt
})

const intentFromRow = (row: Record<string, unknown>): HoldIntent.HoldIntent =>
  decodeIntent({
    holdId: row["hold_id"],
    phase: row["phase"],
    step: row["step"],
    accountId: row["account_id"],
    ...(row["token_id"] !== null && row["token_id"] !== undefined ? { tokenId: row["token_id"] } : {}),
    amount: int(row["amount"], "amount"),
    targets: JSON.parse(String(row["targets"])),
    status: row["status"],
    ...(row["outcome"] !== null && row["outcome"] !== undefined ? { outcome: row["outcome"] } : {}),
    createdAt: int(row["created_at"], "created_at"),
    dueAt: int(row["due_at"], "due_at")
  })

/** The columns of a hold row, in the order of {@link holdValues}. */
const holdColumns = [
  "id",
  "account_id",
  "token_id",
  "estimate",
  "reserved",
  "preference",
  "trusted",
  "status",
  "parts",
  "created_at",
  "expires_at",
  "resolved_at",
  "settlement",
  "metadata"
] as const

/** A hold's row values, in the order of {@link holdColumns}. */
const holdValues = (hold: Hold.Hold): ReadonlyArray<unknown> => [
  hold.id,
  hold.accountId,
  hold.tokenId ?? null,
  hold.estimate,
  hold.reserved,
  hold.preference,
  hold.trusted,
  hold.status,
  JSON.stringify(hold.parts),
  hold.createdAt,
  hold.expiresAt,
  hold.resolvedAt ?? null,
  hold.settlement ? JSON.stringify(hold.settlement) : null,
  hold.metadata ? JSON.stringify(hold.metadata) : null
]

const fromRow = (row: Record<string, unknown>): Hold.Hold => {
  const resolvedAt = intOrNull(row["resolved_at"], "resolved_at")
  return decodeHold({
    id: row["id"],
    accountId: row["account_id"],
    ...(row["token_id"] !== null && row["token_id"] !== undefined ? { tokenId: row["token_id"] } : {}),
    estimate: int(row["estimate"], "estimate"),
    reserved: int(row["reserved"], "reserved"),
    preference: row["preference"],
    trusted: Boolean(row["trusted"]),
    status: row["status"],
    parts: JSON.parse(String(row["parts"])),
    createdAt: int(row["created_at"], "created_at"),
    expiresAt: int(row["expires_at"], "expires_at"),
    ...(resolvedAt !== undefined ? { resolvedAt } : {}),
    ...(row["settlement"] ? { settlement: JSON.parse(String(row["settlement"])) } : {}),
    ...(row["metadata"] ? { metadata: JSON.parse(String(row["metadata"])) } : {})
  })
}

/**
 * Builds the journal over a client.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (client: Client): HoldJournal.HoldJournal["Service"] => {
  const holds = client.table("holds")
  const intents = client.table("intents")
  // The hot path's statements, written once (run on the transaction's driver connection).
  const d = client.dialect
  const t = ident(d, holds)
  const insertSql = insertIgnoreSql(d, holds, holdColumns, ["id"])
  const selectSql = `select ${holdColumns.map((c) => ident(d, c)).join(", ")} from ${t} where ${ident(d, "id")} = ?`
  const selectForUpdateSql = client.dialect === "sqlite" ? selectSql : `${selectSql} for update`
  // Only what a hold changes after it was inserted, if it is still in the expected status.
  const updateSql = `update ${t} set ${
    ["status", "reserved", "trusted", "parts", "resolved_at", "settlement"].map((c) => `${ident(d, c)} = ?`).join(", ")
  } where ${ident(d, "id")} = ? and ${ident(d, "status")} = ?`
  // One conditional write: only a pending hold, and a lease never shrinks (§6).
  const renewSql = `update ${t} set ${ident(d, "expires_at")} = ? where ${ident(d, "id")} = ? and ${
    ident(d, "status")
  } = 'pending' and ${ident(d, "expires_at")} < ?`
  const readIntent = (operation: string, holdId: string, phase: HoldIntent.IntentPhase, forUpdate: boolean) =>
    client.query(operation, (db) => {
      const q = db(intents).where({ hold_id: holdId, phase }).first()
      return forUpdate && lockable ? q.forUpdate() : q
    }).pipe(Effect.flatMap((row) => decodeRows(operation, () => (row ? intentFromRow(row) : undefined))))
  const lockable = client.dialect !== "sqlite"
  const readMany = (operation: string, rows: ReadonlyArray<Record<string, unknown>>) =>
    decodeRows(operation, () => rows.map(fromRow))
  return HoldJournal.HoldJournal.of({
    storeId: client.id,
    transaction: client.transaction,
    inTransaction: client.inTransaction,
    insert: (hold) =>
      Effect.map(client.execute("journal.insert", insertSql, holdValues(hold)), (r) => r.affected === 1),
    get: (holdId, options) =>
      client.execute("journal.get", options?.forUpdate ? selectForUpdateSql : selectSql, [holdId]).pipe(
        Effect.flatMap((r) => {
          const row = r.rows[0]
          return row ? decodeRows("journal.get", () => fromRow(row)) : Effect.succeed(undefined)
        })
      ),
    update: (hold, expected) =>
      Effect.map(
        client.execute("journal.update", updateSql, [
          hold.status,
          hold.reserved,
          hold.trusted,
          JSON.stringify(hold.parts),
          hold.resolvedAt ?? null,
          hold.settlement ? JSON.stringify(hold.settlement) : null,
          hold.id,
          expected
        ]),
        (r) => r.affected === 1
      ),
    renew: (holdId, expiresAt) =>
      Effect.map(client.execute("journal.renew", renewSql, [expiresAt, holdId, expiresAt]), (r) => r.affected === 1),
    expired: (now, limit) =>
      client.query("journal.expired", (db) =>
        db(holds)
          .select("id")
          .where("status", "pending")
          .andWhere("expires_at", "<=", now)
          .orderBy("expires_at", "asc")
          .limit(limit)).pipe(Effect.map((rows) => rows.map((r: { id: string }) => String(r.id)))),
    list: (filter) =>
      client.query("journal.list", (db) => {
        const q = db(holds).select("*").orderBy("created_at", "asc")
        if (filter.accountId !== undefined) q.where("account_id", filter.accountId)
        if (filter.status !== undefined) q.where("status", filter.status)
        return q
      }).pipe(Effect.flatMap((rows) => readMany("journal.list", rows))),
    putIntent: (intent) =>
      client.query(
        "journal.putIntent",
        (db) => db(intents).insert(intentRow(intent)).onConflict(["hold_id", "phase"]).merge()
      ).pipe(Effect.asVoid),
    insertIntent: (intent) =>
      insertIgnore(client, "journal.insertIntent", intents, intentRow(intent), ["hold_id", "phase"]).pipe(
        Effect.andThen(readIntent("journal.insertIntent", intent.holdId, intent.phase, false)),
        Effect.map((stored) => stored ?? intent)
      ),
    getIntent: (holdId, phase, options) => readIntent("journal.getIntent", holdId, phase, options?.forUpdate ?? false),
    finishIntent: (holdId, phase, outcome) =>
      client.query(
        "journal.finishIntent",
        (db) => db(intents).where({ hold_id: holdId, phase, status: "pending" }).update({ status: "done", outcome })
      ).pipe(
        Effect.map((n) => n === 1)
      ),
    dueIntents: (now, limit) =>
      client.query("journal.dueIntents", (db) =>
        db(intents)
          .select("hold_id", "phase")
          .where("status", "pending")
          .andWhere("due_at", "<=", now)
          .orderBy("due_at", "asc")
          .limit(limit)).pipe(
          Effect.flatMap((rows) =>
            decodeRows("journal.dueIntents", () =>
              rows.map((r: { hold_id: string; phase: string }) => ({
                holdId: String(r.hold_id),
                phase: Schema.decodeUnknownSync(HoldIntent.IntentPhase)(r.phase)
              })))
          )
        )
  })
}

/**
 * The core `HoldJournal` over the knex client.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<HoldJournal.HoldJournal, never, KnexClient> = Layer.effect(
  HoldJournal.HoldJournal,
  Effect.gen(function*() {
    return make(yield* KnexClient)
  })
)
