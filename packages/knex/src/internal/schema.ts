import * as IdColumns from "../IdColumns.js"
import type { Migration, MigrationContext, MigrationSet } from "../Migrations.js"

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

/** Every id and key column of the tables of 0001 (issue 8 #2). */
const idColumns = ({ table }: MigrationContext): ReadonlyArray<IdColumns.ExistingColumn> => [
  { table: table("holds"), column: "id", length: ID, nullable: false },
  { table: table("holds"), column: "account_id", length: ID, nullable: false },
  { table: table("holds"), column: "token_id", length: ID, nullable: true },
  { table: table("hold_parts"), column: "source_id", length: 64, nullable: false },
  { table: table("hold_parts"), column: "hold_id", length: ID, nullable: false },
  { table: table("hold_parts"), column: "subject_id", length: ID, nullable: false },
  { table: table("ledger"), column: "source_id", length: 64, nullable: false },
  { table: table("ledger"), column: "subject_id", length: ID, nullable: false },
  { table: table("ledger"), column: "account_id", length: ID, nullable: false },
  { table: table("ledger"), column: "hold_id", length: ID, nullable: true },
  { table: table("ledger"), column: "idempotency_key", length: ID, nullable: true }
]

/**
 * Ids compare byte for byte on MySQL/MariaDB too (binary NO PAD collation):
 * `chatcmpl-AbC123` ≠ `chatcmpl-abc123`, `req-77 ` ≠ `req-77`, `req-é` ≠ `req-e`.
 * A no-op on SQLite and PostgreSQL, which already compare bytes.
 */
const binaryIds: Migration = {
  name: "0002_binary_ids",
  up: (knex, context) => IdColumns.makeBinary(knex, context, idColumns(context)),
  down: (knex, context) => IdColumns.revertBinary(knex, context, idColumns(context))
}

/**
 * Intents of holds with parts outside the journal's store (issue 8 #4): one row
 * per `(hold_id, phase)`, written before the engine calls such a source and
 * finished with the hold. Ids compare byte for byte on MySQL (binary collation).
 */
const holdIntents: Migration = {
  name: "0003_hold_intents",
  up: async (knex, context) => {
    const { table } = context
    const ids = await IdColumns.prepare(knex, context)
    await knex.schema.createTable(table("intents"), (t) => {
      ids.id(t, "hold_id", ID).notNullable()
      t.string("phase", 16).notNullable()
      t.string("step", 16).notNullable()
      ids.id(t, "account_id", ID).notNullable()
      ids.id(t, "token_id", ID).nullable()
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

/**
 * A part's `ref` (and the hold's `parts`, which repeat it) is whatever its source
 * produced, of any length (issue 8 #7: split funding over 4 subscriptions with
 * UUID ids, or one subscription with a 185-character id, did not fit 191).
 * SQLite does not enforce `varchar` widths; `holds.parts` is already `text`
 * there and on PostgreSQL; MySQL's `text` (64 KiB) becomes `mediumtext`.
 */
const unboundedRefs: Migration = {
  name: "0004_unbounded_part_refs",
  up: async (knex, { dialect, table }) => {
    if (dialect === "postgres") {
      await knex.raw(`alter table ?? alter column ?? type text`, [table("hold_parts"), "ref"])
    } else if (dialect === "mysql") {
      await knex.raw(`alter table ?? modify ?? mediumtext null`, [table("hold_parts"), "ref"])
      await knex.raw(`alter table ?? modify ?? mediumtext not null`, [table("holds"), "parts"])
    }
  },
  down: async (knex, { dialect, table }) => {
    if (dialect === "postgres") {
      await knex.raw(`alter table ?? alter column ?? type varchar(${ID})`, [table("hold_parts"), "ref"])
    } else if (dialect === "mysql") {
      await knex.raw(`alter table ?? modify ?? varchar(${ID}) null`, [table("hold_parts"), "ref"])
      await knex.raw(`alter table ?? modify ?? text not null`, [table("holds"), "parts"])
    }
  }
}

/** The knex package's migrations: holds, per-source part records, the ledger, hold intents. */
export const knexMigrations: MigrationSet = {
  name: "knex",
  migrations: [holdsAndLedger, binaryIds, holdIntents, unboundedRefs]
}
