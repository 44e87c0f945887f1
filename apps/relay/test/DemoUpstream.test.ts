/**
 * The demo channel is its own layer: `Upstream` alone speaks only HTTP, and
 * `DemoUpstream.layer` answers `demo:` channels in-process while passing every
 * other channel to the client underneath.
 */
import { Effect, Exit, Layer } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Config from "../src/Config.js"
import * as DemoUpstream from "../src/DemoUpstream.js"
import * as Upstream from "../src/Upstream.js"
import * as MockUpstream from "./support/MockUpstream.js"

let mock: MockUpstream.MockUpstream
beforeAll(async () => {
  mock = await MockUpstream.start()
})
afterAll(() => mock.close())

const demo: Config.Channel = { name: "demo", baseUrl: Config.DEMO_BASE_URL, apiKey: "", models: ["demo"], priority: 0 }
const body = { model: "demo", messages: [{ role: "user", content: "ping" }] }

describe("DemoUpstream", () => {
  it("Upstream alone does not answer a demo channel (it only speaks HTTP)", async () => {
    const exit = await Effect.runPromise(
      Effect.exit(Effect.flatMap(Upstream.Upstream, (u) => u.chat(demo, body, { stream: false }))).pipe(
        Effect.provide(Upstream.layerFetch())
      )
    )
    expect(Exit.isFailure(exit)).toBe(true)
    if (Exit.isSuccess(exit)) return
    const reason = exit.cause.reasons[0]!
    expect(reason._tag === "Fail" && reason.error._tag).toBe("UpstreamConnectionError")
  })

  it("answers the demo channel in-process and passes an HTTP channel to the client underneath", async () => {
    const http: Config.Channel = {
      name: "mock",
      baseUrl: mock.url,
      apiKey: "sk-up",
      models: ["gpt-4o-mini"],
      priority: 0
    }
    const [fromDemo, fromMock, embedded] = await Effect.runPromise(
      Effect.flatMap(Upstream.Upstream, (u) =>
        Effect.all([
          u.chat(demo, body, { stream: false }),
          u.chat(http, { ...body, model: "gpt-4o-mini" }, { stream: false }),
          u.embeddings(http, { model: "text-embedding-3-small", input: "x" })
        ])).pipe(Effect.provide(DemoUpstream.layer.pipe(Layer.provide(Upstream.layerFetch()))))
    )
    expect((fromDemo.body as any).choices[0].message.content).toBe("You said: ping")
    expect(fromDemo.channel).toBe("demo")
    expect((fromMock.body as any).choices[0].message.content).toBe("Hello from mock")
    expect(embedded.channel).toBe("mock")
    expect(mock.requests.map((r) => r.path)).toEqual(["/v1/chat/completions", "/v1/embeddings"])
    expect(DemoUpstream.isDemoChannel(demo)).toBe(true)
    expect(DemoUpstream.isDemoChannel(http)).toBe(false)
  })
})
