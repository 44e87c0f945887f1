/**
 * The adapter that lets the engine's phases drive a `Source` (a balance mover
 * in the hold's store) through the two-phase shape they already use for
 * external sources: reserve → `take`, settle → `move` by `−(actual − reserved)`,
 * refund / expire / release → `move` by `+reserved`, correct → `move` by
 * `+amount`, late settle → `move` by `−amount`.
 *
 * It keeps no hold ids: each call happens once per hold because the engine
 * calls it only after the hold's own conditional transition, in the same
 * transaction. It writes the ledger rows (through `ledgerRows`, one
 * `Ledger.append` per transaction) from what the source answered, and sends
 * what a capped charge could not carry along the chain (`overflow.ts`).
 */
import { Clock, Effect } from "effect"
import { ContractViolation, StoreError } from "../BillingError.js"
import type { QuotaOutOfRange } from "../BillingError.js"
import type {
  CorrectRequest,
  ExternalSource,
  LateSettleRequest,
  PartResult,
  RefundRequest,
  Remaining,
  ReserveRequest,
  SettleRequest
} from "../FundingSource.js"
import type { HoldPart } from "../Hold.js"
import type { Ledger, NewLedgerEntry } from "../Ledger.js"
import type { Preference } from "../Preference.js"
import type { Moved, MoveKind, Source, TakeMode } from "../Source.js"
import type { SqlStore } from "../SqlStore.js"
import { pendingRows, recordRows } from "./ledgerRows.js"

/** What the adapter needs from the engine. */
export interface AdapterDeps {
  /** The journal's store id: an adapted source always commits with the hold. */
  readonly storeId: string
  readonly sql: SqlStore["Service"]
  readonly ledger: Ledger["Service"] | undefined
  /** The funding `Source`s after `sourceId` in the overflow chain of a hold with `preference`. */
  readonly overflowChain: (sourceId: string, preference: Preference | undefined) => Effect.Effect<ReadonlyArray<Source>>
  /** The registered funding `Source` of that id (a correction gives an overflow back through it). */
  readonly fundingSource: (sourceId: string) => Effect.Effect<Source | undefined>
}

/** A settle or late charge request, with the hold's preference (for the overflow chain). */
export interface ChainRequest {
  readonly preference?: Preference | undefined
}

/** The engine's view of an adapted source: both two-phase shapes. */
export type SourceTarget = ExternalSource

/** The note on the ledger rows of what `sourceId` could not carry and the next source did. */
export const overflowNote = (sourceId: string): string => `overflow of ${sourceId}`

const UNLIMITED = Number.MAX_SAFE_INTEGER

const modeOf = (req: ReserveRequest): TakeMode => req.unconditional ? "unconditional" : req.partial ? "upTo" : "exact"

/** `moved` must have the sign of `delta`, at most its size, and be an integer. */
const checkMoved = (source: Source, delta: number, answer: Moved) =>
  Number.isSafeInteger(answer.moved) && Number.isFinite(answer.balanceAfter) &&
    (delta < 0 ? answer.moved <= 0 && answer.moved >= delta : answer.moved >= 0 && answer.moved <= delta)
    ? Effect.succeed(answer)
    : Effect.fail(
      new ContractViolation({
        sourceId: source.id,
        detail: `asked to move ${delta}, answered moved ${answer.moved} and balance ${answer.balanceAfter}`
      })
    )

/** A move of a give-back that cannot fail in range terms, as the refund contract's StoreError. */
const asStoreError = (operation: string) => (error: QuotaOutOfRange | ContractViolation | StoreError) =>
  error._tag === "StoreError" ? error : new StoreError({ operation, detail: error.message, cause: error })

/** Adapts `source` (a `Source`) to the engine's two-phase shape. */
export const adaptSource = (source: Source, deps: AdapterDeps): SourceTarget => {
  const { ledger, sql } = deps

  /** Records `entries`, stamped with the current time (one clock read for all of them). */
  const record = (entries: ReadonlyArray<Omit<NewLedgerEntry, "at">>) =>
    entries.length === 0
      ? Effect.void
      : Effect.flatMap(
        Clock.currentTimeMillis,
        (at) => recordRows(ledger, entries.map((entry): NewLedgerEntry => ({ at, ...entry })))
      )

  /** One move of `target` for the part, checked, with its ledger row (none for 0). */
  const moveOne = (
    target: Source,
    req: {
      readonly holdId: string
      readonly accountId: string
      readonly subjectId: string
      readonly ref?: string | undefined
    },
    delta: number,
    kind: MoveKind,
    ledgerKind: NewLedgerEntry["kind"],
    note?: string
  ) =>
    Effect.gen(function*() {
      const answer = yield* target.move({
        sql,
        holdId: req.holdId,
        accountId: req.accountId,
        subjectId: req.subjectId,
        ...(req.ref !== undefined ? { ref: req.ref } : {}),
        delta,
        kind
      })
      yield* checkMoved(target, delta, answer)
      const subjectId = answer.subjectId ?? req.subjectId
      if (answer.moved !== 0) {
        yield* record([{
          kind: ledgerKind,
          sourceId: target.id,
          subjectId,
          accountId: req.accountId,
          holdId: req.holdId,
          amount: answer.moved,
          balanceAfter: answer.balanceAfter,
          ...(note !== undefined ? { note } : {})
        }])
      }
      return { ...answer, subjectId }
    })

  /**
   * A capped charge: `rest` (> 0) goes on along the chain while each capped
   * source allows it; what nobody carries is recorded as unbilled on `source`.
   * Returns what the chain carried and what stayed unbilled.
   */
  const overflow = (
    req: { readonly holdId: string; readonly accountId: string },
    capped: Moved & { readonly subjectId: string },
    rest: number,
    ledgerKind: "settle" | "late_settle",
    preference: Preference | undefined
  ) =>
    Effect.gen(function*() {
      let left = rest
      let allowed = capped.overflow ?? (source.availability
        ? (yield* source.availability(sql, req.accountId)).allowFallback
        : false)
      if (allowed) {
        for (const next of yield* deps.overflowChain(source.id, preference)) {
          if (left === 0 || !allowed) break
          const answer = yield* moveOne(
            next,
            { holdId: req.holdId, accountId: req.accountId, subjectId: req.accountId },
            -left,
            "overflow",
            ledgerKind,
            overflowNote(source.id)
          )
          left += answer.moved
          if (left > 0) {
            allowed = answer.overflow ?? (next.availability
              ? (yield* next.availability(sql, req.accountId)).allowFallback
              : false)
          }
        }
      }
      if (left > 0) {
        yield* record([{
          kind: "unbilled",
          sourceId: source.id,
          subjectId: capped.subjectId,
          accountId: req.accountId,
          holdId: req.holdId,
          amount: 0,
          balanceAfter: capped.balanceAfter,
          unbilled: left
        }])
      }
      return { carried: rest - left, unbilled: left }
    })

  /** A charge of `amount` (> 0 asked as `delta` < 0) with the overflow rule; the part's result. */
  const charge = (
    part: HoldPart,
    req: { readonly holdId: string; readonly accountId: string; readonly preference?: Preference | undefined },
    delta: number,
    kind: MoveKind,
    ledgerKind: "settle" | "late_settle"
  ) =>
    Effect.gen(function*() {
      const answer = yield* moveOne(
        source,
        { ...req, subjectId: part.subjectId, ref: part.ref },
        delta,
        kind,
        ledgerKind
      )
      const rest = answer.moved - delta
      if (rest > 0 && source.role === "budget") {
        return yield* new ContractViolation({
          sourceId: source.id,
          detail: `a budget capped a charge of ${-delta} at ${-answer.moved}`
        })
      }
      const spill = rest > 0
        ? yield* overflow(req, answer, rest, ledgerKind, req.preference)
        : { carried: 0, unbilled: 0 }
      return {
        moved: answer.moved,
        carried: spill.carried,
        unbilled: spill.unbilled,
        balanceAfter: answer.balanceAfter
      }
    })

  const balanceOf = (answer: { readonly balanceAfter: number }) =>
    answer.balanceAfter >= UNLIMITED ? {} : { balanceAfter: answer.balanceAfter }

  const reserve = (req: ReserveRequest) =>
    Effect.gen(function*() {
      const taken = yield* source.take({
        sql,
        holdId: req.holdId,
        accountId: req.accountId,
        subjectId: req.subjectId,
        amount: req.amount,
        mode: modeOf(req),
        ...(req.metadata ? { metadata: req.metadata } : {})
      })
      if (Number.isSafeInteger(taken.amount) && taken.amount !== 0) {
        yield* record([{
          kind: "reserve",
          sourceId: source.id,
          subjectId: taken.subjectId ?? req.subjectId,
          accountId: req.accountId,
          holdId: req.holdId,
          amount: -taken.amount,
          balanceAfter: taken.balanceAfter
        }])
      }
      return {
        amount: taken.amount,
        ...(taken.ref !== undefined ? { ref: taken.ref } : {}),
        ...(taken.subjectId !== undefined ? { subjectId: taken.subjectId } : {})
      }
    })

  const settle = (req: SettleRequest & ChainRequest) =>
    Effect.gen(function*() {
      const delta = -(req.actual - req.part.amount)
      const result = yield* charge(req.part, req, delta, "settle", "settle")
      const out: PartResult = {
        charged: req.part.amount - result.moved + result.carried,
        unbilled: result.unbilled,
        ...balanceOf(result)
      }
      return out
    })

  const refund = (req: RefundRequest) =>
    req.part.amount === 0
      ? Effect.void
      : moveOne(
        source,
        { ...req, subjectId: req.part.subjectId, ref: req.part.ref },
        req.part.amount,
        req.reason,
        req.reason
      )
        .pipe(Effect.asVoid, Effect.mapError(asStoreError(`${source.id}.${req.reason}`)))

  /**
   * A correction: what the chain carried for this part's overflow is given back
   * first (it was charged last), then the part's own subject.
   */
  const correct = (req: CorrectRequest) =>
    Effect.gen(function*() {
      let rest: number = req.amount
      if (ledger !== undefined && source.role === "funding") {
        const note = overflowNote(source.id)
        // The rows this transaction recorded are appended only at its end: a correction
        // over two parts of one source (split over two subscriptions) must see the first
        // part's give-back of the overflow, or it gives the overflow back twice.
        const appended = yield* ledger.entries({ holdId: req.holdId })
        const pending = (yield* pendingRows).filter((e) => e.holdId === req.holdId)
        const all = [...appended, ...pending]
        const rows = all.filter((e) => e.note === note)
        // The overflow rows name the capped source, not the part: of two parts of one source
        // (two subscriptions), each gives back only what the chain carried for it — what the
        // part still carries beyond what its own subject is still charged by this hold.
        const ownCharged = -all
          .filter((e) =>
            e.sourceId === source.id && e.subjectId === req.part.subjectId && !e.note?.startsWith(overflowNote(""))
          )
          .reduce((sum, e) => sum + e.amount, 0)
        let carried = Math.max(0, req.charged - req.corrected - ownCharged)
        const owed = new Map<string, { readonly sourceId: string; readonly subjectId: string; amount: number }>()
        for (const e of rows) {
          const key = `${e.sourceId}\u0000${e.subjectId}`
          const entry = owed.get(key) ?? { sourceId: e.sourceId, subjectId: e.subjectId, amount: 0 }
          entry.amount -= e.amount
          owed.set(key, entry)
        }
        for (const entry of [...owed.values()].reverse()) {
          const next = yield* deps.fundingSource(entry.sourceId)
          const give = Math.min(rest, carried, Math.max(0, entry.amount))
          if (next === undefined || give === 0) continue
          carried -= give
          yield* moveOne(
            next,
            { holdId: req.holdId, accountId: req.accountId, subjectId: entry.subjectId },
            give,
            "correction",
            "correction",
            note
          )
          rest -= give
        }
      }
      const own = rest === 0
        ? undefined
        : yield* moveOne(
          source,
          { ...req, subjectId: req.part.subjectId, ref: req.part.ref },
          rest,
          "correction",
          "correction"
        )
      return { corrected: req.amount, ...(own ? balanceOf(own) : {}) }
    })

  const lateSettle = (req: LateSettleRequest & ChainRequest) =>
    Effect.gen(function*() {
      if (req.amount === 0) return { charged: 0, unbilled: 0 }
      const result = yield* charge(req.part, req, -req.amount, "late_settle", "late_settle")
      const out: PartResult = {
        charged: -result.moved + result.carried,
        unbilled: result.unbilled,
        ...balanceOf(result)
      }
      return out
    })

  const balance = source.balance
  const availability = source.availability
  const target = {
    id: source.id,
    storeId: deps.storeId,
    ...(source.minimumReservation ? { minimumReservation: source.minimumReservation } : {}),
    ...(availability ? { availability: (accountId: string) => availability(sql, accountId) } : {}),
    ...(balance
      ? {
        balance: (subjectId: string) => balance(sql, subjectId),
        room: (subjectId: string) => balance(sql, subjectId),
        remaining: (subjectId: string) =>
          Effect.map(balance(sql, subjectId), (left): Remaining => ({ unlimited: left >= UNLIMITED, remaining: left }))
      }
      : {}),
    reserve,
    settle,
    refund,
    correct,
    lateSettle
  }
  // The adapter may also fail with `ContractViolation` (a source that broke the
  // contract), which every engine phase reports as such.
  return target as unknown as SourceTarget
}
