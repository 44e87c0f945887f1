import type { Quota } from "../Quota.js"

/**
 * Splits the actual cost over reserved parts (in reservation order): each part
 * first carries up to what it reserved; anything above the total reservation is
 * charged to the last part; a shortfall is given back in reverse order.
 */
export const allocate = (reserved: ReadonlyArray<number>, actual: number): Array<Quota> => {
  if (reserved.length === 0) return []
  const out = reserved.map((r) => r)
  let remaining = reserved.reduce((a, b) => a + b, 0) - actual
  if (remaining < 0) {
    out[out.length - 1] = (out[out.length - 1] ?? 0) - remaining
    return out as Array<Quota>
  }
  for (let i = out.length - 1; i >= 0 && remaining > 0; i--) {
    const back = Math.min(out[i] ?? 0, remaining)
    out[i] = (out[i] ?? 0) - back
    remaining -= back
  }
  return out as Array<Quota>
}
