/**
 * The chart of `pnpm bench:relay` (an SVG a reader can open in a browser or
 * see in the README): for each configuration (store × upstream), throughput
 * (req/s) and latency (p50 bar, p99 whisker), billing on beside billing off;
 * a footer with the memory section and the load average. Plain SVG text, no
 * dependency.
 *
 * @since 0.1.0
 */

interface ChartRow {
  readonly store: string
  readonly upstream: string
  readonly stream: boolean
  readonly billing: "on" | "off"
  readonly reqPerSec: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly exact: boolean
}

interface ChartMemory {
  readonly store: string
  readonly requested?: number | undefined
  readonly reachedInFlight: number
  readonly rssBeforeMiB: number
  readonly rssHeldMiB?: number | undefined
  readonly rssPeakMiB: number
  readonly rssAfterMiB: number
  readonly exact: boolean
}

/** What the chart reads of the report. */
export interface ChartInput {
  readonly when: string
  readonly loadAverage: { readonly before: ReadonlyArray<number>; readonly after: ReadonlyArray<number> }
  readonly settings: { readonly connections: number }
  readonly machine: { readonly cpus: number }
  readonly rows: ReadonlyArray<ChartRow>
  readonly memory: ReadonlyArray<ChartMemory>
}

const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

const COLORS = { on: "#2563eb", off: "#9ca3af" } as const

/** A "nice" axis maximum ≥ `value`. */
const niceMax = (value: number): number => {
  if (value <= 0) return 1
  const power = 10 ** Math.floor(Math.log10(value))
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value) return step * power
  }
  return 10 * power
}

const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2))

/**
 * Renders the chart.
 *
 * @since 0.1.0
 */
export const renderChart = (report: ChartInput): string => {
  const configs: Array<{ key: string; label: string }> = []
  for (const r of report.rows) {
    const key = `${r.store}|${r.upstream}|${r.stream}`
    if (!configs.some((c) => c.key === key)) {
      configs.push({
        key,
        label: `${r.store} · ${r.upstream === "demo" ? "demo channel" : "mock upstream"}${r.stream ? " (stream)" : ""}`
      })
    }
  }
  const rowOf = (key: string, billing: "on" | "off") =>
    report.rows.find((r) => `${r.store}|${r.upstream}|${r.stream}` === key && r.billing === billing)

  const labelWidth = 230
  const panelWidth = 330
  const gap = 40
  const barHeight = 14
  const groupHeight = barHeight * 2 + 14
  const top = 70
  const width = labelWidth + panelWidth * 2 + gap * 2 + 20
  const plotHeight = configs.length * groupHeight
  const footerLines = report.memory.length * 2 + 2
  const height = top + plotHeight + 40 + footerLines * 16 + 20

  const maxRps = niceMax(Math.max(1, ...report.rows.map((r) => r.reqPerSec)))
  const maxMs = niceMax(Math.max(1, ...report.rows.map((r) => r.p99Ms)))
  const x1 = labelWidth
  const x2 = labelWidth + panelWidth + gap
  const out: Array<string> = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12">`
  )
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`)
  out.push(
    `<text x="12" y="22" font-size="15" font-weight="600">Reference relay: billing on vs pass-through, ${report.settings.connections} connections (autocannon)</text>`
  )
  out.push(
    `<rect x="12" y="34" width="12" height="12" fill="${COLORS.on}"/><text x="30" y="44">billing on (relay serve)</text>`
  )
  out.push(
    `<rect x="190" y="34" width="12" height="12" fill="${COLORS.off}"/><text x="208" y="44">pass-through (same server, no reserve/settle)</text>`
  )
  out.push(`<text x="${x1}" y="${top - 8}" font-weight="600">requests / s (higher is better)</text>`)
  out.push(`<text x="${x2}" y="${top - 8}" font-weight="600">latency ms: p50 bar, p99 whisker (lower is better)</text>`)

  // gridlines
  for (let i = 0; i <= 4; i++) {
    const gx1 = x1 + (panelWidth * i) / 4
    const gx2 = x2 + (panelWidth * i) / 4
    out.push(`<line x1="${gx1}" y1="${top}" x2="${gx1}" y2="${top + plotHeight}" stroke="#e5e7eb"/>`)
    out.push(`<line x1="${gx2}" y1="${top}" x2="${gx2}" y2="${top + plotHeight}" stroke="#e5e7eb"/>`)
    out.push(
      `<text x="${gx1}" y="${top + plotHeight + 14}" text-anchor="middle" fill="#6b7280">${
        fmt((maxRps * i) / 4)
      }</text>`
    )
    out.push(
      `<text x="${gx2}" y="${top + plotHeight + 14}" text-anchor="middle" fill="#6b7280">${fmt((maxMs * i) / 4)}</text>`
    )
  }

  configs.forEach((config, index) => {
    const y = top + index * groupHeight + 6
    out.push(`<text x="${labelWidth - 8}" y="${y + barHeight + 4}" text-anchor="end">${escape(config.label)}</text>`)
    ;(["on", "off"] as const).forEach((billing, j) => {
      const r = rowOf(config.key, billing)
      if (r === undefined) return
      const by = y + j * barHeight
      const w = (panelWidth * r.reqPerSec) / maxRps
      out.push(
        `<rect x="${x1}" y="${by}" width="${w.toFixed(1)}" height="${barHeight - 2}" fill="${COLORS[billing]}"/>`
      )
      out.push(
        `<text x="${(x1 + w + 4).toFixed(1)}" y="${by + barHeight - 4}" fill="#111827">${fmt(r.reqPerSec)}${
          r.exact ? "" : " (not exact!)"
        }</text>`
      )
      const p50 = (panelWidth * r.p50Ms) / maxMs
      const p99 = (panelWidth * r.p99Ms) / maxMs
      const mid = by + (barHeight - 2) / 2
      out.push(
        `<rect x="${x2}" y="${by}" width="${Math.max(1, p50).toFixed(1)}" height="${barHeight - 2}" fill="${
          COLORS[billing]
        }"/>`
      )
      out.push(
        `<line x1="${(x2 + p50).toFixed(1)}" y1="${mid}" x2="${(x2 + p99).toFixed(1)}" y2="${mid}" stroke="#111827"/>`
      )
      out.push(
        `<line x1="${(x2 + p99).toFixed(1)}" y1="${by + 1}" x2="${(x2 + p99).toFixed(1)}" y2="${
          by + barHeight - 3
        }" stroke="#111827"/>`
      )
      out.push(
        `<text x="${(x2 + p99 + 4).toFixed(1)}" y="${by + barHeight - 4}" fill="#111827">${fmt(r.p50Ms)} / ${
          fmt(r.p99Ms)
        }</text>`
      )
    })
  })

  let fy = top + plotHeight + 40
  for (const m of report.memory) {
    const lines = [
      `Memory (${m.store}): ${m.reachedInFlight} requests in flight at once${
        m.requested !== undefined && m.requested > m.reachedInFlight
          ? ` (of ${m.requested} asked: the relay's open-files limit)`
          : ""
      }, held by the upstream; every request ${m.exact ? "answered and billed exactly" : "NOT billed exactly"}.`,
      `Relay RSS: ${m.rssBeforeMiB.toFixed(0)} MiB before, ${
        m.rssHeldMiB !== undefined ? `${m.rssHeldMiB.toFixed(0)} MiB with all in flight, ` : ""
      }${m.rssPeakMiB.toFixed(0)} MiB peak (releasing them), ${m.rssAfterMiB.toFixed(0)} MiB after.`
    ]
    for (const line of lines) {
      out.push(`<text x="12" y="${fy}">${escape(line)}</text>`)
      fy += 16
    }
  }
  const load = (l: ReadonlyArray<number>) => l.map((v) => v.toFixed(2)).join(" ")
  out.push(
    `<text x="12" y="${fy}" fill="#6b7280">${
      escape(
        `${
          report.when.slice(0, 16).replace("T", " ")
        } UTC · ${report.machine.cpus} cores shared · load average before ${load(report.loadAverage.before)}, after ${
          load(report.loadAverage.after)
        }`
      )
    }</text>`
  )
  fy += 16
  const exact = report.rows.every((r) => r.exact)
  out.push(
    `<text x="12" y="${fy}" fill="${exact ? "#6b7280" : "#b91c1c"}">${
      exact
        ? "Every run verified: 0 errors, 0 non-2xx, account charged exactly 2xx × price (billing on) or 0 (pass-through)."
        : "Some runs were NOT exact (errors, non-2xx or a charge that differs from 2xx × price): see relay-latest.json."
    }</text>`
  )
  out.push("</svg>")
  return `${out.join("\n")}\n`
}
