// Builds examples/web/static/demo.js (see demo.mjs). Commit the result: the
// example server embeds it, and CI checks it is up to date.
import { writeFileSync } from "node:fs";
import path from "node:path";

import { build } from "esbuild";

import { demoBuild, demoOut } from "./demo.mjs";

const result = await build(demoBuild);
const out = result.outputFiles.find((f) => f.path === demoOut);
writeFileSync(demoOut, out.contents);
console.log(`wrote ${path.relative(process.cwd(), demoOut)} (${out.contents.length} bytes)`);
