/**
 * The reference relay of relay-billing.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Config from "./Config.js"
/** @since 0.1.0 */
export * as HttpServer from "./HttpServer.js"
/** @since 0.1.0 */
export * as Pricing from "./Pricing.js"
/** @since 0.1.0 */
export * as Tokenizer from "./Tokenizer.js"
