import { Schema } from "effect"
import { describe, expect, it } from "vitest"
import * as Tokenizer from "../src/Tokenizer.js"

describe("Tokenizer (o200k_base)", () => {
  it("counts known strings", () => {
    expect(Tokenizer.ENCODING).toBe("o200k_base")
    expect(Tokenizer.countText("")).toBe(0)
    expect(Tokenizer.countText("hello world")).toBe(2) // [24912, 2375]
    expect(Tokenizer.countText("Hello, world!")).toBe(4) // [13225, 11, 2375, 0]
    expect(Tokenizer.countText("The quick brown fox jumps over the lazy dog.")).toBe(10)
    expect(Tokenizer.countText("你好，世界")).toBe(3)
  })

  it("counts special-token strings as plain text instead of throwing", () => {
    expect(Tokenizer.countText("<|endoftext|>")).toBe(7)
  })

  it("counts chat messages with 3 tokens per message, name + 1, and 3 for the reply priming", () => {
    // 3 (priming) + [3 + "user"(1) + "hello world"(2)]
    expect(Tokenizer.countMessages([{ role: "user", content: "hello world" }])).toBe(9)
    expect(Tokenizer.countMessages([])).toBe(Tokenizer.REPLY_PRIMING)
    // system + user: 3 + (3 + 1 + 4) + (3 + 1 + 2)
    expect(
      Tokenizer.countMessages([
        { role: "system", content: "Hello, world!" },
        { role: "user", content: "hello world" }
      ])
    ).toBe(17)
    // a name costs its tokens + 1: "bob" is 1 token
    expect(Tokenizer.countMessages([{ role: "user", content: "hello world", name: "bob" }])).toBe(11)
  })

  it("counts the text parts of content-part arrays and ignores other parts", () => {
    const parts = Tokenizer.countMessages([
      {
        role: "user",
        content: [
          { type: "text", text: "hello world" },
          { type: "image_url" },
          { type: "text", text: "Hello, world!" }
        ]
      }
    ])
    expect(parts).toBe(3 + 3 + 1 + 2 + 4)
    expect(Tokenizer.countMessages([{ role: "assistant", content: null }])).toBe(3 + 3 + 1)
  })

  it("decodes messages with Schema (extra fields allowed)", () => {
    const decode = Schema.decodeUnknownSync(Schema.Array(Tokenizer.ChatMessage))
    const messages = decode([{ role: "user", content: [{ type: "text", text: "hello world" }], extra: 1 }])
    expect(Tokenizer.countMessages(messages)).toBe(9)
    expect(() => decode([{ role: 1, content: "x" }])).toThrow()
  })

  it("counts embeddings input: a string, strings, or pre-tokenized ids", () => {
    expect(Tokenizer.countEmbeddingsInput("hello world")).toBe(2)
    expect(Tokenizer.countEmbeddingsInput(["hello world", "Hello, world!"])).toBe(6)
    expect(Tokenizer.countEmbeddingsInput([1, 2, 3])).toBe(3)
    expect(Tokenizer.countEmbeddingsInput([[1, 2], [3]])).toBe(3)
    expect(Tokenizer.countEmbeddingsInput([])).toBe(0)
  })
})
