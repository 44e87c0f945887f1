/**
 * Shared helpers for the spec, bug and withBilling tests (not a test file itself).
 */
import { assert } from "@effect/vitest"
import {
  AccountCounters,
  BillingEvents,
  BillingSession,
  FundingRegistry,
  HoldJournal,
  Ledger,
  SqlStore
} from "@relay-billing/core"
import { Effect, Layer } from "effect"
import type { InMemoryStore } from "../src/index.js"

export type Store = InMemoryStore.InMemoryStore

/**
 * Runs `effect` and asserts it fails with the typed error whose `_tag` is `tag`;
 * returns that error, narrowed. A success or a different error fails the test.
 */
export const expectFailure = <A, E extends { readonly _tag: string }, R, T extends E["_tag"]>(
  effect: Effect.Effect<A, E, R>,
  tag: T
): Effect.Effect<Extract<E, { readonly _tag: T }>, never, R> =>
  Effect.gen(function*() {
    const result = yield* Effect.result(effect)
    if (result._tag === "Success") {
      return assert.fail(`expected a ${tag} failure, but it succeeded with ${JSON.stringify(result.success)}`)
    }
    const error = result.failure
    assert.strictEqual(error._tag, tag, `expected ${tag}, got ${error._tag}: ${JSON.stringify(error)}`)
    return error as Extract<E, { readonly _tag: T }>
  })

/** The audit of `store` must find nothing. */
export const assertAuditClean = (store: Store) => assert.deepStrictEqual(store.audit().problems, [])

/** Balances written to the ledger for `accountId`'s wallet, in order (every intermediate balance). */
export const walletBalancesSeen = (store: Store, accountId: string): Array<number> =>
  store.entries().filter((e) => e.sourceId === "wallet" && e.subjectId === accountId).map((e) => e.balanceAfter)

/** Ledger rows of one hold, as `[sourceId, kind, amount]`. */
export const ledgerOf = (store: Store, holdId: string) =>
  store.entries().filter((e) => e.holdId === holdId).map((e) => [e.sourceId, e.kind, e.amount] as const)

/**
 * A billing layer whose journal, ledger, counters and executor live in `main`
 * while the funding sources and budgets may come from other stores (EXTERNAL
 * sources, e.g. `ext.external.wallet`: they do not share the hold's
 * transaction, so the engine records intents and compensates by refunding);
 * `main`'s own `Source`s (`main.wallet`) move inside the hold's transaction.
 */
export const composedLayer = (
  main: Store,
  registry: {
    readonly funding: ReadonlyArray<FundingRegistry.Funding>
    readonly budgets: ReadonlyArray<FundingRegistry.BudgetEntry>
  },
  options?: BillingSession.Options
) =>
  BillingSession.BillingSession.layer(options).pipe(
    Layer.provideMerge(Layer.mergeAll(
      Layer.succeed(HoldJournal.HoldJournal, main.journal),
      Layer.succeed(AccountCounters.AccountCounters, main.counters),
      Layer.succeed(Ledger.Ledger, main.ledger),
      Layer.succeed(SqlStore.SqlStore, main.sql),
      FundingRegistry.FundingRegistry.layer({ funding: registry.funding, budgets: registry.budgets })
    ))
  )

/** A publisher that records every event, and the layer providing it. */
export const capturingEvents = () => {
  const events: Array<BillingEvents.BillingEvent> = []
  const layer = Layer.succeed(BillingEvents.BillingEvents, {
    publish: (event: BillingEvents.BillingEvent) => Effect.sync(() => void events.push(event))
  })
  return { events, layer }
}

/** How many events of `tag` were published for `holdId`. */
export const countEvents = (
  events: ReadonlyArray<BillingEvents.BillingEvent>,
  tag: BillingEvents.BillingEvent["_tag"],
  holdId: string
) => events.filter((e) => e._tag === tag && "hold" in e && e.hold.id === holdId).length
