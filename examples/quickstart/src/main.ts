/**
 * Quickstart: three billed LLM requests against the in-memory store, printing
 * real balances before and after each step.
 *
 * 1. A chat completion that succeeds: P is reserved, the upstream reports its
 *    usage, the hold settles with the actual cost.
 * 2. A request whose upstream fails: the reservation is refunded in full.
 * 3. A request paid by a subscription (subscription_first), settled for less
 *    than the estimate.
 */
import { BillingSession, BillingSettler, Quota } from "@relay-billing/core"
import { InMemoryStore } from "@relay-billing/testkit"
import { Console, Data, Effect } from "effect"

class UpstreamError extends Data.TaggedError("UpstreamError")<{ readonly status: number }> {}

/** Price: quota per 1K tokens (input, output). 500,000 quota = $1. */
const price = { input: 1_250, output: 5_000 }
const cost = (usage: { prompt: number; completion: number }) =>
  Math.ceil((usage.prompt * price.input + usage.completion * price.output) / 1_000)

/** A stand-in upstream: answers with usage figures, or fails with an HTTP status. */
const upstream = (prompt: string, fail?: number) =>
  fail
    ? Effect.fail(new UpstreamError({ status: fail }))
    : Effect.succeed({
      text: `echo: ${prompt}`,
      usage: { prompt: prompt.split(/\s+/).length * 4, completion: 180 }
    })

const store = InMemoryStore.make()

const show = (label: string) =>
  Effect.sync(() => {
    const s = store.snapshot()
    const wallet = s.wallets["acme"] ?? 0
    const token = s.tokens["key-1"]
    const sub = s.subscriptions["pro-monthly"]
    const counters = s.counters["acme"]
    console.log(
      `${label.padEnd(34)} wallet ${String(wallet).padStart(9)} (${Quota.formatUsd(wallet)})` +
        `  token remain ${String(token?.remain).padStart(9)} used ${String(token?.used).padStart(6)}` +
        `  subscription ${sub ? `${String(sub.used).padStart(6)}/${sub.total}` : "     none".padEnd(13)}` +
        `  usedQuota ${counters?.usedQuota} requests ${counters?.requestCount}`
    )
  })

const request = (id: string, prompt: string, preference: string, fail?: number) =>
  Effect.gen(function*() {
    const engine = yield* BillingSession.BillingSession
    const estimate = cost({ prompt: prompt.split(/\s+/).length * 4, completion: 512 })
    return yield* BillingSettler.withBilling(
      engine.open({ holdId: id, accountId: "acme", tokenId: "key-1", estimate, preference }),
      (session) =>
        Effect.gen(function*() {
          yield* show(`  ${id} reserved ${session.preConsumed}`)
          const answer = yield* upstream(prompt, fail)
          return { value: answer.text, cost: cost(answer.usage) }
        })
    ).pipe(
      Effect.tap((text) => Console.log(`  ${id} answered "${text}"`)),
      Effect.catchTag("UpstreamError", (e) => Console.log(`  ${id} upstream failed with HTTP ${e.status}`))
    )
  })

const program = Effect.gen(function*() {
  yield* store.createAccount("acme", 1_000_000)
  yield* store.createToken("key-1", "acme", { remain: 400_000 })
  yield* show("start")

  console.log("\n1. wallet_only, upstream succeeds")
  yield* request("req-1", "Summarise the plot of Hamlet in two sentences", "wallet_only")
  yield* show("after settle")

  console.log("\n2. wallet_only, upstream returns 502")
  yield* request("req-2", "Translate this paragraph into French", "wallet_only", 502)
  yield* show("after refund")

  console.log("\n3. subscription_first with an active subscription")
  yield* store.createSubscription({
    id: "pro-monthly",
    accountId: "acme",
    total: 250_000,
    endAt: Date.now() + 30 * 86_400_000
  })
  yield* request("req-3", "Write a haiku about quotas", "subscription_first")
  yield* show("after settle")

  const audit = store.audit()
  console.log(
    `\nledger rows: ${store.entries().length}; audit: ${
      audit.problems.length === 0 ? "clean" : audit.problems.join("; ")
    }`
  )
  for (const e of store.entries()) {
    console.log(
      `  ${e.kind.padEnd(8)} ${e.sourceId.padEnd(13)} ${e.subjectId.padEnd(12)} ${
        String(e.amount).padStart(9)
      } → ${e.balanceAfter}${e.holdId ? `  (${e.holdId})` : ""}`
    )
  }
})

Effect.runPromise(program.pipe(Effect.provide(store.billingLayer()))).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
