//! Bytes under the WebSocket, at the bottom of the crate beside
//! [`protocol`](crate::protocol): the socket recovered from hyper's upgrade
//! and split for the reader and the writer without a lock (`transport`:
//! TCP_NODELAY however the listener was bound), the WebSocket read path
//! (`ws_read`: frames out of small stack-buffer reads, RFC 6455's server
//! rules, no read buffer held while idle), the writer's frames
//! (`outbuf`: coalesced, vectored, buffer freed after each write), and a
//! listener helper ([`bind`]). The connection uses no WebSocket library
//! after the handshake. Imports nothing else of the crate.

mod listener;
pub(crate) mod outbuf;
pub(crate) mod transport;
pub(crate) mod ws_read;

pub use listener::bind;

// WebSocket opcodes (RFC 6455 §5.2), for the read path and the writer.
pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xa;

/// A close frame's payload: the code (big-endian), then the reason.
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}
