/**
 * A bridge between Node 20's `node:http` and Web `Request`/`Response` handlers.
 *
 * - IncomingMessage → Request: method, absolute URL, headers (repeated headers
 *   kept), a streaming body (`duplex: "half"`), and an `AbortSignal` that
 *   aborts when the client goes away before the response has been written.
 * - Response → ServerResponse: status, headers (every `set-cookie`), and the
 *   body written chunk by chunk as the handler produces it (no buffering; an
 *   event stream's headers are flushed at once). A body that fails midway
 *   destroys the socket, so the client never mistakes a broken response for a
 *   complete one. A client that goes away cancels the body.
 * - Shutdown: stop accepting, close idle keep-alive sockets, let in-flight
 *   requests finish until a deadline, then drop the remaining connections
 *   (which aborts their requests).
 *
 * @internal
 */
import type * as Http from "node:http"
import type { Socket } from "node:net"
import { Readable } from "node:stream"

/** A Web handler, as produced by `HttpEffect.toWebHandler*`. */
export type WebHandler = (request: Request) => Promise<Response>

const toHeaders = (raw: ReadonlyArray<string>): Headers => {
  const headers = new Headers()
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!
    if (name.startsWith(":")) continue
    try {
      headers.append(name, raw[i + 1]!)
    } catch {
      // a header value the Fetch API refuses: dropped
    }
  }
  return headers
}

/** Converts a Node request into a Web `Request` whose signal is `signal`. */
export const toWebRequest = (req: Http.IncomingMessage, signal: AbortSignal): Request => {
  const host = req.headers.host ?? "localhost"
  const encrypted = (req.socket as { encrypted?: boolean }).encrypted === true
  const url = new URL(req.url ?? "/", `${encrypted ? "https" : "http"}://${host}`)
  const method = req.method ?? "GET"
  const hasBody = method !== "GET" && method !== "HEAD"
  const init: RequestInit & { duplex?: "half" } = { method, headers: toHeaders(req.rawHeaders), signal }
  if (hasBody) {
    init.body = Readable.toWeb(req) as unknown as ReadableStream<Uint8Array>
    init.duplex = "half"
  }
  return new Request(url, init)
}

const waitForDrain = (res: Http.ServerResponse): Promise<void> =>
  new Promise((resolve) => {
    const done = () => {
      res.off("drain", done)
      res.off("close", done)
      resolve()
    }
    res.on("drain", done)
    res.on("close", done)
  })

/** Writes a Web `Response` to a Node response, streaming its body. */
export const writeWebResponse = async (
  response: Response,
  req: Http.IncomingMessage,
  res: Http.ServerResponse,
  options: { readonly closing: () => boolean }
): Promise<void> => {
  res.statusCode = response.status
  if (response.statusText !== "") res.statusMessage = response.statusText
  const cookies = response.headers.getSetCookie()
  for (const [name, value] of response.headers) {
    if (name === "set-cookie") continue
    res.setHeader(name, value)
  }
  if (cookies.length > 0) res.setHeader("set-cookie", cookies)
  if (options.closing()) res.setHeader("connection", "close")
  const body = response.body
  if (body === null || req.method === "HEAD") {
    if (body !== null) await body.cancel().catch(() => undefined)
    res.end()
    return
  }
  if ((response.headers.get("content-type") ?? "").startsWith("text/event-stream")) res.flushHeaders()
  const reader = body.getReader()
  const onClose = () => {
    if (!res.writableEnded) reader.cancel().catch(() => undefined)
  }
  res.on("close", onClose)
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      if (res.destroyed) return
      if (!res.write(value)) await waitForDrain(res)
    }
    res.end()
  } catch (error) {
    // The body failed (or was cancelled because the client left): never end cleanly.
    res.destroy(error instanceof Error ? error : new Error(String(error)))
  } finally {
    res.off("close", onClose)
    reader.releaseLock()
  }
}

/**
 * Serves a Web handler on a Node server, tracking in-flight requests so that
 * `shutdown` can drain them.
 */
export class NodeBridge {
  private readonly inFlight = new Set<Promise<void>>()
  /** Open sockets and how many requests each is serving. */
  private readonly sockets = new Map<Socket, number>()
  private closing = false

  constructor(readonly server: Http.Server) {
    server.on("connection", (socket: Socket) => {
      this.sockets.set(socket, 0)
      socket.once("close", () => this.sockets.delete(socket))
    })
  }

  /** Destroys the sockets serving no request (idle keep-alive or never used). */
  private closeIdleSockets(): void {
    for (const [socket, active] of this.sockets) if (active === 0) socket.destroy()
  }

  private track(socket: Socket, res: Http.ServerResponse): void {
    this.sockets.set(socket, (this.sockets.get(socket) ?? 0) + 1)
    res.once("close", () => {
      const active = (this.sockets.get(socket) ?? 1) - 1
      if (this.sockets.has(socket)) this.sockets.set(socket, active)
      // While closing, a socket is not kept alive once its last response is out.
      if (this.closing && active === 0) socket.end()
    })
  }

  /** The `request` listener for a handler. */
  listener(handler: WebHandler): (req: Http.IncomingMessage, res: Http.ServerResponse) => void {
    return (req, res) => {
      this.track(req.socket, res)
      const controller = new AbortController()
      res.on("close", () => {
        if (!res.writableEnded) {
          controller.abort(new Error("client disconnected"))
          res.destroy()
        }
      })
      const task = (async () => {
        let response: Response
        try {
          response = await handler(toWebRequest(req, controller.signal))
        } catch {
          if (!res.headersSent && !res.destroyed) {
            res.statusCode = 500
            res.end()
          } else res.destroy()
          return
        }
        if (controller.signal.aborted || res.destroyed) {
          // The client went away: drop the connection (a half-closed socket
          // would otherwise linger) and release the body.
          res.destroy()
          await response.body?.cancel().catch(() => undefined)
          return
        }
        await writeWebResponse(response, req, res, { closing: () => this.closing })
      })()
      this.inFlight.add(task)
      void task.finally(() => this.inFlight.delete(task))
    }
  }

  /** The number of requests being handled. */
  get pending(): number {
    return this.inFlight.size
  }

  /**
   * Stops accepting connections and waits up to `timeoutMs` for the in-flight
   * requests; then drops every remaining connection (aborting those requests)
   * and waits for their handlers to finish.
   */
  async shutdown(timeoutMs: number): Promise<void> {
    if (this.closing) return
    this.closing = true
    const closed = new Promise<void>((resolve) => {
      if (!this.server.listening) return resolve()
      this.server.close(() => resolve())
    })
    this.closeIdleSockets()
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs)
    })
    const drained = (async () => {
      while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight])
      this.closeIdleSockets()
      return "drained" as const
    })()
    const outcome = await Promise.race([drained, deadline])
    clearTimeout(timer)
    if (outcome === "timeout") {
      this.server.closeAllConnections()
      for (const socket of this.sockets.keys()) socket.destroy()
      await drained
    }
    await closed
  }
}
