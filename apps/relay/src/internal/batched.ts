/**
 * The relay's two per-request statements outside the SDK — the API-key lookup
 * and the request-id record — batched across concurrent requests with
 * Effect's `RequestResolver`: the requests that reach the statement in the
 * same scheduler round share one query (`WHERE key_hash IN (…)`, one
 * multi-row `INSERT … ON CONFLICT DO NOTHING`), at most {@link MAX_BATCH}
 * each. A request alone runs its own statement, as before. Each request still
 * waits for its own statement's outcome (the record is written before the
 * hold is opened); a failed query fails every request of its batch with the
 * same `StoreError`.
 *
 * @internal
 */
import type { BillingError } from "@relay-billing/core"
import type { KnexClient } from "@relay-billing/knex"
import { Effect, Exit, Request, RequestResolver } from "effect"

/** The most requests one statement serves (bounded well below every dialect's bind-parameter limit). */
export const MAX_BATCH = 256

type StoreError = BillingError.StoreError

/** The token row of a key hash, joined with its account (`undefined`: no such key). */
export type TokenRow = Record<string, unknown>

class KeyLookup extends Request.Class<{ readonly hash: string }, TokenRow | undefined, StoreError> {}

class RequestIdClaim extends Request.Class<
  { readonly accountId: string; readonly requestId: string; readonly createdAt: number },
  void,
  StoreError
> {}

const failAll = <A extends Request.Any>(
  entries: ReadonlyArray<Request.Entry<A>>,
  error: Request.Error<A>
) =>
  Effect.sync(() => {
    for (const entry of entries) entry.completeUnsafe(Exit.fail(error) as never)
  })

/**
 * The batched statements over `client` and the relay's (prefixed) table names.
 *
 * @internal
 */
export const make = (
  client: KnexClient.Client,
  tables: { readonly tokens: string; readonly accounts: string; readonly requestIds: string }
) => {
  const lookups = RequestResolver.make<KeyLookup>((entries) => {
    const hashes = [...new Set(entries.map((e) => e.request.hash))]
    return client.query(
      "relay.authenticate",
      (db) =>
        db(`${tables.tokens} as t`)
          .join(`${tables.accounts} as a`, "a.id", "t.account_id")
          .whereIn("t.key_hash", hashes)
          .select(
            "t.id",
            "t.account_id",
            "t.key_hash",
            "t.models",
            "t.expires_at",
            "t.status",
            "a.group_name",
            "a.billing_preference"
          )
    ).pipe(
      Effect.matchEffect({
        onFailure: (error) => failAll(entries, error),
        onSuccess: (rows) =>
          Effect.sync(() => {
            const byHash = new Map<string, TokenRow>()
            for (const row of rows as Array<TokenRow>) byHash.set(String(row["key_hash"]), row)
            for (const entry of entries) entry.completeUnsafe(Exit.succeed(byHash.get(entry.request.hash)))
          })
      })
    )
  }).pipe(RequestResolver.batchN(MAX_BATCH))

  const claims = RequestResolver.make<RequestIdClaim>((entries) => {
    const rows = new Map<string, { account_id: string; request_id: string; created_at: number }>()
    for (const { request } of entries) {
      const key = `${request.accountId}\u0000${request.requestId}`
      if (!rows.has(key)) {
        rows.set(key, { account_id: request.accountId, request_id: request.requestId, created_at: request.createdAt })
      }
    }
    return client.query(
      "relay.claimRequestId",
      (db) => db(tables.requestIds).insert([...rows.values()]).onConflict(["account_id", "request_id"]).ignore()
    ).pipe(
      Effect.matchEffect({
        onFailure: (error) => failAll(entries, error),
        onSuccess: () =>
          Effect.sync(() => {
            for (const entry of entries) entry.completeUnsafe(Exit.void)
          })
      })
    )
  }).pipe(RequestResolver.batchN(MAX_BATCH))

  return {
    /** The token row whose `key_hash` is `hash` (joined with its account), or `undefined`. */
    tokenByHash: (hash: string): Effect.Effect<TokenRow | undefined, StoreError> =>
      Effect.request(new KeyLookup({ hash }), lookups),
    /** Records that `accountId` used `requestId` (idempotent). */
    claimRequestId: (accountId: string, requestId: string, createdAt: number): Effect.Effect<void, StoreError> =>
      Effect.request(new RequestIdClaim({ accountId, requestId, createdAt }), claims)
  }
}
