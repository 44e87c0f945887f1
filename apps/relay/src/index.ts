/**
 * The reference relay of relay-billing.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Config from "./Config.js"
/** @since 0.1.0 */
export * as HttpListener from "./HttpListener.js"
/** @since 0.1.0 */
export * as Pricing from "./Pricing.js"
/** @since 0.1.0 */
export * as Tokenizer from "./Tokenizer.js"
/** @since 0.1.0 */
export * as AdminApi from "./AdminApi.js"
/** @since 0.1.0 */
export * as AdminKey from "./AdminKey.js"
/** @since 0.1.0 */
export * as RelayBilling from "./RelayBilling.js"
/** @since 0.1.0 */
export * as RelayStore from "./RelayStore.js"
/** @since 0.1.0 */
export * as Channels from "./Channels.js"
/** @since 0.1.0 */
export * as DemoResponder from "./DemoResponder.js"
/** @since 0.1.0 */
export * as DemoUpstream from "./DemoUpstream.js"
/** @since 0.1.0 */
export * as Upstream from "./Upstream.js"
/** @since 0.1.0 */
export * as ClientApi from "./ClientApi.js"
/** @since 0.1.0 */
export * as Server from "./Server.js"
/** @since 0.1.0 */
export * as Webhook from "./Webhook.js"
/** @since 0.1.0 */
export * as Metrics from "./Metrics.js"
/** @since 0.1.0 */
export * as Demo from "./Demo.js"
/** @since 0.1.0 */
export * as Cli from "./Cli.js"
