import { Error_Code } from "./gen/ws_pb.js";

/** Base class of every error this client raises. */
export class EdkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** `send`/`request`/a room or presence call while not connected. Nothing was sent. */
export class NotConnectedError extends EdkError {
  constructor(readonly state: string) {
    super(`not connected (${state})`);
  }
}

/** The connection closed while a request was waiting for its reply. */
export class ConnectionClosedError extends EdkError {
  constructor(
    readonly code: number,
    readonly reason: string,
  ) {
    super(`connection closed (${code}${reason ? ` ${reason}` : ""}) before the reply`);
  }
}

/** No reply with the request's id arrived in time. */
export class RequestTimeoutError extends EdkError {
  constructor(
    readonly id: string,
    readonly timeoutMs: number,
  ) {
    super(`no reply to request ${id} within ${timeoutMs} ms`);
  }
}

/** The server answered a request with `Error` (see `Error.Code` in ws.proto). */
export class ServerError extends EdkError {
  /** The code's name, e.g. `NOT_A_MEMBER`. */
  readonly codeName: string;
  constructor(
    readonly code: Error_Code,
    readonly serverMessage: string,
    /** The id of the request it answers ("" for a request sent without id). */
    readonly requestId: string,
  ) {
    const name = Error_Code[code] ?? String(code);
    super(`${name}: ${serverMessage}`);
    this.codeName = name;
  }
}

/** Why a client stopped for good (see the `closed` event). */
export type CloseWhy =
  /** `close()` was called. */
  | "client"
  /** 4001: a newer connection of the same user replaced this one. */
  | "replaced"
  /** 4002: the server kicked this user. */
  | "kicked"
  /** HTTP 401/403 seen on the handshake (only where the WebSocket implementation exposes it, e.g. Node's `ws`). */
  | "refused"
  /** `maxFailures` attempts in a row never opened. */
  | "gave-up"
  /** Closed with a code that is not retried, or reconnecting is off. */
  | "closed";

/** The payload of the `closed` event, and what `connect()` rejects with. */
export class ClosedError extends EdkError {
  constructor(
    readonly why: CloseWhy,
    /** The last close code (1006 when no connection ever opened). */
    readonly code: number,
    readonly reason: string,
    /** Consecutive attempts that never opened. */
    readonly failures: number,
    /** The handshake's HTTP status, when it was seen. */
    readonly status?: number,
  ) {
    super(
      `closed for good: ${why} (code ${code}${reason ? ` ${reason}` : ""}` +
        `${status ? `, HTTP ${status}` : ""}, ${failures} failed attempts in a row)`,
    );
  }
}

/** A room could not be re-joined, or the activity re-set, after a reconnect. */
export class RestoreError extends EdkError {
  constructor(
    readonly what: string,
    override readonly cause: Error,
  ) {
    super(`could not restore ${what} after reconnecting: ${cause.message}`);
  }
}
