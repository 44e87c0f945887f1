/**
 * End to end: the relay (Server.layer: admin + client API, billing, reaper)
 * started in-process on a random port, two MockUpstream channels, the
 * official `openai` client as the client, on every TestDatabase target.
 * Every scenario checks balances, token budgets, holds and logs through the
 * admin API.
 */
import { BillingSession } from "@relay-billing/core"
import { TestDatabase } from "@relay-billing/knex"
import { Effect, Exit, Layer, Scope } from "effect"
import OpenAI from "openai"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { decodeConfig } from "../src/Config.js"
import type { Loaded } from "../src/Config.js"
import * as HttpListener from "../src/HttpListener.js"
import { holdIdOf } from "../src/internal/requestIds.js"
import * as RelayBilling from "../src/RelayBilling.js"
import * as RelayStore from "../src/RelayStore.js"
import * as Server from "../src/Server.js"
import * as Tokenizer from "../src/Tokenizer.js"
import * as Mock from "./support/MockUpstream.js"

const ADMIN_KEY = "sk-admin-e2e-0123456789"
const MODEL = "gpt-4o-mini"
const EMBED = "text-embedding-3-small"

// pricing of the test config
const MODEL_RATIO = 2
const COMPLETION_RATIO = 3
const MIN_PRE = 20
const VIP = 0.5
/** relay-api.md "Pricing", written out independently of src/Pricing.ts. */
const roundHalfAway = (x: number) => Math.sign(x) * Math.round(Math.abs(x))
const actualOf = (prompt: number, completion: number, group = 1) =>
  Math.max(
    roundHalfAway((prompt + completion * COMPLETION_RATIO) * MODEL_RATIO * group),
    prompt + completion > 0 ? 1 : 0
  )
const estimateOf = (promptEstimate: number, maxTokens: number, group = 1) =>
  Math.ceil((Math.max(promptEstimate, MIN_PRE) + maxTokens * COMPLETION_RATIO) * MODEL_RATIO * group)

const MESSAGES = [{ role: "user" as const, content: "Say hello" }]
const PROMPT_ESTIMATE = Tokenizer.countMessages(MESSAGES)
const P = estimateOf(PROMPT_ESTIMATE, 10) // max_tokens 10 → (20 + 30) × 2 = 100
const A = actualOf(10, 3) // the mock's default usage → (10 + 9) × 2 = 38

let seq = 0
const rid = (label: string) => `e2e-${label}-${process.pid}-${Date.now()}-${++seq}`

describe.each(TestDatabase.targets())("relay end to end on $name", (target) => {
  let scope: Scope.Closeable
  let url: string
  let mockA: Mock.MockUpstream
  let mockB: Mock.MockUpstream

  beforeAll(async () => {
    mockA = await Mock.start()
    mockB = await Mock.start()
    scope = Effect.runSync(Scope.make())
    const config = await Effect.runPromise(decodeConfig({
      quotaPerUnit: 500000,
      groups: { default: 1, vip: VIP },
      models: {
        [MODEL]: { modelRatio: MODEL_RATIO, completionRatio: COMPLETION_RATIO },
        [EMBED]: { modelRatio: 1, completionRatio: 1 }
      },
      channels: [
        { name: "A", baseUrl: mockA.url, apiKey: "sk-up-a", models: [MODEL, EMBED, "unpriced-model"], priority: 0 },
        { name: "B", baseUrl: mockB.url, apiKey: "sk-up-b", models: [MODEL, EMBED], priority: 1 }
      ],
      billing: { minPreConsumeTokens: MIN_PRE, retries: 2, onClientDisconnect: "charge-prompt", reapIntervalSeconds: 1 }
    }))
    const db = await Effect.runPromise(Scope.provide(TestDatabase.isolated(target), scope))
    const loaded: Loaded = { port: 0, databaseUrl: db.url, adminKey: ADMIN_KEY, configSource: "e2e", config }
    const context = await Effect.runPromise(
      Layer.buildWithScope(Server.layer(loaded, { port: 0, host: "127.0.0.1", client: db.options }), scope)
    )
    url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))
  }, 60_000)

  afterAll(async () => {
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
    await mockA?.close()
    await mockB?.close()
  })

  beforeEach(() => {
    mockA.reset()
    mockB.reset()
  })

  // -------------------------------------------------------------------------
  // admin helpers
  // -------------------------------------------------------------------------

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
  const token = async (id: string) => (await admin("GET", `/admin/tokens/${id}`)).body
  const hold = (requestId: string) => admin("GET", `/admin/holds/${encodeURIComponent(requestId)}`)
  const logs = async (accountId: string) =>
    (await admin("GET", `/admin/logs?accountId=${accountId}`)).body as Array<any>

  const setup = async (options: {
    quota?: number
    remainQuota?: number
    group?: string
    billingPreference?: string
    models?: Array<string>
  } = {}) => {
    const acc = await admin("POST", "/admin/accounts", {
      quota: options.quota ?? 10_000,
      ...(options.group !== undefined ? { group: options.group } : {}),
      billingPreference: options.billingPreference ?? "wallet_first"
    })
    expect(acc.status).toBe(201)
    const tok = await admin("POST", "/admin/tokens", {
      accountId: acc.body.id,
      ...(options.remainQuota !== undefined ? { remainQuota: options.remainQuota } : { unlimited: true }),
      ...(options.models !== undefined ? { models: options.models } : {})
    })
    expect(tok.status).toBe(201)
    const client = new OpenAI({ apiKey: tok.body.key, baseURL: `${url}/v1`, maxRetries: 0, timeout: 20_000 })
    return { accountId: acc.body.id as string, tokenId: tok.body.id as string, key: tok.body.key as string, client }
  }

  const expectApiError = async (promise: Promise<unknown>, status: number, code: string) => {
    const error = await promise.then(() => undefined, (e) => e)
    expect(error).toBeInstanceOf(OpenAI.APIError)
    expect(error.status).toBe(status)
    expect(error.code).toBe(code)
    return error as InstanceType<typeof OpenAI.APIError>
  }

  /** The hold once the relay has resolved it (bounded by the test's timeout, not by a count of tries). */
  const waitResolved = async (requestId: string) => {
    for (;;) {
      const h = await hold(requestId)
      if (h.status === 200 && h.body.status !== "pending") return h.body
      await new Promise((r) => setTimeout(r, 20)) // a poll interval, not a wait for time to pass
    }
  }
  /** The account's request log once it has `count` rows: an aborted request's row is written after its settle. */
  const waitLogs = async (accountId: string, count: number) => {
    for (;;) {
      const rows = await logs(accountId)
      if (rows.length >= count) return rows
      await new Promise((r) => setTimeout(r, 20)) // a poll interval, not a wait for time to pass
    }
  }

  // -------------------------------------------------------------------------
  // scenarios
  // -------------------------------------------------------------------------

  it("bills a non-stream chat completion with the exact quota and echoes X-Request-Id", async () => {
    const s = await setup({ quota: 1000 })
    const id = rid("ok")
    const { data, response } = await s.client.chat.completions
      .create({ model: MODEL, messages: MESSAGES, max_tokens: 10 }, { headers: { "X-Request-Id": id } })
      .withResponse()
    expect(response.headers.get("x-request-id")).toBe(id)
    expect(data.choices[0]!.message.content).toBe("Hello from mock")
    expect(data.usage).toMatchObject({ prompt_tokens: 10, completion_tokens: 3 })
    // the relay asked the upstream without stream_options and with the client's fields
    expect(mockA.requests).toHaveLength(1)
    expect(mockA.requests[0]!.body).toMatchObject({ model: MODEL, max_tokens: 10, stream: false })
    expect(mockA.requests[0]!.headers.authorization).toBe("Bearer sk-up-a")

    expect(A).toBe(38)
    expect(await account(s.accountId)).toMatchObject({ quota: 1000 - A, usedQuota: A, requestCount: 1 })
    expect(await token(s.tokenId)).toMatchObject({ usedQuota: A, unlimited: true })
    const h = (await hold(id)).body
    expect(h).toMatchObject({
      id,
      status: "settled",
      reserved: P,
      actual: A,
      accountId: s.accountId,
      tokenId: s.tokenId
    })
    expect(await logs(s.accountId)).toEqual([
      expect.objectContaining({
        requestId: id,
        accountId: s.accountId,
        tokenId: s.tokenId,
        model: MODEL,
        promptTokens: 10,
        completionTokens: 3,
        quota: A,
        source: "wallet"
      })
    ])
  })

  it("generates a request id when none is given and applies the group ratio", async () => {
    const s = await setup({ quota: 1000, group: "vip" })
    const { response } = await s.client.chat.completions
      .create({ model: MODEL, messages: MESSAGES, max_tokens: 10 })
      .withResponse()
    const id = response.headers.get("x-request-id")
    expect(id).toMatch(/^req_[0-9a-f]{32}$/)
    const expected = actualOf(10, 3, VIP) // 19
    expect((await hold(id!)).body).toMatchObject({
      status: "settled",
      reserved: estimateOf(PROMPT_ESTIMATE, 10, VIP),
      actual: expected
    })
    expect(await account(s.accountId)).toMatchObject({ quota: 1000 - expected, usedQuota: expected })
  })

  it("streams SSE as it arrives and bills the usage at the end (usage chunk only when asked)", async () => {
    const s = await setup({ quota: 1000 })
    // with include_usage: the client gets the usage chunk
    mockA.enqueue({ type: "ok", chunks: ["One", " two", " three"], usage: { prompt_tokens: 12, completion_tokens: 5 } })
    const id1 = rid("stream-usage")
    const stream1 = await s.client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true, stream_options: { include_usage: true } },
      { headers: { "X-Request-Id": id1 } }
    )
    const chunks1: Array<any> = []
    for await (const chunk of stream1) chunks1.push(chunk)
    expect(chunks1.map((c) => c.choices[0]?.delta?.content ?? "").join("")).toBe("One two three")
    expect(chunks1.at(-1)).toMatchObject({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 5 } })
    const a1 = actualOf(12, 5) // (12 + 15) × 2 = 54
    expect((await hold(id1)).body).toMatchObject({ status: "settled", actual: a1 })

    // without include_usage: the relay still asks the upstream for usage, but drops the chunk
    mockA.enqueue({ type: "ok", usage: { prompt_tokens: 10, completion_tokens: 3 } })
    const id2 = rid("stream")
    const stream2 = await s.client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
      { headers: { "X-Request-Id": id2 } }
    )
    const chunks2: Array<any> = []
    for await (const chunk of stream2) chunks2.push(chunk)
    expect(chunks2.length).toBeGreaterThan(0)
    expect(chunks2.every((c) => c.usage === undefined || c.usage === null)).toBe(true)
    expect(chunks2.every((c) => c.choices.length > 0)).toBe(true)
    expect(mockA.requests[1]!.body.stream_options).toEqual({ include_usage: true })
    expect((await hold(id2)).body).toMatchObject({ status: "settled", actual: A })

    expect(await account(s.accountId)).toMatchObject({ quota: 1000 - a1 - A, usedQuota: a1 + A, requestCount: 2 })
    const entries = await logs(s.accountId)
    expect(entries.map((e) => [e.requestId, e.quota, e.promptTokens, e.completionTokens])).toEqual([
      [id2, A, 10, 3],
      [id1, a1, 12, 5]
    ])
  })

  it("retries a 500 on channel A on channel B: one hold, billed once", async () => {
    const s = await setup({ quota: 1000 })
    mockA.enqueue({ type: "error", status: 500 })
    const id = rid("retry")
    const completion = await s.client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 10 },
      { headers: { "X-Request-Id": id } }
    )
    expect(completion.choices[0]!.message.content).toBe("Hello from mock")
    expect(mockA.requests).toHaveLength(1)
    expect(mockB.requests).toHaveLength(1)
    expect(mockB.requests[0]!.headers.authorization).toBe("Bearer sk-up-b")
    expect((await hold(id)).body).toMatchObject({ status: "settled", reserved: P, actual: A })
    expect(await account(s.accountId)).toMatchObject({ quota: 1000 - A, usedQuota: A, requestCount: 1 })
    expect(await logs(s.accountId)).toHaveLength(1)
  })

  it("refunds in full when every channel fails (502 upstream_error)", async () => {
    const s = await setup({ quota: 1000, remainQuota: 500 })
    mockA.enqueue({ type: "reset" })
    mockB.enqueue({ type: "reset" })
    const id = rid("allfail")
    const error = await expectApiError(
      s.client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 10 }, {
        headers: { "X-Request-Id": id }
      }),
      502,
      "upstream_error"
    )
    expect(error.headers?.get("x-request-id")).toBe(id)
    expect(mockA.requests).toHaveLength(1)
    expect(mockB.requests).toHaveLength(1)
    expect((await hold(id)).body).toMatchObject({ status: "refunded", reserved: P })
    expect(await account(s.accountId)).toMatchObject({ quota: 1000, usedQuota: 0 })
    expect(await token(s.tokenId)).toMatchObject({ remainQuota: 500, usedQuota: 0 })
    expect(await logs(s.accountId)).toEqual([])

    // both channels answering 500: the last upstream status
    mockA.enqueue({ type: "error", status: 500 })
    mockB.enqueue({ type: "error", status: 503 })
    await expectApiError(s.client.chat.completions.create({ model: MODEL, messages: MESSAGES }), 503, "upstream_error")
    expect(await account(s.accountId)).toMatchObject({ quota: 1000, usedQuota: 0 })
  })

  it("returns an upstream 4xx as is, without retrying, and refunds", async () => {
    const s = await setup({ quota: 1000 })
    mockA.enqueue({ type: "error", status: 400, message: "bad things", code: "context_length_exceeded" })
    const id = rid("4xx")
    const error = await expectApiError(
      s.client.chat.completions.create({ model: MODEL, messages: MESSAGES }, { headers: { "X-Request-Id": id } }),
      400,
      "context_length_exceeded"
    )
    expect(error.message).toContain("bad things")
    expect(mockB.requests).toHaveLength(0)
    expect((await hold(id)).body.status).toBe("refunded")
    expect(await account(s.accountId)).toMatchObject({ quota: 1000, usedQuota: 0 })
  })

  it("charges the prompt when the client aborts mid-stream (charge-prompt)", async () => {
    const s = await setup({ quota: 1000, remainQuota: 600 })
    // the upstream sends the role chunk and two deltas, then nothing until the relay leaves
    mockA.enqueue({ type: "ok", chunks: Array.from({ length: 40 }, (_, i) => ` w${i}`), holdAfter: 2 })
    const id = rid("abort")
    const controller = new AbortController()
    const stream = await s.client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
      { headers: { "X-Request-Id": id }, signal: controller.signal }
    )
    let received = 0
    // the openai client ends the iteration quietly on abort (or throws an abort error)
    await (async () => {
      for await (const _chunk of stream) {
        if (++received === 3) controller.abort()
      }
    })().catch((e) => expect(String(e)).toMatch(/abort/i))
    expect(received).toBe(3)
    expect(controller.signal.aborted).toBe(true)
    const resolved = await waitResolved(id)
    const charged = roundHalfAway(PROMPT_ESTIMATE * MODEL_RATIO) // the prompt estimate: no usage arrived
    expect(resolved).toMatchObject({ status: "settled", reserved: P, actual: charged })
    expect(await account(s.accountId)).toMatchObject({ quota: 1000 - charged, usedQuota: charged })
    expect(await token(s.tokenId)).toMatchObject({ remainQuota: 600 - charged, usedQuota: charged })
    expect(await waitLogs(s.accountId, 1)).toEqual([
      expect.objectContaining({ requestId: id, quota: charged, promptTokens: PROMPT_ESTIMATE, completionTokens: 0 })
    ])
    // the upstream request was aborted too
    await mockA.requests[0]!.finished
    expect(mockA.requests[0]!.sent).not.toContain("[DONE]")
  })

  it("settles a broken upstream stream with what was streamed, refunds when nothing was", async () => {
    const s = await setup({ quota: 1000 })
    mockA.enqueue({ type: "break", afterChunks: 2, chunks: ["Hello", " world", " again"] })
    const id = rid("broken")
    const stream = await s.client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
      { headers: { "X-Request-Id": id } }
    )
    const seen: Array<string> = []
    await expect((async () => {
      for await (const chunk of stream) seen.push(chunk.choices[0]?.delta?.content ?? "")
    })()).rejects.toThrow(/upstream stream broke/)
    expect(seen.join("")).toBe("Hello world")
    const expected = Math.min(actualOf(PROMPT_ESTIMATE, Tokenizer.countText("Hello world")), P)
    expect((await hold(id)).body).toMatchObject({ status: "settled", actual: expected })
    expect(await account(s.accountId)).toMatchObject({ quota: 1000 - expected })

    // broken after the role chunk only: nothing streamed → refunded, no log
    mockA.enqueue({ type: "break", afterChunks: 0 })
    const id2 = rid("broken-empty")
    const stream2 = await s.client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
      { headers: { "X-Request-Id": id2 } }
    )
    await expect((async () => {
      for await (const _chunk of stream2) { /* drain */ }
    })()).rejects.toThrow(/upstream stream broke/)
    expect(mockB.requests).toHaveLength(0) // committed at the first event: never retried
    expect((await hold(id2)).body).toMatchObject({ status: "refunded" })
    expect(await account(s.accountId)).toMatchObject({ quota: 1000 - expected, usedQuota: expected })
    expect((await logs(s.accountId)).map((e) => e.requestId)).toEqual([id])
  })

  it("refuses an account that cannot afford the estimate (403 insufficient_user_quota), changing nothing", async () => {
    const s = await setup({ quota: P - 1, remainQuota: 1000 })
    const id = rid("poor")
    const error = await expectApiError(
      s.client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 10 }, {
        headers: { "X-Request-Id": id }
      }),
      403,
      "insufficient_user_quota"
    )
    expect(error.headers?.get("x-request-id")).toBe(id)
    expect(mockA.requests).toHaveLength(0)
    expect(await account(s.accountId)).toMatchObject({ quota: P - 1, usedQuota: 0, requestCount: 0 })
    expect(await token(s.tokenId)).toMatchObject({ remainQuota: 1000, usedQuota: 0 })
    expect((await hold(id)).status).toBe(404)
    expect(await logs(s.accountId)).toEqual([])
  })

  it("refuses a token whose budget cannot cover the estimate (403 pre_consume_token_quota_failed)", async () => {
    const s = await setup({ quota: 10_000, remainQuota: P - 1 })
    await expectApiError(
      s.client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 10 }),
      403,
      "pre_consume_token_quota_failed"
    )
    expect(mockA.requests).toHaveLength(0)
    expect(await account(s.accountId)).toMatchObject({ quota: 10_000, usedQuota: 0 })
    expect(await token(s.tokenId)).toMatchObject({ remainQuota: P - 1, usedQuota: 0 })
    expect(await logs(s.accountId)).toEqual([])
  })

  it("refuses a retried X-Request-Id with 409 request_id_conflict and bills once", async () => {
    const s = await setup({ quota: 1000 })
    const id = rid("dup")
    await s.client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 10 }, {
      headers: { "X-Request-Id": id }
    })
    const error = await expectApiError(
      s.client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 10 }, {
        headers: { "X-Request-Id": id }
      }),
      409,
      "request_id_conflict"
    )
    expect(error.headers?.get("x-request-id")).toBe(id)
    // also for a refunded hold, and across endpoints
    const id2 = rid("dup-refunded")
    mockA.enqueue({ type: "error", status: 400 })
    await expectApiError(
      s.client.chat.completions.create({ model: MODEL, messages: MESSAGES }, { headers: { "X-Request-Id": id2 } }),
      400,
      "invalid_request"
    )
    await expectApiError(
      s.client.embeddings.create({ model: EMBED, input: "x" }, { headers: { "X-Request-Id": id2 } }),
      409,
      "request_id_conflict"
    )
    expect(mockA.requests).toHaveLength(2)
    expect(await account(s.accountId)).toMatchObject({ quota: 1000 - A, usedQuota: A, requestCount: 1 })
    expect((await hold(id)).body).toMatchObject({ status: "settled", actual: A })
    expect(await logs(s.accountId)).toHaveLength(1)
  })

  it("never overdraws under concurrency: 20 parallel requests on a wallet affording 7", async () => {
    const s = await setup({ quota: 7 * P })
    // usage priced exactly at the reservation: (20 + 10 × 3) × 2 = 100 = P
    mockA.setDefault({ type: "ok", usage: { prompt_tokens: 20, completion_tokens: 10 } })
    expect(actualOf(20, 10)).toBe(P)
    const results = await Promise.allSettled(
      Array.from(
        { length: 20 },
        () => s.client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 10 })
      )
    )
    const ok = results.filter((r) => r.status === "fulfilled")
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected")
    expect(ok).toHaveLength(7)
    for (const r of refused) {
      expect(r.reason.status).toBe(403)
      expect(r.reason.code).toBe("insufficient_user_quota")
    }
    expect(mockA.requests).toHaveLength(7)
    expect(await account(s.accountId)).toMatchObject({ quota: 0, usedQuota: 7 * P, requestCount: 7 })
    const entries = await logs(s.accountId)
    expect(entries).toHaveLength(7)
    expect(entries.every((e) => e.quota === P)).toBe(true)
    const audit = await admin("GET", "/admin/audit")
    expect(audit.body).toMatchObject({ ok: true, problems: [] })
  })

  it("refuses unknown, unpriced and forbidden models and bad client bodies", async () => {
    const s = await setup({ quota: 1000, models: [MODEL] })
    await expectApiError(
      s.client.chat.completions.create({ model: "no-such-model", messages: MESSAGES }),
      400,
      "model_not_found"
    )
    await expectApiError(
      s.client.chat.completions.create({ model: "unpriced-model", messages: MESSAGES }),
      400,
      "model_price_error"
    )
    await expectApiError(s.client.embeddings.create({ model: EMBED, input: "x" }), 403, "model_not_allowed")
    const bad = await expectApiError(
      s.client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: 42 as any }] }),
      400,
      "invalid_request"
    )
    expect((bad.error as any).field).toBe("messages.0.content")
    const missing = await expectApiError(
      s.client.chat.completions.create({ messages: MESSAGES } as any),
      400,
      "invalid_request"
    )
    expect((missing.error as any).field).toBe("model")
    const unauthorized = new OpenAI({ apiKey: "sk-nope", baseURL: `${url}/v1`, maxRetries: 0 })
    await expectApiError(
      unauthorized.chat.completions.create({ model: MODEL, messages: MESSAGES }),
      401,
      "invalid_api_key"
    )
    expect(mockA.requests).toHaveLength(0)
    expect(await account(s.accountId)).toMatchObject({ quota: 1000, usedQuota: 0 })
    expect(await logs(s.accountId)).toEqual([])
  })

  it("lists the models a token may use", async () => {
    const all = await setup()
    const listed = (await all.client.models.list()).data.map((m) => m.id)
    expect(listed).toEqual([MODEL, EMBED])
    const limited = await setup({ models: [EMBED] })
    expect((await limited.client.models.list()).data.map((m) => m.id)).toEqual([EMBED])
  })

  it("bills embeddings from the upstream prompt tokens", async () => {
    const s = await setup({ quota: 1000 })
    mockA.enqueue({ type: "ok", usage: { prompt_tokens: 7, completion_tokens: 0 } })
    const id = rid("embed")
    const result = await s.client.embeddings.create(
      { model: EMBED, input: ["a", "b"], encoding_format: "float" },
      { headers: { "X-Request-Id": id } }
    )
    expect(result.data).toHaveLength(2)
    expect((await hold(id)).body).toMatchObject({ status: "settled", actual: 7 })
    expect(await account(s.accountId)).toMatchObject({ quota: 993, usedQuota: 7 })
    expect(await logs(s.accountId)).toEqual([
      expect.objectContaining({ requestId: id, model: EMBED, promptTokens: 7, completionTokens: 0, quota: 7 })
    ])
  })

  it("charges a subscription-funded request to the subscription", async () => {
    const s = await setup({ quota: 0, billingPreference: "subscription_first" })
    const plan = await admin("POST", "/admin/plans", {
      title: "pro",
      totalAmount: 1000,
      resetPeriod: "never",
      durationSeconds: 3600
    })
    expect(plan.status).toBe(201)
    const sub = await admin("POST", "/admin/subscriptions", { accountId: s.accountId, planId: plan.body.id })
    expect(sub.status).toBe(201)
    const id = rid("sub")
    await s.client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 10 }, {
      headers: { "X-Request-Id": id }
    })
    const h = (await hold(id)).body
    expect(h).toMatchObject({ status: "settled", actual: A })
    expect(h.parts.filter((p: any) => p.source !== "token").map((p: any) => [p.source, p.charged])).toEqual([[
      "subscription",
      A
    ]])
    expect((await admin("GET", `/admin/subscriptions/${sub.body.id}`)).body).toMatchObject({
      amountTotal: 1000,
      amountUsed: A
    })
    expect(await account(s.accountId)).toMatchObject({ quota: 0 })
    expect(await logs(s.accountId)).toEqual([
      expect.objectContaining({ requestId: id, quota: A, source: "subscription" })
    ])
  })

  it("refuses bad admin bodies with 400 naming the field", async () => {
    const r1 = await admin("POST", "/admin/accounts", { quota: -1 })
    expect(r1.status).toBe(400)
    expect(r1.body.error).toMatchObject({ code: "invalid_request", field: "quota" })
    const r2 = await admin("POST", "/admin/tokens", { name: "x" })
    expect(r2.status).toBe(400)
    expect(r2.body.error).toMatchObject({ code: "invalid_request", field: "accountId" })
    const r3 = await admin("POST", "/admin/plans", {
      title: "p",
      totalAmount: 10,
      resetPeriod: "hourly",
      durationSeconds: 60
    })
    expect(r3.status).toBe(400)
    expect(r3.body.error).toMatchObject({ code: "invalid_request", field: "resetPeriod" })
  })
})

/** A relay of its own (for other policies and for shutdown), on SQLite. */
const startRelay = async (billing: Record<string, unknown>) => {
  const mock = await Mock.start()
  const dbScope = Effect.runSync(Scope.make())
  const scope = Effect.runSync(Scope.make())
  const config = await Effect.runPromise(decodeConfig({
    models: { [MODEL]: { modelRatio: MODEL_RATIO, completionRatio: COMPLETION_RATIO } },
    channels: [{ name: "A", baseUrl: mock.url, models: [MODEL] }],
    billing: { minPreConsumeTokens: MIN_PRE, ...billing }
  }))
  const db = await Effect.runPromise(Scope.provide(TestDatabase.isolated({ name: "sqlite" }), dbScope))
  const loaded: Loaded = { port: 0, databaseUrl: db.url, adminKey: ADMIN_KEY, configSource: "e2e", config }
  const context = await Effect.runPromise(
    Layer.buildWithScope(
      Server.layer(loaded, { port: 0, host: "127.0.0.1", client: db.options, drainTimeout: 60_000 }),
      scope
    )
  )
  const url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))
  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {})
    })
    return { status: response.status, body: await response.json() as any }
  }
  const acc = (await admin("POST", "/admin/accounts", { quota: 1000 })).body
  const tok = (await admin("POST", "/admin/tokens", { accountId: acc.id, remainQuota: 1000 })).body
  const client = new OpenAI({ apiKey: tok.key, baseURL: `${url}/v1`, maxRetries: 0 })
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await Effect.runPromise(Scope.close(dbScope, Exit.void))
    await mock.close()
  }
  /** Reads the database after the server stopped. */
  const offline = <A, E>(effect: Effect.Effect<A, E, RelayBilling.Services>) =>
    Effect.runPromise(Effect.scoped(Effect.provide(effect, RelayBilling.layerUrl(db.url, { client: db.options }))))
  return { mock, client, admin, accountId: acc.id as string, tokenId: tok.id as string, scope, close, context, offline }
}

const abortAfter = async (client: OpenAI, id: string, n: number) => {
  const controller = new AbortController()
  const stream = await client.chat.completions.create(
    { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
    { headers: { "X-Request-Id": id }, signal: controller.signal }
  )
  let text = ""
  let received = 0
  await (async () => {
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? ""
      if (++received === n) controller.abort()
    }
  })().catch((e) => expect(String(e)).toMatch(/abort/i))
  return text
}

/** The hold once the relay has resolved it (bounded by the test's timeout, not by a count of tries). */
const resolvedHold = async (admin: (m: string, p: string) => Promise<{ status: number; body: any }>, id: string) => {
  for (;;) {
    const h = await admin("GET", `/admin/holds/${id}`)
    if (h.status === 200 && h.body.status !== "pending") return h.body
    await new Promise((r) => setTimeout(r, 20)) // a poll interval, not a wait for time to pass
  }
}

describe("client disconnect policies and shutdown (SQLite)", () => {
  it("charge-streamed charges the prompt plus the text actually forwarded", async () => {
    const r = await startRelay({ onClientDisconnect: "charge-streamed" })
    try {
      // the upstream sends the role chunk and three deltas, then nothing until the relay leaves
      r.mock.enqueue({ type: "ok", chunks: Array.from({ length: 40 }, (_, i) => ` w${i}`), holdAfter: 3 })
      const id = rid("streamed")
      const text = await abortAfter(r.client, id, 4) // role chunk + 3 content chunks
      expect(text).toBe(" w0 w1 w2")
      const h = await resolvedHold(r.admin, id)
      // exactly what was forwarded: the upstream sent nothing beyond it
      const expected = Math.min(actualOf(PROMPT_ESTIMATE, Tokenizer.countText(text)), P)
      expect(h.status).toBe("settled")
      expect(h.actual).toBe(expected)
      expect((await r.admin("GET", `/admin/accounts/${r.accountId}`)).body.quota).toBe(1000 - h.actual)
    } finally {
      await r.close()
    }
  })

  it("refund gives everything back on a client disconnect", async () => {
    const r = await startRelay({ onClientDisconnect: "refund" })
    try {
      r.mock.enqueue({ type: "ok", chunks: Array.from({ length: 40 }, (_, i) => ` w${i}`), holdAfter: 2 })
      const id = rid("refund")
      await abortAfter(r.client, id, 3)
      expect(await resolvedHold(r.admin, id)).toMatchObject({ status: "refunded" })
      expect((await r.admin("GET", `/admin/accounts/${r.accountId}`)).body).toMatchObject({ quota: 1000, usedQuota: 0 })
      expect((await r.admin("GET", `/admin/tokens/${r.tokenId}`)).body).toMatchObject({
        remainQuota: 1000,
        usedQuota: 0
      })
      expect((await r.admin("GET", `/admin/logs?accountId=${r.accountId}`)).body).toEqual([])
    } finally {
      await r.close()
    }
  })

  it("drains an in-flight stream on shutdown: it completes and settles", async () => {
    const r = await startRelay({})
    try {
      // the upstream pauses after "a" until the shutdown has begun
      let release!: () => void
      const released = new Promise<void>((resolve) => (release = resolve))
      r.mock.enqueue({ type: "ok", chunks: ["a", " b", " c", " d", " e"], holdAfter: 1, release: released })
      const id = rid("drain")
      const stream = await r.client.chat.completions.create(
        { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
        { headers: { "X-Request-Id": id } }
      )
      const iterator = stream[Symbol.asyncIterator]()
      await iterator.next()
      // shut down while the stream is in flight; the server drains it first
      const closing = Effect.runPromise(Scope.close(r.scope, Exit.void))
      release()
      let text = ""
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
        text += next.value.choices[0]?.delta?.content ?? ""
      }
      await closing
      expect(text).toBe("a b c d e")
      // settled (not left pending) before the server released the database
      const [h, entries] = await r.offline(Effect.all([
        Effect.flatMap(BillingSession.BillingSession, (s) => s.get(holdIdOf(r.accountId, id))),
        Effect.flatMap(RelayStore.RelayStore, (s) => s.logs({ accountId: r.accountId }))
      ]))
      expect(h.status).toBe("settled")
      expect(h.settlement?.actual).toBe(A)
      expect(entries.map((e) => [e.requestId, e.quota])).toEqual([[id, A]])
    } finally {
      await r.close()
    }
  })
})
