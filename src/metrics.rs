//! Counters of a [`WsClient`](crate::WsClient), read with
//! [`WsClient::metrics`](crate::WsClient::metrics) (and scraped by
//! Prometheus through the same snapshot: see `prometheus.rs`).
//!
//! Rare events (handshakes, disconnects, failures) are shared atomics here;
//! what happens per message is counted per worker thread (`per_thread`)
//! and summed when read, so the message path touches no shared cache line.

mod histogram;
mod per_thread;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use enum_map::{Enum, EnumMap};

use crate::error::SendError;
use crate::protocol::close::DisconnectReason;
pub use histogram::HistogramSnapshot;
pub(crate) use per_thread::{Handling, PerThread};

/// Why a handshake was refused (for [`MetricsSnapshot::refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum Refusal {
    BadRequest,
    UpgradeRequired,
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
    /// Messages and bytes in and out, handling durations, writer batches,
    /// handshake durations: per worker thread.
    pub hot: PerThread,
    send_failures: EnumMap<SendFailure, AtomicU64>,
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

    /// A send that could not be queued.
    pub fn send_failed(&self, why: SendError) {
        self.send_failures[SendFailure::from(why)].fetch_add(1, Relaxed);
    }

    /// `n` sends failed with `why`.
    pub fn sends_failed(&self, why: SendError, n: u64) {
        self.send_failures[SendFailure::from(why)].fetch_add(n, Relaxed);
    }

    /// The counters now. The gauges of the hub (rooms, members, activities,
    /// queues) are left 0: `WsClient::metrics` fills them.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |w| self.refused[w].load(Relaxed);
        let hot = self.hot.totals();
        let send_failures = SendFailureCounts::from_map(&self.send_failures);
        MetricsSnapshot {
            connections: self.connections_now.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            refused: RefusedCounts {
                bad_request: r(Refusal::BadRequest),
                upgrade_required: r(Refusal::UpgradeRequired),
                unauthorized: r(Refusal::Unauthorized),
                forbidden: r(Refusal::Forbidden),
                conflict: r(Refusal::Conflict),
                shutting_down: r(Refusal::ShuttingDown),
            },
            disconnects: DisconnectCounts::from_map(&self.disconnects),
            messages_in: hot.messages_in,
            messages_out: hot.messages_out,
            bytes_in: hot.bytes_in,
            bytes_out: hot.bytes_out,
            send_failed: send_failures.total(),
            send_failures,
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
            handshake_duration: hot.handshakes,
            handling_duration: HandlingDurations {
                requests: hot.handling[Handling::Request].clone(),
                routes: hot.handling[Handling::Route].clone(),
                handlers: hot.handling[Handling::Handlers].clone(),
            },
            send_batches: hot.batches,
            ..MetricsSnapshot::default()
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
    /// Sends that could not be queued (any [`SendError`](crate::SendError)):
    /// the sum of `send_failures`.
    pub send_failed: u64,
    /// Sends that could not be queued, by [`SendError`](crate::SendError).
    /// Each `queue_full` is one slow consumer closed with 4003.
    pub send_failures: SendFailureCounts,
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
    /// Backplane (Redis) calls that took longer than `redis_timeout` while
    /// Redis still answered a `PING` (this node was busy): each failed (the
    /// caller got `Unavailable`), but the backplane was not declared down.
    pub backplane_slow_calls: u64,
    /// How long handshakes took, from the request to the 101 (refusals are
    /// not timed), in nanoseconds.
    pub handshake_duration: HistogramSnapshot,
    /// How long inbound messages took to handle, sampled: one message in 16
    /// per worker thread is timed.
    pub handling_duration: HandlingDurations,
    /// Messages each writer wake-up found in its connection's send queue
    /// (the queue's depth when drained), one observation per batch.
    pub send_batches: HistogramSnapshot,
    /// Rooms now (with at least one member here).
    pub rooms: u64,
    /// Room memberships of the connections here now.
    pub room_members: u64,
    /// Users with a non-offline activity now.
    pub activities: u64,
    /// Messages waiting in send queues now, over every connection.
    pub queued_messages: u64,
    /// Bytes waiting in send queues now, over every connection.
    pub queued_bytes: u64,
    /// The deepest send queue now, in messages.
    pub max_queue_depth: u64,
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

/// Sampled handling durations of inbound messages, by what handled them
/// (in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandlingDurations {
    /// Module requests (control verbs and room publishes).
    pub requests: HistogramSnapshot,
    /// Typed routes.
    pub routes: HistogramSnapshot,
    /// The subscribed message handlers.
    pub handlers: HistogramSnapshot,
}

/// A [`SendError`] as a counter key (kept in step with it by the
/// exhaustive match below).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
enum SendFailure {
    NotConnected,
    QueueFull,
    Closed,
    ShuttingDown,
    TooLarge,
    Unavailable,
}

impl From<SendError> for SendFailure {
    fn from(e: SendError) -> Self {
        match e {
            SendError::NotConnected => SendFailure::NotConnected,
            SendError::QueueFull => SendFailure::QueueFull,
            SendError::Closed => SendFailure::Closed,
            SendError::ShuttingDown => SendFailure::ShuttingDown,
            SendError::TooLarge => SendFailure::TooLarge,
            SendError::Unavailable => SendFailure::Unavailable,
        }
    }
}

/// Failed sends by [`SendError`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct SendFailureCounts {
    pub not_connected: u64,
    pub queue_full: u64,
    pub closed: u64,
    pub shutting_down: u64,
    pub too_large: u64,
    pub unavailable: u64,
}

impl SendFailureCounts {
    fn from_map(m: &EnumMap<SendFailure, AtomicU64>) -> Self {
        let g = |k| m[k].load(Relaxed);
        SendFailureCounts {
            not_connected: g(SendFailure::NotConnected),
            queue_full: g(SendFailure::QueueFull),
            closed: g(SendFailure::Closed),
            shutting_down: g(SendFailure::ShuttingDown),
            too_large: g(SendFailure::TooLarge),
            unavailable: g(SendFailure::Unavailable),
        }
    }

    /// Every failed send.
    pub fn total(&self) -> u64 {
        self.not_connected
            + self.queue_full
            + self.closed
            + self.shutting_down
            + self.too_large
            + self.unavailable
    }
}

/// Refused handshakes by answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusedCounts {
    /// 400: not a WebSocket upgrade.
    pub bad_request: u64,
    /// 426: a WebSocket version other than 13.
    pub upgrade_required: u64,
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
