/**
 * The demo page served by the example server at `/` (bundled into
 * examples/web/static/demo.js by `npm run build:demo`): pick a name, join a
 * room, chat, and see the members and everyone's activity live.
 *
 * Tokens come from the example server's development route
 * `/dev/token?user=NAME`; in production mode (no such route) the page asks
 * for a token. The browser sends no `x-user-id`: the server takes the user
 * from the token (option `user_id_from_token`).
 */
import {
  type ActivityInfo,
  type ActivityStatus,
  ClosedError,
  connect,
  EdkClient,
  type MemberInfo,
} from "../src/index.js";

// For the console and the browser tests: the client library itself.
(globalThis as Record<string, unknown>).edk = { EdkClient, connect };

const el = <T extends HTMLElement>(id: string): T => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`#${id} missing`);
  return e as T;
};

const ui = {
  status: el<HTMLSpanElement>("status"),
  login: el<HTMLFormElement>("login"),
  user: el<HTMLInputElement>("user"),
  room: el<HTMLInputElement>("room"),
  token: el<HTMLInputElement>("token"),
  tokenLabel: el<HTMLLabelElement>("token-label"),
  app: el<HTMLElement>("app"),
  roomTitle: el<HTMLHeadingElement>("room-title"),
  log: el<HTMLUListElement>("log"),
  say: el<HTMLFormElement>("say"),
  text: el<HTMLInputElement>("text"),
  activity: el<HTMLSelectElement>("activity"),
  detail: el<HTMLInputElement>("detail"),
  members: el<HTMLUListElement>("members"),
  people: el<HTMLUListElement>("people"),
  leave: el<HTMLButtonElement>("leave"),
};

let client: EdkClient | null = null;
let me = "";
let room = "";
/** The room's members and their member state. */
const members = new Map<string, Record<string, string>>();
/** Everyone whose activity we know; users who went offline stay, marked offline. */
const people = new Map<string, ActivityInfo>();

function setStatus(state: string, text: string): void {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function line(who: string | null, text: string): void {
  const li = document.createElement("li");
  if (who === null) {
    li.className = "system";
    li.textContent = text;
  } else {
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = who;
    li.append(name, document.createTextNode(text));
  }
  ui.log.append(li);
  ui.log.scrollTop = ui.log.scrollHeight;
}

function statusOf(user: string): ActivityInfo {
  return people.get(user) ?? { userId: user, status: "offline", detail: "", sinceMs: 0 };
}

function entry(user: string): HTMLLIElement {
  const a = statusOf(user);
  const li = document.createElement("li");
  li.dataset.user = user;
  li.dataset.status = a.status;
  const name = document.createElement("span");
  name.textContent = user === me ? `${user} (you)` : user;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = a.detail ? `${a.status}: ${a.detail}` : a.status;
  li.append(name, badge);
  return li;
}

function render(): void {
  ui.members.replaceChildren(...[...members.keys()].sort().map(entry));
  ui.people.replaceChildren(...[...people.keys()].sort().map(entry));
}

/** Why the connection ended, for a person. */
function describe(e: unknown): string {
  if (!(e instanceof ClosedError)) return `error: ${(e as Error)?.message ?? e}`;
  switch (e.why) {
    case "replaced":
      return "disconnected: replaced by a newer connection of the same user (4001)";
    case "kicked":
      return `disconnected: kicked by the server (4002${e.reason ? `: ${e.reason}` : ""})`;
    case "gave-up":
      return `disconnected: gave up after ${e.failures} failed attempts (is the server up, the token valid?)`;
    case "refused":
      return `disconnected: refused (HTTP ${e.status})`;
    case "client":
      return "left";
    default:
      return `disconnected (${e.code}${e.reason ? ` ${e.reason}` : ""})`;
  }
}

/** A token for `user`: from /dev/token in development mode, else the token field. */
async function getToken(user: string): Promise<string> {
  const r = await fetch(`/dev/token?user=${encodeURIComponent(user)}`, { cache: "no-store" });
  if (r.ok) return ((await r.json()) as { token: string }).token;
  if (r.status === 404) {
    ui.tokenLabel.hidden = false;
    const t = ui.token.value.trim();
    if (t) return t;
    throw new Error("production mode: paste a token (cargo run --example client -- --mint --user NAME)");
  }
  throw new Error(`/dev/token: HTTP ${r.status} ${await r.text()}`);
}

/** Loads the room's members and everyone's activity (on join and after a reconnect). */
async function refresh(c: EdkClient): Promise<void> {
  const [list, activities] = await Promise.all([c.listAllMembers(room), c.listAllActivities()]);
  members.clear();
  for (const m of list.members) members.set(m.userId, m.state);
  const online = new Set(activities.map((a) => a.userId));
  for (const [user, a] of people) {
    if (!online.has(user)) people.set(user, { ...a, status: "offline", detail: "" });
  }
  for (const a of activities) people.set(a.userId, a);
  render();
}

function onMember(m: MemberInfo, joined: boolean): void {
  if (joined) members.set(m.userId, m.state);
  else members.delete(m.userId);
  line(null, `${m.userId} ${joined ? "joined" : "left"}`);
  render();
}

function wire(c: EdkClient): void {
  c.on("state", (s) => {
    if (s === "connecting") setStatus(s, c.failures ? `connecting… (${c.failures} failed)` : "connecting…");
    if (s === "open") setStatus(s, `connected as ${me} in ${room}`);
  });
  c.on("reconnecting", (e) =>
    setStatus("reconnecting", `reconnecting in ${Math.round(e.delayMs / 100) / 10} s (${e.failures} failed)`),
  );
  c.on("open", (e) => {
    if (e.reconnected) {
      line(null, "reconnected");
      refresh(c).catch((err: unknown) => line(null, `could not refresh: ${(err as Error).message}`));
    }
  });
  c.on("closed", (e) => {
    setStatus("closed", describe(e));
    line(null, describe(e));
    ui.login.hidden = false;
    ui.leave.disabled = true;
  });
  c.on("roomMessage", (m) => {
    if (m.room === room && m.type === "chat") line(m.sender, m.text());
  });
  c.on("memberChanged", (e) => {
    if (e.room === room) onMember(e.member, e.joined);
  });
  c.on("memberChanges", (e) => {
    if (e.room !== room) return;
    for (const ch of e.changes) onMember(ch.member, ch.joined);
    if (e.omitted > 0) refresh(c).catch(() => {});
  });
  c.onActivities((changes) => {
    for (const a of changes) people.set(a.userId, a);
    render();
  });
  c.on("roomClosed", (e) => {
    if (e.room === room) line(null, `the server closed the room: ${e.reason}`);
  });
  c.on("error", (e) => line(null, `error: ${e.message}`));
}

ui.login.addEventListener("submit", (ev) => {
  ev.preventDefault();
  void start();
});

async function start(): Promise<void> {
  client?.close();
  me = ui.user.value.trim();
  room = ui.room.value.trim();
  if (!me || !room) return;
  members.clear();
  people.clear();
  ui.log.replaceChildren();
  ui.roomTitle.textContent = `Room ${room}`;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const c = new EdkClient({ url, getToken: () => getToken(me) });
  client = c;
  wire(c);
  setStatus("connecting", "connecting…");
  try {
    await c.connect();
    await c.join(room);
    await c.setActivity(ui.activity.value as ActivityStatus, ui.detail.value.trim());
    await refresh(c);
  } catch (e) {
    if (client === c) setStatus("closed", describe(e));
    return;
  }
  ui.login.hidden = true;
  ui.app.hidden = false;
  ui.leave.disabled = false;
  line(null, `you joined ${room} as ${me}`);
  ui.text.focus();
}

ui.say.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = ui.text.value.trim();
  const c = client;
  if (!text || !c) return;
  ui.text.value = "";
  // Room publishes are not echoed to their sender: show ours on the ack.
  c.publish(room, "chat", text).then(
    () => line(me, text),
    (e: unknown) => line(null, `not sent: ${(e as Error).message}`),
  );
});

function activityChanged(): void {
  const c = client;
  if (!c || c.state !== "open") return;
  const status = ui.activity.value as ActivityStatus;
  const detail = ui.detail.value.trim();
  c.setActivity(status, detail).then(
    () => {
      people.set(me, { userId: me, status, detail, sinceMs: Date.now() });
      render();
    },
    (e: unknown) => line(null, `activity not set: ${(e as Error).message}`),
  );
}
ui.activity.addEventListener("change", activityChanged);
ui.detail.addEventListener("change", activityChanged);

ui.leave.addEventListener("click", () => {
  client?.close();
  client = null;
  ui.app.hidden = true;
  ui.login.hidden = false;
  setStatus("idle", "not connected");
});
