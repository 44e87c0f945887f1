/**
 * The paying sources of a settled hold, as the request log shows them.
 *
 * @internal
 */
import type { Hold } from "@relay-billing/core"

/** The paying source ids of a settlement, `+`-joined in order. */
export const sourcesOf = (hold: Hold.Hold): string => {
  const funding = (hold.settlement?.parts ?? []).filter((p) => p.kind === "funding")
  const paying = funding.filter((p) => p.charged > 0)
  const chosen = paying.length > 0
    ? paying
    : funding.length > 0
    ? funding
    : hold.parts.filter((p) => p.kind === "funding")
  return [...new Set(chosen.map((p) => p.sourceId))].join("+")
}
