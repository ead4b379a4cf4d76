/**
 * Every API of the client against a real examples/server process (Node,
 * through the `ws` package): messages and requests, rooms, presence, and
 * what the server logs.
 */
import WebSocket from "ws";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";

import {
  type ActivityInfo,
  connect,
  EdkClient,
  NotConnectedError,
  type ReceivedMessage,
  RequestTimeoutError,
  ServerError,
} from "../src/index.js";
import { connectFailure, TestClient, tracker, within } from "./helpers.js";
import { ServerProcess } from "./server.js";

let server: ServerProcess;
const { track, closeAll } = tracker();

beforeAll(async () => {
  server = await ServerProcess.start();
});
afterAll(async () => {
  await server?.stop();
});
afterEach(closeAll);

/** A connected client for `user`. */
async function user(name: string): Promise<EdkClient> {
  const c = track(new TestClient(() => server, name).client);
  await within(c.connect(), `${name} to connect`);
  return c;
}

describe("messages", () => {
  test("request resolves with the reply carrying its id; send reaches others; a silent request times out", async () => {
    const alice = await user("m-alice");
    const bob = await user("m-bob");
    expect(alice.userId).toBe("m-alice");

    const reply = await alice.request("echo", "hello", { k: "v" });
    expect(reply.text()).toBe("hello");
    expect(reply.type).toBe("echo");
    expect(reply.sender).toBe("m-alice");
    expect(reply.metadata).toEqual({ k: "v" });
    expect(reply.timestampMs).toBeGreaterThan(0);
    expect(reply.id).not.toBe("");

    // `broadcast` goes to everyone: bob gets it as a plain message.
    const got = bob.next("message", (m) => m.type === "broadcast");
    await alice.send("broadcast", new Uint8Array([1, 2, 3]), { from: "test" });
    const m: ReceivedMessage = await within(got, "bob to get the broadcast");
    expect(Array.from(m.payload)).toEqual([1, 2, 3]);
    expect(m.sender).toBe("m-alice");
    expect(m.metadata).toEqual({ from: "test" });
    expect(m.room).toBe("");

    // The example server ignores unknown types: no reply, so a timeout.
    await expect(alice.request("nobody-answers", "", {}, { timeoutMs: 300 })).rejects.toBeInstanceOf(
      RequestTimeoutError,
    );
    // The connection is still fine.
    expect((await alice.request("echo", "again")).text()).toBe("again");
  });

  test("send and requests reject before the client is connected (nothing is buffered)", async () => {
    const c = track(new EdkClient({ url: server.url, token: "x", WebSocket }));
    expect(c.state).toBe("idle");
    await expect(c.send("echo", "x")).rejects.toBeInstanceOf(NotConnectedError);
    await expect(c.request("echo", "x")).rejects.toBeInstanceOf(NotConnectedError);
    await expect(c.join("r")).rejects.toBeInstanceOf(NotConnectedError);
  });

  test("connect() with a userId sends it as x-user-id (Node); a token for someone else gets 403 and no retry", async () => {
    const token = await server.token("h-alice");
    const ok = track(await connect({ url: server.url, token, userId: "h-alice", WebSocket }));
    expect((await ok.request("echo", "x")).sender).toBe("h-alice");

    let calls = 0;
    const c = track(
      new EdkClient({
        url: server.url,
        getToken: () => {
          calls += 1;
          return token;
        },
        userId: "h-mallory",
        WebSocket,
        reconnect: { initialDelayMs: 1, maxDelayMs: 5, maxFailures: 50 },
      }),
    );
    const err = await within(connectFailure(c), "the refused connect");
    expect(err).toMatchObject({ why: "refused", status: 403, failures: 1 });
    expect(calls).toBe(1);
    expect(c.state).toBe("closed");
  });
});

describe("rooms", () => {
  test("join, member events, publish, member pages, state, leave and errors", async () => {
    const alice = await user("r-alice");
    const bob = await user("r-bob");
    const carol = await user("r-carol");
    const room = "r-room";

    await alice.join(room, { seat: "1" });
    const bobJoined = alice.next("memberChanged", (e) => e.member.userId === "r-bob");
    await bob.join(room, { seat: "2" });
    const ev = await within(bobJoined, "alice to see bob join");
    expect(ev).toEqual({ room, member: { userId: "r-bob", state: { seat: "2" } }, joined: true });
    await carol.join(room);
    expect([...alice.rooms.keys()]).toEqual([room]);

    // Publish: every other member gets it, stamped with room and sender.
    const atBob = bob.next("roomMessage");
    const atCarol = carol.next("roomMessage");
    await alice.publish(room, "chat", "hi all", { lang: "en" });
    for (const got of [await within(atBob, "bob's copy"), await within(atCarol, "carol's copy")]) {
      expect(got).toMatchObject({ room, type: "chat", sender: "r-alice", metadata: { lang: "en" } });
      expect(got.text()).toBe("hi all");
    }

    // Members, one per page, in user id order, following the cursor.
    const first = await alice.listMembers(room, { limit: 1 });
    expect(first.members).toEqual([{ userId: "r-alice", state: { seat: "1" } }]);
    expect(first.nextCursor).not.toBe("");
    const second = await alice.listMembers(room, { limit: 1, cursor: first.nextCursor });
    expect(second.members.map((m) => m.userId)).toEqual(["r-bob"]);
    const all = await alice.listAllMembers(room, 1);
    expect(all.members.map((m) => m.userId)).toEqual(["r-alice", "r-bob", "r-carol"]);

    // State: room state and member state, seen by every member.
    const roomState = bob.next("stateChanged", (e) => e.userId === "");
    const memberState = bob.next("stateChanged", (e) => e.userId === "r-alice");
    await alice.updateState(room, { roomChanges: { topic: "tests" }, memberChanges: { seat: "9" } });
    expect(await within(roomState, "the room state event")).toMatchObject({ room, changes: { topic: "tests" } });
    expect(await within(memberState, "alice's state event")).toMatchObject({ room, changes: { seat: "9" } });
    expect(alice.rooms.get(room)).toEqual({ seat: "9" });
    expect((await bob.listAllMembers(room)).roomState).toEqual({ topic: "tests" });
    await alice.updateState(room, { roomRemoved: ["topic"] });
    expect((await bob.listMembers(room)).roomState).toEqual({});

    // Leave: others see it; afterwards publishing is an error.
    const left = bob.next("memberChanged", (e) => !e.joined);
    await carol.leave(room);
    expect(await within(left, "carol's leave")).toMatchObject({ room, member: { userId: "r-carol" }, joined: false });
    expect(carol.rooms.size).toBe(0);
    const notMember = await carol.publish(room, "chat", "x").catch((e: unknown) => e);
    expect(notMember).toBeInstanceOf(ServerError);
    expect(notMember).toMatchObject({ codeName: "NOT_A_MEMBER" });
    const missing = await alice.listMembers("no-such-room").catch((e: unknown) => e);
    expect(missing).toMatchObject({ codeName: "NOT_FOUND" });
    const bad = await alice.join("").catch((e: unknown) => e);
    expect(bad).toMatchObject({ codeName: "INVALID_REQUEST" });
  });
});

describe("presence", () => {
  test("setActivity is seen through onActivities; listActivities pages; offline is announced", async () => {
    const alice = await user("p-alice");
    const bob = await user("p-bob");
    const dave = await user("p-dave");

    const seen: ActivityInfo[][] = [];
    bob.onActivities((a) => seen.push(a));
    const busy = bob.next("activities", (a) => a.some((x) => x.userId === "p-alice" && x.status === "busy"));
    await alice.setActivity("busy", "in a meeting");
    const change = (await within(busy, "bob to see alice busy")).find((x) => x.userId === "p-alice")!;
    expect(change).toMatchObject({ status: "busy", detail: "in a meeting" });
    expect(change.sinceMs).toBeGreaterThan(0);
    expect(seen.length).toBeGreaterThan(0);

    await dave.setActivity("playing", "chess");
    const first = await bob.listActivities({ limit: 1 });
    expect(first.activities).toHaveLength(1);
    expect(first.nextCursor).not.toBe("");
    const all = await bob.listAllActivities(1);
    const mine = all.filter((a) => a.userId.startsWith("p-")).map((a) => [a.userId, a.status]);
    expect(mine).toEqual([
      ["p-alice", "busy"],
      ["p-dave", "playing"],
    ]);

    const offline = bob.next("activities", (a) => a.some((x) => x.userId === "p-dave" && x.status === "offline"));
    dave.close();
    await within(offline, "bob to see dave go offline");
    await alice.setActivity("offline");
    expect((await bob.listAllActivities()).some((a) => a.userId === "p-alice")).toBe(false);
  });
});

describe("the server's log", () => {
  test("has no colour codes when not a terminal, and shows refused handshakes with their status", async () => {
    const c = track(
      new EdkClient({ url: server.url, token: "not-a-jwt", WebSocket, reconnect: false }),
    );
    await expect(c.connect()).rejects.toMatchObject({ why: "refused", status: 401 });
    const line = await server.waitLog(/INFO handshake\{peer=127\.0\.0\.1:\d+\}: .*handshake refused status=401 reason="invalid token".*/);
    expect(line).not.toMatch(/Some\(/);
    expect(server.log).not.toContain("\u001b[");
  });
});
