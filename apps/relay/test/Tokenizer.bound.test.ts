import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import * as Tokenizer from "../src/Tokenizer.js"

const text = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 200 }),
  fc.string({ unit: "binary", maxLength: 200 }),
  fc.string({ unit: fc.constantFrom("a", " ", "你", "😀", "\n", "é", "\u0301", "<|endoftext|>"), maxLength: 100 })
)

const message = fc.record(
  {
    role: fc.oneof(fc.constantFrom("system", "user", "assistant"), text),
    content: fc.oneof(
      fc.constant(null),
      text,
      fc.array(
        fc.record({ type: fc.constantFrom("text", "image_url"), text }, { requiredKeys: ["type"] }),
        { maxLength: 4 }
      )
    ),
    name: text
  },
  { requiredKeys: ["role"] }
)

describe("Tokenizer.messagesUpperBound", () => {
  it("is never below countMessages (so skipping the tokenizer under it never changes a reservation)", () => {
    fc.assert(
      fc.property(fc.array(message, { minLength: 1, maxLength: 5 }), (messages) => {
        expect(Tokenizer.messagesUpperBound(messages)).toBeGreaterThanOrEqual(Tokenizer.countMessages(messages))
      }),
      { numRuns: 300 }
    )
  })

  it("is the exact count's overheads plus 3 per UTF-16 code unit", () => {
    // 3 (priming) + 3 + 3·4 ("user") + 3·11 ("hello world")
    expect(Tokenizer.messagesUpperBound([{ role: "user", content: "hello world" }])).toBe(3 + 3 + 12 + 33)
  })
})
