// Preloaded (`node -r`) by the smoke tests on a Node older than 22. The SDK packages promise
// Node >= 20.19; a user there installs better-sqlite3 12.x, since 13.x needs Node >= 22 (it
// crashes on 20). In this workspace the packages link 13.x for their own tests, which run on
// the pinned Node 24 (12.x aborts Node >= 24.19 when a collected Statement is finalised), so
// on the old Node `better-sqlite3` is resolved to this package's own 12.x copy, as a Node 20
// user's install would have it.
const Module = require("node:module")

const own = require.resolve("better-sqlite3", { paths: [__dirname] })
const resolve = Module._resolveFilename
Module._resolveFilename = function(request, ...rest) {
  return request === "better-sqlite3" ? own : resolve.call(this, request, ...rest)
}
