import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"
import { sharedConfig } from "../../vitest.shared.ts"

export default defineConfig(sharedConfig(fileURLToPath(new URL(".", import.meta.url))))
