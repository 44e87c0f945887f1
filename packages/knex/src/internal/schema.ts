import type { Migration, MigrationSet } from "../Migrations.js"

/** Width of id columns (fits a MySQL utf8mb4 index). */
export const ID = 191

const holdsAndLedger: Migration = {
  name: "0001_holds_parts_ledger",
  up: async (knex, { table }) => {
    await knex.schema.createTable(table("holds"), (t) => {
      t.string("id", ID).primary()
      t.string("account_id", ID).notNullable()
      t.string("token_id", ID).nullable()
      t.bigInteger("estimate").notNullable()
      t.bigInteger("reserved").notNullable()
      t.string("preference", 32).notNullable()
      t.boolean("trusted").notNullable()
      t.string("status", 16).notNullable()
      t.text("parts").notNullable()
      t.bigInteger("created_at").notNullable()
      t.bigInteger("expires_at").notNullable()
      t.bigInteger("resolved_at").nullable()
      t.text("settlement").nullable()
      t.text("metadata").nullable()
      t.index(["status", "expires_at"], `${table("holds")}_status_expires`)
      t.index(["account_id"], `${table("holds")}_account`)
    })
    await knex.schema.createTable(table("hold_parts"), (t) => {
      t.string("source_id", 64).notNullable()
      t.string("hold_id", ID).notNullable()
      t.string("subject_id", ID).notNullable()
      t.bigInteger("amount").notNullable()
      t.string("ref", ID).nullable()
      t.string("status", 16).notNullable()
      t.text("result").nullable()
      t.primary(["source_id", "hold_id"])
    })
    await knex.schema.createTable(table("ledger"), (t) => {
      t.bigIncrements("seq").primary()
      t.bigInteger("at").notNullable()
      t.string("kind", 16).notNullable()
      t.string("source_id", 64).notNullable()
      t.string("subject_id", ID).notNullable()
      t.string("account_id", ID).notNullable()
      t.string("hold_id", ID).nullable()
      t.bigInteger("amount").notNullable()
      t.bigInteger("balance_after").notNullable()
      t.bigInteger("unbilled").nullable()
      t.string("note", 255).nullable()
      t.string("idempotency_key", ID).nullable().unique(`${table("ledger")}_idempotency`)
      t.index(["source_id", "subject_id"], `${table("ledger")}_subject`)
      t.index(["account_id"], `${table("ledger")}_account`)
      t.index(["hold_id"], `${table("ledger")}_hold`)
    })
  },
  down: async (knex, { table }) => {
    await knex.schema.dropTableIfExists(table("ledger"))
    await knex.schema.dropTableIfExists(table("hold_parts"))
    await knex.schema.dropTableIfExists(table("holds"))
  }
}

/**
 * Intents of holds with parts outside the journal's store (issue 8 #4): one row
 * per `(hold_id, phase)`, written before the engine calls such a source and
 * finished with the hold. Ids compare byte for byte on MySQL (binary collation).
 */
const holdIntents: Migration = {
  name: "0003_hold_intents",
  up: async (knex, { table }) => {
    const mysql = String(knex.client.config.client ?? "").includes("mysql")
    await knex.schema.createTable(table("intents"), (t) => {
      if (mysql) {
        t.charset("utf8mb4")
        t.collate("utf8mb4_bin")
      }
      t.string("hold_id", ID).notNullable()
      t.string("phase", 16).notNullable()
      t.string("step", 16).notNullable()
      t.string("account_id", ID).notNullable()
      t.string("token_id", ID).nullable()
      t.bigInteger("amount").notNullable()
      t.text("targets").notNullable()
      t.string("status", 16).notNullable()
      t.string("outcome", 32).nullable()
      t.bigInteger("created_at").notNullable()
      t.bigInteger("due_at").notNullable()
      t.primary(["hold_id", "phase"])
      t.index(["status", "due_at"], `${table("intents")}_status_due`)
    })
  },
  down: async (knex, { table }) => {
    await knex.schema.dropTableIfExists(table("intents"))
  }
}

/** The knex package's migrations: holds, per-source part records, the ledger, hold intents. */
export const knexMigrations: MigrationSet = { name: "knex", migrations: [holdsAndLedger, holdIntents] }
