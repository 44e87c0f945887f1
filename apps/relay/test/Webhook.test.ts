import { BillingEvents, BillingSession } from "@relay-billing/core"
import { WalletAdmin } from "@relay-billing/wallet"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { TestClock } from "effect/testing"
import { createHmac } from "node:crypto"
import { mkdtemp, rm } from "node:fs/promises"
import { createServer } from "node:http"
import type { IncomingMessage, ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import path from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import * as Config from "../src/Config.js"
import * as RelayBilling from "../src/RelayBilling.js"
import * as Webhook from "../src/Webhook.js"

interface Received {
  readonly headers: IncomingMessage["headers"]
  readonly body: string
}

/** A real local HTTP receiver; `respond` decides each answer (or holds it). */
const receiver = async (
  respond: (req: Received, res: ServerResponse, index: number) => void = (_req, res) => void res.writeHead(200).end()
) => {
  const received: Array<Received> = []
  const open = new Set<ServerResponse>()
  const server = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const r = { headers: req.headers, body: Buffer.concat(chunks).toString("utf8") }
      received.push(r)
      open.add(res)
      res.on("close", () => open.delete(res))
      respond(r, res, received.length - 1)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}/hook`,
    received,
    close: async () => {
      for (const res of open) res.destroy()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

/**
 * Waits until `predicate` holds, checking it every few milliseconds (a poll interval,
 * not a wait for time to pass: the receiver's and the notifier's I/O callbacks run in
 * between). No deadline of its own:
 * a condition that never comes fails the test by the test's timeout, however slow the
 * machine, and no assertion depends on how long it took.
 */
const waitFor = async (predicate: () => boolean) => {
  while (!predicate()) await new Promise((r) => setTimeout(r, 5))
}

const lowBalance = (accountId: string, balance = 120) =>
  BillingEvents.BillingEvent.LowBalance({
    accountId,
    sourceId: "wallet",
    subjectId: accountId,
    balance,
    threshold: 1000
  })

/** Starts a notifier in its own scope. */
const start = async (options: Webhook.Options) => {
  const scope = Effect.runSync(Scope.make())
  const notifier = await Effect.runPromise(Webhook.make(options).pipe(Scope.provide(scope)))
  return {
    notifier,
    publish: (event: BillingEvents.BillingEvent) => Effect.runPromise(notifier.publish(event)),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

const SECRET = "whsec-test-123"

describe("Webhook", () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it("POSTs a signed low_balance payload that verifies with HMAC-SHA256", async () => {
    const rx = await receiver()
    cleanups.push(rx.close)
    const n = await start({ url: rx.url, secret: SECRET })
    cleanups.push(n.close)
    // the payload's time is Effect's Clock at publish
    const at = Date.parse("2030-04-05T06:07:08.009Z")
    await Effect.runPromise(
      TestClock.setTime(at).pipe(
        Effect.andThen(n.notifier.publish(lowBalance("acc_1", 120))),
        Effect.provide(TestClock.layer())
      )
    )
    await waitFor(() => rx.received.length === 1)
    const [r] = rx.received
    const expected = createHmac("sha256", SECRET).update(r!.body).digest("hex")
    expect(r!.headers["x-relay-signature"]).toBe(`sha256=${expected}`)
    expect(r!.headers["content-type"]).toBe("application/json")
    expect(r!.headers["x-relay-event-id"]).toMatch(/^[0-9a-f-]{36}$/)
    const body = JSON.parse(r!.body)
    expect(body).toEqual({
      type: "low_balance",
      accountId: "acc_1",
      source: "wallet",
      subject: "acc_1",
      balance: 120,
      threshold: 1000,
      at: "2030-04-05T06:07:08.009Z"
    })
    expect(Webhook.verify(SECRET, r!.body, r!.headers["x-relay-signature"] as string)).toBe(true)
    expect(Webhook.verify("other-secret", r!.body, r!.headers["x-relay-signature"] as string)).toBe(false)
    await waitFor(() => Effect.runSync(n.notifier.delivered) === 1)
  })

  it("ignores events other than LowBalance", async () => {
    const rx = await receiver()
    cleanups.push(rx.close)
    const n = await start({ url: rx.url, secret: SECRET })
    await n.publish(BillingEvents.BillingEvent.Refunded({ hold: {} as never, refunded: 1 }))
    await n.publish(lowBalance("acc_2"))
    await n.close()
    expect(rx.received.map((r) => JSON.parse(r.body).accountId)).toEqual(["acc_2"])
  })

  it("retries after 500s with back-off, then succeeds, with the same event id", async () => {
    const rx = await receiver((_r, res, i) => void res.writeHead(i < 2 ? 500 : 204).end())
    cleanups.push(rx.close)
    const n = await start({ url: rx.url, secret: SECRET, backoffMs: 20, maxAttempts: 5 })
    cleanups.push(n.close)
    await n.publish(lowBalance("acc_3"))
    await waitFor(() => Effect.runSync(n.notifier.delivered) === 1)
    expect(rx.received).toHaveLength(3)
    const ids = new Set(rx.received.map((r) => r.headers["x-relay-event-id"]))
    expect(ids.size).toBe(1)
    expect(new Set(rx.received.map((r) => r.body)).size).toBe(1)
    expect(Effect.runSync(n.notifier.failed)).toBe(0)
  })

  it("gives up after maxAttempts (connection errors and 5xx alike) and goes on with the next event", async () => {
    const rx = await receiver((r, res) => void res.writeHead(JSON.parse(r.body).accountId === "bad" ? 503 : 200).end())
    cleanups.push(rx.close)
    const n = await start({ url: rx.url, secret: SECRET, backoffMs: 5, maxAttempts: 3 })
    cleanups.push(n.close)
    await n.publish(lowBalance("bad"))
    await n.publish(lowBalance("good"))
    await waitFor(() => Effect.runSync(n.notifier.delivered) === 1)
    expect(Effect.runSync(n.notifier.failed)).toBe(1)
    expect(rx.received.map((r) => JSON.parse(r.body).accountId)).toEqual(["bad", "bad", "bad", "good"])

    // nothing listening at all: connection refused, retried, then given up
    const dead = await receiver()
    const deadUrl = dead.url
    await dead.close()
    const m = await start({ url: deadUrl, secret: SECRET, backoffMs: 5, maxAttempts: 2 })
    cleanups.push(m.close)
    await m.publish(lowBalance("nobody"))
    await waitFor(() => Effect.runSync(m.notifier.failed) === 1)
  })

  it("a hanging receiver never blocks publish; attempts time out and shutdown is bounded", async () => {
    const rx = await receiver(() => {
      // never answers
    })
    cleanups.push(rx.close)
    const n = await start({
      url: rx.url,
      secret: SECRET,
      timeoutMs: 100,
      maxAttempts: 2,
      backoffMs: 10,
      drainTimeoutMs: 300
    })
    // every publish returns although the receiver has not answered anything
    for (let i = 0; i < 200; i++) await n.publish(lowBalance(`acc_${i}`))
    expect(Effect.runSync(n.notifier.delivered)).toBe(0)
    await waitFor(() => rx.received.length >= 2) // first event: attempt 1 timed out, attempt 2 sent
    expect(rx.received[0]!.headers["x-relay-event-id"]).toBe(rx.received[1]!.headers["x-relay-event-id"])
    // shutdown ends (after drainTimeoutMs) although the receiver never answers
    await n.close()
    expect(Effect.runSync(n.notifier.delivered)).toBe(0)
    // publishing after close drops with a warning, still never fails
    await n.publish(lowBalance("late"))
    expect(Effect.runSync(n.notifier.dropped)).toBeGreaterThanOrEqual(1)
  })

  it("keeps a bounded queue, dropping the oldest events when full", async () => {
    const held: Array<ServerResponse> = []
    let release = false
    const rx = await receiver((_r, res) => {
      if (release) res.writeHead(200).end()
      else held.push(res)
    })
    cleanups.push(rx.close)
    const n = await start({ url: rx.url, secret: SECRET, capacity: 2, timeoutMs: 5000 })
    cleanups.push(n.close)
    await n.publish(lowBalance("a1"))
    await waitFor(() => rx.received.length === 1) // a1 in flight, held by the receiver
    for (const id of ["a2", "a3", "a4", "a5", "a6"]) await n.publish(lowBalance(id))
    expect(Effect.runSync(n.notifier.pending)).toBe(2)
    expect(Effect.runSync(n.notifier.dropped)).toBe(3)
    release = true
    for (const res of held) res.writeHead(200).end()
    await waitFor(() => Effect.runSync(n.notifier.delivered) === 3)
    expect(rx.received.map((r) => JSON.parse(r.body).accountId)).toEqual(["a1", "a5", "a6"])
  })

  it("drains the queue when the scope closes", async () => {
    const rx = await receiver((_r, res) => void setTimeout(() => res.writeHead(200).end(), 20))
    cleanups.push(rx.close)
    const n = await start({ url: rx.url, secret: SECRET, drainTimeoutMs: 5000 })
    for (let i = 0; i < 5; i++) await n.publish(lowBalance(`d${i}`))
    await n.close()
    expect(rx.received.map((r) => JSON.parse(r.body).accountId)).toEqual(["d0", "d1", "d2", "d3", "d4"])
    expect(Effect.runSync(n.notifier.delivered)).toBe(5)
  })
})

describe("Webhook config and wiring", () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "relay-webhook-"))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("validates notifications.webhook, naming the field", async () => {
    const bad = await Effect.runPromise(
      Effect.flip(Config.decodeConfig({ notifications: { webhook: { url: "ftp://x", secret: "s" } } }))
    )
    expect(bad.field).toBe("notifications.webhook.url")
    const noSecret = await Effect.runPromise(
      Effect.flip(Config.decodeConfig({ notifications: { webhook: { url: "http://x/h" } } }))
    )
    expect(noSecret.field).toBe("notifications.webhook.secret")
    const attempts = await Effect.runPromise(
      Effect.flip(
        Config.decodeConfig({ notifications: { webhook: { url: "http://x/h", secret: "s", maxAttempts: 0 } } })
      )
    )
    expect(attempts.field).toBe("notifications.webhook.maxAttempts")
    const unknown = await Effect.runPromise(
      Effect.flip(Config.decodeConfig({ notifications: { webhook: { url: "http://x/h", secret: "s", retries: 1 } } }))
    )
    expect(unknown.field).toBe("notifications.webhook.retries")
    const ok = await Effect.runPromise(
      Config.decodeConfig({ notifications: { webhook: { url: "https://x/h", secret: "s" } } })
    )
    expect(ok.notifications?.webhook).toEqual({ url: "https://x/h", secret: "s", timeoutMs: 5000, maxAttempts: 5 })
    const none = await Effect.runPromise(Config.decodeConfig({}))
    expect("notifications" in none).toBe(false)
  })

  it("RelayBilling.layerFromConfig builds the BillingSession with the configured webhook", async () => {
    const rx = await receiver()
    try {
      const loaded: Config.Loaded = {
        port: 0,
        databaseUrl: `sqlite:${path.join(dir, "relay.db")}`,
        adminKey: "sk-admin-test",
        configSource: "test",
        config: await Effect.runPromise(
          Config.decodeConfig({ notifications: { webhook: { url: rx.url, secret: SECRET } } })
        )
      }
      const scope = Effect.runSync(Scope.make())
      const context = await Effect.runPromise(Layer.buildWithScope(RelayBilling.layerFromConfig(loaded), scope))
      try {
        const wallet = Context.get(context, WalletAdmin.WalletAdmin)
        const session = Context.get(context, BillingSession.BillingSession)
        await Effect.runPromise(wallet.createAccount({ id: "acc_low", balance: 1500 }))
        await Effect.runPromise(
          session.charge({ holdId: "req_1", accountId: "acc_low", estimate: 0, preference: "wallet_first" }, 600)
        )
        await waitFor(() => rx.received.length === 1)
        const body = JSON.parse(rx.received[0]!.body)
        expect(body).toMatchObject({
          type: "low_balance",
          accountId: "acc_low",
          source: "wallet",
          balance: 900,
          threshold: 1000
        })
        expect(rx.received[0]!.headers["x-relay-signature"]).toBe(
          `sha256=${createHmac("sha256", SECRET).update(rx.received[0]!.body).digest("hex")}`
        )
      } finally {
        await Effect.runPromise(Scope.close(scope, Exit.void))
      }
    } finally {
      await rx.close()
    }
  })
})
