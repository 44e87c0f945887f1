/**
 * Decoding of public inputs: every boundary of the SDK decodes its input with a
 * Schema, and a failure becomes an `InvalidInput` that names the field and the
 * value and changes nothing.
 *
 * @since 0.1.0
 */
import { Effect, Schema, SchemaIssue } from "effect"
import { InvalidInput } from "./BillingError.js"

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

const valueAt = (input: unknown, path: ReadonlyArray<PropertyKey>): unknown => {
  let current: unknown = input
  for (const key of path) {
    if (current === null || typeof current !== "object") return undefined
    current = (current as Record<PropertyKey, unknown>)[key]
  }
  return current
}

/**
 * Returns a decoder for `schema`; a failure becomes an `InvalidInput` naming the
 * first failing field (as `prefix.path`, or `prefix` for a top-level value) and
 * the value found there.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeInput = <S extends Schema.Decoder<unknown>>(schema: S, prefix: string) => {
  const decode = Schema.decodeUnknownEffect(schema)
  return (input: unknown): Effect.Effect<S["Type"], InvalidInput, S["DecodingServices"]> =>
    decode(input).pipe(
      Effect.mapError((error) => {
        const first = formatter(error.issue).issues[0]
        const path = (first?.path ?? []).map((segment) =>
          typeof segment === "object" && segment !== null && "key" in segment ? segment.key : segment
        ) as ReadonlyArray<PropertyKey>
        const field = [prefix, ...path.map(String)].filter((s) => s.length > 0).join(".")
        return new InvalidInput({
          field,
          value: InvalidInput.render(path.length === 0 ? input : valueAt(input, path)),
          reason: first?.message ?? error.message
        })
      })
    )
}
