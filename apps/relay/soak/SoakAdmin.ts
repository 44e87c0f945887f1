/**
 * The soak probe's admin client: the relay's admin API (`relay-api.md`) with
 * the admin key — funding accounts and tokens before the burst, reading
 * balances, token budgets and the audit after it.
 *
 * @since 0.1.0
 */

/** A funded account and its token, with their figures at creation. */
export interface Funded {
  readonly accountId: string
  readonly tokenId: string
  readonly key: string
  readonly initialQuota: number
  readonly initialRemain: number
}

/** An admin API response (the JSON body parsed). */
export interface AdminResponse {
  readonly status: number
  readonly body: any
}

/** The admin client of a relay at `url`. */
export const client = (url: string, adminKey: string) => {
  const call = async (method: string, route: string, body?: unknown): Promise<AdminResponse> => {
    const response = await fetch(`${url}${route}`, {
      method,
      headers: {
        authorization: `Bearer ${adminKey}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {})
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {})
    })
    const text = await response.text()
    return { status: response.status, body: text === "" ? undefined : JSON.parse(text) }
  }

  /** Creates an account with `quota` in its wallet and a token limited to `remainQuota`. */
  const fund = async (name: string, quota: number, remainQuota: number): Promise<Funded> => {
    const account = await call("POST", "/admin/accounts", { name, quota })
    if (account.status !== 201) {
      throw new Error(`soak: POST /admin/accounts answered ${account.status}: ${JSON.stringify(account.body)}`)
    }
    const token = await call("POST", "/admin/tokens", { accountId: account.body.id, remainQuota })
    if (token.status !== 201) {
      throw new Error(`soak: POST /admin/tokens answered ${token.status}: ${JSON.stringify(token.body)}`)
    }
    return {
      accountId: String(account.body.id),
      tokenId: String(token.body.id),
      key: String(token.body.key),
      initialQuota: Number(account.body.quota),
      initialRemain: Number(token.body.remainQuota)
    }
  }

  /** The account's wallet balance and `usedQuota`, and its token's `remainQuota`, now. */
  const state = async (funded: Funded) => {
    const account = await call("GET", `/admin/accounts/${encodeURIComponent(funded.accountId)}`)
    const token = await call("GET", `/admin/tokens/${encodeURIComponent(funded.tokenId)}`)
    return {
      accountId: funded.accountId,
      tokenId: funded.tokenId,
      initialQuota: funded.initialQuota,
      quota: Number(account.body?.quota),
      usedQuota: Number(account.body?.usedQuota),
      initialRemain: funded.initialRemain,
      remainQuota: Number(token.body?.remainQuota)
    }
  }

  /** `GET /admin/audit`. */
  const audit = async () => {
    const response = await call("GET", "/admin/audit")
    return {
      status: response.status,
      ok: response.body?.ok === true,
      problems: Array.isArray(response.body?.problems) ? (response.body.problems as Array<unknown>) : []
    }
  }

  return { call, fund, state, audit }
}
