/**
 * The vitest entry of the testkit (`@relay-billing/testkit/vitest`): registers
 * the conformance suites of `FundingSourceSuite` as vitest tests, one `it` per
 * check. Kept apart from the main entry so that loading the testkit outside a
 * test runner (or from CommonJS) never loads vitest.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import { describe, it } from "vitest"
import type {
  BudgetHarness,
  BudgetSuiteOptions,
  Check,
  FundingHarness,
  FundingSuiteOptions,
  HarnessFactory
} from "./FundingSourceSuite.js"
import {
  budgetChecks,
  budgetCheckTitles,
  checks,
  checkTitles,
  run,
  skippedBudgetChecks,
  skippedChecks
} from "./FundingSourceSuite.js"
import type { SourceCheckId, SourceHarness, SourceSuiteOptions } from "./SourceSuite.js"
import { checks as sourceChecks, checkTitles as sourceCheckTitles, run as runSource } from "./SourceSuite.js"

/**
 * Registers the conformance suite of the v2 `Source` contract (one `describe`
 * with one `it` per check) in the calling vitest file: a plugin author's whole
 * test in one call. `make` is called once per check.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { InMemoryStore } from "@relay-billing/testkit"
 * import { sourceSuite } from "@relay-billing/testkit/vitest"
 *
 * sourceSuite({
 *   name: "in-memory wallet",
 *   make: () => Effect.sync(() => {
 *     const memory = InMemoryStore.make()
 *     return { source: memory.wallet, store: memory.layer(), memory }
 *   }),
 *   seed: ({ memory }, { accountId, amount }) => memory.createAccount(accountId, amount)
 * })
 * ```
 *
 * @since 0.4.0
 * @category suites
 */
export const sourceSuite = <H extends SourceHarness>(options: SourceSuiteOptions<H>): void => {
  describe(`Source conformance: ${options.name}`, () => {
    for (const id of Object.keys(sourceChecks) as Array<SourceCheckId>) {
      const name = `${id}: ${sourceCheckTitles[id]}`
      if (options.skip?.includes(id)) {
        it.skip(name, () => {})
        continue
      }
      it(name, async (context) => {
        const outcome = await Effect.runPromise(runSource(options, id))
        if (outcome.status === "not-applicable") context.skip(outcome.reason)
      }, options.timeout)
    }
  })
}

const register = <H, Id extends string, O extends { readonly timeout?: number }>(
  title: string,
  factory: HarnessFactory<H>,
  registry: { readonly [K in Id]: Check<H, O> },
  titles: { readonly [K in Id]: string },
  skip: ReadonlyArray<Id>,
  options: O
): void => {
  describe(title, () => {
    for (const id of Object.keys(registry) as Array<Id>) {
      const name = `${id}: ${titles[id]}`
      if (skip.includes(id)) {
        it.skip(name, () => {})
        continue
      }
      it(name, async (context) => {
        const outcome = await Effect.runPromise(run(factory, registry[id], options))
        if (outcome.status === "not-applicable") context.skip(outcome.reason)
      }, options.timeout)
    }
  })
}

/**
 * Registers the funding-source conformance suite (one `describe` with one `it`
 * per check) in the calling vitest file. `factory` is called once per test.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { InMemoryStore } from "@relay-billing/testkit"
 * import { fundingSourceSuite } from "@relay-billing/testkit/vitest"
 *
 * fundingSourceSuite("in-memory wallet (as an external source)", () =>
 *   Effect.sync(() => {
 *     const store = InMemoryStore.make()
 *     return {
 *       source: store.external.wallet,
 *       fund: (accountId, amount) => store.createAccount(accountId, amount),
 *       balance: (accountId) => Effect.sync(() => store.snapshot().wallets[accountId] ?? 0)
 *     }
 *   }))
 * ```
 *
 * @since 0.1.0
 * @category suites
 */
export const fundingSourceSuite = (
  name: string,
  factory: HarnessFactory<FundingHarness>,
  options: FundingSuiteOptions = {}
): void =>
  register(
    `FundingSource conformance: ${name}`,
    factory,
    checks,
    checkTitles,
    skippedChecks(options),
    options
  )

/**
 * Registers the budget conformance suite in the calling vitest file.
 * `factory` is called once per test.
 *
 * @since 0.1.0
 * @category suites
 */
export const budgetSuite = (
  name: string,
  factory: HarnessFactory<BudgetHarness>,
  options: BudgetSuiteOptions = {}
): void =>
  register(
    `Budget conformance: ${name}`,
    factory,
    budgetChecks,
    budgetCheckTitles,
    skippedBudgetChecks(options),
    options
  )
