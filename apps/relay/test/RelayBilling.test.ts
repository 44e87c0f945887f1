import { BillingSession } from "@relay-billing/core"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { HttpRouter } from "effect/http"
import { TestClock } from "effect/testing"
import { mkdtemp, rm, stat } from "node:fs/promises"
import { tmpdir } from "node:os"
import path from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import * as AdminApi from "../src/AdminApi.js"
import { AdminKey } from "../src/AdminKey.js"
import * as Config from "../src/Config.js"
import * as HttpListener from "../src/HttpListener.js"
import * as RelayBilling from "../src/RelayBilling.js"

/** Serves the admin API exactly as a server module would: from the loaded config. */
const serve = async (env: Record<string, string>, adminKeyPath: string) => {
  const loaded = await Effect.runPromise(Config.load(env))
  const scope = Effect.runSync(Scope.make())
  const app = HttpRouter.serve(AdminApi.routes({ groups: Object.keys(loaded.config.groups) }), {
    disableLogger: true,
    disableListenLog: true
  }).pipe(
    Layer.provideMerge(HttpListener.layer({ port: 0, host: "127.0.0.1" })),
    Layer.provideMerge(RelayBilling.layerFromConfig(loaded, { adminKeyPath }))
  )
  const context = await Effect.runPromise(Layer.buildWithScope(app, scope))
  const url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))
  return {
    url,
    key: Context.get(context, AdminKey).key,
    context,
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

describe("RelayBilling (wiring from the config)", () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "relay-billing-"))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("migrates a SQLite file, generates the admin key, and keeps data and key across restarts", async () => {
    const env = { RELAY_DATABASE_URL: `sqlite:${path.join(dir, "data", "relay.db")}` }
    const keyPath = path.join(dir, "data", "admin-key")
    const first = await serve(env, keyPath)
    let accountId: string
    try {
      expect((await stat(keyPath)).mode & 0o777).toBe(0o600)
      const created = await fetch(`${first.url}/admin/accounts`, {
        method: "POST",
        headers: { authorization: `Bearer ${first.key}`, "content-type": "application/json" },
        body: JSON.stringify({ quota: 77, group: "default" })
      })
      expect(created.status).toBe(201)
      accountId = ((await created.json()) as { id: string }).id
      // the built-in config has only the default group
      const vip = await fetch(`${first.url}/admin/accounts`, {
        method: "POST",
        headers: { authorization: `Bearer ${first.key}` },
        body: JSON.stringify({ group: "vip" })
      })
      expect(vip.status).toBe(400)
      expect(((await vip.json()) as any).error.field).toBe("group")
    } finally {
      await first.close()
    }
    const second = await serve(env, keyPath)
    try {
      expect(second.key).toBe(first.key)
      const read = await fetch(`${second.url}/admin/accounts/${accountId}`, {
        headers: { authorization: `Bearer ${second.key}` }
      })
      expect(read.status).toBe(200)
      expect(((await read.json()) as any).quota).toBe(77)
    } finally {
      await second.close()
    }
  })

  it("takes RELAY_ADMIN_KEY and the hold lifetime from the config", async () => {
    const configPath = path.join(dir, "relay.json")
    const { writeFile } = await import("node:fs/promises")
    await writeFile(configPath, JSON.stringify({ billing: { holdTtlSeconds: 7 } }))
    const server = await serve({
      RELAY_DATABASE_URL: `sqlite:${path.join(dir, "relay.db")}`,
      RELAY_ADMIN_KEY: "env-admin-key",
      RELAY_CONFIG: configPath
    }, path.join(dir, "unused", "admin-key"))
    try {
      expect(server.key).toBe("env-admin-key")
      await expect(stat(path.join(dir, "unused", "admin-key"))).rejects.toThrow()
      const call = (method: string, p: string, body?: unknown) =>
        fetch(`${server.url}${p}`, {
          method,
          headers: { authorization: "Bearer env-admin-key" },
          ...(body !== undefined ? { body: JSON.stringify(body) } : {})
        }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }))
      const account = await call("POST", "/admin/accounts", { quota: 1000 })
      // opened at a known instant of Effect's Clock: it expires exactly 7 s later
      const openedAt = Date.parse("2030-01-01T00:00:00.000Z")
      await Effect.runPromise(
        TestClock.setTime(openedAt).pipe(
          Effect.andThen(
            BillingSession.open({ holdId: "ttl-1", accountId: account.body.id, estimate: 10, playground: true })
          ),
          Effect.provideContext(server.context as Context.Context<BillingSession.BillingSession>),
          Effect.provide(TestClock.layer())
        )
      )
      const hold = await call("GET", "/admin/holds/ttl-1")
      expect(hold.status).toBe(200)
      expect(Date.parse(hold.body.expiresAt) - openedAt).toBe(7_000)
      expect(hold.body.tokenId).toBeUndefined()
      expect((await call("GET", "/admin/audit")).body).toEqual({ ok: true, problems: [] })
    } finally {
      await server.close()
    }
  })
})
