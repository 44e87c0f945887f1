/**
 * The testkit's conformance suites against the knex wallet source and the knex
 * token budget, on every database target. One migrated database per target is
 * built lazily (a module-level ManagedRuntime) and shared by every check of the
 * file; the suites use fresh account, token and hold ids per check. After every
 * check the harness's scope runs `Audit.run(Wallet.auditBalances)` and fails
 * the check on any problem.
 */
import { Context, Effect, Exit, Layer, ManagedRuntime } from "effect"
import type { Scope } from "effect"
import { Audit, KnexClient } from "@relay-billing/knex"
import { FundingSourceSuite } from "@relay-billing/testkit"
import { budgetSuite, fundingSourceSuite } from "@relay-billing/testkit/vitest"
import { afterAll, describe, expect, it } from "vitest"
import { TokenBudget, Wallet, WalletAdmin, WalletSource } from "../src/index.js"
import { migratedClient, targets } from "./support.js"

const TIMEOUT = 30_000

/** Runs the audit over the whole shared database; any problem kills the check. */
const auditOrDie = (client: KnexClient.Client) =>
  Audit.run(Wallet.auditBalances).pipe(
    Effect.provideService(KnexClient.KnexClient, client),
    Effect.flatMap((report) =>
      report.ok ? Effect.void : Effect.die(new Error(`audit after the check: ${report.problems.join("; ")}`))
    ),
    Effect.orDie
  )

for (const target of targets) {
  describe(`conformance on ${target.name}`, () => {
    // One isolated, migrated database for the whole file on this target, built on first use.
    const runtime = ManagedRuntime.make(WalletAdmin.WalletAdmin.layer.pipe(Layer.provideMerge(migratedClient(target))))
    afterAll(() => runtime.dispose(), 60_000)

    const services = Effect.map(runtime.contextEffect, (ctx) => ({
      client: Context.get(ctx, KnexClient.KnexClient),
      admin: Context.get(ctx, WalletAdmin.WalletAdmin)
    }))

    /** The shared client and admin, with the audit registered as the check's last step. */
    const audited: Effect.Effect<
      { readonly client: KnexClient.Client; readonly admin: WalletAdmin.WalletAdmin["Service"] },
      unknown,
      Scope.Scope
    > = Effect.tap(services, ({ client }) => Effect.addFinalizer(() => auditOrDie(client)))

    let topUps = 0
    const walletHarness = (s: { readonly client: KnexClient.Client; readonly admin: WalletAdmin.WalletAdmin["Service"] }) =>
      ({
        source: WalletSource.make(s.client),
        fund: (accountId, amount) =>
          Effect.gen(function*() {
            yield* s.admin.createAccount({ id: accountId }).pipe(Effect.catchTag("AccountExists", () => Effect.void))
            const result = yield* s.admin.topUp({ accountId, amount, key: `fund-${accountId}-${++topUps}` })
            if (!result.applied) return yield* Effect.die(new Error(`top-up of ${accountId} was not applied`))
          }),
        balance: (accountId) =>
          s.admin.account(accountId).pipe(
            Effect.map((a) => a.balance),
            Effect.catchTag("AccountNotFound", () => Effect.succeed(0))
          )
      }) satisfies FundingSourceSuite.FundingHarness

    const ownerOf = (tokenId: string) => `owner-of-${tokenId}`
    const tokenHarness = (s: { readonly client: KnexClient.Client; readonly admin: WalletAdmin.WalletAdmin["Service"] }) =>
      ({
        budget: TokenBudget.make(s.client),
        create: (tokenId, options) =>
          Effect.gen(function*() {
            yield* s.admin.createAccount({ id: ownerOf(tokenId) })
            yield* s.admin.createToken({
              id: tokenId,
              accountId: ownerOf(tokenId),
              ...(options.remain !== undefined ? { remain: options.remain } : {}),
              ...(options.unlimited !== undefined ? { unlimited: options.unlimited } : {})
            })
          }),
        remaining: (tokenId) =>
          s.admin.token(tokenId).pipe(
            Effect.map((t) => t.remain),
            Effect.catchTag("TokenNotFound", () => Effect.succeed(0))
          ),
        used: (tokenId) =>
          s.admin.token(tokenId).pipe(
            Effect.map((t) => t.used),
            Effect.catchTag("TokenNotFound", () => Effect.succeed(0))
          ),
        accountOf: ownerOf
      }) satisfies FundingSourceSuite.BudgetHarness

    fundingSourceSuite(`knex wallet (${target.name})`, () => Effect.map(audited, walletHarness), { timeout: TIMEOUT })

    budgetSuite(`knex token budget (${target.name})`, () => Effect.map(audited, tokenHarness), { timeout: TIMEOUT })

    describe("the per-check audit has teeth", () => {
      it("a check that leaves a balance the ledger does not explain fails through the audit", async () => {
        const accountId = `tampered-${target.name}-${Date.now()}`
        const accounts = (client: KnexClient.Client) => client.table("accounts")
        const tamper: FundingSourceSuite.Check<FundingSourceSuite.FundingHarness, unknown> = () =>
          Effect.gen(function*() {
            const { client } = yield* services
            yield* client.query("test.tamper", (db) =>
              db(accounts(client)).where({ id: accountId }).update({ balance: db.raw("balance + 1") }))
            return { status: "passed" } as const
          })
        await runtime.runPromise(Effect.flatMap(services, ({ admin }) => admin.createAccount({ id: accountId, balance: 500 })))
        const exit = await Effect.runPromise(
          Effect.exit(FundingSourceSuite.run(() => Effect.map(audited, walletHarness), tamper))
        )
        expect(Exit.isFailure(exit)).toBe(true)
        expect(String(Exit.isFailure(exit) ? exit.cause : "")).toContain(`wallet ${accountId}: accounts.balance 501 but the ledger sums to 500`)
        // Undo the tampering so that the remaining checks of the file see a consistent database.
        await runtime.runPromise(Effect.gen(function*() {
          const { client } = yield* services
          yield* client.query("test.untamper", (db) =>
            db(accounts(client)).where({ id: accountId }).update({ balance: db.raw("balance - 1") }))
          const report = yield* Audit.run(Wallet.auditBalances).pipe(Effect.provideService(KnexClient.KnexClient, client))
          expect(report.problems).toStrictEqual([])
        }))
      }, TIMEOUT)
    })
  })
}
