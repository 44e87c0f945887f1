/**
 * Issue 9 #4 through the relay: a prompt of 200,000 characters without
 * whitespace, and a stream that breaks after 200,000 streamed characters
 * without whitespace (billed by counting what was streamed), are counted with
 * work linear in their size. The work probe (test/support/WorkProbe.ts) throws
 * inside the relay as soon as the BPE work passes a linear budget, so the old
 * quadratic counting fails these requests instead of blocking the process.
 */
import { TestDatabase } from "@relay-billing/knex"
import { Effect, Exit, Layer, Scope } from "effect"
import OpenAI from "openai"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { decodeConfig } from "../src/Config.js"
import type { Loaded } from "../src/Config.js"
import * as HttpListener from "../src/HttpListener.js"
import * as Server from "../src/Server.js"
import * as Tokenizer from "../src/Tokenizer.js"
import * as Mock from "./support/MockUpstream.js"
import * as Probe from "./support/WorkProbe.js"

const ADMIN_KEY = "sk-admin-tokens-0123456789"
const MODEL = "gpt-4o-mini"
const MODEL_RATIO = 2
const COMPLETION_RATIO = 3
const MIN_PRE = 20
/** The largest piece the bounded split can produce, in UTF-8 bytes: the work allowed per input byte. */
const PER_BYTE = (2 * Tokenizer.MAX_RUN_LENGTH + 4) * 4

describe.each(TestDatabase.targets())("token counting through the relay on $name", (target) => {
  let scope: Scope.Closeable
  let mock: Mock.MockUpstream
  let url: string

  beforeAll(async () => {
    mock = await Mock.start()
    scope = Effect.runSync(Scope.make())
    const config = await Effect.runPromise(decodeConfig({
      quotaPerUnit: 500000,
      groups: { default: 1 },
      models: { [MODEL]: { modelRatio: MODEL_RATIO, completionRatio: COMPLETION_RATIO } },
      channels: [{ name: "A", baseUrl: mock.url, apiKey: "sk-up", models: [MODEL], priority: 0 }],
      billing: { minPreConsumeTokens: MIN_PRE, retries: 0, reapIntervalSeconds: 86_400 }
    }))
    const db = await Effect.runPromise(Scope.provide(TestDatabase.isolated(target), scope))
    const loaded: Loaded = { port: 0, databaseUrl: db.url, adminKey: ADMIN_KEY, configSource: "tokens", config }
    const context = await Effect.runPromise(
      Layer.buildWithScope(Server.layer(loaded, { port: 0, host: "127.0.0.1", client: db.options }), scope)
    )
    url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))
  }, 60_000)

  afterAll(async () => {
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
    await mock?.close()
  })

  afterEach(() => Probe.uninstall())

  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${ADMIN_KEY}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {})
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {})
    })
    return { status: response.status, body: await response.json() as any }
  }

  const setup = async () => {
    const account = await admin("POST", "/admin/accounts", { quota: 100_000_000, billingPreference: "wallet_only" })
    const token = await admin("POST", "/admin/tokens", { accountId: account.body.id })
    const client = new OpenAI({ apiKey: token.body.key, baseURL: `${url}/v1`, maxRetries: 0 })
    return { accountId: account.body.id as string, client }
  }

  it("estimates a 200,000-character prompt without whitespace with linear work (x × 40,000 took 4 s)", async () => {
    const { client } = await setup()
    const content = "x".repeat(200_000)
    const messages = [{ role: "user" as const, content }]
    const seen = Probe.install(PER_BYTE * Probe.utf8(content) + 1_000_000)
    const { data, response } = await client.chat.completions
      .create({ model: MODEL, messages, max_tokens: 10 }, {
        headers: { "x-request-id": `tokens-prompt-${Date.now()}` }
      })
      .withResponse()
    Probe.uninstall()
    expect(data.choices[0]?.message.content).toBe("Hello from mock")
    expect(seen.maxPieceBytes).toBeLessThanOrEqual(PER_BYTE)

    // the hold reserved the estimate of the counted prompt: 200,000 x's are 25,000 tokens (8 per token)
    const promptEstimate = Tokenizer.countMessages(messages)
    expect(promptEstimate).toBe(3 + 3 + 1 + 25_000)
    const hold = await admin("GET", `/admin/holds/${response.headers.get("x-request-id")}`)
    expect(hold.body.reserved).toBe(Math.ceil((promptEstimate + 10 * COMPLETION_RATIO) * MODEL_RATIO))
  }, 60_000)

  it("bills a broken stream by counting 200,000 streamed characters without whitespace with linear work", async () => {
    const { accountId, client } = await setup()
    const chunks = Array.from({ length: 4 }, () => "y".repeat(50_000))
    mock.enqueue({ type: "break", afterChunks: 4, chunks })
    const messages = [{ role: "user" as const, content: "stream" }]
    const seen = Probe.install(PER_BYTE * 200_000 + 1_000_000)
    const requestId = `tokens-stream-${Date.now()}`
    const stream = await client.chat.completions.create(
      { model: MODEL, messages, stream: true, max_tokens: 100_000 },
      { headers: { "x-request-id": requestId } }
    )
    let received = ""
    const failure = await (async () => {
      for await (const chunk of stream) received += chunk.choices[0]?.delta.content ?? ""
    })().then(() => undefined, (e) => e)
    expect(failure).toBeInstanceOf(OpenAI.APIError) // the relay's upstream_error trailer
    expect(received).toBe(chunks.join(""))

    // settled with the prompt estimate plus the completion tokens counted from what was streamed
    // the settlement ends with the stream (polled until resolved; bounded by the test's timeout)
    let hold = await admin("GET", `/admin/holds/${requestId}`)
    while (hold.body.status === "pending") hold = await admin("GET", `/admin/holds/${requestId}`)
    Probe.uninstall()
    expect(hold.body.status).toBe("settled")
    const log = (await admin("GET", `/admin/logs?accountId=${accountId}`)).body as Array<any>
    expect(seen.maxPieceBytes).toBeLessThanOrEqual(PER_BYTE)
    const completion = Tokenizer.countText(chunks.join(""))
    expect(log).toHaveLength(1)
    expect(log[0]).toMatchObject({ promptTokens: Tokenizer.countMessages(messages), completionTokens: completion })
    expect(log[0].quota).toBe(
      Math.round((Tokenizer.countMessages(messages) + completion * COMPLETION_RATIO) * MODEL_RATIO)
    )
  }, 60_000)
})
