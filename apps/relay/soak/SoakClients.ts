/**
 * The soak probe's clients: what one request of each kind does and what the
 * client saw. Well-behaved requests use the official `openai` client (its
 * `fetch` is wrapped only to keep the raw body of every error response);
 * slow readers, aborts at chosen points, hung upstreams and invalid requests
 * use `node:http` directly, so the probe decides exactly when the client
 * reads, pauses or goes away.
 *
 * @since 0.1.0
 */
import * as Http from "node:http"
import OpenAI from "openai"

/** The request kinds of the mix. */
export const KINDS = [
  "json",
  "stream",
  "embed",
  "flaky",
  "slow-json",
  "slow-stream",
  "slow-reader",
  "abort-stream",
  "abort-early",
  "hang",
  "stall",
  "fail",
  "invalid",
  "long-stream"
] as const
/** @since 0.1.0 */
export type Kind = (typeof KINDS)[number]

/** Relative weights of the kinds drawn for a burst (they sum to 100). */
export const WEIGHTS: Readonly<Record<Kind, number>> = {
  json: 16,
  stream: 16,
  embed: 4,
  flaky: 5,
  "slow-json": 4,
  "slow-stream": 6,
  "slow-reader": 4,
  "abort-stream": 8,
  "abort-early": 6,
  hang: 5,
  stall: 5,
  fail: 5,
  invalid: 12,
  // not drawn: the plan puts long streams just before the SIGTERM
  "long-stream": 0
}

/** Models of the soak config; each is served by the upstream path of the same behaviour. */
export const MODELS = {
  ok: "soak-ok",
  embed: "soak-embed",
  slow: "soak-slow",
  big: "soak-big",
  hang: "soak-hang",
  stall: "soak-stall",
  fail: "soak-5xx",
  flaky: "soak-flaky",
  drip: "soak-drip"
} as const

/** What the client of one request saw. */
export interface Outcome {
  readonly index: number
  readonly kind: Kind
  /** A variant within the kind (e.g. which invalid request, stream or not). */
  readonly variant: string
  readonly requestId: string
  readonly accountId: string
  readonly model: string
  readonly stream: boolean
  readonly maxTokens: number
  /** The burst's phase it was sent in (1: before the SIGKILL, 2: before the SIGTERM, 3: after). */
  phase: number
  startedAt: number
  endedAt: number
  /** HTTP status, once the response headers arrived. */
  status: number | undefined
  /** The raw body of a response with status ≥ 400. */
  errorBody: string | undefined
  /** Completion content (a non-empty delta, message or embedding) reached the client. */
  delivered: boolean
  /** Content chunks (stream) received. */
  contentChunks: number
  /** The client received the whole answer (`[DONE]` after a `finish_reason`, or a complete JSON body). */
  completed: boolean
  /** The client went away on purpose (an abort of the mix, or its own time bound). */
  clientAborted: boolean
  /** The client's own bound passed (it gave up waiting). */
  clientTimedOut: boolean
  /** A connection error (reset, refused) or an SSE error event. */
  failure: string | undefined
  /** Set by the run: the request was in flight when the relay was SIGKILLed / SIGTERMed. */
  inFlightAtKill: boolean
  inFlightAtTerm: boolean
}

/** The outcome of a planned request before it is sent. */
export const newOutcome = (plan: Plan): Outcome => ({
  index: plan.index,
  kind: plan.kind,
  variant: plan.variant,
  requestId: plan.requestId,
  accountId: plan.accountId,
  model: plan.model,
  stream: plan.stream,
  maxTokens: plan.maxTokens,
  phase: 0,
  startedAt: 0,
  endedAt: 0,
  status: undefined,
  errorBody: undefined,
  delivered: false,
  contentChunks: 0,
  completed: false,
  clientAborted: false,
  clientTimedOut: false,
  failure: undefined,
  inFlightAtKill: false,
  inFlightAtTerm: false
})

/** A planned request. */
export interface Plan {
  readonly index: number
  readonly kind: Kind
  readonly variant: string
  readonly requestId: string
  readonly accountId: string
  readonly key: string
  readonly model: string
  readonly stream: boolean
  readonly maxTokens: number
  readonly includeUsage: boolean
  /** abort-stream: content chunks before the abort; abort-early: milliseconds before the abort. */
  readonly abortAt: number
}

/** Shared client settings. */
export interface ClientSettings {
  /** The relay's origin (`http://127.0.0.1:PORT`). */
  readonly url: string
  /** Slow readers pause this long after their second content chunk. */
  readonly pauseMs: number
  /** Hang/stall clients give up after this long. */
  readonly hungClientMs: number
  /** No request of the probe lasts longer than this (then the client aborts). */
  readonly requestBoundMs: number
  /** A key of an account whose wallet cannot pay (for 403s). */
  readonly poorKey: string
}

/** Whether a body is OpenAI's error shape `{"error":{"message","type","code"}}` with a non-empty message. */
export const isErrorShape = (text: string | undefined): boolean => {
  if (text === undefined) return false
  try {
    const body = JSON.parse(text) as { error?: { message?: unknown; type?: unknown; code?: unknown } }
    const e = body?.error
    return typeof e === "object" && e !== null && typeof e.message === "string" && e.message.length > 0 &&
      typeof e.type === "string" && typeof e.code === "string"
  } catch {
    return false
  }
}

const messagesOf = (plan: Plan) => [{ role: "user" as const, content: `soak request ${plan.index}: say hello` }]

/** Reads SSE events out of arriving text; calls `onData` with every `data:` payload. */
const sseReader = (onData: (data: string) => void) => {
  let buffer = ""
  return (text: string) => {
    buffer += text
    for (;;) {
      const end = buffer.search(/\r?\n\r?\n/)
      if (end < 0) return
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "")
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join(
        "\n"
      )
      if (data !== "") onData(data)
    }
  }
}

/** Applies one SSE `data:` payload of a chat stream to the outcome. */
const applyEvent = (outcome: Outcome, state: { finished: boolean }, data: string) => {
  if (data === "[DONE]") {
    if (state.finished && outcome.failure === undefined) outcome.completed = true
    return
  }
  try {
    const event = JSON.parse(data) as {
      error?: unknown
      choices?: Array<{ delta?: { content?: unknown }; finish_reason?: unknown }>
    }
    if (event.error !== undefined) outcome.failure = `sse error event: ${JSON.stringify(event.error).slice(0, 200)}`
    for (const choice of event.choices ?? []) {
      if (typeof choice.delta?.content === "string" && choice.delta.content.length > 0) {
        outcome.contentChunks++
        outcome.delivered = true
      }
      if (choice.finish_reason === "stop") state.finished = true
    }
  } catch {
    outcome.failure = `unparsable sse data: ${data.slice(0, 100)}`
  }
}

/** Whether a non-stream body delivered completion content (chat message or embeddings). */
const deliveredJson = (text: string): boolean => {
  try {
    const body = JSON.parse(text) as { choices?: Array<{ message?: { content?: unknown } }>; data?: Array<unknown> }
    if (Array.isArray(body.data)) return body.data.length > 0
    return (body.choices ?? []).some((c) => typeof c.message?.content === "string" && c.message.content.length > 0)
  } catch {
    return false
  }
}

/** The body of a planned chat request. */
const chatBody = (plan: Plan) => ({
  model: plan.model,
  messages: messagesOf(plan),
  max_tokens: plan.maxTokens,
  ...(plan.stream ? { stream: true, ...(plan.includeUsage ? { stream_options: { include_usage: true } } : {}) } : {})
})

// ---------------------------------------------------------------------------
// the official client
// ---------------------------------------------------------------------------

const openaiFor = (settings: ClientSettings, plan: Plan, outcome: Outcome) =>
  new OpenAI({
    apiKey: plan.key,
    baseURL: `${settings.url}/v1`,
    maxRetries: 0,
    timeout: settings.requestBoundMs,
    fetch: async (input, init) => {
      const response = await fetch(input, init)
      outcome.status = response.status
      if (response.status >= 400) outcome.errorBody = await response.clone().text()
      return response
    }
  })

const viaOpenAI = async (settings: ClientSettings, plan: Plan, outcome: Outcome): Promise<void> => {
  const client = openaiFor(settings, plan, outcome)
  const options = { headers: { "x-request-id": plan.requestId } }
  try {
    if (plan.kind === "embed") {
      const result = await client.embeddings.create({ model: plan.model, input: `soak input ${plan.index}` }, options)
      outcome.delivered = result.data.length > 0
      outcome.completed = true
      return
    }
    if (!plan.stream) {
      const result = await client.chat.completions.create(
        chatBody(plan) as OpenAI.ChatCompletionCreateParamsNonStreaming,
        options
      )
      const content = result.choices[0]?.message?.content
      outcome.delivered = typeof content === "string" && content.length > 0
      outcome.completed = true
      return
    }
    const stream = await client.chat.completions.create(
      chatBody(plan) as OpenAI.ChatCompletionCreateParamsStreaming,
      options
    )
    let finished = false
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        if (typeof choice.delta?.content === "string" && choice.delta.content.length > 0) {
          outcome.contentChunks++
          outcome.delivered = true
        }
        if (choice.finish_reason === "stop") finished = true
      }
    }
    outcome.completed = finished
  } catch (error) {
    if (error instanceof OpenAI.APIConnectionTimeoutError) {
      outcome.clientAborted = true
      outcome.clientTimedOut = true
    }
    // An HTTP error was recorded by the fetch wrapper; anything else is a failure.
    if (!(error instanceof OpenAI.APIError) || error.status === undefined) {
      outcome.failure = error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error)
    }
  }
}

// ---------------------------------------------------------------------------
// node:http
// ---------------------------------------------------------------------------

interface RawScript {
  readonly method: string
  readonly path: string
  readonly headers: Record<string, string>
  readonly body?: string
  /** Abort once this many content chunks arrived. */
  readonly abortAfterChunks?: number
  /** Abort this many milliseconds after sending. */
  readonly abortAfterMs?: number
  /** Pause reading for `ms` once `chunks` content chunks arrived. */
  readonly pause?: { readonly chunks: number; readonly ms: number }
  /** The client gives up after this long. */
  readonly boundMs: number
}

const raw = (settings: ClientSettings, script: RawScript, outcome: Outcome): Promise<void> =>
  new Promise<void>((resolve) => {
    const url = new URL(script.path, settings.url)
    const timers: Array<NodeJS.Timeout> = []
    let settled = false
    const finish = () => {
      if (settled) return
      settled = true
      for (const t of timers) clearTimeout(t)
      resolve()
    }
    const request = Http.request(url, {
      method: script.method,
      headers: {
        ...script.headers,
        ...(script.body !== undefined ? { "content-length": String(Buffer.byteLength(script.body)) } : {})
      }
    })
    const abort = (timedOut: boolean) => {
      if (settled) return
      outcome.clientAborted = true
      if (timedOut) outcome.clientTimedOut = true
      request.destroy()
      finish()
    }
    timers.push(setTimeout(() => abort(true), script.boundMs))
    if (script.abortAfterMs !== undefined) timers.push(setTimeout(() => abort(false), script.abortAfterMs))
    request.on("error", (error: NodeJS.ErrnoException) => {
      if (!outcome.clientAborted) outcome.failure = `${error.code ?? "error"}: ${error.message}`
      finish()
    })
    request.on("response", (response) => {
      outcome.status = response.statusCode
      const isStream = (response.headers["content-type"] ?? "").startsWith("text/event-stream")
      const state = { finished: false }
      let text = ""
      let paused = false
      const feed = sseReader((data) => applyEvent(outcome, state, data))
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => {
        if (!isStream) {
          text += chunk
          return
        }
        feed(chunk)
        if (script.abortAfterChunks !== undefined && outcome.contentChunks >= script.abortAfterChunks) {
          return abort(false)
        }
        if (script.pause !== undefined && !paused && outcome.contentChunks >= script.pause.chunks) {
          paused = true
          response.pause()
          timers.push(setTimeout(() => response.resume(), script.pause.ms))
        }
      })
      response.on("end", () => {
        if (!isStream) {
          if ((outcome.status ?? 0) >= 400) outcome.errorBody = text
          else if (deliveredJson(text)) {
            outcome.delivered = true
            outcome.completed = true
          }
        }
        finish()
      })
      response.on("error", (error: NodeJS.ErrnoException) => {
        if (!outcome.clientAborted) outcome.failure = `${error.code ?? "error"}: ${error.message}`
        finish()
      })
      response.on("close", () => {
        if (!response.complete && !outcome.clientAborted && outcome.failure === undefined) {
          outcome.failure = "connection closed before the response ended"
        }
        if ((outcome.status ?? 0) >= 400 && outcome.errorBody === undefined) outcome.errorBody = text
        finish()
      })
    })
    request.end(script.body)
  })

const chatScript = (plan: Plan, extra: Partial<RawScript> & { readonly boundMs: number }): RawScript => ({
  method: "POST",
  path: "/v1/chat/completions",
  headers: {
    authorization: `Bearer ${plan.key}`,
    "content-type": "application/json",
    "x-request-id": plan.requestId
  },
  body: JSON.stringify(chatBody(plan)),
  ...extra
})

/** The invalid requests of the mix (`variant` picks one); each must get a JSON error. */
export const INVALID_VARIANTS = [
  "bad-json",
  "no-messages",
  "unknown-model",
  "bad-key",
  "no-key",
  "poor-account",
  "long-request-id",
  "unknown-route",
  "wrong-method"
] as const

const invalidScript = (settings: ClientSettings, plan: Plan): RawScript => {
  const base = chatScript(plan, { boundMs: settings.requestBoundMs })
  const json = (body: unknown): RawScript => ({ ...base, body: JSON.stringify(body) })
  switch (plan.variant as (typeof INVALID_VARIANTS)[number]) {
    case "bad-json":
      return { ...base, body: `{"model":"${MODELS.ok}","messages":[` }
    case "no-messages":
      return json({ model: MODELS.ok, max_tokens: 8 })
    case "unknown-model":
      return json({ model: "soak-no-such-model", messages: messagesOf(plan) })
    case "bad-key":
      return { ...base, headers: { ...base.headers, authorization: "Bearer sk-not-a-key" } }
    case "no-key": {
      const { authorization: _, ...headers } = base.headers
      return { ...base, headers }
    }
    case "poor-account":
      return { ...base, headers: { ...base.headers, authorization: `Bearer ${settings.poorKey}` } }
    case "long-request-id":
      return { ...base, headers: { ...base.headers, "x-request-id": `${plan.requestId}-${"x".repeat(200)}` } }
    case "unknown-route":
      return { ...base, path: "/v1/soak-no-such-route" }
    case "wrong-method": {
      const { "content-type": _, ...headers } = base.headers
      const { body: __, ...rest } = base
      return { ...rest, method: "GET", headers }
    }
  }
}

/** Sends one planned request and records what its client saw. */
export const fire = async (settings: ClientSettings, plan: Plan, outcome: Outcome): Promise<void> => {
  outcome.startedAt = performance.now()
  try {
    switch (plan.kind) {
      case "json":
      case "stream":
      case "embed":
      case "flaky":
      case "slow-json":
      case "slow-stream":
      case "fail":
      case "long-stream":
        return await viaOpenAI(settings, plan, outcome)
      case "slow-reader":
        return await raw(
          settings,
          chatScript(plan, { pause: { chunks: 2, ms: settings.pauseMs }, boundMs: settings.requestBoundMs }),
          outcome
        )
      case "abort-stream":
        return await raw(
          settings,
          chatScript(plan, { abortAfterChunks: plan.abortAt, boundMs: settings.requestBoundMs }),
          outcome
        )
      case "abort-early":
        return await raw(
          settings,
          chatScript(plan, { abortAfterMs: plan.abortAt, boundMs: settings.requestBoundMs }),
          outcome
        )
      case "hang":
      case "stall":
        return await raw(settings, chatScript(plan, { boundMs: settings.hungClientMs }), outcome)
      case "invalid":
        return await raw(settings, invalidScript(settings, plan), outcome)
    }
  } finally {
    outcome.endedAt = performance.now()
  }
}
