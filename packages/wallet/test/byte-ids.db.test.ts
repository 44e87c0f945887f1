/**
 * Issue 8 #2: ids compare byte for byte on every database (§2.7). On MySQL/MariaDB
 * the default collations fold case and accents and every PAD SPACE collation
 * ignores trailing spaces, so `chatcmpl-AbC123` / `chatcmpl-abc123`, `req-77` /
 * `req-77 ` and `req-é` / `req-e` were one hold: the second open replayed the
 * first and debited nothing. Also: account and token ids that differ only by
 * case, and a database created by the old migrations, upgraded in place.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession, Ledger } from "@relay-billing/core"
import { KnexClient, Migrations, TestDatabase } from "@relay-billing/knex"
import { Effect, Layer } from "effect"
import { Wallet, WalletAdmin } from "../src/index.js"
import { auditClean, targets, walletBilling } from "./support.js"

const P = 30_000

/** Pairs of ids that differ only in case, a trailing space, or an accent. */
const pairs: ReadonlyArray<readonly [string, string]> = [
  ["chatcmpl-AbC123", "chatcmpl-abc123"],
  ["req-77", "req-77 "],
  ["req-é", "req-e"]
]

const balance = (accountId: string) =>
  Effect.map(Effect.flatMap(WalletAdmin.WalletAdmin, (a) => a.account(accountId)), (a) => a.balance)

const holdIdsInTable = (table: string, column: string) =>
  Effect.gen(function*() {
    const client = yield* KnexClient.KnexClient
    const rows = yield* client.query("test.ids", (db) => db(client.table(table)).select({ id: column }))
    return (rows as Array<{ id: string }>).map((r) => String(r.id)).sort()
  })

for (const target of targets) {
  describe(`byte-exact ids on ${target.name}`, () => {
    layer(walletBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #2: two opens with ids differing only by case, a trailing space or an accent both debit and are distinct holds", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const admin = yield* WalletAdmin.WalletAdmin
          const W = 1_000_000
          yield* admin.createAccount({ id: "ids", balance: W })
          yield* admin.createToken({ id: "ids-t", accountId: "ids", remain: W })
          let spent = 0
          for (const [a, b] of pairs) {
            const first = yield* billing.open({
              holdId: a,
              accountId: "ids",
              tokenId: "ids-t",
              estimate: P,
              preference: "wallet_only"
            })
            const second = yield* billing.open({
              holdId: b,
              accountId: "ids",
              tokenId: "ids-t",
              estimate: P,
              preference: "wallet_only"
            })
            assert.strictEqual(first.hold.id, a)
            assert.strictEqual(second.hold.id, b, `${JSON.stringify(b)} must not replay ${JSON.stringify(a)}`)
            spent += 2 * P
            assert.strictEqual(
              yield* balance("ids"),
              W - spent,
              `both ${JSON.stringify(a)} and ${JSON.stringify(b)} debit`
            )
            // Settle one and refund the other: each moves its own money only.
            yield* first.settle(12_000)
            yield* second.refund
            spent += 12_000 - 2 * P
            assert.strictEqual(yield* balance("ids"), W - spent)
            assert.strictEqual((yield* billing.get(a)).status, "settled")
            assert.strictEqual((yield* billing.get(b)).status, "refunded")
            const ledger = yield* Ledger.Ledger
            assert.deepStrictEqual(
              (yield* ledger.entries({ holdId: b })).map((e) => `${e.sourceId} ${e.kind} ${e.amount} ${e.holdId}`),
              [
                `token reserve ${-P} ${b}`,
                `wallet reserve ${-P} ${b}`,
                `token refund ${P} ${b}`,
                `wallet refund ${P} ${b}`
              ]
            )
          }
          const all = pairs.flat()
          assert.deepStrictEqual(yield* holdIdsInTable("holds", "id"), [...all].sort())
          yield* auditClean
        }))

      it.effect("issue 8 #2: wallet account and token ids that differ only by case are distinct", () =>
        Effect.gen(function*() {
          const admin = yield* WalletAdmin.WalletAdmin
          const billing = yield* BillingSession.BillingSession
          yield* admin.createAccount({ id: "Case-Acct", balance: 100_000 })
          yield* admin.createAccount({ id: "case-acct", balance: 200_000 })
          yield* admin.createToken({ id: "Case-Tok", accountId: "Case-Acct", remain: 50_000 })
          yield* admin.createToken({ id: "case-tok", accountId: "case-acct", remain: 70_000 })
          // Top-up keys too: two keys differing by case are two top-ups.
          yield* admin.topUp({ accountId: "Case-Acct", amount: 1_000, key: "Topup-1" })
          const second = yield* admin.topUp({ accountId: "Case-Acct", amount: 1_000, key: "topup-1" })
          assert.isTrue(second.applied)
          const s = yield* billing.open({
            holdId: "case-h",
            accountId: "case-acct",
            tokenId: "case-tok",
            estimate: P,
            preference: "wallet_only"
          })
          yield* s.settle(P)
          assert.deepStrictEqual(
            {
              A: (yield* admin.account("Case-Acct")).balance,
              a: (yield* admin.account("case-acct")).balance,
              T: (yield* admin.token("Case-Tok")).remain,
              t: (yield* admin.token("case-tok")).remain,
              usedA: (yield* admin.account("Case-Acct")).usedQuota,
              useda: (yield* admin.account("case-acct")).usedQuota
            },
            { A: 102_000, a: 200_000 - P, T: 50_000, t: 70_000 - P, usedA: 0, useda: P }
          )
          assert.strictEqual((yield* admin.token("Case-Tok")).accountId, "Case-Acct")
          assert.strictEqual((yield* admin.token("case-tok")).accountId, "case-acct")
          yield* auditClean
        }))
    })

    // A database created by the 0001 migrations (as shipped before the fix), with rows in
    // it, is upgraded in place; afterwards its ids compare byte for byte.
    const oldClient = TestDatabase.layer(target)
    layer(oldClient, { timeout: 60_000 })((it) => {
      it.effect("issue 8 #2: a database created with the old migrations is upgraded and then tells ids apart", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const [knexSet, walletSet] = Wallet.allMigrations
          const firstOf = (set: Migrations.MigrationSet, n: number): Migrations.MigrationSet => ({
            name: set.name,
            migrations: set.migrations.slice(0, n)
          })
          // Old schema: knex 0001, wallet 0001 + 0002.
          yield* Migrations.run([firstOf(knexSet!, 1), firstOf(walletSet!, 2)])
          yield* client.query(
            "old.account",
            (db) => db(client.table("accounts")).insert({ id: "Old-Acct", balance: 500_000, created_at: 1 })
          )
          yield* client.query("old.ledger", (db) =>
            db(client.table("ledger")).insert({
              at: 1,
              kind: "topup",
              source_id: "wallet",
              subject_id: "Old-Acct",
              account_id: "Old-Acct",
              amount: 500_000,
              balance_after: 500_000,
              idempotency_key: "Key-1"
            }))
          yield* client.query(
            "old.token",
            (db) =>
              db(client.table("tokens")).insert({
                id: "Old-Tok",
                account_id: "Old-Acct",
                remain: 0,
                used: 0,
                unlimited: true,
                created_at: 1
              })
          )
          const applied = yield* Migrations.run(Wallet.allMigrations)
          // Only the migrations added after 0001 run (other sets' later migrations may run too).
          assert.includeMembers([...applied["knex"]!], ["0002_binary_ids", "0004_unbounded_part_refs"])
          assert.notInclude([...applied["knex"]!], "0001_holds_parts_ledger")
          assert.deepStrictEqual(applied["wallet"], ["0003_binary_ids"])
          // The rows survived, the foreign key still holds, and new ids differing by case are new rows.
          yield* Effect.gen(function*() {
            const billing = yield* BillingSession.BillingSession
            const admin = yield* WalletAdmin.WalletAdmin
            yield* admin.createAccount({ id: "old-acct", balance: 100_000 })
            yield* admin.createToken({ id: "old-tok", accountId: "old-acct", remain: 100_000 })
            assert.isTrue((yield* admin.topUp({ accountId: "old-acct", amount: 5_000, key: "key-1" })).applied)
            const a = yield* billing.open({
              holdId: "Upgrade-1",
              accountId: "Old-Acct",
              tokenId: "Old-Tok",
              estimate: P,
              preference: "wallet_only"
            })
            const b = yield* billing.open({
              holdId: "upgrade-1",
              accountId: "old-acct",
              tokenId: "old-tok",
              estimate: P,
              preference: "wallet_only"
            })
            const c = yield* billing.open({
              holdId: "upgrade-1 ",
              accountId: "old-acct",
              tokenId: "old-tok",
              estimate: P,
              preference: "wallet_only"
            })
            assert.deepStrictEqual([a.hold.id, b.hold.id, c.hold.id], ["Upgrade-1", "upgrade-1", "upgrade-1 "])
            assert.deepStrictEqual(
              { Old: (yield* admin.account("Old-Acct")).balance, old: (yield* admin.account("old-acct")).balance },
              { Old: 500_000 - P, old: 105_000 - 2 * P }
            )
            if (target.name !== "sqlite") {
              const fk = yield* Effect.exit(
                client.query("fk", (db) =>
                  db(client.table("tokens")).insert({
                    id: "orphan",
                    account_id: "OLD-ACCT",
                    remain: 0,
                    used: 0,
                    unlimited: false,
                    created_at: 1
                  }))
              )
              assert.strictEqual(fk._tag, "Failure", "the foreign key is still enforced (and byte-exact)")
            }
            yield* auditClean
          }).pipe(Effect.provide(Wallet.layer().pipe(Layer.provideMerge(Layer.succeed(KnexClient.KnexClient, client)))))
        }))
    })
  })
}
