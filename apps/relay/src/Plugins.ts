/**
 * Loads the funding-source plugins of `funding.sources` (relay-api.md) at
 * start-up: each entry's `package` is resolved from the relay's working
 * directory (like any dependency of the deployment), imported, and its
 * `plugin` export (or its default export) must be a `Source.Plugin` of
 * `@relay-billing/core`; the entry's `options` are decoded with the plugin's
 * schema, `make(options)` builds the source, and the source is registered
 * under the entry's `id`.
 *
 * A package that cannot be found, does not export a funding-source plugin, or
 * rejects its options stops start-up with a `ConfigError` naming the entry
 * (`funding.sources.<i>.package` or `funding.sources.<i>.options`, with the
 * entry's id in the reason).
 *
 * @since 0.4.0
 */
import type { Source } from "@relay-billing/core"
import { Effect, Schema } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import path from "node:path"
import { pathToFileURL } from "node:url"
import type { FundingSourceEntry } from "./Config.js"
import { ConfigError, toConfigError } from "./Config.js"

/**
 * A loaded plugin source: the config entry it came from, the file its package
 * resolved to, and the source, registered under the entry's `id`.
 *
 * @since 0.4.0
 * @category models
 */
export interface LoadedSource {
  readonly entry: FundingSourceEntry
  /** The entry's index in `funding.sources`. */
  readonly index: number
  /** The module file the package name resolved to. */
  readonly file: string
  readonly source: Source.Source
}

/**
 * Options of {@link load}.
 *
 * @since 0.4.0
 * @category models
 */
export interface LoadOptions {
  /** The directory package names are resolved from (default `process.cwd()`). */
  readonly cwd?: string | undefined
  /** Where the entries came from, for the error (the config file's path; default `"input"`). */
  readonly configSource?: string | undefined
}

const describe = (cause: unknown): string => {
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code
    const first = cause.message.split("\n")[0] ?? ""
    return code !== undefined && !first.includes(code) ? `${code}: ${first}` : first
  }
  return String(cause)
}

/** The `exports` target for `"."` under the import conditions, if the package declares one. */
const exportTarget = (exports: unknown): string | undefined => {
  const pick = (value: unknown): string | undefined => {
    if (typeof value === "string") return value
    if (Array.isArray(value)) {
      for (const v of value) {
        const found = pick(v)
        if (found !== undefined) return found
      }
      return undefined
    }
    if (value !== null && typeof value === "object") {
      const record = value as Record<string, unknown>
      for (const condition of ["import", "node", "default"]) {
        if (condition in record) {
          const found = pick(record[condition])
          if (found !== undefined) return found
        }
      }
    }
    return undefined
  }
  if (typeof exports === "string" || Array.isArray(exports)) return pick(exports)
  if (exports !== null && typeof exports === "object") {
    const record = exports as Record<string, unknown>
    const keys = Object.keys(record)
    if (keys.some((k) => k.startsWith("."))) return "." in record ? pick(record["."]) : undefined
    return pick(record)
  }
  return undefined
}

/**
 * The directory of package `name` in the `node_modules` folders from `cwd` up
 * (Node's own lookup for a dependency of a project in `cwd`), without Node's
 * global folders: a `NODE_PATH` (pnpm sets one for its scripts) must not make
 * a package the deployment does not have look installed.
 */
const packageDir = (name: string, cwd: string): string | undefined => {
  let dir = cwd
  for (;;) {
    const pkgDir = path.join(dir, "node_modules", ...name.split("/"))
    if (existsSync(path.join(pkgDir, "package.json"))) return pkgDir
    const parent = path.dirname(dir)
    if (parent === dir) return undefined
    dir = parent
  }
}

/**
 * An ESM-only package (its `exports` have no `require` or `default` target)
 * cannot be resolved by `require.resolve`: read its `exports` (import
 * conditions), `module` or `main`.
 */
const resolveImportOnly = (pkgDir: string): string | undefined => {
  const json = JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8")) as Record<string, unknown>
  const target = json["exports"] !== undefined
    ? exportTarget(json["exports"])
    : typeof json["module"] === "string"
    ? json["module"]
    : typeof json["main"] === "string"
    ? json["main"]
    : "index.js"
  return target === undefined ? undefined : path.resolve(pkgDir, target)
}

/**
 * Resolves a package name to its entry file from `cwd`, as a dependency of a
 * project in `cwd` would be: found in the `node_modules` folders from `cwd` up
 * (never through `NODE_PATH`), then `require.resolve` (CommonJS and dual
 * packages), else the import conditions of an ESM-only package.
 *
 * @since 0.4.0
 * @category loading
 */
export const resolvePackage = (name: string, cwd: string): string => {
  const from = path.resolve(cwd)
  const pkgDir = packageDir(name, from)
  if (pkgDir === undefined) {
    throw Object.assign(new Error(`Cannot find package '${name}' from ${from}`), { code: "MODULE_NOT_FOUND" })
  }
  const require = createRequire(path.join(from, "noop.js"))
  try {
    return require.resolve(name)
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code
    if (code === "ERR_PACKAGE_PATH_NOT_EXPORTED" || code === "ERR_REQUIRE_ESM") {
      const file = resolveImportOnly(pkgDir)
      if (file !== undefined && existsSync(file)) return file
    }
    throw cause
  }
}

const isPlugin = (value: unknown): value is Source.Plugin<unknown> =>
  value !== null &&
  typeof value === "object" &&
  typeof (value as Record<string, unknown>)["id"] === "string" &&
  typeof (value as Record<string, unknown>)["make"] === "function" &&
  Schema.isSchema((value as Record<string, unknown>)["options"])

/** The plugin a module exports: `plugin`, else the default export (or its `plugin`, for CommonJS). */
const pluginOf = (module: Record<string, unknown>): Source.Plugin<unknown> | undefined => {
  const candidates: Array<unknown> = [module["plugin"], module["default"]]
  const fallback = module["default"]
  if (fallback !== null && typeof fallback === "object") {
    candidates.push((fallback as Record<string, unknown>)["plugin"])
  }
  return candidates.find(isPlugin)
}

const isSource = (value: unknown): value is Source.Source =>
  value !== null &&
  typeof value === "object" &&
  typeof (value as Record<string, unknown>)["take"] === "function" &&
  typeof (value as Record<string, unknown>)["move"] === "function"

/**
 * Loads one entry (see the module docs).
 *
 * @since 0.4.0
 * @category loading
 */
export const loadEntry = (
  entry: FundingSourceEntry,
  index: number,
  options: LoadOptions = {}
): Effect.Effect<LoadedSource, ConfigError> =>
  Effect.gen(function*() {
    const cwd = path.resolve(options.cwd ?? process.cwd())
    const source = options.configSource ?? "input"
    const at = (key: "package" | "options") => `funding.sources.${index}.${key}`
    const named = `funding source ${JSON.stringify(entry.id)}`
    const packageError = (reason: string) =>
      new ConfigError({ source, field: at("package"), value: JSON.stringify(entry.package), reason })

    const file = yield* Effect.try({
      try: () => resolvePackage(entry.package, cwd),
      catch: (cause) => packageError(`cannot find the package of ${named} from ${cwd} (${describe(cause)})`)
    })
    const module = yield* Effect.tryPromise({
      try: () => import(pathToFileURL(file).href) as Promise<Record<string, unknown>>,
      catch: (cause) => packageError(`cannot load the package of ${named} (${describe(cause)})`)
    })
    const plugin = pluginOf(module)
    if (plugin === undefined) {
      return yield* packageError(
        `the package of ${named} exports no funding-source plugin (expected a \`plugin\` or default export ` +
          "made with Source.plugin: { id, options, make })"
      )
    }
    const optionsError = (error: Schema.SchemaError) => {
      const base = toConfigError(source, at("options"), entry.options, error)
      return new ConfigError({ ...base, reason: `${base.reason} (options of ${named}, package ${entry.package})` })
    }
    // A plugin made with Source.plugin decodes its options with its own copy of effect (it may
    // resolve another copy than the relay's, whose parser cannot run its schema's checks).
    const decodeOptions = plugin.decodeOptions
    const decoded = decodeOptions === undefined
      ? yield* Schema.decodeUnknownEffect(plugin.options)(entry.options, { onExcessProperty: "error" }).pipe(
        Effect.mapError(optionsError)
      )
      : yield* Effect.try({
        try: () => decodeOptions(entry.options),
        catch: (cause) =>
          new ConfigError({
            source,
            field: at("options"),
            value: JSON.stringify(entry.options),
            reason: `${named} (package ${entry.package}) could not decode its options: ${describe(cause)}`
          })
      }).pipe(
        Effect.flatMap((result) =>
          result._tag === "Success" ? Effect.succeed(result.value) : Effect.fail(optionsError(result.error))
        )
      )
    const made = yield* Effect.try({
      try: () => plugin.make(decoded),
      catch: (cause) =>
        new ConfigError({
          source,
          field: at("options"),
          value: JSON.stringify(entry.options),
          reason: `${named} (package ${entry.package}) rejected its options: ${describe(cause)}`
        })
    })
    if (!isSource(made)) {
      return yield* packageError(`the plugin of ${named} made no source (expected take and move functions)`)
    }
    if (made.role !== "funding") {
      return yield* packageError(
        `the plugin of ${named} made a ${JSON.stringify(made.role)} source, not a funding source`
      )
    }
    const registered: Source.Source = made.id === entry.id ? made : { ...made, id: entry.id }
    return { entry, index, file, source: registered }
  })

/**
 * Loads every entry of `funding.sources`, in order; the first failure stops
 * (a `ConfigError` naming the entry).
 *
 * @since 0.4.0
 * @category loading
 */
export const load = (
  entries: ReadonlyArray<FundingSourceEntry>,
  options: LoadOptions = {}
): Effect.Effect<ReadonlyArray<LoadedSource>, ConfigError> =>
  Effect.forEach(entries, (entry, index) => loadEntry(entry, index, options))
