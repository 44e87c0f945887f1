/**
 * The testkit's funding-source conformance suite against the knex
 * SubscriptionSource, on every database target. fund(account, amount) creates
 * a plan and subscribes the account with total = amount; balance = the sum of
 * (total − used) over its active subscriptions. One migrated database per
 * target (a module-level ManagedRuntime), fresh ids per check, and the audit
 * (wallet, token, subscriptions) after every check.
 */
import { Context, Effect, Layer, ManagedRuntime } from "effect"
import type { Scope } from "effect"
import { Audit, KnexClient } from "@relay-billing/knex"
import type { FundingSourceSuite } from "@relay-billing/testkit"
import { fundingSourceSuite } from "@relay-billing/testkit/vitest"
import { afterAll, describe } from "vitest"
import { Subscription, SubscriptionAdmin, SubscriptionSource } from "../src/index.js"
import { migratedClient, targets } from "./support.js"

const TIMEOUT = 30_000

const auditOrDie = (client: KnexClient.Client) =>
  Audit.run(Subscription.auditBalances).pipe(
    Effect.provideService(KnexClient.KnexClient, client),
    Effect.flatMap((report) =>
      report.ok ? Effect.void : Effect.die(new Error(`audit after the check: ${report.problems.join("; ")}`))
    ),
    Effect.orDie
  )

for (const target of targets) {
  describe(`subscription conformance on ${target.name}`, () => {
    const runtime = ManagedRuntime.make(SubscriptionAdmin.SubscriptionAdmin.layer.pipe(Layer.provideMerge(migratedClient(target))))
    afterAll(() => runtime.dispose(), 60_000)

    const audited: Effect.Effect<
      { readonly client: KnexClient.Client; readonly admin: SubscriptionAdmin.SubscriptionAdmin["Service"] },
      unknown,
      Scope.Scope
    > = Effect.map(runtime.contextEffect, (ctx) => ({
      client: Context.get(ctx, KnexClient.KnexClient),
      admin: Context.get(ctx, SubscriptionAdmin.SubscriptionAdmin)
    })).pipe(Effect.tap(({ client }) => Effect.addFinalizer(() => auditOrDie(client))))

    let funded = 0
    const harness = (s: { readonly client: KnexClient.Client; readonly admin: SubscriptionAdmin.SubscriptionAdmin["Service"] }) =>
      ({
        source: SubscriptionSource.make(s.client),
        fund: (accountId, amount) =>
          Effect.gen(function*() {
            const n = ++funded
            yield* s.admin.createPlan({
              id: `conf-plan-${n}`,
              name: `conformance ${n}`,
              totalAmount: amount,
              resetPeriod: "never",
              durationSeconds: 365 * 86_400
            })
            yield* s.admin.subscribe({ id: `conf-sub-${n}`, accountId, planId: `conf-plan-${n}` })
          }),
        balance: (accountId) =>
          Effect.map(s.admin.subscriptions(accountId), (subs) =>
            subs.filter((x) => x.status === "active").reduce((a, x) => a + (x.total - x.used), 0))
      }) satisfies FundingSourceSuite.FundingHarness

    fundingSourceSuite(`knex subscription (${target.name})`, () => Effect.map(audited, harness), { timeout: TIMEOUT })
  })
}
