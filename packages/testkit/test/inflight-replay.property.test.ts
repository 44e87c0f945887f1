/**
 * Property test (issue 8 #3, billing-semantics.md §2.7): replays of in-flight
 * request ids over the in-memory store.
 *
 * A run creates 2 accounts (wallet, limited token) and drives random commands:
 * - `start`: k (1–3) concurrent requests through `withBilling` with one id
 *   (fresh, or an id already used); the one that opens keeps running, held
 *   open by a gate the test controls;
 * - `retry`: k (1–3) requests of an existing id, concurrently or one after the
 *   other, whose upstream call fails (a 429) or succeeds, sometimes with other
 *   parameters;
 * - `finish`: a running request ends, with a cost or with a failure.
 * Every running request is finished at the end of the run.
 *
 * Invariants: a request whose id is pending never reaches its upstream call and
 * changes nothing (HoldInFlight; HoldResolved / IdempotencyConflict for resolved
 * ids or other parameters); exactly one of concurrent first requests opens;
 * every hold ends settled with its own request's cost or refunded on its own
 * request's failure, exactly once (no refund row on a settled hold, one refund
 * per part at most); money is conserved to the unit (wallet, token and
 * counters equal the settled costs) and the store's audit is clean.
 *
 * Replay a failure: FC_SEED=<seed> FC_PATH=<path> npx vitest run test/inflight-replay.property.test.ts
 */
import { BillingSession, BillingSettler } from "@relay-billing/core"
import { Cause, Data, Deferred, Effect, Exit, Fiber, Option } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { InMemoryStore } from "../src/index.js"

const NUM_RUNS = Number(process.env["FC_NUM_RUNS"] ?? 150)
const replay: { seed?: number; path?: string } = process.env["FC_SEED"] !== undefined
  ? {
    seed: Number(process.env["FC_SEED"]),
    ...(process.env["FC_PATH"] !== undefined ? { path: process.env["FC_PATH"] } : {})
  }
  : {}

const W0 = 1_000_000_000
const R0 = 500_000_000
const ACCOUNTS = ["a", "b"] as const

class UpstreamFailed extends Data.TaggedError("UpstreamFailed")<{ readonly status: number }> {}

type Cmd =
  | {
    readonly t: "start"
    readonly fresh: boolean
    readonly pick: number
    readonly k: number
    readonly account: number
    readonly estimate: number
  }
  | {
    readonly t: "retry"
    readonly pick: number
    readonly k: number
    readonly concurrent: boolean
    readonly upstream: "fail" | "succeed"
    readonly vary: boolean
    readonly cost: number
  }
  | { readonly t: "finish"; readonly pick: number; readonly cost: number | "fail" }

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("start" as const),
      fresh: fc.boolean(),
      pick: fc.nat(),
      k: fc.integer({ min: 1, max: 3 }),
      account: fc.nat({ max: ACCOUNTS.length - 1 }),
      estimate: fc.integer({ min: 0, max: 50_000 })
    })
  },
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant("retry" as const),
      pick: fc.nat(),
      k: fc.integer({ min: 1, max: 3 }),
      concurrent: fc.boolean(),
      upstream: fc.constantFrom("fail" as const, "succeed" as const),
      vary: fc.boolean(),
      cost: fc.integer({ min: 0, max: 80_000 })
    })
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("finish" as const),
      pick: fc.nat(),
      cost: fc.oneof(fc.constant("fail" as const), fc.integer({ min: 0, max: 80_000 }))
    })
  }
)

interface Request {
  readonly id: string
  readonly accountId: string
  readonly estimate: number
}

interface Running extends Request {
  readonly gate: Deferred.Deferred<number | "fail">
  readonly fiber: Fiber.Fiber<unknown, unknown>
}

/** What the model expects of each hold id. */
type Outcome = { readonly status: "pending" } | { readonly status: "settled"; readonly actual: number } | {
  readonly status: "refunded"
}

const runScenario = (cmds: ReadonlyArray<Cmd>) =>
  Effect.gen(function*() {
    const store = InMemoryStore.make()
    const problems: Array<string> = []
    const check = (ok: boolean, message: string) => {
      if (!ok) problems.push(message)
    }
    return yield* Effect.gen(function*() {
      for (const a of ACCOUNTS) {
        yield* store.createAccount(a, W0)
        yield* store.createToken(`${a}-t`, a, { remain: R0 })
      }
      const engine = yield* BillingSession.BillingSession
      const known: Array<Request> = []
      const outcomes = new Map<string, Outcome>()
      const running: Array<Running> = []
      let nextId = 0
      let upstreamCalls = 0

      const openOf = (r: Request) =>
        engine.open({
          holdId: r.id,
          accountId: r.accountId,
          tokenId: `${r.accountId}-t`,
          estimate: r.estimate,
          preference: "wallet_only"
        })

      /** Starts one gated request; resolves with its running handle, or the open's failure tag. */
      const start = (r: Request) =>
        Effect.gen(function*() {
          const opened = yield* Deferred.make<boolean>()
          const gate = yield* Deferred.make<number | "fail">()
          const fiber = yield* Effect.forkDetach(
            BillingSettler.withBilling(
              openOf(r).pipe(Effect.tapError(() => Deferred.succeed(opened, false))),
              () =>
                Deferred.succeed(opened, true).pipe(
                  Effect.andThen(Deferred.await(gate)),
                  Effect.flatMap((g) =>
                    g === "fail"
                      ? Effect.fail(new UpstreamFailed({ status: 502 }))
                      : Effect.succeed({ value: g, cost: g })
                  )
                )
            )
          )
          const didOpen = yield* Deferred.await(opened)
          if (didOpen) return { _tag: "Running" as const, running: { ...r, gate, fiber } }
          const exit = yield* Fiber.await(fiber)
          const error = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : Option.none()
          const tag = Option.isSome(error) ? String((error.value as { readonly _tag?: string })._tag) : "no typed error"
          return { _tag: "Refused" as const, tag }
        })

      const expectedRefusal = (id: string, sameParams: boolean) => {
        if (!sameParams) return "IdempotencyConflict"
        const o = outcomes.get(id)
        return o?.status === "pending" ? "HoldInFlight" : "HoldResolved"
      }

      for (const cmd of cmds) {
        const before = store.snapshot()
        const ledgerBefore = store.entries().length
        switch (cmd.t) {
          case "start": {
            const reuse = !cmd.fresh && known.length > 0 ? known[cmd.pick % known.length]! : undefined
            const r: Request = reuse ??
              { id: `h${nextId++}`, accountId: ACCOUNTS[cmd.account]!, estimate: cmd.estimate }
            const results = yield* Effect.all(Array.from({ length: cmd.k }, () => start(r)), {
              concurrency: "unbounded"
            })
            const opened = results.flatMap((x) => x._tag === "Running" ? [x.running] : [])
            const refused = results.flatMap((x) => x._tag === "Refused" ? [x.tag] : [])
            if (reuse) {
              check(opened.length === 0, `start of used id ${r.id}: ${opened.length} opened`)
              const expected = expectedRefusal(r.id, true)
              check(
                refused.every((t) => t === expected),
                `start of used id ${r.id}: refused ${refused}, expected ${expected}`
              )
              check(
                JSON.stringify(store.snapshot()) === JSON.stringify(before),
                `start of used id ${r.id} changed the store`
              )
            } else {
              check(opened.length === 1, `${cmd.k} concurrent first requests of ${r.id}: ${opened.length} opened`)
              check(
                refused.every((t) => t === "HoldInFlight"),
                `concurrent first requests of ${r.id}: refused ${refused}`
              )
              known.push(r)
              outcomes.set(r.id, { status: "pending" })
            }
            running.push(...opened)
            break
          }
          case "retry": {
            if (known.length === 0) break
            const r = known[cmd.pick % known.length]!
            const sent: Request = cmd.vary ? { ...r, estimate: r.estimate + 1 } : r
            const statusBefore = before.holds[r.id]
            const one = BillingSettler.withBilling(openOf(sent), () =>
              Effect.sync(() => upstreamCalls++).pipe(
                Effect.andThen(
                  cmd.upstream === "fail"
                    ? Effect.fail(new UpstreamFailed({ status: 429 }))
                    : Effect.succeed({ value: 0, cost: cmd.cost })
                )
              )).pipe(Effect.flip, Effect.map((e) => e._tag))
            const tags = yield* Effect.all(Array.from({ length: cmd.k }, () => one), {
              concurrency: cmd.concurrent ? "unbounded" : 1
            })
            const expected = expectedRefusal(r.id, !cmd.vary)
            check(
              tags.every((t) => t === expected),
              `retry of ${r.id} (${statusBefore}): ${tags}, expected ${expected}`
            )
            check(JSON.stringify(store.snapshot()) === JSON.stringify(before), `retry of ${r.id} changed the store`)
            check(store.entries().length === ledgerBefore, `retry of ${r.id} wrote ledger rows`)
            break
          }
          case "finish": {
            if (running.length === 0) break
            const [r] = running.splice(cmd.pick % running.length, 1)
            yield* Deferred.succeed(r!.gate, cmd.cost)
            const exit = yield* Fiber.await(r!.fiber)
            if (cmd.cost === "fail") {
              check(Exit.isFailure(exit), `failed request ${r!.id} succeeded`)
              outcomes.set(r!.id, { status: "refunded" })
            } else {
              check(
                Exit.isSuccess(exit),
                `request ${r!.id} with cost ${cmd.cost} failed: ${Exit.isFailure(exit) ? String(exit.cause) : ""}`
              )
              outcomes.set(r!.id, { status: "settled", actual: cmd.cost })
            }
            break
          }
        }
        check(upstreamCalls === 0, `a refused request reached its upstream call (${upstreamCalls})`)
        const audit = store.audit().problems
        check(audit.length === 0, `audit after ${cmd.t}: ${audit.join("; ")}`)
        if (problems.length > 0) return problems
      }
      // Every request still running ends with its cost.
      for (const r of running.splice(0)) {
        yield* Deferred.succeed(r.gate, r.estimate)
        const exit = yield* Fiber.await(r.fiber)
        check(Exit.isSuccess(exit), `final request ${r.id} failed`)
        outcomes.set(r.id, { status: "settled", actual: r.estimate })
      }

      // Every hold ended exactly as its own request did.
      const snap = store.snapshot()
      for (const [id, o] of outcomes) {
        check(snap.holds[id] === o.status, `hold ${id} is ${snap.holds[id]}, its request ended ${o.status}`)
        if (o.status === "settled") {
          const hold = yield* engine.get(id)
          check(
            hold.settlement?.actual === o.actual,
            `hold ${id} settled ${hold.settlement?.actual}, its request cost ${o.actual}`
          )
        }
      }
      // Exactly once: no refund row on a settled hold, at most one refund row per part.
      const entries = store.entries()
      for (const [id, o] of outcomes) {
        const refunds = entries.filter((e) => e.holdId === id && e.kind === "refund")
        if (o.status === "settled") check(refunds.length === 0, `settled hold ${id} has refund rows`)
        const perSource = new Map<string, number>()
        for (const e of refunds) perSource.set(e.sourceId, (perSource.get(e.sourceId) ?? 0) + 1)
        check([...perSource.values()].every((n) => n === 1), `hold ${id} refunded more than once`)
      }
      // Conservation to the unit.
      for (const a of ACCOUNTS) {
        let charged = 0
        let count = 0
        for (const r of known) {
          const o = outcomes.get(r.id)
          if (r.accountId === a && o?.status === "settled") {
            charged += o.actual
            if (o.actual > 0) count++
          }
        }
        check(snap.wallets[a] === W0 - charged, `wallet ${a}: ${snap.wallets[a]}, expected ${W0 - charged}`)
        check(
          snap.tokens[`${a}-t`]?.remain === R0 - charged,
          `token ${a}-t remain ${snap.tokens[`${a}-t`]?.remain}, expected ${R0 - charged}`
        )
        check(
          snap.tokens[`${a}-t`]?.used === charged,
          `token ${a}-t used ${snap.tokens[`${a}-t`]?.used}, expected ${charged}`
        )
        check(
          snap.counters[a]?.usedQuota === charged,
          `usedQuota ${a}: ${snap.counters[a]?.usedQuota}, expected ${charged}`
        )
        check(
          snap.counters[a]?.requestCount === count,
          `requestCount ${a}: ${snap.counters[a]?.requestCount}, expected ${count}`
        )
      }
      check(Object.values(snap.holds).every((s) => s !== "pending"), "a hold is still pending at the end")
      const audit = store.audit().problems
      check(audit.length === 0, `final audit: ${audit.join("; ")}`)
      return problems
    }).pipe(Effect.provide(store.billingLayer()))
  })

describe("issue 8 #3: replays of in-flight ids (property)", () => {
  it(
    "issue 8 #3: re-opening an in-flight id (concurrently or not) never refunds or bills the running request; every hold ends once, conserved to the unit",
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(cmdArb, { minLength: 1, maxLength: 25 }), async (cmds) => {
          const problems = await Effect.runPromise(runScenario(cmds))
          expect(problems).toEqual([])
        }),
        { numRuns: NUM_RUNS, ...replay }
      )
    },
    120_000
  )
})
