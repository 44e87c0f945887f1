/**
 * Issue 9 hole 1: a request that outlives its hold's TTL is never free. With
 * `holdTtlSeconds` 15 and the server's reaper every 5 s, a stream paused for
 * 25 s and a non-stream request whose upstream answers after 25 s are both
 * delivered and billed their full usage: `withBilling` renews the hold's lease
 * while they run, so the reaper never expires it.
 *
 * Time is a `TestClock` provided under the whole server (as in
 * `Reaper.test.ts`): the hold's expiry, the lease renewals and the reaper all
 * read it, so the test moves time instead of sleeping. Each reaper pass and
 * each renewal does real database I/O after the clock wakes it, so every step
 * waits for that pass's and that renewal's own log line, never for a duration.
 * The client is the official `openai` package; the upstream a real HTTP mock.
 *
 * And when a lease does lapse (a hold lives at most 7 days, renewals
 * included), the reaper expires it and the settle that still arrives is
 * charged late (`late_settle`), logged and billed: still never free.
 */
import { KnexClient, TestDatabase } from "@relay-billing/knex"
import { Context, Effect, Exit, Layer, Logger, References, Scope } from "effect"
import { TestClock } from "effect/testing"
import OpenAI from "openai"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { decodeConfig } from "../src/Config.js"
import type { Loaded } from "../src/Config.js"
import * as HttpListener from "../src/HttpListener.js"
import { holdIdOf } from "../src/internal/requestIds.js"
import * as Server from "../src/Server.js"
import * as Mock from "./support/MockUpstream.js"

const ADMIN_KEY = "sk-admin-lease-0123456789"
const MODEL = "gpt-4o-mini"
const TTL_SECONDS = 15
const REAP_SECONDS = 5
/** The mock's usage for these tests, and its cost at modelRatio 1, completionRatio 1. */
const USAGE = { prompt_tokens: 40, completion_tokens: 60 }
const COST = USAGE.prompt_tokens + USAGE.completion_tokens

/** Log lines the test waits on: the reaper's per-pass report and the SDK's lease renewals. */
const logWatch = () => {
  const lines: Array<{ readonly text: string; readonly holdId: unknown }> = []
  const waiting: Array<{ readonly done: () => boolean; readonly resolve: () => void }> = []
  const logger = Logger.make<unknown, void>(({ fiber, message }) => {
    const text = (Array.isArray(message) ? message : [message]).map(String).join(" ")
    if (!text.startsWith("relay: reaper pass") && !text.startsWith("relay-billing: lease renewed")) return
    const annotations = fiber.getRef(References.CurrentLogAnnotations) as Record<string, unknown>
    lines.push({ text, holdId: annotations["holdId"] })
    for (const w of waiting.filter((w) => w.done())) {
      waiting.splice(waiting.indexOf(w), 1)
      w.resolve()
    }
  })
  const count = (prefix: string, holdId?: string) =>
    lines.filter((l) => l.text.startsWith(prefix) && (holdId === undefined || l.holdId === holdId)).length
  return {
    lines,
    layer: Layer.mergeAll(Logger.layer([logger]), Layer.succeed(References.MinimumLogLevel)("Debug")),
    /** Resolves once `n` lines starting with `prefix` (of `holdId`, if given) were logged in total. */
    until: (n: number, prefix: string, holdId?: string) =>
      new Promise<void>((resolve) => {
        const done = () => count(prefix, holdId) >= n
        if (done()) resolve()
        else waiting.push({ done, resolve })
      }),
    passes: () => lines.filter((l) => l.text.startsWith("relay: reaper pass")).map((l) => l.text)
  }
}

describe.each(TestDatabase.targets())("hold leases in the relay on $name (issue 9 hole 1)", (target) => {
  let scope: Scope.Closeable
  let url: string
  let mock: Mock.MockUpstream
  let advance: (seconds: number) => Promise<void>
  const watch = logWatch()
  let passesSoFar = 0

  beforeAll(async () => {
    mock = await Mock.start()
    scope = Effect.runSync(Scope.make())
    const config = await Effect.runPromise(decodeConfig({
      quotaPerUnit: 500000,
      groups: { default: 1 },
      models: { [MODEL]: { modelRatio: 1, completionRatio: 1 } },
      channels: [{ name: "A", baseUrl: mock.url, apiKey: "sk-up-a", models: [MODEL], priority: 0 }],
      billing: { holdTtlSeconds: TTL_SECONDS, reapIntervalSeconds: REAP_SECONDS, minPreConsumeTokens: 10 }
    }))
    const db = await Effect.runPromise(Scope.provide(TestDatabase.isolated(target), scope))
    const loaded: Loaded = { port: 0, databaseUrl: db.url, adminKey: ADMIN_KEY, configSource: "lease", config }
    const context = await Effect.runPromise(
      Layer.buildWithScope(
        Server.layer(loaded, { port: 0, host: "127.0.0.1", client: db.options }).pipe(
          Layer.provideMerge(Layer.mergeAll(TestClock.layer(), watch.layer))
        ),
        scope
      )
    )
    url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))
    advance = (seconds) =>
      Effect.runPromise(TestClock.adjust(`${seconds} seconds`).pipe(Effect.provideContext(context)))
  }, 60_000)

  afterAll(async () => {
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
    await mock?.close()
  })

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

  const setup = async () => {
    const acc = await admin("POST", "/admin/accounts", { quota: 10_000, billingPreference: "wallet_only" })
    expect(acc.status).toBe(201)
    const tok = await admin("POST", "/admin/tokens", { accountId: acc.body.id, remainQuota: 5_000 })
    expect(tok.status).toBe(201)
    const client = new OpenAI({ apiKey: tok.body.key, baseURL: `${url}/v1`, maxRetries: 0, timeout: 20_000 })
    return { accountId: acc.body.id as string, tokenId: tok.body.id as string, client }
  }

  /**
   * Moves the test clock by 25 s in reaper steps of 5 s. After each step it waits for that
   * step's reaper pass and for the hold's renewal due at it (one every TTL/3 = 5 s), so the
   * database I/O each one does has finished before the clock moves again.
   */
  const pause25s = async (holdId: string) => {
    for (let step = 1; step <= 5; step++) {
      await advance(REAP_SECONDS)
      await watch.until(++passesSoFar, "relay: reaper pass")
      await watch.until(step, "relay-billing: lease renewed", holdId)
    }
  }

  /** Resolves once the mock has received `n` requests (event-driven: the mock records each on arrival). */
  const received = async (n: number) => {
    while (mock.requests.length < n) await new Promise((r) => setImmediate(r))
  }

  it("a stream paused for 25 s (TTL 15 s) delivers everything and is billed its full usage", async () => {
    const s = await setup()
    const id = `lease-stream-${process.pid}-${Date.now()}`
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    mock.enqueue({
      type: "ok",
      chunks: ["one", " two", " three", " four"],
      usage: USAGE,
      holdAfter: 2,
      release: released
    })
    const stream = await s.client.chat.completions.create(
      {
        model: MODEL,
        messages: [{ role: "user", content: "count" }],
        max_tokens: 100,
        stream: true,
        stream_options: { include_usage: true }
      },
      { headers: { "X-Request-Id": id } }
    )
    const iterator = stream[Symbol.asyncIterator]()
    let text = ""
    // The role chunk and two deltas arrive; then the stream pauses.
    for (let i = 0; i < 3; i++) text += (await iterator.next()).value?.choices[0]?.delta?.content ?? ""
    expect(text).toBe("one two")
    expect((await admin("GET", `/admin/holds/${id}`)).body).toMatchObject({ status: "pending" })

    await pause25s(holdIdOf(s.accountId, id))
    // Five reaper passes ran past the original expiry (15 s) and expired nothing: the lease was renewed.
    expect(watch.passes().slice(-5)).toEqual(Array(5).fill("relay: reaper pass: examined 0, expired 0"))
    expect((await admin("GET", `/admin/holds/${id}`)).body).toMatchObject({ status: "pending" })

    release()
    let usage: unknown
    for (;;) {
      const next = await iterator.next()
      if (next.done) break
      text += next.value.choices[0]?.delta?.content ?? ""
      if (next.value.usage) usage = next.value.usage
    }
    expect(text).toBe("one two three four")
    expect(usage).toMatchObject(USAGE)
    const hold = (await admin("GET", `/admin/holds/${id}`)).body
    expect(hold).toMatchObject({ status: "settled", actual: COST })
    expect((await admin("GET", `/admin/accounts/${s.accountId}`)).body).toMatchObject({
      quota: 10_000 - COST,
      usedQuota: COST,
      requestCount: 1
    })
    expect((await admin("GET", `/admin/tokens/${s.tokenId}`)).body).toMatchObject({
      remainQuota: 5_000 - COST,
      usedQuota: COST
    })
  }, 60_000)

  it("a non-stream request whose upstream answers after 25 s gets its completion (200) and is billed", async () => {
    const s = await setup()
    const id = `lease-json-${process.pid}-${Date.now()}`
    let open!: () => void
    const gate = new Promise<void>((resolve) => (open = resolve))
    const before = mock.requests.length
    mock.enqueue({ type: "ok", chunks: ["slow", " answer"], usage: USAGE, gate })
    const pending = s.client.chat.completions
      .create({ model: MODEL, messages: [{ role: "user", content: "take your time" }], max_tokens: 100 }, {
        headers: { "X-Request-Id": id }
      })
      .withResponse()
    await received(before + 1)
    await pause25s(holdIdOf(s.accountId, id))
    expect(watch.passes().slice(-5)).toEqual(Array(5).fill("relay: reaper pass: examined 0, expired 0"))
    open()
    const { data, response } = await pending
    expect(response.status).toBe(200)
    expect(data.choices[0]!.message.content).toBe("slow answer")
    const hold = (await admin("GET", `/admin/holds/${id}`)).body
    expect(hold).toMatchObject({ status: "settled", actual: COST })
    expect((await admin("GET", `/admin/accounts/${s.accountId}`)).body).toMatchObject({
      quota: 10_000 - COST,
      usedQuota: COST,
      requestCount: 1
    })
  }, 60_000)
})

describe.each(TestDatabase.targets())("a lapsed lease in the relay on $name: the late settle is billed", (target) => {
  it(
    "a stream whose lease lapsed (its renewals stalled) is expired by the reaper, then charged late in full and logged",
    async () => {
      const mock = await Mock.start()
      const scope = Effect.runSync(Scope.make())
      const watch = logWatch()
      try {
        const config = await Effect.runPromise(decodeConfig({
          quotaPerUnit: 500000,
          groups: { default: 1 },
          models: { [MODEL]: { modelRatio: 1, completionRatio: 1 } },
          channels: [{ name: "A", baseUrl: mock.url, apiKey: "sk-up-a", models: [MODEL], priority: 0 }],
          // the background reaper stays out of the way (the test runs one pass itself)
          billing: { holdTtlSeconds: 15, reapIntervalSeconds: 86_400, minPreConsumeTokens: 10 }
        }))
        const db = await Effect.runPromise(Scope.provide(TestDatabase.isolated(target), scope))
        const loaded: Loaded = { port: 0, databaseUrl: db.url, adminKey: ADMIN_KEY, configSource: "lease-late", config }
        const context = await Effect.runPromise(
          Layer.buildWithScope(
            Server.layer(loaded, { port: 0, host: "127.0.0.1", client: db.options }).pipe(
              Layer.provideMerge(Layer.mergeAll(TestClock.layer(), watch.layer))
            ),
            scope
          )
        )
        const url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))
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
        const acc = await admin("POST", "/admin/accounts", { quota: 10_000, billingPreference: "wallet_only" })
        const tok = await admin("POST", "/admin/tokens", { accountId: acc.body.id, remainQuota: 5_000 })
        const client = new OpenAI({ apiKey: tok.body.key, baseURL: `${url}/v1`, maxRetries: 0, timeout: 20_000 })
        const id = `lease-late-${process.pid}-${Date.now()}`
        let release!: () => void
        const released = new Promise<void>((resolve) => (release = resolve))
        mock.enqueue({
          type: "ok",
          chunks: ["one", " two", " three", " four"],
          usage: USAGE,
          holdAfter: 2,
          release: released
        })
        const stream = await client.chat.completions.create(
          {
            model: MODEL,
            messages: [{ role: "user", content: "count" }],
            max_tokens: 100,
            stream: true,
            stream_options: { include_usage: true }
          },
          { headers: { "X-Request-Id": id } }
        )
        const iterator = stream[Symbol.asyncIterator]()
        let text = ""
        for (let i = 0; i < 3; i++) text += (await iterator.next()).value?.choices[0]?.delta?.content ?? ""
        expect(text).toBe("one two")

        // The holder stalls: its lease lapses without a renewal (a requests's renewals run every
        // TTL/3 while its work runs; here the hold's expiry is moved into the past, as when the
        // process hangs for longer than the TTL), and a reaper pass expires the hold while the
        // stream is still paused.
        const knexClient = Context.get(context, KnexClient.KnexClient)
        const holdId = holdIdOf(acc.body.id, id)
        await knexClient.knex(knexClient.table("holds")).where({ id: holdId, status: "pending" }).update({
          expires_at: 0
        })
        expect((await admin("POST", "/admin/holds/reap")).body).toMatchObject({ expired: 1 })
        expect((await admin("GET", `/admin/holds/${id}`)).body).toMatchObject({ status: "expired" })
        expect((await admin("GET", `/admin/accounts/${acc.body.id}`)).body).toMatchObject({
          quota: 10_000,
          usedQuota: 0
        })

        release()
        for (;;) {
          const next = await iterator.next()
          if (next.done) break
          text += next.value.choices[0]?.delta?.content ?? ""
        }
        expect(text).toBe("one two three four")
        // The settle arrived after the expiry: charged late, in full, on the same wallet and token.
        expect((await admin("GET", `/admin/holds/${id}`)).body).toMatchObject({ status: "expired", actual: COST })
        expect((await admin("GET", `/admin/accounts/${acc.body.id}`)).body).toMatchObject({
          quota: 10_000 - COST,
          usedQuota: COST,
          requestCount: 1
        })
        expect((await admin("GET", `/admin/tokens/${tok.body.id}`)).body).toMatchObject({
          remainQuota: 5_000 - COST,
          usedQuota: COST
        })
        expect((await admin("GET", `/admin/logs?accountId=${acc.body.id}`)).body).toEqual([
          expect.objectContaining({ requestId: id, quota: COST, completionTokens: USAGE.completion_tokens })
        ])
        expect((await admin("GET", "/admin/audit")).body).toMatchObject({ ok: true })
      } finally {
        await Effect.runPromise(Scope.close(scope, Exit.void))
        await mock.close()
      }
    },
    60_000
  )
})
