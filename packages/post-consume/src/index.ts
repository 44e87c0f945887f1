/**
 * relay-billing post-consume: per-call and after-the-fact billing.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as PostConsume from "./PostConsume.js"
