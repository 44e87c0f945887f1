/**
 * The internal failures of the write-once paths of the engine (every source a
 * `Source` in the journal's store): the hold is written once per phase, after
 * the balances moved, and a write that finds another outcome first fails its
 * transaction so that the moves roll back.
 */
import { Data } from "effect"

/** The insert of a fully taken hold met an existing id: fails to roll the takes back. */
export class Replayed extends Data.TaggedError("Replayed")<{}> {}

/**
 * A resolution written with a conditional update found the hold no longer
 * pending (another process resolved it first): fails to roll its moves back,
 * and the caller goes on with the hold as it now is.
 */
export class Stale extends Data.TaggedError("Stale")<{}> {}

/** An open's typed refusal (not a store failure): a replay of an existing hold may explain it. */
export const isBusinessError = (error: unknown): boolean => {
  const tag = (error as { readonly _tag?: unknown } | undefined)?._tag
  return tag === "InsufficientFunds" || tag === "TokenBudgetExceeded" || tag === "TokenNotFound" ||
    tag === "QuotaOutOfRange" || tag === "ContractViolation" || tag === "HoldResolved"
}
