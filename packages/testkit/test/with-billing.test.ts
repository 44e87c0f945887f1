/**
 * The Effect-level guarantee (billing-semantics.md §5): a session used through
 * `withBilling` ends settled with the cost, refunded, or — on interruption —
 * settled with the configured charge, whatever way `use` ends.
 */
import { assert, describe, it } from "@effect/vitest"
import { BillingSession, BillingSettler } from "@relay-billing/core"
import { Cause, Data, Deferred, Effect, Exit, Fiber, Ref } from "effect"
import { InMemoryStore } from "../src/index.js"
import { assertAuditClean } from "./fixtures.js"

const Engine = BillingSession.BillingSession

const W = 1_800_000
const R = 950_000
const P = 25_000
const COST = 12_500

class UpstreamFailed extends Data.TaggedError("UpstreamFailed")<{ readonly status: number }> {}

const setup = (store: InMemoryStore.InMemoryStore) =>
  Effect.gen(function*() {
    yield* store.createAccount("a", W)
    yield* store.createToken("t", "a", { remain: R })
  })

const openH1 = (engine: BillingSession.BillingSession["Service"]) =>
  engine.open({ holdId: "h1", accountId: "a", tokenId: "t", estimate: P, preference: "wallet_only" })

/** The store after a refund of h1: everything as it started. */
const assertRefunded = (store: InMemoryStore.InMemoryStore) => {
  const snap = store.snapshot()
  assert.deepStrictEqual(snap.holds, { h1: "refunded" })
  assert.deepStrictEqual(snap.wallets, { a: W })
  assert.deepStrictEqual(snap.tokens, { t: { remain: R, used: 0 } })
  assert.deepStrictEqual(snap.counters, { a: { usedQuota: 0, requestCount: 0 } })
  assertAuditClean(store)
}

/** The store after h1 was settled with `amount`. */
const assertSettled = (store: InMemoryStore.InMemoryStore, amount: number) => {
  const snap = store.snapshot()
  assert.deepStrictEqual(snap.holds, { h1: "settled" })
  assert.deepStrictEqual(snap.wallets, { a: W - amount })
  assert.deepStrictEqual(snap.tokens, { t: { remain: R - amount, used: amount } })
  assert.deepStrictEqual(snap.counters, { a: { usedQuota: amount, requestCount: amount > 0 ? 1 : 0 } })
  assertAuditClean(store)
}

describe("withBilling (§5)", () => {
  it.effect("success settles with the cost and returns the value", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      let seen: BillingSettler.BillingSettler | undefined
      const value = yield* BillingSettler.withBilling(openH1(engine), (settler) => {
        seen = settler
        assert.deepStrictEqual(store.snapshot().wallets, { a: W - P })
        return Effect.succeed({ value: "ok", cost: COST })
      })
      assert.strictEqual(value, "ok")
      assert.strictEqual(seen?.holdId, "h1")
      assert.strictEqual(seen?.preConsumed, P)
      assertSettled(store, COST)
      assert.strictEqual((yield* engine.get("h1")).settlement?.actual, COST)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("a typed failure of use refunds and re-raises the failure", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(openH1(engine), () => Effect.fail(new UpstreamFailed({ status: 502 })))
      )
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = Cause.findError(exit.cause)
        assert.isTrue(
          error._tag === "Success" && error.success instanceof UpstreamFailed && error.success.status === 502
        )
      }
      assertRefunded(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("a defect (Effect.die) refunds and re-raises the defect", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(openH1(engine), () => Effect.die(new Error("panic in the relay")))
      )
      assert.isTrue(Exit.hasDies(exit))
      assertRefunded(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("an exception thrown inside Effect.sync refunds and surfaces as a defect", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(openH1(engine), () =>
          Effect.sync((): BillingSettler.Billed<string> => {
            throw new TypeError("cannot read properties of undefined (reading 'usage')")
          }))
      )
      assert.isTrue(Exit.hasDies(exit))
      if (Exit.isFailure(exit)) {
        const defect = Cause.findDefect(exit.cause)
        assert.isTrue(defect._tag === "Success" && defect.success instanceof TypeError)
      }
      assertRefunded(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("an exception thrown synchronously by use itself (before returning an effect) refunds", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(openH1(engine), (): Effect.Effect<BillingSettler.Billed<string>> => {
          throw new Error("thrown while building the request")
        })
      )
      assert.isTrue(Exit.hasDies(exit))
      assertRefunded(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  const interrupted = (
    store: InMemoryStore.InMemoryStore,
    options?: { readonly onInterrupt?: BillingSettler.InterruptionPolicy }
  ) =>
    Effect.gen(function*() {
      const engine = yield* Engine
      const started = yield* Deferred.make<void>()
      const fiber = yield* Effect.forkChild(
        BillingSettler.withBilling(
          openH1(engine),
          () =>
            Deferred.succeed(started, undefined).pipe(
              Effect.andThen(Effect.sleep("10 minutes")),
              Effect.as({ value: "late", cost: COST })
            ),
          options
        )
      )
      yield* Deferred.await(started)
      // `use` is now sleeping with the reservation made.
      assert.deepStrictEqual(store.snapshot().wallets, { a: W - P })
      assert.deepStrictEqual(store.snapshot().holds, { h1: "pending" })
      yield* Fiber.interrupt(fiber)
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.hasInterrupts(exit))
    })

  it.effect("interruption while use sleeps refunds by default", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      yield* interrupted(store)
      assertRefunded(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("interruption with refundOnInterrupt refunds", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      yield* interrupted(store, { onInterrupt: BillingSettler.refundOnInterrupt })
      assertRefunded(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("interruption under chargeOnInterrupt(5_000) settles with 5,000", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      yield* interrupted(store, { onInterrupt: BillingSettler.chargeOnInterrupt(5_000) })
      assertSettled(store, 5_000)
      const engine = yield* Engine
      assert.strictEqual((yield* engine.get("h1")).settlement?.actual, 5_000)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("interruption under chargeOnInterrupt(effect) settles with the amount read at interruption", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const streamed = yield* Ref.make(0)
      yield* Ref.set(streamed, 31_337)
      yield* interrupted(store, { onInterrupt: BillingSettler.chargeOnInterrupt(Ref.get(streamed)) })
      assertSettled(store, 31_337)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("interruption under a charge that cannot be settled (invalid amount) refunds instead", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      yield* interrupted(store, { onInterrupt: BillingSettler.chargeOnInterrupt(-1) })
      assertRefunded(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("a failure of use is refunded even under chargeOnInterrupt (only interruptions are charged)", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(openH1(engine), () => Effect.fail(new UpstreamFailed({ status: 500 })), {
          onInterrupt: BillingSettler.chargeOnInterrupt(5_000)
        })
      )
      assert.isTrue(Exit.hasFails(exit))
      assertRefunded(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("when the settle itself fails the reservation is refunded and the settle error returned", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      store.faults.failNext("wallet.settle")
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(openH1(engine), () => Effect.succeed({ value: "ok", cost: COST }))
      )
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = Cause.findError(exit.cause)
        assert.isTrue(error._tag === "Success" && error.success._tag === "StoreError")
      }
      assertRefunded(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("an invalid cost from use is a typed InvalidInput and the reservation is refunded", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* setup(store)
      const engine = yield* Engine
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(openH1(engine), () => Effect.succeed({ value: "ok", cost: 1.25 }))
      )
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = Cause.findError(exit.cause)
        assert.isTrue(error._tag === "Success" && error.success._tag === "InvalidInput")
      }
      assertRefunded(store)
    }).pipe(Effect.provide(store.billingLayer()))
  })

  it.effect("a failed open never runs use and changes nothing", () => {
    const store = InMemoryStore.make()
    return Effect.gen(function*() {
      yield* store.createAccount("a", 1_000)
      yield* store.createToken("t", "a", { remain: R })
      const engine = yield* Engine
      let ran = false
      const before = store.snapshot()
      const exit = yield* Effect.exit(
        BillingSettler.withBilling(openH1(engine), () => {
          ran = true
          return Effect.succeed({ value: "ok", cost: COST })
        })
      )
      assert.isFalse(ran)
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = Cause.findError(exit.cause)
        assert.isTrue(error._tag === "Success" && error.success._tag === "InsufficientFunds")
      }
      assert.deepStrictEqual(store.snapshot(), before)
    }).pipe(Effect.provide(store.billingLayer()))
  })
})
