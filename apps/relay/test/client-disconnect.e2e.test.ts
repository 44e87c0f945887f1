/**
 * Issue 9 #2 end to end: a client disconnect is billed by
 * `onClientDisconnect` (`charge-prompt` here) whatever the load. Load is
 * simulated deterministically: the test blocks the event loop (a synchronous
 * section) right after the clients went away and the upstream answered, so
 * the relay sees both at once, as a busy relay does. The decision must follow
 * what the client received, not which event the loop happens to run first.
 */
import * as Net from "node:net"
import OpenAI from "openai"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
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

/** Blocks the event loop (and with it the whole process: relay, mock and client) for `ms`. */
const blockEventLoop = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
/** One turn of the event loop: lets pending callbacks (socket writes and closes) run. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve))

const N = 8
// The upstream reports the prompt as the relay estimated it, so the prompt part is the same
// whether or not the relay had read the upstream's answer when the client left.
const USAGE = { prompt_tokens: PROMPT_ESTIMATE, completion_tokens: 30 }
const FULL = actualOf(USAGE.prompt_tokens, USAGE.completion_tokens)

describe("issue 9 #2: client disconnects under load (SQLite, charge-prompt)", () => {
  let relay: Relay
  beforeAll(async () => {
    relay = await startRelay({ billing: { onClientDisconnect: "charge-prompt", reapIntervalSeconds: 3600 } })
  }, 60_000)
  afterAll(() => relay?.close())
  beforeEach(() => {
    relay.mockA.reset()
    relay.mockB.reset()
  })

  const chatRequests = () => relay.responses.filter((r) => r.url === "/v1/chat/completions").length

  it("non-stream: clients that abort while the upstream holds the answer pay the prompt part, not the full cost", async () => {
    expect(PROMPT_PART).toBeLessThan(FULL)
    const s = await relay.setup(10_000)
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    relay.mockA.setDefault({ type: "ok", usage: USAGE, gate })
    const ids = Array.from({ length: N }, (_, i) => rid(`abort-json-${i}`))
    const controllers = ids.map(() => new AbortController())
    const calls = ids.map((id, i) =>
      s.client.chat.completions
        .create({ model: MODEL, messages: MESSAGES, max_tokens: 10 }, {
          headers: { "X-Request-Id": id },
          signal: controllers[i]!.signal
        })
        .then(() => "answered", (e: unknown) => (e instanceof OpenAI.APIUserAbortError ? "aborted" : String(e)))
    )
    await until(() => relay.mockA.requests.length === N)
    for (const c of controllers) c.abort()
    release() // the upstream answers now...
    await turn() // ...its bytes and the clients' closes reach the relay's sockets...
    blockEventLoop(100) // ...while the relay is busy: it sees both in the same turn
    expect(await Promise.all(calls)).toEqual(ids.map(() => "aborted"))
    for (const id of ids) {
      expect(await relay.resolved(id)).toMatchObject({ status: "settled", actual: PROMPT_PART })
    }
    expect((await relay.admin("GET", `/admin/accounts/${s.accountId}`)).body).toMatchObject({
      quota: 10_000 - N * PROMPT_PART,
      usedQuota: N * PROMPT_PART
    })
  })

  it("stream: clients that abort before the end of the stream pay the prompt part, also when the end arrives at once", async () => {
    const s = await relay.setup(10_000)
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    // two deltas, then the upstream waits (before its stop chunk, usage and [DONE]) until released
    relay.mockA.setDefault({ type: "ok", chunks: ["Hello", " world"], usage: USAGE, gate })
    const ids = Array.from({ length: N }, (_, i) => rid(`abort-stream-${i}`))
    const controllers = ids.map(() => new AbortController())
    const received = ids.map(() => 0)
    const reads = ids.map(async (id, i) => {
      const stream = await s.client.chat.completions.create(
        { model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true },
        { headers: { "X-Request-Id": id }, signal: controllers[i]!.signal }
      )
      for await (const _chunk of stream) received[i]! += 1
    })
    // the openai client ends the iteration quietly on abort, or throws its abort error
    const outcomes = reads.map((read) =>
      read.then(() => "aborted", (e: unknown) => (e instanceof OpenAI.APIUserAbortError ? "aborted" : String(e)))
    )
    await until(() => received.every((n) => n === 3)) // the role chunk and both deltas
    for (const c of controllers) c.abort()
    release()
    await turn()
    blockEventLoop(100)
    expect(await Promise.all(outcomes)).toEqual(ids.map(() => "aborted"))
    expect(received).toEqual(ids.map(() => 3)) // nothing after the abort
    for (const id of ids) {
      expect(await relay.resolved(id)).toMatchObject({ status: "settled", actual: PROMPT_PART })
    }
    expect((await relay.admin("GET", `/admin/accounts/${s.accountId}`)).body).toMatchObject({
      quota: 10_000 - N * PROMPT_PART,
      usedQuota: N * PROMPT_PART
    })
  })

  it("stream: a client that leaves as soon as it has data: [DONE] received everything and pays in full", async () => {
    const s = await relay.setup(10_000)
    relay.mockA.setDefault({ type: "ok", chunks: ["Hello", " world"], usage: USAGE })
    const ids = Array.from({ length: N }, (_, i) => rid(`done-then-leave-${i}`))
    await Promise.all(ids.map(async (id) => {
      const controller = new AbortController()
      const response = await fetch(`${relay.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${s.key}`, "content-type": "application/json", "x-request-id": id },
        body: JSON.stringify({ model: MODEL, messages: MESSAGES, max_tokens: 10, stream: true }),
        signal: controller.signal
      })
      const reader = response.body!.getReader()
      const decoder = new TextDecoder()
      let text = ""
      while (!text.includes("data: [DONE]")) {
        const { done, value } = await reader.read()
        if (done) break
        text += decoder.decode(value, { stream: true })
      }
      controller.abort() // gone before the relay ended the response
      await reader.cancel().catch(() => undefined)
    }))
    for (const id of ids) {
      expect(await relay.resolved(id)).toMatchObject({ status: "settled", actual: FULL })
    }
  })

  it("a client that aborts before the relay sent its request upstream: nothing reaches the upstream and nothing is charged", async () => {
    const s = await relay.setup(10_000)
    const before = chatRequests()
    const body = JSON.stringify({ model: MODEL, messages: MESSAGES, max_tokens: 10 })
    const ids = Array.from({ length: N }, (_, i) => rid(`abort-early-${i}`))
    const port = Number(new URL(relay.url).port)
    // Connected clients (accepted by the relay) that have sent nothing yet.
    const sockets = await Promise.all(
      ids.map(() =>
        new Promise<Net.Socket>((resolve, reject) => {
          const socket = Net.connect({ host: "127.0.0.1", port }, () => resolve(socket))
          socket.on("error", reject)
        })
      )
    )
    for (const socket of sockets) socket.on("error", () => undefined)
    await turn()
    // Each client sends its whole request and goes away at once; the relay is busy meanwhile.
    sockets.forEach((socket, i) => {
      socket.write(
        `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${s.key}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Request-Id: ${
            ids[i]
          }\r\n\r\n${body}`
      )
      socket.destroy()
    })
    blockEventLoop(100)
    await until(() => chatRequests() === before + N) // every handler has ended
    expect(relay.mockA.requests).toHaveLength(0)
    expect(relay.mockB.requests).toHaveLength(0)
    // A request refused before its hold was opened has none; an opened one was refunded: nothing
    // was sent upstream or delivered, so even charge-prompt charges nothing.
    for (const id of ids) {
      const hold = await relay.admin("GET", `/admin/holds/${encodeURIComponent(id)}`)
      if (hold.status === 404) continue
      expect(hold.body.status).toBe("refunded")
    }
    expect((await relay.admin("GET", `/admin/accounts/${s.accountId}`)).body).toMatchObject({
      quota: 10_000,
      usedQuota: 0
    })
  })

  it("the ledger is consistent afterwards", async () => {
    expect((await relay.admin("GET", "/admin/audit")).body).toMatchObject({ ok: true, problems: [] })
  })
})
