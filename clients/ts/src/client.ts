import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";

import { backoffDelay, DEFAULT_RECONNECT, type ReconnectOptions } from "./backoff.js";
import {
  ClosedError,
  type CloseWhy,
  ConnectionClosedError,
  EdkError,
  NotConnectedError,
  RequestTimeoutError,
  RestoreError,
  ServerError,
} from "./errors.js";
import { Emitter } from "./events.js";
import {
  type Activity as PbActivity,
  type Member as PbMember,
  type Message,
  MessageSchema,
  Status,
} from "./gen/ws_pb.js";

/** The subprotocol offered with the token (the server echoes it). */
export const PROTOCOL = "edk.ws.v1";

/** What a WebSocket implementation must offer: the browser's, or Node's `ws`. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
}

/**
 * A WebSocket constructor. The third argument is passed only to carry
 * `{ headers }` (Node's `ws` uses it; a browser's WebSocket ignores it).
 */
export type WebSocketConstructor = new (
  url: string,
  protocols: string[],
  options?: { headers?: Record<string, string> },
) => WebSocketLike;

/** Options of {@link connect} / {@link EdkClient}. */
export interface ConnectOptions {
  /** `ws://host:port/ws` or `wss://…`. */
  url: string;
  /** A token (JWT). Give `token` or `getToken`. */
  token?: string;
  /**
   * Called before every connection attempt (the first and each reconnect),
   * so that an expired token is replaced. A throw counts as a failed
   * attempt.
   */
  getToken?: () => string | Promise<string>;
  /**
   * Sent as the user id header (`userIdHeader`) where the WebSocket
   * implementation can send headers (Node's `ws`). Browsers cannot: leave
   * it out and let the server take the user from the token (server option
   * `user_id_from_token`).
   */
  userId?: string;
  /** Default `x-user-id`. */
  userIdHeader?: string;
  /** The implementation; default `globalThis.WebSocket`. In Node 20 pass `ws`'s `WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Reply timeout of every request, ms (default 10 000). */
  requestTimeoutMs?: number;
  /** A handshake that has not opened after this long is abandoned and counts as failed (default 10 000 ms). */
  connectTimeoutMs?: number;
  /** Backoff and give-up settings, or `false` for no reconnects. */
  reconnect?: Partial<ReconnectOptions> | false;
  /** Re-join rooms (with their member state) and re-set the activity after a reconnect (default `true`). */
  restore?: boolean;
}

/** Where the client is. */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** A user's activity, as the client shows it. */
export type ActivityStatus = "offline" | "online" | "busy" | "away" | "playing";

/** One user's activity. */
export interface ActivityInfo {
  userId: string;
  status: ActivityStatus;
  detail: string;
  /** When the status was set, Unix ms (0 for "went offline" events). */
  sinceMs: number;
}

/** A room member and its state. */
export interface MemberInfo {
  userId: string;
  state: Record<string, string>;
}

/** A message received from the server (an application message, or a room publish when `room` is set). */
export interface ReceivedMessage {
  id: string;
  type: string;
  payload: Uint8Array;
  metadata: Record<string, string>;
  /** The user it comes from (stamped by the server), `""` = the server. */
  sender: string;
  timestampMs: number;
  /** The room it was published in; `""` for direct messages. */
  room: string;
  /** The payload decoded as UTF-8. */
  text(): string;
}

/** One page of a room's members. */
export interface MembersPage {
  room: string;
  members: MemberInfo[];
  /** The room's shared state (first page only). */
  roomState: Record<string, string>;
  /** Pass as `cursor` for the next page; `""` on the last page. */
  nextCursor: string;
}

/** One page of activities (non-offline users). */
export interface ActivitiesPage {
  activities: ActivityInfo[];
  nextCursor: string;
}

/** Pagination of list calls. */
export interface PageOptions {
  /** Entries per page; 0 or absent = the server's maximum (100 by default). */
  limit?: number;
  /** `nextCursor` of the previous page; absent = the first page. */
  cursor?: string;
}

/** A change of a room's state and/or the caller's member state. */
export interface StateUpdate {
  roomChanges?: Record<string, string>;
  roomRemoved?: string[];
  memberChanges?: Record<string, string>;
  memberRemoved?: string[];
}

/** Application payloads: bytes, or text sent as UTF-8. */
export type Payload = Uint8Array | string;

/** The client's events and their payloads. */
export interface ClientEvents {
  /** Every state change. */
  state: ConnectionState;
  /** A connection opened (after a reconnect: once rooms and activity are restored). */
  open: { reconnected: boolean };
  /** A socket closed (`willReconnect` says whether the client tries again). */
  close: { code: number; reason: string; opened: boolean; willReconnect: boolean; status?: number };
  /** A retry is scheduled. */
  reconnecting: { delayMs: number; failures: number };
  /** The client stopped for good. */
  closed: ClosedError;
  /** An application message (not a reply to one of our requests). */
  message: ReceivedMessage;
  /** A message published in a room we are in. */
  roomMessage: ReceivedMessage;
  /** A member joined (`joined`) or left a room we are in. */
  memberChanged: { room: string; member: MemberInfo; joined: boolean };
  /** Coalesced member events of a large room (`omitted` > 0: list the members for the full picture). */
  memberChanges: {
    room: string;
    changes: { member: MemberInfo; joined: boolean }[];
    omitted: number;
  };
  /** Room state (`userId` = "") or a member's state changed. */
  stateChanged: { room: string; userId: string; changes: Record<string, string>; removed: string[] };
  /** The server closed a room; we are no longer in it. */
  roomClosed: { room: string; reason: string };
  /** Other users' activity changes (batched; `offline` = went offline). */
  activities: ActivityInfo[];
  /** A server error not tied to a pending request, a restore failure, or an undecodable frame. */
  error: EdkError;
}

/** Close codes after which an opened connection is re-established. */
const RECONNECT_CODES = new Set([1001, 1006, 1012, 1013, 4000, 4003]);

const STATUS_NAMES: Record<Status, ActivityStatus> = {
  [Status.OFFLINE]: "offline",
  [Status.ONLINE]: "online",
  [Status.BUSY]: "busy",
  [Status.AWAY]: "away",
  [Status.PLAYING]: "playing",
};
const STATUS_VALUES: Record<ActivityStatus, Status> = {
  offline: Status.OFFLINE,
  online: Status.ONLINE,
  busy: Status.BUSY,
  away: Status.AWAY,
  playing: Status.PLAYING,
};

type ControlInit = NonNullable<MessageInitShape<typeof MessageSchema>["control"]>;
const REPLY_CASES = new Set<Message["control"]["case"]>(["ack", "error", "members", "activities"]);

interface Pending {
  resolve: (m: Message) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A connection to an edk-ws server that reconnects by itself.
 *
 * ```ts
 * const client = new EdkClient({ url, getToken });
 * client.on("roomMessage", (m) => console.log(m.sender, m.text()));
 * await client.connect();
 * await client.join("lobby");
 * ```
 */
export class EdkClient extends Emitter<ClientEvents> {
  private readonly opts: Required<Omit<ConnectOptions, "token" | "getToken" | "userId" | "WebSocket" | "reconnect">>;
  private readonly backoff: ReconnectOptions | null;
  private readonly getTokenFn: () => string | Promise<string>;
  private readonly Ws: WebSocketConstructor;
  private ws: WebSocketLike | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly pending = new Map<string, Pending>();
  private readonly idPrefix = randomPrefix();
  private nextId = 0;
  private everOpened = false;
  private _state: ConnectionState = "idle";
  private _failures = 0;
  private _userId: string | undefined;
  /** The `userId` option: sent as a header (where the implementation can). */
  private readonly headerUserId: string | undefined;
  /** Rooms we are in, with our member state (restored after a reconnect). */
  private readonly joined = new Map<string, Record<string, string>>();
  private activity: { status: ActivityStatus; detail: string } | null = null;

  constructor(options: ConnectOptions) {
    super();
    const { token, getToken } = options;
    if (getToken) this.getTokenFn = getToken;
    else if (token !== undefined) this.getTokenFn = () => token;
    else throw new EdkError("give a token or getToken");
    const Ws = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ws) throw new EdkError("no global WebSocket here: pass one, e.g. `WebSocket` from the `ws` package");
    this.Ws = Ws;
    this._userId = options.userId;
    this.backoff = options.reconnect === false ? null : { ...DEFAULT_RECONNECT, ...options.reconnect };
    this.opts = {
      url: options.url,
      userIdHeader: options.userIdHeader ?? "x-user-id",
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      restore: options.restore ?? true,
    };
    this.headerUserId = options.userId;
  }

  /** Where the client is. */
  get state(): ConnectionState {
    return this._state;
  }

  /** Connection attempts in a row that never opened (0 once one opens). */
  get failures(): number {
    return this._failures;
  }

  /** The `userId` option, else the `sub` of the last token (read, not verified), else undefined. */
  get userId(): string | undefined {
    return this._userId;
  }

  /** The rooms this client is in (as restored after a reconnect) and its member state in each. */
  get rooms(): ReadonlyMap<string, Readonly<Record<string, string>>> {
    return this.joined;
  }

  /**
   * Starts connecting (if not yet) and resolves once a connection is open.
   * Rejects with a {@link ClosedError} if the client stops for good first.
   */
  connect(): Promise<void> {
    if (this._state === "open") return Promise.resolve();
    if (this._state === "closed") {
      return Promise.reject(new EdkError("this client is closed: create a new one"));
    }
    const done = new Promise<void>((resolve, reject) => {
      const offOpen = this.once("open", () => {
        offClosed();
        resolve();
      });
      const offClosed = this.once("closed", (e) => {
        offOpen();
        reject(e);
      });
    });
    if (this._state === "idle") void this.attempt();
    return done;
  }

  /** Closes for good (no reconnect); requests in flight fail. */
  close(code = 1000, reason = ""): void {
    if (this._state === "closed") return;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    }
    this.failPending(new ConnectionClosedError(code, reason || "closed by the client"));
    this.stop(new ClosedError("client", code, reason, this._failures));
  }

  // ---- application messages ----

  /**
   * Sends an application message (no reply expected). Rejects with
   * {@link NotConnectedError} while disconnected: nothing is buffered.
   */
  async send(type: string, payload: Payload = new Uint8Array(), metadata: Record<string, string> = {}): Promise<void> {
    this.write(create(MessageSchema, { type, payload: bytes(payload), metadata }));
  }

  /**
   * Sends an application message with a fresh id and resolves with the
   * first message that carries the same id (an `Error` reply rejects with
   * {@link ServerError}). Rejects on timeout and when the connection closes.
   */
  async request(
    type: string,
    payload: Payload = new Uint8Array(),
    metadata: Record<string, string> = {},
    options: { timeoutMs?: number } = {},
  ): Promise<ReceivedMessage> {
    const reply = await this.call(
      create(MessageSchema, { type, payload: bytes(payload), metadata }),
      options.timeoutMs,
    );
    return received(reply);
  }

  // ---- rooms ----

  /** Joins `room` (created on first join) with a member state; joining again replaces the state. */
  async join(room: string, state: Record<string, string> = {}): Promise<void> {
    await this.control({ case: "join", value: { room, state } });
    this.joined.set(room, { ...state });
  }

  /** Leaves `room`. */
  async leave(room: string): Promise<void> {
    try {
      await this.control({ case: "leave", value: { room } });
    } catch (e) {
      // Not a member (any more): the goal is reached.
      if (!(e instanceof ServerError && e.codeName === "NOT_A_MEMBER")) throw e;
    }
    this.joined.delete(room);
  }

  /** Publishes to every other member of `room`; resolves on the server's ack. */
  async publish(
    room: string,
    type: string,
    payload: Payload = new Uint8Array(),
    metadata: Record<string, string> = {},
  ): Promise<void> {
    await this.call(create(MessageSchema, { type, room, payload: bytes(payload), metadata }));
  }

  /** One page of `room`'s members (the room state rides on the first page). */
  async listMembers(room: string, page: PageOptions = {}): Promise<MembersPage> {
    const reply = await this.control({
      case: "listMembers",
      value: { room, limit: page.limit ?? 0, cursor: page.cursor ?? "" },
    });
    if (reply.control.case !== "members") throw new EdkError(`unexpected reply ${reply.control.case}`);
    const m = reply.control.value;
    return {
      room: m.room,
      members: m.members.map(member),
      roomState: { ...m.roomState },
      nextCursor: m.nextCursor,
    };
  }

  /** Every member of `room`, following the pages (and the room state). */
  async listAllMembers(room: string, pageSize = 0): Promise<{ members: MemberInfo[]; roomState: Record<string, string> }> {
    const members: MemberInfo[] = [];
    let roomState: Record<string, string> | undefined;
    await eachPage(
      (cursor) => this.listMembers(room, { limit: pageSize, cursor }),
      (page) => {
        roomState ??= page.roomState; // on the first page only
        members.push(...page.members);
      },
    );
    return { members, roomState: roomState ?? {} };
  }

  /** Changes the room's shared state and/or this user's member state in `room`. */
  async updateState(room: string, update: StateUpdate): Promise<void> {
    await this.control({
      case: "updateState",
      value: {
        room,
        roomChanges: update.roomChanges ?? {},
        roomRemoved: update.roomRemoved ?? [],
        memberChanges: update.memberChanges ?? {},
        memberRemoved: update.memberRemoved ?? [],
      },
    });
    const mine = this.joined.get(room);
    if (mine) applyState(mine, update.memberChanges ?? {}, update.memberRemoved ?? []);
  }

  // ---- presence ----

  /** Sets this user's activity, visible to every other user (`offline` clears it). */
  async setActivity(status: ActivityStatus, detail = ""): Promise<void> {
    await this.control({ case: "setActivity", value: { status: STATUS_VALUES[status], detail } });
    this.activity = status === "offline" ? null : { status, detail };
  }

  /** One page of the activities of users who are not offline. */
  async listActivities(page: PageOptions = {}): Promise<ActivitiesPage> {
    const reply = await this.control({
      case: "listActivities",
      value: { limit: page.limit ?? 0, cursor: page.cursor ?? "" },
    });
    if (reply.control.case !== "activities") throw new EdkError(`unexpected reply ${reply.control.case}`);
    return { activities: reply.control.value.activities.map(activity), nextCursor: reply.control.value.nextCursor };
  }

  /** Every non-offline activity, following the pages. */
  async listAllActivities(pageSize = 0): Promise<ActivityInfo[]> {
    const all: ActivityInfo[] = [];
    await eachPage(
      (cursor) => this.listActivities({ limit: pageSize, cursor }),
      (page) => all.push(...page.activities),
    );
    return all;
  }

  /** Calls `fn` with other users' activity changes; returns an unsubscribe function. */
  onActivities(fn: (changes: ActivityInfo[]) => void): () => void {
    return this.on("activities", fn);
  }

  // ---- the connection ----

  private setState(s: ConnectionState): void {
    if (this._state === s) return;
    this._state = s;
    this.emit("state", s);
  }

  /** One connection attempt: a fresh token, then the handshake. */
  private async attempt(): Promise<void> {
    this.timer = null;
    this.setState("connecting");
    let token: string;
    try {
      token = await this.getTokenFn();
    } catch (e) {
      if (this._state !== "connecting") return; // closed meanwhile
      this.emit("error", new EdkError(`getToken failed: ${(e as Error)?.message ?? e}`));
      this.afterClose(false, 1006, "getToken failed", undefined);
      return;
    }
    if (this._state !== "connecting") return;
    if (this.headerUserId === undefined) this._userId = tokenSubject(token) ?? this._userId;
    const headers = this.headerUserId !== undefined ? { [this.opts.userIdHeader]: this.headerUserId } : undefined;
    let ws: WebSocketLike;
    try {
      ws = new this.Ws(this.opts.url, [PROTOCOL, token], headers ? { headers } : undefined);
    } catch (e) {
      // e.g. a malformed URL or token: retrying cannot help.
      this.stop(new ClosedError("closed", 1006, `cannot open: ${(e as Error)?.message ?? e}`, this._failures + 1));
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    let status: number | undefined;
    const giveUp = setTimeout(() => {
      if (!opened && this.ws === ws) ws.close();
    }, this.opts.connectTimeoutMs);
    ws.onopen = () => {
      if (this.ws !== ws) return;
      clearTimeout(giveUp);
      opened = true;
      void this.opened(ws);
    };
    ws.onmessage = (ev: { data: unknown }) => {
      if (this.ws === ws) this.onFrame(ev.data);
    };
    ws.onerror = (ev: { message?: string; error?: { message?: string } }) => {
      // Node's `ws` names the status of a refused handshake; browsers never do.
      const text = String(ev?.message ?? ev?.error?.message ?? "");
      const m = /Unexpected server response: (\d{3})/.exec(text);
      if (m) status = Number(m[1]);
    };
    ws.onclose = (ev: { code?: number; reason?: string }) => {
      clearTimeout(giveUp);
      if (this.ws !== ws) return;
      this.ws = null;
      const code = ev?.code ?? 1006;
      const reason = ev?.reason ?? "";
      this.failPending(new ConnectionClosedError(code, reason));
      this.afterClose(opened, code, reason, status);
    };
  }

  private async opened(ws: WebSocketLike): Promise<void> {
    this._failures = 0;
    const reconnected = this.everOpened;
    this.everOpened = true;
    this.setState("open");
    if (reconnected && this.opts.restore) await this.restore();
    if (this.ws !== ws) return; // closed again while restoring
    this.emit("open", { reconnected });
  }

  /** Re-joins every room (with our member state) and re-sets the activity. */
  private async restore(): Promise<void> {
    const rooms = [...this.joined];
    const activity = this.activity;
    const tasks: Promise<void>[] = rooms.map(([room, state]) =>
      this.join(room, state).catch((e: Error) => {
        if (e instanceof ServerError) {
          this.joined.delete(room);
          this.emit("error", new RestoreError(`room ${room}`, e));
        }
      }),
    );
    if (activity) {
      tasks.push(
        this.setActivity(activity.status, activity.detail).catch((e: Error) => {
          if (e instanceof ServerError) this.emit("error", new RestoreError("activity", e));
        }),
      );
    }
    await Promise.all(tasks);
  }

  /** Decides what follows a socket's close: retry (with backoff) or stop. */
  private afterClose(opened: boolean, code: number, reason: string, status: number | undefined): void {
    if (this._state === "closed") return;
    let why: CloseWhy | null = null;
    if (opened) {
      if (code === 4001) why = "replaced";
      else if (code === 4002) why = "kicked";
      else if (!RECONNECT_CODES.has(code) || !this.backoff) why = "closed";
    } else {
      this._failures += 1;
      if (status === 401 || status === 403) why = "refused";
      else if (!this.backoff) why = "closed";
      else if (this._failures >= this.backoff.maxFailures) why = "gave-up";
    }
    this.emit("close", { code, reason, opened, willReconnect: why === null, status });
    if (why !== null) {
      this.stop(new ClosedError(why, code, reason, this._failures, status));
      return;
    }
    const delayMs = backoffDelay(this._failures, this.backoff!);
    this.setState("reconnecting");
    this.emit("reconnecting", { delayMs, failures: this._failures });
    this.timer = setTimeout(() => void this.attempt(), delayMs);
  }

  private stop(err: ClosedError): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.setState("closed");
    this.emit("closed", err);
  }

  private failPending(err: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }

  private write(msg: Message): void {
    const ws = this.ws;
    if (!ws || this._state !== "open" || ws.readyState !== 1) throw new NotConnectedError(this._state);
    ws.send(toBinary(MessageSchema, msg));
  }

  /** Sends `msg` with a fresh id and waits for the message with that id. */
  private call(msg: Message, timeoutMs = this.opts.requestTimeoutMs): Promise<Message> {
    const id = `${this.idPrefix}${(this.nextId++).toString(36)}`;
    msg.id = id;
    return new Promise<Message>((resolve, reject) => {
      try {
        this.write(msg);
      } catch (e) {
        reject(e);
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestTimeoutError(id, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
    });
  }

  private control(control: ControlInit): Promise<Message> {
    return this.call(create(MessageSchema, { control }));
  }

  private onFrame(data: unknown): void {
    let msg: Message;
    try {
      msg = fromBinary(MessageSchema, frameBytes(data));
    } catch (e) {
      this.emit("error", new EdkError(`undecodable frame: ${(e as Error)?.message ?? e}`));
      return;
    }
    const c = msg.control;
    const pending = msg.id ? this.pending.get(msg.id) : undefined;
    if (pending && (c.case === undefined || REPLY_CASES.has(c.case))) {
      this.pending.delete(msg.id);
      clearTimeout(pending.timer);
      if (c.case === "error") pending.reject(new ServerError(c.value.code, c.value.message, msg.id));
      else pending.resolve(msg);
      return;
    }
    switch (c.case) {
      case undefined: {
        const m = received(msg);
        this.emit(m.room ? "roomMessage" : "message", m);
        return;
      }
      case "error":
        this.emit("error", new ServerError(c.value.code, c.value.message, msg.id));
        return;
      case "activities":
        this.emit("activities", c.value.activities.map(activity));
        return;
      case "memberChanged":
        this.emit("memberChanged", {
          room: c.value.room,
          member: member(c.value.member),
          joined: c.value.joined,
        });
        return;
      case "memberChanges":
        this.emit("memberChanges", {
          room: c.value.room,
          changes: c.value.changes.map((ch) => ({ member: member(ch.member), joined: ch.joined })),
          omitted: c.value.omitted,
        });
        return;
      case "stateChanged": {
        const v = c.value;
        const mine = this.joined.get(v.room);
        if (mine && v.userId !== "" && v.userId === this._userId) applyState(mine, v.changes, v.removed);
        this.emit("stateChanged", { room: v.room, userId: v.userId, changes: { ...v.changes }, removed: [...v.removed] });
        return;
      }
      case "roomClosed":
        this.joined.delete(c.value.room);
        this.emit("roomClosed", { room: c.value.room, reason: c.value.reason });
        return;
      default:
        // A late reply (its request timed out) or a verb servers never send.
        return;
    }
  }
}

/** Creates a client and resolves once it is connected. */
export async function connect(options: ConnectOptions): Promise<EdkClient> {
  const client = new EdkClient(options);
  await client.connect();
  return client;
}

/** Fetches pages from the first to the last (`nextCursor` empty; a repeated cursor also ends it). */
async function eachPage<P extends { nextCursor: string }>(
  get: (cursor: string) => Promise<P>,
  onPage: (page: P) => void,
): Promise<void> {
  const seen = new Set<string>();
  let cursor = "";
  for (;;) {
    const page = await get(cursor);
    onPage(page);
    if (!page.nextCursor || seen.has(page.nextCursor)) return;
    seen.add(page.nextCursor);
    cursor = page.nextCursor;
  }
}

function bytes(p: Payload): Uint8Array {
  return typeof p === "string" ? encoder.encode(p) : p;
}

function frameBytes(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) {
    // Node's `ws` may hand over fragments as Buffer[] in some binary types.
    const parts = data as Uint8Array[];
    const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
  throw new EdkError(`expected a binary frame, got ${typeof data}`);
}

function received(m: Message): ReceivedMessage {
  return {
    id: m.id,
    type: m.type,
    payload: m.payload,
    metadata: { ...m.metadata },
    sender: m.sender,
    timestampMs: Number(m.timestampMs),
    room: m.room,
    text: () => decoder.decode(m.payload),
  };
}

function member(m: PbMember | undefined): MemberInfo {
  return { userId: m?.userId ?? "", state: { ...(m?.state ?? {}) } };
}

function activity(a: PbActivity): ActivityInfo {
  return {
    userId: a.userId,
    status: STATUS_NAMES[a.status] ?? "offline",
    detail: a.detail,
    sinceMs: Number(a.sinceMs),
  };
}

function applyState(state: Record<string, string>, changes: Record<string, string>, removed: string[]): void {
  Object.assign(state, changes);
  for (const k of removed) delete state[k];
}

function randomPrefix(): string {
  const b = new Uint8Array(6);
  globalThis.crypto.getRandomValues(b);
  return `${Array.from(b, (x) => x.toString(36).padStart(2, "0")).join("")}-`;
}

/** The `sub` claim of a JWT, read without verification (the server verifies). */
function tokenSubject(token: string): string | undefined {
  try {
    const part = token.split(".")[1];
    if (!part) return undefined;
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}
