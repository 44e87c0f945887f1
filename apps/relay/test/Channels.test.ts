import { Effect, Exit, Stream } from "effect"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import * as Channels from "../src/Channels.js"
import type { Channel } from "../src/Config.js"
import * as Upstream from "../src/Upstream.js"
import * as MockUpstream from "./support/MockUpstream.js"

let mock: MockUpstream.MockUpstream
let refused: string
beforeAll(async () => {
  mock = await MockUpstream.start()
  refused = await MockUpstream.refusedUrl()
})
afterAll(() => mock.close())
beforeEach(() => mock.reset())

const MODEL = "gpt-4o-mini"
const body = { model: MODEL, messages: [{ role: "user", content: "hi" }] }

/** A channel on the mock whose api key names it, so the recorded Authorization tells which channel was called. */
const ch = (name: string, priority = 0, overrides: Partial<Channel> = {}): Channel => ({
  name,
  baseUrl: mock.url,
  apiKey: `sk-${name}`,
  models: [MODEL],
  priority,
  ...overrides
})

const called = () => mock.requests.map((r) => String(r.headers.authorization).replace("Bearer sk-", ""))

const runExit = <A, E>(effect: Effect.Effect<A, E, Upstream.Upstream>) =>
  Effect.runPromise(Effect.exit(effect).pipe(Effect.provide(Upstream.layerFetch())))

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const found = exit.cause.reasons.find((r) => r._tag === "Fail")
  if (found === undefined || found._tag !== "Fail") {
    throw new Error(`expected a typed failure, got ${String(exit.cause)}`)
  }
  return found.error
}
const successOf = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (Exit.isFailure(exit)) throw new Error(`expected a success, got ${String(exit.cause)}`)
  return exit.value
}

describe("Channels: selection", () => {
  it("candidates: serving the model, ascending priority, ties in config order", () => {
    const channels = [
      ch("c", 1),
      ch("a", 0),
      ch("other", -5, { models: ["x"] }),
      ch("b", 0),
      ch("z", -1)
    ]
    expect(Channels.candidates(channels, MODEL).map((c) => c.name)).toEqual(["z", "a", "b", "c"])
    expect(Channels.plan({ channels, retries: 1 }, MODEL).map((c) => c.name)).toEqual(["z", "a"])
    expect(Channels.plan({ channels, retries: 0 }, MODEL).map((c) => c.name)).toEqual(["z"])
    expect(Channels.candidates(channels, "nope")).toEqual([])
  })
})

describe("Channels: retries (against the mock)", () => {
  it("a 500 on channel A is retried on channel B (priority order, ties in config order)", async () => {
    mock.enqueue({ type: "error", status: 500 }, { type: "ok", chunks: ["from B"] })
    const routing = { channels: [ch("C", 1), ch("A", 0), ch("B", 0)], retries: 2 }
    const routed = successOf(await runExit(Channels.chat(routing, MODEL, body)))
    expect(called()).toEqual(["A", "B"])
    expect(routed.channel).toBe("B")
    expect((routed.value.body as any).choices[0].message.content).toBe("from B")
    expect(routed.value.usage?.prompt_tokens).toBe(10)
    expect(routed.failed).toMatchObject([{ channel: "A", error: "UpstreamHttpError", status: 500 }])
  })

  it("a connection error (reset) is retried on the next channel", async () => {
    mock.enqueue({ type: "reset" }, { type: "ok" })
    const routed = successOf(
      await runExit(Channels.chat({ channels: [ch("A"), ch("B")], retries: 2 }, MODEL, body))
    )
    expect(called()).toEqual(["A", "B"])
    expect(routed.failed).toMatchObject([{ channel: "A", error: "UpstreamConnectionError" }])
  })

  it("a 4xx is never retried: returned as is", async () => {
    for (const status of [400, 429]) {
      mock.reset()
      mock.enqueue({ type: "error", status, code: `code_${status}` })
      const error = failureOf(
        await runExit(Channels.chat({ channels: [ch("A"), ch("B"), ch("C")], retries: 2 }, MODEL, body))
      )
      expect(called()).toEqual(["A"])
      expect(error._tag).toBe("UpstreamHttpError")
      if (error._tag !== "UpstreamHttpError") return
      expect(error.status).toBe(status)
      expect(JSON.parse(error.body).error.code).toBe(`code_${status}`)
    }
  })

  it("retries are bounded by `retries` (at most retries + 1 channels, each once)", async () => {
    mock.setDefault({ type: "error", status: 500 })
    const channels = [ch("A"), ch("B"), ch("C"), ch("D")]
    const error = failureOf(await runExit(Channels.chat({ channels, retries: 2 }, MODEL, body)))
    expect(called()).toEqual(["A", "B", "C"])
    expect(error._tag).toBe("AllChannelsFailed")
    if (error._tag !== "AllChannelsFailed") return
    expect(error.status).toBe(500)
    expect(error.code).toBe("upstream_error")
    expect(error.attempts.map((a) => a.channel)).toEqual(["A", "B", "C"])
    expect(JSON.parse(error.body!).error.type).toBe("server_error")

    mock.reset()
    mock.setDefault({ type: "error", status: 503 })
    const once = failureOf(await runExit(Channels.chat({ channels, retries: 0 }, MODEL, body)))
    expect(called()).toEqual(["A"])
    expect(once._tag === "AllChannelsFailed" && once.status).toBe(503)

    // fewer channels than retries: each channel once, no wrap-around
    mock.reset()
    mock.setDefault({ type: "error", status: 502 })
    failureOf(await runExit(Channels.chat({ channels: [ch("A"), ch("B")], retries: 5 }, MODEL, body)))
    expect(called()).toEqual(["A", "B"])
  })

  it("every channel failing: 502 when none answered (refused), else the last upstream status", async () => {
    const none = failureOf(
      await runExit(
        Channels.chat(
          {
            channels: [ch("A", 0, { baseUrl: refused }), ch("B", 0, { baseUrl: refused })],
            retries: 2
          },
          MODEL,
          body
        )
      )
    )
    expect(none._tag).toBe("AllChannelsFailed")
    if (none._tag !== "AllChannelsFailed") return
    expect(none.status).toBe(502)
    expect(none.body).toBeUndefined()
    expect(none.attempts.map((a) => a.error)).toEqual(["UpstreamConnectionError", "UpstreamConnectionError"])

    // A answers 503, B answers 500, C refuses: the last upstream status is B's 500
    mock.enqueue({ type: "error", status: 503 }, { type: "error", status: 500 })
    const last = failureOf(
      await runExit(
        Channels.chat({ channels: [ch("A"), ch("B"), ch("C", 0, { baseUrl: refused })], retries: 2 }, MODEL, body)
      )
    )
    expect(called()).toEqual(["A", "B"])
    expect(last._tag === "AllChannelsFailed" && last.status).toBe(500)
  })

  it("no channel serving the model: NoChannel", async () => {
    const error = failureOf(await runExit(Channels.chat({ channels: [ch("A")], retries: 2 }, "unknown", body)))
    expect(error._tag).toBe("NoChannel")
    expect(mock.requests).toHaveLength(0)
  })

  it("embeddings are routed the same way", async () => {
    mock.enqueue({ type: "error", status: 502 }, { type: "ok", usage: { prompt_tokens: 4, completion_tokens: 0 } })
    const routed = successOf(
      await runExit(
        Channels.embeddings({ channels: [ch("A"), ch("B")], retries: 1 }, MODEL, { model: MODEL, input: "hi" })
      )
    )
    expect(called()).toEqual(["A", "B"])
    expect(mock.requests.map((r) => r.path)).toEqual(["/v1/embeddings", "/v1/embeddings"])
    expect(routed.value.usage?.prompt_tokens).toBe(4)
  })
})

describe("Channels: stream retries (only before the first byte)", () => {
  const collect = (stream: Upstream.ChatStream) =>
    Effect.gen(function*() {
      const data: Array<string | undefined> = []
      const exit = yield* Effect.exit(
        Stream.runForEach(stream.events, (e) => Effect.sync(() => void data.push(e.data)))
      )
      return { data, exit, state: yield* stream.state }
    })

  it("a 5xx, a reset and a stream dropped before its first event are retried; only the winner is seen", async () => {
    mock.enqueue(
      { type: "error", status: 502 },
      { type: "reset" },
      { type: "dropAfterHeaders" },
      { type: "ok", chunks: ["from", " D"] }
    )
    const channels = [ch("A"), ch("B"), ch("C"), ch("D")]
    const { data, exit, routed, state } = successOf(
      await runExit(
        Effect.gen(function*() {
          const routed = yield* Channels.chatStream({ channels, retries: 3 }, MODEL, body)
          return { routed, ...(yield* collect(routed.value)) }
        })
      )
    )
    expect(called()).toEqual(["A", "B", "C", "D"])
    expect(routed.channel).toBe("D")
    expect(routed.failed.map((a) => [a.channel, a.error])).toEqual([
      ["A", "UpstreamHttpError"],
      ["B", "UpstreamConnectionError"],
      ["C", "UpstreamConnectionError"]
    ])
    expect(Exit.isSuccess(exit)).toBe(true)
    expect(data).toHaveLength(6) // role, 2 deltas, stop, usage, [DONE]
    expect(state).toMatchObject({ status: "done", text: "from D" })
  })

  it("a stream that breaks after its first event is not retried: reported broken with the text so far", async () => {
    mock.enqueue({ type: "break", afterChunks: 1, chunks: ["Hello", " world"] }, { type: "ok" })
    const { data, exit, routed, state } = successOf(
      await runExit(
        Effect.gen(function*() {
          const routed = yield* Channels.chatStream({ channels: [ch("A"), ch("B")], retries: 2 }, MODEL, body)
          return { routed, ...(yield* collect(routed.value)) }
        })
      )
    )
    expect(called()).toEqual(["A"])
    expect(routed.channel).toBe("A")
    expect(data).toHaveLength(2) // role chunk + "Hello"
    expect(failureOf(exit)._tag).toBe("UpstreamConnectionError")
    expect(state).toMatchObject({ status: "broken", text: "Hello", usage: undefined })
  })

  it("a failed first channel then a good one: events from the good one, in order, with usage", async () => {
    mock.enqueue({ type: "error", status: 500 }, { type: "ok", chunks: ["good", " stream"], delayMs: 10 })
    const result = successOf(
      await runExit(
        Effect.gen(function*() {
          const routed = yield* Channels.chatStream({ channels: [ch("A", 0), ch("B", 1)], retries: 1 }, MODEL, body)
          return { routed, ...(yield* collect(routed.value)) }
        })
      )
    )
    expect(called()).toEqual(["A", "B"])
    expect(result.routed.channel).toBe("B")
    expect(Exit.isSuccess(result.exit)).toBe(true)
    expect(result.data.at(-1)).toBe("[DONE]")
    expect(result.data).toHaveLength(6) // role, 2 deltas, stop, usage, [DONE]
    expect(result.state).toMatchObject({ status: "done", text: "good stream", usage: { prompt_tokens: 10 } })
    expect(mock.requests[1]!.body.stream_options).toEqual({ include_usage: true })
  })

  it("a consumer that stops early (client gone) aborts the upstream request", async () => {
    // The upstream sends the role chunk and "a", then nothing until the client goes away.
    mock.enqueue({ type: "ok", chunks: ["a", "b", "c", "d", "e", "f"], holdAfter: 1 })
    const taken = successOf(
      await runExit(
        Effect.gen(function*() {
          const routed = yield* Channels.chatStream({ channels: [ch("A")], retries: 0 }, MODEL, body)
          return yield* Stream.runCollect(Stream.take(routed.value.events, 2))
        })
      )
    )
    expect(taken.map((e) => JSON.parse(e.data!).choices[0].delta.content)).toEqual(["", "a"])
    // The upstream request ends only when the relay aborts it (the mock never finishes it).
    await mock.requests[0]!.finished
    expect(mock.requests[0]!.sent).not.toContain("[DONE]")
    expect(mock.requests[0]!.sent).not.toContain("\"b\"")
  })

  it("every stream attempt failing before its first byte: AllChannelsFailed (502 when refused)", async () => {
    const error = failureOf(
      await runExit(
        Channels.chatStream(
          { channels: [ch("A", 0, { baseUrl: refused }), ch("B", 0, { baseUrl: refused })], retries: 2 },
          MODEL,
          body
        )
      )
    )
    expect(error._tag === "AllChannelsFailed" && error.status).toBe(502)
  })
})
