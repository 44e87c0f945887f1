import { Effect } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import path from "node:path"
import { describe, expect, it } from "vitest"
import * as Config from "../src/Config.js"

const decode = (input: unknown) => Effect.runPromise(Config.decodeConfig(input))
const fail = (input: unknown) => Effect.runPromise(Effect.flip(Config.decodeConfig(input)))

const channel = { name: "primary", baseUrl: "http://127.0.0.1:9000/v1", apiKey: "sk-up", models: ["gpt-4o-mini"] }

describe("Config.decodeConfig", () => {
  it("fills every default of relay-api.md", async () => {
    const config = await decode({})
    expect(config).toEqual({
      quotaPerUnit: 500_000,
      groups: { default: 1 },
      models: {},
      channels: [],
      billing: {
        trustQuota: null,
        holdTtlSeconds: 600,
        minPreConsumeTokens: 500,
        onClientDisconnect: "charge-prompt",
        retries: 2,
        reapIntervalSeconds: 30
      },
      limits: {
        maxBodyBytes: 8_388_608,
        maxJsonDepth: 64,
        upstreamIdleSeconds: 60,
        clientIdleSeconds: 60,
        maxRequestSeconds: 300
      },
      funding: { sources: [], preferences: {} }
    })
    const partial = await decode({
      billing: { retries: 0 },
      channels: [{ ...channel, apiKey: undefined }].map(({ apiKey: _, ...c }) => c)
    })
    expect(partial.billing.retries).toBe(0)
    expect(partial.billing.holdTtlSeconds).toBe(600)
    expect(partial.channels[0]).toEqual({ ...channel, apiKey: "", priority: 0 })
  })

  it("decodes the example of relay-api.md as written", async () => {
    const example = {
      quotaPerUnit: 500000,
      groups: { default: 1, vip: 0.8 },
      models: { "gpt-4o-mini": { modelRatio: 0.075, completionRatio: 4 }, "image-model": { price: 0.04 } },
      channels: [{ ...channel, priority: 0 }],
      billing: {
        trustQuota: null,
        holdTtlSeconds: 600,
        minPreConsumeTokens: 500,
        onClientDisconnect: "charge-prompt",
        retries: 2,
        reapIntervalSeconds: 30
      },
      limits: {
        maxBodyBytes: 8388608,
        maxJsonDepth: 64,
        upstreamIdleSeconds: 60,
        clientIdleSeconds: 60,
        maxRequestSeconds: 300
      },
      funding: {
        sources: [{ id: "vouchers", package: "relay-billing-source-vouchers", options: { table: "vouchers" } }],
        preferences: { vouchers_first: ["vouchers", "subscription", "wallet"] }
      }
    }
    const config = await decode(example)
    expect(config).toEqual(example)
    expect(Config.isFixedPrice(config.models["image-model"]!)).toBe(true)
    expect(Config.isFixedPrice(config.models["gpt-4o-mini"]!)).toBe(false)
  })

  it("adds the default group when the config omits it", async () => {
    expect((await decode({ groups: { vip: 0.8 } })).groups).toEqual({ default: 1, vip: 0.8 })
  })

  it("accepts limits at their bounds and keeps the defaults of the others", async () => {
    const low = await decode({
      limits: { maxBodyBytes: 1, maxJsonDepth: 1, upstreamIdleSeconds: 1, clientIdleSeconds: 1, maxRequestSeconds: 1 }
    })
    expect(low.limits).toEqual({
      maxBodyBytes: 1,
      maxJsonDepth: 1,
      upstreamIdleSeconds: 1,
      clientIdleSeconds: 1,
      maxRequestSeconds: 1
    })
    const high = await decode({ limits: { maxBodyBytes: 2 ** 30, maxJsonDepth: 1024, maxRequestSeconds: 86_400 } })
    expect(high.limits).toEqual({
      maxBodyBytes: 2 ** 30,
      maxJsonDepth: 1024,
      upstreamIdleSeconds: 60,
      clientIdleSeconds: 60,
      maxRequestSeconds: 86_400
    })
  })

  it("accepts trustQuota as an integer and each onClientDisconnect policy", async () => {
    expect((await decode({ billing: { trustQuota: 1000 } })).billing.trustQuota).toBe(1000)
    for (const policy of ["charge-prompt", "refund", "charge-streamed"] as const) {
      expect((await decode({ billing: { onClientDisconnect: policy } })).billing.onClientDisconnect).toBe(policy)
    }
  })

  it.each<[string, unknown, string]>([
    ["holdTtlSeconds 0", { billing: { holdTtlSeconds: 0 } }, "billing.holdTtlSeconds: expected ≥ 1, got 0"],
    [
      "holdTtlSeconds 1.5",
      { billing: { holdTtlSeconds: 1.5 } },
      "billing.holdTtlSeconds: expected an integer ≥ 1, got 1.5"
    ],
    [
      "issue 8 #6: holdTtlSeconds above 7 days",
      { billing: { holdTtlSeconds: 604_801 } },
      "billing.holdTtlSeconds: expected ≤ 604800 (7 days), got 604801"
    ],
    ["trustQuota -1", { billing: { trustQuota: -1 } }, "billing.trustQuota: expected ≥ 0, got -1"],
    ["trustQuota string", { billing: { trustQuota: "10" } }, "billing.trustQuota: "],
    [
      "minPreConsumeTokens -5",
      { billing: { minPreConsumeTokens: -5 } },
      "billing.minPreConsumeTokens: expected ≥ 0, got -5"
    ],
    [
      "onClientDisconnect",
      { billing: { onClientDisconnect: "charge-all" } },
      "billing.onClientDisconnect: expected \"charge-prompt\" | \"refund\" | \"charge-streamed\", got \"charge-all\""
    ],
    ["retries -1", { billing: { retries: -1 } }, "billing.retries: expected ≥ 0, got -1"],
    [
      "reapIntervalSeconds 0",
      { billing: { reapIntervalSeconds: 0 } },
      "billing.reapIntervalSeconds: expected ≥ 1, got 0"
    ],
    ["maxBodyBytes 0", { limits: { maxBodyBytes: 0 } }, "limits.maxBodyBytes: expected ≥ 1, got 0"],
    ["maxBodyBytes 1.5", { limits: { maxBodyBytes: 1.5 } }, "limits.maxBodyBytes: expected an integer ≥ 1, got 1.5"],
    [
      "maxBodyBytes above 1 GiB",
      { limits: { maxBodyBytes: 2 ** 30 + 1 } },
      "limits.maxBodyBytes: expected ≤ 1073741824 (1 GiB), got 1073741825"
    ],
    ["maxBodyBytes string", { limits: { maxBodyBytes: "8MB" } }, "limits.maxBodyBytes: expected number, got \"8MB\""],
    ["maxJsonDepth -1", { limits: { maxJsonDepth: -1 } }, "limits.maxJsonDepth: expected ≥ 1, got -1"],
    ["maxJsonDepth 5000", { limits: { maxJsonDepth: 5000 } }, "limits.maxJsonDepth: expected ≤ 1024, got 5000"],
    [
      "upstreamIdleSeconds 0",
      { limits: { upstreamIdleSeconds: 0 } },
      "limits.upstreamIdleSeconds: expected ≥ 1, got 0"
    ],
    [
      "upstreamIdleSeconds 0.5",
      { limits: { upstreamIdleSeconds: 0.5 } },
      "limits.upstreamIdleSeconds: expected an integer ≥ 1, got 0.5"
    ],
    [
      "clientIdleSeconds above a day",
      { limits: { clientIdleSeconds: 86_401 } },
      "limits.clientIdleSeconds: expected ≤ 86400 (1 day), got 86401"
    ],
    [
      "maxRequestSeconds null",
      { limits: { maxRequestSeconds: null } },
      "limits.maxRequestSeconds: expected number, got null"
    ],
    [
      "maxRequestSeconds Infinity",
      { limits: { maxRequestSeconds: Infinity } },
      "limits.maxRequestSeconds: expected an integer ≥ 1, got Infinity"
    ],
    ["unknown limits key", { limits: { maxBodySize: 10 } }, "limits.maxBodySize: unknown key, got 10"],
    ["unknown billing key", { billing: { holdTTLSeconds: 5 } }, "billing.holdTTLSeconds: unknown key, got 5"],
    ["unknown top-level key", { quota: 1 }, "quota: unknown key, got 1"],
    ["quotaPerUnit 0", { quotaPerUnit: 0 }, "quotaPerUnit: expected a finite number > 0, got 0"],
    ["group ratio -1", { groups: { vip: -1 } }, "groups.vip: expected a finite number ≥ 0, got -1"],
    [
      "modelRatio -1",
      { models: { m: { modelRatio: -1, completionRatio: 1 } } },
      "models.m.modelRatio: expected a finite number ≥ 0, got -1"
    ],
    ["price string", { models: { m: { price: "0.04" } } }, "models.m.price: expected number, got \"0.04\""],
    ["completionRatio missing", { models: { m: { modelRatio: 1 } } }, "models.m.completionRatio: missing key"],
    [
      "channel name empty",
      { channels: [{ ...channel, name: "" }] },
      "channels.0.name: expected a non-empty string, got \"\""
    ],
    [
      "channel baseUrl",
      { channels: [{ ...channel, baseUrl: "127.0.0.1:9000" }] },
      "channels.0.baseUrl: expected an http(s) URL (or demo:) with its version prefix, got \"127.0.0.1:9000\""
    ],
    [
      "channel models empty",
      { channels: [{ ...channel, models: [] }] },
      "channels.0.models: expected at least one model, got []"
    ],
    [
      "channel priority 0.5",
      { channels: [{ ...channel, priority: 0.5 }] },
      "channels.0.priority: expected an integer, got 0.5"
    ],
    ["channel apiKey number", { channels: [{ ...channel, apiKey: 5 }] }, "channels.0.apiKey: expected string, got 5"],
    [
      "duplicate channel names",
      { channels: [channel, { ...channel, baseUrl: "http://127.0.0.1:9001/v1" }] },
      "channels.1.name: expected a unique channel name, \"primary\" is repeated, got \"primary\""
    ],
    ["not an object", [], "(root): expected object"]
  ])("names the field and value: %s", async (_, input, message) => {
    const error = await fail(input)
    expect(error).toBeInstanceOf(Config.ConfigError)
    expect(error.message.startsWith(message)).toBe(true)
  })

  it("carries field, value and reason on the typed error", async () => {
    const error = await fail({ billing: { holdTtlSeconds: 0 } })
    expect(error._tag).toBe("ConfigError")
    expect(error.code).toBe("config_error")
    expect({ field: error.field, value: error.value, reason: error.reason }).toEqual({
      field: "billing.holdTtlSeconds",
      value: "0",
      reason: "expected ≥ 1"
    })
  })
})

describe("Config.defaultConfig", () => {
  it("has the demo responder as its only channel, serving a token-priced model `demo`", async () => {
    const config = await Effect.runPromise(Config.defaultConfig)
    expect(config.channels).toEqual([{
      name: "demo",
      baseUrl: Config.DEMO_BASE_URL,
      apiKey: "",
      models: ["demo"],
      priority: 0
    }])
    expect(config.models["demo"]).toEqual({ modelRatio: 1, completionRatio: 1 })
    expect(config.billing.holdTtlSeconds).toBe(600)
  })
})

describe("Config.load", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "relay-config-"))

  it("uses the built-in config and the environment defaults", async () => {
    const loaded = await Effect.runPromise(Config.load({}))
    expect(loaded.port).toBe(3000)
    expect(loaded.host).toBe("127.0.0.1")
    expect(loaded.databaseUrl).toBe("sqlite:./data/relay.db")
    expect(loaded.adminKey).toBeUndefined()
    expect(loaded.configSource).toBe("built-in")
    expect(loaded.config.channels.map((c) => c.name)).toEqual(["demo"])
    expect(loaded.config.limits).toMatchObject({ maxBodyBytes: 8_388_608, maxJsonDepth: 64 })
  })

  it("reads RELAY_HOST (an IP address or a host name)", async () => {
    for (const host of ["0.0.0.0", "::", "::1", "10.1.2.3", "localhost", "relay.internal"]) {
      expect((await Effect.runPromise(Config.load({ RELAY_HOST: host }))).host).toBe(host)
    }
    const error = await Effect.runPromise(Effect.flip(Config.load({ RELAY_HOST: "http://0.0.0.0:80" })))
    expect(error.field).toBe("RELAY_HOST")
    expect(error.message).toContain("http://0.0.0.0:80")
  })

  it("reads limits.maxBodyBytes and limits.maxJsonDepth, naming a bad value", async () => {
    const file = path.join(dir, "limits.json")
    writeFileSync(file, JSON.stringify({ limits: { maxBodyBytes: 1024, maxJsonDepth: 8 } }))
    const loaded = await Effect.runPromise(Config.load({ RELAY_CONFIG: file }))
    expect(loaded.config.limits).toMatchObject({ maxBodyBytes: 1024, maxJsonDepth: 8 })
    writeFileSync(file, JSON.stringify({ limits: { maxBodyBytes: 0 } }))
    const error = await Effect.runPromise(Effect.flip(Config.load({ RELAY_CONFIG: file })))
    expect(error.field).toBe("limits.maxBodyBytes")
    writeFileSync(file, JSON.stringify({ limits: { maxJsonDepth: 1.5 } }))
    const depth = await Effect.runPromise(Effect.flip(Config.load({ RELAY_CONFIG: file })))
    expect(depth.field).toBe("limits.maxJsonDepth")
  })

  it("reads RELAY_CONFIG, RELAY_PORT, RELAY_DATABASE_URL and RELAY_ADMIN_KEY", async () => {
    const file = path.join(dir, "ok.json")
    writeFileSync(file, JSON.stringify({ models: { m: { price: 0.04 } }, channels: [{ ...channel, models: ["m"] }] }))
    const loaded = await Effect.runPromise(
      Config.load({
        RELAY_CONFIG: file,
        RELAY_PORT: "0",
        RELAY_DATABASE_URL: "postgres://u:p@localhost/db",
        RELAY_ADMIN_KEY: "admin-secret",
        PATH: "/usr/bin"
      })
    )
    expect(loaded).toMatchObject({ port: 0, databaseUrl: "postgres://u:p@localhost/db", adminKey: "admin-secret" })
    expect(loaded.configSource).toBe(file)
    expect(loaded.config.channels[0]!.models).toEqual(["m"])
    // empty variables count as unset
    expect((await Effect.runPromise(Config.load({ RELAY_PORT: "", RELAY_CONFIG: "" }))).port).toBe(3000)
  })

  it.each<[Record<string, string>, string]>([
    [{ RELAY_PORT: "abc" }, "RELAY_PORT: expected a TCP port (an integer from 0 to 65535), got \"abc\""],
    [{ RELAY_PORT: "70000" }, "RELAY_PORT: expected a TCP port (an integer from 0 to 65535), got \"70000\""],
    [
      { RELAY_DATABASE_URL: "redis://x" },
      "RELAY_DATABASE_URL: expected sqlite:PATH, postgres://… or mysql://…, got \"redis://x\""
    ]
  ])("names a bad environment variable: %o", async (env, message) => {
    const error = await Effect.runPromise(Effect.flip(Config.load(env)))
    expect(error.message.startsWith(message)).toBe(true)
  })

  it("names the config file and the field of an invalid file", async () => {
    const file = path.join(dir, "bad.json")
    writeFileSync(file, JSON.stringify({ billing: { holdTtlSeconds: 0 } }))
    const error = await Effect.runPromise(Effect.flip(Config.load({ RELAY_CONFIG: file })))
    expect(error.message).toBe(`billing.holdTtlSeconds: expected ≥ 1, got 0 (in ${file})`)
  })

  it("reports an unreadable file and invalid JSON", async () => {
    const missing = path.join(dir, "missing.json")
    const e1 = await Effect.runPromise(Effect.flip(Config.load({ RELAY_CONFIG: missing })))
    expect(e1.field).toBe("RELAY_CONFIG")
    expect(e1.message).toContain("ENOENT")
    expect(e1.message).toContain(missing)
    const broken = path.join(dir, "broken.json")
    writeFileSync(broken, "{ not json")
    const e2 = await Effect.runPromise(Effect.flip(Config.load({ RELAY_CONFIG: broken })))
    expect(e2.message).toContain("expected JSON")
    expect(e2.source).toBe(broken)
  })
})

describe("Config funding", () => {
  const vouchers = { id: "vouchers", package: "relay-billing-source-vouchers", options: { table: "vouchers" } }

  it("decodes the example of relay-api.md and fills the defaults", async () => {
    const config = await decode({
      funding: { sources: [vouchers], preferences: { vouchers_first: ["vouchers", "subscription", "wallet"] } }
    })
    expect(config.funding).toEqual({
      sources: [vouchers],
      preferences: { vouchers_first: ["vouchers", "subscription", "wallet"] }
    })
    const bare = await decode({ funding: { sources: [{ id: "credits", package: "@acme/credits" }] } })
    expect(bare.funding).toEqual({
      sources: [{ id: "credits", package: "@acme/credits", options: {} }],
      preferences: {}
    })
    const builtIns = await decode({ funding: { preferences: { plan_strict: ["subscription"] } } })
    expect(builtIns.funding.preferences).toEqual({ plan_strict: ["subscription"] })
  })

  const invalid: ReadonlyArray<readonly [string, unknown, string, string]> = [
    ["a missing package", { sources: [{ id: "vouchers" }] }, "funding.sources.0.package", ""],
    ["an empty package", { sources: [{ id: "vouchers", package: "" }] }, "funding.sources.0.package", "\"\""],
    ["a built-in id", { sources: [{ id: "wallet", package: "p" }] }, "funding.sources.0.id", "\"wallet\""],
    ["the token budget's id", { sources: [{ id: "token", package: "p" }] }, "funding.sources.0.id", "\"token\""],
    ["a malformed id", { sources: [{ id: "my vouchers", package: "p" }] }, "funding.sources.0.id", "\"my vouchers\""],
    [
      "a repeated id",
      { sources: [vouchers, { ...vouchers, package: "other" }] },
      "funding.sources.1.id",
      "\"vouchers\""
    ],
    ["an unknown key", { sources: [{ ...vouchers, option: {} }] }, "funding.sources.0.option", "{}"],
    [
      "a chain naming an unknown source",
      { preferences: { credits_first: ["credits", "wallet"] } },
      "funding.preferences.credits_first.0",
      "\"credits\""
    ],
    ["an empty chain", { preferences: { nothing: [] } }, "funding.preferences.nothing", "[]"],
    [
      "a repeated source",
      { preferences: { twice: ["wallet", "wallet"] } },
      "funding.preferences.twice.1",
      "\"wallet\""
    ],
    [
      "a built-in name",
      { preferences: { wallet_first: ["subscription"] } },
      "funding.preferences.wallet_first",
      "[\"subscription\"]"
    ],
    [
      "a name longer than 32 characters",
      { preferences: { ["n".repeat(33)]: ["wallet"] } },
      `funding.preferences.${"n".repeat(33)}`,
      "[\"wallet\"]"
    ]
  ]
  it.each(invalid)("refuses %s, naming the field", async (_, funding, field, value) => {
    const error = await fail({ funding })
    expect(error._tag).toBe("ConfigError")
    expect(error.field).toBe(field)
    expect(error.value).toBe(value)
  })
})
