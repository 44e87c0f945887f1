/**
 * Whether the client of a request is still connected, decided by what the
 * process has received rather than by which callback the event loop happens
 * to run first.
 *
 * Node reports a client that went away in steps: the socket's end-of-file is
 * read in one turn of the event loop, the connection is closed in a later
 * turn, and only then does the HTTP server abort the request (interrupting its
 * handler fiber; the same with the relay's bridge and `@effect/platform-node`).
 * On a busy relay the upstream's answer and the client's close can be read in
 * the same turn, so without care a handler settles the full cost for a client
 * that was already gone. {@link connected} first lets the event loop finish
 * the turns in which a close that already reached the process is reported
 * (`setImmediate` callbacks: event-loop turns, not wall-clock time), then
 * looks at the request: an aborted `Request` signal, or an ended / destroyed
 * socket of a Node `IncomingMessage`.
 *
 * @internal
 */
import { Effect } from "effect"
import type { HttpServerRequest } from "effect/http/HttpServerRequest"

/**
 * Event-loop turns after which a close that had reached the process has been
 * reported: its end-of-file (turn 1), the socket's shutdown and close (turn
 * 2), the server's `close` handlers (run before turn 3's `setImmediate`).
 */
const TURNS = 3

/** Waits for `turns` turns of the event loop (each one `setImmediate`). */
export const eventLoopTurns = (turns: number): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    let left = turns
    let handle: ReturnType<typeof setImmediate> | undefined
    const step = () => {
      left -= 1
      if (left <= 0) resume(Effect.void)
      else handle = setImmediate(step)
    }
    handle = setImmediate(step)
    return Effect.sync(() => {
      if (handle !== undefined) clearImmediate(handle)
    })
  })

/** Whether the request's own transport says the client is gone (no waiting). */
export const isGone = (request: HttpServerRequest): boolean => {
  const source = request.source as {
    readonly signal?: AbortSignal
    readonly destroyed?: boolean
    readonly socket?: { readonly destroyed?: boolean; readonly readableEnded?: boolean } | null
  } | null
  if (source === null || typeof source !== "object") return false
  if (source.signal !== undefined && source.signal.aborted) return true
  const socket = source.socket
  if (socket !== undefined && socket !== null) return socket.destroyed === true || socket.readableEnded === true
  return false
}

/**
 * `true` while the client is connected (see the module docs). When it is
 * gone, the server interrupts the calling handler during the wait; `false`
 * covers a transport that reports the close without interrupting.
 */
export const connected = (request: HttpServerRequest): Effect.Effect<boolean> =>
  Effect.map(eventLoopTurns(TURNS), () => !isGone(request))

/**
 * Drops the client's connection when the transport exposes its socket (a Node
 * `IncomingMessage`, as with `@effect/platform-node`); otherwise does nothing
 * (the server drops it when the response body fails at its next read).
 */
export const disconnect = (request: HttpServerRequest): Effect.Effect<void> =>
  Effect.sync(() => {
    const socket = (request.source as { readonly socket?: { destroy?: () => void } | null } | null)?.socket
    if (socket !== undefined && socket !== null && typeof socket.destroy === "function") socket.destroy()
  })
