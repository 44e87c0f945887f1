/**
 * The registry of funding sources and budgets the engine may use. Holds store
 * source ids, so that any process (for example the recovery pass) can settle or
 * refund a hold opened by another.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer } from "effect"
import { UnknownSource } from "./BillingError.js"
import type { Budget } from "./Budget.js"
import type { FundingSource } from "./FundingSource.js"

/**
 * What the registry is built from.
 *
 * @since 0.1.0
 * @category models
 */
export interface RegistryOptions {
  readonly funding: Iterable<FundingSource>
  readonly budgets?: Iterable<Budget>
}

/**
 * The registry service.
 *
 * @since 0.1.0
 * @category services
 */
export class FundingRegistry extends Context.Service<FundingRegistry, {
  readonly funding: (id: string) => Effect.Effect<FundingSource, UnknownSource>
  readonly budget: (id: string) => Effect.Effect<Budget, UnknownSource>
  readonly hasFunding: (id: string) => boolean
  readonly fundingIds: ReadonlyArray<string>
}>()("@relay-billing/core/FundingRegistry") {
  /**
   * Builds the registry value; throws on a duplicate id (a wiring mistake).
   */
  static make(options: RegistryOptions): FundingRegistry["Service"] {
    const funding = new Map<string, FundingSource>()
    for (const source of options.funding) {
      if (funding.has(source.id)) throw new Error(`duplicate funding source id ${JSON.stringify(source.id)}`)
      funding.set(source.id, source)
    }
    const budgets = new Map<string, Budget>()
    for (const budget of options.budgets ?? []) {
      if (budgets.has(budget.id)) throw new Error(`duplicate budget id ${JSON.stringify(budget.id)}`)
      budgets.set(budget.id, budget)
    }
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
