/**
 * The registry of funding sources and budgets the engine may use. Holds store
 * source ids, so that any process (for example the recovery pass) can settle or
 * refund a hold opened by another.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer } from "effect"
import { StoreError, UnknownSource } from "./BillingError.js"
import type { ExternalSource } from "./FundingSource.js"
import type { Source } from "./Source.js"
import { isSource } from "./Source.js"
import type { SqlStore } from "./SqlStore.js"

/**
 * A funding source the registry holds: a `Source` in the hold's store (role
 * `"funding"`), or an external two-phase `FundingSource`.
 *
 * @since 0.4.0
 * @category models
 */
export type Funding = ExternalSource | Source

/**
 * A budget the registry holds: a `Source` in the hold's store (role
 * `"budget"`), or an external two-phase `Budget`.
 *
 * @since 0.4.0
 * @category models
 */
export type BudgetEntry = ExternalSource | Source

/**
 * What the registry is built from.
 *
 * @since 0.1.0
 * @category models
 */
export interface RegistryOptions {
  /** Funding sources: external `FundingSource`s, or `Source`s (a `Source` of role `"budget"` here is a wiring mistake). */
  readonly funding?: Iterable<Funding>
  /** Budgets: external `Budget`s, or `Source`s of role `"budget"`. */
  readonly budgets?: Iterable<BudgetEntry>
  /**
   * `Source`s in the hold's store, each registered by its `role` (since 0.4.0):
   * the v2 way to wire sources, `{ sources: [wallet, token, myPlugin] }`.
   */
  readonly sources?: Iterable<Source>
}

/**
 * The registry service.
 *
 * @since 0.1.0
 * @category services
 */
export class FundingRegistry extends Context.Service<FundingRegistry, {
  readonly funding: (id: string) => Effect.Effect<Funding, UnknownSource>
  readonly budget: (id: string) => Effect.Effect<BudgetEntry, UnknownSource>
  readonly hasFunding: (id: string) => boolean
  readonly fundingIds: ReadonlyArray<string>
}>()("@relay-billing/core/FundingRegistry") {
  /**
   * Builds the registry value; throws on a duplicate id or a source listed
   * under the other role than the one it declares (`Source.role`, or an
   * `ExternalSource`'s optional `role`): wiring mistakes.
   */
  static make(options: RegistryOptions): FundingRegistry["Service"] {
    const funding = new Map<string, Funding>()
    const budgets = new Map<string, BudgetEntry>()
    const addFunding = (source: Funding) => {
      if (source.role !== undefined && source.role !== "funding") {
        throw new Error(`source ${JSON.stringify(source.id)} has role ${source.role}, registered as funding`)
      }
      if (funding.has(source.id)) throw new Error(`duplicate funding source id ${JSON.stringify(source.id)}`)
      funding.set(source.id, source)
    }
    const addBudget = (budget: BudgetEntry) => {
      if (budget.role !== undefined && budget.role !== "budget") {
        throw new Error(`source ${JSON.stringify(budget.id)} has role ${budget.role}, registered as a budget`)
      }
      if (budgets.has(budget.id)) throw new Error(`duplicate budget id ${JSON.stringify(budget.id)}`)
      budgets.set(budget.id, budget)
    }
    for (const source of options.funding ?? []) addFunding(source)
    for (const budget of options.budgets ?? []) addBudget(budget)
    for (const source of options.sources ?? []) (source.role === "budget" ? addBudget : addFunding)(source)
    return FundingRegistry.of({
      funding: (id) => {
        const source = funding.get(id)
        return source ? Effect.succeed(source) : Effect.fail(new UnknownSource({ sourceId: id, kind: "funding" }))
      },
      budget: (id) => {
        const budget = budgets.get(id)
        return budget ? Effect.succeed(budget) : Effect.fail(new UnknownSource({ sourceId: id, kind: "budget" }))
      },
      hasFunding: (id) => funding.has(id),
      fundingIds: [...funding.keys()]
    })
  }

  /** A layer from plain source values. */
  static layer(options: RegistryOptions): Layer.Layer<FundingRegistry> {
    return Layer.sync(FundingRegistry, () => FundingRegistry.make(options))
  }

  /** A layer from an effect that builds the sources (for sources that need services). */
  static layerEffect<E, R>(options: Effect.Effect<RegistryOptions, E, R>): Layer.Layer<FundingRegistry, E, R> {
    return Layer.effect(FundingRegistry, Effect.map(options, (o) => FundingRegistry.make(o)))
  }
}

/**
 * What can be read of a funding source without moving anything: whether the
 * account can use it, its spendable balance, and its room.
 *
 * @since 0.4.0
 * @category models
 */
export type FundingReader = Pick<ExternalSource, "id" | "availability" | "balance" | "room" | "minimumReservation">

/**
 * What can be read of a budget without moving anything.
 *
 * @since 0.4.0
 * @category models
 */
export type BudgetReader = Pick<ExternalSource, "id" | "remaining">

/**
 * A read-only view of a registry, with every `Source` bound to `sql` (the
 * store's executor; without one, reading a `Source` fails with a `StoreError`).
 * Used by the resolver and by post-consume's balance check.
 *
 * @since 0.4.0
 * @category models
 */
export interface Reader {
  readonly funding: (id: string) => Effect.Effect<FundingReader, UnknownSource>
  readonly budget: (id: string) => Effect.Effect<BudgetReader, UnknownSource>
  readonly hasFunding: (id: string) => boolean
  readonly fundingIds: ReadonlyArray<string>
}

const UNLIMITED = Number.MAX_SAFE_INTEGER

const withSql = <A>(
  sql: SqlStore["Service"] | undefined,
  sourceId: string,
  f: (sql: SqlStore["Service"]) => Effect.Effect<A, StoreError>
) =>
  sql === undefined
    ? Effect.fail(
      new StoreError({ operation: `${sourceId}.read`, detail: "reading a Source needs the store's SqlStore service" })
    )
    : f(sql)

/**
 * What can be read of one `Source` through `sql` (see {@link Reader}).
 *
 * @since 0.4.0
 * @category constructors
 */
export const readSource = (source: Source, sql: SqlStore["Service"] | undefined): FundingReader => {
  const { availability, balance } = source
  return {
    id: source.id,
    ...(source.minimumReservation ? { minimumReservation: source.minimumReservation } : {}),
    ...(availability
      ? { availability: (accountId: string) => withSql(sql, source.id, (s) => availability(s, accountId)) }
      : {}),
    ...(balance
      ? {
        balance: (subjectId: string) => withSql(sql, source.id, (s) => balance(s, subjectId)),
        room: (subjectId: string) => withSql(sql, source.id, (s) => balance(s, subjectId))
      }
      : {})
  }
}

/**
 * What can be read of one budget `Source` through `sql` (see {@link Reader}).
 *
 * @since 0.4.0
 * @category constructors
 */
export const readBudget = (source: Source, sql: SqlStore["Service"] | undefined): BudgetReader => {
  const { balance } = source
  return {
    id: source.id,
    ...(balance
      ? {
        remaining: (subjectId: string) =>
          withSql(
            sql,
            source.id,
            (s) => Effect.map(balance(s, subjectId), (left) => ({ unlimited: left >= UNLIMITED, remaining: left }))
          )
      }
      : {})
  }
}

/**
 * The read-only view of `registry` (see {@link Reader}).
 *
 * @since 0.4.0
 * @category constructors
 */
export const reader = (registry: FundingRegistry["Service"], sql: SqlStore["Service"] | undefined): Reader => {
  return {
    funding: (id) => Effect.map(registry.funding(id), (f) => (isSource(f) ? readSource(f, sql) : f)),
    budget: (id) => Effect.map(registry.budget(id), (b) => (isSource(b) ? readBudget(b, sql) : b)),
    hasFunding: registry.hasFunding,
    fundingIds: registry.fundingIds
  }
}
