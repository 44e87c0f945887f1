// Emits a library package's declarations with tsc (per module, so `Hold.Hold` keeps both its
// schema value and its type; tsup's bundled dts drops the value of same-named const/type
// pairs), then writes a `.d.cts` next to each CommonJS entry so `require` consumers resolve
// the same types. Run from the package directory after tsup:
//   tsup && node ../../scripts/build-types.mjs [cjsName=Module ...]   (default: index=index)
import { execFileSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import { createRequire } from "node:module"

const require = createRequire(import.meta.url)
const tsc = require.resolve("typescript/bin/tsc")
execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], { stdio: "inherit" })
const entries = process.argv.slice(2)
for (const entry of entries.length > 0 ? entries : ["index=index"]) {
  const [cjs, module] = entry.split("=")
  writeFileSync(`dist/${cjs}.d.cts`, `export * from "./${module}.js"\n`)
}
