#!/usr/bin/env node
// Runs the soak probe's TypeScript (soak/cli.ts) through Vite's module runner
// (`runnerImport`, the workspace's Vite), so the probe needs no build of its own.
import { fileURLToPath } from "node:url"
import { runnerImport } from "vite"

const { module } = await runnerImport(fileURLToPath(new URL("./cli.ts", import.meta.url)), { logLevel: "error" })
try {
  process.exitCode = await module.main(process.argv.slice(2))
} catch (error) {
  console.error(error instanceof Error ? error.message : error)
  process.exitCode = 2
}
