import { Effect, Exit, Layer, Stream } from "effect"
import { describe, expect, it } from "vitest"
import * as Channels from "../src/Channels.js"
import * as Config from "../src/Config.js"
import * as DemoResponder from "../src/DemoResponder.js"
import * as DemoUpstream from "../src/DemoUpstream.js"
import * as Tokenizer from "../src/Tokenizer.js"
import * as Upstream from "../src/Upstream.js"

const decoder = new TextDecoder()

const demo: Config.Channel = { name: "demo", baseUrl: Config.DEMO_BASE_URL, apiKey: "", models: ["demo"], priority: 0 }

const messages = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "first question" },
  { role: "assistant", content: "an answer" },
  { role: "user", content: [{ type: "text", text: "What is" }, { type: "image_url" }, { type: "text", text: "2+2?" }] }
]
const body = { model: "demo", messages }
const REPLY = "You said: What is 2+2?"

// The demo channel's own layer over the HTTP client (which it must never use).
const run = <A, E>(effect: Effect.Effect<A, E, Upstream.Upstream>) =>
  Effect.runPromise(effect.pipe(Effect.provide(DemoUpstream.layer.pipe(Layer.provide(Upstream.layerFetch())))))

// A fetch that fails the test if anything touches the network.
const noNetwork = () => {
  const original = globalThis.fetch
  globalThis.fetch = (() => {
    throw new Error("the demo channel must not use the network")
  }) as typeof fetch
  return () => void (globalThis.fetch = original)
}

describe("DemoResponder", () => {
  it("non-stream: echoes the last user message with tokenizer usage, deterministically, through Upstream", async () => {
    const restore = noNetwork()
    try {
      const [a, b] = await run(
        Effect.flatMap(
          Upstream.Upstream,
          (u) => Effect.all([u.chat(demo, body, { stream: false }), u.chat(demo, body, { stream: false })])
        )
      )
      expect(a).toEqual(b)
      const json = a.body as any
      expect(json.object).toBe("chat.completion")
      expect(json.model).toBe("demo")
      expect(json.choices[0].message).toEqual({ role: "assistant", content: REPLY })
      expect(json.choices[0].finish_reason).toBe("stop")
      const prompt = Tokenizer.countMessages(messages as any)
      const completion = Tokenizer.countText(REPLY)
      expect(prompt).toBeGreaterThan(10)
      expect(a.usage).toEqual({
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion
      })
      expect(json.usage).toEqual(a.usage)
    } finally {
      restore()
    }
  })

  it("stream: OpenAI chunk shapes, forced usage chunk, [DONE], same usage as non-stream, same bytes every time", async () => {
    const restore = noNetwork()
    try {
      const once = () =>
        Effect.gen(function*() {
          const u = yield* Upstream.Upstream
          const stream = yield* u.chat(demo, body, { stream: true })
          const events = yield* Stream.runCollect(stream.events)
          return { events, state: yield* stream.state }
        })
      const [first, second, plain] = await run(
        Effect.all([once(), once(), Effect.flatMap(Upstream.Upstream, (u) => u.chat(demo, body, { stream: false }))])
      )
      const text = (r: typeof first) => r.events.map((e) => decoder.decode(e.bytes)).join("")
      expect(text(first)).toBe(text(second))
      const data = first.events.map((e) => e.data!)
      expect(data.at(-1)).toBe("[DONE]")
      const chunks = data.slice(0, -1).map((d) => JSON.parse(d))
      for (const c of chunks) expect(c.object).toBe("chat.completion.chunk")
      expect(chunks[0].choices[0].delta).toEqual({ role: "assistant", content: "" })
      const deltas = chunks.slice(1, -2).map((c: any) => c.choices[0].delta.content)
      expect(deltas).toEqual(["You", " said:", " What", " is", " 2+2?"])
      expect(chunks.at(-2).choices[0].finish_reason).toBe("stop")
      expect(chunks.at(-1).choices).toEqual([])
      expect(first.events.at(-2)!.usageOnly).toBe(true)
      expect(first.state).toMatchObject({ status: "done", text: REPLY, usage: plain.usage })
    } finally {
      restore()
    }
  })

  it("stream without include_usage (called directly): no usage chunk", async () => {
    const events = await Effect.runPromise(DemoResponder.chatEvents({ ...body, stream: true }))
    expect(events.at(-1)).toBe("data: [DONE]\n\n")
    expect(events.some((e) => e.includes(`"choices":[]`))).toBe(false)
    expect(events.every((e) => e.startsWith("data: ") && e.endsWith("\n\n"))).toBe(true)
  })

  it("no user text: the fixed greeting; a bad body: a 400 UpstreamHttpError with an OpenAI error body", async () => {
    const greeting = await Effect.runPromise(DemoResponder.chat({ messages: [{ role: "system", content: "x" }] }))
    expect(greeting.choices[0]!.message.content).toBe(DemoResponder.EMPTY_REPLY)
    const exit = await run(
      Effect.exit(Effect.flatMap(Upstream.Upstream, (u) => u.chat(demo, { model: "demo" }, { stream: true })))
    )
    expect(Exit.isFailure(exit)).toBe(true)
    if (Exit.isSuccess(exit)) return
    const reason = exit.cause.reasons[0]!
    expect(reason._tag).toBe("Fail")
    if (reason._tag !== "Fail") return
    expect(reason.error._tag).toBe("UpstreamHttpError")
    if (reason.error._tag !== "UpstreamHttpError") return
    expect(reason.error.status).toBe(400)
    expect(JSON.parse(reason.error.body).error.code).toBe("invalid_request")
  })

  it("embeddings: deterministic unit vectors, one per input, with tokenizer usage", async () => {
    const input = ["hello world", "other"]
    const [a, b] = await run(
      Effect.flatMap(
        Upstream.Upstream,
        (u) => Effect.all([u.embeddings(demo, { model: "demo", input }), u.embeddings(demo, { model: "demo", input })])
      )
    )
    expect(a).toEqual(b)
    const data = (a.body as any).data
    expect(data).toHaveLength(2)
    expect(data[0].embedding).toHaveLength(DemoResponder.EMBEDDING_DIMENSIONS)
    expect(data[0].embedding).not.toEqual(data[1].embedding)
    const norm = Math.sqrt(data[0].embedding.reduce((s: number, v: number) => s + v * v, 0))
    expect(norm).toBeCloseTo(1, 4)
    expect(a.usage?.prompt_tokens).toBe(Tokenizer.countEmbeddingsInput(input))
  })

  it("the built-in config routes the `demo` model to the demo responder, offline", async () => {
    const restore = noNetwork()
    try {
      const config = await Effect.runPromise(Config.defaultConfig)
      const routed = await run(Channels.chat(Channels.fromConfig(config), "demo", body))
      expect(routed.channel).toBe("demo")
      expect((routed.value.body as any).choices[0].message.content).toBe(REPLY)
    } finally {
      restore()
    }
  })
})
