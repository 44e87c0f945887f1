// Shared vitest settings for every workspace package. Each package's vitest.config.ts does:
//
//   import { fileURLToPath } from "node:url"
//   import { defineConfig } from "vitest/config"
//   import { sharedConfig } from "../../vitest.shared.ts"
//   export default defineConfig(sharedConfig(fileURLToPath(new URL(".", import.meta.url))))
//
// Reporters: always "default". When VITEST_JSON_DIR is set (.ci/run sets it to a fresh temp
// dir), also the "json" reporter, writing `${VITEST_JSON_DIR}/<sanitized package name>.json`,
// which .ci/run reads to print its `N passed, N failed` line.
// (vitest 4.1.12: `reporters` takes `[name, options]` tuples; JsonOptions has `outputFile`.)
import { readFileSync } from "node:fs"
import path from "node:path"
import type { ViteUserConfig } from "vitest/config"

export const TEST_TIMEOUT_MS = 30_000

/** "@relay-billing/core" -> "relay-billing__core": safe as a file name, distinct per package. */
export const sanitizePackageName = (name: string): string =>
  name.replace(/^@/, "").replace(/\//g, "__").replace(/[^A-Za-z0-9._-]/g, "_")

const readPackageName = (dir: string): string => {
  const pkg = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as { name?: unknown }
  if (typeof pkg.name !== "string" || pkg.name.length === 0) {
    throw new Error(`vitest.shared: ${dir}/package.json has no "name"`)
  }
  return pkg.name
}

type Reporters = NonNullable<NonNullable<ViteUserConfig["test"]>["reporters"]>

export const sharedReporters = (packageName: string, jsonDir = process.env["VITEST_JSON_DIR"]): Reporters => {
  if (jsonDir === undefined || jsonDir === "") return ["default"]
  const outputFile = path.resolve(jsonDir, `${sanitizePackageName(packageName)}.json`)
  return ["default", ["json", { outputFile }]]
}

/** The vitest config for the package whose directory (the one holding package.json) is `dir`. */
export const sharedConfig = (dir: string): ViteUserConfig => ({
  root: dir,
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: TEST_TIMEOUT_MS,
    reporters: sharedReporters(readPackageName(dir))
  }
})
