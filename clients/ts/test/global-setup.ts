import { execFileSync } from "node:child_process";

import { repoRoot } from "./server.js";

/** Builds the example server once for every test file (a no-op when fresh). */
export default function setup(): void {
  if (process.env.EDK_WS_SERVER_BIN) return;
  execFileSync("cargo", ["build", "--example", "server"], { cwd: repoRoot, stdio: "inherit" });
}
