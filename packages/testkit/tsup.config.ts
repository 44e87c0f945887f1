import { defineConfig } from "tsup"

export default defineConfig({
  entry: { index: "src/index.ts", vitest: "src/VitestSuite.ts", sqlite: "src/sqlite.ts" },
  format: ["esm"],
  dts: false,
  sourcemap: true,
  clean: true,
  target: "node20"
})
