//! One connection's state and handle, one layer above the wire: who it is
//! ([`Connection`]: user, ids, the headers its authenticator kept), its
//! bounded send queue ([`SendQueue`]), the rooms it is in, and the public
//! handle handlers get ([`Conn`]). Its tasks (reader, writer) live in
//! `session::task`; it imports nothing above itself.
//!
//! The send queue is bounded, drained in batches by the connection's single
//! writer task, and carries the close request that ends the connection. A
//! queue that overflows (by count or bytes) is a slow consumer: what is
//! queued is dropped and a 4003 close is requested, so one client that does
//! not read never holds memory or delays anyone else.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::warn;

use crate::error::SendError;
use crate::metrics::Metrics;
use crate::protocol::close::{code, CloseRequest, DisconnectReason};
use crate::protocol::codec;
use crate::protocol::proto::Message;

pub(crate) struct SendQueue {
    state: Mutex<State>,
    /// Wakes the writer: something was queued or a close was requested.
    pub(crate) writer_wake: Notify,
    max_messages: u32,
    max_bytes: u32,
}

#[derive(Default)]
struct State {
    msgs: VecDeque<Bytes>,
    bytes: usize,
    close: Option<CloseRequest>,
    /// The peer is gone or closed: nothing more may be queued.
    ended: bool,
}

/// What the writer takes in one go.
pub(crate) struct Batch {
    pub msgs: VecDeque<Bytes>,
    pub close: Option<CloseRequest>,
    pub ended: bool,
}

impl SendQueue {
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        SendQueue {
            state: Mutex::new(State::default()),
            writer_wake: Notify::new(),
            max_messages: max_messages.clamp(1, u32::MAX as usize) as u32,
            max_bytes: max_bytes.clamp(1, u32::MAX as usize) as u32,
        }
    }

    /// Queues one encoded message. On overflow what is queued is dropped, a
    /// 4003 close is requested and `QueueFull` returned (once: later pushes
    /// get `Closed`).
    pub fn push(&self, frame: Bytes) -> Result<(), SendError> {
        let mut s = self.state.lock();
        if s.close.is_some() || s.ended {
            return Err(SendError::Closed);
        }
        if frame.len() > self.max_bytes as usize {
            return Err(SendError::TooLarge);
        }
        if s.msgs.len() >= self.max_messages as usize
            || s.bytes + frame.len() > self.max_bytes as usize
        {
            let mut req = CloseRequest::new(
                code::SLOW_CONSUMER,
                "slow consumer",
                DisconnectReason::SlowConsumer,
            );
            req.discard_queue = true;
            s.close = Some(req);
            s.msgs = VecDeque::new();
            s.bytes = 0;
            drop(s);
            self.writer_wake.notify_one();
            return Err(SendError::QueueFull);
        }
        s.bytes += frame.len();
        s.msgs.push_back(frame);
        let first = s.msgs.len() == 1;
        drop(s);
        if first {
            self.writer_wake.notify_one();
        }
        Ok(())
    }

    /// Requests a close. The first request wins (its reason is the one
    /// reported); returns whether this call was it.
    pub fn request_close(&self, req: CloseRequest) -> bool {
        let mut s = self.state.lock();
        if s.close.is_some() {
            return false;
        }
        if req.discard_queue {
            s.msgs = VecDeque::new();
            s.bytes = 0;
        }
        s.close = Some(req);
        drop(s);
        self.writer_wake.notify_one();
        true
    }

    /// The peer closed or went away: refuse further messages, let the writer
    /// finish.
    pub fn end(&self) {
        self.state.lock().ended = true;
        self.writer_wake.notify_one();
    }

    /// Takes everything queued (an empty queue keeps no allocation).
    pub fn take(&self) -> Batch {
        let mut s = self.state.lock();
        s.bytes = 0;
        Batch {
            msgs: std::mem::take(&mut s.msgs),
            close: s.close.clone(),
            ended: s.ended,
        }
    }

    /// The reason of the close requested so far, if any.
    pub fn close_reason(&self) -> Option<DisconnectReason> {
        self.state.lock().close.as_ref().map(|c| c.reason)
    }

    /// Messages and bytes waiting now (for the metrics' scrape).
    pub fn depth(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.msgs.len(), s.bytes)
    }

    pub fn is_closing(&self) -> bool {
        let s = self.state.lock();
        s.close.is_some() || s.ended
    }
}

/// Bounds of a connection's send queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub messages: usize,
    pub bytes: usize,
}

/// The shared state of one connection.
pub(crate) struct Connection {
    id: u64,
    /// Ownership epoch granted when the connection claimed its user: of
    /// two connections of one user, the higher epoch is the newer owner
    /// (cluster-wide, see `backplane`). Stale writes are refused by it.
    epoch: u64,
    user: Arc<str>,
    /// What the authenticator kept; boxed, as most keep nothing and an
    /// empty `HeaderMap` is 96 bytes in every connection.
    headers: Option<Box<HeaderMap>>,
    peer: Option<SocketAddr>,
    pub(crate) queue: SendQueue,
    /// Wakes the reader: a close was requested, or it must stop now.
    pub(crate) reader_wake: Notify,
    metrics: Arc<Metrics>,
    /// Rooms joined; `None` once the connection ended (no more joins).
    pub(crate) rooms: Mutex<Option<Vec<Arc<str>>>>,
    /// Set when the connection starts ending: no activity may be set for
    /// it after this (see `hub::presence`).
    pub(crate) ended: AtomicBool,
}

impl Connection {
    pub fn new(
        id: u64,
        epoch: u64,
        user: Arc<str>,
        headers: HeaderMap,
        peer: Option<SocketAddr>,
        limits: QueueLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        Connection {
            id,
            epoch,
            user,
            headers: (!headers.is_empty()).then(|| Box::new(headers)),
            peer,
            queue: SendQueue::new(limits.messages, limits.bytes),
            reader_wake: Notify::new(),
            metrics,
            rooms: Mutex::new(Some(Vec::new())),
            ended: AtomicBool::new(false),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn user_id(&self) -> &str {
        &self.user
    }

    pub fn user_key(&self) -> Arc<str> {
        self.user.clone()
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Queues an encoded frame; a full queue closes the connection (4003).
    pub fn push(&self, frame: Bytes) -> Result<(), SendError> {
        let r = self.queue.push(frame);
        if let Err(e) = r {
            self.metrics.send_failed(e);
            if e == SendError::QueueFull {
                warn!(user = %self.user, conn = self.id, "slow consumer: send queue full, closing with 4003");
                self.reader_wake.notify_one();
            }
        }
        r
    }

    /// Asks the connection to close; the first request's reason wins.
    pub fn request_close(&self, req: CloseRequest) -> bool {
        let first = self.queue.request_close(req);
        self.reader_wake.notify_one();
        first
    }

    /// Whether the connection is closing or gone: nothing more may be
    /// queued for it, and it may join nothing.
    pub fn is_closing(&self) -> bool {
        self.ended.load(Ordering::SeqCst) || self.queue.is_closing()
    }
}

/// A connection as seen by handlers: who it is, and a way to answer it.
///
/// Cheap to clone. Sending through a `Conn` reaches this very connection,
/// even if the user has since connected again elsewhere.
#[derive(Clone)]
pub struct Conn(pub(crate) Arc<Connection>);

impl Conn {
    /// The user id the connection is registered under.
    pub fn user_id(&self) -> &str {
        &self.0.user
    }

    /// The connection's id, unique within its [`WsClient`](crate::WsClient).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The request headers the [`Authenticator`](crate::Authenticator) kept.
    pub fn headers(&self) -> &HeaderMap {
        static NONE: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);
        self.0.headers.as_deref().unwrap_or(&NONE)
    }

    /// The peer's address, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.0.peer
    }

    /// Sends a message to this connection. `timestamp_ms` is stamped now;
    /// `sender` is kept as given (`""` means the server).
    ///
    /// # Errors
    ///
    /// [`SendError`] when it cannot be queued: the connection is closing,
    /// its queue overflowed (it is then closed with 4003), or the message
    /// alone is larger than the queue.
    pub fn send(&self, mut msg: Message) -> Result<(), SendError> {
        self.0.push(codec::encode_outbound(&mut msg))
    }

    /// Queues an already encoded `Message` (the bytes of
    /// `prost::Message::encode_to_vec`, e.g. encoded once for several
    /// connections). Nothing is stamped.
    ///
    /// # Errors
    ///
    /// As [`Conn::send`].
    pub fn send_encoded(&self, frame: Bytes) -> Result<(), SendError> {
        self.0.push(frame)
    }

    /// Closes this connection with 4002 and `reason` (disconnect reason
    /// `Kicked`), after what is already queued for it.
    pub fn kick(&self, reason: &str) {
        self.0.request_close(CloseRequest::new(
            code::KICKED,
            reason,
            DisconnectReason::Kicked,
        ));
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("user_id", &self.0.user)
            .field("id", &self.0.id)
            .field("peer", &self.0.peer)
            .finish()
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    #[test]
    fn overflow_requests_slow_consumer_close() {
        let q = SendQueue::new(2, 1 << 20);
        q.push(Bytes::from_static(b"a")).unwrap();
        q.push(Bytes::from_static(b"b")).unwrap();
        assert_eq!(q.push(Bytes::from_static(b"c")), Err(SendError::QueueFull));
        assert_eq!(q.push(Bytes::from_static(b"d")), Err(SendError::Closed));
        let b = q.take();
        assert!(b.msgs.is_empty());
        assert_eq!(b.close.unwrap().code, code::SLOW_CONSUMER);
    }

    #[test]
    fn a_frame_bigger_than_the_queue_is_refused_without_closing() {
        let q = SendQueue::new(100, 3);
        assert_eq!(
            q.push(Bytes::from_static(b"abcd")),
            Err(SendError::TooLarge)
        );
        q.push(Bytes::from_static(b"ab")).unwrap();
        assert!(q.close_reason().is_none());
    }

    #[test]
    fn byte_limit_counts() {
        let q = SendQueue::new(100, 3);
        q.push(Bytes::from_static(b"ab")).unwrap();
        assert_eq!(q.push(Bytes::from_static(b"cd")), Err(SendError::QueueFull));
    }

    #[test]
    fn first_close_request_wins() {
        let q = SendQueue::new(4, 64);
        assert!(q.request_close(CloseRequest::new(4002, "bye", DisconnectReason::Kicked)));
        assert!(!q.request_close(CloseRequest::new(
            1001,
            "",
            DisconnectReason::ServerShutdown
        )));
        assert_eq!(q.close_reason(), Some(DisconnectReason::Kicked));
    }
}
