/**
 * relay-billing wallet: the wallet funding source and token budgets on knex.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as TokenBudget from "./TokenBudget.js"
/** @since 0.1.0 */
export * as Wallet from "./Wallet.js"
/** @since 0.1.0 */
export * as WalletAdmin from "./WalletAdmin.js"
/** @since 0.1.0 */
export * as WalletError from "./WalletError.js"
/** @since 0.1.0 */
export * as WalletSource from "./WalletSource.js"
