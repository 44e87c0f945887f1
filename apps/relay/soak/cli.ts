/**
 * The soak probe's command line: `pnpm --filter @relay-billing/relay soak --
 * --requests 2000 --db sqlite|postgres|both [--concurrency 64] [--seed N]
 * [--keep] [--json] [--verbose]`. Prints the figures and one line per check; exit code 1
 * when a check failed. PostgreSQL uses the server of `BILLING_PG_URL`.
 *
 * @since 0.1.0
 */
import { parseArgs } from "node:util"
import * as Soak from "./Soak.js"

const usage =
  "usage: soak [--requests N] [--concurrency C] [--db sqlite|postgres|both] [--seed N] [--hold-ttl S] [--keep] [--json] [--verbose]"

const positiveInt = (name: string, value: string | undefined, fallback: number): number => {
  if (value === undefined) return fallback
  if (!/^\d+$/.test(value) || Number(value) < 1) {
    throw new Error(`--${name}: expected a positive integer, got ${JSON.stringify(value)}\n${usage}`)
  }
  return Number(value)
}

/** Runs the probe for `argv` (without node and script); returns the exit code. */
export const main = async (argv: ReadonlyArray<string>): Promise<number> => {
  const { values } = parseArgs({
    args: [...argv].filter((a) => a !== "--"),
    options: {
      requests: { type: "string" },
      concurrency: { type: "string" },
      db: { type: "string" },
      seed: { type: "string" },
      "hold-ttl": { type: "string" },
      keep: { type: "boolean" },
      json: { type: "boolean" },
      verbose: { type: "boolean" },
      help: { type: "boolean" }
    },
    strict: true
  })
  if (values.help === true) {
    console.log(usage)
    return 0
  }
  const db = values.db ?? "sqlite"
  if (db !== "sqlite" && db !== "postgres" && db !== "both") {
    throw new Error(`--db: expected sqlite, postgres or both, got ${JSON.stringify(db)}\n${usage}`)
  }
  const requests = positiveInt("requests", values.requests, 2000)
  const concurrency = positiveInt("concurrency", values.concurrency, 64)
  const seed = values.seed === undefined ? undefined : positiveInt("seed", values.seed, 1)
  const holdTtlSeconds = positiveInt("hold-ttl", values["hold-ttl"], 3)
  let failed = false
  const kinds: ReadonlyArray<"sqlite" | "postgres"> = db === "both" ? ["sqlite", "postgres"] : [db]
  for (const kind of kinds) {
    const report = await Soak.run({
      db: kind,
      requests,
      concurrency,
      seed,
      holdTtlSeconds,
      keep: values.keep === true,
      log: (line) => console.error(line)
    })
    if (values.json === true) {
      const { rows: _, ...figures } = report
      console.log(JSON.stringify(figures, null, 2))
    } else console.log(Soak.format(report))
    if (values.verbose === true) console.log(Soak.formatRows(report))
    if (report.checks.some((c) => !c.ok)) failed = true
  }
  return failed ? 1 : 0
}
