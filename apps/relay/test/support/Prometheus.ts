/**
 * A reader of the Prometheus text exposition format (version 0.0.4) for the
 * tests: `# HELP` / `# TYPE` lines and samples `name{label="value",…} value`,
 * label values unescaped (`\\`, `\"`, `\n`). Written against the format's
 * specification, independently of prom-client's serializer.
 */

/** One scrape: samples by series key, and the declared type of each metric family. */
export interface Exposition {
  readonly samples: ReadonlyMap<string, number>
  readonly types: ReadonlyMap<string, string>
  /** The value of a series (0 when absent: counters start at 0). */
  readonly value: (name: string, labels?: Record<string, string>) => number
  /** Whether the series is present. */
  readonly has: (name: string, labels?: Record<string, string>) => boolean
}

/** The key of a series: its name and its labels sorted by name. */
export const seriesKey = (name: string, labels: Record<string, string> = {}): string =>
  `${name}{${Object.keys(labels).sort().map((k) => `${k}=${JSON.stringify(labels[k])}`).join(",")}}`

const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/

const parseLabels = (text: string, line: string): Record<string, string> => {
  const labels: Record<string, string> = {}
  let i = 0
  while (i < text.length) {
    const name = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(text.slice(i))
    if (name === null) throw new Error(`bad labels in ${JSON.stringify(line)}`)
    i += name[0].length
    let value = ""
    for (;;) {
      const c = text[i]
      if (c === undefined) throw new Error(`unterminated label value in ${JSON.stringify(line)}`)
      i += 1
      if (c === "\"") break
      if (c === "\\") {
        const next = text[i]
        i += 1
        value += next === "n" ? "\n" : next === "\\" ? "\\" : next === "\"" ? "\"" : `\\${next ?? ""}`
      } else {
        value += c
      }
    }
    labels[name[1]!] = value
    const rest = /^\s*,?/.exec(text.slice(i))!
    i += rest[0].length
  }
  return labels
}

const parseValue = (text: string, line: string): number => {
  if (text === "+Inf") return Number.POSITIVE_INFINITY
  if (text === "-Inf") return Number.NEGATIVE_INFINITY
  const n = Number(text)
  if (text !== "NaN" && !Number.isFinite(n)) throw new Error(`bad value in ${JSON.stringify(line)}`)
  return n
}

/** Parses an exposition; throws on a line that is neither a comment nor a sample. */
export const parse = (text: string): Exposition => {
  const samples = new Map<string, number>()
  const types = new Map<string, string>()
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue
    if (line.startsWith("#")) {
      const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line)
      if (type !== null) types.set(type[1]!, type[2]!)
      continue
    }
    const m = sample.exec(line)
    if (m === null) throw new Error(`not a sample: ${JSON.stringify(line)}`)
    const key = seriesKey(m[1]!, m[2] === undefined ? {} : parseLabels(m[2], line))
    if (samples.has(key)) throw new Error(`duplicate series ${key}`)
    samples.set(key, parseValue(m[3]!, line))
  }
  return {
    samples,
    types,
    value: (name, labels) => samples.get(seriesKey(name, labels)) ?? 0,
    has: (name, labels) => samples.has(seriesKey(name, labels))
  }
}
