import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Ref } from "effect"
import { TestClock } from "effect/testing"
import { HoldResolved, StoreError } from "../src/BillingError.js"
import * as BillingSettler from "../src/BillingSettler.js"
import type { Settlement } from "../src/Hold.js"
import type { Quota } from "../src/Quota.js"

const settlement = (actual: number): Settlement => ({
  holdId: "hold-1",
  actual: actual as Quota,
  reserved: 30_000 as Quota,
  delta: actual - 30_000,
  parts: [],
  settledAt: 0
})

interface FakeOptions {
  readonly settle?: (actual: number) => Effect.Effect<Settlement, BillingSettler.SettleError>
  readonly refund?: Effect.Effect<BillingSettler.RefundResult, BillingSettler.RefundError>
}

/** A hand-written settler that records every call. */
const fake = (options: FakeOptions = {}) => {
  const calls: Array<string> = []
  const settler: BillingSettler.BillingSettler = {
    holdId: "hold-1",
    preConsumed: 30_000,
    needsRefund: Effect.sync(() => calls.length === 0),
    settle: (actual) =>
      Effect.suspend(() => {
        calls.push(`settle(${actual})`)
        return options.settle ? options.settle(actual) : Effect.succeed(settlement(actual))
      }),
    refund: Effect.suspend(() => {
      calls.push("refund")
      return options.refund ?? Effect.succeed({ holdId: "hold-1", status: "refunded" as const, refunded: 30_000 })
    })
  }
  return { settler, calls }
}

class UpstreamError {
  readonly _tag = "UpstreamError"
}

const defectOf = <A, E>(exit: Exit.Exit<A, E>): unknown => {
  const found = Exit.findDefect(exit)
  return found._tag === "Success" ? found.success : undefined
}

describe("BillingSettler.withBilling", () => {
  it.effect("success: settles once with the reported cost and returns the value; no refund", () =>
    Effect.gen(function*() {
      const { calls, settler } = fake()
      const value = yield* BillingSettler.withBilling(
        Effect.succeed(settler),
        () => Effect.succeed({ value: "answer", cost: 12_000 })
      )
      expect(value).toBe("answer")
      expect(calls).toStrictEqual(["settle(12000)"])
    }))

  it.effect("failure: refunds once and re-raises the original error", () =>
    Effect.gen(function*() {
      const { calls, settler } = fake()
      const error = new UpstreamError()
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(Effect.succeed(settler), () => Effect.fail(error))
      )
      expect(calls).toStrictEqual(["refund"])
      expect(exit).toStrictEqual(Exit.fail(error))
      const found = Exit.findErrorOption(exit)
      expect(found._tag === "Some" && found.value).toBe(error)
    }))

  it.effect("failure: the original error wins even when the refund fails", () =>
    Effect.gen(function*() {
      const { calls, settler } = fake({ refund: Effect.fail(new StoreError({ operation: "refund", detail: "down" })) })
      const error = new UpstreamError()
      const exit = yield* Effect.exit(BillingSettler.withBilling(Effect.succeed(settler), () => Effect.fail(error)))
      expect(calls).toStrictEqual(["refund"])
      expect(exit).toStrictEqual(Exit.fail(error))
    }))

  it.effect("defect (Effect.die): refunds and re-raises the defect", () =>
    Effect.gen(function*() {
      const { calls, settler } = fake()
      const boom = new Error("boom")
      const exit = yield* Effect.exit(BillingSettler.withBilling(Effect.succeed(settler), () => Effect.die(boom)))
      expect(calls).toStrictEqual(["refund"])
      expect(Exit.isFailure(exit)).toBe(true)
      expect(defectOf(exit)).toBe(boom)
    }))

  it.effect("defect (a throw inside Effect.sync): refunds and re-raises the thrown value", () =>
    Effect.gen(function*() {
      const { calls, settler } = fake()
      const boom = new Error("thrown")
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(Effect.succeed(settler), () =>
          Effect.sync((): BillingSettler.Billed<string> => {
            throw boom
          }))
      )
      expect(calls).toStrictEqual(["refund"])
      expect(defectOf(exit)).toBe(boom)
    }))

  it.effect("defect (use itself throws before returning an effect): refunds and re-raises", () =>
    Effect.gen(function*() {
      const { calls, settler } = fake()
      const boom = new Error("thrown synchronously")
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(Effect.succeed(settler), (): Effect.Effect<BillingSettler.Billed<string>> => {
          throw boom
        })
      )
      expect(calls).toStrictEqual(["refund"])
      expect(defectOf(exit)).toBe(boom)
    }))

  const interruptWhileUsing = (
    options: { readonly onInterrupt?: BillingSettler.InterruptionPolicy },
    fakeOptions: FakeOptions = {},
    beforeBlocking: Effect.Effect<void> = Effect.void
  ) =>
    Effect.gen(function*() {
      const { calls, settler } = fake(fakeOptions)
      const started = yield* Deferred.make<void>()
      const fiber = yield* Effect.forkChild(
        BillingSettler.withBilling(
          Effect.succeed(settler),
          () =>
            beforeBlocking.pipe(
              Effect.andThen(Deferred.succeed(started, undefined)),
              Effect.andThen(Effect.sleep("1 hour")),
              Effect.as({ value: "late", cost: 99_999 })
            ),
          options
        )
      )
      yield* Deferred.await(started)
      yield* Fiber.interrupt(fiber)
      const exit = yield* Fiber.await(fiber)
      return { calls, exit }
    })

  it.effect("interruption: refunds by default and ends interrupted", () =>
    Effect.gen(function*() {
      const { calls, exit } = yield* interruptWhileUsing({})
      expect(calls).toStrictEqual(["refund"])
      expect(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)).toBe(true)
    }))

  it.effect("interruption with chargeOnInterrupt(amount): settles with that amount, no refund", () =>
    Effect.gen(function*() {
      const { calls, exit } = yield* interruptWhileUsing({ onInterrupt: BillingSettler.chargeOnInterrupt(4_000) })
      expect(calls).toStrictEqual(["settle(4000)"])
      expect(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)).toBe(true)
    }))

  it.effect("interruption with chargeOnInterrupt(effect): the amount is read when the interruption happens", () =>
    Effect.gen(function*() {
      const streamed = yield* Ref.make(0)
      const { calls } = yield* interruptWhileUsing(
        { onInterrupt: BillingSettler.chargeOnInterrupt(Ref.get(streamed)) },
        {},
        Ref.set(streamed, 500).pipe(Effect.andThen(Ref.set(streamed, 700)))
      )
      expect(calls).toStrictEqual(["settle(700)"])
    }))

  it.effect("interruption with decideOnInterrupt: the policy is chosen when the interruption happens", () =>
    Effect.gen(function*() {
      const sentUpstream = yield* Ref.make(false)
      const policy = BillingSettler.decideOnInterrupt(
        Effect.map(
          Ref.get(sentUpstream),
          (sent) => sent ? BillingSettler.chargeOnInterrupt(300) : BillingSettler.refundOnInterrupt
        )
      )
      const before = yield* interruptWhileUsing({ onInterrupt: policy })
      expect(before.calls).toStrictEqual(["refund"])
      expect(Exit.isFailure(before.exit) && Cause.hasInterruptsOnly(before.exit.cause)).toBe(true)
      const after = yield* interruptWhileUsing({ onInterrupt: policy }, {}, Ref.set(sentUpstream, true))
      expect(after.calls).toStrictEqual(["settle(300)"])
    }))

  it.effect("decideOnInterrupt is not consulted when the work fails: refund", () =>
    Effect.gen(function*() {
      const { calls, settler } = fake()
      let consulted = false
      const exit = yield* Effect.exit(BillingSettler.withBilling(
        Effect.succeed(settler),
        () => Effect.fail("boom"),
        {
          onInterrupt: BillingSettler.decideOnInterrupt(Effect.sync(() => {
            consulted = true
            return BillingSettler.chargeOnInterrupt(1)
          }))
        }
      ))
      expect(Exit.isFailure(exit)).toBe(true)
      expect(consulted).toBe(false)
      expect(calls).toStrictEqual(["refund"])
    }))

  it.effect("interruption with a charge that fails: refunds instead", () =>
    Effect.gen(function*() {
      const { calls } = yield* interruptWhileUsing(
        { onInterrupt: BillingSettler.chargeOnInterrupt(4_000) },
        { settle: () => Effect.fail(new StoreError({ operation: "settle", detail: "down" })) }
      )
      expect(calls).toStrictEqual(["settle(4000)", "refund"])
    }))

  it.effect("interruption while opening: the open completes and its reservation is refunded", () =>
    Effect.gen(function*() {
      const { calls, settler } = fake()
      const opening = yield* Deferred.make<void>()
      let opened = false
      let used = false
      const fiber = yield* Effect.forkChild(
        BillingSettler.withBilling(
          Deferred.succeed(opening, undefined).pipe(
            Effect.andThen(Effect.sleep("1 second")),
            Effect.andThen(Effect.sync(() => {
              opened = true
              return settler
            }))
          ),
          () => Effect.sync(() => (used = true)).pipe(Effect.as({ value: 1, cost: 1 }))
        )
      )
      yield* Deferred.await(opening)
      const interrupter = yield* Effect.forkChild(Fiber.interrupt(fiber))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(interrupter)
      expect(opened).toBe(true)
      expect(used).toBe(false)
      expect(calls).toStrictEqual(["refund"])
    }))

  it.effect("settle failing: the reservation is refunded and the settle error is returned", () =>
    Effect.gen(function*() {
      const settleError = new HoldResolved({ holdId: "hold-1", status: "expired", operation: "settle" })
      const { calls, settler } = fake({ settle: () => Effect.fail(settleError) })
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(Effect.succeed(settler), () => Effect.succeed({ value: "answer", cost: 12_000 }))
      )
      expect(calls).toStrictEqual(["settle(12000)", "refund"])
      expect(exit).toStrictEqual(Exit.fail(settleError))
    }))

  it.effect("settle failing and the refund failing too: the settle error is still the one returned", () =>
    Effect.gen(function*() {
      const settleError = new StoreError({ operation: "settle", detail: "down" })
      const { calls, settler } = fake({
        settle: () => Effect.fail(settleError),
        refund: Effect.fail(new StoreError({ operation: "refund", detail: "down too" }))
      })
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(Effect.succeed(settler), () => Effect.succeed({ value: "answer", cost: 12_000 }))
      )
      expect(calls).toStrictEqual(["settle(12000)", "refund"])
      expect(exit).toStrictEqual(Exit.fail(settleError))
    }))

  it.effect("open failing: nothing is settled or refunded, use never runs, the open error is returned", () =>
    Effect.gen(function*() {
      const { calls } = fake()
      const openError = new StoreError({ operation: "open", detail: "no" })
      let used = false
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(
          Effect.fail(openError),
          () => Effect.sync(() => (used = true)).pipe(Effect.as({ value: 1, cost: 1 }))
        )
      )
      expect(used).toBe(false)
      expect(calls).toStrictEqual([])
      expect(exit).toStrictEqual(Exit.fail(openError))
    }))
})

describe("BillingSettler.settleBilling", () => {
  it.effect("with no settler it is a no-op that returns undefined", () =>
    Effect.gen(function*() {
      expect(yield* BillingSettler.settleBilling(undefined, 12_000)).toBeUndefined()
    }))

  it.effect("with a settler it settles once with the actual cost", () =>
    Effect.gen(function*() {
      const { calls, settler } = fake()
      const result = yield* BillingSettler.settleBilling(settler, 12_000)
      expect(result).toStrictEqual(settlement(12_000))
      expect(calls).toStrictEqual(["settle(12000)"])
    }))
})

describe("BillingSettler policies", () => {
  it.effect("refundOnInterrupt and chargeOnInterrupt build the two policies", () =>
    Effect.gen(function*() {
      expect(BillingSettler.refundOnInterrupt._tag).toBe("Refund")
      const charge = BillingSettler.chargeOnInterrupt(321)
      expect(charge._tag).toBe("Charge")
      if (charge._tag === "Charge") expect(yield* charge.amount).toBe(321)
    }))
})
