import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"
import { sharedConfig } from "../../vitest.shared.ts"

// test/: what a plugin author ships and runs from the published packages (the conformance
// suite, the composition with the wallet on the SQLite test store); workspace-test/: the
// checks that need the workspace (the guide, the knex store on SQLite/PostgreSQL/MySQL, a model).
const shared = sharedConfig(fileURLToPath(new URL(".", import.meta.url)))
export default defineConfig({
  ...shared,
  test: { ...shared.test, include: ["test/**/*.test.ts", "workspace-test/**/*.test.ts"] }
})
