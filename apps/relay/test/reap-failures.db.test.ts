/**
 * Issue 9 (also): the recovery pass reports each hold it could not finish as a
 * typed failure, and the relay's reaper logs it (ERROR, with the hold id, the
 * step and the error's tag) instead of dropping it. A hold whose part names a
 * funding source the relay does not have cannot be expired: `UnknownSource`.
 */
import { HoldJournal } from "@relay-billing/core"
import type { Hold } from "@relay-billing/core"
import { TestDatabase } from "@relay-billing/knex"
import { Effect, Exit, Layer, Logger, References, Scope } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import * as RelayBilling from "../src/RelayBilling.js"
import * as Server from "../src/Server.js"

const scope = Effect.runSync(Scope.make())
afterAll(() => Effect.runPromise(Scope.close(scope, Exit.void)))

describe.each(TestDatabase.targets())("the reaper logs typed reap failures on $name", (target) => {
  it(
    "an expired hold that cannot be refunded: the report names it with UnknownSource, the reaper logs it at ERROR",
    async () => {
      const db = await Effect.runPromise(Scope.provide(TestDatabase.isolated(target), scope))
      const context = await Effect.runPromise(
        Layer.buildWithScope(RelayBilling.layerUrl(db.url, { client: db.options }), scope)
      )
      const lines: Array<{ level: string; message: string; annotations: Record<string, unknown> }> = []
      const capture = Logger.make(({ fiber, logLevel, message }) => {
        lines.push({
          level: logLevel,
          message: (Array.isArray(message) ? message : [message]).map(String).join(" "),
          annotations: { ...fiber.getRef(References.CurrentLogAnnotations) }
        })
      })
      const ghost: Hold.Hold = {
        id: "reap-ghost-1",
        accountId: "acc_ghost",
        estimate: 10 as never,
        reserved: 10 as never,
        preference: "wallet_only",
        trusted: false,
        status: "pending",
        parts: [{ kind: "funding", sourceId: "vouchers-gone", subjectId: "acc_ghost", amount: 10 as never }],
        createdAt: 1,
        expiresAt: 2
      }
      await Effect.runPromise(
        Effect.flatMap(HoldJournal.HoldJournal, (j) => j.insert(ghost)).pipe(Effect.provideContext(context))
      )
      const report = await Effect.runPromise(
        Server.reapPass.pipe(Effect.provideContext(context), Effect.provide(Logger.layer([capture])))
      )
      expect(report?.failures).toHaveLength(1)
      const failure = report!.failures[0]!
      expect(failure).toMatchObject({ holdId: "reap-ghost-1", step: "expire" })
      expect(failure.failure._tag).toBe("UnknownSource")
      const errors = lines.filter((l) => l.level === "Error")
      expect(errors).toHaveLength(1)
      expect(errors[0]!.message).toContain("reap-ghost-1")
      expect(errors[0]!.annotations).toMatchObject({ holdId: "reap-ghost-1", step: "expire", error: "UnknownSource" })
    },
    60_000
  )
})
