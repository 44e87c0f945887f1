/**
 * Billing preference: the name of an ordered chain of funding source ids. The
 * four built-in names of the spec (§2.1) are aliases for chains of the two
 * built-in roles (see `FundingResolver.chainOf`); a host may configure named
 * custom chains (`preferences` on the engine's options), whose ids may be any
 * registered funding source, plugins included.
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import { InvalidInput } from "./BillingError.js"

/**
 * The four built-in preferences of the spec (§2.1).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Preference = Schema.Literals(["subscription_first", "wallet_first", "subscription_only", "wallet_only"])

/**
 * @since 0.1.0
 * @category models
 */
export type Preference = typeof Preference.Type

/**
 * The built-in preference names, in the spec's order.
 *
 * @since 0.4.0
 * @category constants
 */
export const builtins: ReadonlyArray<Preference> = Preference.literals

/**
 * Whether `name` is one of the four built-in preferences.
 *
 * @since 0.4.0
 * @category guards
 */
export const isBuiltin = (name: string): name is Preference => (builtins as ReadonlyArray<string>).includes(name)

/**
 * The longest preference name (the hold journal stores it in 32 characters).
 *
 * @since 0.4.0
 * @category constants
 */
export const MAX_NAME_LENGTH = 32

/**
 * A preference name as a hold records it: a built-in one or a configured custom one.
 *
 * @since 0.4.0
 * @category schemas
 */
export const Name = Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(MAX_NAME_LENGTH))

/**
 * @since 0.4.0
 * @category models
 */
export type Name = typeof Name.Type

/**
 * Named custom chains: preference name → ordered funding source ids (for
 * example `{ vouchers_first: ["vouchers", "subscription", "wallet"] }`).
 *
 * @since 0.4.0
 * @category models
 */
export type Chains = Readonly<Record<string, ReadonlyArray<string>>>

/**
 * The preference used for empty or unknown values.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultPreference: Preference = "subscription_first"

/**
 * Whether `custom` defines `name` (own keys only: `"constructor"` is not a preference).
 *
 * @since 0.4.0
 * @category guards
 */
export const isCustom = (name: string, custom: Chains | undefined): boolean =>
  custom !== undefined && Object.prototype.hasOwnProperty.call(custom, name)

/**
 * Normalises a user-supplied preference: trims it, keeps a built-in name or one
 * of the `custom` chains' names, and maps empty or unknown values to
 * {@link defaultPreference}, as new-api does.
 *
 * @since 0.1.0
 * @category constructors
 */
export const normalize = (value: string | undefined | null, custom?: Chains): Name => {
  const trimmed = (value ?? "").trim()
  if (isBuiltin(trimmed) || (trimmed !== "" && isCustom(trimmed, custom))) return trimmed
  return defaultPreference
}

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/

/**
 * Checks the shape of custom chains, without knowing the sources: each name is
 * 1 to {@link MAX_NAME_LENGTH} characters of `A-Z a-z 0-9 _ . : -` (starting
 * with a letter or digit) and not a built-in name; each chain is a non-empty
 * list of distinct non-empty ids. Fails with `InvalidInput` naming the field
 * (`<field>.<name>` or `<field>.<name>.<index>`) and the value.
 * `FundingResolver.validate` also checks that every id is a registered source.
 *
 * @since 0.4.0
 * @category validation
 */
export const validateShape = (custom: Chains, field = "preferences"): Effect.Effect<Chains, InvalidInput> =>
  Effect.gen(function*() {
    for (const [name, chain] of Object.entries(custom)) {
      if (name.length > MAX_NAME_LENGTH || !NAME_PATTERN.test(name)) {
        return yield* new InvalidInput({
          field: `${field}.${name}`,
          value: InvalidInput.render(name),
          reason:
            `a preference name is 1 to ${MAX_NAME_LENGTH} characters of A-Z a-z 0-9 _ . : - starting with a letter or digit`
        })
      }
      if (isBuiltin(name)) {
        return yield* new InvalidInput({
          field: `${field}.${name}`,
          value: InvalidInput.render(name),
          reason: "a built-in preference cannot be redefined"
        })
      }
      if (!Array.isArray(chain) || chain.length === 0) {
        return yield* new InvalidInput({
          field: `${field}.${name}`,
          value: InvalidInput.render(chain),
          reason: "expected a non-empty list of funding source ids"
        })
      }
      const seen = new Set<string>()
      for (let i = 0; i < chain.length; i++) {
        const id = chain[i]
        if (typeof id !== "string" || id === "") {
          return yield* new InvalidInput({
            field: `${field}.${name}.${i}`,
            value: InvalidInput.render(id),
            reason: "expected a non-empty funding source id"
          })
        }
        if (seen.has(id)) {
          return yield* new InvalidInput({
            field: `${field}.${name}.${i}`,
            value: InvalidInput.render(id),
            reason: "a source appears twice in the chain"
          })
        }
        seen.add(id)
      }
    }
    return custom
  })
