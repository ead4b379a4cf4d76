/**
 * Reconnects against real examples/server processes: restarts (1001) and
 * crashes (1006) are survived with a fresh token and rooms and activity
 * restored; a kick (4002) or a replacement (4001) is final; attempts that
 * never open are retried with backoff and given up after `maxFailures`.
 */
import { createServer, type Socket } from "node:net";

import WebSocket from "ws";
import { afterEach, describe, expect, test } from "vitest";

import {
  ClosedError,
  type ClientEvents,
  ConnectionClosedError,
  EdkClient,
  NotConnectedError,
} from "../src/index.js";
import { connectFailure, TestClient, tracker, within } from "./helpers.js";
import { ServerProcess } from "./server.js";

const { track, closeAll } = tracker();
const servers: ServerProcess[] = [];
afterEach(async () => {
  closeAll();
  await Promise.all(servers.splice(0).map((s) => s.stop("SIGKILL")));
});

async function startServer(options: Parameters<typeof ServerProcess.start>[0] = {}): Promise<ServerProcess> {
  const s = await ServerProcess.start(options);
  servers.push(s);
  return s;
}

describe("after an open connection closes", () => {
  for (const [how, signal, code] of [
    ["a restart", "SIGTERM", 1001],
    ["a crash", "SIGKILL", 1006],
  ] as const) {
    test(`${how} (${code}): reconnects with a fresh token, restores rooms and activity; meanwhile send and requests fail`, async () => {
      let server = await startServer();
      const current = () => server;
      const alice = new TestClient(current, "alice");
      const bob = new TestClient(current, "bob");
      track(alice.client);
      track(bob.client);
      await within(Promise.all([alice.client.connect(), bob.client.connect()]), "both to connect");
      await alice.client.join("room", { seat: "1" });
      await alice.client.setActivity("busy", "testing");
      await bob.client.join("room");

      const inflight = alice.client.request("nobody-answers", "", {}, { timeoutMs: 60_000 });
      const closed = alice.client.next("close");
      const stopped = server.stop(signal);
      const close = await within(closed, "alice's close");
      expect(close).toMatchObject({ code, opened: true, willReconnect: true });
      await expect(inflight).rejects.toBeInstanceOf(ConnectionClosedError);
      // The server is down: nothing can be sent until it is back.
      expect(["reconnecting", "connecting"]).toContain(alice.client.state);
      await expect(alice.client.send("echo", "x")).rejects.toBeInstanceOf(NotConnectedError);
      await expect(alice.client.request("echo", "x")).rejects.toBeInstanceOf(NotConnectedError);
      await stopped;

      const reopened = [alice, bob].map((c) => c.client.next("open"));
      // A new process: a new random secret, so only a fresh token works.
      server = await startServer({ addr: server.addr });
      const [again] = await within(Promise.all(reopened), "both to reconnect");
      expect(again).toEqual({ reconnected: true });
      expect(alice.client.state).toBe("open");
      expect(alice.tokens.length).toBeGreaterThanOrEqual(2);
      expect(alice.tokens.at(-1)).not.toBe(alice.tokens[0]);

      // Restored: alice is in the room with her state, and busy.
      const members = await bob.client.listAllMembers("room");
      expect(members.members).toContainEqual({ userId: "alice", state: { seat: "1" } });
      const activities = await bob.client.listAllActivities();
      expect(activities).toContainEqual(expect.objectContaining({ userId: "alice", status: "busy", detail: "testing" }));
      expect((await alice.client.request("echo", "back")).text()).toBe("back");
    });
  }

  test("restore can be turned off", async () => {
    let server = await startServer();
    const alice = new TestClient(() => server, "alice", { restore: false });
    track(alice.client);
    await within(alice.client.connect(), "connect");
    await alice.client.join("room");
    const reopened = alice.client.next("open");
    await server.stop();
    server = await startServer({ addr: server.addr });
    await within(reopened, "the reconnect");
    const err = await alice.client.listMembers("room").catch((e: unknown) => e);
    expect(err).toMatchObject({ codeName: "NOT_FOUND" });
  });
});

describe("no reconnect", () => {
  test("after a kick (4002)", async () => {
    const server = await startServer();
    const alice = new TestClient(() => server, "alice");
    track(alice.client);
    await within(alice.client.connect(), "connect");
    const closed = alice.client.next("closed");
    expect(await server.kick("alice", "bye now")).toBe(200);
    const err = await within(closed, "the kick");
    expect(err).toBeInstanceOf(ClosedError);
    expect(err).toMatchObject({ why: "kicked", code: 4002, reason: "bye now" });
    expect(alice.client.state).toBe("closed");
    expect(alice.tokens).toHaveLength(1);
    await expect(alice.client.send("echo", "x")).rejects.toBeInstanceOf(NotConnectedError);
  });

  test("after being replaced by a newer connection of the same user (4001)", async () => {
    const server = await startServer();
    const first = new TestClient(() => server, "alice");
    const second = new TestClient(() => server, "alice");
    track(first.client);
    track(second.client);
    await within(first.client.connect(), "the first connection");
    const closed = first.client.next("closed");
    await within(second.client.connect(), "the second connection");
    expect(await within(closed, "the replacement")).toMatchObject({ why: "replaced", code: 4001 });
    expect(first.client.state).toBe("closed");
    expect(first.tokens).toHaveLength(1);
    expect((await second.client.request("echo", "still here")).text()).toBe("still here");
  });
});

describe("attempts that never open", () => {
  test("are retried with capped backoff, counted, and given up after maxFailures", async () => {
    const gone = await startServer();
    await gone.stop(); // nothing listens there now: every attempt fails
    let calls = 0;
    const c = track(
      new EdkClient({
        url: gone.url,
        WebSocket,
        getToken: () => `token-${++calls}`,
        reconnect: { initialDelayMs: 10, maxDelayMs: 40, maxFailures: 4 },
      }),
    );
    const retries: ClientEvents["reconnecting"][] = [];
    c.on("reconnecting", (e) => retries.push(e));
    const err = await within(connectFailure(c), "the client to give up");
    expect(err).toMatchObject({ why: "gave-up", failures: 4, code: 1006 });
    expect(retries.map((r) => r.failures)).toEqual([1, 2, 3]);
    retries.forEach((r) => expect(r.delayMs).toBeLessThan(Math.min(40, 10 * 2 ** r.failures)));
    expect(calls).toBe(4); // a token before every attempt
    expect(c.failures).toBe(4);
    expect(c.state).toBe("closed");
  });

  test("a handshake that hangs is abandoned after connectTimeoutMs and counts as a failure", async () => {
    // Accepts TCP connections and never answers the upgrade request.
    const held: Socket[] = [];
    const silent = createServer((sock) => held.push(sock));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const { port } = silent.address() as { port: number };
    try {
      const c = track(
        new EdkClient({
          url: `ws://127.0.0.1:${port}/ws`,
          WebSocket,
          token: "t",
          connectTimeoutMs: 100,
          reconnect: { initialDelayMs: 1, maxDelayMs: 5, maxFailures: 2 },
        }),
      );
      const err = await within(connectFailure(c), "the client to give up on a silent server");
      expect(err).toMatchObject({ why: "gave-up", failures: 2 });
      expect(held.length).toBe(2);
    } finally {
      held.forEach((s) => s.destroy());
      silent.close();
    }
  });

  test("a refusal the client cannot tell apart (409) is retried until it succeeds", async () => {
    const server = await startServer({ env: { EDK_WS_KICK_OUT_NEW_USER_CONN: "true" } });
    const first = new TestClient(() => server, "alice");
    track(first.client);
    await within(first.client.connect(), "the first connection");
    const second = new TestClient(() => server, "alice");
    track(second.client);
    const failures: number[] = [];
    second.client.on("close", (e) => {
      expect(e).toMatchObject({ opened: false, status: 409, willReconnect: true });
      failures.push(second.client.failures);
    });
    const connected = second.client.connect();
    await within(second.client.next("reconnecting", (e) => e.failures >= 2), "two refused attempts");
    first.client.close();
    await within(connected, "the second connection once the first left");
    expect(failures.slice(0, 2)).toEqual([1, 2]);
    expect(second.client.failures).toBe(0);
  });
});
