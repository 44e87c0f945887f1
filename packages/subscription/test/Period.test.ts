import { describe, expect, it } from "vitest"
import { Period } from "../src/index.js"

const t = (iso: string) => Date.parse(iso)

describe("Period boundaries", () => {
  it("daily in UTC: the next midnight after now, catching up missed days in one step", () => {
    const anchor = t("2026-01-01T10:00:00Z")
    expect(Period.nextBoundary({ period: "daily" }, anchor, t("2026-03-05T23:59:59Z"))).toBe(t("2026-03-06T00:00:00Z"))
    expect(Period.nextBoundary({ period: "daily" }, anchor, t("2026-03-06T00:00:00Z"))).toBe(t("2026-03-07T00:00:00Z"))
    expect(Period.currentStart({ period: "daily" }, anchor, t("2026-03-05T12:00:00Z"))).toBe(t("2026-03-05T00:00:00Z"))
  })
  it("daily in a configured time zone resets at local midnight (across a DST change)", () => {
    // Europe/Berlin: CET (+01:00) until 2026-03-29 02:00, then CEST (+02:00)
    expect(Period.nextBoundary({ period: "daily" }, 0, t("2026-03-28T12:00:00Z"), "Europe/Berlin")).toBe(
      t("2026-03-28T23:00:00Z")
    )
    expect(Period.nextBoundary({ period: "daily" }, 0, t("2026-03-29T12:00:00Z"), "Europe/Berlin")).toBe(
      t("2026-03-29T22:00:00Z")
    )
  })
  it("weekly resets on Monday 00:00", () => {
    // 2026-11-28 is a Saturday
    expect(Period.nextBoundary({ period: "weekly" }, 0, t("2026-11-28T08:00:00Z"))).toBe(t("2026-11-30T00:00:00Z"))
    expect(Period.currentStart({ period: "weekly" }, 0, t("2026-11-28T08:00:00Z"))).toBe(t("2026-11-23T00:00:00Z"))
  })
  it("monthly resets on the 1st, including from the 31st and across years", () => {
    expect(Period.nextBoundary({ period: "monthly" }, 0, t("2026-01-31T20:00:00Z"))).toBe(t("2026-02-01T00:00:00Z"))
    expect(Period.nextBoundary({ period: "monthly" }, 0, t("2026-12-15T00:00:00Z"))).toBe(t("2027-01-01T00:00:00Z"))
  })
  it("custom periods count from the anchor", () => {
    const anchor = t("2026-01-01T00:00:00Z")
    expect(Period.nextBoundary({ period: "custom", customSeconds: 3600 }, anchor, anchor + 90 * 60_000)).toBe(
      anchor + 2 * 3600_000
    )
    expect(Period.currentStart({ period: "custom", customSeconds: 3600 }, anchor, anchor + 90 * 60_000)).toBe(
      anchor + 3600_000
    )
  })
  it("never has no boundary", () => {
    expect(Period.nextBoundary({ period: "never" }, 0, 123)).toBeUndefined()
  })
})
