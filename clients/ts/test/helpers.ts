import WebSocket from "ws";

import { type ConnectOptions, EdkClient } from "../src/index.js";
import type { ServerProcess } from "./server.js";

/** Fails with `what` unless `p` settles within `ms`. */
export function within<T>(p: Promise<T>, what: string, ms = 15_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/** What `client.connect()` rejects with (null if it connects). */
export function connectFailure(client: EdkClient): Promise<unknown> {
  return client.connect().then(
    () => null,
    (e: unknown) => e,
  );
}

/** A client of `server()` (a function: the server may be restarted) for `user`, tokens from /dev/token. */
export class TestClient {
  readonly client: EdkClient;
  /** Every token getToken returned, in order. */
  readonly tokens: string[] = [];

  constructor(server: () => ServerProcess, user: string, extra: Partial<ConnectOptions> = {}) {
    this.client = new EdkClient({
      url: server().url,
      WebSocket,
      getToken: async () => {
        const t = await server().token(user);
        this.tokens.push(t);
        return t;
      },
      // Quick retries: a test's server restarts in well under a second.
      reconnect: { initialDelayMs: 20, maxDelayMs: 200, maxFailures: 100 },
      ...extra,
    });
  }
}

/** Closes every client made through `track` after each test. */
export function tracker(): { track: (c: EdkClient) => EdkClient; closeAll: () => void } {
  const all: EdkClient[] = [];
  return {
    track: (c) => {
      all.push(c);
      return c;
    },
    closeAll: () => {
      for (const c of all.splice(0)) c.close();
    },
  };
}
