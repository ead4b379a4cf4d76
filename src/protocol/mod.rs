//! The wire, at the bottom of the crate: the prost types of `proto/ws.proto`
//! ([`proto`]), frame ⇄ message (`codec`), and how a connection ends
//! ([`close`]: close codes and [`DisconnectReason`](close::DisconnectReason)).
//! Imports nothing else of the crate.

pub mod close;
pub(crate) mod cluster;
pub(crate) mod codec;
pub(crate) mod cost;
pub mod proto;

/// The subprotocol name of this wire protocol. Offered beside the token
/// (`Sec-WebSocket-Protocol: edk.ws.v1, <token>`), it is what the server
/// echoes.
pub const PROTOCOL: &str = "edk.ws.v1";
