import { defineConfig } from "tsup"

export default defineConfig({
  entry: ["src/main.ts", "src/tokenizer.ts", "src/relay.ts", "src/relayServe.ts", "src/relayUpstreamMain.ts"],
  format: ["esm"],
  sourcemap: true,
  clean: true,
  target: "node20",
  // Resolve every dependency from node_modules at run time (the workspace packages through
  // their built public entry points), so the SDK runs exactly as an installed app runs it.
  skipNodeModulesBundle: true
})
