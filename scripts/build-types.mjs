// Emits a library package's declarations with tsc (per module, so `Hold.Hold` keeps both its
// schema value and its type; tsup's bundled dts drops the value of same-named const/type
// pairs), then makes the CommonJS entry points. Run from the package directory after tsup:
//   tsup && node ../../scripts/build-types.mjs [entry=Module ...]   (default: index=index)
// where `entry` is tsup's output name (`dist/<entry>.js`) and `Module` the source module whose
// declarations describe it (`dist/<Module>.d.ts`).
//
// One class identity (issue 10 #8): the packages ship ONE implementation, the ESM build.
// `dist/<entry>.cjs` is `module.exports = require("./<entry>.js")`: on Node >= 20.19 (our
// `engines`) `require()` loads that same ES module, so `require` and `import` consumers get the
// same module instance and the same error classes. Its types are a CommonJS copy of the
// declaration tree (`dist/**/*.d.cts`, relative specifiers `./X.js` -> `./X.cjs`), so a
// TypeScript consumer with `module: node16` and CommonJS resolves CommonJS declarations and gets
// no TS1479. Imports of ESM-only packages (effect, vitest) in that copy become type-only with
// `resolution-mode: "import"`, the one form `node16` accepts from a CommonJS file.
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import path from "node:path"

const require = createRequire(import.meta.url)
const tsc = require.resolve("typescript/bin/tsc")
execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], { stdio: "inherit" })

const packageDir = process.cwd()

/** Whether the installed package `name` (resolved from this package) offers no `require` entry. */
const esmOnlyCache = new Map()
const isEsmOnly = (name) => {
  if (esmOnlyCache.has(name)) return esmOnlyCache.get(name)
  let dir = packageDir
  let manifest
  for (;;) {
    const candidate = path.join(dir, "node_modules", ...name.split("/"), "package.json")
    if (existsSync(candidate)) {
      manifest = JSON.parse(readFileSync(candidate, "utf8"))
      break
    }
    const parent = path.dirname(dir)
    if (parent === dir) throw new Error(`build-types: cannot find ${name} from ${packageDir}`)
    dir = parent
  }
  const hasRequire = (value) =>
    value !== null && typeof value === "object" &&
    Object.entries(value).some(([key, v]) => key === "require" || key === "node-addons" || hasRequire(v))
  const esmOnly = manifest.type === "module" && !hasRequire(manifest.exports)
  esmOnlyCache.set(name, esmOnly)
  return esmOnly
}

const packageName = (specifier) => {
  const parts = specifier.split("/")
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]
}

const ATTRIBUTE = `{ "resolution-mode": "import" }`

/** The CommonJS twin of one ESM declaration file's text. */
const toCommonJs = (text, file) => {
  // static imports/exports: `import ... from "x"`, `export ... from "x"` (tsc may wrap them)
  let out = text.replace(
    /^(import|export)(\s+type)?(\s+(?:\*(?:\s+as\s+[\w$]+)?|[\w$]+(?:\s*,\s*(?:\{[^}]*\}|\*\s+as\s+[\w$]+))?|\{[^}]*\})\s+from\s+)"([^"]+)";?$/gm,
    (whole, keyword, type, middle, specifier) => {
      if (specifier.startsWith(".")) return `${keyword}${type ?? ""}${middle}"${specifier.replace(/\.js$/, ".cjs")}";`
      if (!isEsmOnly(packageName(specifier))) return whole
      if (keyword === "export") {
        throw new Error(`build-types: ${file} re-exports the ESM-only ${specifier}; a CommonJS declaration cannot`)
      }
      return `import type${middle.replace(/([{,]\s*)type\s+/g, "$1")}"${specifier}" with ${ATTRIBUTE};`
    }
  )
  // side-effect imports `import "x";`
  out = out.replace(/^import\s+"(\.[^"]+)\.js";?$/gm, (_, base) => `import "${base}.cjs";`)
  // inline type imports `import("x")`
  out = out.replace(/import\("([^"]+)"\)/g, (whole, specifier) => {
    if (specifier.startsWith(".")) return `import("${specifier.replace(/\.js$/, ".cjs")}")`
    if (!isEsmOnly(packageName(specifier))) return whole
    return `import("${specifier}", { with: ${ATTRIBUTE} })`
  })
  return out
}

const walk = (dir) =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? walk(path.join(dir, entry.name)) : [path.join(dir, entry.name)]
  )

for (const file of walk("dist").filter((f) => f.endsWith(".d.ts"))) {
  writeFileSync(file.replace(/\.d\.ts$/, ".d.cts"), toCommonJs(readFileSync(file, "utf8"), file))
}

const entries = process.argv.slice(2)
for (const entry of entries.length > 0 ? entries : ["index=index"]) {
  const [cjs, module] = entry.split("=")
  if (!existsSync(`dist/${cjs}.js`)) throw new Error(`build-types: dist/${cjs}.js was not built (tsup entry "${cjs}")`)
  writeFileSync(
    `dist/${cjs}.cjs`,
    `"use strict"\n// The ES module itself (Node >= 20.19 requires ES modules): one copy, one class identity.\nmodule.exports = require("./${cjs}.js")\n`
  )
  if (cjs !== module) writeFileSync(`dist/${cjs}.d.cts`, `export * from "./${module}.cjs"\n`)
}
