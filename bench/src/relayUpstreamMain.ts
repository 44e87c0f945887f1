/**
 * The mock upstream ({@link MockUpstream}) in a process of its own, for the
 * memory section of `pnpm bench:relay`: 10,000 held upstream sockets plus the
 * bench's 10,000 client sockets would not fit one process's open-files limit.
 * Started with `fork` (IPC): it sends `{ origin }` once listening, then
 * `{ held, received }` every 50 ms; it answers every held request on
 * `"release"` and exits on `"close"`.
 *
 * @since 0.1.0
 */
import * as MockUpstream from "./relayUpstream.js"

const upstream = await MockUpstream.start({ delayMs: 0, holdMs: Number(process.env["MOCK_HOLD_MS"] ?? 600_000) })
process.send?.({ origin: upstream.origin })
const timer = setInterval(() => process.send?.({ held: upstream.held(), received: upstream.received() }), 50)
process.on("message", (message) => {
  if (message === "release") upstream.release()
  if (message === "close") {
    clearInterval(timer)
    void upstream.close().then(() => process.exit(0))
  }
})
process.on("disconnect", () => process.exit(0))
