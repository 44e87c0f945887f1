/**
 * The soak probe's verdicts: what the database, the admin API and the clients
 * say after the burst, turned into named checks with figures and examples.
 *
 * Definitions (one request = one `X-Request-Id`, all fresh):
 * - **charged** (a request): what its hold took from the funding sources, net,
 *   from the ledger: `−Σ amount` of the ledger rows with the hold's id and a
 *   source other than `token` (reserve, settle adjustment, refund, expiry, a
 *   late charge — whatever kinds exist). The token budget's net is checked
 *   against it separately.
 * - **delivered**: completion content reached the client — a non-empty
 *   `delta.content` in a stream, a non-empty message in a non-stream answer,
 *   embeddings in an embeddings answer.
 * - **completed**: the client received the whole answer (`finish_reason`
 *   `stop` then `[DONE]`, or the complete JSON body).
 * - **full price**: mr = cr = g = 1, so `prompt_tokens + completion_tokens`
 *   as the upstream reports them (embeddings: `prompt_tokens`).
 * - **prompt part** (`charge-prompt`): `reserved − max_tokens` (the relay's
 *   prompt estimate) or the upstream's `prompt_tokens`.
 *
 * Checks:
 * 1. `conservation` — for every account: initial quota = wallet balance +
 *    charged (from the ledger) = balance + the settlements' funding charges;
 *    `usedQuota` = charged; the token budget moved by the same amount. Figures:
 *    drift in units (lost or created), accounts off.
 * 2. `overcharged` — no request charged more than it may be: a completed
 *    answer more than its full price, an unfinished one more than its
 *    reservation, an invalid request or an upstream failure anything.
 * 3. `audit` — `GET /admin/audit` answers `ok: true`.
 * 4. `pending` — no hold pending once the relay was restarted and its reaper
 *    had time to run.
 * 5. `logRows` — exactly one request-log row per settled hold, none for the
 *    others, its `quota` = the settlement's charge.
 * 6. `freeResponses` — every request that delivered content is charged > 0.
 *    Excluded: requests whose hold was still pending right after the SIGKILL
 *    (read from the database before the restart: the process died with the
 *    hold open, the reaper refunds it, §6 — reported). Requests in flight at
 *    SIGTERM are NOT excluded: the relay must bill them.
 * 7. `emptyErrorBodies` — every response with status ≥ 400 has the JSON error
 *    shape `{"error":{"message","type","code"}}` (except one whose connection
 *    the SIGKILL cut while its body was on the way).
 * 8. `pricedExactly` — every completed answer is charged its full price.
 * 9. `abortsChargePrompt` — a stream aborted by its client after 1–3 chunks
 *    of a slow upstream (which cannot have finished) is charged the prompt
 *    part, not the whole completion (`charge-prompt`).
 * 10. `shutdownBillsDelivered` — a stream the relay ended at SIGTERM (in
 *    flight, content delivered, not completed, its client still there) is
 *    charged at least the prompt part plus one token per content chunk the
 *    client received (capped at the reservation): "bills each for what was
 *    delivered".
 * 11. `freshIdConflicts` — no fresh request id is refused with 409.
 * 12. `sigterm` — the relay exited after the SIGTERM sent mid-burst, within 15 s.
 *
 * @since 0.1.0
 */
import type { Outcome, Plan } from "./SoakClients.js"
import { isErrorShape, MODELS } from "./SoakClients.js"
import type { Profile } from "./SoakUpstream.js"
import { completionTokensOf } from "./SoakUpstream.js"

/** A hold as stored. */
export interface HoldRow {
  readonly id: string
  readonly accountId: string
  readonly tokenId: string | null
  readonly status: string
  readonly reserved: number
  /** The settlement's funding charges (`undefined` when not settled). */
  readonly settledCharge: number | undefined
}

/** A ledger row (only the fields the checks read). */
export interface LedgerRow {
  readonly holdId: string | null
  readonly sourceId: string
  readonly kind: string
  readonly amount: number
}

/** A request-log row. */
export interface LogRow {
  readonly requestId: string
  readonly quota: number
}

/** An account and its token as the admin API shows them, with their initial figures. */
export interface AccountState {
  readonly accountId: string
  readonly tokenId: string
  readonly initialQuota: number
  readonly quota: number
  readonly usedQuota: number
  readonly initialRemain: number
  readonly remainQuota: number
}

/** Everything read after the burst. */
export interface Snapshot {
  readonly holds: ReadonlyArray<HoldRow>
  readonly ledger: ReadonlyArray<LedgerRow>
  readonly logs: ReadonlyArray<LogRow>
  readonly accounts: ReadonlyArray<AccountState>
  readonly audit: { readonly status: number; readonly ok: boolean; readonly problems: ReadonlyArray<unknown> }
  readonly pending: number
  /** Ids of the holds pending right after the SIGKILL (the crash orphaned them). */
  readonly orphaned: ReadonlySet<string>
}

/** One check's verdict. */
export interface Check {
  readonly name: string
  readonly ok: boolean
  /** The figure, e.g. `0 free responses of 131 delivered`. */
  readonly figure: string
  /** Up to 10 examples of what failed. */
  readonly examples: ReadonlyArray<string>
}

/** SIGTERM figures. */
export interface Termination {
  /** Milliseconds from SIGTERM to exit, `undefined` when it had to be killed. */
  readonly exitMs: number | undefined
  readonly boundMs: number
}

const limit = <A>(items: ReadonlyArray<A>, n = 10) => items.slice(0, n)

/** The full price of a completed answer of a plan. */
export const fullPrice = (plan: Plan, profile: Profile): number => {
  if (plan.model === MODELS.embed) return profile.promptTokens
  const mode = plan.model === MODELS.big ? "big" : plan.model === MODELS.drip ? "drip" : "ok"
  return profile.promptTokens + completionTokensOf(profile, mode)
}

/** One request as the checks saw it (for `--verbose` and failure analysis). */
export interface Row {
  readonly requestId: string
  readonly variant: string
  readonly phase: number
  readonly status: number | undefined
  readonly delivered: boolean
  readonly completed: boolean
  readonly chunks: number
  readonly aborted: boolean
  /** `orphaned`: its hold was pending right after the SIGKILL; `kill`/`term`: in flight (client side) then. */
  readonly cut: "orphaned" | "kill" | "term" | undefined
  readonly failure: string | undefined
  readonly hold: string | undefined
  readonly reserved: number | undefined
  readonly charged: number
  readonly logRows: number
}

/** Runs every check. */
export const evaluate = (input: {
  readonly plans: ReadonlyArray<Plan>
  readonly outcomes: ReadonlyArray<Outcome>
  readonly snapshot: Snapshot
  readonly profile: Profile
  readonly sigterm: Termination
}): { readonly checks: ReadonlyArray<Check>; readonly rows: ReadonlyArray<Row> } => {
  const { outcomes, plans, profile, snapshot } = input
  const checks: Array<Check> = []
  const push = (name: string, failures: ReadonlyArray<string>, figure: string) =>
    checks.push({ name, ok: failures.length === 0, figure, examples: limit(failures) })

  // --- per hold: charged (ledger), token net, log rows ----------------------------------------
  const fundingNet = new Map<string, number>()
  const tokenNet = new Map<string, number>()
  for (const row of snapshot.ledger) {
    if (row.holdId === null) continue
    const into = row.sourceId === "token" ? tokenNet : fundingNet
    into.set(row.holdId, (into.get(row.holdId) ?? 0) - row.amount)
  }
  const logsByRequest = new Map<string, Array<LogRow>>()
  for (const row of snapshot.logs) logsByRequest.set(row.requestId, [...(logsByRequest.get(row.requestId) ?? []), row])

  // A hold belongs to the request whose id it is, or contains (an account-scoped id).
  const holdByRequest = new Map<string, HoldRow>()
  const requestIds = plans.map((p) => p.requestId)
  const idSet = new Set(requestIds)
  const strays: Array<string> = []
  for (const hold of snapshot.holds) {
    if (idSet.has(hold.id)) holdByRequest.set(hold.id, hold)
    else {
      const rid = requestIds.find((r) => hold.id.includes(r))
      if (rid !== undefined) holdByRequest.set(rid, hold)
      else strays.push(hold.id)
    }
  }
  const charged = (plan: Plan): number => {
    const hold = holdByRequest.get(plan.requestId)
    return hold === undefined ? 0 : fundingNet.get(hold.id) ?? 0
  }
  /** The crash left this request's hold open. */
  const orphaned = (plan: Plan): boolean => {
    const hold = holdByRequest.get(plan.requestId)
    return hold !== undefined && snapshot.orphaned.has(hold.id)
  }

  // 1. conservation ------------------------------------------------------------------------------
  {
    const failures: Array<string> = []
    let drift = 0
    let tokenDrift = 0
    for (const account of snapshot.accounts) {
      const holds = snapshot.holds.filter((h) => h.accountId === account.accountId)
      const ledgerCharged = holds.reduce((sum, h) => sum + (fundingNet.get(h.id) ?? 0), 0)
      const tokenCharged = holds.reduce((sum, h) => sum + (tokenNet.get(h.id) ?? 0), 0)
      const settled = holds.reduce((sum, h) => sum + (h.settledCharge ?? 0), 0)
      const dropped = account.initialQuota - account.quota
      drift += dropped - settled
      tokenDrift += account.initialRemain - account.remainQuota - settled
      const off: Array<string> = []
      if (dropped !== ledgerCharged) off.push(`balance fell ${dropped}, ledger charges ${ledgerCharged}`)
      if (dropped !== settled) off.push(`balance fell ${dropped}, settled charges ${settled}`)
      if (account.usedQuota !== settled) off.push(`usedQuota ${account.usedQuota}, settled charges ${settled}`)
      if (account.initialRemain - account.remainQuota !== tokenCharged || tokenCharged !== settled) {
        off.push(
          `token fell ${account.initialRemain - account.remainQuota}, token ledger ${tokenCharged}, settled ${settled}`
        )
      }
      if (off.length > 0) failures.push(`account ${account.accountId}: ${off.join("; ")}`)
    }
    push(
      "conservation",
      failures,
      `${drift} units drift on the wallets (balance fallen − settled charges; + lost, − given away), ${tokenDrift} on the tokens, ${failures.length} of ${snapshot.accounts.length} accounts off`
    )
  }

  // 2. overcharged ---------------------------------------------------------------------------------
  {
    const failures: Array<string> = []
    for (const [i, plan] of plans.entries()) {
      const outcome = outcomes[i]!
      const c = charged(plan)
      const hold = holdByRequest.get(plan.requestId)
      if (plan.kind === "invalid" || plan.kind === "fail") {
        if (c !== 0) failures.push(`${plan.requestId} (${plan.variant}): charged ${c}, expected 0`)
      } else if (outcome.completed) {
        if (c > fullPrice(plan, profile)) {
          failures.push(`${plan.requestId} (${plan.variant}): charged ${c} > full price ${fullPrice(plan, profile)}`)
        }
      } else if (hold !== undefined && c > hold.reserved) {
        // A non-stream answer is written but for its last byte, then settled, then the last byte
        // sent (issue 9): a SIGKILL between that settle and the last byte cuts an answer that was
        // billed whole, which may cost up to its full price (seen under load: an embedding, 12 > 5).
        const cutAfterSettle = !outcome.stream && outcome.status === 200 && outcome.phase === 1 &&
          c <= fullPrice(plan, profile)
        if (!cutAfterSettle) {
          failures.push(`${plan.requestId} (${plan.variant}): unfinished, charged ${c} > reserved ${hold.reserved}`)
        }
      }
    }
    push("overcharged", failures, `${failures.length} requests charged more than they may be`)
  }

  // 3. audit ---------------------------------------------------------------------------------------
  push(
    "audit",
    snapshot.audit.status === 200 && snapshot.audit.ok
      ? []
      : [`status ${snapshot.audit.status}, problems ${JSON.stringify(limit(snapshot.audit.problems))}`],
    `GET /admin/audit: ${snapshot.audit.status}, ok ${snapshot.audit.ok}, ${snapshot.audit.problems.length} problems`
  )

  // 4. pending -------------------------------------------------------------------------------------
  push(
    "pending",
    snapshot.pending === 0
      ? []
      : snapshot.holds.filter((h) => h.status === "pending").map((h) => `hold ${h.id} pending`),
    `${snapshot.pending} holds pending after the reaper`
  )

  // 5. log rows ------------------------------------------------------------------------------------
  {
    const failures: Array<string> = []
    let settled = 0
    for (const [rid, hold] of holdByRequest) {
      const rows = logsByRequest.get(rid) ?? (hold.id !== rid ? logsByRequest.get(hold.id) : undefined) ?? []
      if (hold.status === "settled" || hold.settledCharge !== undefined) {
        settled++
        if (rows.length !== 1) failures.push(`${rid}: settled, ${rows.length} log rows`)
        else if (rows[0]!.quota !== hold.settledCharge) {
          failures.push(`${rid}: log quota ${rows[0]!.quota}, settled charge ${hold.settledCharge}`)
        }
      } else if (rows.length > 0) failures.push(`${rid}: ${hold.status}, ${rows.length} log rows`)
    }
    const known = new Set([...holdByRequest.keys(), ...snapshot.holds.map((h) => h.id)])
    for (const row of snapshot.logs) {
      if (!known.has(row.requestId)) failures.push(`log row ${row.requestId} has no hold`)
    }
    push(
      "logRows",
      failures,
      `${failures.length} problems over ${settled} settled holds and ${snapshot.logs.length} log rows`
    )
  }

  // 6. free responses ------------------------------------------------------------------------------
  {
    const failures: Array<string> = []
    let delivered = 0
    let excluded = 0
    let excludedFree = 0
    for (const [i, plan] of plans.entries()) {
      const outcome = outcomes[i]!
      if (!outcome.delivered) continue
      const c = charged(plan)
      if (orphaned(plan)) {
        excluded++
        if (c <= 0) excludedFree++
        continue
      }
      delivered++
      if (c <= 0) {
        const hold = holdByRequest.get(plan.requestId)
        failures.push(
          `${plan.requestId} (${plan.variant}${
            outcome.inFlightAtTerm ? ", in flight at SIGTERM" : ""
          }): ${outcome.contentChunks} chunks${outcome.completed ? ", completed" : ""}, hold ${
            hold?.status ?? "missing"
          }, charged ${c}`
        )
      }
    }
    push(
      "freeResponses",
      failures,
      `${failures.length} free responses of ${delivered} that delivered content (excluded: ${excluded} whose hold the SIGKILL left pending, ${excludedFree} of them refunded)`
    )
  }

  // 7. empty error bodies --------------------------------------------------------------------------
  {
    const failures: Array<string> = []
    let errors = 0
    for (const [i, plan] of plans.entries()) {
      const outcome = outcomes[i]!
      if ((outcome.status ?? 0) < 400) continue
      // a body cut by the SIGKILL is not the relay's answer
      if (outcome.inFlightAtKill && outcome.failure !== undefined) continue
      errors++
      if (!isErrorShape(outcome.errorBody)) {
        failures.push(
          `${plan.requestId} (${plan.variant}): ${outcome.status} ${
            JSON.stringify((outcome.errorBody ?? "").slice(0, 120))
          }`
        )
      }
    }
    push("emptyErrorBodies", failures, `${failures.length} of ${errors} error responses without the JSON error shape`)
  }

  // 8. priced exactly ------------------------------------------------------------------------------
  {
    const failures: Array<string> = []
    let completed = 0
    for (const [i, plan] of plans.entries()) {
      const outcome = outcomes[i]!
      if (!outcome.completed) continue
      completed++
      const c = charged(plan)
      if (c !== fullPrice(plan, profile)) {
        failures.push(
          `${plan.requestId} (${plan.variant}): charged ${c}, full price ${fullPrice(plan, profile)}, hold ${
            holdByRequest.get(plan.requestId)?.status ?? "missing"
          }`
        )
      }
    }
    push("pricedExactly", failures, `${failures.length} of ${completed} completed answers not charged their full price`)
  }

  // 9. aborts charge the prompt part ---------------------------------------------------------------
  {
    const failures: Array<string> = []
    let aborted = 0
    for (const [i, plan] of plans.entries()) {
      const outcome = outcomes[i]!
      if (plan.kind !== "abort-stream" || !outcome.clientAborted || outcome.clientTimedOut) continue
      if (orphaned(plan) || outcome.inFlightAtTerm || outcome.completed) continue
      const hold = holdByRequest.get(plan.requestId)
      if (hold === undefined) continue
      aborted++
      const c = charged(plan)
      const prompt = [hold.reserved - plan.maxTokens, profile.promptTokens]
      if (!prompt.includes(c)) {
        failures.push(
          `${plan.requestId}: aborted after ${outcome.contentChunks} chunks, charged ${c}, prompt part ${
            prompt.join(" or ")
          }, full ${fullPrice(plan, profile)}`
        )
      }
    }
    push(
      "abortsChargePrompt",
      failures,
      `${failures.length} of ${aborted} streams aborted mid-way not charged the prompt part`
    )
  }

  // 10. streams ended by the shutdown are billed for what they delivered --------------------------
  {
    const failures: Array<string> = []
    let ended = 0
    if (input.sigterm.exitMs !== undefined) {
      for (const [i, plan] of plans.entries()) {
        const outcome = outcomes[i]!
        if (!plan.stream || !outcome.inFlightAtTerm || orphaned(plan) || outcome.clientAborted) continue
        if (outcome.completed || outcome.contentChunks === 0) continue
        const hold = holdByRequest.get(plan.requestId)
        if (hold === undefined) continue
        ended++
        // every content chunk is at least one completion token
        const floor = Math.min(hold.reserved - plan.maxTokens, profile.promptTokens) + outcome.contentChunks
        const c = charged(plan)
        if (c < Math.min(floor, hold.reserved)) {
          failures.push(
            `${plan.requestId} (${plan.variant}): ended by the shutdown after ${outcome.contentChunks} chunks, charged ${c} < ${floor} (prompt + 1 per chunk)`
          )
        }
      }
    }
    push(
      "shutdownBillsDelivered",
      failures,
      `${failures.length} of ${ended} streams ended by the SIGTERM billed less than what they delivered`
    )
  }

  // 11. 409 on fresh ids ---------------------------------------------------------------------------
  {
    const failures = plans.flatMap((plan, i) =>
      outcomes[i]!.status === 409
        ? [`${plan.requestId} (${plan.variant}): 409 ${(outcomes[i]!.errorBody ?? "").slice(0, 120)}`]
        : []
    )
    push("freshIdConflicts", failures, `${failures.length} fresh request ids refused with 409`)
  }

  // 12. SIGTERM ------------------------------------------------------------------------------------
  {
    const { boundMs, exitMs } = input.sigterm
    push(
      "sigterm",
      exitMs !== undefined && exitMs <= 15_000
        ? []
        : [
          exitMs === undefined
            ? `still running ${boundMs} ms after SIGTERM (killed)`
            : `exited after ${Math.round(exitMs)} ms`
        ],
      exitMs === undefined
        ? `did not exit within ${boundMs} ms of SIGTERM`
        : `exited ${Math.round(exitMs)} ms after SIGTERM`
    )
  }

  if (strays.length > 0) {
    checks.push({
      name: "strayHolds",
      ok: true,
      figure: `${strays.length} holds match no request (informative)`,
      examples: limit(strays)
    })
  }
  const rows = plans.map((plan, i): Row => {
    const outcome = outcomes[i]!
    const hold = holdByRequest.get(plan.requestId)
    return {
      requestId: plan.requestId,
      variant: plan.variant,
      phase: outcome.phase,
      status: outcome.status,
      delivered: outcome.delivered,
      completed: outcome.completed,
      chunks: outcome.contentChunks,
      aborted: outcome.clientAborted,
      cut: orphaned(plan) ? "orphaned" : outcome.inFlightAtKill ? "kill" : outcome.inFlightAtTerm ? "term" : undefined,
      failure: outcome.failure,
      hold: hold?.status,
      reserved: hold?.reserved,
      charged: charged(plan),
      logRows: (logsByRequest.get(plan.requestId) ?? []).length
    }
  })
  return { checks, rows }
}
