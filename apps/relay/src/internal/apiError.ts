/**
 * HTTP errors in OpenAI's shape `{"error":{"message","type","code"[,"field"]}}`,
 * and decoding of JSON bodies / query values with Schema into 400s naming the
 * offending field.
 *
 * @internal
 */
import { Data, Effect, Schema } from "effect"
import { HttpIncomingMessage, HttpServerRequest, HttpServerResponse } from "effect/http"
import { toConfigError } from "../Config.js"
import { jsonDepthExceeds, MaxJsonDepth } from "./limits.js"

/** An HTTP error response. */
export class ApiError extends Data.TaggedError("ApiError")<{
  readonly status: number
  readonly type: string
  readonly code: string
  readonly message: string
  readonly field?: string | undefined
}> {}

/** 400 `invalid_request` naming `field`. */
export const invalidRequest = (field: string, message: string): ApiError =>
  new ApiError({ status: 400, type: "invalid_request", code: "invalid_request", message, field })

/** 404 for an unknown id in `field`. */
export const notFound = (field: string, message: string): ApiError =>
  new ApiError({ status: 404, type: "invalid_request", code: "not_found", message, field })

/** 409 for a conflicting request. */
export const conflict = (code: string, field: string, message: string): ApiError =>
  new ApiError({ status: 409, type: "invalid_request", code, message, field })

/** 401 in OpenAI's shape. */
export const unauthorized = (message: string): ApiError =>
  new ApiError({ status: 401, type: "invalid_request_error", code: "invalid_api_key", message })

/** 413 for a body over `limits.maxBodyBytes`. */
export const tooLarge = (maxBytes: number | undefined): ApiError =>
  new ApiError({
    status: 413,
    type: "invalid_request",
    code: "request_too_large",
    message: maxBytes === undefined
      ? "the request body is too large"
      : `the request body is larger than limits.maxBodyBytes (${maxBytes} bytes)`,
    field: "body"
  })

/** 500 without internals. */
export const internal = (code: string, message: string): ApiError =>
  new ApiError({ status: 500, type: "server_error", code, message })

/** The response of an error. */
export const toResponse = (error: ApiError): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.jsonUnsafe(
    {
      error: {
        message: error.message,
        type: error.type,
        code: error.code,
        ...(error.field !== undefined ? { field: error.field } : {})
      }
    },
    { status: error.status }
  )

/** A Schema failure as a 400 naming the first offending field. */
export const fromSchemaError = (input: unknown, error: Schema.SchemaError, prefix = ""): ApiError => {
  const e = toConfigError("input", prefix, input, error)
  const field = e.field === "(root)" ? "body" : e.field
  return invalidRequest(field, `${field}: ${e.reason}${e.value === "" ? "" : `, got ${e.value}`}`)
}

/**
 * The request's JSON body (an object; an empty body is `{}`), without decoding.
 * A body over the request's `MaxBodySize` is 413 (reading stops there); one
 * nested deeper than `limits.maxJsonDepth` is 400.
 */
export const jsonObjectBody: Effect.Effect<Record<string, unknown>, ApiError, HttpServerRequest.HttpServerRequest> =
  Effect
    .gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const maxBytes = yield* HttpIncomingMessage.MaxBodySize
      const text = yield* request.text.pipe(
        Effect.mapError((e) =>
          e.reason._tag === "RequestParseError" && e.reason.reason === "BodyTooLarge"
            ? tooLarge(maxBytes === undefined ? undefined : Number(maxBytes))
            : invalidRequest("body", "cannot read the request body")
        )
      )
      if (text.trim() === "") return {}
      const maxDepth = yield* MaxJsonDepth
      if (jsonDepthExceeds(text, maxDepth)) {
        return yield* invalidRequest("body", `body: nested deeper than limits.maxJsonDepth (${maxDepth})`)
      }
      let json: unknown
      try {
        json = JSON.parse(text)
      } catch {
        return yield* invalidRequest("body", "body: expected a JSON object, got invalid JSON")
      }
      if (json === null || typeof json !== "object" || Array.isArray(json)) {
        return yield* invalidRequest("body", "body: expected a JSON object")
      }
      return json as Record<string, unknown>
    })

/** Decodes the JSON body with `schema`; unknown keys are refused (a typo must not be ignored). */
export const decodeBody = <S extends Schema.Decoder<unknown>>(
  schema: S
): Effect.Effect<S["Type"], ApiError, HttpServerRequest.HttpServerRequest | S["DecodingServices"]> =>
  Effect.flatMap(jsonObjectBody, (json) =>
    Schema.decodeUnknownEffect(schema)(json, { onExcessProperty: "error" }).pipe(
      Effect.mapError((error) => fromSchemaError(json, error))
    ))
