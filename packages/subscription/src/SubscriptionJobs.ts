/**
 * Periodic jobs: reset subscriptions whose period ended and expire those past
 * their end. Both are safe to run from several processes at once: a reset is a
 * compare-and-set on `next_reset_at` under a row lock, an expiry one
 * conditional UPDATE. Reservations also reset lazily, so the jobs only keep the
 * stored usage current for subscriptions nobody is using.
 *
 * @since 0.1.0
 */
import type { BillingError } from "@relay-billing/core"
import { KnexClient, KnexSqlStore } from "@relay-billing/knex"
import { Clock, Effect } from "effect"
import { makeSqlStore } from "./internal/sqlStore.js"

/**
 * Resets every active subscription whose `next_reset_at` has passed (catching
 * up missed periods in one step); returns how many were reset by this call.
 *
 * @since 0.1.0
 * @category jobs
 */
export const resetDueSubscriptions = (
  options: { readonly timeZone?: string; readonly limit?: number; readonly sourceId?: string } = {}
): Effect.Effect<number, BillingError.StoreError, KnexClient.KnexClient> =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const sql = KnexSqlStore.make(client)
    const store = makeSqlStore(options.sourceId ?? "subscription", options.timeZone ?? "UTC")
    const now = yield* Clock.currentTimeMillis
    const due = yield* client.query("subscription.resetDue", (db) =>
      db(client.table("subscriptions"))
        .select("id")
        .where("status", "active")
        .andWhere("next_reset_at", "<=", now)
        .orderBy("next_reset_at")
        .limit(options.limit ?? 1000))
    let reset = 0
    for (const { id } of due as Array<{ id: string }>) {
      const done = yield* client.transaction(Effect.gen(function*() {
        const row = yield* store.row(sql, String(id))
        return row ? yield* store.resetIfDue(sql, row, now) : false
      }))
      if (done) reset++
    }
    return reset
  })

/**
 * Marks every active subscription past its end as expired; returns how many.
 *
 * @since 0.1.0
 * @category jobs
 */
export const expireDueSubscriptions: Effect.Effect<number, BillingError.StoreError, KnexClient.KnexClient> = Effect.gen(
  function*() {
    const client = yield* KnexClient.KnexClient
    const now = yield* Clock.currentTimeMillis
    return yield* client.query(
      "subscription.expireDue",
      (db) =>
        db(client.table("subscriptions")).where("status", "active").andWhere("end_at", "<=", now).update({
          status: "expired"
        })
    )
  }
)
