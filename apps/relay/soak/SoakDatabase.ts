/**
 * A fresh database for one soak run, reachable by the relay child process
 * through `RELAY_DATABASE_URL` alone: a new SQLite file, or a new PostgreSQL
 * database created on the server of `BILLING_PG_URL` (dropped afterwards).
 * The probe reads it back with its own knex connection (read-only queries).
 *
 * @since 0.1.0
 */
import knex from "knex"
import type { Knex } from "knex"
import { randomBytes } from "node:crypto"
import { rmSync } from "node:fs"
import path from "node:path"

/** The databases the probe runs on. */
export type Kind = "sqlite" | "postgres"

/** An isolated database. */
export interface SoakDatabase {
  readonly kind: Kind
  /** `RELAY_DATABASE_URL` for the relay. */
  readonly url: string
  /** A knex connection for the probe's reads (opened on first use). */
  readonly read: () => Knex
  /** Closes the probe's connection and drops the database. */
  readonly drop: () => Promise<void>
}

const knexFor = (kind: Kind, url: string): Knex =>
  kind === "sqlite"
    ? knex({ client: "better-sqlite3", connection: { filename: url.slice("sqlite:".length) }, useNullAsDefault: true })
    : knex({ client: "pg", connection: url, pool: { min: 0, max: 2 } })

/** Creates the database: under `dir` for SQLite, on `pgUrl`'s server for PostgreSQL. */
export const create = async (kind: Kind, options: { readonly dir: string; readonly pgUrl?: string | undefined }) => {
  const name = `soak_${process.pid}_${randomBytes(4).toString("hex")}`
  let reader: Knex | undefined
  const read = (url: string) => () => (reader ??= knexFor(kind, url))
  if (kind === "sqlite") {
    const file = path.join(options.dir, `${name}.db`)
    const url = `sqlite:${file}`
    return {
      kind,
      url,
      read: read(url),
      drop: async () => {
        await reader?.destroy()
        for (const suffix of ["", "-wal", "-shm"]) rmSync(`${file}${suffix}`, { force: true })
      }
    } satisfies SoakDatabase
  }
  const pgUrl = options.pgUrl
  if (pgUrl === undefined || pgUrl === "") {
    throw new Error("soak: PostgreSQL needs BILLING_PG_URL (e.g. postgres://postgres@127.0.0.1:5432/test)")
  }
  const server = new URL(pgUrl)
  const admin = knex({ client: "pg", connection: pgUrl, pool: { min: 0, max: 1 } })
  try {
    await admin.raw(`create database "${name}"`)
  } finally {
    await admin.destroy()
  }
  server.pathname = `/${name}`
  const url = server.toString()
  return {
    kind,
    url,
    read: read(url),
    drop: async () => {
      await reader?.destroy()
      const dropper = knex({ client: "pg", connection: pgUrl, pool: { min: 0, max: 1 } })
      try {
        await dropper.raw(`drop database if exists "${name}" with (force)`)
      } finally {
        await dropper.destroy()
      }
    }
  } satisfies SoakDatabase
}
