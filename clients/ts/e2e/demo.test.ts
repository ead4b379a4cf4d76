/**
 * The demo page at `/` of a real examples/server process (development
 * mode), in Debian's headless Chromium: two users chat and see each other's
 * presence; a closed page goes offline; a second page of the same user
 * replaces the first (4001); and the browser-side retry rules (a handshake
 * that never opens looks like 1006 to a browser).
 */
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";

import { ServerProcess } from "../test/server.js";
import { launch } from "./browser.js";

let server: ServerProcess;
let browser: Browser;
const contexts: BrowserContext[] = [];

/** How long one expected change on a page may take. */
const WAIT = 15_000;

beforeAll(async () => {
  [server, browser] = await Promise.all([ServerProcess.start(), launch()]);
});
afterAll(async () => {
  await browser?.close();
  await server?.stop();
});
afterEach(async () => {
  await Promise.all(contexts.splice(0).map((c) => c.close()));
});

/** A fresh browser context (its own storage: another person) on the demo page. */
async function open(): Promise<Page> {
  const ctx = await browser.newContext();
  contexts.push(ctx);
  const page = await ctx.newPage();
  await page.goto(`${server.http}/`);
  return page;
}

/** Opens the page as `user` and joins `room`. */
async function joinAs(user: string, room: string): Promise<Page> {
  const page = await open();
  await page.fill("[data-testid=user]", user);
  await page.fill("[data-testid=room]", room);
  await page.click("[data-testid=join]");
  await page.waitForSelector("[data-testid=status][data-state=open]", { timeout: WAIT });
  await page.waitForSelector("[data-testid=app]:not([hidden])", { timeout: WAIT });
  return page;
}

/** Waits until `user` is listed under `list` with `status`. */
async function seesStatus(page: Page, list: "members" | "people", user: string, status: string): Promise<void> {
  await page.waitForSelector(`[data-testid=${list}] li[data-user="${user}"][data-status="${status}"]`, {
    timeout: WAIT,
  });
}

describe("the demo page", () => {
  test("two users chat in one room and see each other's presence; busy shows; a closed page goes offline", async () => {
    const alice = await joinAs("alice", "lobby");
    const bob = await joinAs("bob", "lobby");

    // Presence both ways, in the room and in everyone's list.
    await seesStatus(alice, "members", "bob", "online");
    await seesStatus(alice, "people", "bob", "online");
    await seesStatus(bob, "members", "alice", "online");
    await seesStatus(bob, "people", "alice", "online");

    // Chat both ways.
    await alice.fill("[data-testid=text]", "hello bob");
    await alice.press("[data-testid=text]", "Enter");
    await bob.waitForSelector('[data-testid=log] li:has-text("alice"):has-text("hello bob")', { timeout: WAIT });
    await bob.fill("[data-testid=text]", "hi alice");
    await bob.press("[data-testid=text]", "Enter");
    await alice.waitForSelector('[data-testid=log] li:has-text("bob"):has-text("hi alice")', { timeout: WAIT });
    // Her own line too (publishes are not echoed: shown on the ack).
    await alice.waitForSelector('[data-testid=log] li:has-text("alice"):has-text("hello bob")', { timeout: WAIT });

    // Busy (with a detail) is seen by the other.
    await alice.fill("[data-testid=detail]", "in a meeting");
    await alice.selectOption("[data-testid=activity]", "busy");
    await seesStatus(bob, "people", "alice", "busy");
    await seesStatus(bob, "members", "alice", "busy");
    expect(await bob.textContent('[data-testid=people] li[data-user="alice"]')).toContain("in a meeting");

    // Closing her page: offline for bob, and gone from the room.
    await alice.close();
    await seesStatus(bob, "people", "alice", "offline");
    await bob.waitForSelector('[data-testid=members] li[data-user="alice"]', { state: "detached", timeout: WAIT });
    await bob.waitForSelector('[data-testid=log] li:has-text("alice left")', { timeout: WAIT });
  });

  test("a second page of the same user replaces the first, which says 4001 and does not reconnect", async () => {
    const first = await joinAs("carol", "den");
    const watcher = await joinAs("dave", "den");
    await seesStatus(watcher, "members", "carol", "online");

    const second = await joinAs("carol", "den");
    await first.waitForSelector("[data-testid=status][data-state=closed]", { timeout: WAIT });
    const status = await first.textContent("[data-testid=status]");
    expect(status).toContain("4001");
    expect(status).toContain("replaced");

    // The second page is the live one; the first stays closed.
    await second.fill("[data-testid=text]", "from the new tab");
    await second.press("[data-testid=text]", "Enter");
    await watcher.waitForSelector('[data-testid=log] li:has-text("from the new tab")', { timeout: WAIT });
    expect(await first.getAttribute("[data-testid=status]", "data-state")).toBe("closed");
  });
});

describe("the client in a browser", () => {
  test("a handshake that never opens (a 401 looks like 1006 here) is retried with backoff, counted, then given up", async () => {
    const page = await open();
    const result = await page.evaluate(async (url) => {
      type Edk = {
        EdkClient: new (o: unknown) => {
          connect(): Promise<void>;
          on(e: string, f: (x: never) => void): void;
          failures: number;
          state: string;
        };
      };
      const { EdkClient } = (window as unknown as { edk: Edk }).edk;
      let calls = 0;
      const closes: { code: number; opened: boolean; status?: number }[] = [];
      const retries: { failures: number; delayMs: number }[] = [];
      const client = new EdkClient({
        url,
        getToken: () => `not-a-valid-token-${++calls}`,
        reconnect: { initialDelayMs: 10, maxDelayMs: 40, maxFailures: 3 },
      });
      client.on("close", (e: { code: number; opened: boolean; status?: number }) => closes.push(e));
      client.on("reconnecting", (e: { failures: number; delayMs: number }) => retries.push(e));
      const err = (await client.connect().then(
        () => null,
        (e: { why: string; failures: number; code: number }) => ({ why: e.why, failures: e.failures, code: e.code }),
      )) as { why: string; failures: number; code: number } | null;
      return { err, calls, closes, retries, failures: client.failures, state: client.state };
    }, server.url);
    expect(result.err).toEqual({ why: "gave-up", failures: 3, code: 1006 });
    expect(result.calls).toBe(3);
    expect(result.closes.map((c) => [c.code, c.opened, c.status ?? null])).toEqual([
      [1006, false, null],
      [1006, false, null],
      [1006, false, null],
    ]);
    expect(result.retries.map((r) => r.failures)).toEqual([1, 2]);
    for (const r of result.retries) expect(r.delayMs).toBeLessThan(Math.min(40, 10 * 2 ** r.failures));
    expect([result.failures, result.state]).toEqual([3, "closed"]);
    // The server saw every attempt and refused each with 401.
    await server.waitLog(/(handshake refused status=401 reason="invalid token"[\s\S]*){3}/);
  });
});
