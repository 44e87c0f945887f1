/**
 * Request limits the server-level middleware hands to the handlers
 * (`limits.maxJsonDepth`), the shutdown signal the chat streams watch, and a
 * linear check of a JSON text's nesting depth.
 *
 * @internal
 */
import { Context, Effect } from "effect"

/** The deepest JSON body accepted (`limits.maxJsonDepth`); the middleware sets it per request. */
export const MaxJsonDepth = Context.Reference<number>("relay/internal/MaxJsonDepth", { defaultValue: () => 64 })

/**
 * Completes when a shutdown's drain is over: a response still streaming then
 * ends (and is billed for what it delivered). Provided by the HTTP listener;
 * never completes elsewhere (e.g. in a test that builds routes alone).
 */
export const StreamDeadline = Context.Reference<Effect.Effect<void>>("relay/internal/StreamDeadline", {
  defaultValue: () => Effect.never
})

/**
 * Whether `text` (JSON or not) opens more than `max` nested objects/arrays,
 * brackets inside strings not counted. One pass, no recursion, so a body
 * nested 100,000 deep is refused before `JSON.parse` or a Schema walks it.
 */
export const jsonDepthExceeds = (text: string, max: number): boolean => {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 92) i++ // backslash: skip the escaped character
      else if (c === 34) inString = false
    } else if (c === 34) {
      inString = true
    } else if (c === 123 || c === 91) {
      if (++depth > max) return true
    } else if (c === 125 || c === 93) {
      depth--
    }
  }
  return false
}
