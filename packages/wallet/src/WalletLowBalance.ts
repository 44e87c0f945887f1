/**
 * The low-balance policy backed by the database: the threshold is the account's
 * `low_balance_threshold` (default 1,000), cached in the process for a short
 * time so the settle path does not read it on every request; the rate limit
 * (at most 2 warnings per account and source in any 10 minutes) is a
 * compare-and-set on the last two send times, so it holds across processes
 * sharing the database.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Layer } from "effect"
import { LowBalance } from "@relay-billing/core"
import { KnexClient, Statements } from "@relay-billing/knex"

/**
 * Options of the policy.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Threshold for accounts without one (default 1,000). */
  readonly defaultThreshold?: number
  /** How long a threshold read is reused in this process (default 30 s). */
  readonly cacheMillis?: number
}

/**
 * Builds the policy over a client.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (client: KnexClient.Client, options: Options = {}): LowBalance.Policy => {
  const fallback = options.defaultThreshold ?? LowBalance.defaultThreshold
  const ttl = options.cacheMillis ?? 30_000
  const cache = new Map<string, { readonly value: number; readonly at: number }>()
  const notices = client.table("low_balance_notices")
  return {
    threshold: (accountId) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const hit = cache.get(accountId)
        if (hit && now - hit.at < ttl) return hit.value
        const row = yield* client.query("wallet.threshold", (db) =>
          db(client.table("accounts")).where({ id: accountId }).first("low_balance_threshold"))
        const raw = row?.low_balance_threshold
        const value = raw === null || raw === undefined ? fallback : Number(raw)
        cache.set(accountId, { value, at: now })
        return value
      }),
    claim: (accountId, sourceId, now) =>
      client.transaction(Effect.gen(function*() {
        const key = { account_id: accountId, source_id: sourceId }
        yield* Statements.insertIgnore(client, "wallet.notice", notices, { ...key, sent1: 0, sent2: 0 }, [
          "account_id",
          "source_id"
        ])
        for (let attempt = 0; attempt < 5; attempt++) {
          const row = yield* client.query("wallet.notice", (db) => db(notices).where(key).first("sent1", "sent2"))
          const sent1 = Number(row?.sent1 ?? 0)
          const sent2 = Number(row?.sent2 ?? 0)
          // sent1 is the older of the last two warnings (0 = none yet): a third inside the
          // window is refused.
          if (sent1 > 0 && sent1 > now - LowBalance.windowMillis) return false
          const changed = yield* client.query("wallet.notice", (db) =>
            db(notices).where({ ...key, sent1, sent2 }).update({ sent1: sent2, sent2: now }))
          if (changed === 1) return true
        }
        return false
      }))
  }
}

/**
 * The policy as the core `LowBalance` service, over the client in context.
 * Provide it where the `BillingSession` layer is built.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}) =>
  Layer.effect(
    LowBalance.LowBalance,
    Effect.gen(function*() {
      return make(yield* KnexClient.KnexClient, options)
    })
  )
