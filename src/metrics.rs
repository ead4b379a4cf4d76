//! Counters of a [`WsClient`](crate::WsClient), read with
//! [`WsClient::metrics`](crate::WsClient::metrics).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use enum_map::{Enum, EnumMap};

use crate::protocol::close::DisconnectReason;

/// Why a handshake was refused (for [`MetricsSnapshot::refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum Refusal {
    BadRequest,
    Unauthorized,
    Forbidden,
    Conflict,
    ShuttingDown,
}

/// The counters. Per-reason counters are [`EnumMap`]s: one counter per
/// variant, kept in step with the enum by the compiler.
#[derive(Default)]
pub(crate) struct Metrics {
    pub connections_now: AtomicU64,
    pub accepted: AtomicU64,
    refused: EnumMap<Refusal, AtomicU64>,
    disconnects: EnumMap<DisconnectReason, AtomicU64>,
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
        self.refused[why].fetch_add(1, Relaxed);
    }

    pub fn disconnected(&self, why: DisconnectReason) {
        self.disconnects[why].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |w| self.refused[w].load(Relaxed);
        MetricsSnapshot {
            connections: self.connections_now.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            refused: RefusedCounts {
                bad_request: r(Refusal::BadRequest),
                unauthorized: r(Refusal::Unauthorized),
                forbidden: r(Refusal::Forbidden),
                conflict: r(Refusal::Conflict),
                shutting_down: r(Refusal::ShuttingDown),
            },
            disconnects: DisconnectCounts::from_map(&self.disconnects),
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            send_failed: self.send_failed.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
            tcp_nodelay_unavailable: self.tcp_nodelay_unavailable.load(Relaxed),
            // Filled by the endpoint, which knows its backplane.
            backplane_down: false,
            backplane_publish_errors: 0,
        }
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
    /// Clustered, and the backplane (Redis) is unreachable now.
    pub backplane_down: bool,
    /// Cross-node publishes that could not be sent (Redis unreachable, or
    /// the publish queue full): lost, at most once.
    pub backplane_publish_errors: u64,
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

impl DisconnectCounts {
    fn from_map(counters: &EnumMap<DisconnectReason, AtomicU64>) -> Self {
        let mut c = DisconnectCounts::default();
        for (reason, n) in counters {
            *c.slot(reason) = n.load(Relaxed);
        }
        c
    }

    /// The count of one reason.
    pub fn get(&self, reason: DisconnectReason) -> u64 {
        let mut c = self.clone();
        *c.slot(reason)
    }

    /// The field of `reason` (an exhaustive match: a new reason does not
    /// compile until it has its field).
    fn slot(&mut self, reason: DisconnectReason) -> &mut u64 {
        match reason {
            DisconnectReason::ClientClosed => &mut self.client_closed,
            DisconnectReason::Replaced => &mut self.replaced,
            DisconnectReason::Kicked => &mut self.kicked,
            DisconnectReason::IdleTimeout => &mut self.idle_timeout,
            DisconnectReason::SlowConsumer => &mut self.slow_consumer,
            DisconnectReason::ProtocolError => &mut self.protocol_error,
            DisconnectReason::ServerShutdown => &mut self.server_shutdown,
            DisconnectReason::ServerError => &mut self.server_error,
        }
    }
}
