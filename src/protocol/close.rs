//! How a connection ends: close codes sent to clients and the
//! [`DisconnectReason`] given to disconnect handlers.

use std::fmt;

/// Close codes the server sends. Codes below 4000 are RFC 6455's.
pub mod code {
    /// The server is shutting down (`WsClient::shutdown`).
    pub const GOING_AWAY: u16 = 1001;
    /// A frame broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame arrived: the protocol is binary protobuf only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A binary frame did not decode as an `edk.ws.v1.Message`.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message exceeded `Options::max_message_size`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Nothing (no frame, no pong) arrived within `Options::idle_timeout`.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// A newer connection of the same user replaced this one.
    pub const REPLACED: u16 = 4001;
    /// The server kicked the user (`WsClient::kick`); the reason text says why.
    pub const KICKED: u16 = 4002;
    /// The client did not read fast enough: its send queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4003;
    /// The server failed while serving the connection.
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// Why a connection ended, as given to disconnect handlers (exactly once per
/// accepted connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, enum_map::Enum)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client closed the connection (close frame, or the socket ended).
    ClientClosed,
    /// A newer connection of the same user replaced it (close 4001).
    Replaced,
    /// The server kicked the user (close 4002).
    Kicked,
    /// Nothing arrived within the idle timeout (close 4000).
    IdleTimeout,
    /// The send queue overflowed (close 4003).
    SlowConsumer,
    /// The client broke the protocol: text frame (1003), undecodable message
    /// (1007), message too big (1009) or a WebSocket protocol error (1002).
    ProtocolError,
    /// The server shut down (close 1001).
    ServerShutdown,
    /// The server failed while serving the connection (a bug, e.g. a
    /// panic outside the isolated handlers); close 1011.
    ServerError,
}

impl DisconnectReason {
    /// A short stable name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientClosed => "client_closed",
            DisconnectReason::Replaced => "replaced",
            DisconnectReason::Kicked => "kicked",
            DisconnectReason::IdleTimeout => "idle_timeout",
            DisconnectReason::SlowConsumer => "slow_consumer",
            DisconnectReason::ProtocolError => "protocol_error",
            DisconnectReason::ServerShutdown => "server_shutdown",
            DisconnectReason::ServerError => "server_error",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A close the server asked for: the frame to send and the reason to report.
#[derive(Debug, Clone)]
pub(crate) struct CloseRequest {
    pub code: u16,
    pub text: String,
    pub reason: DisconnectReason,
    /// Drop what is still queued instead of sending it first (slow consumer).
    pub discard_queue: bool,
}

impl CloseRequest {
    pub(crate) fn new(code: u16, text: &str, reason: DisconnectReason) -> Self {
        CloseRequest {
            code,
            text: truncate_reason(text),
            reason,
            discard_queue: false,
        }
    }
}

/// A close frame's reason must fit a 125-byte control frame with its 2-byte
/// code: cut at 123 bytes on a character boundary.
fn truncate_reason(text: &str) -> String {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reason_fits_a_control_frame() {
        let long = "é".repeat(100);
        let t = super::truncate_reason(&long);
        assert!(t.len() <= 123);
        assert!(long.starts_with(&t));
    }
}

/// `proto/ws.proto`'s `CloseCode` (the reference, and the source of the
/// AsyncAPI document's table) lists exactly these codes.
#[cfg(test)]
mod reference {
    use super::code;
    use crate::protocol::proto::CloseCode;

    #[test]
    fn the_codes_are_the_proto_tables() {
        let ours = [
            (code::GOING_AWAY, CloseCode::CloseGoingAway),
            (code::PROTOCOL_ERROR, CloseCode::CloseProtocolError),
            (code::UNSUPPORTED_DATA, CloseCode::CloseUnsupportedData),
            (code::INVALID_PAYLOAD, CloseCode::CloseInvalidPayload),
            (code::MESSAGE_TOO_BIG, CloseCode::CloseMessageTooBig),
            (code::INTERNAL_ERROR, CloseCode::CloseInternalError),
            (code::IDLE_TIMEOUT, CloseCode::CloseIdleTimeout),
            (code::REPLACED, CloseCode::CloseReplaced),
            (code::KICKED, CloseCode::CloseKicked),
            (code::SLOW_CONSUMER, CloseCode::CloseSlowConsumer),
        ];
        for (c, p) in ours {
            assert_eq!(i32::from(c), p as i32, "{p:?}");
        }
        let listed = (1..5000)
            .filter(|n| CloseCode::try_from(*n).is_ok())
            .count();
        assert_eq!(
            listed,
            ours.len(),
            "ws.proto lists a close code the server lacks"
        );
    }
}
