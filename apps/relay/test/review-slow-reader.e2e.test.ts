/**
 * Review of issue 9 (adversarial): `limits.clientIdleSeconds` is "a client that
 * reads nothing for that long" (relay-api.md). A non-stream answer larger than
 * the socket buffers, read steadily by a slow client (16 MB in every
 * 30 s window, never 45 s without reading), must be delivered whole and
 * settled in full — not cut off as idle and billed by `onClientDisconnect`
 * (the prompt part only, though the client already received most of it).
 * Under a TestClock: the client reads a step, then the clock moves 30 s.
 *
 * And `limits.maxRequestSeconds` still bounds such a request: a slow reader
 * still reading at the deadline is cut off there and billed by
 * `onClientDisconnect` (it did not receive the whole answer).
 */
import * as Net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  actualOf,
  MESSAGES,
  MODEL,
  PROMPT_ESTIMATE,
  PROMPT_PART,
  type Relay,
  rid,
  startRelay,
  until
} from "./support/RelayHarness.js"

const CLIENT_IDLE = 45
/**
 * What the client reads between two clock moves: more than the socket buffers
 * hold (about 10 MB were seen on loopback), so the relay wrote during each step.
 */
const STEP = 16 * 1024 * 1024
const COMPLETION = 7
const MAX_REQUEST = 60

/** Sends a non-stream chat request of ~60 MB answer and reads it STEP by STEP, moving the clock 30 s after each. */
const slowRead = async (relay: Relay, label: string) => {
  const s = await relay.setup(100_000)
  // ~60 MB of content in one JSON answer
  const piece = "y ".repeat(1536 * 1024)
  relay.mockA.enqueue({
    type: "ok",
    chunks: Array.from({ length: 20 }, () => piece),
    usage: { prompt_tokens: PROMPT_ESTIMATE, completion_tokens: COMPLETION }
  })
  const id = rid(label)
  const port = Number(new URL(relay.url).port)
  const body = JSON.stringify({ model: MODEL, messages: MESSAGES, max_tokens: 10 })
  const socket = Net.connect({ host: "127.0.0.1", port })
  let received = 0
  let closed = false
  socket.on("data", (chunk: Buffer) => (received += chunk.length))
  socket.on("close", () => (closed = true))
  socket.on("error", () => undefined)
  socket.pause()
  socket.write(
    `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${s.key}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Request-Id: ${id}\r\n` +
      `Connection: close\r\n\r\n${body}`
  )
  await until(() => relay.mockA.requests.length === 1)
  let target = 0
  let steps = 0
  while (!closed) {
    target += STEP
    socket.resume()
    await until(() => closed || received >= target)
    socket.pause()
    if (closed) break
    steps += 1
    // the client read STEP bytes in this window: 30 s pass (less than clientIdleSeconds)
    await relay.advance(30)
  }
  const hold = await relay.resolved(id)
  return { steps, received, status: hold.status, actual: hold.actual }
}

describe("review: a slow but steady reader of a large non-stream answer (SQLite, TestClock)", () => {
  let relay: Relay
  beforeAll(async () => {
    relay = await startRelay({
      testClock: true,
      limits: { upstreamIdleSeconds: 3600, maxRequestSeconds: 3600, clientIdleSeconds: CLIENT_IDLE },
      billing: { reapIntervalSeconds: 86_400, holdTtlSeconds: 86_400 }
    })
  }, 60_000)
  afterAll(() => relay?.close())

  it("is never cut off as idle and is billed the full answer", async () => {
    const summary = await slowRead(relay, "slow-reader")
    // 60 MB read in 16 MB steps, the clock moved 30 s after each: the whole answer arrived,
    // billed in full
    expect(summary).toEqual({
      steps: summary.steps,
      received: summary.received,
      status: "settled",
      actual: actualOf(PROMPT_ESTIMATE, COMPLETION)
    })
    expect(summary.steps).toBeGreaterThanOrEqual(3)
    expect(summary.received).toBeGreaterThan(60 * 1024 * 1024)
  }, 120_000)
})

describe("review: limits.maxRequestSeconds bounds the delivery of a non-stream answer (SQLite, TestClock)", () => {
  let relay: Relay
  beforeAll(async () => {
    relay = await startRelay({
      testClock: true,
      limits: { upstreamIdleSeconds: 3600, maxRequestSeconds: MAX_REQUEST, clientIdleSeconds: CLIENT_IDLE },
      billing: { reapIntervalSeconds: 86_400, holdTtlSeconds: 86_400 }
    })
  }, 60_000)
  afterAll(() => relay?.close())

  it("a slow reader still reading at the deadline is cut off there and billed by onClientDisconnect", async () => {
    const summary = await slowRead(relay, "slow-deadline")
    // cut off at the 2nd clock move (60 s), long before the ~60 MB arrived
    expect(summary).toEqual({ steps: 2, received: summary.received, status: "settled", actual: PROMPT_PART })
    expect(summary.received).toBeLessThan(60 * 1024 * 1024)
  }, 120_000)
})
