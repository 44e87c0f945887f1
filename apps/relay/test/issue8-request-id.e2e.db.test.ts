/**
 * Issue 8 #3 end to end: one `X-Request-Id` used by several requests. The
 * relay has no check-then-open any more; the SDK's atomic open decides, and a
 * refused request (409 `request_id_conflict`, JSON body) never touches the
 * running request's hold. The relay runs in-process with a mock upstream, the
 * official `openai` client is the client, on every TestDatabase target.
 */
import { TestDatabase } from "@relay-billing/knex"
import { Effect, Exit, Layer, Scope } from "effect"
import OpenAI from "openai"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { decodeConfig } from "../src/Config.js"
import type { Loaded } from "../src/Config.js"
import * as HttpListener from "../src/HttpListener.js"
import * as Server from "../src/Server.js"
import * as Mock from "./support/MockUpstream.js"

const ADMIN_KEY = "sk-admin-issue8-0123456789"
const MODEL = "gpt-4o-mini"
const MESSAGES = [{ role: "user" as const, content: "Say hello" }]
// pricing of the config below: the mock's usage (10 prompt, 3 completion) costs (10 + 3 × 3) × 2
const A = 38

let seq = 0
const rid = (label: string) => `issue8-${label}-${process.pid}-${++seq}`

describe.each(TestDatabase.targets())("issue 8 #3: one X-Request-Id, several requests, on $name", (target) => {
  let scope: Scope.Closeable
  let url: string
  let mock: Mock.MockUpstream

  beforeAll(async () => {
    mock = await Mock.start()
    scope = Effect.runSync(Scope.make())
    const config = await Effect.runPromise(decodeConfig({
      quotaPerUnit: 500000,
      groups: { default: 1 },
      models: { [MODEL]: { modelRatio: 2, completionRatio: 3 } },
      channels: [{ name: "A", baseUrl: mock.url, apiKey: "sk-up-a", models: [MODEL], priority: 0 }],
      billing: { minPreConsumeTokens: 20, retries: 0, onClientDisconnect: "charge-prompt", reapIntervalSeconds: 600 }
    }))
    const db = await Effect.runPromise(Scope.provide(TestDatabase.isolated(target), scope))
    const loaded: Loaded = { port: 0, databaseUrl: db.url, adminKey: ADMIN_KEY, configSource: "issue8", config }
    const context = await Effect.runPromise(
      Layer.buildWithScope(Server.layer(loaded, { port: 0, host: "127.0.0.1", client: db.options }), scope)
    )
    url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))
  }, 60_000)

  afterAll(async () => {
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
    await mock?.close()
  })

  beforeEach(() => mock.reset())

  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${ADMIN_KEY}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {})
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {})
    })
    const text = await response.text()
    return { status: response.status, body: text === "" ? undefined : JSON.parse(text) }
  }
  const account = async (id: string) => (await admin("GET", `/admin/accounts/${id}`)).body
  const hold = async (requestId: string) => (await admin("GET", `/admin/holds/${encodeURIComponent(requestId)}`)).body
  const logs = async (accountId: string) =>
    (await admin("GET", `/admin/logs?accountId=${accountId}`)).body as Array<any>

  const setup = async () => {
    const acc = await admin("POST", "/admin/accounts", { quota: 10_000, billingPreference: "wallet_only" })
    expect(acc.status).toBe(201)
    const tok = await admin("POST", "/admin/tokens", { accountId: acc.body.id, unlimited: true })
    expect(tok.status).toBe(201)
    const client = new OpenAI({ apiKey: tok.body.key, baseURL: `${url}/v1`, maxRetries: 0, timeout: 20_000 })
    return { accountId: acc.body.id as string, client }
  }

  /** A 409 `request_id_conflict` whose body is OpenAI-shaped JSON (the client parsed its code). */
  const expectConflict = (error: unknown, id: string) => {
    expect(error).toBeInstanceOf(OpenAI.APIError)
    const e = error as InstanceType<typeof OpenAI.APIError>
    expect(e.status).toBe(409)
    expect(e.code).toBe("request_id_conflict")
    expect(e.error).toMatchObject({ code: "request_id_conflict", message: expect.stringContaining(id) })
    expect(e.headers?.get("x-request-id")).toBe(id)
  }

  it("issue 8 #3: 3 concurrent chat requests with one X-Request-Id: exactly one 200, the others 409 with a JSON body, one charge", async () => {
    const s = await setup()
    const id = rid("concurrent")
    // A slow upstream: the winner's hold stays pending while the others open.
    mock.setDefault({ type: "ok", delayMs: 100 })
    const results = await Promise.allSettled(Array.from({ length: 3 }, async () => {
      const stream = await s.client.chat.completions.create(
        { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
        { headers: { "X-Request-Id": id } }
      )
      let text = ""
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ""
      return text
    }))
    const ok = results.filter((r) => r.status === "fulfilled")
    const refused = results.filter((r) => r.status === "rejected")
    expect(ok).toHaveLength(1)
    expect((ok[0] as PromiseFulfilledResult<string>).value).toBe("Hello from mock")
    expect(refused).toHaveLength(2)
    for (const r of refused) expectConflict((r as PromiseRejectedResult).reason, id)
    // one upstream call, one charge, one log
    expect(mock.requests).toHaveLength(1)
    expect(await hold(id)).toMatchObject({ id, status: "settled", actual: A })
    expect(await account(s.accountId)).toMatchObject({ quota: 10_000 - A, usedQuota: A, requestCount: 1 })
    expect(await logs(s.accountId)).toHaveLength(1)
  })

  it("issue 8 #3: a retry of a running request gets 409 and never refunds it; the first is still billed", async () => {
    const s = await setup()
    const id = rid("retry")
    // The first request: its upstream stream stays open (so its hold is pending) until the gate opens.
    let open: () => void = () => undefined
    const gate = new Promise<void>((resolve) => (open = resolve))
    mock.enqueue({ type: "ok", gate })
    const first = await s.client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
      { headers: { "X-Request-Id": id } }
    )
    expect(await hold(id)).toMatchObject({ status: "pending" })
    // The retry (non-stream, and a stream) while the first runs: 409, no upstream call, the hold untouched.
    const retry = await s.client.chat.completions
      .create({ model: MODEL, messages: MESSAGES, max_tokens: 10 }, { headers: { "X-Request-Id": id } })
      .then(() => undefined, (e) => e)
    expectConflict(retry, id)
    const retryStream = await s.client.chat.completions
      .create({ model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true }, { headers: { "X-Request-Id": id } })
      .then(() => undefined, (e) => e)
    expectConflict(retryStream, id)
    expect(mock.requests).toHaveLength(1)
    expect(await hold(id)).toMatchObject({ status: "pending" })
    // The first completes and is billed its actual cost, once.
    open()
    let text = ""
    for await (const chunk of first) text += chunk.choices[0]?.delta?.content ?? ""
    expect(text).toBe("Hello from mock")
    expect(await hold(id)).toMatchObject({ id, status: "settled", actual: A })
    expect(await account(s.accountId)).toMatchObject({ quota: 10_000 - A, usedQuota: A, requestCount: 1 })
    // A retry after it settled is a 409 too, and records no second log.
    expectConflict(
      await s.client.chat.completions
        .create({ model: MODEL, messages: MESSAGES, max_tokens: 10 }, { headers: { "X-Request-Id": id } })
        .then(() => undefined, (e) => e),
      id
    )
    expect(await logs(s.accountId)).toHaveLength(1)
    expect(await account(s.accountId)).toMatchObject({ quota: 10_000 - A, usedQuota: A, requestCount: 1 })
  })
})
