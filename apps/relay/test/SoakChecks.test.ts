/**
 * The soak probe's checks on hand-made data: each one passes on a consistent
 * run and catches the fault it is named for (so a green soak test means the
 * fault was absent, not that the check could not see it).
 */
import { describe, expect, it } from "vitest"
import type { HoldRow, LedgerRow, LogRow, Snapshot, Termination } from "../soak/SoakChecks.js"
import { evaluate, fullPrice } from "../soak/SoakChecks.js"
import type { Outcome, Plan } from "../soak/SoakClients.js"
import { MODELS, newOutcome } from "../soak/SoakClients.js"
import { defaultProfile } from "../soak/SoakUpstream.js"

const profile = defaultProfile
const ACCOUNT = "acc_1"
const TOKEN = "tok_1"
const INITIAL = 1_000

const planOf = (index: number, kind: Plan["kind"], overrides: Partial<Plan> = {}): Plan => ({
  index,
  kind,
  variant: kind,
  requestId: `soak-t-${String(index).padStart(5, "0")}-r`,
  accountId: ACCOUNT,
  key: "sk-x",
  model: MODELS.ok,
  stream: kind !== "json",
  maxTokens: 64,
  includeUsage: false,
  abortAt: 0,
  ...overrides
})

/** A request settled at `charge` (reserved 80): the hold, its ledger rows and its log row. */
const settled = (plan: Plan, charge: number) => ({
  hold: {
    id: plan.requestId,
    accountId: ACCOUNT,
    tokenId: TOKEN,
    status: "settled",
    reserved: 80,
    settledCharge: charge
  } as HoldRow,
  ledger: [
    { holdId: plan.requestId, sourceId: "wallet", kind: "reserve", amount: -80 },
    { holdId: plan.requestId, sourceId: "wallet", kind: "settle", amount: 80 - charge },
    { holdId: plan.requestId, sourceId: "token", kind: "reserve", amount: -80 },
    { holdId: plan.requestId, sourceId: "token", kind: "settle", amount: 80 - charge }
  ] as Array<LedgerRow>,
  log: { requestId: plan.requestId, quota: charge } as LogRow
})

/** A request whose hold was expired by the reaper (nothing charged). */
const expired = (plan: Plan) => ({
  hold: {
    id: plan.requestId,
    accountId: ACCOUNT,
    tokenId: TOKEN,
    status: "expired",
    reserved: 80,
    settledCharge: undefined
  } as HoldRow,
  ledger: [
    { holdId: plan.requestId, sourceId: "wallet", kind: "reserve", amount: -80 },
    { holdId: plan.requestId, sourceId: "wallet", kind: "expire", amount: 80 },
    { holdId: plan.requestId, sourceId: "token", kind: "reserve", amount: -80 },
    { holdId: plan.requestId, sourceId: "token", kind: "expire", amount: 80 }
  ] as Array<LedgerRow>
})

const completedOutcome = (plan: Plan): Outcome => ({
  ...newOutcome(plan),
  status: 200,
  delivered: true,
  completed: true,
  contentChunks: plan.stream ? profile.okChunks.length : 0
})

const FULL = fullPrice(planOf(0, "json"), profile)

/** A consistent run: a completed json answer, a completed stream, an invalid request. */
const fixture = () => {
  const plans = [planOf(0, "json"), planOf(1, "stream"), planOf(2, "invalid", { variant: "bad-json" })]
  const outcomes = [
    completedOutcome(plans[0]!),
    completedOutcome(plans[1]!),
    {
      ...newOutcome(plans[2]!),
      status: 400,
      errorBody: JSON.stringify({ error: { message: "body: bad", type: "invalid_request", code: "invalid_request" } })
    }
  ]
  const a = settled(plans[0]!, FULL)
  const b = settled(plans[1]!, FULL)
  const snapshot: Snapshot = {
    holds: [a.hold, b.hold],
    ledger: [...a.ledger, ...b.ledger],
    logs: [a.log, b.log],
    accounts: [{
      accountId: ACCOUNT,
      tokenId: TOKEN,
      initialQuota: INITIAL,
      quota: INITIAL - 2 * FULL,
      usedQuota: 2 * FULL,
      initialRemain: INITIAL,
      remainQuota: INITIAL - 2 * FULL
    }],
    audit: { status: 200, ok: true, problems: [] },
    pending: 0,
    orphaned: new Set()
  }
  return { plans, outcomes, snapshot }
}

const exited: Termination = { exitMs: 10_500, boundMs: 20_000 }
const failing = (result: ReturnType<typeof evaluate>) => result.checks.filter((c) => !c.ok).map((c) => c.name)

describe("soak checks", () => {
  it("pass on a consistent run", () => {
    const { outcomes, plans, snapshot } = fixture()
    expect(failing(evaluate({ plans, outcomes, snapshot, profile, sigterm: exited }))).toEqual([])
  })

  it("catch a unit lost: the balance fell by more than the settled charges", () => {
    const { outcomes, plans, snapshot } = fixture()
    const accounts = [{ ...snapshot.accounts[0]!, quota: snapshot.accounts[0]!.quota - 1 }]
    const result = evaluate({ plans, outcomes, snapshot: { ...snapshot, accounts }, profile, sigterm: exited })
    expect(failing(result)).toEqual(["conservation"])
    expect(result.checks.find((c) => c.name === "conservation")!.figure).toMatch(/^1 units drift/)
  })

  it("catch a free response: content delivered, hold expired, nothing charged", () => {
    const { outcomes, plans, snapshot } = fixture()
    const slow = planOf(3, "slow-stream", { model: MODELS.slow })
    const e = expired(slow)
    const result = evaluate({
      plans: [...plans, slow],
      outcomes: [...outcomes, completedOutcome(slow)],
      snapshot: { ...snapshot, holds: [...snapshot.holds, e.hold], ledger: [...snapshot.ledger, ...e.ledger] },
      profile,
      sigterm: exited
    })
    expect(failing(result)).toEqual(["freeResponses", "pricedExactly"])
  })

  it("exclude a request whose hold the SIGKILL left pending, and only that", () => {
    const { outcomes, plans, snapshot } = fixture()
    const cut = planOf(3, "stream")
    const e = expired(cut)
    const partial = { ...newOutcome(cut), status: 200, delivered: true, contentChunks: 2, failure: "ECONNRESET" }
    const base = {
      plans: [...plans, cut],
      outcomes: [...outcomes, partial],
      profile,
      sigterm: exited
    }
    const withCut = { ...snapshot, holds: [...snapshot.holds, e.hold], ledger: [...snapshot.ledger, ...e.ledger] }
    expect(failing(evaluate({ ...base, snapshot: { ...withCut, orphaned: new Set([cut.requestId]) } }))).toEqual([])
    expect(failing(evaluate({ ...base, snapshot: withCut }))).toEqual(["freeResponses"])
  })

  it("catch a settled hold without its log row, and a row for a hold that was not settled", () => {
    const { outcomes, plans, snapshot } = fixture()
    const missing = evaluate({
      plans,
      outcomes,
      snapshot: { ...snapshot, logs: snapshot.logs.slice(1) },
      profile,
      sigterm: exited
    })
    expect(failing(missing)).toEqual(["logRows"])
    const slow = planOf(3, "abort-early")
    const e = expired(slow)
    const extra = evaluate({
      plans: [...plans, slow],
      outcomes: [...outcomes, { ...newOutcome(slow), clientAborted: true }],
      snapshot: {
        ...snapshot,
        holds: [...snapshot.holds, e.hold],
        ledger: [...snapshot.ledger, ...e.ledger],
        logs: [...snapshot.logs, { requestId: slow.requestId, quota: 0 }]
      },
      profile,
      sigterm: exited
    })
    expect(failing(extra)).toEqual(["logRows"])
  })

  it("catch an error response without the JSON error shape, and a 409 on a fresh id", () => {
    const { outcomes, plans, snapshot } = fixture()
    const empty = [outcomes[0]!, outcomes[1]!, { ...outcomes[2]!, status: 404, errorBody: "" }]
    expect(failing(evaluate({ plans, outcomes: empty, snapshot, profile, sigterm: exited }))).toEqual([
      "emptyErrorBodies"
    ])
    const conflict = [outcomes[0]!, outcomes[1]!, {
      ...outcomes[2]!,
      status: 409,
      errorBody: JSON.stringify({ error: { message: "used", type: "invalid_request", code: "request_id_conflict" } })
    }]
    expect(failing(evaluate({ plans, outcomes: conflict, snapshot, profile, sigterm: exited }))).toEqual([
      "freshIdConflicts"
    ])
  })

  it("catch an aborted stream billed in full instead of the prompt part", () => {
    const { outcomes, plans, snapshot } = fixture()
    const abort = planOf(3, "abort-stream", { model: MODELS.slow })
    const s = settled(abort, FULL)
    const run = (charge: number) => {
      const r = settled(abort, charge)
      return evaluate({
        plans: [...plans, abort],
        outcomes: [...outcomes, {
          ...newOutcome(abort),
          status: 200,
          delivered: true,
          contentChunks: 2,
          clientAborted: true
        }],
        snapshot: {
          ...snapshot,
          holds: [...snapshot.holds, r.hold],
          ledger: [...snapshot.ledger, ...r.ledger],
          logs: [...snapshot.logs, r.log],
          accounts: [{
            ...snapshot.accounts[0]!,
            quota: snapshot.accounts[0]!.quota - charge,
            usedQuota: snapshot.accounts[0]!.usedQuota + charge,
            remainQuota: snapshot.accounts[0]!.remainQuota - charge
          }]
        },
        profile,
        sigterm: exited
      })
    }
    expect(s.hold.reserved - abort.maxTokens).toBe(16)
    expect(failing(run(16))).toEqual([]) // reserved − max_tokens: the prompt estimate
    expect(failing(run(FULL))).toEqual(["abortsChargePrompt"])
  })

  it("catch a stream ended by the shutdown and billed only its prompt", () => {
    const { outcomes, plans, snapshot } = fixture()
    const long = planOf(3, "long-stream", { model: MODELS.drip, maxTokens: 400 })
    const run = (charge: number) => {
      const r = settled(long, charge)
      return evaluate({
        plans: [...plans, long],
        outcomes: [...outcomes, {
          ...newOutcome(long),
          status: 200,
          delivered: true,
          contentChunks: 40,
          inFlightAtTerm: true
        }],
        snapshot: {
          ...snapshot,
          holds: [...snapshot.holds, { ...r.hold, reserved: 416 }],
          ledger: [...snapshot.ledger, ...r.ledger],
          logs: [...snapshot.logs, r.log],
          accounts: [{
            ...snapshot.accounts[0]!,
            quota: snapshot.accounts[0]!.quota - charge,
            usedQuota: snapshot.accounts[0]!.usedQuota + charge,
            remainQuota: snapshot.accounts[0]!.remainQuota - charge
          }]
        },
        profile,
        sigterm: exited
      })
    }
    expect(failing(run(16))).toEqual(["shutdownBillsDelivered"])
    expect(failing(run(12 + 40))).toEqual([])
  })

  it("catch a relay that did not exit after SIGTERM, or exited after more than 15 s", () => {
    const { outcomes, plans, snapshot } = fixture()
    expect(failing(evaluate({ plans, outcomes, snapshot, profile, sigterm: { exitMs: undefined, boundMs: 20_000 } })))
      .toEqual(["sigterm"])
    expect(failing(evaluate({ plans, outcomes, snapshot, profile, sigterm: { exitMs: 15_500, boundMs: 20_000 } })))
      .toEqual(["sigterm"])
  })

  it("catch an invalid request that was charged", () => {
    const { outcomes, plans, snapshot } = fixture()
    const charged = { ...settled(plans[2]!, 5), hold: { ...settled(plans[2]!, 5).hold } }
    const result = evaluate({
      plans,
      outcomes,
      snapshot: {
        ...snapshot,
        holds: [...snapshot.holds, charged.hold],
        ledger: [...snapshot.ledger, ...charged.ledger],
        logs: [...snapshot.logs, charged.log],
        accounts: [{
          ...snapshot.accounts[0]!,
          quota: snapshot.accounts[0]!.quota - 5,
          usedQuota: snapshot.accounts[0]!.usedQuota + 5,
          remainQuota: snapshot.accounts[0]!.remainQuota - 5
        }]
      },
      profile,
      sigterm: exited
    })
    expect(failing(result)).toEqual(["overcharged"])
  })
})
