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
    // hardening (issue 10)
    pub pending_handshakes: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub pending_cap_refused: AtomicU64,
    pub pending_ip_cap_refused: AtomicU64,
    pub malformed_requests: AtomicU64,
    pub inbound_rate_limited: AtomicU64,
    pub inbound_dropped: AtomicU64,
    pub messages_over_entry_limits: AtomicU64,
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
            pending_handshakes: self.pending_handshakes.load(Relaxed),
            handshake_timeouts: self.handshake_timeouts.load(Relaxed),
            pending_cap_refused: self.pending_cap_refused.load(Relaxed),
            pending_ip_cap_refused: self.pending_ip_cap_refused.load(Relaxed),
            malformed_requests: self.malformed_requests.load(Relaxed),
            inbound_rate_limited: self.inbound_rate_limited.load(Relaxed),
            inbound_dropped: self.inbound_dropped.load(Relaxed),
            messages_over_entry_limits: self.messages_over_entry_limits.load(Relaxed),
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
    // hardening (issue 10): the serving path (`edk_ws::serve`) and budgets
    /// Connections accepted by [`serve`](crate::serve) and not yet
    /// upgraded (nor past `handshake_timeout`), now.
    pub pending_handshakes: u64,
    /// Connections closed by [`serve`](crate::serve) because they had not
    /// sent a complete request head within `handshake_timeout`.
    pub handshake_timeouts: u64,
    /// Connections answered 503 at accept: `max_pending_handshakes` reached.
    pub pending_cap_refused: u64,
    /// Connections answered 503 at accept: their address had
    /// `max_pending_handshakes_per_ip` pending.
    pub pending_ip_cap_refused: u64,
    /// HTTP requests that did not parse, or whose head was over
    /// `max_header_bytes` (answered 400/431 and closed by hyper).
    pub malformed_requests: u64,
    /// Messages over a connection's inbound budget answered
    /// `Error RATE_LIMITED` (module requests, and messages with an `id`).
    pub inbound_rate_limited: u64,
    /// Messages over a connection's inbound budget dropped without an
    /// answer (application messages with an empty `id`).
    pub inbound_dropped: u64,
    /// Frames refused with close 1009 before decoding: `metadata` over
    /// `max_metadata_entries`/`max_metadata_bytes`, or more map and list
    /// entries than the cost rule allows.
    pub messages_over_entry_limits: u64,
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
