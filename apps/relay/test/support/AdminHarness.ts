/**
 * Serves the admin API over loopback (HttpListener, @effect/platform-node) on an isolated,
 * migrated database, with the billing services at hand for the test.
 */
import { TestDatabase } from "@relay-billing/knex"
import type { Context } from "effect"
import { Effect, Exit, Layer, Scope } from "effect"
import { HttpRouter } from "effect/http"
import * as AdminApi from "../../src/AdminApi.js"
import { AdminKey } from "../../src/AdminKey.js"
import * as HttpListener from "../../src/HttpListener.js"
import * as RelayBilling from "../../src/RelayBilling.js"

export const ADMIN_KEY = "sk-admin-test-0123456789"

export interface Harness {
  readonly url: string
  readonly context: Context.Context<RelayBilling.Services>
  /** Runs an effect with the billing services. */
  readonly run: <A, E>(effect: Effect.Effect<A, E, RelayBilling.Services>) => Promise<A>
  /** Calls the admin API with the admin key (or `key`); the JSON body is parsed. */
  readonly call: (
    method: string,
    path: string,
    body?: unknown,
    options?: { readonly key?: string | null; readonly raw?: string }
  ) => Promise<{ readonly status: number; readonly body: any }>
  readonly close: () => Promise<void>
}

export const startAdmin = async (
  target: TestDatabase.Target,
  options: AdminApi.Options = {},
  billing: Parameters<typeof RelayBilling.layerClient>[1] = {}
): Promise<Harness> => {
  const scope = Effect.runSync(Scope.make())
  const services = RelayBilling.layerClient(TestDatabase.layer(target), billing)
  const app = HttpRouter.serve(AdminApi.routes(options), { disableLogger: true, disableListenLog: true }).pipe(
    Layer.provide(AdminKey.layerKey(ADMIN_KEY)),
    Layer.provideMerge(HttpListener.layer({ port: 0, host: "127.0.0.1" })),
    Layer.provideMerge(services)
  )
  const context = await Effect.runPromise(Layer.buildWithScope(app, scope))
  const url = await Effect.runPromise(HttpListener.url.pipe(Effect.provideContext(context)))
  const run = <A, E>(effect: Effect.Effect<A, E, RelayBilling.Services>) =>
    Effect.runPromise(effect.pipe(Effect.provideContext(context)))
  const call: Harness["call"] = async (method, path, body, opts = {}) => {
    const headers: Record<string, string> = {}
    const key = opts.key === undefined ? ADMIN_KEY : opts.key
    if (key !== null) headers["authorization"] = key.includes(" ") ? key : `Bearer ${key}`
    let payload: string | undefined = opts.raw
    if (payload === undefined && body !== undefined) payload = JSON.stringify(body)
    if (payload !== undefined) headers["content-type"] = "application/json"
    const response = await fetch(`${url}${path}`, {
      method,
      headers,
      ...(payload !== undefined ? { body: payload } : {})
    })
    const text = await response.text()
    return { status: response.status, body: text === "" ? undefined : JSON.parse(text) }
  }
  return {
    url,
    context: context as Context.Context<RelayBilling.Services>,
    run,
    call,
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}
