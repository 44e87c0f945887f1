/**
 * A statement counter at the drivers themselves, for the statement-profile
 * pass: while installed, it wraps the entry points every statement of every
 * side goes through —
 *
 * - better-sqlite3: `Statement.prototype.run / all / get / iterate` (the SDK's
 *   executor, knex's `_query`, and `db.transaction`'s own BEGIN / COMMIT /
 *   SAVEPOINT statements all call these) and `Database.prototype.exec`;
 *   `Database.prototype.prepare` is counted and timed apart (knex prepares
 *   every statement it runs; the SDK's executor and the driver loop prepare
 *   once per connection);
 * - pg: `Client.prototype.query` (pool clients, knex's connections and the
 *   SDK's executor on the transaction's raw connection);
 * - mysql2: the core connection's `query` and `execute` (the promise API and
 *   pools call them).
 *
 * Each module instance the process loaded is patched once: the drivers are
 * resolved from the bench, from `@relay-billing/knex` and from knex itself, and
 * deduplicated by their real path (pnpm gives all three the same instance when
 * the versions agree; if they did not, each instance would be patched).
 *
 * The knex hook (`hookStatements` in db.ts) no longer sees the SDK's statements
 * (its hot path bypasses knex's `client._query`); it stays for the one thing
 * the driver hook is not installed for: counting driver errors during the
 * measured slices.
 */
import { realpathSync } from "node:fs"
import { createRequire } from "node:module"
import { fileURLToPath } from "node:url"
import type { StatementStats } from "./db.js"
import { normalize } from "./db.js"

/** What the driver hook has seen since `reset`. */
export interface DriverStats extends StatementStats {
  /** `Database.prototype.prepare` calls on better-sqlite3 (not statements: a statement is counted when it runs). */
  prepares: number
  prepareMillis: number
}

type AnyFn = (this: unknown, ...args: Array<unknown>) => unknown

interface Patch {
  readonly target: Record<string, unknown>
  readonly key: string
  readonly original: unknown
}

const here = fileURLToPath(import.meta.url)

/**
 * Every distinct instance of `name` reachable from the bench, from
 * `@relay-billing/knex` and from knex, as loaded modules.
 */
const instances = (name: string): Array<unknown> => {
  const seen = new Map<string, unknown>()
  const from: Array<string> = [here]
  const benchRequire = createRequire(here)
  for (const via of ["@relay-billing/knex", "knex"]) {
    try {
      from.push(realpathSync(benchRequire.resolve(via)))
    } catch {
      // not resolvable from here
    }
  }
  for (const origin of from) {
    try {
      const req = createRequire(origin)
      const file = realpathSync(req.resolve(name))
      if (!seen.has(file)) seen.set(file, req(file))
    } catch {
      // this origin does not see the driver (a dialect not installed)
    }
  }
  return [...seen.values()]
}

/** The object in `proto`'s chain that owns `key` (so a method is patched where it is defined). */
const owner = (proto: object, key: string): Record<string, unknown> | undefined => {
  for (let p: object | null = proto; p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    if (Object.prototype.hasOwnProperty.call(p, key)) return p as Record<string, unknown>
  }
  return undefined
}

/** The SQL text of a pg / mysql2 call's first argument (a string, or a config with `text` / `sql`). */
const sqlOf = (arg: unknown): string => {
  if (typeof arg === "string") return arg
  if (arg && typeof arg === "object") {
    const o = arg as { text?: unknown; sql?: unknown }
    if (typeof o.text === "string") return o.text
    if (typeof o.sql === "string") return o.sql
  }
  return "?"
}

/**
 * Installs the driver hooks; `state.phase` labels what is counted (the profile
 * sets it to `open` / `settle` around each phase at 1 worker; `*` at 16).
 * `restore` puts every original method back.
 */
export const hookDrivers = () => {
  const stats: DriverStats = {
    counts: new Map(),
    millis: new Map(),
    sqlMillis: 0,
    statements: 0,
    errors: new Map(),
    prepares: 0,
    prepareMillis: 0
  }
  const state = { phase: "-" }
  const patches: Array<Patch> = []
  const drivers: Array<string> = []

  const begin = (sql: string): string => {
    const label = normalize(sql)
    let byPhase = stats.counts.get(label)
    if (!byPhase) stats.counts.set(label, byPhase = new Map())
    byPhase.set(state.phase, (byPhase.get(state.phase) ?? 0) + 1)
    stats.statements++
    return label
  }
  const end = (label: string, t0: number, error?: unknown) => {
    const dt = performance.now() - t0
    stats.sqlMillis += dt
    stats.millis.set(label, (stats.millis.get(label) ?? 0) + dt)
    if (error !== undefined) {
      const code = String((error as { code?: unknown })?.code ?? "other")
      stats.errors.set(code, (stats.errors.get(code) ?? 0) + 1)
    }
  }
  const patch = (target: Record<string, unknown> | undefined, key: string, make: (original: AnyFn) => AnyFn) => {
    if (!target || typeof target[key] !== "function") return
    if (patches.some((p) => p.target === target && p.key === key)) return
    const original = target[key] as AnyFn
    patches.push({ target, key, original })
    target[key] = make(original)
  }

  // better-sqlite3: synchronous calls, timed around the call.
  for (const Database of instances("better-sqlite3") as Array<new(file: string) => Record<string, AnyFn>>) {
    drivers.push("better-sqlite3")
    const probe = new Database(":memory:")
    const statementProto = Object.getPrototypeOf((probe["prepare"] as AnyFn).call(probe, "SELECT 1")) as object
    ;(probe["close"] as AnyFn).call(probe)
    for (const key of ["run", "all", "get", "iterate"]) {
      patch(owner(statementProto, key), key, (original) =>
        function(this: unknown, ...args) {
          const label = begin(String((this as { source?: unknown }).source ?? "?"))
          const t0 = performance.now()
          try {
            const r = original.apply(this, args)
            end(label, t0)
            return r
          } catch (error) {
            end(label, t0, error)
            throw error
          }
        })
    }
    const dbProto = (Database as unknown as { prototype: object }).prototype
    patch(owner(dbProto, "exec"), "exec", (original) =>
      function(this: unknown, ...args) {
        const label = begin(String(args[0]))
        const t0 = performance.now()
        try {
          const r = original.apply(this, args)
          end(label, t0)
          return r
        } catch (error) {
          end(label, t0, error)
          throw error
        }
      })
    patch(owner(dbProto, "prepare"), "prepare", (original) =>
      function(this: unknown, ...args) {
        const t0 = performance.now()
        try {
          return original.apply(this, args)
        } finally {
          stats.prepares++
          stats.prepareMillis += performance.now() - t0
        }
      })
  }

  // pg: callback form (knex) or promise form (pool clients, the SDK's executor).
  for (const pg of instances("pg") as Array<{ Client?: { prototype: object } }>) {
    if (!pg.Client) continue
    drivers.push("pg")
    patch(owner(pg.Client.prototype, "query"), "query", (original) =>
      function(this: unknown, ...args) {
        const label = begin(sqlOf(args[0]))
        const t0 = performance.now()
        const last = args.length - 1
        const cbIndex = typeof args[last] === "function"
          ? last
          : -1
        if (cbIndex >= 0) {
          const cb = args[cbIndex] as AnyFn
          args[cbIndex] = function(this: unknown, error: unknown, ...rest: Array<unknown>) {
            end(label, t0, error ?? undefined)
            return cb.call(this, error, ...rest)
          }
          return original.apply(this, args)
        }
        const r = original.apply(this, args)
        if (r && typeof (r as Promise<unknown>).then === "function") {
          ;(r as Promise<unknown>).then(() => end(label, t0), (error: unknown) => end(label, t0, error))
        }
        return r
      })
  }

  // mysql2: both calls return the command, which emits `end` when done (callback or not); errors are not counted here.
  for (const mysql of instances("mysql2") as Array<{ Connection?: { prototype: object } }>) {
    if (!mysql.Connection) continue
    drivers.push("mysql2")
    for (const key of ["query", "execute"]) {
      patch(owner(mysql.Connection.prototype, key), key, (original) =>
        function(this: unknown, ...args) {
          const label = begin(sqlOf(args[0]))
          const t0 = performance.now()
          const command = original.apply(this, args) as {
            once?: (event: string, f: () => void) => void
          }
          // No `error` listener: one would change how a command without a callback reports its error.
          if (command && typeof command.once === "function") command.once("end", () => end(label, t0))
          return command
        })
    }
  }

  return {
    stats,
    state,
    /** The driver modules patched (one entry per instance). */
    drivers,
    reset: () => {
      stats.counts.clear()
      stats.millis.clear()
      stats.errors.clear()
      stats.sqlMillis = 0
      stats.statements = 0
      stats.prepares = 0
      stats.prepareMillis = 0
    },
    restore: () => {
      for (const p of patches.reverse()) p.target[p.key] = p.original
      patches.length = 0
    }
  }
}

export type DriverHook = ReturnType<typeof hookDrivers>
