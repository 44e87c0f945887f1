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

/** The reservation a part records: which rows it drew from, and how much from each. */
export type Draw = ReadonlyArray<{ readonly id: string; readonly amount: number }>

export const encodeDraw = (draw: Draw): string => JSON.stringify(draw.map((d) => [d.id, d.amount]))

export const decodeDraw = (ref: string | undefined): Draw => {
  if (!ref) return []
  const parsed = JSON.parse(ref) as Array<[string, number]>
  return parsed.map(([id, amount]) => ({ id, amount }))
}
