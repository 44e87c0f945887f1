/**
 * A work counter for BPE token counting, without timing anything.
 *
 * Every pre-tokenized piece the BPE stage sees comes out of
 * `String.prototype.matchAll` with the split regex (gpt-tokenizer's
 * `BytePairEncodingCore` iterates `text.matchAll(tokenSplitRegex)` and runs the
 * merge loop on each piece; the merge loop is quadratic in the piece's UTF-8
 * length). The probe wraps `RegExp.prototype[Symbol.matchAll]`, adds
 * `bytes(piece)²` per piece to a work counter, and throws as soon as the
 * counter passes the budget — so quadratic input is caught before the merge
 * loop starts instead of blocking the test (and the event loop) for minutes.
 */
const original = RegExp.prototype[Symbol.matchAll]

/** The UTF-8 length of a string. */
export const utf8 = (s: string): number => Buffer.byteLength(s, "utf8")

/** Thrown by the probe when the work passes the budget. */
export class WorkBudgetExceeded extends Error {}

/** What the probe saw since it was installed. */
export interface Seen {
  pieces: number
  chars: number
  work: number
  maxPieceBytes: number
}

/** Installs the probe with `budget` (Σ bytes(piece)²); {@link uninstall} removes it. */
export const install = (budget: number): Seen => {
  const seen: Seen = { pieces: 0, chars: 0, work: 0, maxPieceBytes: 0 }
  RegExp.prototype[Symbol.matchAll] = function*(this: RegExp, text: string) {
    for (const match of original.call(this, text)) {
      const bytes = utf8(match[0])
      seen.pieces += 1
      seen.chars += match[0].length
      seen.work += bytes * bytes
      seen.maxPieceBytes = Math.max(seen.maxPieceBytes, bytes)
      if (seen.work > budget) throw new WorkBudgetExceeded(`piece of ${bytes} bytes: work ${seen.work} > ${budget}`)
      yield match
    }
  } as typeof original
  return seen
}

/** Restores `RegExp.prototype[Symbol.matchAll]`. */
export const uninstall = (): void => {
  RegExp.prototype[Symbol.matchAll] = original
}
