/** The engine's configuration, read by every phase. */
import type { Effect } from "effect"
import type { StoreError } from "../BillingError.js"
import type * as FundingResolver from "../FundingResolver.js"
import type * as Preference from "../Preference.js"

/** Engine configuration (see `BillingSession.Options`). */
export interface EngineConfig {
  readonly holdTtlMillis: number
  readonly trustThreshold: number | undefined
  readonly roles: FundingResolver.Roles
  /** Named custom chains (validated against the registry when the engine is built). */
  readonly preferences: Preference.Chains
  readonly tokenBudgetId: string
  readonly reapBatch: number
  readonly splitFundingFor: ((accountId: string) => Effect.Effect<boolean, StoreError>) | undefined
}
