/**
 * Turns a billing preference into the ordered list of funding sources to try.
 * The engine moves to the next source only when the previous one failed with
 * `InsufficientFunds`; budget (token) failures never fall back.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import type { StoreError } from "./BillingError.js"
import { UnknownSource } from "./BillingError.js"
import type { Availability } from "./FundingSource.js"
import type { Funding, FundingReader } from "./FundingRegistry.js"
import { readSource } from "./FundingRegistry.js"
import { isSource } from "./Source.js"
import type { SqlStore } from "./SqlStore.js"
import type { Preference } from "./Preference.js"

/**
 * Ids of the two built-in roles.
 *
 * @since 0.1.0
 * @category models
 */
export interface Roles {
  readonly wallet: string
  readonly subscription: string
}

/**
 * The default role ids.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultRoles: Roles = { wallet: "wallet", subscription: "subscription" }

/**
 * The pure ordering rule of the spec (§2.1):
 *
 * - `wallet_only` / `subscription_only`: that source, no fallback.
 * - `wallet_first`: wallet, then subscription.
 * - `subscription_first`: wallet alone when the account has no active
 *   subscription; subscription alone when an active subscription forbids wallet
 *   overflow; otherwise subscription, then wallet.
 *
 * `subscription` is `undefined` when no subscription source is registered.
 *
 * @since 0.1.0
 * @category ordering
 */
export const order = (
  preference: Preference,
  subscription: Availability | undefined,
  roles: Roles = defaultRoles
): ReadonlyArray<string> => {
  switch (preference) {
    case "wallet_only":
      return [roles.wallet]
    case "subscription_only":
      return [roles.subscription]
    case "wallet_first":
      return subscription === undefined ? [roles.wallet] : [roles.wallet, roles.subscription]
    case "subscription_first": {
      if (subscription === undefined || !subscription.available) return [roles.wallet]
      return subscription.allowFallback ? [roles.subscription, roles.wallet] : [roles.subscription]
    }
  }
}

/**
 * Resolves the ordered source ids for an account with the registered sources,
 * reading the subscription source's availability when the preference needs it.
 * A registry holding `Source`s reads them through `sql` (the store's
 * `SqlStore`; since 0.4.0).
 *
 * @since 0.1.0
 * @category ordering
 */
export const resolve = Effect.fn("FundingResolver.resolve")(function*(
  registry: {
    readonly funding: (id: string) => Effect.Effect<Funding | FundingReader, UnknownSource>
    readonly hasFunding: (id: string) => boolean
  },
  preference: Preference,
  accountId: string,
  roles: Roles = defaultRoles,
  sql?: SqlStore["Service"]
): Effect.fn.Return<ReadonlyArray<string>, StoreError | UnknownSource> {
  let availability: Availability | undefined
  if (registry.hasFunding(roles.subscription)) {
    const entry = yield* registry.funding(roles.subscription)
    const source: FundingReader = isSource(entry) ? readSource(entry, sql) : entry
    availability = preference === "subscription_first" && source.availability
      ? yield* source.availability(accountId)
      : { available: true, allowFallback: true }
  }
  const ids = order(preference, availability, roles)
  const known = ids.filter((id) => registry.hasFunding(id))
  if (known.length === 0) return yield* new UnknownSource({ sourceId: ids[0] ?? "", kind: "funding" })
  return known
})
