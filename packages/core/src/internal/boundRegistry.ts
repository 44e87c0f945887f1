/**
 * The engine's view of the registry: every `Source` adapted (once) to the
 * two-phase shape the phases drive (see `sourceTarget.ts`), bound to the
 * store's executor, the ledger and the overflow chain; external
 * `FundingSource`s and `Budget`s as registered.
 */
import { Effect } from "effect"
import { StoreError } from "../BillingError.js"
import type { UnknownSource } from "../BillingError.js"
import type { FundingRegistry } from "../FundingRegistry.js"
import * as FundingResolver from "../FundingResolver.js"
import type { ExternalSource } from "../FundingSource.js"
import type { Ledger } from "../Ledger.js"
import type * as Preference from "../Preference.js"
import type { Source } from "../Source.js"
import { isSource } from "../Source.js"
import type { SqlStore } from "../SqlStore.js"
import { adaptSource } from "./sourceTarget.js"

/** The registry as the engine sees it. */
export interface BoundRegistry {
  readonly funding: (id: string) => Effect.Effect<ExternalSource, UnknownSource>
  readonly budget: (id: string) => Effect.Effect<ExternalSource, UnknownSource>
  readonly hasFunding: (id: string) => boolean
  readonly fundingIds: ReadonlyArray<string>
  /**
   * Whether every registered funding source and the token budget is a `Source`
   * (a balance mover without hold ids): the engine then writes a hold once per
   * phase. Two-phase sources in the store keep the paths that read and lock the
   * hold first: their own hold-id records answer a repeated call, and refuse one
   * after a refund.
   */
  readonly allSources: Effect.Effect<boolean, UnknownSource>
  /**
   * Whether the funding source `id` is a `Source` (a balance mover): split
   * funding asks it again while it gives something (a subscription source
   * draws one subscription per take), where a two-phase source, keyed by hold
   * id, is asked once.
   */
  readonly isMover: (id: string) => boolean
}

/** The widest chain of a preference: `*_only` limits where a hold reserves, not where an overflow goes. */
const widen = (preference: string | undefined): string =>
  preference === "subscription_only" || preference === undefined
    ? "subscription_first"
    : preference === "wallet_only"
    ? "wallet_first"
    : preference

interface BindDeps {
  readonly storeId: string
  /** The store's executor (absent: every statement of a `Source` fails typed). */
  readonly sql: SqlStore["Service"] | undefined
  readonly ledger: Ledger["Service"] | undefined
  readonly roles: FundingResolver.Roles
  /** The engine's named custom chains (a hold's preference may name one). */
  readonly preferences?: Preference.Chains | undefined
  readonly tokenBudgetId: string
}

/** The executor of a store without a `SqlStore` service: every statement fails typed. */
const noSql = (storeId: string): SqlStore["Service"] => ({
  id: storeId,
  dialect: "sqlite",
  table: (name) => name,
  execute: (operation) =>
    Effect.fail(new StoreError({ operation, detail: `no SqlStore service was provided for store ${storeId}` }))
})

/** Binds `registry` for the engine. */
export const bindRegistry = (registry: FundingRegistry["Service"], deps: BindDeps): BoundRegistry => {
  const adapted = new Map<string, ExternalSource>()

  /** The registered funding `Source` of `id`, if it is one. */
  const fundingSource = (id: string): Effect.Effect<Source | undefined> =>
    registry.hasFunding(id)
      ? registry.funding(id).pipe(
        Effect.map((entry) => (isSource(entry) ? entry : undefined)),
        Effect.orElseSucceed(() => undefined)
      )
      : Effect.succeed(undefined)

  /**
   * The other funding `Source`s of the hold's (widened) chain — a built-in
   * alias or the engine's custom chain the hold was opened with: those after
   * `sourceId`, then those before it (a `wallet_first` hold that fell to the
   * subscription still overflows into the wallet, as in v1: the wallet may go
   * below zero at settlement).
   */
  const overflowChain = (sourceId: string, preference: string | undefined) => {
    const ids = FundingResolver.chainOf(widen(preference), deps.roles, deps.preferences)
    const at = ids.indexOf(sourceId)
    return Effect.map(
      Effect.forEach(at < 0 ? [] : [...ids.slice(at + 1), ...ids.slice(0, at)], fundingSource),
      (sources) => sources.filter((s): s is Source => s !== undefined)
    )
  }

  const adapt = (source: Source) => {
    const known = adapted.get(`${source.role}:${source.id}`)
    if (known) return known
    const target = adaptSource(source, {
      storeId: deps.storeId,
      sql: deps.sql ?? noSql(deps.storeId),
      ledger: deps.ledger,
      overflowChain,
      fundingSource
    })
    adapted.set(`${source.role}:${source.id}`, target)
    return target
  }

  const movers = new Set(
    registry.fundingIds.filter((id) =>
      Effect.runSync(Effect.match(registry.funding(id), { onFailure: () => false, onSuccess: isSource }))
    )
  )

  const allSourcesRead = Effect.gen(function*() {
    for (const id of registry.fundingIds) {
      if (!isSource(yield* registry.funding(id))) return false
    }
    const budget = yield* Effect.option(registry.budget(deps.tokenBudgetId))
    return budget._tag === "None" || isSource(budget.value)
  })
  let allSourcesKnown: boolean | undefined

  return {
    funding: (id) => Effect.map(registry.funding(id), (f) => (isSource(f) ? adapt(f) : f)),
    budget: (id) => Effect.map(registry.budget(id), (b) => (isSource(b) ? adapt(b) : b)),
    hasFunding: registry.hasFunding,
    fundingIds: registry.fundingIds,
    isMover: (id) => movers.has(id),
    // The registry does not change after it is built: answered once, then from memory.
    allSources: Effect.suspend(() =>
      allSourcesKnown !== undefined ? Effect.succeed(allSourcesKnown) : Effect.map(
        allSourcesRead,
        (answer) => (allSourcesKnown = answer)
      )
    )
  }
}
