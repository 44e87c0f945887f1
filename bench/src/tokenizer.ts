/**
 * Tokenizer benchmark: the relay's prompt/completion token counting
 * (`Tokenizer.countText`, o200k_base with a bounded split pattern) on
 * pathological inputs — long runs without whitespace, random characters, CJK
 * runs, emoji, whitespace — and on normal text, each reported as ms and
 * tokens/s and as a ratio against a baseline measured in the same run:
 * gpt-tokenizer's own `countTokens` (o200k_base) on normal text of the same
 * UTF-8 size. Before the bounded split, x × 40,000 took ~4 s and x × 100,000
 * 30 s+ (quadratic); set BENCH_TOKENIZER_OLD=1 to time gpt-tokenizer on those
 * two inputs as well. See bench/README.md.
 */
import * as Tokenizer from "@relay-billing/relay/Tokenizer"
import { countTokens } from "gpt-tokenizer/encoding/o200k_base"
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"

const env = process.env
const runs = Number(env["BENCH_TOKENIZER_RUNS"] ?? 3)
const timeOld = env["BENCH_TOKENIZER_OLD"] === "1"
const MB = 1_000_000
const plain = { disallowedSpecial: new Set<string>() }
const utf8 = (s: string) => Buffer.byteLength(s, "utf8")

// ------------------------------------------------------------------ inputs

/** Deterministic PRNG (mulberry32): the same inputs in every run. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** Random non-whitespace code points from [from, from + span) until `bytes` UTF-8 bytes. */
const random = (seed: number, bytes: number, from: number, span: number, every?: { n: number; sep: string }) => {
  const next = prng(seed)
  const out: Array<string> = []
  let size = 0
  let i = 0
  while (size < bytes) {
    const cp = from + Math.floor(next() * span)
    if (cp >= 0xd800 && cp <= 0xdfff) continue
    const c = String.fromCodePoint(cp)
    if (/\s/u.test(c)) continue
    out.push(c)
    size += utf8(c)
    if (every !== undefined && ++i % every.n === 0) {
      out.push(every.sep)
      size += utf8(every.sep)
    }
  }
  return out.join("")
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
/** Normal text: the repository's own documents (English prose, markdown tables, code blocks). */
const corpus = [
  path.join(root, "README.md"),
  ...readdirSync(path.join(root, "docs")).filter((f) => f.endsWith(".md")).map((f) => path.join(root, "docs", f)),
  path.join(root, "bench", "README.md")
].map((f) => readFileSync(f, "utf8")).join("\n\n")

/** Normal text of exactly `bytes` UTF-8 bytes (the corpus repeated, cut on a character). */
const normal = (bytes: number) => {
  let text = corpus
  while (utf8(text) < bytes) text += `\n\n${corpus}`
  const buf = Buffer.from(text, "utf8").subarray(0, bytes)
  return buf.toString("utf8").replace(/\uFFFD+$/u, "")
}

interface Input {
  readonly name: string
  /** Nominal UTF-8 size: the baseline is measured on normal text of this size. */
  readonly size: number
  /** The input of run `run`: random inputs get a new seed per run, so no run is served from the merge cache. */
  readonly text: (run: number) => string
  /** gpt-tokenizer on the same input: only where it is not quadratic (or BENCH_TOKENIZER_OLD=1). */
  readonly timeLibrary: boolean
}

const fixed = (text: string) => () => text
const cjkProse = (seed: number) =>
  random(seed, MB, 0x4e00, 0x5000, { n: 12, sep: "，" }).replace(/((?:[^，]*，){2}[^，]*)，/gu, "$1。")

const inputs: Array<Input> = [
  { name: "normal text (repo docs) 1 MB", size: MB, text: fixed(normal(MB)), timeLibrary: true },
  { name: "x × 40,000", size: 40_000, text: fixed("x".repeat(40_000)), timeLibrary: timeOld },
  { name: "x × 100,000", size: 100_000, text: fixed("x".repeat(100_000)), timeLibrary: timeOld },
  { name: "x × 1,000,000", size: MB, text: fixed("x".repeat(MB)), timeLibrary: false },
  {
    name: "random non-space (BMP) 1 MB",
    size: MB,
    text: (run) => random(10 + run, MB, 0x21, 0xffff - 0x21),
    timeLibrary: true
  },
  { name: "random a–z, one word, 1 MB", size: MB, text: (run) => random(20 + run, MB, 0x61, 26), timeLibrary: false },
  {
    name: "CJK run (no punctuation) 1 MB",
    size: MB,
    text: (run) => random(30 + run, MB, 0x4e00, 0x5000),
    timeLibrary: false
  },
  { name: "CJK prose (，every 12, 。every 36) 1 MB", size: MB, text: (run) => cjkProse(40 + run), timeLibrary: true },
  { name: "emoji run 1 MB", size: MB, text: (run) => random(50 + run, MB, 0x1f300, 0x200), timeLibrary: false },
  { name: "spaces × 1,000,000", size: MB, text: fixed(" ".repeat(MB)), timeLibrary: false },
  { name: "'/\\n' × 500,000", size: MB, text: fixed("/\n".repeat(MB / 2)), timeLibrary: false }
]

// ------------------------------------------------------------------ measuring

const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** `runs` timed calls of `count`, each on `text(run)`; the median and the first (cold) one. */
const time = (count: (text: string) => number, text: (run: number) => string) => {
  const millis: Array<number> = []
  const tokens: Array<number> = []
  for (let run = 0; run < runs; run++) {
    const input = text(run)
    const start = performance.now()
    tokens.push(count(input))
    millis.push(performance.now() - start)
  }
  return { tokens, ms: median(millis), firstMs: millis[0]! }
}

const ours = (text: string) => Tokenizer.countText(text)
const library = (text: string) => countTokens(text, plain)

const baselines = new Map<number, number>()
/** gpt-tokenizer on normal text of `size` bytes, measured once per size in this run. */
const baseline = (size: number) => {
  const known = baselines.get(size)
  if (known !== undefined) return known
  const measured = time(library, fixed(normal(size))).ms
  baselines.set(size, measured)
  return measured
}

const round = (x: number, digits = 1) => Number(x.toFixed(digits))

const rows = inputs.map((input) => {
  process.stderr.write(`tokenizer bench: ${input.name} …\n`)
  const bytes = utf8(input.text(0))
  const base = baseline(input.size)
  const mine = time(ours, input.text)
  const lib = input.timeLibrary ? time(library, input.text) : undefined
  const tokens = median(mine.tokens)
  return {
    input: input.name,
    chars: input.text(0).length,
    bytes,
    tokens,
    ms: round(mine.ms),
    firstMs: round(mine.firstMs),
    tokensPerSecond: Math.round(tokens / (mine.ms / 1000)),
    mbPerSecond: round(bytes / MB / (mine.ms / 1000), 2),
    baselineMs: round(base),
    ratio: round(mine.ms / base, 2),
    libraryMs: lib === undefined ? undefined : round(lib.ms),
    exact: lib === undefined ? undefined : lib.tokens.every((t, i) => t === mine.tokens[i])
  }
})

// ------------------------------------------------------------------ report

const table = (head: Array<string>, body: Array<Array<string>>) => {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)))
  const line = (cells: Array<string>) =>
    `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(" | ")} |`
  return [
    line(head),
    `|${widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : `${"-".repeat(w + 1)}:`)).join("|")}|`,
    ...body.map(line)
  ].join("\n")
}

const out = [
  `Tokenizer.countText (o200k_base, runs bounded to ${Tokenizer.MAX_RUN_LENGTH}) — node ${process.version}, median of ${runs} runs (random inputs: a new input each run, so the merge cache never serves them; "first ms" is the cold first call)`,
  "baseline = gpt-tokenizer countTokens (o200k_base) on normal text of the same UTF-8 size, same run; ratio = ms / baseline ms",
  "",
  table(
    [
      "input",
      "chars",
      "bytes",
      "tokens",
      "ms",
      "first ms",
      "tokens/s",
      "MB/s",
      "baseline ms",
      "ratio",
      "gpt-tokenizer same input ms",
      "same count"
    ],
    rows.map((r) => [
      r.input,
      String(r.chars),
      String(r.bytes),
      String(r.tokens),
      String(r.ms),
      String(r.firstMs),
      String(r.tokensPerSecond),
      String(r.mbPerSecond),
      String(r.baselineMs),
      String(r.ratio),
      r.libraryMs === undefined ? "not run (quadratic)" : String(r.libraryMs),
      r.exact === undefined ? "" : r.exact ? "yes" : "NO"
    ])
  )
]
process.stdout.write(`${out.join("\n")}\n`)

const results = path.join(root, "bench", "results")
mkdirSync(results, { recursive: true })
writeFileSync(
  path.join(results, "tokenizer-latest.json"),
  `${JSON.stringify({ node: process.version, runs, maxRunLength: Tokenizer.MAX_RUN_LENGTH, rows }, null, 2)}\n`
)

// Normal text must be counted exactly as o200k does.
const normalRow = rows[0]!
if (normalRow.exact !== true) {
  process.stderr.write("tokenizer bench: normal text was not counted exactly as gpt-tokenizer counts it\n")
  process.exitCode = 1
}
