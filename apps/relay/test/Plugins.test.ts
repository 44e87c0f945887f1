/**
 * The plugin loader (relay-api.md "funding"): a package resolved by name from
 * the working directory, imported, its plugin's options decoded and its source
 * registered under the entry's id — and the three ways it stops start-up, each
 * naming the entry.
 */
import { Effect } from "effect"
import path from "node:path"
import { describe, expect, it } from "vitest"
import * as Plugins from "../src/Plugins.js"
import { CREDITS, CREDITS_CJS, NO_PLUGIN, pluginHome } from "./support/PluginHome.js"

const home = pluginHome()
const load = (entries: ReadonlyArray<{ id: string; package: string; options?: unknown }>, cwd = home) =>
  Effect.runPromise(Plugins.load(entries.map((e) => ({ options: {}, ...e })), { cwd, configSource: "relay.json" }))
const fail = (entries: ReadonlyArray<{ id: string; package: string; options?: unknown }>, cwd = home) =>
  Effect.runPromise(
    Effect.flip(Plugins.load(entries.map((e) => ({ options: {}, ...e })), { cwd, configSource: "relay.json" }))
  )

describe("Plugins.load", () => {
  it("loads an ESM-only plugin by package name from the working directory and registers it under the entry's id", async () => {
    const [loaded] = await load([{ id: "vouchers", package: CREDITS, options: { table: "vouchers" } }])
    expect(loaded!.source.id).toBe("vouchers")
    expect(loaded!.source.role).toBe("funding")
    expect(loaded!.source.migrations?.map((m) => m.name)).toEqual(["001_credits"])
    expect(loaded!.source.audit).toEqual([{ table: "vouchers", subject: "account_id", column: "balance" }])
    // ESM-only: resolved through its `import` condition from the working directory.
    expect(loaded!.file).toBe(path.join(home, "node_modules", CREDITS, "index.js"))
    expect(loaded!.index).toBe(0)
    // The same package twice, under two ids, with their own options.
    const two = await load([
      { id: "credits", package: CREDITS },
      { id: "promo", package: CREDITS, options: { table: "promo_credits" } }
    ])
    expect(two.map((l) => [l.source.id, l.source.audit?.[0]?.table])).toEqual([["credits", "credits"], [
      "promo",
      "promo_credits"
    ]])
  })

  it("loads a CommonJS plugin whose module.exports is the plugin (the default export)", async () => {
    const [loaded] = await load([{ id: "legacy", package: CREDITS_CJS }])
    // require.resolve answers the package's real path (the fixture behind the symlink).
    expect(loaded!.file.endsWith(path.join("credits-plugin-cjs", "index.cjs"))).toBe(true)
    expect(loaded!.source.id).toBe("legacy")
    expect(loaded!.source.role).toBe("funding")
    expect(loaded!.source.audit).toEqual([{ table: "credits", subject: "account_id", column: "balance" }])
  })

  it("a package that cannot be found stops start-up, naming the entry", async () => {
    const error = await fail([{ id: "credits", package: CREDITS }, {
      id: "vouchers",
      package: "relay-billing-source-vouchers"
    }])
    expect(error._tag).toBe("ConfigError")
    expect(error.field).toBe("funding.sources.1.package")
    expect(error.value).toBe("\"relay-billing-source-vouchers\"")
    expect(error.source).toBe("relay.json")
    expect(error.message).toContain("funding source \"vouchers\"")
    expect(error.message).toContain("cannot find the package")
    // Resolved from the working directory, not from the relay's own dependencies.
    const elsewhere = await fail([{ id: "credits", package: CREDITS }], pluginHome([]))
    expect(elsewhere.field).toBe("funding.sources.0.package")
    expect(elsewhere.message).toContain("cannot find the package of funding source \"credits\"")
  })

  it("a package that exports no funding-source plugin stops start-up, naming the entry", async () => {
    const error = await fail([{ id: "half", package: NO_PLUGIN }])
    expect(error._tag).toBe("ConfigError")
    expect(error.field).toBe("funding.sources.0.package")
    expect(error.value).toBe(`"${NO_PLUGIN}"`)
    expect(error.message).toContain("funding source \"half\"")
    expect(error.message).toContain("exports no funding-source plugin")
    // A package that is not a plugin at all (effect is resolvable from the relay's directory).
    const effect = await fail([{ id: "fx", package: "effect" }], process.cwd())
    expect(effect.message).toContain("funding source \"fx\" exports no funding-source plugin")
  })

  it("a plugin that rejects its options stops start-up, naming the entry and the option", async () => {
    const typo = await fail([{ id: "credits", package: CREDITS, options: { tabel: "x" } }])
    expect(typo._tag).toBe("ConfigError")
    expect(typo.field).toBe("funding.sources.0.options.tabel")
    expect(typo.message).toContain("options of funding source \"credits\"")
    const bad = await fail([{ id: "credits", package: CREDITS, options: { table: "Robert'); DROP" } }])
    expect(bad.field).toBe("funding.sources.0.options.table")
    expect(bad.value).toBe("\"Robert'); DROP\"")
    const notObject = await fail([{ id: "credits", package: CREDITS, options: 42 }])
    expect(notObject.field).toBe("funding.sources.0.options")
    // Options the schema accepts but `make` refuses.
    const refused = await fail([{ id: "credits", package: CREDITS, options: { refuse: true } }])
    expect(refused.field).toBe("funding.sources.0.options")
    expect(refused.message).toContain(
      "funding source \"credits\" (package relay-billing-fixture-credits) rejected its options"
    )
    expect(refused.message).toContain("refusing to start")
  })
})
