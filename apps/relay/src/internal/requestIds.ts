/**
 * Request ids are scoped to the account (relay-api.md): the SDK's hold id (its
 * idempotency key) is derived from `(accountId, requestId)` by an injective
 * encoding that fits the SDK's 191-character ids:
 *
 * - `<accountId>:<requestId>` when that fits in 191 characters;
 * - otherwise `<accountId>~<packed requestId>`, where each pair of request-id
 *   characters (visible ASCII, 94 symbols) becomes one BMP character
 *   `U+4E00 + 94·a + b` and an odd last character stays as is: at most 96
 *   characters for the longest (191) request id.
 *
 * The account id is the relay's own (`acc_` + 24 base62, or the demo's):
 * it contains neither `:` nor `~` and is at most {@link MAX_ACCOUNT_ID}
 * characters, so the first `:` or `~` ends it and tells the form; both forms
 * decode back, hence two different pairs never share a hold id.
 *
 * @internal
 */

/** The longest request id accepted (`X-Request-Id`). */
export const MAX_REQUEST_ID = 191

/** The longest hold id the SDK accepts. */
const MAX_HOLD_ID = 191

/** The longest account id the encoding supports (191 − 1 − 96). */
export const MAX_ACCOUNT_ID = MAX_HOLD_ID - 1 - Math.ceil(MAX_REQUEST_ID / 2)

const FIRST = 0x21
const SYMBOLS = 94
const BASE = 0x4e00

/** Whether `requestId` is 1–191 visible ASCII characters. */
export const isRequestId = (requestId: string): boolean =>
  requestId.length > 0 && requestId.length <= MAX_REQUEST_ID && /^[\x21-\x7e]+$/.test(requestId)

/** Whether the relay can scope request ids to `accountId`. */
export const isScopableAccountId = (accountId: string): boolean =>
  accountId.length > 0 && accountId.length <= MAX_ACCOUNT_ID && !/[:~]/.test(accountId)

const pack = (requestId: string): string => {
  let out = ""
  for (let i = 0; i + 1 < requestId.length; i += 2) {
    out += String.fromCharCode(
      BASE + (requestId.charCodeAt(i) - FIRST) * SYMBOLS + (requestId.charCodeAt(i + 1) - FIRST)
    )
  }
  return requestId.length % 2 === 1 ? out + requestId[requestId.length - 1] : out
}

const unpack = (packed: string): string => {
  let out = ""
  for (const char of packed) {
    const code = char.charCodeAt(0)
    if (code < BASE) {
      out += char
      continue
    }
    const n = code - BASE
    out += String.fromCharCode(FIRST + Math.floor(n / SYMBOLS), FIRST + (n % SYMBOLS))
  }
  return out
}

/**
 * The hold id of `requestId` for `accountId` (see the module docs). Throws on
 * an account id the encoding does not support or a request id that is not
 * 1–191 visible ASCII characters (both are checked before: a defect).
 */
export const holdIdOf = (accountId: string, requestId: string): string => {
  if (!isScopableAccountId(accountId)) {
    throw new Error(`relay: account id ${JSON.stringify(accountId)} cannot scope request ids (":" or "~", or too long)`)
  }
  if (!isRequestId(requestId)) throw new Error(`relay: invalid request id ${JSON.stringify(requestId)}`)
  return accountId.length + 1 + requestId.length <= MAX_HOLD_ID
    ? `${accountId}:${requestId}`
    : `${accountId}~${pack(requestId)}`
}

/** The `(accountId, requestId)` of a hold id made by {@link holdIdOf}; `undefined` for any other id. */
export const parseHoldId = (holdId: string): { readonly accountId: string; readonly requestId: string } | undefined => {
  const at = holdId.search(/[:~]/)
  if (at <= 0) return undefined
  const accountId = holdId.slice(0, at)
  const requestId = holdId[at] === ":" ? holdId.slice(at + 1) : unpack(holdId.slice(at + 1))
  return isScopableAccountId(accountId) && isRequestId(requestId) && holdIdOf(accountId, requestId) === holdId
    ? { accountId, requestId }
    : undefined
}
