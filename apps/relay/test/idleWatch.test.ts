/**
 * The relay's idle timers (`internal/idleWatch.ts`) on a TestClock, and the
 * client-connection probe (`internal/clientConnection.ts`).
 */
import { Effect, Exit, Fiber, Stream } from "effect"
import type { HttpServerRequest } from "effect/http/HttpServerRequest"
import { TestClock } from "effect/testing"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { describe, expect, it } from "vitest"
import * as ClientConnection from "../src/internal/clientConnection.js"
import * as IdleWatch from "../src/internal/idleWatch.js"

const runClocked = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(Effect.provide(effect, TestClock.layer()))

class Idle {
  readonly _tag = "Idle"
}

describe("IdleWatch.consumer (the client side of a response body)", () => {
  it("a consumer busy for the limit: whenIdle runs at once, the stream fails at its next pull", async () => {
    const events: Array<string> = []
    const exit = await runClocked(
      Effect.gen(function*() {
        const stream = IdleWatch.consumer(
          Stream.make(1, 2, 3).pipe(Stream.rechunk(1)),
          "30 seconds",
          () => new Idle(),
          Effect.sync(() => void events.push("idle"))
        )
        const fiber = yield* Effect.forkChild(
          Effect.exit(Stream.runForEach(stream, (n) => {
            events.push(`got ${n}`)
            return n === 2 ? Effect.sleep("40 seconds") : Effect.void
          }))
        )
        yield* TestClock.adjust("40 seconds")
        return yield* Fiber.join(fiber)
      })
    )
    expect(events).toEqual(["got 1", "got 2", "idle"])
    expect(Exit.isFailure(exit) && exit.cause.reasons.some((r) => r._tag === "Fail" && r.error instanceof Idle)).toBe(
      true
    )
  })

  it("a consumer slower than the producer but within the limit each time is never idle", async () => {
    let idle = false
    const exit = await runClocked(
      Effect.gen(function*() {
        const stream = IdleWatch.consumer(
          Stream.make(1, 2, 3, 4).pipe(Stream.rechunk(1)),
          "30 seconds",
          () => new Idle(),
          Effect.sync(() => void (idle = true))
        )
        const fiber = yield* Effect.forkChild(Effect.exit(Stream.runForEach(stream, () => Effect.sleep("20 seconds"))))
        for (let i = 0; i < 4; i++) yield* TestClock.adjust("20 seconds")
        return yield* Fiber.join(fiber)
      })
    )
    expect(Exit.isSuccess(exit)).toBe(true)
    expect(idle).toBe(false)
  })
})

describe("IdleWatch.make (waits on a producer)", () => {
  it("only the time inside a wait counts; a wait of the full limit fails with the idle error", async () => {
    const exit = await runClocked(
      Effect.gen(function*() {
        const watch = yield* IdleWatch.make("30 seconds", () => new Idle())
        // 50 s outside any wait: nothing happens
        yield* TestClock.adjust("50 seconds")
        const fiber = yield* Effect.forkChild(Effect.exit(watch.waiting(Effect.never)))
        yield* TestClock.adjust("29 seconds")
        expect(fiber.pollUnsafe()).toBeUndefined()
        yield* TestClock.adjust("1 second")
        const result = yield* Fiber.join(fiber)
        yield* watch.stop
        return result
      })
    )
    expect(Exit.isFailure(exit) && exit.cause.reasons.some((r) => r._tag === "Fail" && r.error instanceof Idle)).toBe(
      true
    )
  })
})

describe("clientConnection.isGone", () => {
  const request = (source: unknown) => ({ source }) as unknown as HttpServerRequest
  it("reads an aborted Request signal and a Node socket that ended or was destroyed", () => {
    expect(ClientConnection.isGone(request({ signal: new AbortController().signal }))).toBe(false)
    expect(ClientConnection.isGone(request({ signal: AbortSignal.abort() }))).toBe(true)
    expect(ClientConnection.isGone(request({ socket: { destroyed: false, readableEnded: false } }))).toBe(false)
    expect(ClientConnection.isGone(request({ socket: { destroyed: false, readableEnded: true } }))).toBe(true)
    expect(ClientConnection.isGone(request({ socket: { destroyed: true, readableEnded: false } }))).toBe(true)
    expect(ClientConnection.isGone(request(null))).toBe(false)
  })
})

describe("clientConnection.disconnect", () => {
  it("drops the connection of a Node IncomingMessage (as under @effect/platform-node); a Web Request is left alone", async () => {
    let source: Http.IncomingMessage | undefined
    const server = Http.createServer((req) => void (source = req)) // never answers
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    try {
      const port = (server.address() as AddressInfo).port
      const closed = new Promise<string>((resolve) => {
        const req = Http.request({ host: "127.0.0.1", port, method: "POST" })
        req.on("error", (e) => resolve((e as NodeJS.ErrnoException).code ?? e.message))
        req.end("{}")
      })
      while (source === undefined) await new Promise((r) => setImmediate(r)) // until the server has the request
      const request = (s: unknown) => ({ source: s }) as unknown as HttpServerRequest
      await Effect.runPromise(ClientConnection.disconnect(request(new Request("http://x/"))))
      expect(ClientConnection.isGone(request(source))).toBe(false)
      await Effect.runPromise(ClientConnection.disconnect(request(source)))
      expect(await closed).toBe("ECONNRESET")
      expect(ClientConnection.isGone(request(source))).toBe(true)
    } finally {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })
})
