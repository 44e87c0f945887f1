/**
 * Exact non-negative rational arithmetic for pricing.
 *
 * Ratios in the config are decimals (`0.075`); binary floating point cannot
 * hold them exactly (`0.075 * 3` is `0.22499999999999998`), so a `ceil` or a
 * half-way `round` on a float product can land on the wrong integer. Each
 * number is read as the exact decimal it prints as (JavaScript's shortest
 * round-trip representation, the literal the user wrote) and the arithmetic is
 * done on `bigint` fractions.
 *
 * @internal
 */

/** n / d, with n ≥ 0 and d > 0. */
export interface Fraction {
  readonly n: bigint
  readonly d: bigint
}

const DECIMAL = /^(\d+)(?:\.(\d+))?(?:e([+-]?\d+))?$/

/** The exact decimal value of a finite non-negative number (as it prints). */
export const fromNumber = (x: number): Fraction => {
  if (!Number.isFinite(x) || x < 0) throw new RangeError(`expected a finite number ≥ 0, got ${x}`)
  const match = DECIMAL.exec(x.toString())
  if (match === null) throw new RangeError(`cannot read ${x} as a decimal`)
  const whole = match[1]!
  const frac = match[2] ?? ""
  const exp = Number(match[3] ?? "0") - frac.length
  const digits = BigInt(whole + frac)
  return exp >= 0 ? { n: digits * 10n ** BigInt(exp), d: 1n } : { n: digits, d: 10n ** BigInt(-exp) }
}

/** A non-negative safe integer as a fraction (a token count). */
export const fromInt = (x: number): Fraction => {
  if (!Number.isSafeInteger(x) || x < 0) throw new RangeError(`expected a non-negative safe integer, got ${x}`)
  return { n: BigInt(x), d: 1n }
}

export const add = (a: Fraction, b: Fraction): Fraction => ({ n: a.n * b.d + b.n * a.d, d: a.d * b.d })

export const mul = (a: Fraction, b: Fraction): Fraction => ({ n: a.n * b.n, d: a.d * b.d })

export const isZero = (a: Fraction): boolean => a.n === 0n

export const ceil = (a: Fraction): bigint => (a.n + a.d - 1n) / a.d

/** Round half away from zero (for non-negative values: half up). */
export const round = (a: Fraction): bigint => (2n * a.n + a.d) / (2n * a.d)

const MAX = BigInt(Number.MAX_SAFE_INTEGER)

/** To a number, saturating at `Number.MAX_SAFE_INTEGER` (every amount stays a safe integer). */
export const toSafe = (b: bigint): number => Number(b > MAX ? MAX : b)
