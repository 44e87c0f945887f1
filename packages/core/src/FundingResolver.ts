/**
 * Turns a billing preference (a built-in alias or a named custom chain of
 * source ids) into the ordered list of funding sources to try. The engine
 * moves to the next source only when the previous one failed with
 * `InsufficientFunds`; budget (token) failures never fall back.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import type { StoreError } from "./BillingError.js"
import { InvalidInput, UnknownSource } from "./BillingError.js"
import type { Funding, FundingReader } from "./FundingRegistry.js"
import { readSource } from "./FundingRegistry.js"
import type { Availability } from "./FundingSource.js"
import * as Preference from "./Preference.js"
import { isSource } from "./Source.js"
import type { SqlStore } from "./SqlStore.js"

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
  preference: Preference.Preference,
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
 * The chain of source ids a preference names: a built-in name is an alias
 * (`subscription_first` = [subscription, wallet], `wallet_first` = [wallet,
 * subscription], `subscription_only` = [subscription], `wallet_only` =
 * [wallet], with the ids of `roles`); another name is looked up in `custom`;
 * an unknown name means {@link Preference.defaultPreference}.
 *
 * @since 0.4.0
 * @category ordering
 */
export const chainOf = (
  preference: string,
  roles: Roles = defaultRoles,
  custom?: Preference.Chains
): ReadonlyArray<string> => {
  const name = Preference.normalize(preference, custom)
  switch (name) {
    case "wallet_only":
      return [roles.wallet]
    case "subscription_only":
      return [roles.subscription]
    case "wallet_first":
      return [roles.wallet, roles.subscription]
    case "subscription_first":
      return [roles.subscription, roles.wallet]
    default:
      return custom![name]!
  }
}

/**
 * Walks a chain, asking each source's availability (`availabilityOf`,
 * `undefined` when the source cannot tell) for the account:
 *
 * - a source that is not available is skipped;
 * - a source whose `allowFallback` is false ends the chain after itself;
 * - the last source of the chain is always kept, without asking: nothing comes
 *   after it to fall back to, so it answers the shortfall itself.
 *
 * With the built-in aliases this is exactly {@link order}: `subscription_first`
 * asks the subscription (it is not last), `wallet_first` and the `*_only`
 * preferences ask nothing.
 *
 * @since 0.4.0
 * @category ordering
 */
export const walk = <E, R>(
  chain: ReadonlyArray<string>,
  availabilityOf: (sourceId: string) => Effect.Effect<Availability | undefined, E, R>
): Effect.Effect<ReadonlyArray<string>, E, R> =>
  Effect.gen(function*() {
    const kept: Array<string> = []
    for (let i = 0; i < chain.length; i++) {
      const id = chain[i]!
      if (i === chain.length - 1) {
        kept.push(id)
        break
      }
      const availability = yield* availabilityOf(id)
      if (availability !== undefined && !availability.available) continue
      kept.push(id)
      if (availability !== undefined && !availability.allowFallback) break
    }
    return kept
  })

/**
 * Checks configured custom chains against the registered funding sources:
 * their shape (`Preference.validateShape`) and that every id names a
 * registered funding source. Fails with `InvalidInput` naming the field
 * (`preferences.<name>.<index>`) and the unknown id — a configuration error,
 * reported when the engine is built, never at request time.
 *
 * @since 0.4.0
 * @category validation
 */
export const validate = (
  custom: Preference.Chains,
  fundingIds: Iterable<string>,
  field = "preferences"
): Effect.Effect<Preference.Chains, InvalidInput> =>
  Effect.gen(function*() {
    yield* Preference.validateShape(custom, field)
    const known = new Set(fundingIds)
    for (const [name, chain] of Object.entries(custom)) {
      for (let i = 0; i < chain.length; i++) {
        if (!known.has(chain[i]!)) {
          return yield* new InvalidInput({
            field: `${field}.${name}.${i}`,
            value: InvalidInput.render(chain[i]),
            reason: `names no registered funding source (registered: ${[...known].join(", ") || "none"})`
          })
        }
      }
    }
    return custom
  })

/**
 * Resolves the ordered source ids for an account: the preference's chain
 * ({@link chainOf}) without the ids that are not registered (a built-in alias
 * may name a role the host did not install), walked with each registered
 * source's availability ({@link walk}). Fails with `UnknownSource` when no id
 * of the chain is registered. A registry holding `Source`s reads them through
 * `sql` (the store's `SqlStore`; since 0.4.0).
 *
 * @since 0.1.0
 * @category ordering
 */
export const resolve = Effect.fn("FundingResolver.resolve")(function*(
  registry: {
    readonly funding: (id: string) => Effect.Effect<Funding | FundingReader, UnknownSource>
    readonly hasFunding: (id: string) => boolean
  },
  preference: string,
  accountId: string,
  roles: Roles = defaultRoles,
  custom?: Preference.Chains,
  sql?: SqlStore["Service"]
): Effect.fn.Return<ReadonlyArray<string>, StoreError | UnknownSource> {
  const chain = chainOf(preference, roles, custom)
  const registered = chain.filter((id) => registry.hasFunding(id))
  if (registered.length === 0) return yield* new UnknownSource({ sourceId: chain[0] ?? "", kind: "funding" })
  return yield* walk(registered, (id) =>
    Effect.flatMap(registry.funding(id), (entry) => {
      const source: FundingReader = isSource(entry) ? readSource(entry, sql) : entry
      return source.availability ? source.availability(accountId) : Effect.succeed(undefined)
    }))
})
