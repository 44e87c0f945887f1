/**
 * Issue 9 #8, #9 and #10 end to end, on every TestDatabase target, with the
 * official `openai` client against the relay in-process and a mock upstream:
 *
 * - #9: every settled request has exactly one request-log row, written in the
 *   settlement's transaction: a failure between the settle and the log write
 *   (the log table made unwritable) leaves no settled hold without its row; a
 *   replayed settle writes no second row; A = 0 gets a row;
 * - #8: request ids are scoped to the account: A and B both use id X and are
 *   both billed once; B cannot block A's id; a replay by the same account is
 *   still a 409 that bills nothing; the admin views find a request by id
 *   (with `accountId` when the id is ambiguous);
 * - #10: refused requests (403 insufficient quota, 403 model not allowed, 409
 *   replay) log no ERROR.
 */
import { BillingSession, HoldJournal } from "@relay-billing/core"
import { KnexClient, TestDatabase } from "@relay-billing/knex"
import { Cause, Effect, Exit, Layer, Logger, Scope } from "effect"
import type { Context } from "effect"
import OpenAI from "openai"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { decodeConfig } from "../src/Config.js"
import type { Loaded } from "../src/Config.js"
import * as HttpListener from "../src/HttpListener.js"
import * as Server from "../src/Server.js"
import * as Mock from "./support/MockUpstream.js"

const ADMIN_KEY = "sk-admin-issue9-0123456789"
const MODEL = "gpt-4o-mini"
const MESSAGES = [{ role: "user" as const, content: "Say hello" }]
// pricing of the config below: the mock's usage (10 prompt, 3 completion) costs (10 + 3 × 3) × 2
const A = 38

let seq = 0
const rid = (label: string) => `issue9-${label}-${process.pid}-${++seq}`

/** Every log line of the relay, with its level and cause. */
interface Line {
  readonly level: string
  readonly message: string
  readonly cause: string
}

describe.each(TestDatabase.targets())("issue 9: request logs and request ids on $name", (target) => {
  let scope: Scope.Closeable
  let url: string
  let mock: Mock.MockUpstream
  let context: Context.Context<KnexClient.KnexClient | HoldJournal.HoldJournal | BillingSession.BillingSession>
  const lines: Array<Line> = []

  beforeAll(async () => {
    mock = await Mock.start()
    scope = Effect.runSync(Scope.make())
    const config = await Effect.runPromise(decodeConfig({
      quotaPerUnit: 500000,
      groups: { default: 1 },
      models: { [MODEL]: { modelRatio: 2, completionRatio: 3 }, "other-model": { modelRatio: 1, completionRatio: 1 } },
      channels: [{ name: "A", baseUrl: mock.url, apiKey: "sk-up-a", models: [MODEL, "other-model"], priority: 0 }],
      billing: { minPreConsumeTokens: 20, retries: 0, onClientDisconnect: "charge-prompt", reapIntervalSeconds: 600 }
    }))
    const db = await Effect.runPromise(Scope.provide(TestDatabase.isolated(target), scope))
    const loaded: Loaded = { port: 0, databaseUrl: db.url, adminKey: ADMIN_KEY, configSource: "issue9", config }
    const capture = Logger.make(({ cause, logLevel, message }) => {
      lines.push({
        level: logLevel,
        message: (Array.isArray(message) ? message : [message]).map(String).join(" "),
        cause: cause.reasons.length === 0 ? "" : Cause.pretty(cause)
      })
    })
    const built = await Effect.runPromise(
      Layer.buildWithScope(
        Server.layer(loaded, { port: 0, host: "127.0.0.1", client: db.options }).pipe(
          Layer.provideMerge(Logger.layer([capture]))
        ),
        scope
      )
    )
    context = built
    url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(built)))
  }, 60_000)

  afterAll(async () => {
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
    await mock?.close()
  })

  beforeEach(() => {
    mock.reset()
    lines.length = 0
  })

  const run = <A, E>(
    effect: Effect.Effect<A, E, KnexClient.KnexClient | HoldJournal.HoldJournal | BillingSession.BillingSession>
  ): Promise<A> => Effect.runPromise(Effect.provideContext(effect, context))

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
  const logs = async (accountId: string) =>
    (await admin("GET", `/admin/logs?accountId=${accountId}`)).body as Array<any>

  const setup = async (quota = 10_000, models?: ReadonlyArray<string>, billingPreference?: string) => {
    const acc = await admin("POST", "/admin/accounts", { quota, billingPreference: billingPreference ?? "wallet_only" })
    expect(acc.status).toBe(201)
    const tok = await admin("POST", "/admin/tokens", {
      accountId: acc.body.id,
      unlimited: true,
      ...(models ? { models } : {})
    })
    expect(tok.status).toBe(201)
    const client = new OpenAI({ apiKey: tok.body.key, baseURL: `${url}/v1`, maxRetries: 0, timeout: 20_000 })
    return { accountId: acc.body.id as string, client }
  }

  const chat = (client: OpenAI, id: string) =>
    client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 10 }, {
      headers: { "X-Request-Id": id }
    })

  const chatStream = async (client: OpenAI, id: string) => {
    const stream = await client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
      { headers: { "X-Request-Id": id } }
    )
    let text = ""
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ""
    return text
  }

  /** Every settled hold of the account has exactly one log row (by request id), and no row lacks its hold. */
  const expectOneLogPerSettled = async (accountId: string) => {
    const holds = await run(Effect.flatMap(HoldJournal.HoldJournal, (j) => j.list({ accountId })))
    const settled = holds.filter((h) => h.status === "settled").map((h) => h.metadata?.["requestId"] ?? h.id).sort()
    const rows = (await logs(accountId)).map((r) => r.requestId as string).sort()
    expect(rows).toEqual(settled)
    return { settled: settled.length, holds }
  }

  // ------------------------------------------------------------------ #9

  it("#9: a failure between the settle and its log row leaves no settled request without its row", async () => {
    const s = await setup()
    const ok = rid("before")
    await chat(s.client, ok)
    // The log table cannot be written: the log write of every settle fails.
    const logsTable = await run(Effect.map(KnexClient.KnexClient, (c) => c.table("relay_logs")))
    const knex = await run(Effect.map(KnexClient.KnexClient, (c) => c.knex))
    await knex.schema.renameTable(logsTable, `${logsTable}_off`)
    try {
      const outcomes = await Promise.allSettled([
        chat(s.client, rid("fault-json")),
        chatStream(s.client, rid("fault-stream")),
        s.client.embeddings.create({ model: MODEL, input: "hello" }, { headers: { "X-Request-Id": rid("fault-emb") } })
      ])
      // Whatever the client saw (an error, or an answer whose settle rolled back), the log and the
      // settlement went together (checked below).
      expect(outcomes).toHaveLength(3)
    } finally {
      await knex.schema.renameTable(`${logsTable}_off`, logsTable)
    }
    await chat(s.client, rid("after"))
    const { holds, settled } = await expectOneLogPerSettled(s.accountId)
    expect(settled).toBe(2)
    // the settles that failed were refunded: nothing is pending, the account paid for the two logged requests only
    expect(holds.filter((h) => h.status === "pending")).toHaveLength(0)
    expect(await account(s.accountId)).toMatchObject({ quota: 10_000 - 2 * A, usedQuota: 2 * A, requestCount: 2 })
  })

  it("#9: a replayed settle writes no second row; an A = 0 settlement has its row", async () => {
    const s = await setup()
    const id = rid("replay")
    await chat(s.client, id)
    const hold = (await admin("GET", `/admin/holds/${encodeURIComponent(id)}`)).body
    expect(hold).toMatchObject({ id, status: "settled", actual: A })
    const holdId = (await run(Effect.flatMap(HoldJournal.HoldJournal, (j) =>
      j.list({ accountId: s.accountId }))))[0]!.id
    await run(Effect.flatMap(BillingSession.BillingSession, (b) => b.settle(holdId, A)))
    expect(await logs(s.accountId)).toHaveLength(1)
    // A = 0: the upstream reports no tokens
    mock.enqueue({ type: "ok", usage: { prompt_tokens: 0, completion_tokens: 0 } })
    const zero = rid("zero")
    await chat(s.client, zero)
    const rows = await logs(s.accountId)
    expect(rows).toHaveLength(2)
    expect(rows.find((r) => r.requestId === zero)).toMatchObject({ quota: 0, promptTokens: 0, completionTokens: 0 })
    expect(rows.find((r) => r.requestId === id)).toMatchObject({ quota: A, promptTokens: 10, completionTokens: 3 })
    await expectOneLogPerSettled(s.accountId)
  })

  // ------------------------------------------------------------------ #8

  it("#8: two accounts use the same request id: both are served and billed once; replays still 409", async () => {
    const a = await setup()
    const b = await setup()
    const id = rid("shared")
    await chat(a.client, id)
    expect(await chatStream(b.client, id)).toBe("Hello from mock")
    for (const s of [a, b]) {
      expect(await account(s.accountId)).toMatchObject({ quota: 10_000 - A, usedQuota: A, requestCount: 1 })
      expect((await logs(s.accountId)).map((r) => r.requestId)).toEqual([id])
    }
    // a replay by the same account: 409, no upstream call, nothing billed
    const before = mock.requests.length
    const replay = await chat(b.client, id).then(() => undefined, (e) => e)
    expect(replay).toBeInstanceOf(OpenAI.APIError)
    expect((replay as InstanceType<typeof OpenAI.APIError>).status).toBe(409)
    expect((replay as InstanceType<typeof OpenAI.APIError>).code).toBe("request_id_conflict")
    expect(mock.requests.length).toBe(before)
    expect(await account(b.accountId)).toMatchObject({ quota: 10_000 - A, usedQuota: A, requestCount: 1 })
    // admin: ambiguous without accountId, each account's own with it
    const ambiguous = await admin("GET", `/admin/holds/${encodeURIComponent(id)}`)
    expect(ambiguous.status).toBe(409)
    expect(ambiguous.body.error).toMatchObject({ code: "ambiguous_request_id", field: "accountId" })
    for (const s of [a, b]) {
      const own = await admin("GET", `/admin/holds/${encodeURIComponent(id)}?accountId=${s.accountId}`)
      expect(own.status).toBe(200)
      expect(own.body).toMatchObject({ id, accountId: s.accountId, status: "settled", actual: A })
    }
    const unknown = await admin("GET", `/admin/holds/${encodeURIComponent(id)}?accountId=acc_nobody`)
    expect(unknown.status).toBe(404)
  })

  it("#8: an account cannot block another's next request by claiming its id first", async () => {
    const a = await setup()
    const b = await setup()
    const id = rid("claimed")
    // B takes the id first (and even keeps it in flight)
    let release: () => void = () => undefined
    const gate = new Promise<void>((resolve) => (release = resolve))
    mock.enqueue({ type: "ok", gate })
    const pendingB = chatStream(b.client, id)
    await expect.poll(async () => (await admin("GET", `/admin/holds/${encodeURIComponent(id)}`)).status).toBe(200)
    // A's request with the same id is served and billed
    const answer = await chat(a.client, id)
    expect(answer.choices[0]?.message.content).toBe("Hello from mock")
    release()
    expect(await pendingB).toBe("Hello from mock")
    for (const s of [a, b]) expect(await account(s.accountId)).toMatchObject({ quota: 10_000 - A, requestCount: 1 })
  })

  it("#8: a 191-character request id works per account: billed, logged and refused on replay for each", async () => {
    const a = await setup()
    const b = await setup()
    const id = `L${"x".repeat(180)}${String(++seq).padStart(10, "0")}`
    expect(id).toHaveLength(191)
    await chat(a.client, id)
    await chat(b.client, id)
    for (const s of [a, b]) {
      // (admin paths with ids over 100 characters are the router's limit, issue 9 #6)
      const holds = await run(Effect.flatMap(HoldJournal.HoldJournal, (j) => j.list({ accountId: s.accountId })))
      expect(holds.map((h) => [h.metadata?.["requestId"], h.status, h.settlement?.actual])).toEqual([[
        id,
        "settled",
        A
      ]])
      expect(holds[0]!.id.length).toBeLessThanOrEqual(191)
      expect(await account(s.accountId)).toMatchObject({ quota: 10_000 - A, usedQuota: A, requestCount: 1 })
      expect((await logs(s.accountId)).map((r) => r.requestId)).toEqual([id])
    }
    const replay = await chat(a.client, id).then(() => undefined, (e) => e)
    expect((replay as InstanceType<typeof OpenAI.APIError>).status).toBe(409)
  })

  // ------------------------------------------------------------------ #10

  it("#10: refused requests (403 insufficient quota, 403 model not allowed, 409 replay) log no ERROR", async () => {
    const poor = await setup(1)
    const refused = await chat(poor.client, rid("poor")).then(() => undefined, (e) => e)
    expect((refused as InstanceType<typeof OpenAI.APIError>).status).toBe(403)
    const streamRefused = await chatStream(poor.client, rid("poor-stream")).then(() => undefined, (e) => e)
    expect((streamRefused as InstanceType<typeof OpenAI.APIError>).status).toBe(403)
    // the default preference (subscription first, no subscription, then the wallet)
    const poorDefault = await setup(1, undefined, "subscription_first")
    for (const id of [rid("poor-default"), rid("poor-default-2")]) {
      const e = await chat(poorDefault.client, id).then(() => undefined, (e) => e)
      expect((e as InstanceType<typeof OpenAI.APIError>).status).toBe(403)
    }
    // a client that goes away before its hold is opened (aborted at once)
    const abort = new AbortController()
    const aborted = poorDefault.client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
      { headers: { "X-Request-Id": rid("abort") }, signal: abort.signal }
    ).then(() => undefined, (e) => e)
    abort.abort()
    await aborted
    const limited = await setup(10_000, ["other-model"])
    const notAllowed = await chat(limited.client, rid("model")).then(() => undefined, (e) => e)
    expect((notAllowed as InstanceType<typeof OpenAI.APIError>).status).toBe(403)
    const rich = await setup()
    const id = rid("dup")
    await chat(rich.client, id)
    const replay = await chat(rich.client, id).then(() => undefined, (e) => e)
    expect((replay as InstanceType<typeof OpenAI.APIError>).status).toBe(409)
    // the server's own work after a refusal ends with its response; give the aborted one a completed request after it
    await chat(rich.client, rid("last"))
    const errors = lines.filter((l) => l.level === "Error" || l.level === "Fatal")
    expect(errors).toEqual([])
  })
})
