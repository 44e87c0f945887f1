/**
 * The soak probe's upstream: a real OpenAI-compatible HTTP server (node:http on
 * 127.0.0.1, a free port) whose behaviour is chosen by the first path segment,
 * so that every relay channel points at one behaviour and concurrent requests
 * never depend on arrival order:
 *
 * | base URL            | chat (stream and non-stream)                                         |
 * |---------------------|----------------------------------------------------------------------|
 * | `/ok/v1`            | answers at once: `okChunks` content chunks, usage                    |
 * | `/slow/v1`          | the same answer, `slowDelayMs` before each chunk (non-stream: the sum) |
 * | `/big/v1`           | a large stream: `bigChunks` chunks of `bigChunkBytes` (for slow readers) |
 * | `/hang/v1`          | 200 headers, then silence until the relay goes away                  |
 * | `/stall/v1`         | role chunk and two content chunks, then silence (non-stream: half a body) |
 * | `/fail/v1`          | 500 with OpenAI's error JSON                                          |
 * | `/drip/v1`          | a long stream: `dripChunks` chunks, one every `dripDelayMs`           |
 *
 * Usage is always reported (non-stream: `usage`; stream: the final usage chunk
 * when the request asks for it): `prompt_tokens` = `promptTokens`,
 * `completion_tokens` = the number of content chunks, so the price of every
 * completed answer is known in advance. `POST …/embeddings` answers with
 * `prompt_tokens` = `promptTokens` on every path except `fail` and `hang`.
 *
 * @since 0.1.0
 */
import * as Http from "node:http"
import type { AddressInfo, Socket } from "node:net"

/** The behaviours, one per path prefix. */
export const MODES = ["ok", "slow", "big", "hang", "stall", "fail", "drip"] as const
/** @since 0.1.0 */
export type Mode = (typeof MODES)[number]

/** What the upstream sends. */
export interface Profile {
  /** `usage.prompt_tokens` of every answer. */
  readonly promptTokens: number
  /** Content chunks of `ok`, `slow` (and the first two of `stall`). */
  readonly okChunks: ReadonlyArray<string>
  /** Milliseconds before each `slow` chunk. */
  readonly slowDelayMs: number
  /** Chunks of a `big` stream, and the size of each. */
  readonly bigChunks: number
  readonly bigChunkBytes: number
  /** Chunks of a `drip` stream, and the time before each. */
  readonly dripChunks: number
  readonly dripDelayMs: number
}

/** @since 0.1.0 */
export const defaultProfile: Profile = {
  promptTokens: 12,
  okChunks: ["Soak", " test", " says", " hello", " to", " the", " relay", "."],
  slowDelayMs: 200,
  bigChunks: 3000,
  bigChunkBytes: 4096,
  dripChunks: 240,
  dripDelayMs: 250
}

/** Completion tokens the upstream reports for a completed answer in `mode` (stream or not). */
export const completionTokensOf = (profile: Profile, mode: "ok" | "slow" | "big" | "drip"): number =>
  mode === "big" ? profile.bigChunks : mode === "drip" ? profile.dripChunks : profile.okChunks.length

/** The running upstream. */
export interface SoakUpstream {
  /** `http://127.0.0.1:PORT` (append `/<mode>/v1` for a channel's base URL). */
  readonly origin: string
  /** Requests received, by mode. */
  readonly received: Record<Mode, number>
  /** Requests whose connection is still open, by mode. */
  readonly open: Record<Mode, number>
  close(): Promise<void>
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const zero = (): Record<Mode, number> => ({ ok: 0, slow: 0, big: 0, hang: 0, stall: 0, fail: 0, drip: 0 })

/** Starts the upstream on 127.0.0.1 (a free port). */
export const start = async (profile: Profile = defaultProfile): Promise<SoakUpstream> => {
  const received = zero()
  const open = zero()
  const sockets = new Set<Socket>()
  let counter = 0
  const bigContent = "lorem ipsum dolor sit amet ".repeat(Math.ceil(profile.bigChunkBytes / 27)).slice(
    0,
    profile.bigChunkBytes
  )

  const server = Http.createServer((req, res) => {
    const parts: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => parts.push(chunk))
    req.on("end", () => {
      const segments = (req.url ?? "").split("?")[0]!.split("/") // ["", mode, "v1", route]
      const mode = segments[1] as Mode
      const route = segments.slice(2).join("/")
      if (
        !MODES.includes(mode) || req.method !== "POST" || (route !== "v1/chat/completions" && route !== "v1/embeddings")
      ) {
        return json(res, 404, { error: { message: "not found", type: "invalid_request_error", code: "not_found" } })
      }
      let body: Record<string, any> = {}
      try {
        body = JSON.parse(Buffer.concat(parts).toString("utf8")) as Record<string, any>
      } catch {
        return json(res, 400, {
          error: { message: "bad json", type: "invalid_request_error", code: "invalid_request" }
        })
      }
      received[mode]++
      open[mode]++
      res.on("close", () => open[mode]--)
      const handler = route === "v1/embeddings" ? embeddings(res, mode, body) : chat(res, mode, body)
      void handler.catch(() => res.destroy())
    })
  })
  server.on("connection", (socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
  })

  const json = (res: Http.ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body)
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
    res.end(text)
  }
  const failure = (res: Http.ServerResponse) =>
    json(res, 500, {
      error: { message: "soak upstream failure", type: "server_error", param: null, code: "server_error" }
    })
  const untilClosed = (res: Http.ServerResponse) =>
    new Promise<void>((resolve) => (res.destroyed ? resolve() : res.on("close", () => resolve())))

  const embeddings = async (res: Http.ServerResponse, mode: Mode, body: Record<string, any>) => {
    if (mode === "fail") return failure(res)
    if (mode === "hang") {
      res.writeHead(200, { "content-type": "application/json" })
      res.flushHeaders()
      return untilClosed(res)
    }
    const inputs: Array<unknown> = Array.isArray(body["input"]) ? body["input"] : [body["input"]]
    return json(res, 200, {
      object: "list",
      data: inputs.map((_, index) => ({ object: "embedding", index, embedding: [0.1, 0.2, 0.3] })),
      model: body["model"],
      usage: { prompt_tokens: profile.promptTokens, total_tokens: profile.promptTokens }
    })
  }

  const chat = async (res: Http.ServerResponse, mode: Mode, body: Record<string, any>) => {
    if (mode === "fail") return failure(res)
    const id = `chatcmpl-soak-${++counter}`
    const model = typeof body["model"] === "string" ? body["model"] : "unknown"
    const created = 1_700_000_000
    const chunks = mode === "big"
      ? Array.from({ length: profile.bigChunks }, () => bigContent)
      : mode === "drip"
      ? Array.from({ length: profile.dripChunks }, (_, i) => ` drip${i}`)
      : profile.okChunks
    const usage = {
      prompt_tokens: profile.promptTokens,
      completion_tokens: chunks.length,
      total_tokens: profile.promptTokens + chunks.length
    }

    if (body["stream"] !== true) {
      if (mode === "hang") {
        res.writeHead(200, { "content-type": "application/json" })
        res.flushHeaders()
        return untilClosed(res)
      }
      if (mode === "stall") {
        res.writeHead(200, { "content-type": "application/json" })
        res.write(`{"id":"${id}","object":"chat.completion","choices":[`)
        return untilClosed(res)
      }
      if (mode === "slow") await sleep(profile.slowDelayMs * chunks.length)
      if (res.destroyed) return
      return json(res, 200, {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [{ index: 0, message: { role: "assistant", content: chunks.join("") }, finish_reason: "stop" }],
        usage
      })
    }

    const includeUsage = body["stream_options"]?.include_usage === true
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" })
    res.flushHeaders()
    if (mode === "hang") return untilClosed(res)
    const event = (delta: Record<string, unknown>, finish: string | null) => ({
      id,
      object: "chat.completion.chunk",
      created,
      model,
      choices: [{ index: 0, delta, finish_reason: finish }],
      ...(includeUsage ? { usage: null } : {})
    })
    // Resolves once written (or at once when the relay went away); waits for
    // `drain` when the socket's buffer is full, so a slow reader slows us down.
    const write = (payload: unknown) =>
      new Promise<void>((resolve) => {
        if (res.destroyed) return resolve()
        const ok = res.write(`data: ${typeof payload === "string" ? payload : JSON.stringify(payload)}\n\n`)
        if (ok) return resolve()
        const done = () => {
          res.off("drain", done)
          res.off("close", done)
          resolve()
        }
        res.on("drain", done)
        res.on("close", done)
      })
    await write(event({ role: "assistant", content: "" }, null))
    let sent = 0
    for (const content of chunks) {
      if (mode === "stall" && sent === 2) return untilClosed(res)
      if (mode === "slow") await sleep(profile.slowDelayMs)
      if (mode === "drip") await sleep(profile.dripDelayMs)
      if (res.destroyed) return
      await write(event({ content }, null))
      sent++
    }
    await write(event({}, "stop"))
    if (includeUsage) await write({ id, object: "chat.completion.chunk", created, model, choices: [], usage })
    await write("[DONE]")
    res.end()
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  return {
    origin: `http://127.0.0.1:${port}`,
    received,
    open,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      })
  }
}
