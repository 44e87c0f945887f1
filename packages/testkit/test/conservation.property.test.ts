/**
 * Model-based property test of the billing engine over the in-memory store.
 *
 * Each run builds a fresh store with 3–4 accounts (wallet, limited or unlimited
 * token, 0–2 subscriptions with random totals incl. 0 = unlimited, random
 * `allowWalletOverflow`, some expiring or not yet started), arms a seeded random
 * fault plan over every store operation (rate 0–0.3), sometimes turns on the
 * engine's trust bypass, and drives a random sequence of commands: open (fresh
 * ids and re-used ids with the same or different parameters, every preference
 * plus "" and garbage, invalid estimates, playground, force, per-request TTL),
 * settle (existing / unknown ids, repeated with another actual),
 * refund (repeated, after settle), top-up (repeated keys), clock advance +
 * recovery pass, and concurrent batches (`Effect.all` with unbounded
 * concurrency) of opens / settles / refunds / top-ups / recovery passes.
 *
 * An independent model implements the spec (docs: billing-semantics.md §2–§4, §6)
 * and predicts every outcome: which source pays, every typed error with its
 * numbers, each settlement part, every balance. A concurrent batch must be
 * linearizable: some sequential order of its operations must explain every
 * result and the final state. An operation that failed with an injected
 * `StoreError` must have changed nothing.
 *
 * After EVERY command: (1) the store's audit is clean; (2) hold statuses only
 * move pending → settled | refunded | expired and never again, and a repeated
 * settle returns the first settlement; (3) a failed open changed nothing (no
 * balance, counter, hold or ledger row); (4) money is conserved per account and
 * per hold from the ledger and from the model; (5) only a settlement takes a
 * wallet below zero.
 *
 * Replay a failure with the seed / path fast-check prints:
 *   FC_SEED=<seed> FC_PATH=<path> npx vitest run test/conservation.property.test.ts
 * (FC_NUM_RUNS overrides the number of runs.)
 */
import { AccountCounters, BillingSession, FundingRegistry, HoldJournal, Ledger, SqlStore } from "@relay-billing/core"
import type { Hold, Source } from "@relay-billing/core"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { Faults, InMemoryStore } from "../src/index.js"

// ====================================================================== config

const NUM_RUNS = Number(process.env["FC_NUM_RUNS"] ?? 300)
const MAX_COMMANDS = 40
const HOLD_TTL = 10 * 60 * 1000
const replay: { seed?: number; path?: string } = process.env["FC_SEED"] !== undefined
  ? {
    seed: Number(process.env["FC_SEED"]),
    ...(process.env["FC_PATH"] !== undefined ? { path: process.env["FC_PATH"] } : {})
  }
  : {}

// ====================================================================== scenario

type TokenSpec = { readonly unlimited: true } | { readonly unlimited: false; readonly remain: number }

interface SubSpec {
  readonly total: number
  readonly used: number
  readonly allowWalletOverflow: boolean
  readonly startAt: number
  readonly endAt: number
  readonly status: "active" | "expired" | "cancelled"
}

interface AccountSpec {
  readonly balance: number
  readonly token: TokenSpec
  readonly subs: ReadonlyArray<SubSpec>
}

/** `known`: index counted back from the most recently used hold id (0 = latest). */
type HoldRef =
  | { readonly kind: "fresh" }
  | { readonly kind: "known"; readonly back: number; readonly vary: "same" | "estimate" | "account" | "token" }

/** `held`: a hold that exists; `known`: any hold id used so far (also ids whose open failed). */
type Target =
  | { readonly kind: "held"; readonly back: number }
  | { readonly kind: "known"; readonly back: number }
  | { readonly kind: "unknown" }

interface OpenCmd {
  readonly t: "open"
  readonly account: number
  readonly withToken: boolean
  /** A playground request: the token is passed but no budget is reserved or charged. */
  readonly playground: boolean
  /** Never apply the trust bypass. */
  readonly force: boolean
  /** A per-request hold lifetime instead of the engine's 10 minutes. */
  readonly ttlMillis: number | undefined
  readonly estimate: number
  readonly preference: string | undefined
  readonly ref: HoldRef
}
interface SettleCmd {
  readonly t: "settle"
  readonly target: Target
  readonly actual: number
  /** Settle again right away with this actual (sequential commands only). */
  readonly again: number | undefined
}
interface RefundCmd {
  readonly t: "refund"
  readonly target: Target
  readonly again: boolean
}
/** §6: the holder renews the hold's lease (the engine's default length). */
interface RenewCmd {
  readonly t: "renew"
  readonly target: Target
}
interface TopUpCmd {
  readonly t: "topup"
  readonly account: number
  readonly amount: number
  readonly key: number
}
type SimpleCmd = OpenCmd | SettleCmd | RefundCmd | TopUpCmd | RenewCmd
type Cmd =
  | SimpleCmd
  | { readonly t: "advance"; readonly ms: number; readonly reap: boolean }
  | { readonly t: "reap" }
  | { readonly t: "parallel"; readonly cmds: ReadonlyArray<SimpleCmd> }
  | { readonly t: "reapRace"; readonly n: number }
  | { readonly t: "reapWith"; readonly other: SimpleCmd }

interface Scenario {
  readonly accounts: ReadonlyArray<AccountSpec>
  readonly faultSeed: number
  readonly faultRate: number
  /**
   * The in-memory store never suspends, so concurrent fibers would run one after the other.
   * When set, a scheduling point (0–2 seeded yields) precedes every store operation, so that
   * concurrent operations really interleave between the store's transactions.
   */
  readonly interleave: { readonly seed: number } | undefined
  /** The engine's optional trust bypass (§2.8), off in most runs. */
  readonly trustThreshold: number | undefined
  readonly commands: ReadonlyArray<Cmd>
}

const subArb: fc.Arbitrary<SubSpec> = fc
  .record({
    total: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 120_000 })),
    usedFraction: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 1, noNaN: true }), fc.constant(1)),
    allowWalletOverflow: fc.boolean(),
    startAt: fc.constantFrom(0, 0, 0, 7 * 60_000),
    endAt: fc.constantFrom(1e12, 1e12, 5 * 60_000, 25 * 60_000),
    status: fc.constantFrom<SubSpec["status"]>("active", "active", "active", "active", "cancelled", "expired")
  })
  .map(({ usedFraction, ...s }) => ({
    ...s,
    used: s.total === 0 ? Math.floor(usedFraction * 50_000) : Math.floor(usedFraction * s.total)
  }))

const accountArb: fc.Arbitrary<AccountSpec> = fc.record({
  balance: fc.oneof(
    { weight: 1, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 40_000 }) },
    { weight: 3, arbitrary: fc.integer({ min: 40_000, max: 300_000 }) }
  ),
  token: fc.oneof(
    fc.constant<TokenSpec>({ unlimited: true }),
    fc.integer({ min: 0, max: 250_000 }).map((remain): TokenSpec => ({ unlimited: false, remain }))
  ),
  subs: fc.oneof(
    { weight: 2, arbitrary: fc.constant([]) },
    { weight: 3, arbitrary: fc.array(subArb, { minLength: 1, maxLength: 2 }) }
  )
})

const PREFERENCES = [
  undefined,
  "subscription_first",
  "wallet_first",
  "subscription_only",
  "wallet_only",
  "",
  "  wallet_first ",
  "SUBSCRIPTION_ONLY",
  "garbage"
] as const

const backArb = fc.nat({ max: 6 })
const targetArb: fc.Arbitrary<Target> = fc.oneof(
  { weight: 12, arbitrary: backArb.map((back): Target => ({ kind: "held", back })) },
  { weight: 3, arbitrary: backArb.map((back): Target => ({ kind: "known", back })) },
  { weight: 1, arbitrary: fc.constant<Target>({ kind: "unknown" }) }
)

const openArb: fc.Arbitrary<OpenCmd> = fc.record({
  t: fc.constant("open" as const),
  account: fc.nat({ max: 3 }),
  withToken: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  playground: fc.oneof({ weight: 8, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  force: fc.boolean(),
  ttlMillis: fc.oneof(
    { weight: 3, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 20 * 60_000 }) }
  ),
  estimate: fc.oneof(
    { weight: 2, arbitrary: fc.constant(0) },
    { weight: 20, arbitrary: fc.integer({ min: 0, max: 50_000 }) },
    { weight: 1, arbitrary: fc.constantFrom(-1, 2.5, Number.NaN) }
  ),
  preference: fc.constantFrom(...PREFERENCES),
  ref: fc.oneof(
    { weight: 3, arbitrary: fc.constant<HoldRef>({ kind: "fresh" }) },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("known" as const),
        back: backArb,
        vary: fc.constantFrom(
          "same" as const,
          "same" as const,
          "estimate" as const,
          "account" as const,
          "token" as const
        )
      })
    }
  )
})

const settleArb = (sequential: boolean): fc.Arbitrary<SettleCmd> =>
  fc.record({
    t: fc.constant("settle" as const),
    target: targetArb,
    actual: fc.integer({ min: 0, max: 80_000 }),
    again: sequential
      ? fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, {
        weight: 1,
        arbitrary: fc.integer({ min: 0, max: 80_000 })
      })
      : fc.constant(undefined)
  })

const refundArb = (sequential: boolean): fc.Arbitrary<RefundCmd> =>
  fc.record({
    t: fc.constant("refund" as const),
    target: targetArb,
    again: sequential ? fc.boolean() : fc.constant(false)
  })

const renewArb: fc.Arbitrary<RenewCmd> = fc.record({ t: fc.constant("renew" as const), target: targetArb })

const topUpArb: fc.Arbitrary<TopUpCmd> = fc.record({
  t: fc.constant("topup" as const),
  account: fc.nat({ max: 3 }),
  amount: fc.integer({ min: 0, max: 100_000 }),
  key: fc.nat({ max: 5 })
})

const simpleArb = (sequential: boolean): fc.Arbitrary<SimpleCmd> =>
  fc.oneof(
    { weight: 5, arbitrary: openArb },
    { weight: 4, arbitrary: settleArb(sequential) },
    { weight: 3, arbitrary: refundArb(sequential) },
    { weight: 2, arbitrary: renewArb },
    { weight: 1, arbitrary: topUpArb }
  )

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 30, arbitrary: openArb },
  { weight: 20, arbitrary: settleArb(true) },
  { weight: 10, arbitrary: refundArb(true) },
  { weight: 6, arbitrary: topUpArb },
  // Expiry racing running requests (issue 9): renewals, and settles arriving after an expiry.
  { weight: 8, arbitrary: renewArb },
  {
    weight: 6,
    arbitrary: fc.record({
      t: fc.constant("advance" as const),
      ms: fc.oneof(
        fc.constantFrom(60_000, 5 * 60_000, HOLD_TTL, HOLD_TTL + 1),
        fc.integer({ min: 0, max: 15 * 60_000 })
      ),
      reap: fc.boolean()
    })
  },
  { weight: 3, arbitrary: fc.constant({ t: "reap" as const }) },
  {
    weight: 12,
    arbitrary: fc.record({
      t: fc.constant("parallel" as const),
      cmds: fc.array(simpleArb(false), { minLength: 2, maxLength: 4 })
    })
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("reapRace" as const), n: fc.integer({ min: 2, max: 3 }) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("reapWith" as const), other: simpleArb(false) }) }
)

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  accounts: fc.array(accountArb, { minLength: 3, maxLength: 4 }),
  faultSeed: fc.integer(),
  faultRate: fc.oneof(
    { weight: 1, arbitrary: fc.constant(0) },
    { weight: 3, arbitrary: fc.integer({ min: 1, max: 300 }).map((permille) => permille / 1000) }
  ),
  interleave: fc.option(fc.record({ seed: fc.integer() }), { freq: 3 }).map((o) => o ?? undefined),
  trustThreshold: fc.oneof(
    { weight: 3, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 150_000 })) }
  ),
  commands: fc.array(cmdArb, { minLength: 1, maxLength: MAX_COMMANDS, size: "max" })
})

// ====================================================================== concrete operations

type Op =
  | {
    readonly t: "open"
    readonly holdId: string
    readonly accountId: string
    readonly tokenId: string | undefined
    readonly playground: boolean
    readonly force: boolean
    readonly ttlMillis: number | undefined
    readonly estimate: number
    readonly preference: string | undefined
  }
  | { readonly t: "settle"; readonly holdId: string; readonly actual: number }
  | { readonly t: "refund"; readonly holdId: string }
  | { readonly t: "renew"; readonly holdId: string }
  | { readonly t: "topup"; readonly accountId: string; readonly amount: number; readonly key: string }
  | { readonly t: "reap" }

const showOp = (op: Op): string => {
  switch (op.t) {
    case "open":
      return `open(${op.holdId}, ${op.accountId}, token=${op.tokenId ?? "-"}${
        op.playground ? " (playground)" : ""
      }, P=${op.estimate}, pref=${JSON.stringify(op.preference)}${op.force ? ", force" : ""}${
        op.ttlMillis !== undefined ? `, ttl=${op.ttlMillis}` : ""
      })`
    case "settle":
      return `settle(${op.holdId}, A=${op.actual})`
    case "refund":
      return `refund(${op.holdId})`
    case "renew":
      return `renew(${op.holdId})`
    case "topup":
      return `topUp(${op.accountId}, ${op.amount}, key=${op.key})`
    case "reap":
      return "reapExpired()"
  }
}

/** What an operation returned, reduced to plain data. */
type Observed =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly tag: string; readonly error: Record<string, unknown> }

/** What the model says it must return. `error` lists the fields the error must carry. */
type Predicted =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly tag: string; readonly error: Record<string, unknown> }

const isStoreError = (o: Observed) => !o.ok && o.tag === "StoreError"

// ====================================================================== canonical comparison

/** Canonical JSON: sorted keys, undefined dropped, -0 printed as 0. */
const canon = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) => {
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      return Object.fromEntries(
        Object.entries(v as Record<string, unknown>)
          .filter(([, x]) => x !== undefined)
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      )
    }
    return v
  })

const same = (a: unknown, b: unknown) => canon(a) === canon(b)

// ====================================================================== the model (the spec)

type Status = "pending" | "settled" | "refunded" | "expired"

interface MSub {
  id: string
  accountId: string
  total: number
  used: number
  openingUsed: number
  startAt: number
  endAt: number
  status: "active" | "expired" | "cancelled"
  allowWalletOverflow: boolean
}

interface MHold {
  id: string
  accountId: string
  tokenId: string | undefined
  estimate: number
  preference: string
  reserved: number
  source: "wallet" | "subscription"
  subRef: string | undefined
  /** What the token reserved (0 for an unlimited token); undefined without a token. */
  tokenReserved: number | undefined
  trusted: boolean
  status: Status
  expiresAt: number
  createdAt: number
  actual: number | undefined
  settlement: unknown
}

interface Model {
  now: number
  trustThreshold: number | undefined
  wallets: Record<string, number>
  /** Opening balance + applied top-ups, per account. */
  credited: Record<string, number>
  topupKeys: Array<string>
  counters: Record<string, { usedQuota: number; requestCount: number }>
  tokens: Record<string, { accountId: string; remain: number; used: number; unlimited: boolean }>
  subs: Record<string, MSub>
  holds: Record<string, MHold>
  unbilled: Record<string, number>
}

const normalizePreference = (p: string | undefined) => {
  const t = (p ?? "").trim()
  return t === "wallet_first" || t === "wallet_only" || t === "subscription_only" || t === "subscription_first"
    ? t
    : "subscription_first"
}

const activeSubs = (m: Model, accountId: string) =>
  Object.values(m.subs)
    .filter((s) => s.accountId === accountId && s.status === "active" && s.startAt <= m.now && m.now < s.endAt)
    .sort((a, b) => a.endAt - b.endAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))

const isQuota = (n: number) => Number.isSafeInteger(n) && n >= 0

const holdView = (h: MHold) => ({
  id: h.id,
  accountId: h.accountId,
  tokenId: h.tokenId,
  estimate: h.estimate,
  reserved: h.reserved,
  preference: h.preference,
  trusted: h.trusted,
  status: "pending",
  expiresAt: h.expiresAt,
  parts: [
    {
      kind: "funding",
      sourceId: h.source,
      // v2: a Source's part is the row it drew from (the subscription's `ref`), else the account
      subjectId: h.subRef ?? h.accountId,
      amount: h.reserved,
      ...(h.subRef !== undefined ? { ref: h.subRef } : {})
    },
    ...(h.tokenId !== undefined
      ? [{ kind: "budget", sourceId: "token", subjectId: h.tokenId, amount: h.tokenReserved }]
      : [])
  ]
})

const observedHoldView = (h: Hold.Hold) => ({
  id: h.id,
  accountId: h.accountId,
  tokenId: h.tokenId,
  estimate: h.estimate,
  reserved: h.reserved,
  preference: h.preference,
  trusted: h.trusted,
  status: h.status,
  expiresAt: h.expiresAt,
  parts: h.parts.map((p) => ({
    kind: p.kind,
    sourceId: p.sourceId,
    subjectId: p.subjectId,
    amount: p.amount,
    ref: p.ref
  }))
})

const fail = (tag: string, error: Record<string, unknown> = {}): Predicted => ({ ok: false, tag, error })
const ok = (value: unknown): Predicted => ({ ok: true, value })

/** Gives a pending hold's reservation back (refund or expiry). */
const giveBack = (m: Model, h: MHold, status: "refunded" | "expired") => {
  if (h.source === "wallet") m.wallets[h.accountId]! += h.reserved
  else {
    const sub = m.subs[h.subRef!]!
    sub.used = Math.max(0, sub.used - h.reserved)
  }
  if (h.tokenId !== undefined) {
    const t = m.tokens[h.tokenId]!
    t.remain += h.tokenReserved!
    t.used -= h.tokenReserved!
  }
  h.status = status
}

const modelOpen = (m: Model, op: Extract<Op, { t: "open" }>): Predicted => {
  if (!isQuota(op.estimate)) return fail("InvalidInput", { field: "estimate" })
  // A playground request has no token: nothing is reserved on or charged to it.
  const tokenId = op.playground ? undefined : op.tokenId
  const existing = m.holds[op.holdId]
  if (existing) {
    if (existing.accountId !== op.accountId) return fail("IdempotencyConflict", { field: "accountId" })
    if (existing.tokenId !== tokenId) return fail("IdempotencyConflict", { field: "tokenId" })
    if (existing.estimate !== op.estimate) return fail("IdempotencyConflict", { field: "estimate" })
    if (existing.status !== "pending") {
      return fail("HoldResolved", {
        status: existing.status,
        operation: "open",
        ...(existing.status === "settled" ? { actual: existing.actual } : {})
      })
    }
    // §2.7 (issue 8 #3): a second open of a pending hold never gets a handle to it.
    return fail("HoldInFlight", { holdId: existing.id, expiresAt: existing.expiresAt })
  }
  const preference = normalizePreference(op.preference)
  const active = activeSubs(m, op.accountId)
  // §2.1: the source order.
  const order: Array<"wallet" | "subscription"> = preference === "wallet_only"
    ? ["wallet"]
    : preference === "subscription_only"
    ? ["subscription"]
    : preference === "wallet_first"
    ? ["wallet", "subscription"]
    : active.length === 0
    ? ["wallet"]
    : active.every((s) => s.allowWalletOverflow)
    ? ["subscription", "wallet"]
    : ["subscription"]
  let shortfall: Predicted | undefined
  for (const source of order) {
    const token = tokenId !== undefined ? m.tokens[tokenId]! : undefined
    // §2.8: the trust bypass (an engine option) reserves nothing, only on the wallet, only when
    // the wallet and the token (unless unlimited) are strictly above the threshold.
    const threshold = m.trustThreshold
    const trusted = threshold !== undefined && !op.force && source === "wallet" &&
      m.wallets[op.accountId]! > threshold && (token === undefined || token.unlimited || token.remain > threshold)
    // §2.3: a subscription reserves max(P, 1); §2.4: the token reserves the same amount.
    const amount = trusted ? 0 : source === "wallet" ? op.estimate : Math.max(op.estimate, 1)
    if (token && !token.unlimited && token.remain < amount) {
      // §2.2: a token-budget failure never falls back.
      return fail("TokenBudgetExceeded", { tokenId, required: amount, remaining: token.remain })
    }
    let subRef: string | undefined
    if (source === "wallet") {
      const balance = m.wallets[op.accountId]!
      if (balance <= 0 || balance < amount) {
        shortfall ??= fail("InsufficientFunds", { sourceId: "wallet", required: amount, available: balance })
        continue
      }
      m.wallets[op.accountId] = balance - amount
    } else {
      const chosen = active.find((s) => s.total === 0 || s.total - s.used >= amount)
      if (!chosen) {
        shortfall ??= fail("InsufficientFunds", {
          sourceId: "subscription",
          required: amount,
          available: active.reduce((acc, s) => Math.max(acc, s.total - s.used), 0)
        })
        continue
      }
      chosen.used += amount
      subRef = chosen.id
    }
    let tokenReserved: number | undefined
    if (token) {
      tokenReserved = token.unlimited ? 0 : amount
      token.remain -= tokenReserved
      token.used += tokenReserved
    }
    const hold: MHold = {
      id: op.holdId,
      accountId: op.accountId,
      tokenId,
      estimate: op.estimate,
      preference,
      reserved: amount,
      source,
      subRef,
      tokenReserved,
      trusted,
      status: "pending",
      expiresAt: m.now + (op.ttlMillis ?? HOLD_TTL),
      createdAt: m.now,
      actual: undefined,
      settlement: undefined
    }
    m.holds[op.holdId] = hold
    return ok(holdView(hold))
  }
  return shortfall!
}

const modelSettle = (m: Model, holdId: string, actual: number): Predicted => {
  const h = m.holds[holdId]
  if (!h) return fail("HoldNotFound", { holdId })
  // §3.1: exactly once; a repeat returns the first result; after refund/expiry a typed error.
  if (h.status === "settled") return ok(h.settlement)
  // §6 (issue 9): after an expiry, a late charge (once; a repeat returns it); after a refund, an error.
  if (h.status === "expired") return h.settlement !== undefined ? ok(h.settlement) : modelLateSettle(m, h, actual)
  if (h.status !== "pending") return fail("HoldResolved", { status: h.status, operation: "settle" })
  const delta = actual - h.reserved
  let funding: Record<string, unknown>
  if (h.source === "wallet") {
    // §3.2: the wallet moves by −delta with no floor.
    const balance = (m.wallets[h.accountId]! -= delta)
    funding = { charged: actual, unbilled: 0, balanceAfter: balance }
  } else {
    // §3.2: amountUsed += delta (floor 0); above a non-zero total the overflow goes to the
    // wallet when the plan allows it, otherwise it is recorded as unbilled.
    const sub = m.subs[h.subRef!]!
    const before = sub.used
    let target = Math.max(0, before + delta)
    let overflow = 0
    if (sub.total > 0 && target > sub.total) {
      overflow = target - sub.total
      target = sub.total
    }
    sub.used = target
    let unbilled = 0
    if (overflow > 0) {
      if (sub.allowWalletOverflow) m.wallets[h.accountId]! -= overflow
      else unbilled = overflow
    }
    m.unbilled[h.accountId] = (m.unbilled[h.accountId] ?? 0) + unbilled
    funding = {
      charged: h.reserved + (target - before) + (overflow - unbilled),
      unbilled,
      // an unlimited subscription (total 0) reports no balance
      ...(sub.total > 0 ? { balanceAfter: sub.total - sub.used } : {})
    }
  }
  const parts: Array<unknown> = [{
    kind: "funding",
    sourceId: h.source,
    subjectId: h.subRef ?? h.accountId,
    reserved: h.reserved,
    ...funding
  }]
  if (h.tokenId !== undefined) {
    // §3.3: remainQuota −delta, usedQuota +delta, unlimited tokens too.
    const t = m.tokens[h.tokenId]!
    const change = actual - h.tokenReserved!
    t.remain -= change
    t.used += change
    parts.push({
      kind: "budget",
      sourceId: "token",
      subjectId: h.tokenId,
      reserved: h.tokenReserved,
      charged: actual,
      unbilled: 0,
      balanceAfter: t.remain
    })
  }
  // §3.4: counters move with a settle of A > 0, usedQuota by what was charged (A less unbilled).
  if (actual > 0) {
    const c = m.counters[h.accountId]!
    c.usedQuota += actual - (funding["unbilled"] as number)
    c.requestCount += 1
  }
  h.status = "settled"
  h.actual = actual
  h.settlement = { holdId, actual, reserved: h.reserved, delta, parts, settledAt: m.now }
  return ok(h.settlement)
}

/**
 * §6: a settle of an expired hold charges A afresh on the source the hold reserved on (no
 * balance condition; a subscription up to its total, the overflow by the plan's rule) and on
 * the token, moves the counters as a settle, and records the settlement (reserved 0, `late`).
 */
const modelLateSettle = (m: Model, h: MHold, actual: number): Predicted => {
  let funding: Record<string, unknown> = { charged: 0, unbilled: 0 }
  if (actual > 0 && h.source === "wallet") {
    const balance = (m.wallets[h.accountId]! -= actual)
    funding = { charged: actual, unbilled: 0, balanceAfter: balance }
  } else if (actual > 0) {
    const sub = m.subs[h.subRef!]!
    const before = sub.used
    const wanted = before + actual
    const target = sub.total > 0 ? Math.min(wanted, Math.max(before, sub.total)) : wanted
    const overflow = wanted - target
    sub.used = target
    let unbilled = 0
    if (overflow > 0) {
      if (sub.allowWalletOverflow) m.wallets[h.accountId]! -= overflow
      else unbilled = overflow
    }
    m.unbilled[h.accountId] = (m.unbilled[h.accountId] ?? 0) + unbilled
    funding = { charged: actual - unbilled, unbilled, ...(sub.total > 0 ? { balanceAfter: sub.total - sub.used } : {}) }
  }
  const parts: Array<unknown> = [{
    kind: "funding",
    sourceId: h.source,
    subjectId: h.subRef ?? h.accountId,
    reserved: 0,
    ...funding
  }]
  if (h.tokenId !== undefined) {
    const t = m.tokens[h.tokenId]!
    let token: Record<string, unknown> = { charged: 0, unbilled: 0 }
    if (actual > 0) {
      t.remain -= actual
      t.used += actual
      token = { charged: actual, unbilled: 0, balanceAfter: t.remain }
    }
    parts.push({ kind: "budget", sourceId: "token", subjectId: h.tokenId, reserved: 0, ...token })
  }
  if (actual > 0) {
    const c = m.counters[h.accountId]!
    c.usedQuota += actual - (funding["unbilled"] as number)
    c.requestCount += 1
  }
  h.actual = actual
  h.settlement = { holdId: h.id, actual, reserved: 0, delta: actual, parts, settledAt: m.now, late: true }
  return ok(h.settlement)
}

/**
 * §6: a renewal moves a pending hold's expiry to now + the engine's TTL (never past 7 days
 * after the open, never shorter); any other hold is a typed error and stays as it is.
 */
const modelRenew = (m: Model, holdId: string): Predicted => {
  const h = m.holds[holdId]
  if (!h) return fail("HoldNotFound", { holdId })
  if (h.status !== "pending") return fail("HoldResolved", { status: h.status, operation: "renew" })
  const expiresAt = Math.min(m.now + HOLD_TTL, h.createdAt + 7 * 24 * 3600 * 1000)
  if (expiresAt > h.expiresAt) h.expiresAt = expiresAt
  return ok({ holdId, expiresAt: h.expiresAt })
}

const modelRefund = (m: Model, holdId: string): Predicted => {
  const h = m.holds[holdId]
  if (!h) return fail("HoldNotFound", { holdId })
  // §4.1: exactly once, a no-op after settle (or expiry).
  if (h.status !== "pending") return ok({ holdId, status: h.status, refunded: 0 })
  giveBack(m, h, "refunded")
  return ok({ holdId, status: "refunded", refunded: h.reserved })
}

const reapCandidates = (m: Model) =>
  Object.values(m.holds).filter((h) => h.status === "pending" && h.expiresAt <= m.now).map((h) => h.id)

/** §6: refunds pending holds past expiry (except the ones whose expiry failed) and marks them expired. */
const modelReap = (m: Model, failed: ReadonlySet<string>): Predicted => {
  let expired = 0
  let refunded = 0
  for (const id of reapCandidates(m)) {
    if (failed.has(id)) continue
    const h = m.holds[id]!
    giveBack(m, h, "expired")
    expired++
    refunded += h.reserved
  }
  return ok({ expired, refunded })
}

const modelTopUp = (m: Model, op: Extract<Op, { t: "topup" }>): Predicted => {
  if (m.topupKeys.includes(op.key)) return ok(false)
  m.topupKeys.push(op.key)
  m.wallets[op.accountId]! += op.amount
  m.credited[op.accountId]! += op.amount
  return ok(true)
}

/** Applies `op` to the model, given what the store observed (for the reap's failure list). */
const modelStep = (m: Model, op: Op, observed: Observed): Predicted => {
  switch (op.t) {
    case "open":
      return modelOpen(m, op)
    case "settle":
      return modelSettle(m, op.holdId, op.actual)
    case "refund":
      return modelRefund(m, op.holdId)
    case "renew":
      return modelRenew(m, op.holdId)
    case "topup":
      return modelTopUp(m, op)
    case "reap": {
      const report = observed.ok ? (observed.value as ReapView) : undefined
      return modelReap(m, new Set(report?.failures ?? []))
    }
  }
}

interface ReapView {
  readonly examined: number
  readonly expired: number
  readonly refunded: number
  readonly failures: ReadonlyArray<string>
}

/** Why `observed` does not match `predicted` (undefined when it matches). */
const mismatch = (op: Op, observed: Observed, predicted: Predicted): string | undefined => {
  if (!observed.ok) {
    if (predicted.ok) return `expected success ${canon(predicted.value)}, got ${observed.tag} ${canon(observed.error)}`
    if (observed.tag !== predicted.tag) {
      return `expected ${predicted.tag} ${canon(predicted.error)}, got ${observed.tag} ${canon(observed.error)}`
    }
    for (const [k, v] of Object.entries(predicted.error)) {
      if (!same(observed.error[k], v)) {
        return `expected ${predicted.tag} with ${k}=${canon(v)}, got ${canon(observed.error)}`
      }
    }
    return undefined
  }
  if (!predicted.ok) return `expected ${predicted.tag} ${canon(predicted.error)}, got success ${canon(observed.value)}`
  const value = op.t === "reap"
    ? { expired: (observed.value as ReapView).expired, refunded: (observed.value as ReapView).refunded }
    : observed.value
  return same(value, predicted.value) ? undefined : `expected ${canon(predicted.value)}, got ${canon(value)}`
}

/** Differences between the model and the store's balances and hold statuses. */
const stateDiff = (m: Model, snap: InMemoryStore.Snapshot): string | undefined => {
  const expected = {
    wallets: m.wallets,
    counters: m.counters,
    tokens: Object.fromEntries(Object.entries(m.tokens).map(([k, t]) => [k, { remain: t.remain, used: t.used }])),
    subscriptions: Object.fromEntries(Object.entries(m.subs).map(([k, s]) => [k, { used: s.used, total: s.total }])),
    holds: Object.fromEntries(Object.entries(m.holds).map(([k, h]) => [k, h.status]))
  }
  const diffs: Array<string> = []
  for (const key of ["wallets", "counters", "tokens", "subscriptions", "holds"] as const) {
    const e = expected[key] as Record<string, unknown>
    const a = snap[key] as Record<string, unknown>
    for (const id of new Set([...Object.keys(e), ...Object.keys(a)])) {
      if (!same(e[id], a[id])) diffs.push(`${key}.${id}: model ${canon(e[id])}, store ${canon(a[id])}`)
    }
  }
  return diffs.length === 0 ? undefined : diffs.join("; ")
}

/** Every order of `0 … n-1`, in lexicographic order (the order the batch was written in first). */
const permutations = (n: number): Array<Array<number>> => {
  const go = (rest: ReadonlyArray<number>): Array<Array<number>> =>
    rest.length === 0 ? [[]] : rest.flatMap((x) => go(rest.filter((y) => y !== x)).map((tail) => [x, ...tail]))
  return go(Array.from({ length: n }, (_, i) => i))
}

// ====================================================================== running a scenario

class Violation extends Error {
  override readonly name = "Violation"
}

/** Totals over every run, printed at the end of the property. */
const stats = {
  runs: 0,
  commands: 0,
  operations: 0,
  parallelBatches: 0,
  /** Concurrent batches that only an order other than the written one explains (real interleaving). */
  reordered: 0,
  /** Commands after which a wallet was negative (only a settlement may cause that). */
  negativeAfterSettle: 0,
  faultsInjected: 0,
  outcomes: new Map<string, number>()
}
const count = (key: string) => stats.outcomes.set(key, (stats.outcomes.get(key) ?? 0) + 1)

type Variant = "real" | "double-refund-wallet" | "token-release-dropped" | "late-settle-free"

/**
 * A deliberately broken wallet for the mutation test: it cannot charge late (a
 * `late_settle` move moves nothing and allows no overflow), so a settle that
 * arrives after the expiry leaves the delivered work unpaid (recorded unbilled) —
 * issue 9's free service.
 */
const freeLateWallet = (store: InMemoryStore.InMemoryStore): Source.Source => ({
  ...store.wallet,
  move: (request) =>
    request.kind === "late_settle"
      ? Effect.map(store.wallet.move({ ...request, delta: 0 }), (answer) => ({ ...answer, overflow: false }))
      : store.wallet.move(request)
})

/**
 * A deliberately broken wallet for the mutation test: every refund (and expiry)
 * credits the reservation a second time, through a ledger row, so the store's
 * own audit still balances.
 */
const doubleRefundWallet = (store: InMemoryStore.InMemoryStore): Source.Source => ({
  ...store.wallet,
  move: (request) =>
    Effect.gen(function*() {
      const answer = yield* store.wallet.move(request)
      if (request.kind === "refund" || request.kind === "expire") {
        yield* store.topUp(request.subjectId, request.delta, `bug:${request.holdId}`)
      }
      return answer
    })
})

/** Puts a scheduling point (0–2 yields, from a seeded generator) before every call of `target`'s effect methods. */
const interleaved = <T extends object>(target: T, random: () => number): T => {
  const pause = Effect.suspend(() => {
    const n = Math.floor(random() * 3)
    return n === 0 ? Effect.void : n === 1 ? Effect.yieldNow : Effect.andThen(Effect.yieldNow, Effect.yieldNow)
  })
  const out = { ...target } as Record<string, unknown>
  for (const [key, value] of Object.entries(target)) {
    if (typeof value === "function" && key !== "transaction" && key !== "minimumReservation") {
      out[key] = (...args: Array<unknown>) => Effect.andThen(pause, Effect.suspend(() => value(...args)))
    }
  }
  return out as T
}

/**
 * A deliberately broken token budget for the mutation test: it answers the release
 * of a fallback attempt's reservation (or of a failed open) as done but moves
 * nothing, so the token keeps what the attempt took. (v1's variant of this bug, a
 * release recorded as a refund that blocked the next attempt, cannot be written
 * against v2: a `Source` keeps no hold ids.)
 */
const releaseDroppedToken = (store: InMemoryStore.InMemoryStore): Source.Source => ({
  ...store.token,
  move: (request) =>
    request.kind === "release"
      ? Effect.map(store.token.move({ ...request, delta: 0 }), (answer) => ({ ...answer, moved: request.delta }))
      : store.token.move(request)
})

const layerFor = (store: InMemoryStore.InMemoryStore, variant: Variant, scenario: Scenario) => {
  const { interleave, trustThreshold } = scenario
  const options: BillingSession.Options = trustThreshold === undefined
    ? {}
    : { trustBypass: { threshold: trustThreshold } }
  const wallet = variant === "double-refund-wallet"
    ? doubleRefundWallet(store)
    : variant === "late-settle-free"
    ? freeLateWallet(store)
    : store.wallet
  if (variant === "real" && interleave === undefined) return store.billingLayer(options)
  const random = Faults.seededRandom(interleave?.seed ?? 0)
  const wrap = <T extends object>(target: T) => (interleave === undefined ? target : interleaved(target, random))
  return BillingSession.BillingSession.layer(options).pipe(
    Layer.provideMerge(Layer.mergeAll(
      Layer.succeed(HoldJournal.HoldJournal, wrap(store.journal)),
      Layer.succeed(AccountCounters.AccountCounters, wrap(store.counters)),
      Layer.succeed(Ledger.Ledger, store.ledger),
      Layer.succeed(SqlStore.SqlStore, store.sql),
      FundingRegistry.FundingRegistry.layer({
        sources: [
          wrap(wallet),
          wrap(store.subscription),
          wrap(variant === "token-release-dropped" ? releaseDroppedToken(store) : store.token)
        ]
      })
    ))
  )
}

const runScenario = (scenario: Scenario, variant: Variant): Promise<void> => {
  const store = InMemoryStore.make()
  const accounts = scenario.accounts.map((_, i) => `acct${i}`)
  const tokenOf = (accountId: string) => `tok${accountId.slice(4)}`
  const trace: Array<string> = []
  const violation = (invariant: string, message: string): never => {
    throw new Violation(
      `[${invariant}] ${message}\n--- operations so far (faults injected: ${
        store.faults.injected.join(", ") || "none"
      }):\n${trace.slice(-25).join("\n")}`
    )
  }

  const program = Effect.gen(function*() {
    // ------------------------------------------------------------ setup
    const model: { current: Model } = {
      current: {
        now: 0,
        trustThreshold: scenario.trustThreshold,
        wallets: {},
        credited: {},
        topupKeys: [],
        counters: {},
        tokens: {},
        subs: {},
        holds: {},
        unbilled: {}
      }
    }
    for (const [i, spec] of scenario.accounts.entries()) {
      const accountId = accounts[i]!
      const m = model.current
      yield* store.createAccount(accountId, spec.balance)
      m.wallets[accountId] = spec.balance
      m.credited[accountId] = spec.balance
      if (spec.balance !== 0) m.topupKeys.push(`open:${accountId}`)
      m.counters[accountId] = { usedQuota: 0, requestCount: 0 }
      m.unbilled[accountId] = 0
      const tokenId = tokenOf(accountId)
      yield* store.createToken(
        tokenId,
        accountId,
        spec.token.unlimited ? { unlimited: true } : { remain: spec.token.remain }
      )
      m.tokens[tokenId] = {
        accountId,
        remain: spec.token.unlimited ? 0 : spec.token.remain,
        used: 0,
        unlimited: spec.token.unlimited
      }
      for (const [j, sub] of spec.subs.entries()) {
        const id = `${accountId}-sub${j}`
        yield* store.createSubscription({
          id,
          accountId,
          total: sub.total,
          used: sub.used,
          startAt: sub.startAt,
          endAt: sub.endAt,
          status: sub.status,
          allowWalletOverflow: sub.allowWalletOverflow
        })
        m.subs[id] = {
          id,
          accountId,
          total: sub.total,
          used: sub.used,
          openingUsed: sub.used,
          startAt: sub.startAt,
          endAt: sub.endAt,
          status: sub.status,
          allowWalletOverflow: sub.allowWalletOverflow
        }
      }
    }
    if (scenario.faultRate > 0) store.faults.random(scenario.faultSeed, scenario.faultRate)
    const engine = yield* BillingSession.BillingSession

    // ------------------------------------------------------------ invariant bookkeeping
    const statuses = new Map<string, Status>()
    const firstSettlement = new Map<string, string>()
    /** Hold ids in order of use, most recent last, with the parameters they were first opened with. */
    const known: Array<{ id: string; accountId: string; tokenId: string | undefined; estimate: number }> = []
    let nextHold = 0
    let step = 0

    const remember = (entry: (typeof known)[number]) => {
      const at = known.findIndex((k) => k.id === entry.id)
      if (at >= 0) known.splice(at, 1)
      known.push(entry)
    }
    const pickKnown = (back: number) => known.length === 0 ? undefined : known[known.length - 1 - (back % known.length)]
    const targetId = (target: Target) => {
      if (target.kind === "unknown") return "ghost-hold"
      if (target.kind === "known") return pickKnown(target.back)?.id ?? "ghost-hold"
      const held = known.filter((k) => model.current.holds[k.id] !== undefined)
      return held.length === 0 ? "ghost-hold" : held[held.length - 1 - (target.back % held.length)]!.id
    }

    const resolve = (cmd: SimpleCmd): Op => {
      const m = model.current
      switch (cmd.t) {
        case "open": {
          const pick = cmd.ref.kind === "known" ? pickKnown(cmd.ref.back) : undefined
          if (cmd.ref.kind === "fresh" || !pick) {
            const accountId = accounts[cmd.account % accounts.length]!
            const op: Op = {
              t: "open",
              holdId: `h${nextHold++}`,
              accountId,
              tokenId: cmd.withToken ? tokenOf(accountId) : undefined,
              playground: cmd.playground,
              force: cmd.force,
              ttlMillis: cmd.ttlMillis,
              estimate: cmd.estimate,
              preference: cmd.preference
            }
            if (isQuota(cmd.estimate)) {
              remember({
                id: op.holdId,
                accountId,
                tokenId: cmd.playground ? undefined : op.tokenId,
                estimate: cmd.estimate
              })
            }
            return op
          }
          const base = m.holds[pick.id] ?? pick
          let { accountId, estimate, tokenId } = base
          // Without a token, a playground request that passes one has the same parameters.
          let playground = cmd.playground && tokenId === undefined
          if (playground) tokenId = tokenOf(accountId)
          switch (cmd.ref.vary) {
            case "estimate":
              estimate = isQuota(cmd.estimate) && cmd.estimate !== estimate ? cmd.estimate : estimate + 1
              break
            case "account": {
              accountId = accounts[(accounts.indexOf(accountId) + 1) % accounts.length]!
              tokenId = tokenId === undefined ? undefined : tokenOf(accountId)
              break
            }
            case "token":
              if (playground) playground = false
              else if (tokenId === undefined) tokenId = tokenOf(accountId)
              else if (cmd.playground) playground = true
              else tokenId = undefined
              break
          }
          if (!isQuota(cmd.estimate)) estimate = cmd.estimate
          return {
            t: "open",
            holdId: pick.id,
            accountId,
            tokenId,
            playground,
            force: cmd.force,
            ttlMillis: cmd.ttlMillis,
            estimate,
            preference: cmd.preference
          }
        }
        case "settle":
          return { t: "settle", holdId: targetId(cmd.target), actual: cmd.actual }
        case "refund":
          return { t: "refund", holdId: targetId(cmd.target) }
        case "renew":
          return { t: "renew", holdId: targetId(cmd.target) }
        case "topup":
          return {
            t: "topup",
            accountId: accounts[cmd.account % accounts.length]!,
            amount: cmd.amount,
            key: `topup-${cmd.key}`
          }
      }
    }

    const execute = (op: Op): Effect.Effect<Observed> => {
      const run: Effect.Effect<unknown, { readonly _tag: string }> = op.t === "open"
        ? engine.open({
          holdId: op.holdId,
          accountId: op.accountId,
          ...(op.tokenId !== undefined ? { tokenId: op.tokenId } : {}),
          ...(op.playground ? { playground: true } : {}),
          ...(op.force ? { force: true } : {}),
          ...(op.ttlMillis !== undefined ? { ttlMillis: op.ttlMillis } : {}),
          estimate: op.estimate,
          ...(op.preference !== undefined ? { preference: op.preference } : {})
        }).pipe(Effect.map((session) => observedHoldView(session.hold)))
        : op.t === "settle"
        ? engine.settle(op.holdId, op.actual)
        : op.t === "refund"
        ? engine.refund(op.holdId)
        : op.t === "renew"
        ? engine.renew(op.holdId)
        : op.t === "topup"
        ? store.topUp(op.accountId, op.amount, op.key)
        : engine.reapExpired().pipe(Effect.map((r): ReapView => ({
          examined: r.examined,
          expired: r.expired,
          refunded: r.refunded,
          failures: r.failures.map((f) => f.holdId)
        })))
      return Effect.result(run).pipe(Effect.map((result): Observed => {
        stats.operations++
        if (result._tag === "Success") {
          count(`${op.t}:ok`)
          if (op.t === "settle" && (result.success as { readonly late?: boolean }).late === true) count("settle:late")
          return { ok: true, value: result.success }
        }
        const error = result.failure
        count(`${op.t}:${error._tag}`)
        const fields = Object.fromEntries(
          Object.entries(error as unknown as Record<string, unknown>).filter(([k]) => k !== "_tag" && k !== "cause")
        )
        return { ok: false, tag: error._tag, error: fields }
      }))
    }

    const show = (o: Observed) => (o.ok ? `ok ${canon(o.value)}` : `${o.tag} ${canon(o.error)}`)

    // ------------------------------------------------------------ the invariants

    /** Checked after every command. `settled` says whether the command contained a successful settle. */
    const checkInvariants = (label: string, before: InMemoryStore.Snapshot, settled: boolean) => {
      const m = model.current
      const snap = store.snapshot()
      const ledger = store.entries()

      // (1) the store's audit: ledger sums to every balance, counters equal settled actuals.
      const audit = store.audit()
      if (audit.problems.length > 0) violation("1 audit", `${label}: ${audit.problems.join("; ")}`)

      // (2) a hold resolves exactly once and never changes afterwards; holds never vanish.
      for (const [id, previous] of statuses) {
        const now = snap.holds[id]
        if (now === undefined) violation("2 resolve-once", `${label}: hold ${id} (${previous}) vanished`)
        if (previous !== "pending" && now !== previous) {
          violation("2 resolve-once", `${label}: hold ${id} moved ${previous} -> ${now}`)
        }
      }
      for (const [id, status] of Object.entries(snap.holds)) statuses.set(id, status)

      // The model: every balance, counter and hold status as the spec computes them.
      const diff = stateDiff(m, snap)
      if (diff !== undefined) violation("4 model", `${label}: store differs from the model: ${diff}`)

      // (4) conservation from the ledger, per hold and per account.
      const byHold = new Map<string, { wallet: number; subscription: number; token: number; unbilled: number }>()
      const topups: Record<string, number> = {}
      for (const e of ledger) {
        if (e.sourceId === "wallet" && e.kind === "topup") topups[e.accountId] = (topups[e.accountId] ?? 0) + e.amount
        if (e.holdId === undefined) continue
        const row = byHold.get(e.holdId) ?? { wallet: 0, subscription: 0, token: 0, unbilled: 0 }
        if (e.sourceId === "wallet" || e.sourceId === "subscription" || e.sourceId === "token") {
          if (!["reserve", "release", "settle", "refund", "expire", "unbilled", "late_settle"].includes(e.kind)) {
            violation("4 ledger", `${label}: unexpected ${e.kind} row for hold ${e.holdId}: ${canon(e)}`)
          }
          row[e.sourceId] += e.amount
        }
        row.unbilled += e.unbilled ?? 0
        byHold.set(e.holdId, row)
      }
      const walletCharges: Record<string, number> = {}
      const walletPending: Record<string, number> = {}
      const subCharges: Record<string, number> = {}
      const subPending: Record<string, number> = {}
      const zero = { wallet: 0, subscription: 0, token: 0, unbilled: 0 }
      for (const id of byHold.keys()) {
        if (snap.holds[id] === undefined) {
          violation("4 ledger", `${label}: ledger rows for hold ${id} that does not exist`)
        }
      }
      for (const [id, status] of Object.entries(snap.holds)) {
        const h = m.holds[id]!
        const row = byHold.get(id) ?? zero
        const subKey = h.subRef ?? ""
        if (status === "refunded" || (status === "expired" && h.actual === undefined)) {
          if (row.wallet !== 0 || row.subscription !== 0 || row.token !== 0) {
            violation("4 conservation", `${label}: ${status} hold ${id} has a net ledger effect ${canon(row)}`)
          }
        } else if (status === "pending") {
          if (-(row.wallet + row.subscription) !== h.reserved || -row.token !== (h.tokenReserved ?? 0)) {
            violation(
              "4 conservation",
              `${label}: pending hold ${id} reserved ${h.reserved} but ledger nets ${canon(row)}`
            )
          }
          walletPending[h.accountId] = (walletPending[h.accountId] ?? 0) - row.wallet
          subPending[subKey] = (subPending[subKey] ?? 0) - row.subscription
        } else {
          const actual = h.actual!
          if (-(row.wallet + row.subscription) + row.unbilled !== actual || -row.token !== (h.tokenId ? actual : 0)) {
            violation(
              "4 conservation",
              `${label}: settled hold ${id} with A=${actual}: funding + unbilled / token from the ledger ${canon(row)}`
            )
          }
          walletCharges[h.accountId] = (walletCharges[h.accountId] ?? 0) - row.wallet
          subCharges[subKey] = (subCharges[subKey] ?? 0) - row.subscription
        }
      }
      for (const accountId of accounts) {
        const credited = topups[accountId] ?? 0
        if (credited !== m.credited[accountId]) {
          violation(
            "4 conservation",
            `${label}: ${accountId} top-ups in the ledger ${credited}, made ${m.credited[accountId]}`
          )
        }
        const rhs = snap.wallets[accountId]! + (walletCharges[accountId] ?? 0) + (walletPending[accountId] ?? 0)
        if (credited !== rhs) {
          violation(
            "4 conservation",
            `${label}: ${accountId}: opening + top-ups ${credited} != balance ${
              snap.wallets[accountId]
            } + settled wallet charges ${walletCharges[accountId] ?? 0} + pending wallet reservations ${
              walletPending[accountId] ?? 0
            }`
          )
        }
        // Independent of the ledger and of how overflow was split: what left the account's wallet
        // and subscriptions (plus what was recorded unbilled) is exactly what the model's holds
        // consumed: the settled actuals and the pending reservations.
        let consumed = 0
        for (const h of Object.values(m.holds)) {
          if (h.accountId !== accountId) continue
          // a late charge (§6) consumed A like a settle
          if (h.status === "settled" || (h.status === "expired" && h.actual !== undefined)) consumed += h.actual!
          if (h.status === "pending") consumed += h.reserved
        }
        let outflow = m.credited[accountId]! - snap.wallets[accountId]!
        for (const sub of Object.values(m.subs)) {
          if (sub.accountId === accountId) outflow += snap.subscriptions[sub.id]!.used - sub.openingUsed
        }
        const unbilled = ledger.filter((e) => e.accountId === accountId).reduce((acc, e) => acc + (e.unbilled ?? 0), 0)
        if (unbilled !== m.unbilled[accountId]) {
          violation(
            "4 conservation",
            `${label}: ${accountId}: ledger records ${unbilled} unbilled, the model ${m.unbilled[accountId]}`
          )
        }
        outflow += unbilled
        if (outflow !== consumed) {
          violation("4 conservation", `${label}: ${accountId}: money out ${outflow} != settled + pending ${consumed}`)
        }
      }
      for (const sub of Object.values(m.subs)) {
        const expected = sub.openingUsed + (subCharges[sub.id] ?? 0) + (subPending[sub.id] ?? 0)
        if (snap.subscriptions[sub.id]!.used !== expected) {
          violation(
            "4 conservation",
            `${label}: subscription ${sub.id} used ${
              snap.subscriptions[sub.id]!.used
            } != opening ${sub.openingUsed} + settled ${subCharges[sub.id] ?? 0} + pending ${subPending[sub.id] ?? 0}`
          )
        }
      }

      // (5) only a settlement (or a late charge, §6: the work was delivered) takes a wallet below zero.
      for (const e of ledger) {
        if (
          e.sourceId === "wallet" && e.kind !== "settle" && e.kind !== "late_settle" && e.amount < 0 &&
          e.balanceAfter < 0
        ) {
          violation("5 no overdraft", `${label}: ${e.kind} row took wallet ${e.subjectId} to ${e.balanceAfter}`)
        }
      }
      if (settled && accounts.some((a) => snap.wallets[a]! < 0 && snap.wallets[a]! < before.wallets[a]!)) {
        stats.negativeAfterSettle++
      }
      if (!settled) {
        for (const accountId of accounts) {
          const after = snap.wallets[accountId]!
          if (after < 0 && after < before.wallets[accountId]!) {
            violation(
              "5 no overdraft",
              `${label}: ${accountId} went from ${before.wallets[accountId]} to ${after} without a settle`
            )
          }
        }
      }
    }

    const recordSettlement = (label: string, op: Op, observed: Observed) => {
      if (op.t !== "settle" || !observed.ok) return
      const text = canon(observed.value)
      const first = firstSettlement.get(op.holdId)
      if (first === undefined) firstSettlement.set(op.holdId, text)
      else if (first !== text) {
        violation("2 resolve-once", `${label}: settle of ${op.holdId} returned ${text}, first returned ${first}`)
      }
    }

    const requireFault = (label: string, injectedBefore: number, storeErrors: number) => {
      if (storeErrors > store.faults.injected.length - injectedBefore) {
        violation(
          "model",
          `${label}: ${storeErrors} StoreError(s) with only ${
            store.faults.injected.length - injectedBefore
          } injected fault(s)`
        )
      }
    }

    /** Runs one operation alone and checks it against the model. */
    const sequential = (op: Op) =>
      Effect.gen(function*() {
        const label = `#${step} ${showOp(op)}`
        const before = store.snapshot()
        const ledgerBefore = store.entries().length
        const injectedBefore = store.faults.injected.length
        const candidates = op.t === "reap" ? reapCandidates(model.current) : []
        const observed = yield* execute(op)
        trace.push(`${showOp(op)} -> ${show(observed)}`)
        recordSettlement(label, op, observed)
        if (isStoreError(observed)) {
          requireFault(label, injectedBefore, 1)
        } else {
          const next = structuredClone(model.current)
          const predicted = modelStep(next, op, observed)
          const why = mismatch(op, observed, predicted)
          if (why !== undefined) violation("model", `${label}: ${why}`)
          if (op.t === "reap" && observed.ok) {
            const report = observed.value as ReapView
            if (report.examined !== candidates.length) {
              violation("model", `${label}: examined ${report.examined} holds, ${candidates.length} were past expiry`)
            }
            if (report.failures.some((id) => !candidates.includes(id))) {
              violation("model", `${label}: failures ${canon(report.failures)} outside ${canon(candidates)}`)
            }
            requireFault(label, injectedBefore, report.failures.length > 0 ? 1 : 0)
          }
          model.current = next
        }
        // (3) a failed open changed nothing.
        if (op.t === "open" && !observed.ok) {
          const after = store.snapshot()
          if (!same(after, before) || store.entries().length !== ledgerBefore) {
            violation(
              "3 failed open",
              `${label} failed with ${observed.tag} but changed the store: before ${canon(before)}, after ${
                canon(after)
              }, ledger rows ${ledgerBefore} -> ${store.entries().length}`
            )
          }
        }
        checkInvariants(label, before, op.t === "settle" && observed.ok)
        if (op.t === "open" && observed.ok) {
          const h = model.current.holds[op.holdId]!
          remember({ id: op.holdId, accountId: h.accountId, tokenId: h.tokenId, estimate: h.estimate })
        }
      })

    /** Runs operations concurrently; some sequential order must explain every result and the final state. */
    const concurrent = (ops: ReadonlyArray<Op>) =>
      Effect.gen(function*() {
        stats.parallelBatches++
        const label = `#${step} parallel[${ops.map(showOp).join(" | ")}]`
        const before = store.snapshot()
        const injectedBefore = store.faults.injected.length
        const observed = yield* Effect.all(ops.map(execute), { concurrency: "unbounded" })
        trace.push(`parallel:\n${ops.map((op, i) => `  ${showOp(op)} -> ${show(observed[i]!)}`).join("\n")}`)
        ops.forEach((op, i) => recordSettlement(label, op, observed[i]!))
        requireFault(label, injectedBefore, observed.filter(isStoreError).length)
        const snap = store.snapshot()
        const reasons: Array<string> = []
        let found: Model | undefined
        for (const order of permutations(ops.length)) {
          const candidate = structuredClone(model.current)
          let why: string | undefined
          for (const i of order) {
            const o = observed[i]!
            if (isStoreError(o)) continue
            const w = mismatch(ops[i]!, o, modelStep(candidate, ops[i]!, o))
            if (w !== undefined) {
              why = `${showOp(ops[i]!)}: ${w}`
              break
            }
          }
          why ??= stateDiff(candidate, snap)
          if (why === undefined) {
            found = candidate
            break
          }
          reasons.push(`  order [${order.join(",")}]: ${why}`)
        }
        if (!found) {
          violation("linearizable", `${label}: no sequential order explains the results:\n${reasons.join("\n")}`)
        }
        if (reasons.length > 0) {
          stats.reordered++
        }
        model.current = found!
        checkInvariants(label, before, ops.some((op, i) => op.t === "settle" && observed[i]!.ok))
        ops.forEach((op, i) => {
          if (op.t === "open" && observed[i]!.ok) {
            const h = model.current.holds[op.holdId]!
            remember({ id: op.holdId, accountId: h.accountId, tokenId: h.tokenId, estimate: h.estimate })
          }
        })
      })

    /** Several recovery passes at once: every expired hold is refunded exactly once. */
    const reapRace = (n: number) =>
      Effect.gen(function*() {
        stats.parallelBatches++
        const label = `#${step} ${n} concurrent reapExpired()`
        const before = store.snapshot()
        const injectedBefore = store.faults.injected.length
        const candidates = reapCandidates(model.current)
        const observed = yield* Effect.all(Array.from({ length: n }, () => execute({ t: "reap" })), {
          concurrency: "unbounded"
        })
        trace.push(`${label}: candidates ${canon(candidates)} -> ${observed.map(show).join(" | ")}`)
        const reports = observed.flatMap((o) => (o.ok ? [o.value as ReapView] : []))
        requireFault(label, injectedBefore, observed.filter(isStoreError).length)
        const snap = store.snapshot()
        const expired = candidates.filter((id) => snap.holds[id] === "expired")
        for (const id of candidates) {
          if (snap.holds[id] === "pending" && reports.length === n && !reports.some((r) => r.failures.includes(id))) {
            violation("model", `${label}: hold ${id} is past expiry, no pass reported a failure, still pending`)
          }
        }
        const next = structuredClone(model.current)
        const predicted = modelReap(next, new Set(candidates.filter((id) => !expired.includes(id))))
        const total = {
          expired: reports.reduce((a, r) => a + r.expired, 0),
          refunded: reports.reduce((a, r) => a + r.refunded, 0)
        }
        if (predicted.ok && !same(total, predicted.value)) {
          violation(
            "2 resolve-once",
            `${label}: passes report ${canon(total)} in total, expected ${canon(predicted.value)}`
          )
        }
        model.current = next
        checkInvariants(label, before, false)
      })

    // ------------------------------------------------------------ the commands
    for (const cmd of scenario.commands) {
      stats.commands++
      step++
      switch (cmd.t) {
        case "open":
        case "topup":
        case "renew":
          yield* sequential(resolve(cmd))
          break
        case "settle": {
          const op = resolve(cmd)
          yield* sequential(op)
          if (cmd.again !== undefined && op.t === "settle") yield* sequential({ ...op, actual: cmd.again })
          break
        }
        case "refund": {
          const op = resolve(cmd)
          yield* sequential(op)
          if (cmd.again) yield* sequential(op)
          break
        }
        case "advance": {
          yield* TestClock.adjust(cmd.ms)
          model.current.now += cmd.ms
          trace.push(`advance ${cmd.ms}ms (now ${model.current.now})`)
          if (cmd.reap) yield* sequential({ t: "reap" })
          break
        }
        case "reap":
          yield* sequential({ t: "reap" })
          break
        case "parallel":
          yield* concurrent(cmd.cmds.map(resolve))
          break
        case "reapWith":
          yield* concurrent([{ t: "reap" }, resolve(cmd.other)])
          break
        case "reapRace":
          yield* reapRace(cmd.n)
          break
      }
    }
  })

  return Effect.runPromise(
    program.pipe(
      Effect.provide(layerFor(store, variant, scenario)),
      Effect.provide(TestClock.layer()),
      Effect.ensuring(Effect.sync(() => {
        stats.runs++
        stats.faultsInjected += store.faults.injected.length
      }))
    )
  )
}

// ====================================================================== the tests

describe("billing conservation (model-based, with faults and concurrency)", () => {
  it("every command sequence keeps the billing invariants", async () => {
    const started = Date.now()
    try {
      await fc.assert(
        fc.asyncProperty(scenarioArb, (scenario) => runScenario(scenario, "real")),
        { numRuns: NUM_RUNS, ...replay }
      )
    } finally {
      console.log(
        `conservation property: ${stats.runs} scenario runs (incl. shrinking), ${stats.commands} commands, ${stats.operations} operations, ${stats.parallelBatches} concurrent batches (${stats.reordered} explained only by a reordering), ${stats.faultsInjected} injected faults, ${stats.negativeAfterSettle} settlements took a wallet below zero, in ${
          Date.now() - started
        } ms\n  outcomes: ${[...stats.outcomes].sort().map(([k, v]) => `${k}=${v}`).join(" ")}`
      )
    }
    // ~10 s of CPU; on a 2-core machine shared with other suites it can take minutes of wall
    // time (it timed out at 60 s under `.ci/run` with other work running). A broken invariant
    // fails the property, not this limit.
  }, 300_000)

  const mutants: ReadonlyArray<{ readonly variant: Variant; readonly title: string; readonly caughtBy: RegExp }> = [
    {
      variant: "double-refund-wallet",
      title: "a wallet whose refund credits twice",
      // The double credit is a ledger-consistent top-up, so the store's audit still balances;
      // the model (wallet balance) or the ledger conservation check (top-ups) catches it.
      caughtBy: /\[(4 model|4 conservation|linearizable)\][^]*(wallets\.acct\d|top-ups)/
    },
    {
      variant: "token-release-dropped",
      title: "a token budget that answers a release but keeps what the attempt took",
      caughtBy: /\[(1 audit|4 model|model|linearizable)\]/
    },
    {
      variant: "late-settle-free",
      title: "a wallet that cannot charge a settle arriving after the expiry (issue 9: free service)",
      caughtBy: /\[(model|linearizable)\][^]*"late":true/
    }
  ]

  it.each(mutants)("rejects $title (the property is not vacuous)", async ({ caughtBy, variant }) => {
    // Only scenarios that pass against the real sources count, so the failure found below is
    // the injected bug and not an engine bug the main property reports.
    const property = fc.asyncProperty(scenarioArb, async (scenario) => {
      const realPasses = await runScenario(scenario, "real").then(() => true, () => false)
      fc.pre(realPasses)
      await runScenario(scenario, variant)
    })
    const outcome = await fc.check(property, { numRuns: 200, seed: 20_260_101, endOnFailure: true })
    expect(outcome.failed).toBe(true)
    const head = String(outcome.errorInstance).split("\n--- operations so far")[0]!
    expect(head).toMatch(caughtBy)
    console.log(`${variant} caught after ${outcome.numRuns} runs (${outcome.numSkips} skipped):\n${head}`)
  }, 60_000)
})
