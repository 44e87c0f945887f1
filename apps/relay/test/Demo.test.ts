import { WalletAdmin } from "@relay-billing/wallet"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import path from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import * as Cli from "../src/Cli.js"
import * as Config from "../src/Config.js"
import * as Demo from "../src/Demo.js"
import * as RelayBilling from "../src/RelayBilling.js"
import { RelayStore } from "../src/RelayStore.js"

/** One "start": opens the database (migrating it), runs `f`, closes it. */
const start = async <A>(
  url: string,
  f: (context: Context.Context<RelayBilling.Services>) => Promise<A>
): Promise<A> => {
  const scope = Effect.runSync(Scope.make())
  try {
    const context = await Effect.runPromise(Layer.buildWithScope(RelayBilling.layerUrl(url), scope))
    return await f(context)
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

const bootstrap = (context: Context.Context<RelayBilling.Services>, options: Demo.Options) =>
  Effect.runPromise(Demo.bootstrap({ print: false, ...options }).pipe(Effect.provideContext(context)))

describe("Demo.bootstrap", () => {
  let dir: string
  let url: string
  let file: string
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "relay-demo-"))
    url = `sqlite:${path.join(dir, "relay.db")}`
    file = path.join(dir, "data", "demo-token")
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("creates the demo account and token once, stores the key with mode 0600, and reuses them on the next start", async () => {
    const first = await start(url, (context) => bootstrap(context, { path: file, baseUrl: "http://127.0.0.1:4321" }))
    expect(first).toMatchObject({ accountId: Demo.ACCOUNT_ID, createdAccount: true, createdToken: true, path: file })
    expect(first.key).toMatch(/^sk-[0-9A-Za-z]{48}$/)
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    expect(JSON.parse(await readFile(file, "utf8"))).toEqual({
      accountId: Demo.ACCOUNT_ID,
      tokenId: first.tokenId,
      key: first.key
    })
    expect(first.curl).toBe(
      `curl http://127.0.0.1:4321/v1/chat/completions -H "Authorization: Bearer ${first.key}" ` +
        `-H "Content-Type: application/json" -d '{"model":"demo","messages":[{"role":"user","content":"Hello!"}]}'`
    )

    const second = await start(url, async (context) => {
      const again = await bootstrap(context, { path: file })
      // the key authenticates for the demo account, whose quota was funded once
      const principal = await Effect.runPromise(Context.get(context, RelayStore).authenticate(again.key))
      expect(principal).toMatchObject({ accountId: Demo.ACCOUNT_ID, tokenId: again.tokenId, models: undefined })
      const account = await Effect.runPromise(Context.get(context, WalletAdmin.WalletAdmin).account(Demo.ACCOUNT_ID))
      expect(account.balance).toBe(1_000_000)
      const token = await Effect.runPromise(Context.get(context, WalletAdmin.WalletAdmin).token(again.tokenId))
      expect(token.unlimited).toBe(true)
      return again
    })
    expect(second).toMatchObject({ key: first.key, tokenId: first.tokenId, createdAccount: false, createdToken: false })
  })

  it("issues a new token (not a new account) when the token file is lost or stale", async () => {
    const first = await start(url, (context) => bootstrap(context, { path: file, quota: 5000 }))
    await rm(file)
    const second = await start(url, (context) => bootstrap(context, { path: file, quota: 5000 }))
    expect(second).toMatchObject({ createdAccount: false, createdToken: true })
    expect(second.key).not.toBe(first.key)
    await writeFile(file, JSON.stringify({ accountId: Demo.ACCOUNT_ID, tokenId: "tok_x", key: "sk-not-a-real-key" }))
    const third = await start(url, async (context) => {
      const result = await bootstrap(context, { path: file, quota: 5000 })
      expect((await Effect.runPromise(Context.get(context, WalletAdmin.WalletAdmin).account(Demo.ACCOUNT_ID))).balance)
        .toBe(5000)
      return result
    })
    expect(third).toMatchObject({ createdAccount: false, createdToken: true })
    expect(JSON.parse(await readFile(file, "utf8")).key).toBe(third.key)
    expect((await stat(file)).mode & 0o777).toBe(0o600)
  })

  it("the banner prints the key and the curl command", async () => {
    const result = await start(url, (context) => bootstrap(context, { path: file }))
    const text = Demo.banner(result)
    expect(text).toContain(result.key)
    expect(text).toContain(result.curl)
  })

  it("serve's bootstrap runs only with the built-in demo config", async () => {
    const config = await Effect.runPromise(Config.defaultConfig)
    const builtIn: Config.Loaded = {
      port: 3999,
      databaseUrl: url,
      adminKey: undefined,
      configSource: "built-in",
      config
    }
    const ran = await Effect.runPromise(Cli.runDemoBootstrap(builtIn, { path: file, print: false }))
    expect(ran?.curl).toContain("http://127.0.0.1:3999/v1/chat/completions")
    const fromFile = await Effect.runPromise(
      Cli.runDemoBootstrap({ ...builtIn, configSource: "/etc/relay.json" }, {
        path: path.join(dir, "other"),
        print: false
      })
    )
    expect(fromFile).toBeUndefined()
    await expect(stat(path.join(dir, "other"))).rejects.toThrow()
  })
})
