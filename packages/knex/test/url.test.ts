import { describe, expect, it } from "vitest"
import { connectionConfig } from "../src/internal/url.js"

describe("database URLs", () => {
  it("sqlite:PATH is a better-sqlite3 file with one connection", () => {
    const c = connectionConfig("sqlite:/tmp/rb-url-test/x.db", {})
    expect(c.client).toBe("better-sqlite3")
    expect(c.connection).toEqual({ filename: "/tmp/rb-url-test/x.db" })
    expect(c.pool).toMatchObject({ min: 1, max: 1 })
  })
  it("sqlite::memory: and sqlite://PATH", () => {
    expect(connectionConfig("sqlite::memory:", {}).connection).toEqual({ filename: ":memory:" })
    expect(connectionConfig("sqlite:///tmp/rb-url-test/y.db", {}).connection).toEqual({
      filename: "/tmp/rb-url-test/y.db"
    })
  })
  it("postgres:// and postgresql:// with a schema as search path", () => {
    const c = connectionConfig("postgres://u@h:5432/db", { schema: "s1", poolMax: 4 })
    expect(c.client).toBe("pg")
    expect(c.searchPath).toEqual(["s1"])
    expect(c.pool).toMatchObject({ max: 4 })
    expect(connectionConfig("postgresql://u@h/db", {}).client).toBe("pg")
  })
  it("mysql:// and mariadb:// with credentials decoded", () => {
    const c = connectionConfig("mariadb://ro%40t:p%2Fw@db.local:3307/billing", {})
    expect(c.client).toBe("mysql2")
    expect(c.connection).toMatchObject({
      host: "db.local",
      port: 3307,
      user: "ro@t",
      password: "p/w",
      database: "billing"
    })
  })
  it("an unsupported URL is rejected without echoing the password", () => {
    expect(() => connectionConfig("oracle://scott:tiger@h/db", {})).toThrow(
      /unsupported database URL "oracle:\/\/\*\*\*@h\/db"/
    )
    expect(() => connectionConfig("sqlite:", {})).toThrow(/no file name/)
  })
})
