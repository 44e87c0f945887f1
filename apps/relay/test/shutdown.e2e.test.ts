/**
 * Issue 9, hole 3: SIGTERM while a stream is still running. The built relay
 * (`node main.js serve`, SQLite) streams from an upstream that never ends; the
 * client has received part of the stream when the process gets SIGTERM. The
 * relay must stop accepting, wait for the drain, end the stream, bill it for
 * what was delivered (not the `charge-prompt` disconnect charge, not free),
 * close the database and exit with code 0.
 */
import { BillingSession } from "@relay-billing/core"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { spawnSync } from "node:child_process"
import { mkdtemp, rm, writeFile } from "node:fs/promises"
import * as Http from "node:http"
import type { AddressInfo, Socket } from "node:net"
import { tmpdir } from "node:os"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { holdIdOf } from "../src/internal/requestIds.js"
import * as RelayBilling from "../src/RelayBilling.js"
import * as Tokenizer from "../src/Tokenizer.js"
import { buildRelay, spawnRelay } from "./support/RelayProcess.js"
import type { BuiltRelay } from "./support/RelayProcess.js"

const ADMIN_KEY = "sk-admin-shutdown-0123456789"
const MODEL = "slow-model"

/** An upstream whose chat stream sends one content chunk every 50 ms, forever (until the client leaves). */
const foreverUpstream = async () => {
  const sockets = new Set<Socket>()
  const server = Http.createServer((req, res) => {
    req.resume()
    req.on("end", () => {
      res.writeHead(200, { "content-type": "text/event-stream" })
      const event = (delta: Record<string, unknown>) =>
        `data: ${
          JSON.stringify({ id: "c1", object: "chat.completion.chunk", model: MODEL, choices: [{ index: 0, delta }] })
        }\n\n`
      res.write(event({ role: "assistant" }))
      let n = 0
      const timer = setInterval(() => res.write(event({ content: ` tick${++n}` })), 50)
      res.on("close", () => clearInterval(timer))
    })
  })
  server.on("connection", (socket) => {
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}/v1`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      })
  }
}

/** The content deltas of the SSE events in `text` (complete events only). */
const contentOf = (text: string): string =>
  text.split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => {
    const json = JSON.parse(e.slice(6)) as { choices?: Array<{ delta?: { content?: string } }> }
    return json.choices?.[0]?.delta?.content ?? ""
  }).join("")

let relayBin: BuiltRelay
beforeAll(async () => {
  relayBin = await buildRelay()
}, 120_000)
afterAll(async () => {
  await relayBin?.remove()
})

describe("relay serve: SIGTERM with a stream still running", () => {
  it(
    "drains, ends the stream, bills what was delivered, closes the database and exits 0",
    { timeout: 180_000 },
    async () => {
      const dir = await mkdtemp(path.join(tmpdir(), "relay-shutdown-"))
      const upstream = await foreverUpstream()
      const databaseUrl = `sqlite:${path.join(dir, "relay.db")}`
      const configPath = path.join(dir, "relay.json")
      await writeFile(
        configPath,
        JSON.stringify({
          models: { [MODEL]: { modelRatio: 1, completionRatio: 1 } },
          channels: [{ name: "slow", baseUrl: upstream.url, models: [MODEL] }],
          billing: { minPreConsumeTokens: 0, onClientDisconnect: "charge-prompt" }
        })
      )
      const relay = spawnRelay(relayBin.bin, ["serve"], {
        RELAY_PORT: "0",
        RELAY_DATABASE_URL: databaseUrl,
        RELAY_ADMIN_KEY: ADMIN_KEY,
        RELAY_CONFIG: configPath
      }, dir)
      try {
        // RELAY_HOST is unset: the relay binds loopback and says so
        const [, port] = await relay.waitFor(/Listening on http:\/\/127\.0\.0\.1:(\d+)/)
        const base = `http://127.0.0.1:${port}`
        const admin = async (p: string, body: unknown) => {
          const response = await fetch(`${base}${p}`, {
            method: "POST",
            headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
            body: JSON.stringify(body)
          })
          expect(response.status).toBe(201)
          return (await response.json()) as { id: string; key: string }
        }
        const account = await admin("/admin/accounts", { quota: 1_000_000 })
        const token = await admin("/admin/tokens", { accountId: account.id })

        const messages = [{ role: "user", content: "Count forever" }]
        const requestId = `shutdown-${process.pid}`
        const response = await fetch(`${base}/v1/chat/completions`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${token.key}`,
            "content-type": "application/json",
            "x-request-id": requestId
          },
          body: JSON.stringify({ model: MODEL, messages, stream: true, max_tokens: 100_000 })
        })
        expect(response.status).toBe(200)
        const reader = response.body!.getReader()
        const decoder = new TextDecoder()
        let received = ""
        // Some content has reached the client before the signal.
        while (contentOf(received).length === 0) {
          const { done, value } = await reader.read()
          if (done) break
          received += decoder.decode(value, { stream: true })
        }
        relay.child.kill("SIGTERM")
        // The stream goes on during the drain, then the relay ends it.
        let streamEnded = false
        for (;;) {
          const next = await reader.read().catch(() => ({ done: true, value: undefined }))
          if (next.done) {
            streamEnded = true
            break
          }
          received += decoder.decode(next.value, { stream: true })
        }
        expect(streamEnded).toBe(true)

        // Only catches a hang: the relay's own drain is 10 s.
        const hang = new Promise<"still running">((resolve) =>
          setTimeout(() => resolve("still running"), 60_000).unref()
        )
        const exit = await Promise.race([relay.exited, hang])
        expect(exit, relay.output()).toBe(0)

        // The hold: settled for the prompt and the content the client received.
        const delivered = contentOf(received)
        expect(delivered.length).toBeGreaterThan(0)
        const scope = Effect.runSync(Scope.make())
        try {
          const context = await Effect.runPromise(Layer.buildWithScope(RelayBilling.layerUrl(databaseUrl), scope))
          const hold = await Effect.runPromise(
            Context.get(context, BillingSession.BillingSession).get(holdIdOf(account.id, requestId))
          )
          expect(hold.status).toBe("settled")
          const promptOnly = Tokenizer.countMessages(messages)
          expect(hold.settlement?.actual).toBe(promptOnly + Tokenizer.countText(delivered))
        } finally {
          await Effect.runPromise(Scope.close(scope, Exit.void))
        }
      } finally {
        if (relay.child.exitCode === null && relay.child.signalCode === null) relay.child.kill("SIGKILL")
        await upstream.close()
        await rm(dir, { recursive: true, force: true })
      }
    }
  )
})

describe("relay serve: binding and a clean exit", () => {
  it("RELAY_HOST=0.0.0.0 binds every interface (the log says so); SIGTERM with nothing in flight exits 0", {
    timeout: 120_000
  }, async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "relay-host-"))
    const relay = spawnRelay(relayBin.bin, ["serve"], {
      RELAY_PORT: "0",
      RELAY_HOST: "0.0.0.0",
      RELAY_DATABASE_URL: `sqlite:${path.join(dir, "relay.db")}`,
      RELAY_ADMIN_KEY: ADMIN_KEY
    }, dir)
    try {
      const [, port] = await relay.waitFor(/Listening on http:\/\/0\.0\.0\.0:(\d+)/)
      const models = await fetch(`http://127.0.0.1:${port}/v1/models`)
      expect(models.status).toBe(401)
      await models.arrayBuffer()
      relay.child.kill("SIGTERM")
      const hang = new Promise<"still running">((resolve) => setTimeout(() => resolve("still running"), 60_000).unref())
      expect(await Promise.race([relay.exited, hang]), relay.output()).toBe(0)
    } finally {
      if (relay.child.exitCode === null && relay.child.signalCode === null) relay.child.kill("SIGKILL")
      await rm(dir, { recursive: true, force: true })
    }
  })

  it(
    "closing Server.layer leaves nothing that keeps the event loop alive (keep-alive sockets, reaper, webhook queue)",
    { timeout: 120_000 },
    async () => {
      const dir = await mkdtemp(path.join(tmpdir(), "relay-loop-"))
      try {
        // A plain Node process: serve, answer a request on a kept-alive connection, close the
        // layer's scope, and return. It exits by itself only if no handle is left behind.
        const script = path.join(relayBin.dir, "loop-check.mjs")
        await writeFile(
          script,
          `import * as Http from "node:http"
import { Effect, Exit, Layer, Scope } from "effect"
import { Config, Server } from "./index.js"
const loaded = { ...(await Effect.runPromise(Config.load({ RELAY_DATABASE_URL: process.argv[2], RELAY_ADMIN_KEY: "${ADMIN_KEY}" }))), port: 0 }
const scope = Effect.runSync(Scope.make())
const context = await Effect.runPromise(Layer.buildWithScope(Server.layer(loaded, { drainTimeout: "60 seconds" }), scope))
const url = await Effect.runPromise(Server.url.pipe(Effect.provideContext(context)))
const agent = new Http.Agent({ keepAlive: true })
await new Promise((resolve) => Http.get(url + "/v1/models", { agent }, (res) => { res.resume(); res.on("end", resolve) }))
await Effect.runPromise(Scope.close(scope, Exit.void))
console.log("closed")
`
        )
        const run = spawnSync(process.execPath, [script, `sqlite:${path.join(dir, "relay.db")}`], {
          cwd: dir,
          encoding: "utf8",
          timeout: 90_000
        })
        expect(run.stdout + run.stderr).toContain("closed")
        expect(run.signal, run.stdout + run.stderr).toBeNull()
        expect(run.status, run.stdout + run.stderr).toBe(0)
      } finally {
        await rm(dir, { recursive: true, force: true })
      }
    }
  )
})
