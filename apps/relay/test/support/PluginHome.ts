/**
 * A deployment directory for plugin tests: a temporary directory whose
 * `node_modules` holds the fixture plugin packages (symlinks to
 * `test/fixtures/*`, under their package names), so that the relay resolves
 * them by package name from that working directory, as from a real
 * deployment's dependencies.
 */
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync } from "node:fs"
import { tmpdir } from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"

const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "fixtures")

/** The package name of each fixture directory. */
export const fixturePackage = (dir: string): string =>
  (JSON.parse(readFileSync(path.join(fixtures, dir, "package.json"), "utf8")) as { name: string }).name

/** The credits plugin (ESM-only, one table). */
export const CREDITS = fixturePackage("credits-plugin")
/** The credits plugin as CommonJS (`module.exports` is the plugin). */
export const CREDITS_CJS = fixturePackage("credits-plugin-cjs")
/** A CommonJS package exporting no plugin. */
export const NO_PLUGIN = fixturePackage("no-plugin")

/** A fresh directory with `node_modules/<name>` → each fixture. */
export const pluginHome = (
  dirs: ReadonlyArray<string> = ["credits-plugin", "credits-plugin-cjs", "no-plugin"]
): string => {
  const home = mkdtempSync(path.join(tmpdir(), "relay-plugins-"))
  for (const dir of dirs) {
    const link = path.join(home, "node_modules", ...fixturePackage(dir).split("/"))
    mkdirSync(path.dirname(link), { recursive: true })
    symlinkSync(path.join(fixtures, dir), link, "dir")
  }
  return home
}
