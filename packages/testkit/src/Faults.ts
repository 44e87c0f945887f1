/**
 * Fault injection for the in-memory store: make the Nth call of an operation
 * fail, fail every call, or fail at random with a seeded generator, so tests can
 * prove that no failure path loses or double-counts quota.
 *
 * Operation names are `<source>.<op>` (`wallet.reserve`, `token.settle`,
 * `subscription.refund`, …), `journal.<op>` (`insert`, `get`, `update`,
 * `expired`, `putIntent`, `insertIntent`, `getIntent`, `finishIntent`, `dueIntents`) and `counters.add`.
 *
 * @since 0.1.0
 */
import { BillingError } from "@relay-billing/core"
import { Effect } from "effect"

/**
 * A seeded pseudo-random generator (mulberry32): the same seed gives the same
 * sequence, so a failing property run can be replayed.
 *
 * @since 0.1.0
 * @category constructors
 */
export const seededRandom = (seed: number): () => number => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * A fault plan shared by the operations of one store.
 *
 * @since 0.1.0
 * @category models
 */
export class Faults {
  private readonly counts = new Map<string, number>()
  private readonly nth = new Map<string, Set<number>>()
  private readonly always = new Set<string>()
  private randomPlan:
    | { readonly next: () => number; readonly rate: number; readonly ops?: ReadonlySet<string> }
    | undefined
  /** Every fault injected so far, in order. */
  readonly injected: Array<string> = []

  /** Fail the `n`-th call (1-based, counted from now) of `op`. */
  failNth(op: string, n: number): this {
    const at = (this.counts.get(op) ?? 0) + n
    const set = this.nth.get(op) ?? new Set<number>()
    set.add(at)
    this.nth.set(op, set)
    return this
  }

  /** Fail the next call of `op`. */
  failNext(op: string): this {
    return this.failNth(op, 1)
  }

  /** Fail every call of `op` until cleared. */
  failAlways(op: string): this {
    this.always.add(op)
    return this
  }

  /** Fail calls at random with probability `rate`, optionally only for `ops`. */
  random(seed: number, rate: number, ops?: Iterable<string>): this {
    this.randomPlan = { next: seededRandom(seed), rate, ...(ops ? { ops: new Set(ops) } : {}) }
    return this
  }

  /** Remove every planned fault (call counts are kept). */
  clear(): this {
    this.nth.clear()
    this.always.clear()
    this.randomPlan = undefined
    return this
  }

  /** How many times `op` was called. */
  calls(op: string): number {
    return this.counts.get(op) ?? 0
  }

  /** Counts a call of `op` and fails it with a `StoreError` when a fault is planned. */
  check(op: string): Effect.Effect<void, BillingError.StoreError> {
    return Effect.suspend(() => {
      const n = (this.counts.get(op) ?? 0) + 1
      this.counts.set(op, n)
      const planned = this.nth.get(op)
      let fail = this.always.has(op) || (planned?.has(n) ?? false)
      if (planned?.has(n)) planned.delete(n)
      const plan = this.randomPlan
      if (!fail && plan && (!plan.ops || plan.ops.has(op))) fail = plan.next() < plan.rate
      if (!fail) return Effect.void
      this.injected.push(`${op}#${n}`)
      return Effect.fail(new BillingError.StoreError({ operation: op, detail: `injected fault (call ${n})` }))
    })
  }
}
