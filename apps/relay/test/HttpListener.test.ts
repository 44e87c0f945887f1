import { Cause, Context, Deferred, Effect, Exit, Layer, Schedule, Scope, Stream } from "effect"
import { HttpRouter, HttpServer as EffectHttpServer, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as Http from "node:http"
import { describe, expect, it } from "vitest"
import * as HttpListener from "../src/HttpListener.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/**
 * Serves `routes` on a random loopback port; `close` closes the scope (graceful shutdown).
 * The default drain timeout is far longer than any test: only the test that is about the
 * drain timeout sets a short one.
 */
const start = async (
  routes: Layer.Layer<never, never, HttpRouter.HttpRouter | HttpRouter.Request<"Error", unknown>>,
  drainTimeout = 60_000
) => {
  const scope = Effect.runSync(Scope.make())
  const context = await Effect.runPromise(
    Layer.buildWithScope(
      HttpRouter.serve(routes, { disableLogger: true, disableListenLog: true }).pipe(
        Layer.provideMerge(HttpListener.layer({ port: 0, host: "127.0.0.1", drainTimeout, streamGrace: drainTimeout }))
      ),
      scope
    )
  )
  const url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))
  return { url, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

/** A promise with its resolver, settled from inside handlers. */
const signal = <A = void>() => {
  let resolve!: (a: A) => void
  const promise = new Promise<A>((r) => (resolve = r))
  return { promise, resolve }
}

describe("HttpListener (@effect/platform-node's NodeHttpServer with the relay's drain)", () => {
  it("serves a GET route as JSON and answers 404 for an unknown route", async () => {
    const server = await start(
      HttpRouter.add("GET", "/ping", (request) => HttpServerResponse.json({ pong: true, url: request.url }))
    )
    try {
      const response = await fetch(`${server.url}/ping?x=1`)
      expect(response.status).toBe(200)
      expect(response.headers.get("content-type")).toContain("application/json")
      expect(await response.json()).toEqual({ pong: true, url: "/ping?x=1" })
      const missing = await fetch(`${server.url}/nope`)
      expect(missing.status).toBe(404)
      await missing.arrayBuffer()
    } finally {
      await server.close()
    }
  })

  it("passes the method, headers and streamed body of a POST to the handler", async () => {
    const server = await start(
      HttpRouter.add(
        "POST",
        "/echo",
        Effect.gen(function*() {
          const request = yield* HttpServerRequest.HttpServerRequest
          const body = yield* request.text
          return HttpServerResponse.text(`${request.method} ${request.headers["x-test"]} ${body}`, {
            headers: { "x-length": String(body.length) }
          })
        })
      )
    )
    try {
      const big = "x".repeat(200_000)
      const response = await fetch(`${server.url}/echo`, { method: "POST", headers: { "x-test": "yes" }, body: big })
      expect(response.status).toBe(200)
      expect(response.headers.get("x-length")).toBe("200000")
      expect(await response.text()).toBe(`POST yes ${big}`)
      // a streamed (chunked) request body
      const chunks = ["hello ", "streamed ", "world"]
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          for (const c of chunks) controller.enqueue(encoder.encode(c))
          controller.close()
        }
      })
      const streamed = await fetch(`${server.url}/echo`, {
        method: "POST",
        headers: { "x-test": "chunked" },
        body,
        duplex: "half"
      } as RequestInit)
      expect(await streamed.text()).toBe("POST chunked hello streamed world")
    } finally {
      await server.close()
    }
  })

  it("streams SSE chunk by chunk: the first event arrives while the handler is still producing", async () => {
    const gate = Effect.runSync(Deferred.make<void>())
    let produced = 0
    const events = Stream.make("data: 1\n\n", "data: 2\n\n", "data: 3\n\n").pipe(
      Stream.mapEffect((event, i) =>
        // events 2 and 3 are produced only after the test opens the gate
        (i === 0 ? Effect.void : Deferred.await(gate)).pipe(
          Effect.as(event),
          Effect.tap(() => Effect.sync(() => produced++))
        )
      ),
      Stream.map((s) => encoder.encode(s))
    )
    const server = await start(
      HttpRouter.add("GET", "/sse", HttpServerResponse.stream(events, { contentType: "text/event-stream" }))
    )
    try {
      const response = await fetch(`${server.url}/sse`)
      expect(response.headers.get("content-type")).toBe("text/event-stream")
      const reader = response.body!.getReader()
      const first = await reader.read()
      expect(decoder.decode(first.value)).toBe("data: 1\n\n")
      // the handler has produced only the first event and is blocked on the gate
      expect(produced).toBe(1)
      Effect.runSync(Deferred.succeed(gate, undefined))
      let rest = ""
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        rest += decoder.decode(value, { stream: true })
      }
      expect(rest).toBe("data: 2\n\ndata: 3\n\n")
      expect(produced).toBe(3)
    } finally {
      await server.close()
    }
  })

  it("interrupts a handler that streams forever when the client aborts, running its finalizer", async () => {
    const finalized = signal<Exit.Exit<unknown, unknown>>()
    const forever = Stream.fromEffect(Effect.succeed("data: tick\n\n")).pipe(
      Stream.repeat(Schedule.spaced("10 millis")),
      Stream.map((s) => encoder.encode(s)),
      Stream.onExit((exit) => Effect.sync(() => finalized.resolve(exit)))
    )
    const server = await start(
      HttpRouter.add("GET", "/forever", HttpServerResponse.stream(forever, { contentType: "text/event-stream" }))
    )
    try {
      const controller = new AbortController()
      const response = await fetch(`${server.url}/forever`, { signal: controller.signal })
      const reader = response.body!.getReader()
      const { value } = await reader.read()
      expect(decoder.decode(value)).toContain("data: tick")
      controller.abort()
      const exit = await finalized.promise
      expect(Exit.hasInterrupts(exit)).toBe(true)
    } finally {
      await server.close()
    }
  })

  it("interrupts a handler that has not answered yet when the client aborts", async () => {
    const entered = signal()
    const finalized = signal<string>()
    const server = await start(
      HttpRouter.add(
        "GET",
        "/slow",
        Effect.gen(function*() {
          yield* Effect.addFinalizer((exit) => Effect.sync(() => finalized.resolve(exit._tag)))
          entered.resolve()
          return yield* Effect.never
        }).pipe(Effect.onInterrupt(() => Effect.sync(() => finalized.resolve("interrupted"))))
      )
    )
    try {
      const controller = new AbortController()
      const pending = fetch(`${server.url}/slow`, { signal: controller.signal }).catch((e: unknown) => e)
      await entered.promise
      controller.abort()
      expect(await finalized.promise).toBe("interrupted")
      expect(await pending).toBeInstanceOf(Error)
    } finally {
      await server.close()
    }
  })

  it("closes gracefully: an in-flight request completes, then the server stops", async () => {
    // Events, in the order they happened; no clock is read.
    const events: Array<string> = []
    const entered = signal()
    const gate = Effect.runSync(Deferred.make<void>())
    const server = await start(
      Layer.mergeAll(
        HttpRouter.add(
          "GET",
          "/work",
          Effect.sync(() => entered.resolve()).pipe(
            // The handler answers only when the test opens the gate, after shutdown began.
            Effect.andThen(Deferred.await(gate)),
            Effect.andThen(Effect.sync(() => events.push("handler answers"))),
            Effect.as(HttpServerResponse.text("done"))
          )
        ),
        HttpRouter.add("GET", "/probe", HttpServerResponse.text("up"))
      )
    )
    const response = fetch(`${server.url}/work`).then(async (r) => ({ status: r.status, body: await r.text() }))
    await entered.promise
    const closing = server.close().then(() => events.push("closed"))
    // Wait until shutdown has begun, as the network shows it: the port refuses a new
    // connection (a probe accepted just before that is answered at once).
    for (;;) {
      const probe = await fetch(`${server.url}/probe`).then((r) => r.text(), () => "refused")
      if (probe === "refused") break
      expect(probe).toBe("up")
    }
    // The request is still in flight, so the server has not finished closing.
    expect(events).toEqual([])
    Effect.runSync(Deferred.succeed(gate, undefined))
    await closing
    expect(events).toEqual(["handler answers", "closed"])
    // The in-flight request got its whole answer (the client may read it after the close
    // resolved: the server's part was done, which is what the close waits for).
    expect(await response).toEqual({ status: 200, body: "done" })
    // the port no longer accepts connections
    await expect(fetch(`${server.url}/work`)).rejects.toThrow()
  })

  it("drains an in-flight `Expect: 100-continue` request too (Node emits it as checkContinue)", async () => {
    const events: Array<string> = []
    const entered = signal()
    const gate = Effect.runSync(Deferred.make<void>())
    const server = await start(
      HttpRouter.add(
        "POST",
        "/upload",
        Effect.gen(function*() {
          const request = yield* HttpServerRequest.HttpServerRequest
          const body = yield* request.text
          entered.resolve()
          yield* Deferred.await(gate)
          events.push("handler answers")
          return HttpServerResponse.text(`got ${body}`)
        })
      )
    )
    const { port } = new URL(server.url)
    const response = new Promise<string>((resolve, reject) => {
      const req = Http.request({
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/upload",
        headers: { expect: "100-continue", "content-length": "5" }
      })
      req.on("continue", () => req.end("hello"))
      req.on("response", (res) => {
        let text = ""
        res.setEncoding("utf8")
        res.on("data", (c: string) => (text += c))
        res.on("end", () => resolve(text))
      })
      req.on("error", reject)
      req.flushHeaders()
    })
    await entered.promise
    const closing = server.close().then(() => events.push("closed"))
    Effect.runSync(Deferred.succeed(gate, undefined))
    await closing
    expect(events).toEqual(["handler answers", "closed"])
    expect(await response).toBe("got hello")
  })

  it("drops a request that outlives the drain timeout and interrupts its handler", async () => {
    const events: Array<string> = []
    const entered = signal()
    const server = await start(
      HttpRouter.add(
        "GET",
        "/stuck",
        Effect.sync(() => entered.resolve()).pipe(
          Effect.andThen(Effect.never),
          Effect.onInterrupt(() => Effect.sync(() => events.push("handler interrupted")))
        )
      ),
      200
    )
    const pending = fetch(`${server.url}/stuck`).then(() => "answered", () => "dropped")
    await entered.promise
    await server.close()
    events.push("closed")
    // The handler never answers: only the drain timeout ends it, before close resolves.
    expect(events).toEqual(["handler interrupted", "closed"])
    expect(await pending).toBe("dropped")
  })

  it("provides effect's HttpServer service with the bound address", async () => {
    const scope = Effect.runSync(Scope.make())
    try {
      const context = await Effect.runPromise(
        Layer.buildWithScope(HttpListener.layer({ port: 0, host: "127.0.0.1" }), scope)
      )
      const server = Context.get(context, EffectHttpServer.HttpServer)
      expect(server.address._tag).toBe("InetAddressV4")
      const url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })

  it("fails with a typed ServeError when the port is taken", async () => {
    const server = await start(HttpRouter.add("GET", "/", HttpServerResponse.text("x")))
    try {
      const port = Number(new URL(server.url).port)
      const exit = await Effect.runPromiseExit(
        Effect.scoped(Layer.build(HttpListener.layer({ port, host: "127.0.0.1" })))
      )
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isFailure(exit)) {
        const error = Cause.findErrorOption(exit.cause)
        expect(error._tag === "Some" && error.value._tag).toBe("ServeError")
        expect(error._tag === "Some" && error.value.message).toBe(`cannot listen on 127.0.0.1:${port}: EADDRINUSE`)
      }
    } finally {
      await server.close()
    }
  })
})
