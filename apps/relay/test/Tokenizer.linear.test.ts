/**
 * Issue 9 #4: token counting is linear in the input. Work is measured by the
 * probe of test/support/WorkProbe.ts (Σ bytes(piece)² over the pieces handed
 * to BPE), never by time; counts are compared with gpt-tokenizer's own o200k
 * count.
 */
import fc from "fast-check"
import { countTokens as referenceCount } from "gpt-tokenizer/encoding/o200k_base"
import { afterEach, describe, expect, it } from "vitest"
import * as Tokenizer from "../src/Tokenizer.js"
import * as Probe from "./support/WorkProbe.js"

const utf8 = Probe.utf8

afterEach(() => {
  Probe.uninstall()
})

/** Deterministic PRNG (mulberry32) so the inputs are the same in every run. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** Random non-whitespace code points from [from, from + span) until `bytes` UTF-8 bytes. */
const randomRun = (seed: number, bytes: number, from: number, span: number): string => {
  const next = prng(seed)
  const out: Array<string> = []
  let size = 0
  while (size < bytes) {
    const cp = from + Math.floor(next() * span)
    if (cp >= 0xd800 && cp <= 0xdfff) continue
    const c = String.fromCodePoint(cp)
    if (/\s/u.test(c)) continue
    out.push(c)
    size += utf8(c)
  }
  return out.join("")
}

const MB = 1_000_000
/** Work allowed per UTF-8 byte of input: the largest piece the bounded split can produce. */
const perByte = (2 * Tokenizer.MAX_RUN_LENGTH + 4) * 4

const countWithin = (text: string) => {
  const seen = Probe.install(perByte * utf8(text))
  const count = Tokenizer.countText(text)
  Probe.uninstall()
  // the probe saw the whole text: the work figure covers every piece
  expect(seen.chars).toBe(text.length)
  return { count, seen }
}

describe("Tokenizer: linear work on text without whitespace", () => {
  it("counts 1 MB of 'x' with work linear in the input (it was one 1 MB piece: ~10¹² merge steps)", () => {
    const { count, seen } = countWithin("x".repeat(MB))
    // o200k encodes runs of x as 8-character tokens; 128 is a multiple of 8, so the count is exact
    expect(count).toBe(MB / 8)
    expect(seen.maxPieceBytes).toBeLessThanOrEqual(Tokenizer.MAX_RUN_LENGTH)
  }, 120_000)

  it("counts 1 MB of random non-whitespace characters with work linear in the input", () => {
    const text = randomRun(1, MB, 0x21, 0xffff - 0x21)
    const { count, seen } = countWithin(text)
    expect(count).toBeGreaterThan(0)
    expect(count).toBeLessThanOrEqual(utf8(text)) // a token is at least one byte
    expect(seen.work).toBeLessThanOrEqual(perByte * utf8(text))
  }, 120_000)

  it(
    "counts 1 MB of random lowercase letters (one 1 MB word), a CJK run and an emoji run with work linear in the input",
    () => {
      for (
        const text of [
          randomRun(2, MB, 0x61, 26),
          randomRun(3, 300_000, 0x4e00, 0x5000),
          randomRun(4, 300_000, 0x1f300, 0x200)
        ]
      ) {
        const { count, seen } = countWithin(text)
        expect(count).toBeGreaterThan(0)
        expect(count).toBeLessThanOrEqual(utf8(text))
        expect(seen.maxPieceBytes).toBeLessThanOrEqual((2 * Tokenizer.MAX_RUN_LENGTH + 4) * 4)
      }
    },
    120_000
  )

  it("counts x × 40,000 (the reported 4.2 s stall) exactly", () => {
    expect(countWithin("x".repeat(40_000)).count).toBe(5_000)
  })

  it("counts the completion text of a stream with the same bound (charge-streamed counts what was streamed)", () => {
    const streamed = Array.from({ length: 1_000 }, () => "y".repeat(1_000)).join("")
    expect(countWithin(streamed).count).toBe(Tokenizer.countText("y".repeat(MB)))
  }, 60_000)
})

const plain = { disallowedSpecial: new Set<string>() }

/** Text whose every run (letters, punctuation, whitespace) is at most `max` characters. */
const normalText = (max: number) =>
  fc.array(
    fc.oneof(
      fc.constantFrom(
        "the",
        "The",
        "quick",
        "brown",
        "FOX",
        "don't",
        "we're",
        "über",
        "naïve",
        "Straße",
        "привет",
        "γειά",
        "你好",
        "世界",
        "日本語",
        "한국어",
        "😀",
        "🎉👍",
        "1",
        "42",
        "2026",
        "3.14",
        "-",
        "--",
        "==",
        "/",
        "://",
        "<|endoftext|>",
        "\n",
        "\n\n",
        "\r\n",
        "\t",
        " ",
        "  ",
        ",",
        ".",
        "!?",
        "()",
        "{\"a\":1}",
        "'",
        "'s",
        "...",
        "x".repeat(40),
        "-".repeat(80),
        "=".repeat(120),
        " ".repeat(64),
        "\u0301",
        "İ",
        "ǅ"
      ),
      fc.string({ maxLength: 12 })
    ),
    { maxLength: 60 }
  ).map((parts) => parts.join("")).filter((s) => longestRun(s) <= max)

/**
 * The longest run of one repetition class of the o200k split pattern: letters
 * and marks (`[\p{L}\p{M}]`), other non-space characters — marks included, as in
 * the pattern's `[^\s\p{L}\p{N}]` —, whitespace, and `[\r\n/]`.
 */
const longestRun = (s: string): number => {
  let longest = 0
  for (const cls of [/[\p{L}\p{M}]+/gu, /[^\s\p{L}\p{N}]+/gu, /\s+/gu, /[\r\n/]+/gu]) {
    for (const run of s.matchAll(cls)) longest = Math.max(longest, [...run[0]].length)
  }
  return longest
}

describe("Tokenizer: exact o200k counts on normal text", () => {
  it("matches gpt-tokenizer's o200k_base count on text whose runs are at most MAX_RUN_LENGTH", () => {
    fc.assert(
      fc.property(normalText(Tokenizer.MAX_RUN_LENGTH), (text) => {
        expect(Tokenizer.countText(text)).toBe(referenceCount(text, plain))
      }),
      { numRuns: 2_000 }
    )
  })

  it("matches on the repository's own documents (prose, markdown tables, code)", async () => {
    const { readFileSync, readdirSync } = await import("node:fs")
    const root = new URL("../../../", import.meta.url)
    const files = [
      ...readdirSync(new URL("docs/", root)).filter((f) => f.endsWith(".md")).map((f) => new URL(`docs/${f}`, root)),
      new URL("README.md", root),
      new URL("apps/relay/src/ClientApi.ts", root)
    ]
    for (const file of files) {
      const text = readFileSync(file, "utf8")
      expect(Tokenizer.countText(text), file.pathname).toBe(referenceCount(text, plain))
    }
  })
})

describe("Tokenizer: the estimate on runs longer than MAX_RUN_LENGTH", () => {
  it("differs from the exact count by at most one token per forced split (tested on runs of 129–3,000)", () => {
    const alphabets: Array<[number, number]> = [
      [0x61, 26],
      [0x41, 26],
      [0x21, 15],
      [0x4e00, 0x5000],
      [0x1f300, 0x100],
      [0x3b1, 25]
    ]
    fc.assert(
      fc.property(
        fc.integer({ min: Tokenizer.MAX_RUN_LENGTH + 1, max: 3_000 }),
        fc.constantFrom(...alphabets),
        fc.integer(),
        fc.boolean(),
        (length, [from, span], seed, repeated) => {
          const text = repeated
            ? String.fromCodePoint(from).repeat(length)
            : randomRun(seed, length * utf8(String.fromCodePoint(from)), from, span) // `length` characters
          const exact = referenceCount(text, plain)
          const estimate = Tokenizer.countText(text)
          const splits = Math.ceil([...text].length / Tokenizer.MAX_RUN_LENGTH)
          expect(Math.abs(estimate - exact)).toBeLessThanOrEqual(splits)
        }
      ),
      { numRuns: 150 }
    )
  }, 120_000)
})
