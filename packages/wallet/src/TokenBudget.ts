/**
 * Token (API-key) budgets: a cap, not money, as a v2 `Source` (role `budget`)
 * over the token's `remain` and `used` columns. A limited token takes with one
 * conditional UPDATE (`remain >= ?`, the token's own account, `RETURNING`
 * remain; on MySQL the UPDATE and a read); an unlimited token takes nothing and
 * still moves `remain`/`used` at settlement, so it doubles as a usage counter.
 * No hold ids and no ledger rows: the engine keeps both.
 *
 * @since 0.1.0
 */
import type { Source } from "@relay-billing/core"
import { makeTokenSource } from "./internal/tokenSource.js"

/**
 * The token budget as a v2 `Source` (role `budget`): the token's `remain` and
 * `used` columns. A take is one conditional UPDATE (the token's account, not
 * unlimited, `remain >= ?` unless unconditional; `RETURNING` remain); an
 * unlimited token takes nothing and still moves at settlement, so it counts
 * usage. A move is one bounded UPDATE. No hold ids, no ledger rows: the engine
 * keeps both.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: { readonly id?: string } = {}): Source.Source => makeTokenSource(options)
