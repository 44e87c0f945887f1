/**
 * The mock upstream of `pnpm bench:relay`: a real HTTP server (node:http on
 * 127.0.0.1, a free port) speaking OpenAI's chat-completions protocol, whose
 * answers always carry `usage` (`prompt_tokens` {@link PROMPT_TOKENS},
 * `completion_tokens` {@link COMPLETION_TOKENS}), so the price of every
 * answered request is known in advance.
 *
 * | base URL   | `POST …/chat/completions` (JSON, or SSE with `stream: true`)           |
 * |------------|-------------------------------------------------------------------------|
 * | `/v1`      | answers `delayMs` after the request body arrived                         |
 * | `/hold/v1` | answers when {@link MockUpstream.release} is called (or after `holdMs`) |
 *
 * @since 0.1.0
 */
import * as Http from "node:http"
import type { AddressInfo, Socket } from "node:net"

/** `usage.prompt_tokens` of every answer. */
export const PROMPT_TOKENS = 10
/** `usage.completion_tokens` of every answer (the content below, one token a word). */
export const COMPLETION_TOKENS = 5
const CONTENT = ["Hello", " from", " the", " mock", " upstream"]

/** The running upstream. */
export interface MockUpstream {
  /** `http://127.0.0.1:PORT` */
  readonly origin: string
  /** Requests received (bodies read), all paths. */
  readonly received: () => number
  /** Requests held on `/hold/v1` right now. */
  readonly held: () => number
  /** Answers every held request now (and every later one at once). */
  readonly release: () => void
  readonly close: () => Promise<void>
}

const json = (model: string) => ({
  id: "chatcmpl-mock",
  object: "chat.completion",
  created: 1_700_000_000,
  model,
  choices: [{ index: 0, message: { role: "assistant", content: CONTENT.join("") }, finish_reason: "stop" }],
  usage: {
    prompt_tokens: PROMPT_TOKENS,
    completion_tokens: COMPLETION_TOKENS,
    total_tokens: PROMPT_TOKENS + COMPLETION_TOKENS
  }
})

const sse = (model: string, includeUsage: boolean): string => {
  const base = { id: "chatcmpl-mock", object: "chat.completion.chunk", created: 1_700_000_000, model }
  const chunk = (delta: object, finish: string | null) => ({
    ...base,
    choices: [{ index: 0, delta, finish_reason: finish }]
  })
  const events: Array<object> = [
    chunk({ role: "assistant", content: "" }, null),
    ...CONTENT.map((content) => chunk({ content }, null)),
    chunk({}, "stop")
  ]
  if (includeUsage) {
    events.push({
      ...base,
      choices: [],
      usage: {
        prompt_tokens: PROMPT_TOKENS,
        completion_tokens: COMPLETION_TOKENS,
        total_tokens: PROMPT_TOKENS + COMPLETION_TOKENS
      }
    })
  }
  return events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join("") + "data: [DONE]\n\n"
}

/** Starts the upstream; `delayMs` before each `/v1` answer, `holdMs` the longest a `/hold/v1` request waits. */
export const start = async (options: { readonly delayMs: number; readonly holdMs?: number }): Promise<MockUpstream> => {
  let received = 0
  let released = false
  const held = new Set<() => void>()
  const sockets = new Set<Socket>()
  const server = Http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      received++
      if (req.method !== "POST" || !req.url?.endsWith("/chat/completions")) {
        res.writeHead(404, { "content-type": "application/json" })
        res.end(JSON.stringify({ error: { message: "not found", type: "invalid_request_error", code: "not_found" } }))
        return
      }
      let body: { model?: unknown; stream?: unknown; stream_options?: { include_usage?: unknown } }
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"))
      } catch {
        res.writeHead(400, { "content-type": "application/json" })
        res.end(
          JSON.stringify({ error: { message: "bad json", type: "invalid_request_error", code: "invalid_request" } })
        )
        return
      }
      const model = typeof body.model === "string" ? body.model : "mock"
      const answer = () => {
        if (res.destroyed) return
        if (body.stream === true) {
          res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
          res.end(sse(model, body.stream_options?.include_usage === true))
        } else {
          res.writeHead(200, { "content-type": "application/json" })
          res.end(JSON.stringify(json(model)))
        }
      }
      if (req.url.startsWith("/hold/")) {
        if (released) return answer()
        const go = () => {
          clearTimeout(timer)
          held.delete(go)
          answer()
        }
        const timer = setTimeout(go, options.holdMs ?? 30_000)
        held.add(go)
        return
      }
      if (options.delayMs > 0) setTimeout(answer, options.delayMs)
      else answer()
    })
  })
  server.keepAliveTimeout = 60_000
  server.maxHeadersCount = 0
  server.on("connection", (socket: Socket) => {
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
  })
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen({ port: 0, host: "127.0.0.1", backlog: 16_384 }, () => resolve())
  })
  const { port } = server.address() as AddressInfo
  return {
    origin: `http://127.0.0.1:${port}`,
    received: () => received,
    held: () => held.size,
    release: () => {
      released = true
      for (const go of [...held]) go()
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const go of [...held]) go()
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      })
  }
}
