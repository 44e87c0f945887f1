/**
 * The workload both sides run: which account a session bills, its estimate P
 * and its actual cost, drawn from the same seeded distribution for the SDK and
 * for the raw loop, and the totals each side must end up with.
 */

/** An in-process side of the comparison: the SDK, the knex-built raw loop, the driver-level loop. */
export type Side = "sdk" | "raw" | "driver"

/** Accounts a row bills: `random` = uniform over the seeded accounts, `hot` = one account. */
export type AccountMode = "random" | "hot"

/** One session: open a hold of `estimate` on `accountId`/`tokenId`, settle with `actual`. */
export interface SessionInput {
  readonly holdId: string
  readonly accountId: string
  readonly tokenId: string
  readonly estimate: number
  readonly actual: number
}

/** Opening balance of every account and opening budget of every token. */
export const OPENING = 1_000_000_000_000

export const accountId = (i: number) => `acct-${String(i).padStart(5, "0")}`
export const tokenIdOf = (account: string) => `tok-${account.slice("acct-".length)}`
export const HOT_ACCOUNT = "acct-hot"

/** Every account the bench seeds (the random pool plus the hot account). */
export const allAccounts = (
  n: number
): Array<string> => [...Array.from({ length: n }, (_, i) => accountId(i)), HOT_ACCOUNT]

/** mulberry32: a tiny deterministic PRNG, so both sides draw from the same distribution. */
export const prng = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * A generator of session inputs. The estimate P is uniform in [1,000, 10,000);
 * the actual cost is uniform in [1, P − 1], so every settlement has a non-zero
 * delta (the delta UPDATE and its ledger row are always written on both sides).
 */
export const inputs = (side: Side, label: string, mode: AccountMode, accounts: number, seed: number) => {
  const random = prng(seed)
  let seq = 0
  return (): SessionInput => {
    const account = mode === "hot" ? HOT_ACCOUNT : accountId(Math.floor(random() * accounts))
    const estimate = 1_000 + Math.floor(random() * 9_000)
    const actual = 1 + Math.floor(random() * (estimate - 1))
    return { holdId: `${side}-${label}-${++seq}`, accountId: account, tokenId: tokenIdOf(account), estimate, actual }
  }
}

/** What one side's sessions must have done to the database, per account. */
export class Expected {
  /** accountId → total actual charged by settled sessions, and their count. */
  readonly charged = new Map<string, { amount: number; count: number }>()
  /** accountId → amount still reserved by holds that opened but did not settle. */
  readonly pending = new Map<string, number>()
  settled = 0
  pendingHolds = 0
  /** Sessions that failed with an error (open rolled back, or settle failed). */
  failed = 0
  /** Sessions still running when a slice hit its hard cap (interrupted; see runner.ts). */
  abandoned = 0
  /** Error messages (hold ids elided) → count. */
  readonly errors = new Map<string, number>()

  settle(input: SessionInput) {
    const c = this.charged.get(input.accountId) ?? { amount: 0, count: 0 }
    c.amount += input.actual
    c.count++
    this.charged.set(input.accountId, c)
    this.settled++
  }

  /** A hold that stays open (reservation kept): its open committed, its settle did not. */
  keepOpen(input: SessionInput) {
    this.pending.set(input.accountId, (this.pending.get(input.accountId) ?? 0) + input.estimate)
    this.pendingHolds++
  }

  /** A session failed; `opened` when its hold is known to be open (reservation kept). */
  fail(input: SessionInput, error: unknown, opened: boolean) {
    this.failed++
    if (opened) this.keepOpen(input)
    const message = (error instanceof Error ? error.message : String(error))
      .replace(/(hold |holds? id |partial reservation of hold )\S+/g, "$1<id>")
      .replace(/\$\d+/g, "?")
      .slice(0, 300)
    this.errors.set(message, (this.errors.get(message) ?? 0) + 1)
  }

  snapshot() {
    return { failed: this.failed, abandoned: this.abandoned, errors: new Map(this.errors) }
  }

  /** Failures and their messages since `before`. */
  since(before: ReturnType<Expected["snapshot"]>) {
    const errors: Record<string, number> = {}
    for (const [m, n] of this.errors) {
      const d = n - (before.errors.get(m) ?? 0)
      if (d > 0) errors[m] = d
    }
    return { failed: this.failed - before.failed, abandoned: this.abandoned - before.abandoned, errors }
  }
}
