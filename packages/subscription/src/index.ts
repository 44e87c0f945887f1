/**
 * relay-billing subscriptions: plans, subscriptions, period resets and expiry,
 * and the subscription funding source, on knex.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Period from "./Period.js"
/** @since 0.1.0 */
export * as Subscription from "./Subscription.js"
/** @since 0.1.0 */
export * as SubscriptionAdmin from "./SubscriptionAdmin.js"
/** @since 0.1.0 */
export * as SubscriptionJobs from "./SubscriptionJobs.js"
/** @since 0.1.0 */
export * as SubscriptionSource from "./SubscriptionSource.js"
