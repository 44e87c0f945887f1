import type { SqlStore } from "@relay-billing/core"
import type { Dialect } from "./url.js"

type Row = Record<string, unknown>

const isRowArray = (value: unknown): value is ReadonlyArray<Row> => Array.isArray(value)

/**
 * What `knex.raw` answered, as `{ rows, affected }`, per driver:
 *
 * - pg: a `Result` (`rows`, `rowCount`);
 * - better-sqlite3: the rows (a statement that reads, `RETURNING` included) or
 *   `{ changes }`;
 * - mysql2: `[rows, fields]` for a `SELECT`, `[ResultSetHeader, …]` for a write
 *   (`affectedRows` counts the rows matched: knex connects with `FOUND_ROWS`).
 */
export const sqlResult = (dialect: Dialect, raw: unknown): SqlStore.SqlResult => {
  switch (dialect) {
    case "postgres": {
      const r = raw as { rows?: ReadonlyArray<Row>; rowCount?: number | null }
      const rows = r.rows ?? []
      return { rows, affected: r.rowCount ?? rows.length }
    }
    case "sqlite": {
      if (isRowArray(raw)) return { rows: raw, affected: raw.length }
      const r = raw as { changes?: number }
      return { rows: [], affected: r.changes ?? 0 }
    }
    case "mysql": {
      const first = (raw as ReadonlyArray<unknown>)[0]
      if (isRowArray(first)) {
        // A multi-statement call answers one entry per statement; a SELECT its rows.
        return { rows: first, affected: first.length }
      }
      const header = first as { affectedRows?: number }
      return { rows: [], affected: header.affectedRows ?? 0 }
    }
  }
}
