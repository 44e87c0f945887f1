/**
 * Issue 9, holes 5, 6 and 11 on the whole relay (`Server.layer`, SQLite),
 * with raw `node:http` / `node:net` requests:
 *
 * - every response with status ≥ 400 has the JSON error shape, the router's
 *   own included: unknown route 404, known path with another method (OPTIONS
 *   included) 405 with `Allow`, bad percent-encoding 400, `Host: [::1` 400,
 *   admin ids up to 191 characters reach the handler, JSON nested 5,000 deep
 *   400;
 * - `limits.maxBodyBytes`: a `Content-Length` over it is 413 at once, a
 *   chunked body is cut off and the server stops reading;
 * - `RELAY_HOST`: the listener binds `loaded.host` (default 127.0.0.1).
 */
import { Effect, Exit, Layer, Logger, Scope } from "effect"
import { HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import { mkdtemp, rm } from "node:fs/promises"
import * as Http from "node:http"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { decodeConfig } from "../src/Config.js"
import type { Loaded } from "../src/Config.js"
import * as HttpListener from "../src/HttpListener.js"
import * as HttpErrors from "../src/internal/httpErrors.js"
import * as Server from "../src/Server.js"

const ADMIN_KEY = "sk-admin-httperrors-0123456789"
const MAX_BODY = 64 * 1024
const MAX_DEPTH = 8

interface RawResponse {
  readonly status: number
  readonly headers: Http.IncomingHttpHeaders
  readonly text: string
}

/** Sends `raw` (a whole HTTP/1.1 request) over a socket and parses the response. */
const rawRequest = (port: number, raw: string): Promise<RawResponse> =>
  new Promise((resolve, reject) => {
    // write without half-closing: a client that sends FIN is gone for the relay (nginx 499)
    const socket = Net.connect(port, "127.0.0.1", () => socket.write(raw))
    let data = ""
    socket.setEncoding("latin1")
    socket.on("data", (chunk: string) => (data += chunk))
    socket.on("error", reject)
    socket.on("close", () => {
      const split = data.indexOf("\r\n\r\n")
      const head = data.slice(0, split).split("\r\n")
      const status = Number(head[0]!.split(" ")[1])
      const headers: Http.IncomingHttpHeaders = {}
      for (const line of head.slice(1)) {
        const i = line.indexOf(":")
        headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim()
      }
      let body = data.slice(split + 4)
      if (headers["transfer-encoding"] === "chunked") {
        let out = ""
        for (;;) {
          const eol = body.indexOf("\r\n")
          const size = parseInt(body.slice(0, eol), 16)
          if (!(size > 0)) break
          out += body.slice(eol + 2, eol + 2 + size)
          body = body.slice(eol + 2 + size + 2)
        }
        body = out
      }
      resolve({ status, headers, text: Buffer.from(body, "latin1").toString("utf8") })
    })
  })

const request = (port: number, method: string, target: string, headers: Record<string, string> = {}, body?: string) =>
  rawRequest(
    port,
    `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n` +
      Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("") +
      (body !== undefined ? `Content-Length: ${Buffer.byteLength(body)}\r\n` : "") +
      `\r\n${body ?? ""}`
  )

/** The body is `{"error":{"message","type","code"}}` with `code`. */
const expectError = (response: RawResponse, status: number, code: string) => {
  expect(response.status, response.text).toBe(status)
  expect(response.headers["content-type"]).toContain("application/json")
  const body = JSON.parse(response.text) as { error: { message: unknown; type: unknown; code: unknown } }
  expect(typeof body.error.message).toBe("string")
  expect(typeof body.error.type).toBe("string")
  expect(body.error.code).toBe(code)
  return body.error
}

const nested = (depth: number) => `{"model":"demo","messages":${"[".repeat(depth)}${"]".repeat(depth)}}`

describe("relay HTTP errors and limits (Server.layer, SQLite)", () => {
  let dir: string
  let scope: Scope.Closeable
  let port: number
  let tokenKey: string
  let address: string

  const admin = async (method: string, p: string, body?: unknown) => {
    const response = await request(port, method, p, {
      authorization: `Bearer ${ADMIN_KEY}`,
      "content-type": "application/json"
    }, body === undefined ? undefined : JSON.stringify(body))
    return { status: response.status, body: response.text === "" ? undefined : JSON.parse(response.text) }
  }

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "relay-httperrors-"))
    scope = Effect.runSync(Scope.make())
    const config = await Effect.runPromise(decodeConfig({
      models: { demo: { modelRatio: 1, completionRatio: 1 } },
      channels: [{ name: "demo", baseUrl: "demo://local/v1", models: ["demo"] }],
      limits: { maxBodyBytes: MAX_BODY, maxJsonDepth: MAX_DEPTH }
    }))
    const loaded: Loaded = {
      port: 0,
      databaseUrl: `sqlite:${path.join(dir, "relay.db")}`,
      adminKey: ADMIN_KEY,
      configSource: "test",
      config
    }
    const context = await Effect.runPromise(Layer.buildWithScope(Server.layer(loaded), scope))
    const url = await Effect.runPromise(Server.url.pipe(Effect.provideContext(context)))
    address = await Effect.runPromise(
      HttpServer.addressFormattedWith(Effect.succeed).pipe(Effect.provideContext(context))
    )
    port = Number(new URL(url).port)
    const account = await admin("POST", "/admin/accounts", { quota: 1_000_000 })
    const token = await admin("POST", "/admin/tokens", { accountId: account.body.id })
    tokenKey = token.body.key
  }, 60_000)

  afterAll(async () => {
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  it("binds 127.0.0.1 when loaded.host is not set (RELAY_HOST's default)", () => {
    expect(address).toBe(`http://127.0.0.1:${port}`)
  })

  it("unknown routes: 404 not_found with a JSON body", async () => {
    expectError(await request(port, "GET", "/nope"), 404, "not_found")
    expectError(await request(port, "POST", "/v1/nope", {}, "{}"), 404, "not_found")
    expectError(await request(port, "GET", "/"), 404, "not_found")
  })

  it("a known path with another method (OPTIONS too): 405 method_not_allowed with Allow", async () => {
    const options = await request(port, "OPTIONS", "/v1/chat/completions")
    expectError(options, 405, "method_not_allowed")
    expect(options.headers["allow"]).toBe("POST")
    const get = await request(port, "GET", "/v1/chat/completions")
    expectError(get, 405, "method_not_allowed")
    expect(get.headers["allow"]).toBe("POST")
    const del = await request(port, "DELETE", "/admin/accounts/acc_1")
    expectError(del, 405, "method_not_allowed")
    expect(String(del.headers["allow"]).split(", ").sort()).toEqual(["GET", "HEAD", "PATCH"])
  })

  it("bad percent-encoding in the path: 400 invalid_request", async () => {
    expectError(
      await request(port, "GET", "/admin/accounts/%E0%A4%A", { authorization: `Bearer ${ADMIN_KEY}` }),
      400,
      "invalid_request"
    )
    expectError(await request(port, "GET", "/v1/mod%ZZels"), 400, "invalid_request")
  })

  it("an invalid Host header: 400 invalid_request", async () => {
    const response = await rawRequest(port, "GET /v1/models HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n")
    expectError(response, 400, "invalid_request")
  })

  it("admin ids of 101 to 191 characters reach the handler (404 naming the id); longer ones get a JSON 404", async () => {
    for (const length of [101, 150, 191]) {
      const id = "a".repeat(length)
      const response = await admin("GET", `/admin/accounts/${id}`)
      expect(response.status).toBe(404)
      expect(response.body.error.code).toBe("not_found")
      expect(response.body.error.field).toBeDefined()
      const hold = await admin("GET", `/admin/holds/${id}`)
      expect(hold.status).toBe(404)
      expect(hold.body.error.field).toBeDefined()
    }
    const tooLong = await request(port, "GET", `/admin/accounts/${"a".repeat(192)}`, {
      authorization: `Bearer ${ADMIN_KEY}`
    })
    expectError(tooLong, 404, "not_found")
  })

  it("JSON nested deeper than limits.maxJsonDepth (5,000 deep too): 400 invalid_request, admin and client API", async () => {
    const auth = { authorization: `Bearer ${tokenKey}`, "content-type": "application/json" }
    for (const depth of [MAX_DEPTH + 1, 5_000]) {
      const chat = await request(port, "POST", "/v1/chat/completions", auth, nested(depth))
      expect(expectError(chat, 400, "invalid_request").message).toContain("maxJsonDepth")
      const created = await request(port, "POST", "/admin/accounts", {
        authorization: `Bearer ${ADMIN_KEY}`,
        "content-type": "application/json"
      }, `{"name":"x","extra":${"[".repeat(depth)}${"]".repeat(depth)}}`)
      expect(expectError(created, 400, "invalid_request").message).toContain("maxJsonDepth")
    }
    // within the limit the body is decoded as usual (the schema names the field)
    const ok = await request(port, "POST", "/v1/chat/completions", auth, nested(MAX_DEPTH - 2))
    expect(ok.status).toBe(400)
    expect(ok.text).not.toContain("maxJsonDepth")
  })

  it("a Content-Length over limits.maxBodyBytes: 413 request_too_large before the body is read", async () => {
    // Only the headers are sent: the answer cannot depend on reading the body.
    const response = await new Promise<RawResponse>((resolve, reject) => {
      const req = Http.request({
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/v1/chat/completions",
        headers: {
          authorization: `Bearer ${tokenKey}`,
          "content-type": "application/json",
          "content-length": String(100 * 1024 * 1024)
        }
      })
      req.on("response", (res) => {
        let text = ""
        res.setEncoding("utf8")
        res.on("data", (c: string) => (text += c))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }))
        res.on("error", reject)
      })
      req.on("error", () => undefined)
      req.flushHeaders()
    })
    const error = expectError(response, 413, "request_too_large")
    expect(error.message).toContain(String(MAX_BODY))
    expect(response.headers["connection"]).toBe("close")
  })

  it("a chunked body over limits.maxBodyBytes: 413 and the server stops reading", async () => {
    const chunk = Buffer.alloc(16 * 1024, "x")
    const GIVE_UP = 256 * 1024 * 1024 // only catches a server that reads forever
    const outcome = await new Promise<{ status: number; text: string; written: number }>((resolve) => {
      let written = 0
      let status = 0
      let text = ""
      const req = Http.request({
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/v1/chat/completions",
        headers: {
          authorization: `Bearer ${tokenKey}`,
          "content-type": "application/json",
          "transfer-encoding": "chunked"
        }
      })
      let stopped = false
      const finish = () => {
        if (stopped) return
        stopped = true
        resolve({ status, text, written })
      }
      req.on("response", (res) => {
        status = res.statusCode ?? 0
        res.setEncoding("utf8")
        res.on("data", (c: string) => (text += c))
        res.on("error", () => undefined)
      })
      req.on("error", finish)
      req.on("close", finish)
      const pump = () => {
        while (!stopped && !req.destroyed && written < GIVE_UP) {
          written += chunk.length
          if (!req.write(chunk)) return void req.once("drain", pump)
        }
        if (written >= GIVE_UP) {
          req.destroy()
          finish()
        }
      }
      req.write("{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"")
      pump()
    })
    expect(outcome.written).toBeLessThan(GIVE_UP)
    expect(outcome.status).toBe(413)
    expect(JSON.parse(outcome.text).error.code).toBe("request_too_large")
  })

  it("a body within the limit still works", async () => {
    const response = await request(port, "POST", "/v1/chat/completions", {
      authorization: `Bearer ${tokenKey}`,
      "content-type": "application/json"
    }, JSON.stringify({ model: "demo", messages: [{ role: "user", content: "hi" }] }))
    expect(response.status, response.text).toBe(200)
  })
})

describe("the error middleware alone", () => {
  it("an unexpected failure: 500 internal_error with a JSON body, logged with its cause", async () => {
    const logged: Array<string> = []
    const logger = Logger.make((options) => logged.push(`${String(options.message)} ${String(options.cause)}`))
    const routes = new HttpErrors.RouteTable()
    const scope = Effect.runSync(Scope.make())
    const app = HttpRouter.serve(
      Layer.mergeAll(
        HttpRouter.add("GET", "/boom", Effect.die(new Error("kaboom"))).pipe(
          Layer.provide(HttpErrors.recordRoutes(routes))
        ),
        HttpRouter.add("GET", "/empty", HttpServerResponse.empty({ status: 409 })).pipe(
          Layer.provide(HttpErrors.recordRoutes(routes))
        ),
        HttpErrors.middleware({ maxBodyBytes: 1024, maxJsonDepth: 8, routes })
      ),
      { disableLogger: true, disableListenLog: true }
    ).pipe(
      Layer.provideMerge(HttpListener.layer({ port: 0 })),
      Layer.provide(Logger.layer([logger]))
    )
    try {
      const context = await Effect.runPromise(Layer.buildWithScope(app, scope))
      const port = Number(new URL(await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))).port)
      expectError(await request(port, "GET", "/boom"), 500, "internal_error")
      expect(logged.some((line) => line.includes("GET /boom") && line.includes("kaboom"))).toBe(true)
      // a handler's own empty error response gets the JSON shape too
      expectError(await request(port, "GET", "/empty"), 409, "conflict")
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  })
})
