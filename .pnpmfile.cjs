// better-sqlite3 compiles from source here (no prebuilt download is reachable); node-gyp
// needs Node's headers, which this machine has under the Node install prefix. pnpm 12 reads
// neither npm's global `nodedir` nor a project .npmrc, so pass it through the environment.
const path = require("node:path")
const fs = require("node:fs")

const nodedir = path.resolve(path.dirname(process.execPath), "..")
module.exports = {
  hooks: {
    updateConfig(config) {
      if (fs.existsSync(path.join(nodedir, "include", "node", "node_api.h"))) {
        config.extraEnv = { ...config.extraEnv, npm_config_nodedir: nodedir }
      }
      return config
    }
  }
}
