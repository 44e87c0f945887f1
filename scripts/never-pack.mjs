// The `prepack` script of every private workspace package (apps, examples, bench, tools): a
// private package is never packed or published. `pnpm -r pack` would otherwise pack them with
// the public ones (pnpm skips `private` only when publishing); this stops it with a message.
// `changeset publish` (the release flow) publishes only the public packages under packages/*
// and never reaches this. Pack the public packages with `pnpm pack:public`.
const name = process.env["npm_package_name"] ?? "this package"
console.error(
  `${name} is private: it is never packed or published. Pack the public packages with \`pnpm pack:public\`.`
)
process.exit(1)
