/**
 * The driver-level baselines: the same statements as one SDK session
 * (statements.ts), prepared once and run straight on the driver, no query
 * builder, no engine:
 *
 * - SQLite: better-sqlite3 prepared statements on its own connection to the
 *   bench's database file (WAL, `synchronous = NORMAL`, `busy_timeout`, as the
 *   SDK's connection), one synchronous driver transaction per phase.
 * - PostgreSQL: `pg` named (server-side prepared) statements over a `pg.Pool`
 *   (16 connections by default), search_path set to the bench's schema.
 * - MySQL/MariaDB: `mysql2` prepared statements (`execute`) over a pool of 16,
 *   READ COMMITTED, RETURNING replaced by a read of the row (as the SDK does).
 *
 * Each writes its own table set (prefix `drv_`, created by the SDK's migrations).
 */
import Database from "better-sqlite3"
import mysql from "mysql2/promise"
import pg from "pg"
import type { Dialect } from "./statements.js"
import { BaselineError, sessionParams, sessionSql, withRetry } from "./statements.js"
import type { SessionInput } from "./workload.js"

/** One baseline loop: a session function and how to close its connections. */
export interface DriverLoop {
  /** One session; `phase` (the statement profile's) is told when the open and the settle begin. */
  readonly session: (
    input: SessionInput,
    state: { opened: boolean },
    phase?: (phase: "open" | "settle") => void
  ) => Promise<void>
  /** Statements sent per phase since the loop was made (BEGIN and COMMIT included). */
  readonly statements: { open: number; settle: number; sessions: number }
  readonly close: () => Promise<void>
}

/** Where the driver loops connect: the isolated database of the run. */
export interface DriverTarget {
  readonly dialect: Dialect
  /** SQLite file, PostgreSQL URL or MySQL URL (with the database). */
  readonly url: string
  /** PostgreSQL schema (search_path). */
  readonly schema?: string
  readonly poolMax: number
}

const num = (v: unknown) => Number(v)

const sqliteLoop = (file: string, prefix: string): DriverLoop => {
  const db = new Database(file)
  db.pragma("journal_mode = WAL")
  db.pragma("busy_timeout = 5000")
  db.pragma("synchronous = NORMAL")
  const sql = sessionSql("sqlite", prefix)
  const p = sessionParams("sqlite")
  const s = {
    openToken: db.prepare(sql.openToken),
    openAccount: db.prepare(sql.openAccount),
    insertHold: db.prepare(sql.insertHold),
    insertLedger2: db.prepare(sql.insertLedger2),
    settleToken: db.prepare(sql.settleToken),
    settleAccount: db.prepare(sql.settleAccount),
    counters: db.prepare(sql.counters),
    updateHold: db.prepare(sql.updateHold)
  }
  const statements = { open: 0, settle: 0, sessions: 0 }
  const open = db.transaction((i: SessionInput) => {
    const createdAt = Date.now()
    const remain = s.openToken.get(...p.openToken(i)) as { remain: number } | undefined
    if (!remain) throw new BaselineError(`token ${i.tokenId}: budget exceeded`)
    const balance = s.openAccount.get(...p.openAccount(i)) as { balance: number } | undefined
    if (!balance) throw new BaselineError(`account ${i.accountId}: insufficient funds`)
    if (s.insertHold.run(...p.insertHold(i, createdAt)).changes !== 1) {
      throw new BaselineError(`hold ${i.holdId} exists`)
    }
    s.insertLedger2.run(...p.openLedger(i, Date.now(), remain.remain, balance.balance))
  })
  const settle = db.transaction((i: SessionInput) => {
    const remain = s.settleToken.get(...p.settleToken(i)) as { remain: number } | undefined
    if (!remain) throw new BaselineError(`token ${i.tokenId}: settle matched no row`)
    const balance = s.settleAccount.get(...p.settleAccount(i)) as { balance: number } | undefined
    if (!balance) throw new BaselineError(`account ${i.accountId}: settle matched no row`)
    s.counters.run(...p.counters(i))
    const now = Date.now()
    if (s.updateHold.run(...p.updateHold(i, now, remain.remain, balance.balance)).changes !== 1) {
      throw new BaselineError(`hold ${i.holdId} was not pending`)
    }
    s.insertLedger2.run(...p.settleLedger(i, now, remain.remain, balance.balance))
  })
  return {
    statements,
    session: async (input, state, phase) => {
      phase?.("open")
      await withRetry(async () => open(input))
      statements.open += 6
      state.opened = true
      phase?.("settle")
      await withRetry(async () => settle(input))
      statements.settle += 7
      statements.sessions++
    },
    close: async () => {
      db.close()
    }
  }
}

const pgLoop = (target: DriverTarget, prefix: string): DriverLoop => {
  const pool = new pg.Pool({
    connectionString: target.url,
    max: target.poolMax,
    ...(target.schema ? { options: `-c search_path="${target.schema}"` } : {})
  })
  const sql = sessionSql("postgres", prefix)
  const p = sessionParams("postgres")
  const q = (name: keyof typeof sql, values: Array<unknown>) => ({ name: `${prefix}${name}`, text: sql[name], values })
  const statements = { open: 0, settle: 0, sessions: 0 }
  const inTransaction = async (f: (c: pg.PoolClient) => Promise<void>) => {
    const c = await pool.connect()
    try {
      await c.query("BEGIN")
      try {
        await f(c)
        await c.query("COMMIT")
      } catch (error) {
        await c.query("ROLLBACK").catch(() => undefined)
        throw error
      }
    } finally {
      c.release()
    }
  }
  return {
    statements,
    session: async (i, state, phase) => {
      phase?.("open")
      await withRetry(() =>
        inTransaction(async (c) => {
          const createdAt = Date.now()
          const remain = (await c.query(q("openToken", p.openToken(i)))).rows[0]?.remain
          if (remain === undefined) throw new BaselineError(`token ${i.tokenId}: budget exceeded`)
          const balance = (await c.query(q("openAccount", p.openAccount(i)))).rows[0]?.balance
          if (balance === undefined) throw new BaselineError(`account ${i.accountId}: insufficient funds`)
          if ((await c.query(q("insertHold", p.insertHold(i, createdAt)))).rowCount !== 1) {
            throw new BaselineError(`hold ${i.holdId} exists`)
          }
          await c.query(q("insertLedger2", p.openLedger(i, Date.now(), num(remain), num(balance))))
        })
      )
      statements.open += 6
      state.opened = true
      phase?.("settle")
      await withRetry(() =>
        inTransaction(async (c) => {
          const remain = (await c.query(q("settleToken", p.settleToken(i)))).rows[0]?.remain
          if (remain === undefined) throw new BaselineError(`token ${i.tokenId}: settle matched no row`)
          const balance = (await c.query(q("settleAccount", p.settleAccount(i)))).rows[0]?.balance
          if (balance === undefined) throw new BaselineError(`account ${i.accountId}: settle matched no row`)
          await c.query(q("counters", p.counters(i)))
          const now = Date.now()
          if ((await c.query(q("updateHold", p.updateHold(i, now, num(remain), num(balance))))).rowCount !== 1) {
            throw new BaselineError(`hold ${i.holdId} was not pending`)
          }
          await c.query(q("insertLedger2", p.settleLedger(i, now, num(remain), num(balance))))
        })
      )
      statements.settle += 7
      statements.sessions++
    },
    close: () => pool.end()
  }
}

const mysqlLoop = (target: DriverTarget, prefix: string): DriverLoop => {
  const pool = mysql.createPool({ uri: target.url, connectionLimit: target.poolMax })
  // READ COMMITTED per connection (the SDK sets it per transaction).
  pool.pool.on("connection", (conn) => {
    conn.query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
  })
  const sql = sessionSql("mysql", prefix)
  const p = sessionParams("mysql")
  const statements = { open: 0, settle: 0, sessions: 0 }
  type Conn = mysql.PoolConnection
  const changed = async (c: Conn, text: string, values: Array<unknown>) => {
    const [result] = await c.execute(text, values as Array<string | number | null>)
    return (result as mysql.ResultSetHeader).affectedRows
  }
  const read = async (c: Conn, text: string, id: string, column: string) => {
    const [rows] = await c.execute(text, [id])
    return num((rows as Array<Record<string, unknown>>)[0]?.[column])
  }
  const inTransaction = async (f: (c: Conn) => Promise<void>) => {
    const c = await pool.getConnection()
    try {
      await c.query("BEGIN")
      try {
        await f(c)
        await c.query("COMMIT")
      } catch (error) {
        await c.query("ROLLBACK").catch(() => undefined)
        throw error
      }
    } finally {
      c.release()
    }
  }
  return {
    statements,
    session: async (i, state, phase) => {
      phase?.("open")
      await withRetry(() =>
        inTransaction(async (c) => {
          const createdAt = Date.now()
          if (await changed(c, sql.openToken, p.openToken(i)) !== 1) {
            throw new BaselineError(`token ${i.tokenId}: budget exceeded`)
          }
          const remain = await read(c, sql.selectRemain, i.tokenId, "remain")
          if (await changed(c, sql.openAccount, p.openAccount(i)) !== 1) {
            throw new BaselineError(`account ${i.accountId}: insufficient funds`)
          }
          const balance = await read(c, sql.selectBalance, i.accountId, "balance")
          if (await changed(c, sql.insertHold, p.insertHold(i, createdAt)) !== 1) {
            throw new BaselineError(`hold ${i.holdId} exists`)
          }
          await changed(c, sql.insertLedger2, p.openLedger(i, Date.now(), remain, balance))
        })
      )
      statements.open += 8
      state.opened = true
      phase?.("settle")
      await withRetry(() =>
        inTransaction(async (c) => {
          if (await changed(c, sql.settleToken, p.settleToken(i)) !== 1) {
            throw new BaselineError(`token ${i.tokenId}: settle matched no row`)
          }
          const remain = await read(c, sql.selectRemain, i.tokenId, "remain")
          if (await changed(c, sql.settleAccount, p.settleAccount(i)) !== 1) {
            throw new BaselineError(`account ${i.accountId}: settle matched no row`)
          }
          const balance = await read(c, sql.selectBalance, i.accountId, "balance")
          await changed(c, sql.counters, p.counters(i))
          const now = Date.now()
          if (await changed(c, sql.updateHold, p.updateHold(i, now, remain, balance)) !== 1) {
            throw new BaselineError(`hold ${i.holdId} was not pending`)
          }
          await changed(c, sql.insertLedger2, p.settleLedger(i, now, remain, balance))
        })
      )
      statements.settle += 9
      statements.sessions++
    },
    close: () => pool.end()
  }
}

/** The driver-level loop for `target`, writing the tables of `prefix`. */
export const driverLoop = (target: DriverTarget, prefix: string): DriverLoop =>
  target.dialect === "sqlite"
    ? sqliteLoop(target.url, prefix)
    : target.dialect === "postgres"
    ? pgLoop(target, prefix)
    : mysqlLoop(target, prefix)
