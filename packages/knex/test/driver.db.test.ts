/**
 * The driver-level executor (`Client.execute`): inside a transaction it runs on
 * the transaction's own driver connection with statements prepared once per
 * connection; outside one it goes through knex. Checked on every target.
 */
import { assert, describe, it as plain, layer } from "@effect/vitest"
import { BillingError } from "@relay-billing/core"
import { Effect, Exit } from "effect"
import { KnexClient, TestDatabase } from "../src/index.js"
import { MAX_PREPARED, numberPlaceholders, pgStatement, runSqlite } from "../src/internal/driver.js"

describe("numberPlaceholders (PostgreSQL)", () => {
  plain("numbers each ? in order", () => {
    assert.strictEqual(
      numberPlaceholders("update t set n = n + ? where id = ? and n >= ?"),
      "update t set n = n + $1 where id = $2 and n >= $3"
    )
  })

  plain("a ? inside a string literal, a quoted identifier or a comment is not a placeholder", () => {
    assert.strictEqual(
      numberPlaceholders(`select '?' as "a?", 'it''s ?' as b, ? as c -- what?\n/* ? */ from t where x = ?`),
      `select '?' as "a?", 'it''s ?' as b, $1 as c -- what?\n/* ? */ from t where x = $2`
    )
  })

  plain("\\? is a literal ? (as in knex.raw)", () => {
    assert.strictEqual(numberPlaceholders("select ? as a, 1 \\? 2"), "select $1 as a, 1 ? 2")
  })

  plain("one stable statement name per text", () => {
    const a = pgStatement("select ? as test_stable_name")
    const b = pgStatement("select ? as test_stable_name")
    const c = pgStatement("select ? as test_other_name")
    assert.strictEqual(a.name, b.name)
    assert.notStrictEqual(a.name, c.name)
    assert.strictEqual(a.text, "select $1 as test_stable_name")
  })
})

describe("runSqlite", () => {
  plain("prepares a text once per connection and reuses it", () => {
    let prepared = 0
    const statement = {
      reader: false,
      all: () => [],
      run: (params: ReadonlyArray<unknown>) => ({ changes: params.length })
    }
    const conn = {
      prepare: () => {
        prepared++
        return statement
      }
    }
    const other = { prepare: conn.prepare }
    assert.strictEqual(runSqlite(conn, "update t set a = ?", [1]).affected, 1)
    assert.strictEqual(runSqlite(conn, "update t set a = ?", [true]).affected, 1)
    assert.strictEqual(prepared, 1)
    runSqlite(other, "update t set a = ?", [1])
    assert.strictEqual(prepared, 2)
  })

  plain(`keeps at most ${MAX_PREPARED} texts prepared per connection`, () => {
    let prepared = 0
    const conn = {
      prepare: () => {
        prepared++
        return { reader: false, all: () => [], run: () => ({ changes: 0 }) }
      }
    }
    for (let i = 0; i < MAX_PREPARED; i++) runSqlite(conn, `update t set a = ${i}`, [])
    runSqlite(conn, "update t set a = 0", [])
    assert.strictEqual(prepared, MAX_PREPARED)
    // Past the bound a new text is prepared for each call; the kept ones are still reused.
    runSqlite(conn, "update t set a = -1", [])
    runSqlite(conn, "update t set a = -1", [])
    assert.strictEqual(prepared, MAX_PREPARED + 2)
  })

  plain("booleans are 1/0 and undefined is NULL, as knex binds them", () => {
    let seen: ReadonlyArray<unknown> = []
    const conn = {
      prepare: () => ({
        reader: true,
        all: (params: ReadonlyArray<unknown>) => {
          seen = params
          return [{ x: 1 }]
        },
        run: () => ({ changes: 0 })
      })
    }
    const result = runSqlite(conn, "select ? as a, ? as b, ? as c, ? as d", [true, false, undefined, 7])
    assert.deepStrictEqual(seen, [1, 0, null, 7])
    assert.deepStrictEqual(result, { rows: [{ x: 1 }], affected: 1 })
  })
})

const num = (v: unknown) => Number(v)

for (const target of TestDatabase.targets()) {
  describe(`Client.execute on ${target.name}`, () => {
    // The live clock: the transaction retry waits a few jittered milliseconds between attempts.
    layer(TestDatabase.layer(target), { timeout: 60_000, excludeTestServices: true })((it) => {
      const setup = Effect.gen(function*() {
        const client = yield* KnexClient.KnexClient
        const t = client.table("exec_values")
        yield* client.query("t.drop", (db) => db.schema.dropTableIfExists(t))
        yield* client.query("t.create", (db) =>
          db.schema.createTable(t, (c) => {
            c.string("id", 64).primary()
            c.boolean("b").nullable()
            c.bigInteger("n").nullable()
            c.string("s", 64).nullable()
          }))
        return { client, t }
      })

      it.effect("booleans, 64-bit integers and nulls read back as knex reads them", () =>
        Effect.gen(function*() {
          const { client, t } = yield* setup
          const rows: ReadonlyArray<readonly [string, boolean | null, number | null, string | null]> = [
            ["max", true, Number.MAX_SAFE_INTEGER, "a ? b"],
            ["min", false, Number.MIN_SAFE_INTEGER, null],
            ["none", null, null, "'quoted'"]
          ]
          yield* client.transaction(Effect.gen(function*() {
            for (const row of rows) {
              const r = yield* client.execute("t.insert", `insert into ${t} (id, b, n, s) values (?, ?, ?, ?)`, row)
              assert.strictEqual(r.affected, 1)
            }
          }))
          const fast = yield* client.transaction(
            client.execute("t.read", `select id, b, n, s from ${t} order by id`)
          )
          const built = yield* client.query("t.read", (db) => db(t).select("id", "b", "n", "s").orderBy("id"))
          // The same driver answers both: the same value types.
          assert.deepStrictEqual(fast.rows, built)
          assert.strictEqual(fast.affected, 3)
          const byId = new Map(fast.rows.map((r) => [String(r["id"]), r]))
          for (const [id, b, n, s] of rows) {
            const row = byId.get(id)!
            assert.strictEqual(row["b"] === null ? null : Boolean(Number(row["b"])), b)
            assert.strictEqual(row["n"] === null ? null : num(row["n"]), n)
            assert.strictEqual(row["s"], s)
          }
        }))

      it.effect("runs on the transaction's connection: the builder sees its writes, a rollback undoes them", () =>
        Effect.gen(function*() {
          const { client, t } = yield* setup
          const exit = yield* Effect.exit(client.transaction(Effect.gen(function*() {
            yield* client.execute("t.insert", `insert into ${t} (id, n) values (?, ?)`, ["tx", 1])
            const seen = yield* client.query("t.read", (db) => db(t).where({ id: "tx" }).first("n"))
            assert.strictEqual(num(seen?.n), 1)
            yield* client.execute("t.update", `update ${t} set n = n + ? where id = ?`, [1, "tx"])
            const again = yield* client.execute("t.read", `select n from ${t} where id = ?`, ["tx"])
            assert.strictEqual(num(again.rows[0]?.["n"]), 2)
            return yield* Effect.fail("abort" as const)
          })))
          assert.isTrue(Exit.isFailure(exit))
          const after = yield* client.query("t.read", (db) => db(t).where({ id: "tx" }))
          assert.strictEqual(after.length, 0)
          // Outside a transaction it runs through knex, and commits on its own.
          const outside = yield* client.execute("t.insert", `insert into ${t} (id, n) values (?, ?)`, ["out", 5])
          assert.strictEqual(outside.affected, 1)
          const read = yield* client.execute("t.read", `select n from ${t} where id = ?`, ["out"])
          assert.strictEqual(num(read.rows[0]?.["n"]), 5)
        }))

      it.effect("updates answer the rows they matched; RETURNING answers rows (SQLite, PostgreSQL)", () =>
        Effect.gen(function*() {
          const { client, t } = yield* setup
          yield* client.transaction(Effect.gen(function*() {
            yield* client.execute("t.insert", `insert into ${t} (id, n) values (?, ?), (?, ?)`, ["a", 1, "b", 2])
            const none = yield* client.execute("t.update", `update ${t} set n = n where id = ?`, ["missing"])
            assert.strictEqual(none.affected, 0)
            // Unchanged values still count (MySQL: knex connects with FOUND_ROWS).
            const same = yield* client.execute("t.update", `update ${t} set n = n where id = ?`, ["a"])
            assert.strictEqual(same.affected, 1)
            if (client.dialect !== "mysql") {
              const r = yield* client.execute("t.returning", `update ${t} set n = n + ? where id = ? returning n`, [
                10,
                "b"
              ])
              assert.deepStrictEqual(r.rows.map((row) => num(row["n"])), [12])
              assert.strictEqual(r.affected, 1)
            }
          }))
        }))

      it.effect("a ? inside a string literal is text, not a placeholder", () =>
        Effect.gen(function*() {
          const { client } = yield* setup
          const r = yield* client.transaction(client.execute("t.literal", "select '?' as lit, ? as v", ["x"]))
          assert.deepStrictEqual(r.rows.map((row) => [row["lit"], row["v"]]), [["?", "x"]])
        }))

      it.effect("a driver error is a StoreError naming the operation, with the driver's error as cause", () =>
        Effect.gen(function*() {
          const { client } = yield* setup
          const error = yield* Effect.flip(
            client.transaction(client.execute("t.broken", "select * from no_such_table_here where id = ?", [1]))
          )
          assert.instanceOf(error, BillingError.StoreError)
          assert.strictEqual(error.operation, "t.broken")
          const cause = error.cause as { code?: unknown; errno?: unknown }
          assert.instanceOf(cause, Error)
          if (client.dialect === "sqlite") assert.strictEqual(cause.code, "SQLITE_ERROR")
          if (client.dialect === "postgres") assert.strictEqual(cause.code, "42P01")
          if (client.dialect === "mysql") assert.strictEqual(cause.errno, 1146)
        }))

      if (target.name === "postgres") {
        it.effect("PostgreSQL: the statement is prepared on the connection under its stable name", () =>
          Effect.gen(function*() {
            const { client, t } = yield* setup
            const text = `select n from ${t} where id = ?`
            const names = yield* client.transaction(Effect.gen(function*() {
              yield* client.execute("t.read", text, ["a"])
              yield* client.execute("t.read", text, ["b"])
              return yield* client.execute(
                "t.prepared",
                "select name from pg_prepared_statements where name = ?",
                [pgStatement(text).name]
              )
            }))
            assert.deepStrictEqual(names.rows.map((r) => r["name"]), [pgStatement(text).name])
          }))

        it.effect("PostgreSQL: a deadlock (40P01) raised by a statement retries the whole transaction", () =>
          Effect.gen(function*() {
            const { client, t } = yield* setup
            // A sequence is not rolled back: the first call raises, the retry passes.
            const seq = client.table("exec_attempts")
            const fn = client.table("exec_fail_once")
            yield* client.query("t.seq", (db) => db.raw(`create sequence ${seq}`))
            yield* client.query("t.fn", (db) =>
              db.raw(`create function ${fn}() returns int language plpgsql as $$
                begin
                  if nextval('${seq}') = 1 then
                    raise exception 'deadlock (test)' using errcode = '40P01';
                  end if;
                  return 1;
                end $$`))
            yield* client.transaction(Effect.gen(function*() {
              yield* client.execute("t.insert", `insert into ${t} (id, n) values (?, ?)`, ["retried", 1])
              yield* client.execute("t.fail", `select ${fn}() as ok`)
            }))
            const rows = yield* client.query("t.read", (db) => db(t).where({ id: "retried" }))
            assert.strictEqual(rows.length, 1)
            const attempts = yield* client.query("t.seq", (db) => db.raw(`select last_value from ${seq}`))
            assert.strictEqual(num(attempts.rows[0].last_value), 2)
          }))
      }

      if (target.name === "sqlite") {
        it.effect("SQLite: statements are prepared once per connection; SQLITE_BUSY retries the transaction", () =>
          Effect.gen(function*() {
            const { client, t } = yield* setup
            const raw = client.knex.client as {
              acquireConnection: () => Promise<Record<string, unknown>>
              releaseConnection: (c: unknown) => Promise<void>
            }
            const conn = yield* Effect.promise(() => raw.acquireConnection())
            yield* Effect.promise(() => raw.releaseConnection(conn))
            const prepare = conn["prepare"] as (this: unknown, sql: string) => unknown
            const prepared: Array<string> = []
            conn["prepare"] = function(this: unknown, sql: string) {
              prepared.push(sql)
              return prepare.call(this, sql)
            }
            let calls = 0
            ;(conn["function"] as (this: unknown, name: string, f: () => number) => void).call(
              conn,
              "rb_fail_once",
              () => {
                if (++calls === 1) throw Object.assign(new Error("database is locked (test)"), { code: "SQLITE_BUSY" })
                return 1
              }
            )
            const text = `update ${t} set n = n + ? where id = ? and rb_fail_once() = 1`
            yield* client.execute("t.insert", `insert into ${t} (id, n) values (?, ?)`, ["p", 0])
            try {
              yield* client.transaction(Effect.gen(function*() {
                yield* client.execute("t.update", text, [1, "p"])
                yield* client.execute("t.update", text, [1, "p"])
              }))
            } finally {
              conn["prepare"] = prepare
            }
            // The first attempt failed and rolled back; the retry ran both updates.
            const row = yield* client.execute("t.read", `select n from ${t} where id = ?`, ["p"])
            assert.strictEqual(num(row.rows[0]?.["n"]), 2)
            assert.strictEqual(calls, 3)
            assert.strictEqual(prepared.filter((s) => s === text).length, 1)
          }))
      }
    })
  })
}

// Last in the file: it fills the process-wide table of PostgreSQL statement names.
describe("pgStatement past the bound", () => {
  plain(`names at most ${MAX_PREPARED} texts; later ones run unnamed`, () => {
    for (let i = 0; pgStatement(`select ${i} as n where ? = 1`).name !== undefined; i++) {
      assert.isBelow(i, MAX_PREPARED + 1)
    }
    const late = pgStatement("select ? as late_text")
    assert.isUndefined(late.name)
    assert.strictEqual(late.text, "select $1 as late_text")
    // A text named before the bound keeps its name.
    assert.isDefined(pgStatement("select ? as test_stable_name").name)
  })
})
