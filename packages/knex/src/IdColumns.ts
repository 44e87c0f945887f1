/**
 * Id and key columns that compare byte for byte on every database.
 *
 * SQLite and PostgreSQL (with its default, deterministic collations) already
 * compare strings by their bytes. MySQL and MariaDB do not: their default
 * collations fold case and accents (`utf8mb4_general_ci`: `abc` = `ABC`,
 * `é` = `e`), and every `PAD SPACE` collation — `utf8mb4_bin` included — ignores
 * trailing spaces (`req-77 ` = `req-77`). An id column there must use a binary
 * `NO PAD` collation: `utf8mb4_0900_bin` (MySQL 8.0.17+, MariaDB 11.4.5+) or
 * `utf8mb4_nopad_bin` (MariaDB 10.2+). Neither name exists on both servers, so
 * {@link prepare} asks the server which one it has.
 *
 * A migration that creates a table calls {@link prepare} once and declares every
 * id/key column with {@link IdColumns.id}; {@link makeBinary} converts the
 * columns of a table created before (a no-op on SQLite and PostgreSQL).
 *
 * @since 0.2.0
 */
import type { Knex } from "knex"
import type { Dialect } from "./KnexClient.js"

/**
 * Default width of an id column, in characters.
 *
 * @since 0.2.0
 * @category constants
 */
export const defaultLength = 191

/**
 * The binary `NO PAD` collations relay-billing uses on MySQL/MariaDB, in order of
 * preference (the first one the server has is used).
 *
 * @since 0.2.0
 * @category constants
 */
export const binaryCollations: ReadonlyArray<string> = ["utf8mb4_0900_bin", "utf8mb4_nopad_bin"]

/**
 * The binary `NO PAD` collation of the server `knex` talks to, or `undefined`
 * on SQLite/PostgreSQL (which need none). Rejects on a MySQL/MariaDB server
 * that has none of {@link binaryCollations} (MySQL before 8.0.17, MariaDB
 * before 10.2): ids could not be compared byte for byte there.
 *
 * @since 0.2.0
 * @category collation
 */
export const binaryCollation = async (knex: Knex, dialect: Dialect): Promise<string | undefined> => {
  if (dialect !== "mysql") return undefined
  const rows = await knex("information_schema.COLLATIONS")
    .select({ name: "COLLATION_NAME" })
    .whereIn("COLLATION_NAME", [...binaryCollations]) as Array<{ name: string }>
  const names = new Set(rows.map((r) => String(r.name)))
  const found = binaryCollations.find((c) => names.has(c))
  if (found === undefined) {
    throw new Error(
      `relay-billing: this MySQL/MariaDB server has none of the binary NO PAD collations ${
        binaryCollations.join(", ")
      }; ids cannot be compared byte for byte (MySQL 8.0.17+ or MariaDB 10.2+ is required)`
    )
  }
  return found
}

/**
 * Declares id columns for one migration run.
 *
 * @since 0.2.0
 * @category models
 */
export interface IdColumns {
  /** The collation used on MySQL/MariaDB (`undefined` elsewhere). */
  readonly collation: string | undefined
  /**
   * Adds a `varchar(length)` id column that compares byte for byte; chain
   * `.primary()`, `.notNullable()`, `.unique()` … as usual.
   */
  readonly id: (table: Knex.CreateTableBuilder, name: string, length?: number) => Knex.ColumnBuilder
}

/**
 * Looks up the collation once and returns the column helper for a migration.
 *
 * @example
 * up: async (knex, context) => {
 *   const ids = await IdColumns.prepare(knex, context)
 *   await knex.schema.createTable(context.table("things"), (t) => {
 *     ids.id(t, "id").primary()
 *     ids.id(t, "account_id").notNullable()
 *   })
 * }
 *
 * @since 0.2.0
 * @category constructors
 */
export const prepare = async (knex: Knex, context: { readonly dialect: Dialect }): Promise<IdColumns> => {
  const collation = await binaryCollation(knex, context.dialect)
  return {
    collation,
    id: (table, name, length = defaultLength) =>
      collation === undefined
        ? table.string(name, length)
        : table.specificType(name, `varchar(${length}) character set utf8mb4 collate ${collation}`)
  }
}

/**
 * One existing column to convert with {@link makeBinary}.
 *
 * @since 0.2.0
 * @category models
 */
export interface ExistingColumn {
  /** Prefixed table name. */
  readonly table: string
  readonly column: string
  /** Its `varchar` width, as created. */
  readonly length: number
  readonly nullable: boolean
}

/**
 * A foreign key between two of the converted columns: dropped before the
 * conversion and created again after it (MySQL refuses to change the collation
 * of a column a foreign key uses).
 *
 * @since 0.2.0
 * @category models
 */
export interface ForeignKey {
  /** Prefixed table name of the referencing column. */
  readonly table: string
  readonly column: string
  /** Prefixed table name of the referenced column. */
  readonly references: string
  readonly referencedColumn: string
}

const byTable = (columns: ReadonlyArray<ExistingColumn>): Map<string, Array<ExistingColumn>> => {
  const out = new Map<string, Array<ExistingColumn>>()
  for (const c of columns) out.set(c.table, [...(out.get(c.table) ?? []), c])
  return out
}

/**
 * Converts existing `varchar` columns to the binary `NO PAD` collation on
 * MySQL/MariaDB, keeping width, nullability, keys and indexes; does nothing on
 * SQLite and PostgreSQL. Existing values stay as they are (values that were
 * distinct under the old, folding collation are distinct under a binary one).
 *
 * @since 0.2.0
 * @category migrations
 */
export const makeBinary = async (
  knex: Knex,
  context: { readonly dialect: Dialect },
  columns: ReadonlyArray<ExistingColumn>,
  foreignKeys: ReadonlyArray<ForeignKey> = []
): Promise<void> => {
  const collation = await binaryCollation(knex, context.dialect)
  if (collation === undefined) return
  for (const fk of foreignKeys) {
    await knex.schema.alterTable(fk.table, (t) => {
      t.dropForeign([fk.column])
    })
  }
  // One statement per table: MySQL rebuilds the table once, not once per column.
  for (const [table, cols] of byTable(columns)) {
    await knex.raw(
      `alter table ?? ${
        cols.map((c) =>
          `modify ?? varchar(${c.length}) character set utf8mb4 collate ${collation} ${
            c.nullable ? "null" : "not null"
          }`
        ).join(", ")
      }`,
      [table, ...cols.map((c) => c.column)]
    )
  }
  for (const fk of foreignKeys) {
    await knex.schema.alterTable(fk.table, (t) => {
      t.foreign(fk.column).references(fk.referencedColumn).inTable(fk.references)
    })
  }
}

/**
 * Changes the collation of converted columns back to the table's default (the
 * `down` of a migration that ran {@link makeBinary}).
 *
 * @since 0.2.0
 * @category migrations
 */
export const revertBinary = async (
  knex: Knex,
  context: { readonly dialect: Dialect },
  columns: ReadonlyArray<ExistingColumn>,
  foreignKeys: ReadonlyArray<ForeignKey> = []
): Promise<void> => {
  if (context.dialect !== "mysql") return
  for (const fk of foreignKeys) {
    await knex.schema.alterTable(fk.table, (t) => {
      t.dropForeign([fk.column])
    })
  }
  for (const [table, cols] of byTable(columns)) {
    await knex.raw(
      `alter table ?? ${
        cols.map((c) => `modify ?? varchar(${c.length}) ${c.nullable ? "null" : "not null"}`).join(", ")
      }`,
      [table, ...cols.map((c) => c.column)]
    )
  }
  for (const fk of foreignKeys) {
    await knex.schema.alterTable(fk.table, (t) => {
      t.foreign(fk.column).references(fk.referencedColumn).inTable(fk.references)
    })
  }
}
