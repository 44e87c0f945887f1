/**
 * The admin key guarding `/admin/*`: `RELAY_ADMIN_KEY` when set, else the key
 * stored in `./data/admin-key` (generated on first start, file mode 0600, its
 * directory created). The key itself is never logged; the file's path is.
 * Bearer keys are compared in constant time.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Schema } from "effect"
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises"
import path from "node:path"
import { constantTimeEqualSecret, randomBase62 } from "./internal/secrets.js"

/**
 * The default location of the generated key.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_PATH = "./data/admin-key"

/**
 * The admin key file cannot be read or written.
 *
 * @since 0.1.0
 * @category errors
 */
export class AdminKeyError extends Schema.TaggedError<AdminKeyError>()("AdminKeyError", {
  path: Schema.String,
  reason: Schema.String
}) {
  /** Stable code. */
  get code(): "admin_key_error" {
    return "admin_key_error"
  }
  override get message(): string {
    return `admin key file ${this.path}: ${this.reason}`
  }
}

/**
 * The resolved admin key and where it came from.
 *
 * @since 0.1.0
 * @category models
 */
export interface Resolved {
  /** The secret. Never log it. */
  readonly key: string
  /** `environment`: RELAY_ADMIN_KEY; `file`: read from `path`; `generated`: just written to `path`. */
  readonly source: "environment" | "file" | "generated"
  /** The key file's path (absent for `environment`). */
  readonly path?: string
}

/**
 * A new admin key: `sk-admin-` + 48 random base62 characters.
 *
 * @since 0.1.0
 * @category constructors
 */
export const generate = (): string => `sk-admin-${randomBase62(48)}`

const errnoCode = (cause: unknown): string => (cause as NodeJS.ErrnoException)?.code ?? String(cause)

/**
 * Resolves the admin key: `envKey` when non-empty, else the key in the file at
 * `path` (default {@link DEFAULT_PATH}), generated with mode 0600 when absent.
 * Logs the source and the file path, never the key.
 *
 * @since 0.1.0
 * @category constructors
 */
export const resolve = (options: {
  readonly envKey?: string | undefined
  readonly path?: string | undefined
} = {}): Effect.Effect<Resolved, AdminKeyError> =>
  Effect.gen(function*() {
    if (options.envKey !== undefined && options.envKey.length > 0) {
      yield* Effect.logInfo("admin key: from RELAY_ADMIN_KEY")
      return { key: options.envKey, source: "environment" } as const
    }
    const file = path.resolve(options.path ?? DEFAULT_PATH)
    const fail = (reason: string) => new AdminKeyError({ path: file, reason })
    const existing = yield* Effect.tryPromise({
      try: () => readFile(file, "utf8"),
      catch: (cause) => cause
    }).pipe(
      Effect.map((text): string | undefined => text.trim()),
      Effect.catch((cause) =>
        errnoCode(cause) === "ENOENT"
          ? Effect.succeed(undefined)
          : Effect.fail(fail(`cannot read (${errnoCode(cause)})`))
      )
    )
    if (existing !== undefined) {
      if (existing.length === 0) return yield* fail("the file is empty")
      // keep the file private even if it was created or copied with a wider mode
      yield* Effect.tryPromise({ try: () => chmod(file, 0o600), catch: (c) => fail(`cannot chmod (${errnoCode(c)})`) })
      yield* Effect.logInfo(`admin key: read from ${file}`)
      return { key: existing, source: "file", path: file } as const
    }
    const key = generate()
    yield* Effect.tryPromise({
      try: async () => {
        await mkdir(path.dirname(file), { recursive: true })
        // `wx`: never overwrite a key another process wrote in the meantime
        await writeFile(file, `${key}\n`, { mode: 0o600, flag: "wx" })
        await chmod(file, 0o600)
      },
      catch: (cause) => cause
    }).pipe(
      Effect.catch((cause) =>
        errnoCode(cause) === "EEXIST" ? Effect.void : Effect.fail(fail(`cannot write (${errnoCode(cause)})`))
      )
    )
    // read back: the file is the source of truth (another process may have won the race)
    const stored = yield* Effect.tryPromise({
      try: () => readFile(file, "utf8"),
      catch: (c) => fail(`cannot read (${errnoCode(c)})`)
    })
    const storedKey = stored.trim()
    if (storedKey.length === 0) return yield* fail("the file is empty")
    const generated = storedKey === key
    yield* Effect.logInfo(generated ? `admin key: generated and stored in ${file}` : `admin key: read from ${file}`)
    return { key: storedKey, source: generated ? "generated" : "file", path: file } as const
  })

/**
 * Whether an `Authorization` header carries `Bearer <key>`, compared in
 * constant time.
 *
 * @since 0.1.0
 * @category predicates
 */
export const matchesBearer = (authorization: string | undefined, key: string): boolean => {
  const presented = bearer(authorization)
  // compare even when absent, so a missing header costs the same as a wrong one
  const equal = constantTimeEqualSecret(presented ?? "", key)
  return presented !== undefined && presented.length > 0 && equal
}

/**
 * The token of a `Bearer` authorization header, if any.
 *
 * @since 0.1.0
 * @category parsing
 */
export const bearer = (authorization: string | undefined): string | undefined => {
  if (authorization === undefined) return undefined
  const match = /^Bearer\s+(.+)$/i.exec(authorization.trim())
  return match === null ? undefined : match[1]!.trim()
}

/**
 * The admin key service.
 *
 * @since 0.1.0
 * @category services
 */
export class AdminKey extends Context.Service<AdminKey, { readonly key: string }>()("@relay-billing/relay/AdminKey") {
  /** A fixed key (tests, or a key resolved elsewhere). */
  static readonly layerKey = (key: string): Layer.Layer<AdminKey> => Layer.succeed(AdminKey, { key })
  /** Resolves the key with {@link resolve}. */
  static readonly layer = (options: Parameters<typeof resolve>[0] = {}): Layer.Layer<AdminKey, AdminKeyError> =>
    Layer.effect(AdminKey, Effect.map(resolve(options), (r) => ({ key: r.key })))
}
