import { defineConfig } from "vitest/config";

// Two projects: `node` (the client against a real examples/server process,
// through Node's `ws`) and `browser` (the demo page in Debian's Chromium,
// driven by playwright-core). The global setup builds the example server
// once (`cargo build --example server`) unless EDK_WS_SERVER_BIN names one.
export default defineConfig({
  test: {
    globalSetup: ["./test/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      { extends: true, test: { name: "node", include: ["test/**/*.test.ts"] } },
      {
        extends: true,
        test: {
          name: "browser",
          include: ["e2e/**/*.test.ts"],
          // One Chromium at a time: 2 cores.
          fileParallelism: false,
        },
      },
    ],
  },
});
