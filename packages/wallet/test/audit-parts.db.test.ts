/**
 * Issue 8 #10 (spec §6, "the audit also proves") on every database: the knex
 * audit catches (i) a refund ledger row, with the balance moved to match, on a
 * settled hold; (ii) a part amount changed from 30,000 to 1 in the stored part
 * record or in the hold's own copy (the refund then moved 1 while
 * `RefundResult` said 30,000). The database is tampered with directly.
 */
import { assert, describe, layer } from "@effect/vitest"
import { BillingSession } from "@relay-billing/core"
import { Audit, KnexClient } from "@relay-billing/knex"
import { Effect } from "effect"
import { Wallet, WalletAdmin } from "../src/index.js"
import { auditClean, targets, walletBilling } from "./support.js"

const P = 30_000

const problems = Effect.map(Audit.run(Wallet.auditBalances), (r) => r.problems)

const setup = (id: string) =>
  Effect.gen(function*() {
    const admin = yield* WalletAdmin.WalletAdmin
    yield* admin.createAccount({ id, balance: 1_000_000 })
    yield* admin.createToken({ id: `${id}-t`, accountId: id, remain: 1_000_000 })
  })

for (const target of targets) {
  describe(`audit of parts on ${target.name}`, () => {
    layer(walletBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #10 (i): a refund row (and balance) on a settled hold is reported, naming the hold", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const billing = yield* BillingSession.BillingSession
          yield* setup("i")
          const s = yield* billing.open({
            holdId: "i-h",
            accountId: "i",
            tokenId: "i-t",
            estimate: P,
            preference: "wallet_only"
          })
          yield* s.settle(12_000)
          yield* auditClean
          // Tamper: refund the reservation of the settled hold, balance and ledger row both.
          yield* client.query(
            "tamper.balance",
            (db) => db(client.table("accounts")).where({ id: "i" }).update({ balance: db.raw("balance + ?", [P]) })
          )
          yield* client.query("tamper.ledger", (db) =>
            db(client.table("ledger")).insert({
              at: 0,
              kind: "refund",
              source_id: "wallet",
              subject_id: "i",
              account_id: "i",
              hold_id: "i-h",
              amount: P,
              balance_after: 1_000_000 - 12_000 + P
            }))
          const found = yield* problems
          assert.isTrue(found.some((p) => p.includes("hold i-h is settled") && p.includes("refund")), found.join("; "))
        }))
    })
    // A fresh database: the tampering above must not leak into the next test.
    layer(walletBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #10 (ii): a part amount changed from 30,000 to 1 is reported before and after the refund, naming the hold and the part", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const billing = yield* BillingSession.BillingSession
          const admin = yield* WalletAdmin.WalletAdmin
          yield* setup("ii")
          const s = yield* billing.open({
            holdId: "ii-h",
            accountId: "ii",
            tokenId: "ii-t",
            estimate: P,
            preference: "wallet_only"
          })
          yield* auditClean
          // v2: the hold's part is the only record of the reservation (the wallet keeps none):
          // tamper with it, and the refund gives back what it says.
          const row = yield* client.query(
            "read.hold",
            (db) => db(client.table("holds")).where({ id: "ii-h" }).first("parts")
          )
          const tampered = (JSON.parse(String(row?.parts)) as Array<{ sourceId: string; amount: number }>).map((p) =>
            p.sourceId === "wallet" ? { ...p, amount: 1 } : p
          )
          yield* client.query(
            "tamper.part",
            (db) => db(client.table("holds")).where({ id: "ii-h" }).update({ parts: JSON.stringify(tampered) })
          )
          const before = yield* problems
          assert.isTrue(
            before.some((p) => p.includes("hold ii-h part wallet") && p.includes("30000")),
            before.join("; ")
          )
          yield* s.refund
          // The refund moved 1 (what the tamper made possible), and the audit still says so.
          assert.strictEqual((yield* admin.account("ii")).balance, 1_000_000 - P + 1)
          const after = yield* problems
          assert.isTrue(after.some((p) => p.includes("hold ii-h part wallet") && p.includes("30000")), after.join("; "))
        }))
    })
    // A fresh database: the tampering above must not leak into the next test.
    layer(walletBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #10 (ii): the hold's own copy of a part amount changed to 1 is reported", () =>
        Effect.gen(function*() {
          const client = yield* KnexClient.KnexClient
          const billing = yield* BillingSession.BillingSession
          yield* setup("iii")
          yield* billing.open({
            holdId: "iii-h",
            accountId: "iii",
            tokenId: "iii-t",
            estimate: P,
            preference: "wallet_only"
          })
          const row = yield* client.query(
            "read.hold",
            (db) => db(client.table("holds")).where({ id: "iii-h" }).first("parts")
          )
          const parts = (JSON.parse(String(row?.parts)) as Array<{ sourceId: string; amount: number }>).map((p) =>
            p.sourceId === "wallet" ? { ...p, amount: 1 } : p
          )
          yield* client.query(
            "tamper.hold",
            (db) => db(client.table("holds")).where({ id: "iii-h" }).update({ parts: JSON.stringify(parts) })
          )
          const found = yield* problems
          assert.isTrue(
            found.some((p) => p.includes("hold iii-h part wallet") && p.includes("the hold records 1")),
            found.join("; ")
          )
        }))
    })
    // A fresh database: the tampering above must not leak into the next test.
    layer(walletBilling(target), { timeout: 60_000 })((it) => {
      it.effect("issue 8 #10: a clean history (settle above and below, refund, a failed open then the same id) passes the part checks", () =>
        Effect.gen(function*() {
          const billing = yield* BillingSession.BillingSession
          const admin = yield* WalletAdmin.WalletAdmin
          yield* setup("ok")
          yield* admin.createAccount({ id: "poor", balance: 10_000 })
          yield* admin.createToken({ id: "poor-t", accountId: "poor", remain: 1_000_000 })
          yield* admin.createToken({ id: "ok-u", accountId: "ok", unlimited: true })
          const a = yield* billing.open({
            holdId: "ok-1",
            accountId: "ok",
            tokenId: "ok-t",
            estimate: P,
            preference: "wallet_only"
          })
          yield* a.settle(45_000)
          const b = yield* billing.open({
            holdId: "ok-2",
            accountId: "ok",
            tokenId: "ok-t",
            estimate: P,
            preference: "wallet_only"
          })
          yield* b.settle(5_000)
          const c = yield* billing.open({
            holdId: "ok-3",
            accountId: "ok",
            tokenId: "ok-u",
            estimate: P,
            preference: "wallet_only"
          })
          yield* c.refund
          // The token is reserved, the wallet refuses, the token is released; then the same id succeeds.
          yield* Effect.exit(
            billing.open({
              holdId: "ok-4",
              accountId: "poor",
              tokenId: "poor-t",
              estimate: P,
              preference: "wallet_only"
            })
          )
          yield* admin.topUp({ accountId: "poor", amount: 50_000, key: "ok-4-topup" })
          const d = yield* billing.open({
            holdId: "ok-4",
            accountId: "poor",
            tokenId: "poor-t",
            estimate: P,
            preference: "wallet_only"
          })
          yield* d.settle(P)
          yield* auditClean
        }))
    })
  })
}
