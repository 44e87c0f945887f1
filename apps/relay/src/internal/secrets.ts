/**
 * Keys, hashes and constant-time comparison for API tokens and the admin key.
 *
 * @internal
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto"

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

/** `length` random base62 characters, without modulo bias (rejection sampling). */
export const randomBase62 = (length: number): string => {
  let out = ""
  while (out.length < length) {
    const bytes = randomBytes(length * 2)
    for (let i = 0; i < bytes.length && out.length < length; i++) {
      const b = bytes[i]! & 0x3f // 0..63
      if (b < 62) out += BASE62[b]
    }
  }
  return out
}

/** A new API token key: `sk-` + 48 random base62 characters. */
export const generateKey = (): string => `sk-${randomBase62(48)}`

/** A prefixed random id (`acc_…`, `tok_…`). */
export const generateId = (prefix: string): string => `${prefix}_${randomBase62(24)}`

/** SHA-256 of a key, hex. */
export const hashKey = (key: string): string => createHash("sha256").update(key, "utf8").digest("hex")

/** Constant-time equality of two hex digests of the same algorithm. */
export const constantTimeEqualHex = (a: string, b: string): boolean => {
  const x = Buffer.from(a, "hex")
  const y = Buffer.from(b, "hex")
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y)
}

/** Constant-time equality of two secrets of any length (compares their SHA-256 digests). */
export const constantTimeEqualSecret = (a: string, b: string): boolean =>
  timingSafeEqual(createHash("sha256").update(a, "utf8").digest(), createHash("sha256").update(b, "utf8").digest())
