/**
 * A host's own record of every settlement (a request log, an invoice line),
 * written by the engine **inside the transaction that settles the hold**: it
 * commits with the settlement or not at all. A crash can therefore never leave
 * a settled hold without its record, a rolled-back settle writes none, and a
 * replayed settle (the hold is already settled) writes no second one.
 *
 * The recorder declares the `storeId` of the store it writes to; it must be the
 * `HoldJournal`'s (its writes must join the journal's transaction, e.g. a query
 * through the same `KnexClient`), otherwise building the engine fails with
 * `InvalidInput` (field `SettlementRecorder.storeId`).
 *
 * What the caller knows only at settle time (token counts, …) travels in the
 * settle's `metadata`, which is stored on the settlement
 * (`Settlement.metadata`) and so is in `settlement` when the recorder runs.
 *
 * A failing record fails the settle, which rolls back (the hold stays pending).
 *
 * @since 0.3.0
 */
import { Context, Layer } from "effect"
import type { Effect } from "effect"
import type { StoreError } from "./BillingError.js"
import type { Hold, Settlement } from "./Hold.js"

/**
 * The recorder the host plugs in.
 *
 * @since 0.3.0
 * @category models
 */
export interface Recorder {
  /** The store the record is written to: must equal the journal's `storeId`. */
  readonly storeId: string
  /**
   * Writes the record of `hold`, just settled with `settlement` (same
   * transaction). Called exactly once per hold: when it becomes settled.
   */
  readonly record: (hold: Hold, settlement: Settlement) => Effect.Effect<void, StoreError>
}

/**
 * The recorder service, read when the engine is built; default: none.
 *
 * @since 0.3.0
 * @category services
 */
export const SettlementRecorder = Context.Reference<Recorder | undefined>(
  "@relay-billing/core/SettlementRecorder",
  { defaultValue: () => undefined }
)

/**
 * Provides a recorder to the engine's layer.
 *
 * @since 0.3.0
 * @category layers
 */
export const layer = (recorder: Recorder): Layer.Layer<never> => Layer.succeed(SettlementRecorder, recorder)
