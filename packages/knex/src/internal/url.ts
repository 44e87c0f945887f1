import type { Knex } from "knex"
import { mkdirSync } from "node:fs"
import path from "node:path"

/** The SQL dialects relay-billing supports. */
export type Dialect = "sqlite" | "postgres" | "mysql"

interface UrlOptions {
  readonly schema?: string
  readonly poolMax?: number
  readonly busyTimeoutMillis?: number
}

interface SqliteConnection {
  pragma(source: string): unknown
}

/** Parses a database URL into a knex config. */
export const connectionConfig = (url: string, options: UrlOptions): Knex.Config => {
  if (url.startsWith("sqlite:")) {
    let filename = url.slice("sqlite:".length)
    if (filename.startsWith("//")) filename = filename.slice(2)
    if (filename.length === 0) throw new Error(`invalid SQLite URL ${JSON.stringify(url)}: no file name`)
    if (filename !== ":memory:") mkdirSync(path.dirname(path.resolve(filename)), { recursive: true })
    const busy = options.busyTimeoutMillis ?? 5_000
    return {
      client: "better-sqlite3",
      connection: { filename },
      useNullAsDefault: true,
      pool: {
        min: 1,
        max: 1,
        afterCreate: (conn: SqliteConnection, done: (err: Error | null, conn: unknown) => void) => {
          try {
            if (filename !== ":memory:") conn.pragma("journal_mode = WAL")
            conn.pragma(`busy_timeout = ${busy}`)
            conn.pragma("synchronous = NORMAL")
            // Group commit's savepoints: SQLite copies each page an item changes into a
            // sub-journal, a temporary file by default; in memory it costs no system calls.
            conn.pragma("temp_store = MEMORY")
            done(null, conn)
          } catch (error) {
            done(error as Error, conn)
          }
        }
      }
    }
  }
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) {
    return {
      client: "pg",
      connection: url,
      pool: { min: 0, max: options.poolMax ?? 10 },
      ...(options.schema !== undefined ? { searchPath: [options.schema] } : {})
    }
  }
  if (url.startsWith("mysql://") || url.startsWith("mariadb://")) {
    const u = new URL(url.replace(/^mariadb:/, "mysql:"))
    return {
      client: "mysql2",
      connection: {
        host: u.hostname,
        port: u.port ? Number(u.port) : 3306,
        user: decodeURIComponent(u.username),
        password: decodeURIComponent(u.password),
        database: decodeURIComponent(u.pathname.replace(/^\//, "")),
        supportBigNumbers: true
      },
      pool: { min: 0, max: options.poolMax ?? 10 }
    }
  }
  throw new Error(
    `unsupported database URL ${
      JSON.stringify(url.replace(/\/\/[^@]*@/, "//***@"))
    }: expected sqlite:PATH, postgres://… or mysql://…`
  )
}
