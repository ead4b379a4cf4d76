/**
 * edk-ws-client: a typed client for edk-ws servers, for browsers and Node.
 *
 * ```ts
 * import { connect } from "edk-ws-client";
 * const client = await connect({ url: "ws://127.0.0.1:8080/ws", getToken });
 * client.on("roomMessage", (m) => console.log(`${m.sender}: ${m.text()}`));
 * await client.join("lobby");
 * await client.publish("lobby", "chat", "hello");
 * ```
 *
 * @module
 */
export {
  connect,
  EdkClient,
  PROTOCOL,
  type ActivitiesPage,
  type ActivityInfo,
  type ActivityStatus,
  type ClientEvents,
  type ConnectionState,
  type ConnectOptions,
  type MemberInfo,
  type MembersPage,
  type PageOptions,
  type Payload,
  type ReceivedMessage,
  type StateUpdate,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client.js";
export { backoffDelay, DEFAULT_RECONNECT, type ReconnectOptions } from "./backoff.js";
export {
  ClosedError,
  type CloseWhy,
  ConnectionClosedError,
  EdkError,
  NotConnectedError,
  RequestTimeoutError,
  RestoreError,
  ServerError,
} from "./errors.js";
export { Emitter } from "./events.js";
/** The generated protobuf types of `proto/ws.proto` (`@bufbuild/protobuf`). */
export * as pb from "./gen/ws_pb.js";
