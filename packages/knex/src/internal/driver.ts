/**
 * The driver-level executor: runs one plain SQL statement with `?`
 * placeholders on the raw driver connection of a knex transaction, with the
 * statement prepared once per connection and SQL text — no query builder, no
 * knex runner per call.
 *
 * - better-sqlite3: `prepare` cached per connection; a statement that reads
 *   (`SELECT`, `RETURNING`) answers its rows, any other its `changes`. The call is
 *   synchronous, so a phase of several statements runs without yielding to the
 *   event loop.
 * - pg: a named query (`?` rewritten to `$n` once per text, one stable name per
 *   text), which pg parses once per connection.
 * - mysql2: `query` (the text protocol knex itself uses: the same value types back).
 *
 * A driver error becomes a `StoreError` whose `cause` is the driver's error, so
 * the transaction retry of `KnexClient` still reads its `code` / `errno`.
 *
 * @internal
 */
import { BillingError } from "@relay-billing/core"
import type { SqlStore } from "@relay-billing/core"
import { Effect, Exit } from "effect"
import type { Knex } from "knex"
import type { Dialect } from "./url.js"

type Row = Record<string, unknown>

/** The part of a better-sqlite3 `Statement` the executor uses. */
interface SqliteStatement {
  readonly reader: boolean
  all(params: ReadonlyArray<unknown>): Array<Row>
  run(params: ReadonlyArray<unknown>): { readonly changes: number }
}

/** The part of a better-sqlite3 `Database` the executor uses. */
interface SqliteConnection {
  prepare(sql: string): SqliteStatement
}

/** The part of a pg `Client` the executor uses. */
interface PgConnection {
  query(config: { readonly name?: string; readonly text: string; readonly values: ReadonlyArray<unknown> }): Promise<{
    readonly rows: Array<Row>
    readonly rowCount: number | null
  }>
}

/** The part of a mysql2 (callback) `Connection` the executor uses. */
interface MysqlConnection {
  query(
    sql: string,
    values: ReadonlyArray<unknown>,
    callback: (error: unknown, result: unknown) => void
  ): unknown
}

/**
 * The most SQL texts kept prepared per connection (and named on PostgreSQL).
 * The SDK's own texts are a few dozen; a source that writes its values into
 * the SQL text instead of parameters would otherwise grow the caches (and
 * PostgreSQL's prepared statements) without bound: past this many, a new text
 * is prepared for one call only.
 */
export const MAX_PREPARED = 1000

/** Prepared statements of each better-sqlite3 connection, by SQL text. */
const sqliteStatements = new WeakMap<object, Map<string, SqliteStatement>>()

/** The prepared statement for `sql` on `conn` (prepared on first use). */
export const sqliteStatement = (conn: SqliteConnection, sql: string): SqliteStatement => {
  let cache = sqliteStatements.get(conn)
  if (cache === undefined) {
    cache = new Map()
    sqliteStatements.set(conn, cache)
  }
  let statement = cache.get(sql)
  if (statement === undefined) {
    statement = conn.prepare(sql)
    if (cache.size < MAX_PREPARED) cache.set(sql, statement)
  }
  return statement
}

/** Booleans become 1/0 (as knex does for SQLite); `undefined` is NULL. */
const sqliteParams = (params: ReadonlyArray<unknown>): ReadonlyArray<unknown> => {
  let out: Array<unknown> | undefined
  for (let i = 0; i < params.length; i++) {
    const p = params[i]
    if (typeof p === "boolean" || p === undefined || p instanceof Date) {
      out ??= params.slice()
      out[i] = p === undefined ? null : p instanceof Date ? p.valueOf() : p ? 1 : 0
    }
  }
  return out ?? params
}

/** Runs `sql` on a better-sqlite3 connection (synchronously; throws the driver's error). */
export const runSqlite = (conn: SqliteConnection, sql: string, params: ReadonlyArray<unknown>): SqlStore.SqlResult => {
  const statement = sqliteStatement(conn, sql)
  const values = sqliteParams(params)
  if (statement.reader) {
    const rows = statement.all(values)
    return { rows, affected: rows.length }
  }
  return { rows: [], affected: statement.run(values).changes }
}

/**
 * `sql` with each `?` placeholder numbered `$1`, `$2`, … for PostgreSQL. A `?`
 * inside a string literal (`'…'`), a quoted identifier (`"…"`) or a comment is
 * text, not a placeholder; `\?` is a literal `?` (as in `knex.raw`).
 */
export const numberPlaceholders = (sql: string): string => {
  let out = ""
  let n = 0
  let i = 0
  while (i < sql.length) {
    const c = sql[i]!
    if (c === "'" || c === "\"") {
      // A quoted run; a doubled quote inside it is an escaped quote.
      let j = i + 1
      while (j < sql.length) {
        if (sql[j] === c) {
          if (sql[j + 1] === c) j += 2
          else break
        } else {
          j++
        }
      }
      out += sql.slice(i, j + 1)
      i = j + 1
    } else if (c === "-" && sql[i + 1] === "-") {
      const end = sql.indexOf("\n", i)
      const j = end === -1 ? sql.length : end
      out += sql.slice(i, j)
      i = j
    } else if (c === "/" && sql[i + 1] === "*") {
      const end = sql.indexOf("*/", i + 2)
      const j = end === -1 ? sql.length : end + 2
      out += sql.slice(i, j)
      i = j
    } else if (c === "\\" && sql[i + 1] === "?") {
      out += "?"
      i += 2
    } else if (c === "?") {
      out += `$${++n}`
      i++
    } else {
      out += c
      i++
    }
  }
  return out
}

/** The PostgreSQL text and the statement name of each SQL text, shared by every connection. */
const pgTexts = new Map<string, { readonly name: string | undefined; readonly text: string }>()

/**
 * The numbered text of `sql` and its stable prepared-statement name (same
 * text, same name); past {@link MAX_PREPARED} texts, no name (an unnamed
 * statement, parsed on each call).
 */
export const pgStatement = (sql: string): { readonly name: string | undefined; readonly text: string } => {
  let statement = pgTexts.get(sql)
  if (statement === undefined) {
    const text = numberPlaceholders(sql)
    if (pgTexts.size >= MAX_PREPARED) return { name: undefined, text }
    statement = { name: `relay_billing_${pgTexts.size + 1}`, text }
    pgTexts.set(sql, statement)
  }
  return statement
}

const pgParams = (params: ReadonlyArray<unknown>): ReadonlyArray<unknown> =>
  params.some((p) => p === undefined) ? params.map((p) => (p === undefined ? null : p)) : params

/**
 * Whether `error` is PostgreSQL refusing a prepared statement whose result
 * columns changed since it was prepared (a table altered while the client is
 * live: "cached plan must not change result type"). The transaction is aborted;
 * the statement is renamed on its connection (see {@link runPg}), so running the
 * transaction again prepares it afresh.
 */
export const isStalePlan = (error: unknown): boolean => {
  const e = error as { readonly code?: unknown; readonly routine?: unknown } | null
  return typeof e === "object" && e !== null && e.code === "0A000" && e.routine === "RevalidateCachedQuery"
}

/** The statements renamed on a connection after their plan went stale, by SQL text. */
const pgRenamed = new WeakMap<object, Map<string, string>>()
let pgRenames = 0

/** Runs `sql` on a pg connection as a named (prepared) statement. */
export const runPg = async (
  conn: PgConnection,
  sql: string,
  params: ReadonlyArray<unknown>
): Promise<SqlStore.SqlResult> => {
  const statement = pgStatement(sql)
  const values = pgParams(params)
  const name = statement.name === undefined ? undefined : pgRenamed.get(conn)?.get(sql) ?? statement.name
  const result = await conn.query(
    name === undefined ? { text: statement.text, values } : { name, text: statement.text, values }
  ).catch((error: unknown) => {
    if (name !== undefined && isStalePlan(error)) {
      // This connection's statement of that name cannot run again: the next run uses a new one.
      let renamed = pgRenamed.get(conn)
      if (renamed === undefined) {
        renamed = new Map()
        pgRenamed.set(conn, renamed)
      }
      renamed.set(sql, `${statement.name}_r${++pgRenames}`)
    }
    throw error
  })
  const rows = result.rows ?? []
  return { rows, affected: result.rowCount ?? rows.length }
}

/** Runs `sql` on a mysql2 callback connection (text protocol, as knex does). */
export const runMysql = (
  conn: MysqlConnection,
  sql: string,
  params: ReadonlyArray<unknown>
): Promise<SqlStore.SqlResult> =>
  new Promise((resolve, reject) => {
    conn.query(sql, params.map((p) => (p === undefined ? null : p)), (error, result) => {
      if (error) return reject(error)
      if (Array.isArray(result)) {
        // A SELECT answers its rows.
        resolve({ rows: result as Array<Row>, affected: result.length })
      } else {
        resolve({ rows: [], affected: (result as { affectedRows?: number }).affectedRows ?? 0 })
      }
    })
  })

/** The error of a failed statement: the driver's error is the cause. */
export const statementError = (operation: string) => (cause: unknown): BillingError.StoreError =>
  new BillingError.StoreError({
    operation,
    detail: cause instanceof Error ? cause.message : String(cause),
    cause
  })

/** The transactions one of whose statements failed (MySQL: checked by {@link transactionAborted}). */
const failedStatements = new WeakSet<Knex.Transaction>()

/** Records that a statement of `trx` failed (its transaction may have been rolled back by the server). */
export const noteFailure = (trx: Knex.Transaction): void => {
  failedStatements.add(trx)
}

/** The raw connection of each transaction, once known. */
const connections = new WeakMap<Knex.Transaction, unknown>()

/** The raw connection of `trx` (the transaction's own connection: knex's tx client resolves it). */
const connectionOf = (trx: Knex.Transaction): Effect.Effect<unknown, BillingError.StoreError> => {
  const known = connections.get(trx)
  if (known !== undefined) return Effect.succeed(known)
  return Effect.tryPromise({
    try: async () => {
      const conn = await (trx as unknown as { client: { acquireConnection: () => Promise<unknown> } }).client
        .acquireConnection()
      connections.set(trx, conn)
      return conn
    },
    catch: statementError("transaction.connection")
  })
}

/**
 * Whether the database transaction of `trx` can no longer commit what its code
 * did: a failed statement whose error the code caught aborted it (PostgreSQL:
 * every later statement fails, and COMMIT answers "ROLLBACK" without an
 * error), or it was ended under the code (a `ROLLBACK`; SQLite rolls a whole
 * transaction back on some errors, e.g. `RAISE(ROLLBACK)` or a full disk) and
 * later statements ran in autocommit mode. Read from the driver's own state
 * (pg: the server's last ReadyForQuery; better-sqlite3: `inTransaction`): no
 * round trip on the normal path. MySQL (InnoDB rolls the whole transaction back on
 * a deadlock): mysql2 does not keep the server's in-transaction flag, so after a
 * statement of `trx` failed (see {@link noteFailure}) a `DO 0` reads it from the
 * server's answer — one round trip, on that path only.
 */
export const transactionAborted = (
  dialect: Dialect,
  trx: Knex.Transaction
): Effect.Effect<boolean, BillingError.StoreError> => {
  if (dialect === "mysql" && !failedStatements.has(trx)) return Effect.succeed(false)
  return Effect.flatMap(connectionOf(trx), (raw) => {
    if (dialect === "mysql") {
      return Effect.tryPromise({
        try: () =>
          new Promise<boolean>((resolve, reject) =>
            (raw as MysqlConnection).query("do 0", [], (error, result) => {
              if (error) return reject(error)
              const inTransaction = ((result as { serverStatus?: number }).serverStatus ?? 1) & 1
              if (inTransaction) failedStatements.delete(trx)
              resolve(!inTransaction)
            })
          ),
        catch: statementError("transaction.status")
      })
    }
    if (dialect === "sqlite") {
      const conn = raw as { readonly inTransaction?: boolean }
      return Effect.succeed(conn.inTransaction === false)
    }
    const conn = raw as PgStatusConnection
    if (typeof conn.getTransactionStatus !== "function") return Effect.succeed(false)
    // pg fails a query at the server's ErrorResponse, before the ReadyForQuery that carries the
    // new status: until the connection is idle again, the status is stale. An empty query
    // (allowed in an aborted transaction) waits for it, at the cost of a round trip on that path only.
    const idle = conn.readyForQuery === true && !conn._activeQuery && (conn._queryQueue?.length ?? 0) === 0
    // "T": in a transaction; "E": in an aborted one; "I": none (it was ended).
    if (idle) return Effect.succeed(conn.getTransactionStatus() !== "T")
    return Effect.tryPromise({
      try: () => conn.query("").then(() => conn.getTransactionStatus() !== "T"),
      catch: statementError("transaction.status")
    })
  })
}

/**
 * The error of a statement refused because the database transaction of its
 * `trx` is gone (rolled back under the code, which caught the error): run, it
 * would commit on its own (autocommit), outside the transaction its code expects.
 */
export const lostError = (operation: string): BillingError.StoreError =>
  new BillingError.StoreError({
    operation,
    detail: "the database transaction was rolled back under this transaction's code (an error it caught): " +
      "the statement would run outside it, and is refused"
  })

/**
 * Fails when the database transaction of `trx` is gone (see {@link transactionAborted}),
 * so that no statement of code that caught the error runs in autocommit mode.
 * SQLite and PostgreSQL: read from the driver's state, when it is current; MySQL:
 * after a failed statement of `trx` only (one round trip). Otherwise free.
 */
export const guard = (
  dialect: Dialect,
  trx: Knex.Transaction,
  operation: string
): Effect.Effect<void, BillingError.StoreError> => {
  if (dialect === "mysql") {
    if (!failedStatements.has(trx)) return Effect.void
    return Effect.flatMap(
      transactionAborted(dialect, trx),
      (gone) => gone ? Effect.fail(lostError(operation)) : Effect.void
    )
  }
  const known = connections.get(trx)
  if (known === undefined) return Effect.void
  return ended(dialect, known) ? Effect.fail(lostError(operation)) : Effect.void
}

/** SQLite: not in a transaction; PostgreSQL: idle and not in a transaction (an aborted one guards itself). */
const ended = (dialect: Dialect, conn: unknown): boolean => {
  if (dialect === "sqlite") return (conn as { readonly inTransaction?: boolean }).inTransaction === false
  if (dialect !== "postgres") return false
  const pg = conn as PgStatusConnection
  return typeof pg.getTransactionStatus === "function" && pg.readyForQuery === true && !pg._activeQuery &&
    (pg._queryQueue?.length ?? 0) === 0 && pg.getTransactionStatus() === "I"
}

/** The part of a pg `Client` that tells the state of its transaction. */
interface PgStatusConnection {
  readonly readyForQuery?: boolean
  readonly _activeQuery?: unknown
  readonly _queryQueue?: ReadonlyArray<unknown>
  getTransactionStatus(): string | null
  query(text: string): Promise<unknown>
}

/**
 * Runs one statement on the connection of `trx`. Call it when the effect runs
 * (inside `Effect.withFiber` / `Effect.suspend`): once the connection is known,
 * a SQLite statement runs during this call and its outcome is returned as an `Exit`.
 */
export const executeOn = (
  dialect: Dialect,
  trx: Knex.Transaction,
  operation: string,
  sql: string,
  params: ReadonlyArray<unknown>
): Effect.Effect<SqlStore.SqlResult, BillingError.StoreError> => {
  const known = connections.get(trx)
  if (known === undefined) {
    return Effect.flatMap(connectionOf(trx), () => executeOn(dialect, trx, operation, sql, params))
  }
  if (dialect === "mysql" && failedStatements.has(trx)) {
    return Effect.andThen(guard(dialect, trx, operation), runOn(dialect, known, trx, operation, sql, params))
  }
  if (ended(dialect, known)) return Exit.fail(lostError(operation))
  return runOn(dialect, known, trx, operation, sql, params)
}

const runOn = (
  dialect: Dialect,
  known: unknown,
  trx: Knex.Transaction,
  operation: string,
  sql: string,
  params: ReadonlyArray<unknown>
): Effect.Effect<SqlStore.SqlResult, BillingError.StoreError> => {
  switch (dialect) {
    case "sqlite":
      // Synchronous: the answer is an Exit, no promise and no extra step of the fiber.
      try {
        return Exit.succeed(runSqlite(known as SqliteConnection, sql, params))
      } catch (cause) {
        return Exit.fail(statementError(operation)(cause))
      }
    case "postgres":
      return Effect.tryPromise({
        try: () => runPg(known as PgConnection, sql, params),
        catch: statementError(operation)
      })
    case "mysql":
      return Effect.tryPromise({
        try: () => runMysql(known as MysqlConnection, sql, params),
        catch: (cause) => {
          noteFailure(trx)
          return statementError(operation)(cause)
        }
      })
  }
}
