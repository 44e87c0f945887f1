import { IdColumns } from "@relay-billing/knex"
import type { Migrations } from "@relay-billing/knex"

const ID = 191

const plansAndSubscriptions: Migrations.Migration = {
  name: "0001_plans_subscriptions",
  up: async (knex, { table }) => {
    await knex.schema.createTable(table("plans"), (t) => {
      t.string("id", ID).primary()
      t.string("name", 255).notNullable()
      t.bigInteger("total_amount").notNullable()
      t.string("reset_period", 16).notNullable()
      t.bigInteger("reset_seconds").nullable()
      t.bigInteger("duration_seconds").notNullable()
      t.boolean("allow_wallet_overflow").notNullable()
      t.bigInteger("created_at").notNullable()
    })
    await knex.schema.createTable(table("subscriptions"), (t) => {
      t.string("id", ID).primary()
      t.string("account_id", ID).notNullable()
      t.string("plan_id", ID).notNullable().references("id").inTable(table("plans"))
      t.bigInteger("amount_total").notNullable()
      t.bigInteger("amount_used").notNullable()
      t.bigInteger("start_at").notNullable()
      t.bigInteger("end_at").notNullable()
      t.string("status", 16).notNullable()
      t.string("reset_period", 16).notNullable()
      t.bigInteger("reset_seconds").nullable()
      t.boolean("allow_wallet_overflow").notNullable()
      t.bigInteger("last_reset_at").nullable()
      t.bigInteger("next_reset_at").nullable()
      t.bigInteger("created_at").notNullable()
      t.index(["account_id", "status", "end_at"], `${table("subscriptions")}_account_active`)
      t.index(["status", "next_reset_at"], `${table("subscriptions")}_due_reset`)
      t.index(["status", "end_at"], `${table("subscriptions")}_due_expiry`)
    })
  },
  down: async (knex, { table }) => {
    await knex.schema.dropTableIfExists(table("subscriptions"))
    await knex.schema.dropTableIfExists(table("plans"))
  }
}

const idColumns = ({ table }: Migrations.MigrationContext): ReadonlyArray<IdColumns.ExistingColumn> => [
  { table: table("plans"), column: "id", length: ID, nullable: false },
  { table: table("subscriptions"), column: "id", length: ID, nullable: false },
  { table: table("subscriptions"), column: "account_id", length: ID, nullable: false },
  { table: table("subscriptions"), column: "plan_id", length: ID, nullable: false }
]

const foreignKeys = ({ table }: Migrations.MigrationContext): ReadonlyArray<IdColumns.ForeignKey> => [
  { table: table("subscriptions"), column: "plan_id", references: table("plans"), referencedColumn: "id" }
]

/** Plan and subscription ids compare byte for byte on MySQL/MariaDB too (issue 8 #2); no-op elsewhere. */
const binaryIds: Migrations.Migration = {
  name: "0002_binary_ids",
  up: (knex, context) => IdColumns.makeBinary(knex, context, idColumns(context), foreignKeys(context)),
  down: (knex, context) => IdColumns.revertBinary(knex, context, idColumns(context), foreignKeys(context))
}

export const subscriptionMigrations: Migrations.MigrationSet = {
  name: "subscription",
  migrations: [plansAndSubscriptions, binaryIds]
}
