/**
 * The whole relay (Server.layer) in-process on a random port over an isolated
 * database, with two mock upstream channels (A, priority 0; B, priority 1)
 * serving `gpt-4o-mini`, admin helpers and `openai` clients. Optionally under a
 * `TestClock` (provided under the whole server: idle timers, the reaper and
 * hold expiry all read it), moved with `advance`.
 */
import { TestDatabase } from "@relay-billing/knex"
import type { Context } from "effect"
import { Effect, Exit, Layer, Logger, References, Scope } from "effect"
import { TestClock } from "effect/testing"
import OpenAI from "openai"
import { expect } from "vitest"
import { decodeConfig } from "../../src/Config.js"
import type { Loaded } from "../../src/Config.js"
import * as HttpListener from "../../src/HttpListener.js"
import * as Server from "../../src/Server.js"
import * as Tokenizer from "../../src/Tokenizer.js"
import * as Mock from "./MockUpstream.js"

export const ADMIN_KEY = "sk-admin-harness-0123456789"
export const MODEL = "gpt-4o-mini"
export const MODEL_RATIO = 2
export const COMPLETION_RATIO = 3
export const MIN_PRE = 20
export const MESSAGES = [{ role: "user" as const, content: "Say hello" }]
export const PROMPT_ESTIMATE = Tokenizer.countMessages(MESSAGES)

/** relay-api.md "Pricing", written out independently of src/Pricing.ts. */
export const roundHalfAway = (x: number) => Math.sign(x) * Math.round(Math.abs(x))
export const actualOf = (prompt: number, completion: number) =>
  Math.max(roundHalfAway((prompt + completion * COMPLETION_RATIO) * MODEL_RATIO), prompt + completion > 0 ? 1 : 0)
export const estimateOf = (promptEstimate: number, maxTokens: number) =>
  Math.ceil((Math.max(promptEstimate, MIN_PRE) + maxTokens * COMPLETION_RATIO) * MODEL_RATIO)
/** `charge-prompt` without the upstream's usage: the prompt estimate. */
export const PROMPT_PART = roundHalfAway(PROMPT_ESTIMATE * MODEL_RATIO)

let seq = 0
/** A fresh request id. */
export const rid = (label: string) => `h-${label}-${process.pid}-${Date.now()}-${++seq}`

/** Event-driven wait on a condition (bounded by the test's timeout, not by a count of tries). */
export const until = async (cond: () => boolean | Promise<boolean>): Promise<void> => {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 5)) // a poll interval, not a wait for time to pass
}

export interface Relay {
  readonly url: string
  readonly mockA: Mock.MockUpstream
  readonly mockB: Mock.MockUpstream
  readonly admin: (method: string, path: string, body?: unknown) => Promise<{ status: number; body: any }>
  /** A new account (wallet `quota`) with an unlimited token and an `openai` client for it. */
  readonly setup: (quota?: number) => Promise<{ accountId: string; tokenId: string; key: string; client: OpenAI }>
  /** The hold once it is no longer pending. */
  readonly resolved: (requestId: string) => Promise<any>
  /** Every HTTP response the relay's logger reported (one per finished handler), in order. */
  readonly responses: Array<{ readonly url: string; readonly status: number }>
  /** Runs an effect with the relay's services (the billing services, the knex client). */
  readonly run: <A, E>(effect: Effect.Effect<A, E, any>) => Promise<A>
  /** Moves the TestClock (only with `testClock: true`). */
  readonly advance: (seconds: number) => Promise<void>
  readonly close: () => Promise<void>
}

/** Starts a relay on SQLite (see the module docs); `config` is merged into the base config. */
export const startRelay = async (options: {
  readonly billing?: Record<string, unknown>
  readonly limits?: Record<string, unknown>
  readonly testClock?: boolean
  /** The config's `funding` section. */
  readonly funding?: Record<string, unknown>
  /** Where `funding.sources` packages are resolved from. */
  readonly pluginCwd?: string
} = {}): Promise<Relay> => {
  const mockA = await Mock.start()
  const mockB = await Mock.start()
  const scope = Effect.runSync(Scope.make())
  const config = await Effect.runPromise(decodeConfig({
    models: { [MODEL]: { modelRatio: MODEL_RATIO, completionRatio: COMPLETION_RATIO } },
    channels: [
      { name: "A", baseUrl: mockA.url, apiKey: "sk-up-a", models: [MODEL], priority: 0 },
      { name: "B", baseUrl: mockB.url, apiKey: "sk-up-b", models: [MODEL], priority: 1 }
    ],
    billing: { minPreConsumeTokens: MIN_PRE, retries: 1, onClientDisconnect: "charge-prompt", ...options.billing },
    ...(options.limits !== undefined ? { limits: options.limits } : {}),
    ...(options.funding !== undefined ? { funding: options.funding } : {})
  }))
  const db = await Effect.runPromise(Scope.provide(TestDatabase.isolated({ name: "sqlite" }), scope))
  const loaded: Loaded = { port: 0, databaseUrl: db.url, adminKey: ADMIN_KEY, configSource: "harness", config }
  const responses: Array<{ readonly url: string; readonly status: number }> = []
  // The HTTP logger reports each handler's end: a test can wait for requests the client abandoned.
  const capture = Logger.make<unknown, void>(({ fiber }) => {
    const annotations = fiber.getRef(References.CurrentLogAnnotations) as Record<string, unknown>
    if (typeof annotations["http.url"] === "string") {
      responses.push({ url: annotations["http.url"], status: Number(annotations["http.status"]) })
    }
  })
  const server = Server.layer(loaded, {
    port: 0,
    host: "127.0.0.1",
    client: db.options,
    drainTimeout: 60_000,
    httpLogger: true,
    ...(options.pluginCwd !== undefined ? { pluginCwd: options.pluginCwd } : {})
  }).pipe(
    Layer.provideMerge(Logger.layer([capture]))
  )
  const context: Context.Context<any> = await Effect.runPromise(
    Layer.buildWithScope(
      options.testClock === true ? server.pipe(Layer.provideMerge(TestClock.layer())) : server,
      scope
    )
  )
  const url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))
  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${ADMIN_KEY}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {})
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {})
    })
    const text = await response.text()
    return { status: response.status, body: text === "" ? undefined : JSON.parse(text) }
  }
  const setup = async (quota = 10_000) => {
    const acc = await admin("POST", "/admin/accounts", { quota, billingPreference: "wallet_only" })
    expect(acc.status).toBe(201)
    const tok = await admin("POST", "/admin/tokens", { accountId: acc.body.id, unlimited: true })
    expect(tok.status).toBe(201)
    const client = new OpenAI({ apiKey: tok.body.key, baseURL: `${url}/v1`, maxRetries: 0, timeout: 60_000 })
    return { accountId: acc.body.id as string, tokenId: tok.body.id as string, key: tok.body.key as string, client }
  }
  const resolved = async (requestId: string) => {
    let found: any
    await until(async () => {
      const h = await admin("GET", `/admin/holds/${encodeURIComponent(requestId)}`)
      found = h.body
      return h.status === 200 && h.body.status !== "pending"
    })
    return found
  }
  const advance = (seconds: number) =>
    Effect.runPromise(TestClock.adjust(`${seconds} seconds`).pipe(Effect.provideContext(context)))
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await mockA.close()
    await mockB.close()
  }
  const run = <A, E>(effect: Effect.Effect<A, E, any>) =>
    Effect.runPromise(effect.pipe(Effect.provideContext(context)) as Effect.Effect<A, E>)
  return { url, mockA, mockB, admin, setup, resolved, responses, run, advance, close }
}
