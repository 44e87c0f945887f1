import type { Duration } from "effect"
import { Effect, Exit, Fiber, Layer, Stream } from "effect"
import { TestClock } from "effect/testing"
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest"
import type { Channel } from "../src/Config.js"
import * as Upstream from "../src/Upstream.js"
import * as MockUpstream from "./support/MockUpstream.js"

const decoder = new TextDecoder()

let mock: MockUpstream.MockUpstream
beforeAll(async () => {
  mock = await MockUpstream.start()
})
afterAll(() => mock.close())
beforeEach(() => mock.reset())

const channel = (overrides: Partial<Channel> = {}): Channel => ({
  name: "primary",
  baseUrl: mock.url,
  apiKey: "sk-up",
  models: ["gpt-4o-mini"],
  priority: 0,
  ...overrides
})

const run = <A, E>(effect: Effect.Effect<A, E, Upstream.Upstream>, options: Upstream.Options = {}) =>
  Effect.runPromise(effect.pipe(Effect.provide(Upstream.layerFetch(options))))

const runExit = <A, E>(effect: Effect.Effect<A, E, Upstream.Upstream>, options: Upstream.Options = {}) =>
  Effect.runPromise(Effect.exit(effect).pipe(Effect.provide(Upstream.layerFetch(options))))

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const found = exit.cause.reasons.find((r) => r._tag === "Fail")
  if (found === undefined || found._tag !== "Fail") {
    throw new Error(`expected a typed failure, got ${String(exit.cause)}`)
  }
  return found.error
}

const chatBody = { model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }

describe("Upstream (against the mock over loopback)", () => {
  it("non-stream chat: parsed JSON and usage; bearer key; stream false; stream_options dropped", async () => {
    const result = await run(
      Effect.flatMap(
        Upstream.Upstream,
        (u) =>
          u.chat(channel(), { ...chatBody, stream: true, stream_options: { include_usage: true } }, { stream: false })
      )
    )
    expect(result.channel).toBe("primary")
    expect(result.status).toBe(200)
    expect((result.body as any).choices[0].message.content).toBe("Hello from mock")
    expect(result.usage).toEqual({ prompt_tokens: 10, completion_tokens: 3, total_tokens: 13 })
    expect(mock.requests).toHaveLength(1)
    const sent = mock.requests[0]!
    expect(sent.method).toBe("POST")
    expect(sent.path).toBe("/v1/chat/completions")
    expect(sent.headers.authorization).toBe("Bearer sk-up")
    expect(sent.headers["content-type"]).toContain("application/json")
    expect(sent.body).toEqual({ ...chatBody, stream: false })
  })

  it("non-stream chat without usage gives usage undefined; a channel without apiKey sends no Authorization", async () => {
    mock.enqueue({ type: "ok", omitUsage: true, chunks: ["x"] })
    const result = await run(
      Effect.flatMap(Upstream.Upstream, (u) => u.chat(channel({ apiKey: "" }), chatBody, { stream: false }))
    )
    expect(result.usage).toBeUndefined()
    expect(mock.requests[0]!.headers.authorization).toBeUndefined()
  })

  it("stream: events in order, each passed through byte for byte, the first one before the upstream finished", async () => {
    // The mock pauses after "One" until the consumer has seen the first event.
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    mock.enqueue({
      type: "ok",
      chunks: ["One", " two", " three"],
      holdAfter: 1,
      release: released,
      usage: { prompt_tokens: 21, completion_tokens: 4 }
    })
    const seen: Array<{ data: string | undefined; upstreamDone: boolean; usageOnly: boolean }> = []
    const bytes: Array<Uint8Array> = []
    const { state } = await run(
      Effect.gen(function*() {
        const u = yield* Upstream.Upstream
        const stream = yield* u.chat(channel(), chatBody, { stream: true })
        yield* Stream.runForEach(stream.events, (event) =>
          Effect.sync(() => {
            bytes.push(event.bytes)
            seen.push({ data: event.data, upstreamDone: mock.requests[0]!.completed, usageOnly: event.usageOnly })
            release()
          }))
        return { state: yield* stream.state }
      })
    )
    // the first event reached the consumer while the mock was still streaming (it was
    // paused until then), the last one after the mock had gone on
    expect(seen[0]!.upstreamDone).toBe(false)
    // order: role chunk, three deltas, the stop chunk, the usage chunk, [DONE]
    const parsed = seen.map((e) => (e.data === "[DONE]" ? "[DONE]" : JSON.parse(e.data!)))
    expect(parsed).toHaveLength(7)
    expect(parsed[0].choices[0].delta).toEqual({ role: "assistant", content: "" })
    expect(parsed.slice(1, 4).map((c: any) => c.choices[0].delta.content)).toEqual(["One", " two", " three"])
    expect(parsed[4].choices[0].finish_reason).toBe("stop")
    expect(parsed[5].choices).toEqual([])
    expect(seen.map((e) => e.usageOnly)).toEqual([false, false, false, false, false, true, false])
    expect(parsed[6]).toBe("[DONE]")
    // byte for byte what the upstream sent
    expect(bytes.map((b) => decoder.decode(b)).join("")).toBe(mock.requests[0]!.sent)
    expect(state).toMatchObject({
      status: "done",
      usage: { prompt_tokens: 21, completion_tokens: 4, total_tokens: 25 },
      text: "One two three",
      events: 7,
      error: undefined
    })
  })

  it("stream: include_usage forced on the upstream request even when the client did not ask (other options kept)", async () => {
    await run(
      Effect.gen(function*() {
        const u = yield* Upstream.Upstream
        const a = yield* u.chat(channel(), chatBody, { stream: true })
        yield* Stream.runDrain(a.events)
        const b = yield* u.chat(channel(), { ...chatBody, stream_options: { include_usage: false, extra: 1 } }, {
          stream: true
        })
        yield* Stream.runDrain(b.events)
      })
    )
    expect(mock.requests).toHaveLength(2)
    expect(mock.requests[0]!.body).toEqual({ ...chatBody, stream: true, stream_options: { include_usage: true } })
    expect(mock.requests[0]!.headers.authorization).toBe("Bearer sk-up")
    expect(mock.requests[0]!.headers.accept).toBe("text/event-stream")
    expect(mock.requests[1]!.body.stream_options).toEqual({ include_usage: true, extra: 1 })
    // the mock honoured it: a usage chunk came back
    expect(mock.requests[0]!.sent).toContain(`"choices":[],"usage":{"prompt_tokens":10`)
  })

  it("stream: a broken stream (socket destroyed before usage) is reported broken with the text so far", async () => {
    mock.enqueue({ type: "break", afterChunks: 2, chunks: ["Alpha", " beta", " gamma"], delayMs: 20 })
    const received: Array<string | undefined> = []
    const { exit, state } = await run(
      Effect.gen(function*() {
        const u = yield* Upstream.Upstream
        const stream = yield* u.chat(channel(), chatBody, { stream: true })
        const exit = yield* Effect.exit(
          Stream.runForEach(stream.events, (e) => Effect.sync(() => void received.push(e.data)))
        )
        return { exit, state: yield* stream.state }
      })
    )
    const error = failureOf(exit)
    expect(error._tag).toBe("UpstreamConnectionError")
    expect(received).toHaveLength(3) // role chunk + two deltas
    expect(state.status).toBe("broken")
    expect(state.text).toBe("Alpha beta")
    expect(state.usage).toBeUndefined()
    expect(state.error?._tag).toBe("UpstreamConnectionError")
  })

  it("stream: a stream ending without [DONE] is broken (protocol error) but keeps the usage it got", async () => {
    const stream = Upstream.fromSseBody(
      "x",
      200,
      Stream.make(
        new TextEncoder().encode(
          `data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n`
        )
      )
    )
    const exit = await Effect.runPromise(Effect.exit(Stream.runDrain(stream.events)))
    expect(failureOf(exit)._tag).toBe("UpstreamProtocolError")
    const state = await Effect.runPromise(stream.state)
    expect(state).toMatchObject({
      status: "broken",
      text: "hi",
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }
    })
  })

  it("HTTP errors: 500, 502, 429 and 400 become UpstreamHttpError with status and OpenAI body", async () => {
    for (const status of [500, 502, 429, 400]) {
      mock.enqueue({ type: "error", status, message: `boom ${status}` })
      const exit = await runExit(
        Effect.flatMap(Upstream.Upstream, (u) => u.chat(channel(), chatBody, { stream: false }))
      )
      const error = failureOf(exit)
      expect(error._tag).toBe("UpstreamHttpError")
      if (error._tag !== "UpstreamHttpError") return
      expect(error.status).toBe(status)
      expect(error.retryable).toBe(status >= 500)
      expect(JSON.parse(error.body).error.message).toBe(`boom ${status}`)
    }
    // a stream request that gets a 500 fails before any stream exists
    mock.enqueue({ type: "error", status: 503 })
    const exit = await runExit(Effect.flatMap(Upstream.Upstream, (u) => u.chat(channel(), chatBody, { stream: true })))
    const error = failureOf(exit)
    expect(error._tag === "UpstreamHttpError" && error.status).toBe(503)
  })

  it("connection errors: reset and refused become UpstreamConnectionError", async () => {
    mock.enqueue({ type: "reset" })
    const reset = failureOf(
      await runExit(Effect.flatMap(Upstream.Upstream, (u) => u.chat(channel(), chatBody, { stream: false })))
    )
    expect(reset._tag).toBe("UpstreamConnectionError")

    const refusedUrl = await MockUpstream.refusedUrl()
    const refused = failureOf(
      await runExit(
        Effect.flatMap(Upstream.Upstream, (u) => u.chat(channel({ baseUrl: refusedUrl }), chatBody, { stream: true }))
      )
    )
    expect(refused._tag).toBe("UpstreamConnectionError")
    expect(refused.message).toMatch(/ECONNREFUSED/)
  })

  describe("idle upstream (limits.upstreamIdleSeconds, on the TestClock)", () => {
    /**
     * Starts `call` with a TestClock, waits until the mock has done what the
     * test is about (`ready`), then moves the clock by the idle limit once.
     */
    const idleExit = <A>(
      call: (u: Upstream.Service) => Effect.Effect<A, Upstream.UpstreamError>,
      ready: () => boolean,
      options: { readonly advance?: Duration.Input; readonly before?: Duration.Input } = {}
    ) =>
      Effect.runPromise(
        Effect.gen(function*() {
          const u = yield* Upstream.Upstream
          const fiber = yield* Effect.forkChild(Effect.exit(call(u)))
          yield* Effect.promise(() => until(ready))
          if (options.before !== undefined) {
            yield* TestClock.adjust(options.before)
            expect(fiber.pollUnsafe()).toBeUndefined()
          }
          yield* TestClock.adjust(options.advance ?? "60 seconds")
          return yield* Fiber.join(fiber)
        }).pipe(Effect.provide(Layer.merge(Upstream.layerFetch({ idleTimeout: "60 seconds" }), TestClock.layer())))
      )
    /** Event-driven wait on the mock's state (bounded by the test's timeout). */
    const until = async (cond: () => boolean) => {
      while (!cond()) await new Promise((r) => setTimeout(r, 5)) // a poll interval, not a wait for time to pass
    }
    const last = () => mock.requests.at(-1)

    it("no headers at all: an UpstreamConnectionError after the idle limit, and the request is aborted", async () => {
      mock.enqueue({ type: "hang" })
      const exit = await idleExit((u) => u.chat(channel(), chatBody, { stream: false }), () => last() !== undefined, {
        before: "59 seconds",
        advance: "1 second"
      })
      const error = failureOf(exit)
      expect(error._tag).toBe("UpstreamConnectionError")
      expect(error.message).toMatch(/idle: the upstream sent nothing for 1m/)
      await last()!.finished // the hung request was aborted by the client
    })

    it("headers then silence (non-stream, also after part of the body): idle error, request aborted", async () => {
      for (
        const behavior of [{ type: "stallAfterHeaders" }, {
          type: "stallAfterHeaders",
          bodyPrefix: "{\"id\":"
        }] as const
      ) {
        mock.reset()
        mock.enqueue(behavior)
        const exit = await idleExit(
          (u) => u.chat(channel(), chatBody, { stream: false }),
          () => last()?.headersSent === true
        )
        expect(failureOf(exit).message).toMatch(/idle/)
        await last()!.finished
      }
    })

    it("headers then silence (stream, embeddings): idle error before any event", async () => {
      mock.enqueue({ type: "stallAfterHeaders" })
      const stream = await idleExit(
        (u) => Effect.flatMap(u.chat(channel(), chatBody, { stream: true }), (s) => Stream.runDrain(s.events)),
        () => last()?.headersSent === true
      )
      expect(failureOf(stream).message).toMatch(/idle/)
      await last()!.finished
      mock.enqueue({ type: "stallAfterHeaders" })
      const embeddings = await idleExit(
        (u) => u.embeddings(channel(), { model: "text-embedding-3-small", input: "x" }),
        () => last()?.headersSent === true
      )
      expect(failureOf(embeddings).message).toMatch(/idle/)
    })

    it("a stream stalling after two chunks breaks with the text so far (idle error), the request aborted", async () => {
      mock.enqueue({ type: "ok", chunks: ["Alpha", " beta", " gamma"], holdAfter: 2 })
      const received: Array<string | undefined> = []
      const exit = await idleExit(
        (u) =>
          Effect.flatMap(
            u.chat(channel(), chatBody, { stream: true }),
            (s) =>
              Effect.exit(Stream.runForEach(s.events, (e) => Effect.sync(() => void received.push(e.data)))).pipe(
                Effect.flatMap((exit) => Effect.map(s.state, (state) => ({ exit, state })))
              )
          ),
        () => received.length === 3 // the role chunk and two deltas
      )
      if (Exit.isFailure(exit)) throw new Error("expected the stream's own exit")
      const { exit: run, state } = exit.value
      expect(failureOf(run).message).toMatch(/idle/)
      expect(state).toMatchObject({ status: "broken", text: "Alpha beta", usage: undefined })
      await last()!.finished
      expect(last()!.sent).not.toContain("gamma")
    })

    it("a slow consumer is not an idle upstream: only time waiting on the upstream counts", async () => {
      mock.enqueue({ type: "ok", chunks: ["a", " b"] })
      const exit = await Effect.runPromise(
        Effect.gen(function*() {
          const u = yield* Upstream.Upstream
          const s = yield* u.chat(channel(), chatBody, { stream: true })
          // the whole answer arrives while nobody reads; then the consumer waits 10 minutes per event
          yield* Effect.promise(() => last()!.finished)
          const reader = yield* Effect.forkChild(
            Effect.exit(Stream.runForEach(s.events, () => Effect.sleep("10 minutes")))
          )
          for (let i = 0; i < 8; i++) yield* TestClock.adjust("10 minutes")
          return yield* Fiber.join(reader)
        }).pipe(Effect.provide(Layer.merge(Upstream.layerFetch({ idleTimeout: "60 seconds" }), TestClock.layer())))
      )
      expect(Exit.isSuccess(exit)).toBe(true)
    })
  })

  it("a 200 whose body is not JSON is an UpstreamProtocolError", async () => {
    mock.enqueue({ type: "garbage" })
    const error = failureOf(
      await runExit(Effect.flatMap(Upstream.Upstream, (u) => u.chat(channel(), chatBody, { stream: false })))
    )
    expect(error._tag).toBe("UpstreamProtocolError")
  })

  it("embeddings: POST /embeddings with the key; usage.prompt_tokens parsed", async () => {
    mock.enqueue({ type: "ok", usage: { prompt_tokens: 7, completion_tokens: 0 } })
    const body = { model: "text-embedding-3-small", input: ["a", "b"] }
    const result = await run(Effect.flatMap(Upstream.Upstream, (u) => u.embeddings(channel(), body)))
    expect(result.usage).toEqual({ prompt_tokens: 7, completion_tokens: 0, total_tokens: 7 })
    expect((result.body as any).data).toHaveLength(2)
    expect(mock.requests[0]!.path).toBe("/v1/embeddings")
    expect(mock.requests[0]!.headers.authorization).toBe("Bearer sk-up")
    expect(mock.requests[0]!.body).toEqual(body)
  })

  it("the mock lists its models on GET /v1/models", async () => {
    const response = await fetch(`${mock.url}/models`)
    expect(await response.json()).toMatchObject({
      object: "list",
      data: [{ id: "gpt-4o-mini" }, { id: "text-embedding-3-small" }]
    })
  })

  it("chatBody and parseUsage", () => {
    expect(Upstream.chatBody({ a: 1, stream_options: { x: 1 } }, false)).toEqual({ a: 1, stream: false })
    expect(Upstream.chatBody({ a: 1, stream_options: null }, true)).toEqual({
      a: 1,
      stream: true,
      stream_options: { include_usage: true }
    })
    expect(Upstream.parseUsage(null)).toBeUndefined()
    expect(Upstream.parseUsage({ prompt_tokens: -1 })).toBeUndefined()
    expect(Upstream.parseUsage({ prompt_tokens: 3, completion_tokens: 2 })).toEqual({
      prompt_tokens: 3,
      completion_tokens: 2,
      total_tokens: 5
    })
  })
})
