import * as IdColumns from "../IdColumns.js"
import type * as Migrations from "../Migrations.js"

const ID = 191

const accountsAndTokens: Migrations.Migration = {
  name: "0001_accounts_tokens",
  up: async (knex, { table }) => {
    await knex.schema.createTable(table("accounts"), (t) => {
      t.string("id", ID).primary()
      t.bigInteger("balance").notNullable().defaultTo(0)
      t.bigInteger("used_quota").notNullable().defaultTo(0)
      t.bigInteger("request_count").notNullable().defaultTo(0)
      t.bigInteger("low_balance_threshold").nullable()
      t.bigInteger("created_at").notNullable()
    })
    await knex.schema.createTable(table("tokens"), (t) => {
      t.string("id", ID).primary()
      t.string("account_id", ID).notNullable().references("id").inTable(table("accounts"))
      t.bigInteger("remain").notNullable().defaultTo(0)
      t.bigInteger("used").notNullable().defaultTo(0)
      t.boolean("unlimited").notNullable().defaultTo(false)
      t.bigInteger("created_at").notNullable()
      t.index(["account_id"], `${table("tokens")}_account`)
    })
  },
  down: async (knex, { table }) => {
    await knex.schema.dropTableIfExists(table("tokens"))
    await knex.schema.dropTableIfExists(table("accounts"))
  }
}

const noticesAndSplit: Migrations.Migration = {
  name: "0002_low_balance_notices_split_funding",
  up: async (knex, { table }) => {
    await knex.schema.alterTable(table("accounts"), (t) => {
      t.boolean("split_funding").notNullable().defaultTo(false)
    })
    // The last two low-balance warnings per (account, source): a sliding window of 2.
    await knex.schema.createTable(table("low_balance_notices"), (t) => {
      t.string("account_id", ID).notNullable()
      t.string("source_id", 64).notNullable()
      t.bigInteger("sent1").notNullable()
      t.bigInteger("sent2").notNullable()
      t.primary(["account_id", "source_id"])
    })
  },
  down: async (knex, { table }) => {
    await knex.schema.dropTableIfExists(table("low_balance_notices"))
    await knex.schema.alterTable(table("accounts"), (t) => {
      t.dropColumn("split_funding")
    })
  }
}

const idColumns = ({ table }: Migrations.MigrationContext): ReadonlyArray<IdColumns.ExistingColumn> => [
  { table: table("accounts"), column: "id", length: ID, nullable: false },
  { table: table("tokens"), column: "id", length: ID, nullable: false },
  { table: table("tokens"), column: "account_id", length: ID, nullable: false },
  { table: table("low_balance_notices"), column: "account_id", length: ID, nullable: false },
  { table: table("low_balance_notices"), column: "source_id", length: 64, nullable: false }
]

const foreignKeys = ({ table }: Migrations.MigrationContext): ReadonlyArray<IdColumns.ForeignKey> => [
  { table: table("tokens"), column: "account_id", references: table("accounts"), referencedColumn: "id" }
]

/** Account and token ids compare byte for byte on MySQL/MariaDB too (issue 8 #2); no-op elsewhere. */
const binaryIds: Migrations.Migration = {
  name: "0003_binary_ids",
  up: (knex, context) => IdColumns.makeBinary(knex, context, idColumns(context), foreignKeys(context)),
  down: (knex, context) => IdColumns.revertBinary(knex, context, idColumns(context), foreignKeys(context))
}

/**
 * The accounts' tables (accounts, their API tokens, low-balance notices). The set
 * keeps the name `wallet` it had before the accounts module existed, so that a
 * database migrated by an earlier version finds these migrations applied.
 */
export const accountsMigrations: Migrations.MigrationSet = {
  name: "wallet",
  migrations: [accountsAndTokens, noticesAndSplit, binaryIds]
}
