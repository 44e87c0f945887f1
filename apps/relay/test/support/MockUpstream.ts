/**
 * A real OpenAI-compatible HTTP server for the relay's tests (node:http on
 * 127.0.0.1, a free port).
 *
 * Routes: `POST /v1/chat/completions` (JSON, or SSE with `stream: true`: chunk
 * lines, then — when the request has `stream_options.include_usage` — a final
 * chunk with empty `choices` and `usage`, then `data: [DONE]`),
 * `POST /v1/embeddings`, `GET /v1/models`.
 *
 * Programmable: `enqueue(...)` behaviours consumed one per request (then the
 * `setDefault` one): a normal answer with chosen content, chunks and usage; an
 * HTTP error with OpenAI's error JSON; a reset (the socket is destroyed before
 * any response); a slow stream (a delay between chunks); a stream paused at a
 * known chunk until the test releases it or the client leaves; a broken stream (the
 * socket is destroyed after N chunks, before the usage); headers then silence
 * (`stallAfterHeaders`). Every request is
 * recorded (method, path, headers, parsed body) with whether its response has
 * completed.
 */
import * as Http from "node:http"
import type { AddressInfo, Socket } from "node:net"

/** Token usage as OpenAI reports it. */
export interface MockUsage {
  readonly prompt_tokens: number
  readonly completion_tokens: number
}

/** What the mock does with one request. */
export type Behavior =
  | {
    readonly type: "ok"
    /** The completion's content deltas (stream) — joined for a non-stream answer. Default `["Hello", " from", " mock"]`. */
    readonly chunks?: ReadonlyArray<string>
    /** Default `{ prompt_tokens: 10, completion_tokens: 3 }` (embeddings: `prompt_tokens` only). */
    readonly usage?: MockUsage
    /** Milliseconds between stream events (and before the first content chunk). Default 0. */
    readonly delayMs?: number
    /** Leave the `usage` out (non-stream) or never send the usage chunk (stream). */
    readonly omitUsage?: boolean
    /**
     * A stream waits for this before its final (`finish_reason`) chunk, a
     * non-stream answer before it is written: the test decides when it ends.
     */
    readonly gate?: Promise<void>
    /**
     * Stream only: after the role chunk and this many content chunks, send nothing more
     * until `release` resolves (then go on), or, without `release`, until the client goes
     * away. Lets a test act at a known point of the stream without timing it.
     */
    readonly holdAfter?: number
    /** Ends a `holdAfter` pause (see there). */
    readonly release?: Promise<void>
  }
  | {
    readonly type: "error"
    readonly status: number
    /** OpenAI error fields; defaults derived from the status. */
    readonly message?: string
    readonly code?: string
    readonly errorType?: string
  }
  /** Destroy the socket as soon as the request arrived (no response at all). */
  | { readonly type: "reset" }
  /** A stream that sends its role chunk and `afterChunks` content chunks, then destroys the socket. */
  | {
    readonly type: "break"
    readonly afterChunks: number
    readonly chunks?: ReadonlyArray<string>
    readonly delayMs?: number
  }
  /** Send 200 SSE headers, then destroy the socket before any event. */
  | { readonly type: "dropAfterHeaders" }
  /** Answer 200 with a body that is not JSON. */
  | { readonly type: "garbage" }
  /** Never answer (until the client gives up or the mock closes). */
  | { readonly type: "hang" }
  /**
   * Send 200 headers (`text/event-stream` for a stream request, else
   * `application/json`), optionally the first `bodyPrefix` characters of a
   * body, then nothing until the client goes away.
   */
  | { readonly type: "stallAfterHeaders"; readonly bodyPrefix?: string }

/** A request the mock received. */
export interface RecordedRequest {
  readonly method: string
  readonly path: string
  readonly headers: Http.IncomingHttpHeaders
  readonly rawBody: string
  /** The parsed JSON body (`undefined` when empty or not JSON). */
  readonly body: any
  /** The response body bytes written so far (as text). */
  sent: string
  /** Whether the response headers were written (flushed). */
  headersSent: boolean
  /** Whether the response was fully written (or the socket destroyed). */
  completed: boolean
  /** Resolves when `completed` becomes true. */
  readonly finished: Promise<void>
}

export interface MockUpstream {
  /** Base URL with the version prefix, e.g. `http://127.0.0.1:PORT/v1`. */
  readonly url: string
  readonly requests: Array<RecordedRequest>
  /** Behaviours for the next requests, one each, in order. */
  enqueue(...behaviors: Array<Behavior>): void
  /** The behaviour once the queue is empty (initially `{ type: "ok" }`). */
  setDefault(behavior: Behavior): void
  /** Model ids listed by `GET /v1/models`. */
  models: Array<string>
  /** Clears the queue, the records and the default. */
  reset(): void
  close(): Promise<void>
}

export const DEFAULT_CHUNKS = ["Hello", " from", " mock"] as const
export const DEFAULT_USAGE: MockUsage = { prompt_tokens: 10, completion_tokens: 3 }

const errorDefaults = (status: number): { type: string; code: string; message: string } => {
  if (status === 400) return { type: "invalid_request_error", code: "invalid_request", message: "bad request" }
  if (status === 401) return { type: "invalid_request_error", code: "invalid_api_key", message: "Incorrect API key" }
  if (status === 429) return { type: "rate_limit_error", code: "rate_limit_exceeded", message: "Rate limit reached" }
  return { type: "server_error", code: "server_error", message: `upstream failure ${status}` }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

let counter = 0

/** Starts a mock upstream on 127.0.0.1 with a free port. */
export const start = async (): Promise<MockUpstream> => {
  let queue: Array<Behavior> = []
  let fallback: Behavior = { type: "ok" }
  const requests: Array<RecordedRequest> = []
  const sockets = new Set<Socket>()
  const byResponse = new WeakMap<Http.ServerResponse, RecordedRequest>()

  const state = {
    models: ["gpt-4o-mini", "text-embedding-3-small"]
  }

  const server = Http.createServer((req, res) => {
    const parts: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => parts.push(chunk))
    req.on("end", () => {
      const rawBody = Buffer.concat(parts).toString("utf8")
      let body: unknown
      try {
        body = rawBody === "" ? undefined : JSON.parse(rawBody)
      } catch {
        body = undefined
      }
      let markFinished!: () => void
      const finished = new Promise<void>((resolve) => (markFinished = resolve))
      const record: RecordedRequest = {
        method: req.method ?? "",
        path: req.url ?? "",
        headers: req.headers,
        rawBody,
        body,
        sent: "",
        headersSent: false,
        completed: false,
        finished
      }
      requests.push(record)
      byResponse.set(res, record)
      const complete = () => {
        if (!record.completed) {
          record.completed = true
          markFinished()
        }
      }
      res.on("close", complete)
      const behavior = queue.shift() ?? fallback
      void handle(req, res, record, behavior).catch(() => res.destroy()).finally(complete)
    })
  })
  server.on("connection", (socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
  })

  const json = (res: Http.ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body)
    const record = byResponse.get(res)
    if (record !== undefined) record.sent += text
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
    if (record !== undefined) record.headersSent = true
    res.end(text)
  }

  const handle = async (
    req: Http.IncomingMessage,
    res: Http.ServerResponse,
    record: RecordedRequest,
    behavior: Behavior
  ): Promise<void> => {
    const path = (req.url ?? "").split("?")[0]
    const known = (req.method === "POST" && (path === "/v1/chat/completions" || path === "/v1/embeddings")) ||
      (req.method === "GET" && path === "/v1/models")
    if (!known) {
      return json(res, 404, { error: { message: "not found", type: "invalid_request_error", code: "not_found" } })
    }

    if (behavior.type === "reset") {
      req.socket.destroy()
      return
    }
    if (behavior.type === "error") {
      const d = errorDefaults(behavior.status)
      return json(res, behavior.status, {
        error: {
          message: behavior.message ?? d.message,
          type: behavior.errorType ?? d.type,
          param: null,
          code: behavior.code ?? d.code
        }
      })
    }
    if (behavior.type === "dropAfterHeaders") {
      res.writeHead(200, { "content-type": "text/event-stream" })
      res.flushHeaders()
      await sleep(20)
      req.socket.destroy()
      return
    }
    if (behavior.type === "stallAfterHeaders") {
      const stream = (record.body as { stream?: unknown } | undefined)?.stream === true
      res.writeHead(200, { "content-type": stream ? "text/event-stream" : "application/json" })
      res.flushHeaders()
      record.headersSent = true
      if (behavior.bodyPrefix !== undefined) {
        record.sent += behavior.bodyPrefix
        res.write(behavior.bodyPrefix)
      }
      await new Promise<void>((resolve) => (res.destroyed ? resolve() : res.on("close", resolve)))
      return
    }
    if (behavior.type === "hang") {
      await new Promise<void>((resolve) => res.on("close", resolve))
      return
    }
    if (behavior.type === "garbage") {
      res.writeHead(200, { "content-type": "application/json" })
      res.end("<html>not json</html>")
      return
    }

    if (path === "/v1/models") {
      return json(res, 200, {
        object: "list",
        data: state.models.map((id) => ({ id, object: "model", created: 0, owned_by: "mock" }))
      })
    }

    const body = (record.body ?? {}) as Record<string, any>
    const model = typeof body.model === "string" ? body.model : "unknown"

    if (path === "/v1/embeddings") {
      const usage = behavior.type === "ok" ? behavior.usage ?? DEFAULT_USAGE : DEFAULT_USAGE
      const inputs: Array<unknown> = Array.isArray(body.input) ? body.input : [body.input]
      return json(res, 200, {
        object: "list",
        data: inputs.map((_, index) => ({ object: "embedding", index, embedding: [0.1, 0.2, 0.3] })),
        model,
        usage: { prompt_tokens: usage.prompt_tokens, total_tokens: usage.prompt_tokens }
      })
    }

    // chat completions
    const chunks = behavior.chunks ?? DEFAULT_CHUNKS
    const usage = behavior.type === "ok" ? behavior.usage ?? DEFAULT_USAGE : DEFAULT_USAGE
    const fullUsage = { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens }
    const id = `chatcmpl-mock-${++counter}`
    const created = 1_700_000_000

    if (body.stream !== true) {
      if (behavior.type === "break") {
        req.socket.destroy()
        return
      }
      if (behavior.type === "ok" && behavior.gate !== undefined) await behavior.gate
      if (res.destroyed) return
      return json(res, 200, {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [{ index: 0, message: { role: "assistant", content: chunks.join("") }, finish_reason: "stop" }],
        ...(behavior.omitUsage === true ? {} : { usage: fullUsage })
      })
    }

    const includeUsage = body.stream_options?.include_usage === true
    const delayMs = behavior.delayMs ?? 0
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" })
    res.flushHeaders()
    record.headersSent = true
    const chunk = (delta: Record<string, unknown>, finish: string | null) => ({
      id,
      object: "chat.completion.chunk",
      created,
      model,
      choices: [{ index: 0, delta, finish_reason: finish }],
      ...(includeUsage ? { usage: null } : {})
    })
    const write = async (payload: unknown) => {
      if (res.destroyed) return
      const text = `data: ${typeof payload === "string" ? payload : JSON.stringify(payload)}\n\n`
      record.sent += text
      // resolve once flushed, so that a later socket destroy never swallows it
      await new Promise<void>((resolve) => res.write(text, () => resolve()))
    }
    await write(chunk({ role: "assistant", content: "" }, null))
    let sent = 0
    const hold = async () => {
      const gone = new Promise<"gone">((resolve) => {
        if (record.completed || res.destroyed) resolve("gone")
        else res.on("close", () => resolve("gone"))
      })
      const released = behavior.type === "ok" && behavior.release !== undefined ? behavior.release : undefined
      return released === undefined ? gone : Promise.race([released.then(() => "released" as const), gone])
    }
    for (const content of chunks) {
      if (behavior.type === "break" && sent >= behavior.afterChunks) break
      if (behavior.type === "ok" && behavior.holdAfter === sent && (await hold()) === "gone") return
      if (delayMs > 0) await sleep(delayMs)
      await write(chunk({ content }, null))
      sent++
    }
    if (behavior.type === "break") {
      if (delayMs > 0) await sleep(delayMs)
      req.socket.destroy()
      return
    }
    if (delayMs > 0) await sleep(delayMs)
    if (behavior.type === "ok" && behavior.gate !== undefined) await behavior.gate
    await write(chunk({}, "stop"))
    if (includeUsage && behavior.omitUsage !== true) {
      await write({ id, object: "chat.completion.chunk", created, model, choices: [], usage: fullUsage })
    }
    await write("[DONE]")
    res.end()
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => resolve())
  })
  const port = (server.address() as AddressInfo).port

  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    get models() {
      return state.models
    },
    set models(value: Array<string>) {
      state.models = value
    },
    enqueue: (...behaviors) => {
      queue.push(...behaviors)
    },
    setDefault: (behavior) => {
      fallback = behavior
    },
    reset: () => {
      queue = []
      fallback = { type: "ok" }
      requests.length = 0
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      })
  }
}

/**
 * A base URL on which nothing listens (a port that was free a moment ago):
 * connecting to it is refused.
 */
export const refusedUrl = async (): Promise<string> => {
  const server = Http.createServer()
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return `http://127.0.0.1:${port}/v1`
}
