/**
 * The reaper inside the server: a hold abandoned by a crash (opened, never
 * settled) is refunded after its expiry by the server's own reaper fiber,
 * without anyone calling `relay reap`.
 *
 * Time is a `TestClock` provided under the whole server: the reaper's interval
 * and the holds' expiry both read it, so the test moves time instead of
 * sleeping. A reaper pass does real database I/O after the clock wakes it, so
 * the test waits for each pass's own report (its debug log line), never for a
 * duration.
 */
import { BillingSession } from "@relay-billing/core"
import { TestDatabase } from "@relay-billing/knex"
import { WalletAdmin } from "@relay-billing/wallet"
import { Effect, Exit, Layer, Logger, References, Scope } from "effect"
import { TestClock } from "effect/testing"
import { afterAll, describe, expect, it } from "vitest"
import { decodeConfig } from "../src/Config.js"
import type { Loaded } from "../src/Config.js"
import * as Metrics from "../src/Metrics.js"
import * as Server from "../src/Server.js"
import * as Prometheus from "./support/Prometheus.js"

const scope = Effect.runSync(Scope.make())
afterAll(() => Effect.runPromise(Scope.close(scope, Exit.void)))

/**
 * Collects the reaper's per-pass reports (its debug log line) and lets the test
 * wait for the n-th pass to have finished.
 */
const reaperPasses = () => {
  const passes: Array<string> = []
  const waiting: Array<{ readonly count: number; readonly resolve: () => void }> = []
  const logger = Logger.make<unknown, void>(({ message }) => {
    const text = (Array.isArray(message) ? message : [message]).map(String).join(" ")
    if (!text.startsWith("relay: reaper pass")) return
    passes.push(text)
    for (const w of waiting.filter((w) => passes.length >= w.count)) {
      waiting.splice(waiting.indexOf(w), 1)
      w.resolve()
    }
  })
  return {
    passes,
    layer: Layer.mergeAll(Logger.layer([logger]), Layer.succeed(References.MinimumLogLevel)("Debug")),
    /** Resolves once `count` passes have finished in total. */
    finished: (count: number) =>
      new Promise<void>((resolve) => (passes.length >= count ? resolve() : waiting.push({ count, resolve })))
  }
}

describe("the reaper inside serve", () => {
  it("refunds an expired hold on its own and marks it expired, exactly once", async () => {
    const config = await Effect.runPromise(decodeConfig({
      quotaPerUnit: 500000,
      groups: { default: 1 },
      models: { demo: { modelRatio: 1, completionRatio: 1 } },
      channels: [{ name: "demo", baseUrl: "demo://local/v1", apiKey: "", models: ["demo"], priority: 0 }],
      billing: { holdTtlSeconds: 55, reapIntervalSeconds: 10 }
    }))
    const db = await Effect.runPromise(Scope.provide(TestDatabase.isolated({ name: "sqlite" }), scope))
    const loaded: Loaded = {
      port: 0,
      databaseUrl: db.url,
      adminKey: "sk-admin-reaper-test",
      configSource: "test",
      config
    }
    const reaper = reaperPasses()
    const context = await Effect.runPromise(
      Layer.buildWithScope(
        Server.layer(loaded, { port: 0, host: "127.0.0.1", client: db.options }).pipe(
          Layer.provideMerge(Layer.mergeAll(TestClock.layer(), reaper.layer))
        ),
        scope
      )
    )
    type Services = WalletAdmin.WalletAdmin | BillingSession.BillingSession
    const services = <A, E>(effect: Effect.Effect<A, E, Services>): Promise<A> =>
      Effect.runPromise(Effect.provideContext(effect, context))
    const wallet = WalletAdmin.WalletAdmin
    const billing = BillingSession.BillingSession
    const balance = () => services(Effect.flatMap(wallet, (w) => w.account("crash")))
    const status = (id: string) => services(Effect.flatMap(billing, (b) => b.get(id))).then((h) => h.status)
    const abandon = (holdId: string, estimate: number) =>
      services(
        Effect.flatMap(billing, (b) => b.open({ holdId, accountId: "crash", estimate, preference: "wallet_only" }))
      )
    const advance = (seconds: number) => services(TestClock.adjust(`${seconds} seconds`))

    await services(Effect.flatMap(wallet, (w) => w.createAccount({ id: "crash", balance: 10_000 })))
    await abandon("abandoned", 4_000) // opened at 0 s on the test clock, expires at 55 s
    expect((await balance()).balance).toBe(6_000)

    // One pass every 10 s of the test clock; each step waits for that pass's report.
    const pass = async (n: number) => {
      await advance(10)
      await reaper.finished(n)
      return reaper.passes[n - 1]
    }
    // The passes at 10 … 50 s find nothing expired: the hold stays pending.
    for (let n = 1; n <= 5; n++) {
      expect(await pass(n)).toBe("relay: reaper pass: examined 0, expired 0")
      expect(await status("abandoned")).toBe("pending")
    }
    expect((await balance()).balance).toBe(6_000)

    // Nobody settled: the pass at 60 s refunds it and marks it expired.
    expect(await pass(6)).toBe("relay: reaper pass: examined 1, expired 1")
    expect(await status("abandoned")).toBe("expired")
    expect((await balance()).balance).toBe(10_000)

    // Later passes change nothing.
    expect(await pass(7)).toBe("relay: reaper pass: examined 0, expired 0")
    expect(await pass(8)).toBe("relay: reaper pass: examined 0, expired 0")
    expect(await status("abandoned")).toBe("expired")
    expect((await balance()).balance).toBe(10_000)

    // The background passes go through the metered session (issue 9 #12): 8 runs, 1 expired.
    const scraped = Prometheus.parse(
      await Effect.runPromise(Effect.provideContext(Effect.flatMap(Metrics.Metrics, (m) => m.scrape), context))
    )
    expect(scraped.value("relay_reaper_runs_total")).toBe(8)
    expect(scraped.value("relay_reaper_failures_total")).toBe(0)
    expect(scraped.value("relay_holds_opened_total")).toBe(1)
    expect(scraped.value("relay_holds_expired_total")).toBe(1)
    expect(scraped.value("relay_holds_pending")).toBe(0)
    expect(scraped.value("relay_billing_phase_seconds_count", { phase: "reap", outcome: "ok" })).toBe(8)
  })
})
