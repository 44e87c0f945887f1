/**
 * `GET /metrics` (issue 9 #12): the relay (Server.layer) in-process, a
 * MockUpstream channel, the official `openai` client; real requests, then a
 * scrape with the admin key, parsed as the Prometheus text format, and every
 * counter checked to have moved by exactly what the requests did.
 */
import { BillingSession } from "@relay-billing/core"
import { TestDatabase } from "@relay-billing/knex"
import type { Context } from "effect"
import { Effect, Exit, Layer, Scope } from "effect"
import { TestClock } from "effect/testing"
import OpenAI from "openai"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { decodeConfig } from "../src/Config.js"
import type { Loaded } from "../src/Config.js"
import * as HttpListener from "../src/HttpListener.js"
import * as Server from "../src/Server.js"
import * as Mock from "./support/MockUpstream.js"
import * as Prometheus from "./support/Prometheus.js"

const ADMIN_KEY = "sk-admin-metrics-0123456789"
const MODEL = "gpt-4o-mini"
const MODEL_RATIO = 2
const COMPLETION_RATIO = 3
/** The mock's default usage (10 prompt, 3 completion) priced by relay-api.md: (10 + 3 × 3) × 2. */
const A = (10 + 3 * COMPLETION_RATIO) * MODEL_RATIO

describe.each(TestDatabase.targets())("GET /metrics on $name", (target) => {
  let scope: Scope.Closeable
  let mock: Mock.MockUpstream
  let loaded: Loaded
  let dbOptions: TestDatabase.Isolated["options"]
  let relay: { url: string; context: Context.Context<BillingSession.BillingSession> }

  const start = async () => {
    const context = await Effect.runPromise(
      Layer.buildWithScope(Server.layer(loaded, { port: 0, host: "127.0.0.1", client: dbOptions }), scope)
    )
    const url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))
    return { url, context: context as Context.Context<BillingSession.BillingSession> }
  }

  beforeAll(async () => {
    mock = await Mock.start()
    scope = Effect.runSync(Scope.make())
    const config = await Effect.runPromise(decodeConfig({
      quotaPerUnit: 500000,
      groups: { default: 1 },
      models: { [MODEL]: { modelRatio: MODEL_RATIO, completionRatio: COMPLETION_RATIO } },
      channels: [{ name: "A", baseUrl: mock.url, apiKey: "sk-up", models: [MODEL, "unpriced-model"], priority: 0 }],
      // no background reaper pass during the test: reaper runs come from POST /admin/holds/reap only
      billing: { minPreConsumeTokens: 20, retries: 0, reapIntervalSeconds: 86_400 }
    }))
    const db = await Effect.runPromise(Scope.provide(TestDatabase.isolated(target), scope))
    dbOptions = db.options
    loaded = { port: 0, databaseUrl: db.url, adminKey: ADMIN_KEY, configSource: "metrics", config }
    relay = await start()
  }, 60_000)

  afterAll(async () => {
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
    await mock?.close()
  })

  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${relay.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${ADMIN_KEY}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {})
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {})
    })
    return { status: response.status, body: await response.json() as any }
  }

  const scrape = async (url = relay.url) => {
    const response = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
    expect(response.status).toBe(200)
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/)
    return Prometheus.parse(await response.text())
  }

  it("counts requests, holds, quota, reaper passes and phase latencies by the exact numbers", async () => {
    const before = await scrape()
    for (
      const [name, type] of [
        ["relay_http_requests_total", "counter"],
        ["relay_quota_billed_total", "counter"],
        ["relay_holds_opened_total", "counter"],
        ["relay_holds_settled_total", "counter"],
        ["relay_holds_refunded_total", "counter"],
        ["relay_holds_expired_total", "counter"],
        ["relay_holds_pending", "gauge"],
        ["relay_reaper_runs_total", "counter"],
        ["relay_reaper_failures_total", "counter"],
        ["relay_billing_phase_seconds", "histogram"],
        ["relay_db_pool_connections", "gauge"]
      ] as const
    ) {
      expect(before.types.get(name), name).toBe(type)
    }

    const account = await admin("POST", "/admin/accounts", { quota: 10_000, billingPreference: "wallet_only" })
    expect(account.status).toBe(201)
    const token = await admin("POST", "/admin/tokens", { accountId: account.body.id })
    expect(token.status).toBe(201)
    const client = new OpenAI({ apiKey: token.body.key, baseURL: `${relay.url}/v1`, maxRetries: 0 })

    // two settled requests, billed A each
    for (let i = 0; i < 2; i++) {
      const answer = await client.chat.completions.create({
        model: MODEL,
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 10
      })
      expect(answer.usage?.completion_tokens).toBe(3)
    }
    // one refused before any hold: an unpriced model (400)
    await expect(
      client.chat.completions.create({ model: "unpriced-model", messages: [{ role: "user", content: "hi" }] })
    )
      .rejects.toMatchObject({ status: 400 })
    // one refunded: the upstream fails
    mock.enqueue({ type: "error", status: 500 })
    await expect(client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }] }))
      .rejects.toMatchObject({ status: 500 })
    // one expired: opened in 2020 (Effect's Clock) with a minute to live, then reaped
    await Effect.runPromise(
      TestClock.setTime(Date.parse("2020-01-01T00:00:00Z")).pipe(
        Effect.andThen(
          BillingSession.BillingSession.use((s) =>
            s.open({
              holdId: `metrics-lost-${Date.now()}`,
              accountId: account.body.id,
              estimate: 50,
              ttlMillis: 60_000
            })
          )
        ),
        Effect.provide(TestClock.layer()),
        Effect.provideContext(relay.context)
      )
    )
    expect((await scrape()).value("relay_holds_pending")).toBe(before.value("relay_holds_pending") + 1)
    expect((await admin("POST", "/admin/holds/reap")).body).toEqual({ expired: 1 })

    const after = await scrape()
    const delta = (name: string, labels?: Record<string, string>) =>
      after.value(name, labels) - before.value(name, labels)

    const chat = { route: "/v1/chat/completions", method: "POST" }
    expect(delta("relay_http_requests_total", { ...chat, status: "200", model: MODEL })).toBe(2)
    expect(delta("relay_http_requests_total", { ...chat, status: "400", model: "" })).toBe(1)
    expect(delta("relay_http_requests_total", { ...chat, status: "500", model: MODEL })).toBe(1)
    expect(delta("relay_http_requests_total", { route: "/admin/accounts", method: "POST", status: "201", model: "" }))
      .toBe(1)
    expect(delta("relay_http_requests_total", { route: "/admin/tokens", method: "POST", status: "201", model: "" }))
      .toBe(1)
    expect(delta("relay_http_requests_total", { route: "/admin/holds/reap", method: "POST", status: "200", model: "" }))
      .toBe(1)
    // the scrapes count themselves (two between `before` and `after`, `after` counted by the next)
    expect(delta("relay_http_requests_total", { route: "/metrics", method: "GET", status: "200", model: "" })).toBe(2)

    expect(delta("relay_holds_opened_total")).toBe(4)
    expect(delta("relay_holds_settled_total")).toBe(2)
    expect(delta("relay_holds_refunded_total")).toBe(1)
    expect(delta("relay_holds_expired_total")).toBe(1)
    expect(after.value("relay_holds_pending")).toBe(before.value("relay_holds_pending"))
    expect(delta("relay_quota_billed_total", { model: MODEL })).toBe(2 * A)
    expect(delta("relay_reaper_runs_total")).toBe(1)
    expect(delta("relay_reaper_failures_total")).toBe(0)

    const phase = (p: string, outcome = "ok") => delta("relay_billing_phase_seconds_count", { phase: p, outcome })
    expect(phase("open")).toBe(4)
    expect(phase("settle")).toBe(2)
    expect(phase("refund")).toBe(1)
    expect(phase("reap")).toBe(1)
    expect(after.value("relay_billing_phase_seconds_bucket", { phase: "open", outcome: "ok", le: "+Inf" }))
      .toBe(after.value("relay_billing_phase_seconds_count", { phase: "open", outcome: "ok" }))

    // the knex pool, read at the scrape
    for (const state of ["used", "free", "pending_acquires", "pending_creates"]) {
      expect(after.has("relay_db_pool_connections", { state }), state).toBe(true)
      expect(Number.isInteger(after.value("relay_db_pool_connections", { state }))).toBe(true)
      expect(after.value("relay_db_pool_connections", { state })).toBeGreaterThanOrEqual(0)
    }
    expect(
      after.value("relay_db_pool_connections", { state: "used" }) +
        after.value("relay_db_pool_connections", { state: "free" })
    )
      .toBeGreaterThanOrEqual(1)
  }, 60_000)

  it("refuses a scrape without the admin key or with a wrong one (401, JSON error body)", async () => {
    for (const headers of [{}, { authorization: "Bearer sk-wrong" }, { authorization: ADMIN_KEY }]) {
      const response = await fetch(`${relay.url}/metrics`, { headers })
      expect(response.status).toBe(401)
      expect(response.headers.get("content-type")).toMatch(/^application\/json/)
      expect(await response.json()).toEqual({
        error: { message: expect.any(String), type: "invalid_request_error", code: "invalid_api_key" }
      })
    }
    const counted = await scrape()
    expect(counted.value("relay_http_requests_total", { route: "/metrics", method: "GET", status: "401", model: "" }))
      .toBeGreaterThanOrEqual(3)
  })

  it("keeps one registry per relay instance: a second relay in the same process starts from zero", async () => {
    const first = await scrape()
    expect(first.value("relay_holds_opened_total")).toBeGreaterThan(0)
    const second = await start()
    const fresh = await scrape(second.url)
    expect(fresh.value("relay_holds_opened_total")).toBe(0)
    expect(
      fresh.value("relay_http_requests_total", {
        route: "/v1/chat/completions",
        method: "POST",
        status: "200",
        model: MODEL
      })
    )
      .toBe(0)
    // the first relay's counters did not move with the second's
    expect((await scrape()).value("relay_holds_opened_total")).toBe(first.value("relay_holds_opened_total"))
  }, 60_000)
})
