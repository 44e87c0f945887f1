/** `relay-billing-source-vouchers`: prepaid voucher packs with an expiry, as a v2 funding `Source`. @since 0.1.0 */
import { BillingError, Source } from "@relay-billing/core"
import type { SqlStore } from "@relay-billing/core"
import { Clock, Effect, Schema } from "effect"

type Sql = SqlStore.SqlStore["Service"]
const { MAX_SAFE_INTEGER: MAX, MIN_SAFE_INTEGER: MIN } = Number
const Name = Schema.String.check(Schema.isPattern(/^[a-z_][a-z0-9_]{0,40}$/))
const NameOrVouchers = Name.pipe(Schema.withDecodingDefaultKey(Effect.succeed("vouchers")))
/** The options: the source id and the table (after the store's prefix), both "vouchers" by default. @since 0.1.0 */
export const Options = Schema.Struct({ id: NameOrVouchers, table: NameOrVouchers })

// `used` moves by the value (2nd ?), or by the room left (>= 0) when that is below the limit (1st ?).
const by = "CASE WHEN total - used < ? THEN (CASE WHEN total - used > 0 THEN total - used ELSE 0 END) ELSE ? END"
const row = "id, total - used AS remaining, last_change"
const has = "account_id = ? AND expires_at > ? AND total - used >= ? AND used <= ?"
const first = "ORDER BY expires_at, id LIMIT 1"
// One UPDATE: what `used` moved by, the pack's room after it, its id (MySQL has no RETURNING: it reads the row back).
const update = (sql: Sql, t: string, where: string, params: Array<unknown>, [limit, value]: [number, number]) =>
  Effect.gen(function*() {
    const my = sql.dialect === "mysql", set = `UPDATE ${t} SET last_change = ${by}, used = used + ${by}`
    const sent = my ? `${set}, id = LAST_INSERT_ID(id) WHERE ${where}` : `${set} WHERE ${where} RETURNING ${row}`
    const r = yield* sql.execute("vouchers.update", sent, [limit, value, limit, value, ...params])
    const read = `SELECT ${row} FROM ${t} WHERE id = LAST_INSERT_ID()`
    const p = !my ? r.rows[0] : r.affected > 0 ? (yield* sql.execute("vouchers.read", read)).rows[0] : undefined
    return p && { amount: Number(p["last_change"]), balanceAfter: Number(p["remaining"]), ref: String(p["id"]) }
  })

// What the account's unexpired packs have left: in all ("SUM") or in the fullest pack ("MAX").
const room = (sql: Sql, t: string, accountId: string, aggregate: "SUM" | "MAX") =>
  Effect.gen(function*() {
    const query = `SELECT ${aggregate}(total - used) AS n FROM ${t} WHERE ${has}`
    const r = yield* sql.execute("vouchers.room", query, [accountId, yield* Clock.currentTimeMillis, 1, MAX])
    return Number(r.rows[0]?.["n"] ?? 0)
  })
const ids = { mysql: "BIGINT AUTO_INCREMENT", postgres: "BIGSERIAL", sqlite: "INTEGER" }
const columns = "PRIMARY KEY, account_id VARCHAR(191) NOT NULL, total BIGINT NOT NULL, " +
  "used BIGINT NOT NULL DEFAULT 0, last_change BIGINT NOT NULL DEFAULT 0, expires_at BIGINT NOT NULL"
const create = (table: string) => (sql: Sql) =>
  Effect.asVoid(sql.execute("vouchers.create", `CREATE TABLE ${sql.table(table)} (id ${ids[sql.dialect]} ${columns})`))

/** Builds the source: a take draws on the soonest-expiring unexpired pack with room. @since 0.1.0 */
export const make = ({ id, table }: typeof Options.Type): Source.Source =>
  Source.make({
    id,
    role: "funding",
    take: ({ accountId, amount, mode, sql }) =>
      Effect.gen(function*() {
        const t = sql.table(table), my = sql.dialect === "mysql", now = yield* Clock.currentTimeMillis
        const args = [accountId, now, mode === "exact" ? amount : 1, MAX - amount]
        const where = my ? `${has} ${first}` : `${has} AND id = (SELECT id FROM ${t} WHERE ${has} ${first})`
        const limit = mode === "unconditional" ? MIN : amount
        const done = yield* update(sql, t, where, my ? args : [...args, ...args], [limit, amount])
        if (done) return done
        const available = yield* room(sql, t, accountId, "MAX")
        return yield* new BillingError.InsufficientFunds({ accountId, available, required: amount, sourceId: id })
      }),
    // A charge beyond what the pack has is capped; the rest may go on along the hold's chain (else it is unbilled).
    move: ({ delta, ref, sql }) =>
      Effect.map(
        update(sql, sql.table(table), "id = ?", [ref], [delta < 0 ? -delta : MIN, -delta]),
        (done) => ({ balanceAfter: done?.balanceAfter ?? 0, moved: 0 - (done?.amount ?? 0), overflow: true })
      ),
    balance: (sql, accountId) => room(sql, sql.table(table), accountId, "SUM"),
    migrations: [{ name: `create_${table}`, up: create(table) }],
    audit: [{ column: "used", sign: -1, subject: "account_id", table }]
  })

/** Adds a pack of `total` for `accountId`, usable until `expiresAt` (epoch ms). @since 0.1.0 */
export const addPack = (sql: Sql, pack: { accountId: string; total: number; expiresAt: number }, table = "vouchers") =>
  Effect.gen(function*() {
    const field = (["total", "expiresAt"] as const).find((k) => !(Number.isSafeInteger(pack[k]) && pack[k] > 0))
    const reason = "expected a positive safe integer"
    if (field) return yield* new BillingError.InvalidInput({ field, reason, value: String(pack[field]) })
    const insert = `INSERT INTO ${sql.table(table)} (account_id, total, expires_at) VALUES (?, ?, ?)`
    yield* sql.execute("vouchers.add", insert, [pack.accountId, pack.total, pack.expiresAt])
  })

/** The plugin entry the relay loads by package name (`funding.sources`). @since 0.1.0 */
export const plugin = Source.plugin({ id: "vouchers", make, options: Options })
