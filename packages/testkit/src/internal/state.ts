import type { Hold, HoldIntent, Ledger } from "@relay-billing/core"

export interface WalletRow {
  balance: number
}

export interface CounterRow {
  usedQuota: number
  requestCount: number
}

export interface TokenRow {
  accountId: string
  remain: number
  used: number
  unlimited: boolean
}

export interface SubscriptionRow {
  id: string
  accountId: string
  total: number
  used: number
  startAt: number
  endAt: number
  status: "active" | "expired" | "cancelled"
  allowWalletOverflow: boolean
}

export interface PartRow {
  amount: number
  ref?: string
  status: "reserved" | "settled" | "refunded"
  result?: { charged: number; unbilled: number; balanceAfter?: number }
}

/** Everything one in-memory store holds; cloned for rollback. */
export interface State {
  wallets: Map<string, WalletRow>
  counters: Map<string, CounterRow>
  tokens: Map<string, TokenRow>
  subscriptions: Map<string, SubscriptionRow>
  holds: Map<string, Hold.Hold>
  /** Per-source reservation records, keyed `${sourceId}\u0000${holdId}`. */
  parts: Map<string, PartRow>
  ledger: Array<Ledger.LedgerEntry>
  /** Intents of holds with external parts, keyed `${holdId}\u0000${phase}`. */
  intents: Map<string, HoldIntent.HoldIntent>
  /** Idempotency keys of top-ups already applied. */
  topups: Set<string>
  /** Corrections applied, keyed `${sourceId}\u0000${holdId}\u0000${correctionId}`, with their result. */
  corrections: Map<string, { corrected: number; balanceAfter?: number }>
  /** Late charges applied (billing-semantics §6), keyed like `parts`, with their result. */
  lateCharges: Map<string, { charged: number; unbilled: number; balanceAfter?: number }>
  seq: number
}

export const emptyState = (): State => ({
  wallets: new Map(),
  counters: new Map(),
  tokens: new Map(),
  subscriptions: new Map(),
  holds: new Map(),
  parts: new Map(),
  ledger: [],
  intents: new Map(),
  topups: new Set(),
  corrections: new Map(),
  lateCharges: new Map(),
  seq: 0
})

export const partKey = (sourceId: string, holdId: string) => `${sourceId}\u0000${holdId}`
