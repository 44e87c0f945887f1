/**
 * The ledger rows of one engine transaction: the adapter of every `Source`
 * records its rows here, and the transaction writes them with one
 * `Ledger.append` (one INSERT) before it commits. A nested transaction joins
 * the outer one's rows.
 */
import { Context, Effect } from "effect"
import { StoreError } from "../BillingError.js"
import type { HoldJournal } from "../HoldJournal.js"
import type { Ledger, NewLedgerEntry } from "../Ledger.js"

/** The rows collected by the running transaction (`undefined` outside one). */
const Rows = Context.Reference<Array<NewLedgerEntry> | undefined>("@relay-billing/core/internal/ledgerRows", {
  defaultValue: () => undefined
})

const missing = new StoreError({
  operation: "ledger.append",
  detail: "a Source moved a balance but no Ledger service was provided to BillingSession"
})

const append = (ledger: Ledger["Service"] | undefined, rows: ReadonlyArray<NewLedgerEntry>) =>
  rows.length === 0 ? Effect.void : ledger === undefined ? Effect.fail(missing) : ledger.append(rows)

/**
 * Whether a transaction of the journal's store may be running (a nested one
 * joins it and cannot roll back alone): an engine transaction, or one the
 * journal reports; a journal that cannot tell counts as yes.
 */
export const insideTransaction = (journal: HoldJournal["Service"]): Effect.Effect<boolean> =>
  Effect.flatMap(
    Rows,
    (rows) => rows !== undefined ? Effect.succeed(true) : journal.inTransaction ?? Effect.succeed(true)
  )

/**
 * The rows the running transaction recorded and has not appended yet (none
 * outside one): a reader of the ledger inside the transaction adds them to what
 * `Ledger.entries` answers, which cannot see them before the transaction's end.
 */
export const pendingRows: Effect.Effect<ReadonlyArray<NewLedgerEntry>> = Effect.map(
  Rows,
  (collected) => collected === undefined ? [] : [...collected]
)

/** Records rows in the running transaction (appended at once outside one). */
export const recordRows = (ledger: Ledger["Service"] | undefined, rows: ReadonlyArray<NewLedgerEntry>) =>
  Effect.flatMap(Rows, (collected) => {
    if (collected === undefined) return append(ledger, rows)
    collected.push(...rows)
    return Effect.void
  })

/**
 * The journal whose `transaction` collects the rows its body records and
 * appends them in one call at its end (inside the transaction: they commit or
 * roll back with it).
 */
export const collectingJournal = (
  journal: HoldJournal["Service"],
  ledger: Ledger["Service"] | undefined
): HoldJournal["Service"] => ({
  ...journal,
  transaction: (effect) =>
    journal.transaction(Effect.flatMap(Rows, (outer) => {
      if (outer !== undefined) return effect
      const rows: Array<NewLedgerEntry> = []
      return effect.pipe(
        Effect.provideService(Rows, rows),
        Effect.tap(() => append(ledger, rows))
      )
    }))
})
