/**
 * What an open is asked to do, once decoded: the request as the schema types
 * it, and the engine's reading of its flags as a named mode (never loose
 * booleans passed from phase to phase).
 */
import type { OpenRequest } from "../BillingSession.js"
import type { Chains, Name } from "../Preference.js"
import * as PreferenceModule from "../Preference.js"
import type { Quota } from "../Quota.js"

/** A decoded open request (`BillingSession.OpenRequest`'s type side). */
export type OpenInput = typeof OpenRequest.Type

/**
 * When an open draws from several sources at once (split funding): `"on"` or
 * `"off"` as the request says, or `"account"` to ask the engine's
 * `splitFundingFor` (off without it).
 */
export type SplitChoice = "on" | "off" | "account"

/**
 * How an open reserves:
 * - `Reserve`: the estimate, before the work, on the first source of the chain
 *   that covers it (then split funding, as `split` says); `trustBypass` says
 *   whether the trust bypass may reserve 0 instead (`"refused"`: the request's
 *   `force`).
 * - `PostConsume`: a charge after the work (`charge`): a hold of 0 taken
 *   without a balance condition (`unconditional`), never trusted, never split.
 */
export type OpenMode =
  | { readonly _tag: "Reserve"; readonly trustBypass: "allowed" | "refused"; readonly split: SplitChoice }
  | { readonly _tag: "PostConsume" }

/** An open request as the phases read it. */
export interface OpenOrder {
  /** The request as decoded (its ids, estimate, sources, ttl, metadata). */
  readonly request: OpenInput
  /** The normalized preference: a built-in or custom chain name (empty or unknown: `subscription_first`). */
  readonly preference: Name
  /** The token whose budget the open reserves on: none for a playground request or without a token. */
  readonly budgetedTokenId: string | undefined
  readonly mode: OpenMode
}

/** The order of an open (`open`): reserves the estimate. */
export const reserveOrder = (request: OpenInput, chains?: Chains): OpenOrder => ({
  request,
  preference: PreferenceModule.normalize(request.preference, chains),
  budgetedTokenId: request.playground ? undefined : request.tokenId,
  mode: {
    _tag: "Reserve",
    trustBypass: request.force ? "refused" : "allowed",
    split: request.split === undefined ? "account" : request.split ? "on" : "off"
  }
})

/** The order of a post-consume charge (`charge`): a hold of 0, taken unconditionally. */
export const postConsumeOrder = (request: OpenInput, chains?: Chains): OpenOrder => ({
  ...reserveOrder({ ...request, estimate: 0 as Quota }, chains),
  mode: { _tag: "PostConsume" }
})
