/**
 * The engine: open / settle / refund / reap / charge / correct over a journal
 * and a registry. This module only assembles the phases, each a module with
 * its dependencies passed explicitly: `open.ts` (with `openAttempts.ts` and
 * `openOrder.ts`), `settle.ts`, `resolve.ts` (refund, expiry, recovery),
 * `charge.ts` (post-consume), `correct.ts`, `late.ts`, `lease.ts`, `handle.ts`
 * (the session handle), and the intents of external sources (`intents.ts`,
 * `claims.ts`).
 */
import { Effect } from "effect"
import type { AccountCounters } from "../AccountCounters.js"
import { HoldNotFound, StoreError, TokenBudgetExceeded, UnknownSource } from "../BillingError.js"
import type { BillingEvent, Publisher } from "../BillingEvents.js"
import type { FundingRegistry } from "../FundingRegistry.js"
import type { ExternalSource } from "../FundingSource.js"
import type { HoldPart } from "../Hold.js"
import type { HoldJournal } from "../HoldJournal.js"
import type { Ledger } from "../Ledger.js"
import type { Policy as LowBalancePolicy } from "../LowBalance.js"
import type { Recorder } from "../SettlementRecorder.js"
import type { SqlStore } from "../SqlStore.js"
import { bindRegistry } from "./boundRegistry.js"
import { makeCharge } from "./charge.js"
import { makeClaims } from "./claims.js"
import { makeCorrectFinishing } from "./correct.js"
import type { EngineConfig } from "./engineConfig.js"
import { makeHandleOf } from "./handle.js"
import { makeIntents } from "./intents.js"
import { makeRenew } from "./lease.js"
import { collectingJournal } from "./ledgerRows.js"
import { makeOpen } from "./open.js"
import { makeGiveBack, makeResolve } from "./resolve.js"
import { makeSettle, makeSettleTx } from "./settle.js"

export type { EngineConfig } from "./engineConfig.js"
export type { OpenInput } from "./openOrder.js"
export type { ReapError, ReapFailure, ReapReport } from "./resolve.js"

/** What the engine is built from. */
interface Deps {
  readonly lowBalance: LowBalancePolicy
  readonly journal: HoldJournal["Service"]
  /** Where the rows of `Source` moves go (one append per transaction). */
  readonly ledger?: Ledger["Service"] | undefined
  /** The store's executor, handed to `Source`s inside the engine's transactions. */
  readonly sql?: SqlStore["Service"] | undefined
  /** Writes the host's record of a settlement inside the settle's transaction. */
  readonly recorder?: Recorder | undefined
  readonly registry: FundingRegistry["Service"]
  readonly counters: AccountCounters["Service"]
  readonly events: Publisher
  readonly config: EngineConfig
}

/** The engine: the phases, assembled over one journal and one registry. */
export const makeEngine = (deps: Deps) => {
  const { config, counters, events, lowBalance } = deps
  const recorder = deps.recorder
  const journal = collectingJournal(deps.journal, deps.ledger)
  const registry = bindRegistry(deps.registry, {
    storeId: deps.journal.storeId,
    sql: deps.sql,
    ledger: deps.ledger,
    roles: config.roles,
    preferences: config.preferences,
    tokenBudgetId: config.tokenBudgetId
  })

  /** Whether a source writes through the journal's store (its writes commit or roll back with the hold). */
  const shared = (source: ExternalSource) => source.storeId !== undefined && source.storeId === journal.storeId
  const targetOf = (part: HoldPart) =>
    part.kind === "funding" ? registry.funding(part.sourceId) : registry.budget(part.sourceId)
  const publish = (event: BillingEvent) =>
    events.publish(event).pipe(
      Effect.catchCause((cause) => Effect.logWarning("relay-billing: event publisher failed", cause))
    )

  const intents = makeIntents({ journal, registry, tokenBudgetId: config.tokenBudgetId, shared })
  const claims = makeClaims({ journal, registry, intents, tokenBudgetId: config.tokenBudgetId, shared })
  const settleTx = makeSettleTx({ journal, counters, recorder, lowBalance, claims, targetOf, shared, publish })
  const giveBack = makeGiveBack({ journal, registry, intents, claims, settleTx, targetOf, publish })
  const { settle, settleFromHandle } = makeSettle({
    journal,
    counters,
    recorder,
    registry,
    claims,
    settleTx,
    finishResolution: giveBack.finishResolution
  })
  const { reapExpired, refund } = makeResolve({ journal, intents, claims, config, giveBack, publish })

  /** Renews the lease of a pending hold by `ttlMillis` (decoded by the caller). */
  const renew = makeRenew({
    journal,
    registryHasExternal: claims.registryHasExternal.pipe(
      Effect.catchTag(
        "UnknownSource",
        (error) => Effect.fail(new StoreError({ operation: "renew", detail: error.message, cause: error }))
      )
    )
  })

  const handleOf = makeHandleOf({ journal, settleFromHandle, refund, renew })

  const { open, openOrder } = makeOpen({ journal, registry, intents, config, shared, handleOf })
  const { charge } = makeCharge({ journal, intents, openOrder, preferences: config.preferences, settle })

  const get = (holdId: string) =>
    journal.get(holdId).pipe(
      Effect.flatMap((hold) => hold ? Effect.succeed(hold) : Effect.fail(new HoldNotFound({ holdId })))
    )

  const correct = makeCorrectFinishing({
    journal,
    registry,
    counters,
    shared,
    finishResolution: giveBack.finishResolution
  })

  return { open, settle, refund, reapExpired, get, charge, correct, renew }
}

/** The engine, as `makeEngine` builds it. */
export type Engine = ReturnType<typeof makeEngine>
export { TokenBudgetExceeded, UnknownSource }
