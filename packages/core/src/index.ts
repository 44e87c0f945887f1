/**
 * relay-billing core: contracts and the billing session engine.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as AccountCounters from "./AccountCounters.js"
/** @since 0.3.0 */
export * as Audit from "./Audit.js"
/** @since 0.1.0 */
export * as BillingError from "./BillingError.js"
/** @since 0.1.0 */
export * as BillingEvents from "./BillingEvents.js"
/** @since 0.1.0 */
export * as BillingSession from "./BillingSession.js"
/** @since 0.1.0 */
export * as BillingSettler from "./BillingSettler.js"
/** @since 0.1.0 */
export * as Budget from "./Budget.js"
/** @since 0.1.0 */
export * as FundingRegistry from "./FundingRegistry.js"
/** @since 0.1.0 */
export * as FundingResolver from "./FundingResolver.js"
/** @since 0.1.0 */
export * as FundingSource from "./FundingSource.js"
/** @since 0.1.0 */
export * as Hold from "./Hold.js"
/** @since 0.2.0 */
export * as HoldIntent from "./HoldIntent.js"
/** @since 0.1.0 */
export * as HoldJournal from "./HoldJournal.js"
/** @since 0.1.0 */
export * as Input from "./Input.js"
/** @since 0.1.0 */
export * as Ledger from "./Ledger.js"
/** @since 0.1.0 */
export * as LowBalance from "./LowBalance.js"
/** @since 0.1.0 */
export * as Preference from "./Preference.js"
/** @since 0.1.0 */
export * as Quota from "./Quota.js"
/** @since 0.3.0 */
export * as SettlementRecorder from "./SettlementRecorder.js"
/** @since 0.4.0 */
export * as Source from "./Source.js"
/** @since 0.4.0 */
export * as SqlStore from "./SqlStore.js"
