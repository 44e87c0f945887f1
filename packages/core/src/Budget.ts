/**
 * Budgets: caps that are not money, such as a token (API key) budget. A budget
 * has the same reserve / settle / refund shape as a funding source; every charge
 * hits the budget *and* a funding source.
 *
 * @since 0.1.0
 */
import type * as FundingSource from "./FundingSource.js"

/**
 * What a budget has left; an unlimited budget still counts usage.
 *
 * @since 0.1.0
 * @category models
 */
export type Remaining = FundingSource.Remaining

/**
 * The budget contract: an {@link FundingSource.ExternalSource} in the role
 * `"budget"` (the same shape as a funding source). Unlimited subjects reserve
 * nothing but still move their counters at settlement.
 *
 * @deprecated since 0.5.0: use `FundingSource.ExternalSource` (this alias stays for existing code).
 * @since 0.1.0
 * @category models
 */
export type Budget = FundingSource.ExternalSource

/**
 * Declares a budget.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (budget: Budget): Budget => budget
