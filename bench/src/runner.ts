/**
 * Timed slices: `workers` concurrent loops, each running sessions back to back
 * until the deadline; a slice ends when the last in-flight session finishes.
 *
 * The SDK side has a hard cap (deadline + `capGraceMillis`): sessions still
 * running then (a PostgreSQL deadlock storm waits `deadlock_timeout` per
 * deadlock, and retries) are interrupted — the SDK rolls their transaction
 * back — and do not count; what they left behind is read back from the
 * database so the final verification stays exact. The baselines need no cap
 * (they take their locks in one order and do not deadlock).
 */
import { Duration, Effect } from "effect"
import type { Knex } from "knex"
import type { Billing } from "./sdk.js"
import { sdkSession } from "./sdk.js"
import type { Expected, SessionInput } from "./workload.js"

export interface Slice {
  readonly sessions: number
  readonly millis: number
  readonly latencies: Array<number>
  /** Process CPU time (user + system) during the slice, ms. */
  readonly cpuMillis: number
  /** Peak RSS sampled every 50 ms during the slice (bytes). */
  readonly peakRss: number
  /** Sessions interrupted at the hard cap. */
  readonly abandoned: number
}

const meter = () => {
  let peak = process.memoryUsage.rss()
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss())
  }, 50)
  const cpu = process.cpuUsage()
  const start = performance.now()
  return () => {
    clearInterval(timer)
    const used = process.cpuUsage(cpu)
    return {
      millis: performance.now() - start,
      cpuMillis: (used.user + used.system) / 1000,
      peakRss: Math.max(peak, process.memoryUsage.rss())
    }
  }
}

/** A baseline's session: resolves once settled; sets `state.opened` once its open committed. */
export type SessionFn = (input: SessionInput, state: { opened: boolean }) => Promise<void>

/** `workers` concurrent loops of a baseline's sessions until the deadline (raw, driver). */
export const loopSlice = async (
  session: SessionFn,
  workers: number,
  millis: number,
  next: () => SessionInput,
  expected: Expected
): Promise<Slice> => {
  const latencies: Array<number> = []
  const stop = meter()
  const deadline = performance.now() + millis
  const worker = async () => {
    while (performance.now() < deadline) {
      const input = next()
      const state = { opened: false }
      const t0 = performance.now()
      try {
        await session(input, state)
        latencies.push(performance.now() - t0)
        expected.settle(input)
      } catch (error) {
        expected.fail(input, error, state.opened)
      }
    }
  }
  await Promise.all(Array.from({ length: workers }, worker))
  return { sessions: latencies.length, latencies, abandoned: 0, ...stop() }
}

export const sdkSlice = async (
  billing: Billing,
  knex: Knex,
  holdsTable: string,
  workers: number,
  millis: number,
  capGraceMillis: number,
  next: () => SessionInput,
  expected: Expected
): Promise<Slice> => {
  const latencies: Array<number> = []
  const interrupted: Array<SessionInput> = []
  const stop = meter()
  const deadline = performance.now() + millis
  const worker = Effect.gen(function*() {
    while (performance.now() < deadline) {
      const input = next()
      const state = { opened: false }
      const t0 = performance.now()
      const result = yield* Effect.result(sdkSession(billing, input, state)).pipe(
        Effect.onInterrupt(() => Effect.sync(() => interrupted.push(input)))
      )
      if (result._tag === "Success") {
        latencies.push(performance.now() - t0)
        expected.settle(input)
      } else {
        expected.fail(input, result.failure, state.opened)
      }
    }
  })
  await Effect.runPromise(
    Effect.forEach(Array.from({ length: workers }, () => worker), (w) => w, { concurrency: "unbounded", discard: true })
      .pipe(
        Effect.timeoutOption(Duration.millis(millis + capGraceMillis))
      )
  )
  const measured = stop()
  // What did the interrupted sessions leave behind? (rolled back, open and pending, or settled)
  for (const input of interrupted) {
    const row = await knex(holdsTable).where({ id: input.holdId }).first("status")
    expected.abandoned++
    if (row?.status === "settled") expected.settle(input)
    else if (row?.status === "pending") expected.keepOpen(input)
  }
  return { sessions: latencies.length, latencies, abandoned: interrupted.length, ...measured }
}

export const percentile = (sorted: ReadonlyArray<number>, p: number): number => {
  if (sorted.length === 0) return Number.NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]!
}
