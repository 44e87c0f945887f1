/**
 * Issue 9 #7 end to end: a hung upstream (headers then silence, or a stream
 * that stalls after two chunks) no longer waits forever. The relay runs under
 * a TestClock with `limits.upstreamIdleSeconds` 30; each test waits for the
 * mock to reach the hang (event-driven), then moves the clock. The `openai`
 * client is the client; money is checked through the admin API.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import * as Tokenizer from "../src/Tokenizer.js"
import {
  actualOf,
  estimateOf,
  MESSAGES,
  MODEL,
  PROMPT_ESTIMATE,
  type Relay,
  rid,
  startRelay,
  until
} from "./support/RelayHarness.js"

const IDLE = 30
const P = estimateOf(PROMPT_ESTIMATE, 10)
const A = actualOf(10, 3) // the mock's default usage

describe("issue 9 #7: a hung upstream is a failed attempt after limits.upstreamIdleSeconds (SQLite, TestClock)", () => {
  let relay: Relay
  beforeAll(async () => {
    relay = await startRelay({
      testClock: true,
      limits: { upstreamIdleSeconds: IDLE },
      billing: { reapIntervalSeconds: 3600 }
    })
  }, 60_000)
  afterAll(() => relay?.close())
  beforeEach(() => {
    relay.mockA.reset()
    relay.mockB.reset()
  })

  it("non-stream: channel A sends headers then nothing → retried on B → 200, billed once", async () => {
    const s = await relay.setup(1000)
    relay.mockA.enqueue({ type: "stallAfterHeaders" })
    const id = rid("idle-json")
    const pending = s.client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 10 },
      { headers: { "X-Request-Id": id } }
    )
    await until(() => relay.mockA.requests[0]?.headersSent === true)
    expect(relay.mockB.requests).toHaveLength(0)
    await relay.advance(IDLE)
    const completion = await pending
    expect(completion.choices[0]!.message.content).toBe("Hello from mock")
    await relay.mockA.requests[0]!.finished // the hung attempt was aborted
    expect(relay.mockB.requests).toHaveLength(1)
    expect(await relay.resolved(id)).toMatchObject({ status: "settled", reserved: P, actual: A })
    expect((await relay.admin("GET", `/admin/accounts/${s.accountId}`)).body).toMatchObject({
      quota: 1000 - A,
      usedQuota: A
    })
  })

  it("stream: A sends headers then nothing → retried on B before anything reached the client", async () => {
    const s = await relay.setup(1000)
    relay.mockA.enqueue({ type: "stallAfterHeaders" })
    const id = rid("idle-stream-headers")
    const pending = (async () => {
      const stream = await s.client.chat.completions.create(
        { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
        { headers: { "X-Request-Id": id } }
      )
      let text = ""
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ""
      return text
    })()
    await until(() => relay.mockA.requests[0]?.headersSent === true)
    await relay.advance(IDLE)
    expect(await pending).toBe("Hello from mock")
    expect(relay.mockB.requests).toHaveLength(1)
    expect(await relay.resolved(id)).toMatchObject({ status: "settled", actual: A })
  })

  it("stream: A stalls after two chunks → the stream ends, what was delivered is billed, nothing pending", async () => {
    const s = await relay.setup(1000)
    relay.mockA.enqueue({ type: "ok", chunks: ["Hello", " world", " again", " and", " again"], holdAfter: 2 })
    const id = rid("idle-stream-stall")
    const stream = await s.client.chat.completions.create(
      { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
      { headers: { "X-Request-Id": id } }
    )
    const seen: Array<string> = []
    let ended = false
    const reading = (async () => {
      for await (const chunk of stream) seen.push(chunk.choices[0]?.delta?.content ?? "")
    })().then(() => undefined, (error: unknown) => error).finally(() => void (ended = true))
    await until(() => seen.length === 3) // the role chunk and two deltas
    // The idle time counts while the relay waits on the upstream; move the clock until the stream ends.
    await until(async () => {
      if (!ended) await relay.advance(IDLE)
      return ended
    })
    expect(String(await reading)).toMatch(/upstream stream broke/)
    expect(seen.join("")).toBe("Hello world")
    await relay.mockA.requests[0]!.finished // the stalled upstream request was aborted
    expect(relay.mockB.requests).toHaveLength(0) // committed: never retried
    const expected = Math.min(actualOf(PROMPT_ESTIMATE, Tokenizer.countText("Hello world")), P)
    expect(await relay.resolved(id)).toMatchObject({ status: "settled", reserved: P, actual: expected })
    expect((await relay.admin("GET", `/admin/accounts/${s.accountId}`)).body).toMatchObject({
      quota: 1000 - expected,
      usedQuota: expected
    })
    const logs = (await relay.admin("GET", `/admin/logs?accountId=${s.accountId}`)).body
    expect(logs.map((l: any) => [l.requestId, l.quota])).toEqual([[id, expected]])
  })

  it("nothing is left pending and the ledger is consistent", async () => {
    const audit = await relay.admin("GET", "/admin/audit")
    expect(audit.body).toMatchObject({ ok: true, problems: [] })
  })
})
