import { type Browser, chromium } from "playwright-core";

/** Debian's Chromium (apt-get install chromium); override with CHROMIUM_PATH. */
export const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Headless Chromium as the machine notes say it runs here (no sandbox as root, no GPU, no background traffic). */
export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
}
