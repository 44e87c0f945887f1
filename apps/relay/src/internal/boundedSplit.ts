/**
 * A pre-tokenizer split regex whose pieces have a bounded length.
 *
 * BPE merging (gpt-tokenizer's `bytePairMerge`, tiktoken's `_byte_pair_merge`)
 * is quadratic in the length of one pre-tokenized piece, and the o200k split
 * pattern leaves runs of letters, punctuation and whitespace unbounded: one
 * 40,000-character word is one piece, ~10⁹ merge steps. Bounding every
 * repetition of the pattern (`X*` → `X{0,n}`, `X+` → `X{1,n}`) caps a piece at
 * a few × n characters, so counting is linear in the input.
 *
 * On text where no repetition of the original pattern matched more than `n`
 * code points the bounded pattern yields exactly the same pieces: its matches
 * are the original's, restricted to repetitions of at most `n`, explored in the
 * same (greedy, left-to-right) order, so the first match that succeeds is the
 * same one. Only longer runs are cut into chunks of `n`.
 *
 * @internal
 */

const repetition = /(\]|\\s)([*+])/g
const unbounded = /[*+]|\{\d+,\}/

/**
 * The regex `pattern` with every `[...]*`, `[...]+`, `\s*`, `\s+` bounded to
 * `maxRun` repetitions. Throws when a repetition it does not know how to bound
 * remains (a split pattern that changed shape), so a new unbounded pattern
 * cannot slip in unnoticed.
 */
export const boundedSplitRegex = (pattern: RegExp, maxRun: number): RegExp => {
  if (!Number.isInteger(maxRun) || maxRun < 1) throw new RangeError(`maxRun must be a positive integer, got ${maxRun}`)
  const source = pattern.source.replace(
    repetition,
    (_, atom: string, q: string) => `${atom}{${q === "*" ? 0 : 1},${maxRun}}`
  )
  if (unbounded.test(source)) throw new Error(`split pattern has an unbounded repetition left: ${source}`)
  return new RegExp(source, pattern.flags)
}
