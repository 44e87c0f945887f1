/**
 * The admin API of `relay-api.md` (`/admin/*`, bearer admin key, JSON): accounts,
 * top-ups, tokens, plans, subscriptions, holds, the reaper, request logs and
 * the audit, as `effect/http` routes over the SDK's admin services and the
 * {@link RelayStore}.
 *
 * Errors: 401 `invalid_api_key` for a missing or wrong admin key, 400
 * `invalid_request` naming the offending `field`, 404 `not_found` for an
 * unknown id (in the path, the body or the query) naming its field, 409 for a
 * conflicting idempotency key, 500 `store_error` for a database failure.
 *
 * Extension (compatible): `PATCH /admin/tokens/:id` `{status: "active"|"disabled"}`.
 *
 * Request ids are scoped to the account (issue 9 #8): `GET /admin/holds/:requestId`
 * and its corrections take an optional `?accountId=`; without it the request
 * id must have been used by one account only (else 409
 * `ambiguous_request_id`, field `accountId`). The hold's `id` is the request
 * id.
 *
 * Corrections (issue 8 #14): `POST /admin/holds/:requestId/corrections`
 * `{amount, id}` gives back part or all of a settled request's charge
 * (idempotent by `id`); 404 for an unknown request, 409 `hold_not_settled`,
 * `idempotency_conflict`, `correction_exceeds_charge` or
 * `correction_unsupported`, 400 for a bad body.
 *
 * @since 0.1.0
 */
import { BillingSession, FundingRegistry, Preference, Source } from "@relay-billing/core"
import type { BillingError, Hold } from "@relay-billing/core"
import { Accounts, KnexClient } from "@relay-billing/knex"
import { SubscriptionAdmin } from "@relay-billing/subscription"
import { WalletAdmin } from "@relay-billing/wallet"
import type { WalletError } from "@relay-billing/wallet"
import type { Layer } from "effect"
import { Effect, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { randomUUID } from "node:crypto"
import { AdminKey, matchesBearer } from "./AdminKey.js"
import * as Api from "./internal/apiError.js"
import { holdIdOf, isRequestId, isScopableAccountId } from "./internal/requestIds.js"
import { generateId } from "./internal/secrets.js"
import { countRequest } from "./Metrics.js"
import * as RelayBilling from "./RelayBilling.js"
import { BillingPreference, RelayStore } from "./RelayStore.js"
import type { AccountMeta } from "./RelayStore.js"

// ---------------------------------------------------------------------------
// bodies
// ---------------------------------------------------------------------------

const MAX_SAFE = Number.MAX_SAFE_INTEGER
const Amount = Schema.Int.check(
  Schema.isGreaterThanOrEqualTo(0, { message: "expected an integer ≥ 0" }),
  Schema.isLessThanOrEqualTo(MAX_SAFE, { message: "expected a safe integer" })
)
const PositiveAmount = Schema.Int.check(
  Schema.isGreaterThan(0, { message: "expected an integer > 0" }),
  Schema.isLessThanOrEqualTo(MAX_SAFE, { message: "expected a safe integer" })
)
const Id = Schema.String.check(
  Schema.isMinLength(1, { message: "expected a non-empty string" }),
  Schema.isMaxLength(191, { message: "expected at most 191 characters" })
)
const Name = Schema.String.check(Schema.isMaxLength(255, { message: "expected at most 255 characters" }))
const Group = Id
const IsoTime = Schema.String.check(
  Schema.makeFilter((s: string) =>
    /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(s) && Number.isFinite(Date.parse(s))
      ? undefined
      : "expected an ISO-8601 time"
  )
)

/**
 * `POST /admin/accounts`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const CreateAccountBody = Schema.Struct({
  name: Schema.optionalKey(Name),
  quota: Schema.optionalKey(Amount),
  group: Schema.optionalKey(Group),
  billingPreference: Schema.optionalKey(BillingPreference),
  quotaWarningThreshold: Schema.optionalKey(Amount)
})

/**
 * `PATCH /admin/accounts/:id`; `quotaWarningThreshold: null` restores the default.
 *
 * @since 0.1.0
 * @category schemas
 */
export const PatchAccountBody = Schema.Struct({
  group: Schema.optionalKey(Group),
  billingPreference: Schema.optionalKey(BillingPreference),
  quotaWarningThreshold: Schema.optionalKey(Schema.NullOr(Amount))
})

/**
 * `POST /admin/accounts/:id/topup`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const TopUpBody = Schema.Struct({
  amount: PositiveAmount,
  idempotencyKey: Schema.optionalKey(Schema.String.check(
    Schema.isMinLength(1, { message: "expected a non-empty string" }),
    Schema.isMaxLength(128, { message: "expected at most 128 characters" })
  ))
})

/**
 * `POST /admin/tokens`. Without `remainQuota` and `unlimited` the token is
 * unlimited; with `remainQuota` it is limited unless `unlimited: true`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const CreateTokenBody = Schema.Struct({
  accountId: Id,
  name: Schema.optionalKey(Name),
  remainQuota: Schema.optionalKey(Amount),
  unlimited: Schema.optionalKey(Schema.Boolean),
  models: Schema.optionalKey(Schema.NullOr(Schema.Array(Id))),
  expiresAt: Schema.optionalKey(Schema.NullOr(IsoTime))
})

/**
 * `PATCH /admin/tokens/:id` (extension).
 *
 * @since 0.1.0
 * @category schemas
 */
export const PatchTokenBody = Schema.Struct({
  status: Schema.Literals(["active", "disabled"])
})

/**
 * `POST /admin/plans`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const CreatePlanBody = Schema.Struct({
  title: Schema.String.check(
    Schema.isMinLength(1, { message: "expected a non-empty string" }),
    Schema.isMaxLength(255, { message: "expected at most 255 characters" })
  ),
  totalAmount: Amount,
  resetPeriod: Schema.Literals(["never", "daily", "weekly", "monthly", "custom"]),
  resetSeconds: Schema.optionalKey(PositiveAmount),
  durationSeconds: PositiveAmount,
  allowWalletOverflow: Schema.optionalKey(Schema.Boolean)
})

/**
 * `POST /admin/subscriptions`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const CreateSubscriptionBody = Schema.Struct({
  accountId: Id,
  planId: Id
})

/**
 * `POST /admin/holds/:requestId/corrections` (issue 8 #14, billing-semantics
 * §4.4): give back `amount` of a settled request's charge; `id` is the
 * correction's idempotency key.
 *
 * @since 0.2.0
 * @category schemas
 */
export const CorrectionBody = Schema.Struct({
  amount: PositiveAmount,
  id: Id
})

const HoldQuery = Schema.Struct({
  accountId: Schema.optionalKey(Id)
})

const LogsQuery = Schema.Struct({
  accountId: Schema.optionalKey(Id),
  limit: Schema.optionalKey(Schema.String.check(
    Schema.makeFilter((s: string) =>
      /^\d{1,4}$/.test(s) && Number(s) >= 1 && Number(s) <= 1000 ? undefined : "expected an integer from 1 to 1000"
    )
  ))
})

// ---------------------------------------------------------------------------
// responses
// ---------------------------------------------------------------------------

/**
 * An account as the admin API shows it.
 *
 * @since 0.1.0
 * @category models
 */
export interface AccountView {
  readonly id: string
  readonly name: string
  readonly quota: number
  readonly usedQuota: number
  readonly requestCount: number
  readonly group: string
  readonly billingPreference: string
}

const iso = (ms: number): string => new Date(ms).toISOString()

/**
 * `usedQuota` is the SDK's counter: what the account was charged (A less any
 * unbilled overflow, billing-semantics §3.4) less corrections (§4.4) — what
 * relay-api.md calls what was actually paid.
 */
const accountView = (meta: AccountMeta, wallet: WalletAdmin.Account): AccountView => ({
  id: meta.id,
  name: meta.name,
  quota: wallet.balance,
  usedQuota: wallet.usedQuota,
  requestCount: wallet.requestCount,
  group: meta.group,
  billingPreference: meta.billingPreference
})

const subscriptionView = (s: SubscriptionAdmin.Subscription) => ({
  id: s.id,
  accountId: s.accountId,
  planId: s.planId,
  amountTotal: s.total,
  amountUsed: s.used,
  startAt: iso(s.startAt),
  endAt: iso(s.endAt),
  status: s.status
})

const planView = (p: SubscriptionAdmin.Plan) => ({
  id: p.id,
  title: p.name,
  totalAmount: p.totalAmount,
  resetPeriod: p.resetPeriod,
  ...(p.resetSeconds !== undefined ? { resetSeconds: p.resetSeconds } : {}),
  durationSeconds: p.durationSeconds,
  allowWalletOverflow: p.allowWalletOverflow
})

/**
 * A hold as the admin API shows it: budget parts have `source: "token"`,
 * funding parts the funding source id; `unbilled` sums the settlement parts'
 * unbilled overflow.
 *
 * @since 0.1.0
 * @category views
 */
export const holdView = (hold: Hold.Hold) => {
  const requestId = hold.metadata?.["requestId"] ?? hold.id
  const settled = hold.settlement
  const parts = hold.parts.map((part, i) => {
    const candidates = settled?.parts ?? []
    const same = (s: (typeof candidates)[number]) =>
      s.kind === part.kind && s.sourceId === part.sourceId && s.subjectId === part.subjectId
    const match = candidates[i] !== undefined && same(candidates[i]!) ? candidates[i] : candidates.find(same)
    return {
      source: part.kind === "budget" ? "token" : part.sourceId,
      ref: part.ref ?? part.subjectId,
      reserved: part.amount,
      ...(match !== undefined ? { charged: match.charged } : {})
    }
  })
  return {
    id: requestId,
    accountId: hold.accountId,
    ...(hold.tokenId !== undefined ? { tokenId: hold.tokenId } : {}),
    status: hold.status,
    reserved: hold.reserved,
    ...(settled !== undefined
      ? { actual: settled.actual, unbilled: settled.parts.reduce((sum, p) => sum + p.unbilled, 0) }
      : {}),
    parts,
    expiresAt: iso(hold.expiresAt)
  }
}

/**
 * A correction as the admin API shows it: what each part got back (`source`
 * as in {@link holdView}) and what is still charged on the request.
 *
 * @since 0.2.0
 * @category views
 */
export const correctionView = (result: BillingSession.CorrectionResult, requestId: string = result.holdId) => ({
  requestId,
  id: result.id,
  amount: result.amount,
  remaining: result.remaining,
  parts: result.parts.map((p) => ({
    source: p.kind === "budget" ? "token" : p.sourceId,
    ref: p.subjectId,
    amount: p.amount
  })),
  correctedAt: iso(result.correctedAt)
})

/**
 * The typed failures of a correction, as HTTP errors: 404 for an unknown
 * request, 409 for a request that is not settled, a correction id reused with
 * another amount, an amount above what is still charged, or a source that
 * cannot correct. Anything else goes to the common mapping.
 */
const correctionErrors = <A, R>(effect: Effect.Effect<A, BillingSession.CorrectError, R>) =>
  Effect.catchTags(effect, {
    HoldNotFound: (e) => Effect.fail(Api.notFound("requestId", e.message)),
    HoldResolved: (e) => Effect.fail(Api.conflict("hold_not_settled", "requestId", e.message)),
    IdempotencyConflict: (e) => Effect.fail(Api.conflict("idempotency_conflict", "id", e.message)),
    CorrectionExceedsCharge: (e) => Effect.fail(Api.conflict("correction_exceeds_charge", "amount", e.message)),
    CorrectionUnsupported: (e) => Effect.fail(Api.conflict("correction_unsupported", "requestId", e.message))
  })

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

/** SDK input field names → the admin API's. */
const FIELD_NAMES: Record<string, string> = {
  balance: "quota",
  lowBalanceThreshold: "quotaWarningThreshold",
  threshold: "quotaWarningThreshold",
  remain: "remainQuota",
  name: "title",
  key: "idempotencyKey"
}

/** Every failure of an admin handler; {@link renderFailure} maps each by its tag. */
type AdminError =
  | Api.ApiError
  | BillingError.InvalidInput
  | BillingError.AccountNotFound
  | BillingError.TokenNotFound
  | SubscriptionAdmin.PlanNotFound
  | SubscriptionAdmin.SubscriptionNotFound
  | BillingError.HoldNotFound
  | BillingError.IdempotencyConflict
  | WalletError.AccountExists
  | WalletError.TokenExists
  | SubscriptionAdmin.AlreadyExists
  | BillingError.StoreError
  // 500 internal_error (the SDK refused or failed in a way the admin cannot fix by input)
  | BillingError.InsufficientFunds
  | BillingError.ContractViolation
  | BillingError.QuotaOutOfRange
  | BillingError.UnknownSource

const fail = (error: Api.ApiError) => Effect.succeed(Api.toResponse(error))

/** Renders every failure of an admin handler as an HTTP error, matched by tag. */
const renderFailure = <A, R>(
  effect: Effect.Effect<A, AdminError, R>
): Effect.Effect<A | HttpServerResponse.HttpServerResponse, never, R> =>
  Effect.catchTags(effect, {
    ApiError: (e) => fail(e),
    InvalidInput: (e) => {
      const field = FIELD_NAMES[e.field] ?? e.field
      return fail(Api.invalidRequest(field, `${field}: ${e.reason}${e.value ? `, got ${e.value}` : ""}`))
    },
    AccountNotFound: (e) => fail(Api.notFound("accountId", e.message)),
    TokenNotFound: (e) => fail(Api.notFound("id", e.message)),
    PlanNotFound: (e) => fail(Api.notFound("planId", e.message)),
    SubscriptionNotFound: (e) => fail(Api.notFound("id", e.message)),
    HoldNotFound: (e) => fail(Api.notFound("requestId", e.message)),
    IdempotencyConflict: (e) => fail(Api.conflict("idempotency_conflict", "idempotencyKey", e.message)),
    AccountExists: (e) => fail(Api.conflict("already_exists", "id", e.message)),
    TokenExists: (e) => fail(Api.conflict("already_exists", "id", e.message)),
    AlreadyExists: (e) => fail(Api.conflict("already_exists", "id", e.message)),
    StoreError: (e) => fail(Api.internal("store_error", `database error in ${e.operation}`))
  }, () => fail(Api.internal("internal_error", "internal error")))

/** A not-found failure of an id the caller named in `field` (for `Effect.catchTag`). */
const notFoundIn = (field: string) => (error: { readonly message: string }) =>
  Effect.fail(Api.notFound(field, error.message))

// ---------------------------------------------------------------------------
// routes
// ---------------------------------------------------------------------------

/**
 * Options of the admin routes.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The configured groups; when given, an account's `group` must be one of them. */
  readonly groups?: ReadonlyArray<string> | undefined
  /**
   * The configured `funding.preferences` names; an account's
   * `billingPreference` must be one of them or a built-in one.
   */
  readonly preferences?: ReadonlyArray<string> | undefined
}

type Handler = Effect.Effect<
  HttpServerResponse.HttpServerResponse,
  AdminError,
  HttpServerRequest.HttpServerRequest | HttpRouter.RouteContext
>

/**
 * The admin routes. Requires the SDK services of `RelayBilling.sdkLayer`, the
 * {@link RelayStore}, the knex client and the `FundingRegistry` (for the audit: every
 * registered v2 source's `audit` columns, the `funding.sources` plugins' too) and the
 * {@link AdminKey}.
 *
 * @since 0.1.0
 * @category routes
 */
export const routes = (options: Options = {}): Layer.Layer<
  never,
  never,
  | HttpRouter.HttpRouter
  | AdminKey
  | RelayStore
  | WalletAdmin.WalletAdmin
  | SubscriptionAdmin.SubscriptionAdmin
  | BillingSession.BillingSession
  | KnexClient.KnexClient
  | FundingRegistry.FundingRegistry
> =>
  HttpRouter.use((router) =>
    Effect.gen(function*() {
      const { key } = yield* AdminKey
      const store = yield* RelayStore
      const wallet = yield* WalletAdmin.WalletAdmin
      const subscriptions = yield* SubscriptionAdmin.SubscriptionAdmin
      const session = yield* BillingSession.BillingSession
      const client = yield* KnexClient.KnexClient
      const accounts = Accounts.make(client)
      // The audit checks every registered v2 source's own `audit` columns (the plugins' too).
      const registry = yield* FundingRegistry.FundingRegistry
      const sources = (yield* Effect.forEach(registry.fundingIds, (id) => Effect.orDie(registry.funding(id))))
        .filter(Source.isSource)

      /** Authenticates, runs, and renders every failure as an HTTP error. */
      const handle = (handler: Handler) =>
        countRequest(
          Effect.gen(function*() {
            const request = yield* HttpServerRequest.HttpServerRequest
            if (!matchesBearer(request.headers["authorization"], key)) {
              return yield* Api.unauthorized(
                request.headers["authorization"] === undefined
                  ? "Missing admin key (Authorization: Bearer <RELAY_ADMIN_KEY>)"
                  : "Incorrect admin key"
              )
            }
            return yield* handler
          }).pipe(renderFailure)
        )

      const json = (body: unknown, status = 200) => HttpServerResponse.jsonUnsafe(body, { status })
      const param = (name: string) => Effect.map(HttpRouter.params, (p) => p[name] ?? "")

      /** A query string's non-empty values of `names`, decoded with `schema` (400 naming the field). */
      const query = <S extends Schema.Decoder<unknown>>(schema: S, names: ReadonlyArray<string>) =>
        Effect.gen(function*() {
          const request = yield* HttpServerRequest.HttpServerRequest
          const search = new URL(request.url, "http://relay.local").searchParams
          const raw: Record<string, string> = {}
          for (const name of names) {
            const value = search.get(name)
            if (value !== null && value !== "") raw[name] = value
          }
          return (yield* Schema.decodeUnknownEffect(schema)(raw).pipe(
            Effect.mapError((error) => Api.fromSchemaError(raw, error))
          )) as S["Type"]
        })

      /**
       * The hold of a request id (scoped to the account): with `accountId`, that
       * account's; without, the one account that used the id (409
       * `ambiguous_request_id` when several did). Holds opened before request ids
       * were scoped (their id is the request id) are found by id.
       */
      const holdOfRequest = (requestId: string) =>
        Effect.gen(function*() {
          const { accountId } = yield* query(HoldQuery, ["accountId"])
          const missing = Api.notFound(
            "requestId",
            `no request ${requestId}${accountId ? ` for account ${accountId}` : ""}`
          )
          if (!isRequestId(requestId)) return yield* missing
          const candidates = accountId !== undefined ? [accountId] : yield* store.accountsOfRequest(requestId)
          const found: Array<Hold.Hold> = []
          for (const account of candidates) {
            if (!isScopableAccountId(account)) continue
            const hold = yield* session.get(holdIdOf(account, requestId)).pipe(
              Effect.catchTag("HoldNotFound", () => Effect.succeed(undefined))
            )
            if (hold !== undefined) found.push(hold)
          }
          if (found.length > 1) {
            return yield* Api.conflict(
              "ambiguous_request_id",
              "accountId",
              `request id ${requestId} was used by ${found.length} accounts: pass ?accountId=`
            )
          }
          if (found.length === 1) return found[0]!
          const legacy = yield* session.get(requestId).pipe(
            Effect.catchTag("HoldNotFound", () => Effect.succeed(undefined))
          )
          if (
            legacy !== undefined && legacy.metadata?.["requestId"] === undefined &&
            (accountId === undefined || legacy.accountId === accountId)
          ) return legacy
          return yield* missing
        })

      const checkGroup = (group: string | undefined) =>
        group !== undefined && options.groups !== undefined && !options.groups.includes(group)
          ? Effect.fail(
            Api.invalidRequest(
              "group",
              `group: expected one of ${options.groups.join(", ")}, got ${JSON.stringify(group)}`
            )
          )
          : Effect.void

      const preferenceNames = [...Preference.builtins, ...(options.preferences ?? [])]
      const checkPreference = (name: string | undefined) =>
        name !== undefined && !preferenceNames.includes(name)
          ? Effect.fail(Api.invalidRequest(
            "billingPreference",
            `billingPreference: expected one of ${preferenceNames.join(", ")}, got ${JSON.stringify(name)}`
          ))
          : Effect.void

      const readAccount = (id: string) =>
        Effect.gen(function*() {
          const meta = yield* store.account(id)
          const balances = yield* wallet.account(id)
          return accountView(meta, balances)
        })

      const tokenView = (id: string) =>
        Effect.gen(function*() {
          const meta = yield* store.token(id)
          const budget = yield* wallet.token(id)
          const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
          const status = meta.status === "active" && meta.expiresAt !== undefined && meta.expiresAt <= now
            ? "expired"
            : meta.status
          return {
            id: budget.id,
            accountId: budget.accountId,
            remainQuota: budget.remain,
            usedQuota: budget.used,
            unlimited: budget.unlimited,
            status
          }
        })

      yield* router.addAll([
        HttpRouter.route(
          "POST",
          "/admin/accounts",
          handle(Effect.gen(function*() {
            const body = yield* Api.decodeBody(CreateAccountBody)
            yield* checkGroup(body.group)
            yield* checkPreference(body.billingPreference)
            const id = generateId("acc")
            yield* client.transaction(Effect.gen(function*() {
              yield* wallet.createAccount({
                id,
                ...(body.quota !== undefined ? { balance: body.quota } : {}),
                ...(body.quotaWarningThreshold !== undefined ? { lowBalanceThreshold: body.quotaWarningThreshold } : {})
              })
              yield* store.createAccount({
                id,
                name: body.name ?? "",
                group: body.group ?? "default",
                billingPreference: body.billingPreference ?? "subscription_first"
              })
            }))
            return json(yield* readAccount(id), 201)
          }))
        ),

        HttpRouter.route(
          "GET",
          "/admin/accounts/:id",
          handle(Effect.gen(function*() {
            const id = yield* param("id")
            return json(yield* readAccount(id).pipe(Effect.catchTag("AccountNotFound", notFoundIn("id"))))
          }))
        ),

        HttpRouter.route(
          "PATCH",
          "/admin/accounts/:id",
          handle(Effect.gen(function*() {
            const id = yield* param("id")
            yield* store.account(id).pipe(Effect.catchTag("AccountNotFound", notFoundIn("id")))
            const body = yield* Api.decodeBody(PatchAccountBody)
            yield* checkGroup(body.group)
            yield* checkPreference(body.billingPreference)
            yield* client.transaction(Effect.gen(function*() {
              if (body.quotaWarningThreshold !== undefined) {
                yield* accounts.setLowBalanceThreshold({ accountId: id, threshold: body.quotaWarningThreshold })
              }
              yield* store.updateAccount(id, {
                ...(body.group !== undefined ? { group: body.group } : {}),
                ...(body.billingPreference !== undefined ? { billingPreference: body.billingPreference } : {})
              })
            }))
            return json(yield* readAccount(id).pipe(Effect.catchTag("AccountNotFound", notFoundIn("id"))))
          }))
        ),

        HttpRouter.route(
          "POST",
          "/admin/accounts/:id/topup",
          handle(Effect.gen(function*() {
            const id = yield* param("id")
            yield* store.account(id).pipe(Effect.catchTag("AccountNotFound", notFoundIn("id")))
            const body = yield* Api.decodeBody(TopUpBody)
            // keys are scoped to the account; without a key every call tops up
            const idempotencyKey = `topup:${id}:${body.idempotencyKey ?? randomUUID()}`
            yield* wallet.topUp({ accountId: id, amount: body.amount, key: idempotencyKey })
            return json(yield* readAccount(id).pipe(Effect.catchTag("AccountNotFound", notFoundIn("id"))))
          }))
        ),

        HttpRouter.route(
          "POST",
          "/admin/tokens",
          handle(Effect.gen(function*() {
            const body = yield* Api.decodeBody(CreateTokenBody)
            yield* store.account(body.accountId).pipe(Effect.catchTag("AccountNotFound", notFoundIn("accountId")))
            const id = generateId("tok")
            const unlimited = body.unlimited ?? body.remainQuota === undefined
            const created = yield* client.transaction(Effect.gen(function*() {
              const budget = yield* wallet.createToken({
                id,
                accountId: body.accountId,
                remain: body.remainQuota ?? 0,
                unlimited
              })
              const { key } = yield* store.createToken({
                id,
                accountId: body.accountId,
                name: body.name ?? "",
                models: body.models ?? undefined,
                expiresAt: body.expiresAt === undefined || body.expiresAt === null
                  ? undefined
                  : Date.parse(body.expiresAt)
              })
              return { budget, key }
            }))
            return json({
              id,
              key: created.key,
              accountId: body.accountId,
              remainQuota: created.budget.remain,
              usedQuota: created.budget.used,
              unlimited: created.budget.unlimited
            }, 201)
          }))
        ),

        HttpRouter.route(
          "GET",
          "/admin/tokens/:id",
          handle(Effect.gen(function*() {
            const id = yield* param("id")
            return json(yield* tokenView(id).pipe(Effect.catchTag("TokenNotFound", notFoundIn("id"))))
          }))
        ),

        HttpRouter.route(
          "PATCH",
          "/admin/tokens/:id",
          handle(Effect.gen(function*() {
            const id = yield* param("id")
            yield* store.token(id).pipe(Effect.catchTag("TokenNotFound", notFoundIn("id")))
            const body = yield* Api.decodeBody(PatchTokenBody)
            yield* store.setTokenStatus(id, body.status)
            return json(yield* tokenView(id).pipe(Effect.catchTag("TokenNotFound", notFoundIn("id"))))
          }))
        ),

        HttpRouter.route(
          "POST",
          "/admin/plans",
          handle(Effect.gen(function*() {
            const body = yield* Api.decodeBody(CreatePlanBody)
            if (body.resetPeriod === "custom" && body.resetSeconds === undefined) {
              return yield* Api.invalidRequest("resetSeconds", "resetSeconds: required when resetPeriod is \"custom\"")
            }
            const plan = yield* subscriptions.createPlan({
              id: generateId("plan"),
              name: body.title,
              totalAmount: body.totalAmount,
              resetPeriod: body.resetPeriod,
              ...(body.resetSeconds !== undefined ? { resetSeconds: body.resetSeconds } : {}),
              durationSeconds: body.durationSeconds,
              ...(body.allowWalletOverflow !== undefined ? { allowWalletOverflow: body.allowWalletOverflow } : {})
            })
            return json(planView(plan), 201)
          }))
        ),

        HttpRouter.route(
          "POST",
          "/admin/subscriptions",
          handle(Effect.gen(function*() {
            const body = yield* Api.decodeBody(CreateSubscriptionBody)
            yield* store.account(body.accountId).pipe(Effect.catchTag("AccountNotFound", notFoundIn("accountId")))
            yield* subscriptions.plan(body.planId).pipe(Effect.catchTag("PlanNotFound", notFoundIn("planId")))
            const created = yield* subscriptions.subscribe({
              id: generateId("sub"),
              accountId: body.accountId,
              planId: body.planId
            })
            return json(subscriptionView(created), 201)
          }))
        ),

        HttpRouter.route(
          "GET",
          "/admin/subscriptions/:id",
          handle(Effect.gen(function*() {
            const id = yield* param("id")
            return json(
              subscriptionView(
                yield* subscriptions.subscription(id).pipe(Effect.catchTag("SubscriptionNotFound", notFoundIn("id")))
              )
            )
          }))
        ),

        HttpRouter.route(
          "GET",
          "/admin/holds/:requestId",
          handle(Effect.gen(function*() {
            const requestId = yield* param("requestId")
            return json(holdView(yield* holdOfRequest(requestId)))
          }))
        ),

        HttpRouter.route(
          "POST",
          "/admin/holds/:requestId/corrections",
          handle(Effect.gen(function*() {
            const requestId = yield* param("requestId")
            const hold = yield* holdOfRequest(requestId)
            const body = yield* Api.decodeBody(CorrectionBody)
            const result = yield* session.correct({ holdId: hold.id, correctionId: body.id, amount: body.amount }).pipe(
              correctionErrors
            )
            return json(correctionView(result, requestId))
          }))
        ),

        HttpRouter.route(
          "POST",
          "/admin/holds/reap",
          handle(Effect.gen(function*() {
            const report = yield* session.reapExpired()
            return json({ expired: report.expired })
          }))
        ),

        HttpRouter.route(
          "GET",
          "/admin/logs",
          handle(Effect.gen(function*() {
            const q = yield* query(LogsQuery, ["accountId", "limit"])
            if (q.accountId !== undefined) {
              yield* store.account(q.accountId).pipe(Effect.catchTag("AccountNotFound", notFoundIn("accountId")))
            }
            const entries = yield* store.logs({
              accountId: q.accountId,
              limit: q.limit === undefined ? undefined : Number(q.limit)
            })
            return json(entries.map((e) => ({ ...e, createdAt: iso(e.createdAt) })))
          }))
        ),

        HttpRouter.route(
          "GET",
          "/admin/audit",
          handle(Effect.gen(function*() {
            const report = yield* RelayBilling.audit(sources).pipe(
              Effect.provideService(KnexClient.KnexClient, client)
            )
            return json({ ok: report.ok, problems: report.problems })
          }))
        )
      ])
    })
  )
