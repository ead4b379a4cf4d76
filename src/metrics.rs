//! Counters of a [`WsClient`](crate::WsClient), read with
//! [`WsClient::metrics`](crate::WsClient::metrics).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::close::DisconnectReason;

/// Why a handshake was refused (for [`MetricsSnapshot::refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    BadRequest = 0,
    Unauthorized = 1,
    Forbidden = 2,
    Conflict = 3,
    ShuttingDown = 4,
}

#[derive(Default)]
pub(crate) struct Metrics {
    pub connections_now: AtomicU64,
    pub accepted: AtomicU64,
    refused: [AtomicU64; 5],
    disconnects: [AtomicU64; 8],
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub send_failed: AtomicU64,
    pub handler_panics: AtomicU64,
    pub tcp_nodelay_unavailable: AtomicU64,
}

impl Metrics {
    pub fn refuse(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }

    pub fn disconnected(&self, why: DisconnectReason) {
        self.disconnects[reason_index(why)].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |i: usize| self.refused[i].load(Relaxed);
        let d = |w| self.disconnects[reason_index(w)].load(Relaxed);
        MetricsSnapshot {
            connections: self.connections_now.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            refused: RefusedCounts {
                bad_request: r(0),
                unauthorized: r(1),
                forbidden: r(2),
                conflict: r(3),
                shutting_down: r(4),
            },
            disconnects: DisconnectCounts {
                client_closed: d(DisconnectReason::ClientClosed),
                replaced: d(DisconnectReason::Replaced),
                kicked: d(DisconnectReason::Kicked),
                idle_timeout: d(DisconnectReason::IdleTimeout),
                slow_consumer: d(DisconnectReason::SlowConsumer),
                protocol_error: d(DisconnectReason::ProtocolError),
                server_shutdown: d(DisconnectReason::ServerShutdown),
                server_error: d(DisconnectReason::ServerError),
            },
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            send_failed: self.send_failed.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
            tcp_nodelay_unavailable: self.tcp_nodelay_unavailable.load(Relaxed),
        }
    }
}

fn reason_index(r: DisconnectReason) -> usize {
    match r {
        DisconnectReason::ClientClosed => 0,
        DisconnectReason::Replaced => 1,
        DisconnectReason::Kicked => 2,
        DisconnectReason::IdleTimeout => 3,
        DisconnectReason::SlowConsumer => 4,
        DisconnectReason::ProtocolError => 5,
        DisconnectReason::ServerShutdown => 6,
        DisconnectReason::ServerError => 7,
    }
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Connections open now (accepted, not yet ended).
    pub connections: u64,
    /// Handshakes accepted (101 sent) since start.
    pub accepted: u64,
    /// Handshakes refused, by HTTP status.
    pub refused: RefusedCounts,
    /// Connections ended, by reason.
    pub disconnects: DisconnectCounts,
    /// Messages received from clients and decoded.
    pub messages_in: u64,
    /// Messages written to clients.
    pub messages_out: u64,
    /// Bytes of binary frames received.
    pub bytes_in: u64,
    /// Bytes of binary frames written.
    pub bytes_out: u64,
    /// Sends that could not be queued (any [`SendError`](crate::SendError)).
    pub send_failed: u64,
    /// Handlers that panicked (each was caught and logged).
    pub handler_panics: u64,
    /// Connections served without `TCP_NODELAY`: a TCP socket on which it
    /// could not be set, or a stream that is neither a tokio `TcpStream`
    /// nor a `UnixStream` (a custom acceptor). 0 under warp's own server
    /// with a TCP or Unix listener, however it was bound.
    pub tcp_nodelay_unavailable: u64,
}

/// Refused handshakes by answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusedCounts {
    /// 400/426: not a WebSocket upgrade.
    pub bad_request: u64,
    /// 401: bad or missing user id or token.
    pub unauthorized: u64,
    /// 403: token for another user, or origin not allowed.
    pub forbidden: u64,
    /// 409: the user is already connected and `kick_out_new_user_conn` is on.
    pub conflict: u64,
    /// 503: shutting down.
    pub shutting_down: u64,
}

/// Ended connections by [`DisconnectReason`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct DisconnectCounts {
    pub client_closed: u64,
    pub replaced: u64,
    pub kicked: u64,
    pub idle_timeout: u64,
    pub slow_consumer: u64,
    pub protocol_error: u64,
    pub server_shutdown: u64,
    pub server_error: u64,
}
