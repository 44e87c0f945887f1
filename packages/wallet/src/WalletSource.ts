/**
 * The wallet funding source: the account's `balance` column, as a v2 `Source`
 * (a balance mover in the hold's store). A take is one conditional
 * `UPDATE accounts SET balance = balance − ? WHERE id = ? AND balance >= ? AND balance > 0`
 * reading the balance back (`RETURNING`; on MySQL the UPDATE and a read of the
 * row in the same transaction); a move one bounded `UPDATE`. It keeps no hold
 * ids and writes no ledger rows: the engine owns the hold (its conditional
 * status transition makes every step happen once) and writes the ledger rows
 * from what the source answers.
 *
 * @since 0.1.0
 */
import type { Source } from "@relay-billing/core"
import { makeWalletSource } from "./internal/walletSource.js"

/**
 * Options of the wallet source.
 *
 * @since 0.1.0
 * @category models
 */
export interface WalletOptions {
  /** Source id (default `"wallet"`). */
  readonly id?: string
  /**
   * Settlement policy: by default a charge may take the balance below zero (the
   * answer was already delivered). With `floorAtZero` a settle or late charge
   * stops at zero and answers what it moved; the engine records the rest as
   * unbilled (or sends it along the chain).
   */
  readonly floorAtZero?: boolean
}

/**
 * Builds the wallet source. Modes of a take: `exact` (all or
 * `InsufficientFunds`; a balance ≤ 0 is always insufficient), `upTo` (split
 * funding: what the wallet has, at most the amount; on PostgreSQL one statement,
 * elsewhere the balance read under a row lock first), `unconditional`
 * (post-consume: no balance condition). Every balance stays within ±(2^53−1):
 * a change past it is `QuotaOutOfRange` and writes nothing.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: WalletOptions = {}): Source.Source => makeWalletSource(options)
