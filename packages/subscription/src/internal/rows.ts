import type { Period } from "../Period.js"

/** A subscription row as the source works with it. */
export interface SubscriptionRow {
  readonly id: string
  readonly accountId: string
  readonly planId: string
  readonly total: number
  used: number
  readonly startAt: number
  readonly endAt: number
  readonly status: "active" | "expired" | "cancelled"
  readonly period: Period
  readonly allowWalletOverflow: boolean
  lastResetAt: number | undefined
  nextResetAt: number | undefined
}

const num = (v: unknown, column: string): number => {
  const n = Number(v)
  if (!Number.isSafeInteger(n)) throw new Error(`${column}: ${String(v)} is not a safe integer`)
  return n
}
const optNum = (v: unknown, column: string) => (v === null || v === undefined ? undefined : num(v, column))

export const fromRow = (row: Record<string, unknown>): SubscriptionRow => ({
  id: String(row["id"]),
  accountId: String(row["account_id"]),
  planId: String(row["plan_id"]),
  total: num(row["amount_total"], "amount_total"),
  used: num(row["amount_used"], "amount_used"),
  startAt: num(row["start_at"], "start_at"),
  endAt: num(row["end_at"], "end_at"),
  status: String(row["status"]) as SubscriptionRow["status"],
  period: {
    period: String(row["reset_period"]) as Period["period"],
    customSeconds: optNum(row["reset_seconds"], "reset_seconds")
  },
  allowWalletOverflow: Boolean(row["allow_wallet_overflow"]),
  lastResetAt: optNum(row["last_reset_at"], "last_reset_at"),
  nextResetAt: optNum(row["next_reset_at"], "next_reset_at")
})

export const isActive = (s: SubscriptionRow, now: number) => s.status === "active" && s.startAt <= now && now < s.endAt

/** Room left in the current period (Infinity for an unlimited total). */
export const room = (s: SubscriptionRow) => (s.total === 0 ? Number.POSITIVE_INFINITY : s.total - s.used)

/**
 * One subscription a part drew from: how much, and from which period — the
 * start of the period (`lastResetAt`) when it was drawn. `period` is absent for
 * a plan that never resets, and in refs written before issue 8; such a draw
 * belongs to the current period (the old behaviour).
 */
export interface DrawItem {
  readonly id: string
  readonly amount: number
  readonly period?: number
}

/** The reservation a part records: which rows it drew from, how much from each, in which period. */
export type Draw = ReadonlyArray<DrawItem>

export const encodeDraw = (draw: Draw): string =>
  JSON.stringify(draw.map((d) => (d.period === undefined ? [d.id, d.amount] : [d.id, d.amount, d.period])))

export const decodeDraw = (ref: string | undefined): Draw => {
  if (!ref) return []
  const parsed = JSON.parse(ref) as Array<[string, number, (number | null)?]>
  return parsed.map(([id, amount, period]) => (typeof period === "number" ? { id, amount, period } : { id, amount }))
}

/** A draw from `row` now: the start of its current period (none when it never resets). */
export const drawFrom = (row: SubscriptionRow, amount: number): DrawItem =>
  row.lastResetAt === undefined ? { id: row.id, amount } : { id: row.id, amount, period: row.lastResetAt }

/**
 * Whether a draw belongs to the row's current period (the row must have had its
 * due reset applied). A draw from a period that has been reset since belongs
 * to that closed period: settling or refunding it never moves today's usage.
 */
export const inCurrentPeriod = (draw: DrawItem, row: SubscriptionRow): boolean =>
  draw.period === undefined || draw.period === row.lastResetAt
