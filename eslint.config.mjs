// ESLint flat config for the whole workspace: `pnpm lint` checks, `pnpm lint:fix` formats.
// Formatting is dprint through @effect/eslint-plugin (the Effect repository's own setup), with
// the Effect repository's options: no semicolons, double quotes, 2 spaces, 120 columns, no
// trailing commas, and (dprint's default) import declarations sorted by module specifier.
import effect from "@effect/eslint-plugin"
import js from "@eslint/js"
import importX from "eslint-plugin-import-x"
import sortDestructureKeys from "eslint-plugin-sort-destructure-keys"
import { defineConfig } from "eslint/config"
import globals from "globals"
import tseslint from "typescript-eslint"

/** Sources that belong to a package's tsconfig, so the type-aware rules can see their types. */
const typedFiles = [
  "packages/*/src/**/*.ts",
  "packages/*/test/**/*.ts",
  "apps/*/src/**/*.ts",
  "apps/*/test/**/*.ts",
  "apps/*/soak/**/*.ts",
  "examples/*/src/**/*.ts",
  "tools/*/test/**/*.ts",
  "bench/src/**/*.ts"
]

export default defineConfig(
  {
    // what .gitignore leaves out (build output, reports, the smoke test's generated examples)
    ignores: [
      "**/node_modules/**",
      "**/dist/**",
      "**/.turbo/**",
      "**/coverage/**",
      "**/data/**",
      "bench/results/**",
      "**/.examples/**"
    ]
  },
  {
    files: ["**/*.{ts,mts,cts,js,mjs,cjs}"],
    extends: [js.configs.recommended, ...tseslint.configs.recommended, ...effect.configs.dprint],
    plugins: {
      "import-x": importX,
      "sort-destructure-keys": sortDestructureKeys
    },
    languageOptions: {
      ecmaVersion: "latest",
      sourceType: "module",
      globals: globals.node
    },
    linterOptions: {
      reportUnusedDisableDirectives: "error"
    },
    rules: {
      "@effect/dprint": ["error", {
        config: {
          indentWidth: 2,
          lineWidth: 120,
          semiColons: "asi",
          quoteStyle: "alwaysDouble",
          trailingCommas: "never",
          operatorPosition: "maintain",
          "arrowFunction.useParentheses": "force"
        }
      }],

      // generators without a yield are normal in Effect.gen; the rest is tsc's or style noise
      "require-yield": "off",
      "no-fallthrough": "off",
      "no-irregular-whitespace": "off",
      "prefer-rest-params": "off",
      "prefer-spread": "off",
      "object-shorthand": "error",
      "no-console": "off",

      "import-x/first": "error",
      "import-x/newline-after-import": "error",
      "import-x/no-duplicates": "error",
      "sort-destructure-keys/sort-destructure-keys": "error",

      "@typescript-eslint/array-type": ["error", { default: "generic", readonly: "generic" }],
      "@typescript-eslint/consistent-type-imports": ["error", {
        prefer: "type-imports",
        fixStyle: "separate-type-imports"
      }],
      "@typescript-eslint/no-unused-vars": ["error", {
        argsIgnorePattern: "^_",
        varsIgnorePattern: "^_",
        caughtErrorsIgnorePattern: "^_",
        destructuredArrayIgnorePattern: "^_",
        ignoreRestSiblings: true
      }],
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-non-null-assertion": "off",
      "@typescript-eslint/no-empty-object-type": "off",
      "@typescript-eslint/no-unsafe-function-type": "off",
      "@typescript-eslint/no-namespace": "off",
      "@typescript-eslint/ban-ts-comment": "off",
      "@typescript-eslint/no-use-before-define": "off"
    }
  },
  {
    // type-aware rules, only where a package tsconfig covers the file
    files: typedFiles,
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname
      }
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error"
    }
  },
  {
    // library code talks through Effect's logger, never the console
    files: ["packages/*/src/**/*.ts"],
    rules: {
      "no-console": "error"
    }
  },
  {
    files: ["**/*.cjs"],
    languageOptions: {
      sourceType: "commonjs",
      globals: globals.commonjs
    },
    rules: {
      "@typescript-eslint/no-require-imports": "off"
    }
  }
)
