import { Effect, Exit } from "effect"
import { describe, expect, it } from "vitest"
import { KnexClient } from "../src/index.js"

const open = (groupCommit: KnexClient.ClientOptions["groupCommit"]) =>
  Effect.runPromise(
    Effect.exit(Effect.scoped(KnexClient.fromUrl("sqlite::memory:", groupCommit === undefined ? {} : { groupCommit })))
  )

describe("group commit options", () => {
  it.each(
    [
      ["maxBatch", Number.NaN],
      ["maxBatch", 0],
      ["maxConcurrentBatches", 1.5],
      ["itemTimeoutMillis", -1],
      ["itemTimeoutMillis", Number.POSITIVE_INFINITY]
    ] as const
  )("refuses %s = %s with an InvalidInput naming the field and the value", async (field, value) => {
    const exit = await open({ [field]: value })
    expect(Exit.isFailure(exit)).toBe(true)
    const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
    const failure = (error as { error?: { _tag?: string; operation?: string; cause?: unknown } } | undefined)?.error
    expect(failure?._tag).toBe("StoreError")
    expect(failure?.operation).toBe("connect")
    expect(failure?.cause).toMatchObject({ _tag: "InvalidInput", field: `groupCommit.${field}`, value: String(value) })
  })

  it("accepts positive integers and the defaults", async () => {
    for (const option of [undefined, true, false, { maxBatch: 8, maxConcurrentBatches: 3, itemTimeoutMillis: 250 }]) {
      const exit = await open(option)
      expect(Exit.isSuccess(exit)).toBe(true)
    }
  })
})
