/**
 * pgbench baselines (PostgreSQL, when `pgbench` is on PATH): the same session
 * as the SDK's, driven by PostgreSQL's own load generator with 16 clients
 * (`-c N -j 2 -T s -n -M prepared`) against the bench's isolated schema
 * (`PGOPTIONS=-c search_path=<schema>`), in two forms, each in its own table
 * set created by the SDK's migrations:
 *
 * - `pgbench` (prefix `pgbs_`): the same statements (statements.ts), two
 *   transactions per session, RETURNING values carried between statements
 *   with `\gset` (a guard that matches no row aborts the client, as the SDK's
 *   session fails).
 * - `pgbench fn` (prefix `pgbf_`): one PL/pgSQL function per phase,
 *   `bench_open(hold, account, token, estimate)` and
 *   `bench_settle(hold, account, token, estimate, actual)`, installed by the
 *   bench in its schema, doing the same writes in the function body; one
 *   `SELECT` (one transaction) per phase.
 *
 * Random values as in workload.ts: account uniform over the pool (or the hot
 * account), estimate P uniform in [1,000, 10,000), actual in [1, P − 1]. Hold
 * ids are unique per session: `<prefix>r<run>-<client_id>-<n>`, n a per-client
 * counter (`\set n :n + 1`, `-D n=0`), run a per-invocation number.
 * A session = one script execution (open + settle); sessions/s = pgbench's tps.
 */
import type { Knex } from "knex"
import { execFile, execFileSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import path from "node:path"
import { HOLD_TTL_MILLIS } from "./statements.js"
import type { AccountMode } from "./workload.js"

/** The two pgbench forms. */
export type PgbenchKind = "pgbench" | "pgbenchFn"

export const PGBENCH_PREFIX: Record<PgbenchKind, string> = { pgbench: "pgbs_", pgbenchFn: "pgbf_" }

/** Whether pgbench can be run here. */
export const pgbenchAvailable = (): string | undefined => {
  try {
    return execFileSync("pgbench", ["--version"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim()
  } catch {
    return undefined
  }
}

const MAX = Number.MAX_SAFE_INTEGER
const NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"

const accountExpr = (mode: AccountMode) => (mode === "hot" ? "'acct-hot'" : "('acct-' || lpad(:aid::text, 5, '0'))")
const tokenExpr = (mode: AccountMode) => (mode === "hot" ? "'tok-hot'" : "('tok-' || lpad(:aid::text, 5, '0'))")

const partsExpr = (account: string, token: string, est: string) =>
  `'[{"kind":"funding","sourceId":"wallet","subjectId":"' || ${account} || '","amount":' || ${est} || ` +
  `'},{"kind":"budget","sourceId":"token","subjectId":"' || ${token} || '","amount":' || ${est} || '}]'`

const settlementExpr = (
  hold: string,
  account: string,
  token: string,
  est: string,
  act: string,
  wallet: string,
  remain: string,
  now: string
) =>
  `'{"holdId":"' || ${hold} || '","actual":' || ${act} || ',"reserved":' || ${est} || ',"delta":' || (${act} - ${est}) || ` +
  `',"parts":[{"kind":"funding","sourceId":"wallet","subjectId":"' || ${account} || '","reserved":' || ${est} || ` +
  `',"charged":' || ${act} || ',"unbilled":0,"balanceAfter":' || ${wallet} || '},' || ` +
  `'{"kind":"budget","sourceId":"token","subjectId":"' || ${token} || '","reserved":' || ${est} || ` +
  `',"charged":' || ${act} || ',"unbilled":0,"balanceAfter":' || ${remain} || '}],"settledAt":' || ${now} || '}'`

const ledgerValues = (
  at: string,
  kind: string,
  source: string,
  subject: string,
  account: string,
  hold: string,
  amount: string,
  after: string
) => `(${at}, '${kind}', '${source}', ${subject}, ${account}, ${hold}, ${amount}, ${after}, null, null, null)`

const LEDGER_COLS =
  "at, kind, source_id, subject_id, account_id, hold_id, amount, balance_after, unbilled, note, idempotency_key"
const HOLD_COLS =
  "id, account_id, token_id, estimate, reserved, preference, trusted, status, parts, created_at, expires_at, resolved_at, settlement, metadata"

const header = (mode: AccountMode, accounts: number) =>
  [
    "\\set n :n + 1",
    ...(mode === "random" ? [`\\set aid random(0, ${accounts - 1})`] : []),
    "\\set est random(1000, 9999)",
    "\\set act random(1, :est - 1)",
    "\\set c :est - :act"
  ].join("\n")

/** The "same statements" script: two transactions, the SDK's statements and guards. */
export const statementsScript = (mode: AccountMode, accounts: number): string => {
  const p = PGBENCH_PREFIX.pgbench
  const A = accountExpr(mode)
  const T = tokenExpr(mode)
  const H = `('${p}r' || :run::text || '-' || :client_id::text || '-' || :n::text)`
  return [
    header(mode, accounts),
    "BEGIN;",
    `update ${p}tokens set remain = remain - :est::bigint, used = used + :est::bigint where id = ${T} and account_id = ${A} ` +
    `and not unlimited and used <= ${MAX} - :est::bigint and remain >= :est::bigint returning remain, ${NOW_MS} as created \\gset`,
    `update ${p}accounts set balance = balance - :est::bigint where id = ${A} and balance >= :est::bigint and balance > 0 returning balance \\gset`,
    `insert into ${p}holds (${HOLD_COLS}) values (${H}, ${A}, ${T}, :est::bigint, :est::bigint, 'wallet_only', false, 'pending', ` +
    `${
      partsExpr(A, T, ":est::bigint")
    }, :created::bigint, :created::bigint + ${HOLD_TTL_MILLIS}, null, null, null) on conflict (id) do nothing;`,
    `insert into ${p}ledger (${LEDGER_COLS}) values ` +
    `${ledgerValues(NOW_MS, "reserve", "token", T, A, H, "-:est::bigint", ":remain::bigint")}, ` +
    `${ledgerValues(NOW_MS, "reserve", "wallet", A, A, H, "-:est::bigint", ":balance::bigint")};`,
    "COMMIT;",
    "BEGIN;",
    `update ${p}tokens set remain = remain + :c::bigint, used = used - :c::bigint where id = ${T} and remain <= ${MAX} - :c::bigint ` +
    `and used >= :c::bigint - ${MAX} returning remain, ${NOW_MS} as now \\gset`,
    `update ${p}accounts set balance = balance + :c::bigint where id = ${A} and balance <= ${MAX} - :c::bigint returning balance \\gset`,
    `update ${p}accounts set used_quota = used_quota + :act::bigint, request_count = request_count + 1 where id = ${A} ` +
    `and used_quota <= ${MAX} - :act::bigint and request_count <= ${MAX - 1};`,
    `update ${p}holds set status = 'settled', reserved = :est::bigint, trusted = false, parts = ${
      partsExpr(A, T, ":est::bigint")
    }, ` +
    `resolved_at = :now::bigint, settlement = ${
      settlementExpr(H, A, T, ":est::bigint", ":act::bigint", ":balance::bigint", ":remain::bigint", ":now::bigint")
    } where id = ${H} and status = 'pending';`,
    `insert into ${p}ledger (${LEDGER_COLS}) values ` +
    `${ledgerValues(":now::bigint", "settle", "token", T, A, H, ":c::bigint", ":remain::bigint")}, ` +
    `${ledgerValues(":now::bigint", "settle", "wallet", A, A, H, ":c::bigint", ":balance::bigint")};`,
    "COMMIT;",
    ""
  ].join("\n")
}

/** The one-function-per-phase script: two autocommit `SELECT`s. */
export const functionScript = (mode: AccountMode, accounts: number): string => {
  const p = PGBENCH_PREFIX.pgbenchFn
  const H = `('${p}r' || :run::text || '-' || :client_id::text || '-' || :n::text)`
  return [
    header(mode, accounts),
    `select ${p}open(${H}, ${accountExpr(mode)}, ${tokenExpr(mode)}, :est);`,
    `select ${p}settle(${H}, ${accountExpr(mode)}, ${tokenExpr(mode)}, :est, :act);`,
    ""
  ].join("\n")
}

/** The PL/pgSQL functions of the function form: the same writes and guards as the statements. */
export const installFunctions = async (knex: Knex): Promise<void> => {
  const p = PGBENCH_PREFIX.pgbenchFn
  const ledger = (at: string, kind: string, source: string, subject: string, amount: string, after: string) =>
    `(${at}, '${kind}', '${source}', ${subject}, a, h, ${amount}, ${after}, null, null, null)`
  await knex.raw(`
create or replace function ${p}open(h text, a text, t text, est bigint) returns void language plpgsql as $$
declare v_remain bigint; v_balance bigint; v_now bigint := ${NOW_MS};
begin
  update ${p}tokens set remain = remain - est, used = used + est where id = t and account_id = a
    and not unlimited and used <= ${MAX} - est and remain >= est returning remain into v_remain;
  if not found then raise exception 'token %: budget exceeded', t; end if;
  update ${p}accounts set balance = balance - est where id = a and balance >= est and balance > 0
    returning balance into v_balance;
  if not found then raise exception 'account %: insufficient funds', a; end if;
  insert into ${p}holds (${HOLD_COLS}) values (h, a, t, est, est, 'wallet_only', false, 'pending',
    ${partsExpr("a", "t", "est")}, v_now, v_now + ${HOLD_TTL_MILLIS}, null, null, null) on conflict (id) do nothing;
  if not found then raise exception 'hold % exists', h; end if;
  insert into ${p}ledger (${LEDGER_COLS}) values ${ledger("v_now", "reserve", "token", "t", "-est", "v_remain")},
    ${ledger("v_now", "reserve", "wallet", "a", "-est", "v_balance")};
end $$`)
  await knex.raw(`
create or replace function ${p}settle(h text, a text, t text, est bigint, act bigint) returns void language plpgsql as $$
declare v_remain bigint; v_balance bigint; c bigint := est - act; v_now bigint := ${NOW_MS};
begin
  update ${p}tokens set remain = remain + c, used = used - c where id = t and remain <= ${MAX} - c
    and used >= c - ${MAX} returning remain into v_remain;
  if not found then raise exception 'token %: settle matched no row', t; end if;
  update ${p}accounts set balance = balance + c where id = a and balance <= ${MAX} - c returning balance into v_balance;
  if not found then raise exception 'account %: settle matched no row', a; end if;
  update ${p}accounts set used_quota = used_quota + act, request_count = request_count + 1 where id = a
    and used_quota <= ${MAX} - act and request_count <= ${MAX - 1};
  update ${p}holds set status = 'settled', reserved = est, trusted = false, parts = ${partsExpr("a", "t", "est")},
    resolved_at = v_now, settlement = ${settlementExpr("h", "a", "t", "est", "act", "v_balance", "v_remain", "v_now")}
    where id = h and status = 'pending';
  if not found then raise exception 'hold % was not pending', h; end if;
  insert into ${p}ledger (${LEDGER_COLS}) values ${ledger("v_now", "settle", "token", "t", "c", "v_remain")},
    ${ledger("v_now", "settle", "wallet", "a", "c", "v_balance")};
end $$`)
}

/** One pgbench invocation's outcome. */
export interface PgbenchRun {
  readonly kind: PgbenchKind
  readonly clients: number
  readonly mode: AccountMode
  readonly seconds: number
  /** Script executions (sessions) that completed. */
  readonly sessions: number
  readonly failed: number
  /** pgbench's tps (without initial connection time) = sessions/s, rounded. */
  readonly perSecond: number
  /** The same, unrounded (0 when pgbench reported none). */
  readonly tps: number
  readonly latencyAvgMillis: number
  /** pgbench aborted a client (a statement failed): its session may have left an open hold. */
  readonly aborted: boolean
  readonly errors: ReadonlyArray<string>
}

let runCounter = 0

/** Runs one pgbench invocation against `schema` on `url`. */
export const runPgbench = (
  url: string,
  schema: string,
  kind: PgbenchKind,
  mode: AccountMode,
  accounts: number,
  clients: number,
  seconds: number
): Promise<PgbenchRun> => {
  const dir = mkdtempSync(path.join(tmpdir(), "rb-pgbench-"))
  const file = path.join(dir, `${kind}-${mode}.sql`)
  writeFileSync(file, kind === "pgbench" ? statementsScript(mode, accounts) : functionScript(mode, accounts))
  const run = ++runCounter
  const args = [
    "-n",
    "-M",
    "prepared",
    "-c",
    String(clients),
    "-j",
    String(Math.min(2, clients)),
    "-T",
    String(seconds),
    "-D",
    "n=0",
    "-D",
    `run=${run}`,
    "-f",
    file,
    url
  ]
  return new Promise((resolve) => {
    execFile(
      "pgbench",
      args,
      { env: { ...process.env, PGOPTIONS: `-c search_path=${schema}` }, encoding: "utf8", maxBuffer: 64 << 20 },
      (error, stdout, stderr) => {
        rmSync(dir, { recursive: true, force: true })
        const text = `${stdout}\n${stderr}`
        const grab = (re: RegExp) => Number(re.exec(text)?.[1] ?? Number.NaN)
        const sessions = grab(/number of transactions actually processed: (\d+)/)
        const tps = grab(/tps = ([\d.]+) \(without initial connection time\)/) || 0
        const errors = text.split("\n").filter((l) => /error|ERROR|FATAL/.test(l)).slice(0, 5)
        resolve({
          kind,
          clients,
          mode,
          seconds,
          sessions: Number.isNaN(sessions) ? 0 : sessions,
          failed: grab(/number of failed transactions: (\d+)/) || 0,
          perSecond: Math.round(tps),
          tps,
          latencyAvgMillis: grab(/latency average = ([\d.]+) ms/),
          aborted: error !== null || /aborted/.test(text),
          errors
        })
      }
    )
  })
}
