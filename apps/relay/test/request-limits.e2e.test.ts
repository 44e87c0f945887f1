/**
 * Issue 9, `limits.maxRequestSeconds` and `limits.clientIdleSeconds` end to
 * end, under a TestClock (the relay's timers read it), with real mock
 * upstreams. Each test waits for the mock or the client to reach the point it
 * is about (event-driven), then moves the clock.
 */
import * as Net from "node:net"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import * as Tokenizer from "../src/Tokenizer.js"
import {
  actualOf,
  estimateOf,
  MESSAGES,
  MODEL,
  PROMPT_ESTIMATE,
  PROMPT_PART,
  type Relay,
  rid,
  startRelay,
  until
} from "./support/RelayHarness.js"

const MAX_REQUEST = 120
const CLIENT_IDLE = 45
const P = estimateOf(PROMPT_ESTIMATE, 10)

describe("issue 9: limits.maxRequestSeconds and limits.clientIdleSeconds (SQLite, TestClock)", () => {
  let relay: Relay
  beforeAll(async () => {
    relay = await startRelay({
      testClock: true,
      limits: { upstreamIdleSeconds: 3600, maxRequestSeconds: MAX_REQUEST, clientIdleSeconds: CLIENT_IDLE },
      billing: { reapIntervalSeconds: 86_400, holdTtlSeconds: 86_400 }
    })
  }, 60_000)
  afterAll(() => relay?.close())
  beforeEach(() => {
    relay.mockA.reset()
    relay.mockB.reset()
  })

  it("non-stream: an upstream still silent at maxRequestSeconds → 504 request_timeout, refunded, no other channel", async () => {
    const s = await relay.setup(1000)
    relay.mockA.enqueue({ type: "stallAfterHeaders" })
    const id = rid("max-json")
    const outcome = s.client.chat.completions
      .create({ model: MODEL, messages: MESSAGES, max_tokens: 10 }, { headers: { "X-Request-Id": id } })
      .then(() => undefined, (e: any) => e)
    await until(() => relay.mockA.requests[0]?.headersSent === true)
    await relay.advance(MAX_REQUEST)
    const error = await outcome
    expect(error?.status).toBe(504)
    expect(error?.error).toMatchObject({ code: "request_timeout", type: "upstream_error" })
    await relay.mockA.requests[0]!.finished // the upstream request was aborted
    expect(relay.mockB.requests).toHaveLength(0)
    expect(await relay.resolved(id)).toMatchObject({ status: "refunded", reserved: P })
    expect((await relay.admin("GET", `/admin/accounts/${s.accountId}`)).body).toMatchObject({
      quota: 1000,
      usedQuota: 0
    })
  })

  it("stream: at maxRequestSeconds the stream ends and what was delivered is billed", async () => {
    const s = await relay.setup(1000)
    relay.mockA.enqueue({ type: "ok", chunks: ["Hello", " world", " and", " more"], holdAfter: 2 })
    const id = rid("max-stream")
    const stream = await s.client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
      { headers: { "X-Request-Id": id } }
    )
    const seen: Array<string> = []
    const reading = (async () => {
      for await (const chunk of stream) seen.push(chunk.choices[0]?.delta?.content ?? "")
    })().then(() => undefined, (e: unknown) => e)
    await until(() => seen.length === 3)
    await relay.advance(MAX_REQUEST)
    const error: any = await reading
    expect(error?.error).toMatchObject({ code: "request_timeout", type: "upstream_error" })
    expect(String(error)).toMatch(/limits\.maxRequestSeconds/)
    expect(seen.join("")).toBe("Hello world")
    await relay.mockA.requests[0]!.finished
    const expected = Math.min(actualOf(PROMPT_ESTIMATE, Tokenizer.countText("Hello world")), P)
    expect(await relay.resolved(id)).toMatchObject({ status: "settled", actual: expected })
  })
})

describe("issue 9: limits.clientIdleSeconds (SQLite, TestClock)", () => {
  let relay: Relay
  beforeAll(async () => {
    // no other limit can end the request first, however far the test moves the clock
    relay = await startRelay({
      testClock: true,
      limits: { upstreamIdleSeconds: 86_400, maxRequestSeconds: 86_400, clientIdleSeconds: CLIENT_IDLE },
      billing: { reapIntervalSeconds: 86_400, holdTtlSeconds: 604_800 }
    })
  }, 60_000)
  afterAll(() => relay?.close())

  it("a client that reads nothing for clientIdleSeconds is billed by onClientDisconnect and its upstream released", async () => {
    const s = await relay.setup(1000)
    // far more than the socket buffers hold: the relay's writes block on the client
    const big = "x ".repeat(32 * 1024)
    relay.mockA.enqueue({
      type: "ok",
      chunks: Array.from({ length: 400 }, () => big),
      usage: { prompt_tokens: PROMPT_ESTIMATE, completion_tokens: 1 }
    })
    const id = rid("client-idle")
    const port = Number(new URL(relay.url).port)
    const body = JSON.stringify({ model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true })
    const socket = Net.connect({ host: "127.0.0.1", port })
    socket.on("error", () => undefined)
    socket.pause() // a client that never reads
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${s.key}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${
          Buffer.byteLength(body)
        }\r\nX-Request-Id: ${id}\r\n\r\n${body}`
    )
    await until(() => relay.mockA.requests.length === 1)
    // The idle time counts while the relay waits on the client; move the clock until the relay gave up.
    let hold: any
    await until(async () => {
      hold = (await relay.admin("GET", `/admin/holds/${encodeURIComponent(id)}`)).body
      if (hold?.status === "pending") await relay.advance(CLIENT_IDLE)
      return hold !== undefined && hold.status !== undefined && hold.status !== "pending"
    })
    expect(hold).toMatchObject({ status: "settled", actual: PROMPT_PART })
    await relay.mockA.requests[0]!.finished // the upstream request was released
    expect(relay.mockA.requests[0]!.sent).not.toContain("[DONE]")
    socket.destroy()
  })
})
