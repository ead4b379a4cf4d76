// Fails when a generated file in the repository is stale: src/gen/ws_pb.ts
// (from proto/ws.proto; `npm run generate`) or examples/web/static/demo.js
// (from demo/ and src/; `npm run build:demo`). Regenerates into a temporary
// directory / memory and compares; touches nothing.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { build } from "esbuild";

import { demoBuild, demoOut, pkgRoot } from "./demo.mjs";

const stale = [];
const same = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
const read = (p) => {
  try {
    return readFileSync(p);
  } catch {
    return Buffer.alloc(0);
  }
};

const tmp = mkdtempSync(path.join(tmpdir(), "edk-gen-"));
try {
  execFileSync("npx", ["buf", "generate", "../../proto", "--template", "buf.gen.yaml", "--path", "../../proto/ws.proto", "-o", tmp], {
    cwd: pkgRoot,
    stdio: "inherit",
  });
  const gen = "src/gen/ws_pb.ts";
  if (!same(read(path.join(tmp, gen)), read(path.join(pkgRoot, gen)))) {
    stale.push(`${gen} (run: npm run generate)`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

const result = await build(demoBuild);
const out = result.outputFiles.find((f) => f.path === demoOut);
if (!same(out.contents, read(demoOut))) {
  stale.push(`${path.relative(pkgRoot, demoOut)} (run: npm run build:demo)`);
}

if (stale.length) {
  console.error(`stale generated files:\n  ${stale.join("\n  ")}`);
  process.exit(1);
}
console.log("generated files are up to date (src/gen/ws_pb.ts, examples/web/static/demo.js)");
