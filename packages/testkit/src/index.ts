/**
 * relay-billing testkit: in-memory sources with fault injection, and the
 * conformance suite for funding-source plugins.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Faults from "./Faults.js"
/** @since 0.1.0 */
export * as InMemoryStore from "./InMemoryStore.js"
/** @since 0.1.0 */
export * as FundingSourceSuite from "./FundingSourceSuite.js"
/** @since 0.4.0 */
export * as SourceSuite from "./SourceSuite.js"
