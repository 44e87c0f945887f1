/**
 * Errors of the wallet admin operations.
 *
 * @since 0.1.0
 */
import { BillingError } from "@relay-billing/core"
import { Accounts } from "@relay-billing/knex"
import { Schema } from "effect"

/**
 * An account with this id already exists: `Accounts.AccountExists` of
 * `@relay-billing/knex` (the accounts module creates the rows).
 *
 * @since 0.1.0
 * @category errors
 */
export const AccountExists = Accounts.AccountExists

/**
 * @since 0.1.0
 * @category errors
 */
export type AccountExists = Accounts.AccountExists

/**
 * No account with this id: core's `BillingError.AccountNotFound` (one tag,
 * one code across the SDK and the relay).
 *
 * @since 0.1.0
 * @category errors
 */
export const AccountNotFound = BillingError.AccountNotFound

/**
 * @since 0.1.0
 * @category errors
 */
export type AccountNotFound = BillingError.AccountNotFound

/**
 * A token with this id already exists.
 *
 * @since 0.1.0
 * @category errors
 */
export class TokenExists extends Schema.TaggedError<TokenExists>()("TokenExists", {
  tokenId: Schema.String
}) {
  /** Stable code. */
  get code(): "token_exists" {
    return "token_exists"
  }
  override get message(): string {
    return `token ${this.tokenId} already exists`
  }
}

/**
 * No token with this id (for this account). The same error as core's
 * `BillingError.TokenNotFound`, which the token budget raises when a token is
 * used for an account that does not own it (spec §2.9): one tag, one code.
 *
 * @since 0.1.0
 * @category errors
 */
export const TokenNotFound = BillingError.TokenNotFound

/**
 * @since 0.1.0
 * @category errors
 */
export type TokenNotFound = BillingError.TokenNotFound
