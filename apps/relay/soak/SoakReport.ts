/**
 * The soak probe's report: the figures of a run, per request kind, the
 * checks, and their rendering as text.
 *
 * @since 0.1.0
 */
import type { Check, Row, Termination } from "./SoakChecks.js"
import type { Kind, Outcome } from "./SoakClients.js"
import { KINDS } from "./SoakClients.js"
import type { Kind as DatabaseKind } from "./SoakDatabase.js"
import type { Mode } from "./SoakUpstream.js"

/** Per request kind: what the clients saw. */
export interface KindFigures {
  count: number
  statuses: Record<string, number>
  delivered: number
  completed: number
  aborted: number
  timedOut: number
  failures: number
}

/** The result of a run. */
export interface Report {
  readonly db: DatabaseKind
  readonly requests: number
  readonly concurrency: number
  readonly seed: number
  /** Whether the relay accepted the `limits` section. */
  readonly limitsSupported: boolean
  readonly durationMs: number
  /** SIGTERM sent mid-burst. */
  readonly sigterm: Termination
  /** SIGTERM of the idle relay at the end. */
  readonly sigtermIdle: Termination
  readonly inFlightAtKill: number
  /** Holds pending right after the SIGKILL (the reaper ends them; the free-response check excludes them). */
  readonly orphanedByKill: number
  readonly inFlightAtTerm: number
  /** Milliseconds the probe waited after the burst until no hold was pending (or its bound). */
  readonly pendingWaitMs: number
  readonly byKind: Record<Kind, KindFigures>
  readonly upstream: Record<Mode, number>
  /** `ERROR` lines in the relay's log (informative). */
  readonly relayErrorLines: number
  readonly checks: ReadonlyArray<Check>
  /** Kept when a check failed or `keep` was set; removed otherwise. */
  readonly workDir: string
  /** Every request as the checks saw it. */
  readonly rows: ReadonlyArray<Row>
}

/** What the clients saw, per request kind. */
export const byKind = (outcomes: ReadonlyArray<Outcome>): Record<Kind, KindFigures> => {
  const figures = Object.fromEntries(KINDS.map((k): [Kind, KindFigures] => [k, {
    count: 0,
    statuses: {},
    delivered: 0,
    completed: 0,
    aborted: 0,
    timedOut: 0,
    failures: 0
  }])) as Record<Kind, KindFigures>
  for (const o of outcomes) {
    const f = figures[o.kind]
    f.count++
    const status = o.status === undefined ? "none" : String(o.status)
    f.statuses[status] = (f.statuses[status] ?? 0) + 1
    if (o.delivered) f.delivered++
    if (o.completed) f.completed++
    if (o.clientAborted) f.aborted++
    if (o.clientTimedOut) f.timedOut++
    if (o.failure !== undefined) f.failures++
  }
  return figures
}

const seconds = (t: number | undefined) => (t === undefined ? "not exited (killed)" : `${(t / 1000).toFixed(2)} s`)

/** The report as text: the figures, then one line per check (with up to 10 examples of a failure). */
export const format = (report: Report): string => {
  const failed = report.checks.filter((c) => !c.ok).length
  return [
    `soak on ${report.db}: ${report.requests} requests at ${report.concurrency} concurrent, seed ${report.seed}, ${
      (report.durationMs / 1000).toFixed(1)
    } s, limits ${report.limitsSupported ? "on" : "not supported by this relay"}`,
    `  SIGKILL with ${report.inFlightAtKill} in flight (${report.orphanedByKill} holds left pending); SIGTERM with ${report.inFlightAtTerm} in flight: ${
      seconds(report.sigterm.exitMs)
    }; idle SIGTERM: ${seconds(report.sigtermIdle.exitMs)}`,
    `  pending wait ${
      (report.pendingWaitMs / 1000).toFixed(1)
    } s; relay ERROR log lines ${report.relayErrorLines}; upstream requests ${JSON.stringify(report.upstream)}`,
    `  by kind (count delivered/completed/aborted/timed-out/failures statuses):`,
    ...Object.entries(report.byKind).map(([kind, f]) =>
      `    ${kind.padEnd(13)} ${
        String(f.count).padStart(5)
      }  ${f.delivered}/${f.completed}/${f.aborted}/${f.timedOut}/${f.failures}  ${JSON.stringify(f.statuses)}`
    ),
    ...report.checks.flatMap((c) => [
      `  ${c.ok ? "ok  " : "FAIL"} ${c.name}: ${c.figure}`,
      ...(c.ok ? [] : c.examples.map((e) => `         ${e}`))
    ]),
    `  ${failed === 0 ? "all checks passed" : `${failed} checks failed; work dir kept: ${report.workDir}`}`
  ].join("\n")
}

/** One line per request (for `--verbose`). */
export const formatRows = (report: Report): string =>
  report.rows.map((r) =>
    [
      r.requestId,
      r.variant.padEnd(22),
      `p${r.phase}`,
      String(r.status ?? "-").padStart(3),
      r.delivered ? (r.chunks > 0 ? `delivered:${r.chunks}` : "delivered") : "-",
      r.completed ? "completed" : r.aborted ? "aborted" : "-",
      r.cut ?? "-",
      `hold:${r.hold ?? "-"}`,
      `reserved:${r.reserved ?? "-"}`,
      `charged:${r.charged}`,
      `logs:${r.logRows}`,
      r.failure ?? ""
    ].join(" ")
  ).join("\n")
