/**
 * Reset periods of a plan and their boundaries. Calendar periods (daily,
 * weekly from Monday, monthly) reset at midnight in a configurable time zone
 * (UTC by default); custom periods reset every N seconds from the
 * subscription's start. A subscription that missed several boundaries catches
 * up in one step: its usage resets once and the next boundary is the first one
 * after now.
 *
 * @since 0.1.0
 */
import { DateTime, Schema } from "effect"

/**
 * @since 0.1.0
 * @category schemas
 */
export const ResetPeriod = Schema.Literals(["never", "daily", "weekly", "monthly", "custom"])

/**
 * @since 0.1.0
 * @category models
 */
export type ResetPeriod = typeof ResetPeriod.Type

/**
 * A period as stored on a plan or subscription.
 *
 * @since 0.1.0
 * @category models
 */
export interface Period {
  readonly period: ResetPeriod
  /** Length of a `custom` period in seconds. */
  readonly customSeconds?: number | undefined
}

const unit = { daily: "day", weekly: "week", monthly: "month" } as const

const zoned = (ms: number, timeZone: string) => DateTime.makeZonedUnsafe(ms, { timeZone })

/**
 * The start of the period containing `at`: the calendar boundary at or before
 * `at`, or for custom periods `anchor + k × seconds`. `undefined` for `never`.
 *
 * @since 0.1.0
 * @category boundaries
 */
export const currentStart = (p: Period, anchor: number, at: number, timeZone = "UTC"): number | undefined => {
  switch (p.period) {
    case "never":
      return undefined
    case "custom": {
      const step = (p.customSeconds ?? 0) * 1000
      if (!(step > 0)) return undefined
      return anchor + Math.floor((at - anchor) / step) * step
    }
    default:
      return DateTime.toEpochMillis(
        DateTime.startOf(zoned(at, timeZone), unit[p.period], { weekStartsOn: 1 })
      )
  }
}

/**
 * The first boundary strictly after `at` (when the next reset is due), or
 * `undefined` for `never`.
 *
 * @since 0.1.0
 * @category boundaries
 */
export const nextBoundary = (p: Period, anchor: number, at: number, timeZone = "UTC"): number | undefined => {
  const start = currentStart(p, anchor, at, timeZone)
  if (start === undefined) return undefined
  switch (p.period) {
    case "never":
      return undefined
    case "custom":
      return start + (p.customSeconds ?? 0) * 1000
    case "daily":
      return DateTime.toEpochMillis(DateTime.add(zoned(start, timeZone), { days: 1 }))
    case "weekly":
      return DateTime.toEpochMillis(DateTime.add(zoned(start, timeZone), { weeks: 1 }))
    case "monthly":
      return DateTime.toEpochMillis(DateTime.add(zoned(start, timeZone), { months: 1 }))
  }
}
