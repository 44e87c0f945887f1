/**
 * Isolated databases for tests: every call gets its own SQLite file, PostgreSQL
 * schema or MySQL database, dropped when the scope closes, so test runs never
 * see each other's rows. PostgreSQL and MySQL come from `BILLING_PG_URL` and
 * `BILLING_MYSQL_URL`; without them those targets are absent — except under CI
 * (`CI=true`), where a missing URL is an error, so a database suite can never be
 * skipped silently.
 *
 * @since 0.1.0
 */
import { BillingError } from "@relay-billing/core"
import { Effect, Layer } from "effect"
import type { Scope } from "effect"
import knex from "knex"
import { randomBytes } from "node:crypto"
import { rmSync } from "node:fs"
import { tmpdir } from "node:os"
import path from "node:path"
import { connectionConfig } from "./internal/url.js"
import type { ClientOptions } from "./KnexClient.js"
import { fromUrl, KnexClient } from "./KnexClient.js"

/**
 * A database kind tests can run on.
 *
 * @since 0.1.0
 * @category models
 */
export interface Target {
  readonly name: "sqlite" | "postgres" | "mysql"
  /** The server URL (absent for SQLite). */
  readonly url?: string
}

/**
 * An isolated database: a URL and client options that point at it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Isolated {
  readonly target: Target["name"]
  readonly url: string
  readonly options: ClientOptions
}

/**
 * The targets available in this environment: SQLite always, PostgreSQL and
 * MySQL when their URL is set. Throws under CI when a URL is missing.
 *
 * @since 0.1.0
 * @category targets
 */
export const targets = (env: NodeJS.ProcessEnv = process.env): ReadonlyArray<Target> => {
  const out: Array<Target> = [{ name: "sqlite" }]
  const pg = env["BILLING_PG_URL"]
  const mysql = env["BILLING_MYSQL_URL"]
  if (env["CI"] === "true" && (!pg || !mysql)) {
    throw new Error(
      `database suites must not be skipped under CI: set BILLING_PG_URL and BILLING_MYSQL_URL (missing: ${
        [!pg && "BILLING_PG_URL", !mysql && "BILLING_MYSQL_URL"].filter(Boolean).join(", ")
      })`
    )
  }
  if (pg) out.push({ name: "postgres", url: pg })
  if (mysql) out.push({ name: "mysql", url: mysql })
  return out
}

const storeError = (operation: string) => (cause: unknown) =>
  new BillingError.StoreError({ operation, detail: cause instanceof Error ? cause.message : String(cause), cause })

const admin = <A>(url: string, f: (k: knex.Knex) => Promise<A>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => knex({ ...connectionConfig(url, {}), pool: { min: 0, max: 1 } })),
    (k) => Effect.tryPromise({ try: () => f(k), catch: storeError("testDatabase.admin") }),
    (k) => Effect.promise(() => k.destroy())
  )

/**
 * Creates an isolated database on `target`, dropped (or deleted) when the scope
 * closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const isolated = (
  target: Target,
  options: { readonly prefix?: string; readonly keep?: boolean } = {}
): Effect.Effect<Isolated, BillingError.StoreError, Scope.Scope> => {
  const name = `rb_${process.pid}_${randomBytes(4).toString("hex")}`
  const prefix = options.prefix !== undefined ? { prefix: options.prefix } : {}
  switch (target.name) {
    case "sqlite": {
      const file = path.join(tmpdir(), `${name}.db`)
      return Effect.acquireRelease(
        Effect.succeed<Isolated>({ target: "sqlite", url: `sqlite:${file}`, options: { ...prefix } }),
        () =>
          options.keep ? Effect.void : Effect.sync(() => {
            for (const suffix of ["", "-wal", "-shm"]) rmSync(`${file}${suffix}`, { force: true })
          })
      )
    }
    case "postgres": {
      const url = target.url!
      return Effect.acquireRelease(
        admin(url, (k) => k.raw(`create schema "${name}"`)).pipe(
          Effect.as<Isolated>({ target: "postgres", url, options: { ...prefix, schema: name } })
        ),
        () =>
          options.keep
            ? Effect.void
            : admin(url, (k) => k.raw(`drop schema if exists "${name}" cascade`)).pipe(Effect.ignore)
      )
    }
    case "mysql": {
      const url = target.url!
      const u = new URL(url)
      u.pathname = `/${name}`
      return Effect.acquireRelease(
        admin(url, (k) => k.raw(`create database \`${name}\``)).pipe(
          Effect.as<Isolated>({ target: "mysql", url: u.toString(), options: { ...prefix } })
        ),
        () =>
          options.keep
            ? Effect.void
            : admin(url, (k) => k.raw(`drop database if exists \`${name}\``)).pipe(Effect.ignore)
      )
    }
  }
}

/**
 * A `KnexClient` layer over a fresh isolated database on `target`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  target: Target,
  options: ClientOptions = {}
): Layer.Layer<KnexClient, BillingError.StoreError> =>
  Layer.effect(
    KnexClient,
    Effect.gen(function*() {
      const db = yield* isolated(target)
      // Finalizers run in reverse: the client is destroyed before its database is dropped.
      return yield* fromUrl(db.url, { ...db.options, ...options })
    })
  )
