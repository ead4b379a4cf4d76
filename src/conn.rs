//! One connection's state and handle, one layer above the wire: who it is
//! ([`Connection`]: user, ids, the headers its authenticator kept), its
//! bounded send queue ([`SendQueue`]), the rooms it is in, and the public
//! handle handlers get ([`Conn`]). Its tasks (reader, writer) live in
//! `session::task`; it imports nothing above itself.
//!
//! The send queue is bounded, drained in batches by the connection's single
//! writer task, and carries the close request that ends the connection. Its
//! backlog (queued, and taken by the writer but not yet written) may go
//! over the soft limits (`send_queue_capacity`, `send_queue_max_bytes`)
//! while the client catches up; a backlog over them for longer than
//! `slow_consumer_grace` (watched by the reader), or over the hard limits
//! at once, is a slow consumer: what is queued is dropped and a 4003 close
//! is requested, so one client that does not read never holds more than
//! the hard limits or delays anyone else, and one that reads is not closed
//! for being behind a burst.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::task::AtomicWaker;
use http::HeaderMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::error::SendError;
use crate::metrics::Metrics;
use crate::protocol::close::{code, CloseRequest, DisconnectReason};
use crate::protocol::codec;
use crate::protocol::proto::Message;

pub(crate) struct SendQueue {
    state: Mutex<State>,
    /// Wakes the writer: something was queued or a close was requested.
    pub(crate) writer_wake: Wake,
    limits: QueueLimits,
}

#[derive(Default)]
struct State {
    msgs: VecDeque<Bytes>,
    bytes: usize,
    /// What the writer took and has not finished writing.
    in_flight_msgs: usize,
    in_flight_bytes: usize,
    /// Since when the backlog (queued and in flight) is over the soft
    /// limits; `None` while within them.
    over_since: Option<Instant>,
    close: Option<CloseRequest>,
    /// The peer is gone or closed: nothing more may be queued.
    ended: bool,
    /// The payloads of the pongs owed to the client's pings, oldest first
    /// (at most `MAX_PONGS`: beyond, the latest replaces the newest owed,
    /// RFC 6455 §5.5.3 lets a pong answer only the latest ping).
    pongs: Vec<Bytes>,
    /// The client closed: the payload of the close frame to answer with.
    close_reply: Option<Bytes>,
}

/// Pongs owed at most at once (see `SendQueue::pong`).
const MAX_PONGS: usize = 16;

/// What the writer takes in one go.
pub(crate) struct Batch {
    pub msgs: VecDeque<Bytes>,
    pub close: Option<CloseRequest>,
    pub ended: bool,
    /// Pongs to send first (the answers to the client's pings).
    pub pongs: Vec<Bytes>,
    /// The answer to the client's close frame, sent last unless `close`
    /// (the server's own close) goes instead.
    pub close_reply: Option<Bytes>,
}

/// The slow-consumer close: what is queued is dropped.
fn slow_consumer() -> CloseRequest {
    let mut req = CloseRequest::new(
        code::SLOW_CONSUMER,
        "slow consumer",
        DisconnectReason::SlowConsumer,
    );
    req.discard_queue = true;
    req
}

impl SendQueue {
    pub fn new(limits: QueueLimits) -> Self {
        SendQueue {
            state: Mutex::new(State::default()),
            writer_wake: Wake::default(),
            limits: limits.sanitized(),
        }
    }

    /// Queues one encoded message; `Ok(true)` when the backlog just went
    /// over the soft limits (the reader then watches the grace period). A
    /// backlog over the hard limits drops what is queued, requests a 4003
    /// close and returns `QueueFull` (once: later pushes get `Closed`).
    pub fn push(&self, frame: Bytes) -> Result<bool, SendError> {
        let l = &self.limits;
        let mut s = self.state.lock();
        if s.close.is_some() || s.ended {
            return Err(SendError::Closed);
        }
        if frame.len() > l.bytes {
            return Err(SendError::TooLarge);
        }
        let msgs = s.msgs.len() + s.in_flight_msgs + 1;
        let bytes = s.bytes + s.in_flight_bytes + frame.len();
        if msgs > l.hard_messages || bytes > l.hard_bytes {
            s.close = Some(slow_consumer());
            s.msgs = VecDeque::new();
            s.bytes = 0;
            drop(s);
            self.writer_wake.notify_one();
            return Err(SendError::QueueFull);
        }
        s.bytes += frame.len();
        s.msgs.push_back(frame);
        let over = (msgs > l.messages || bytes > l.bytes) && s.over_since.is_none();
        if over {
            s.over_since = Some(Instant::now());
        }
        let first = s.msgs.len() == 1;
        drop(s);
        if first {
            self.writer_wake.notify_one();
        }
        Ok(over)
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

    /// The client pinged: the writer answers with a pong carrying
    /// `payload`. Pings are answered one by one up to `MAX_PONGS` owed at
    /// once; a client pinging faster gets a pong for its latest ping.
    pub fn pong(&self, payload: Bytes) {
        let mut s = self.state.lock();
        if s.pongs.len() < MAX_PONGS {
            s.pongs.push(payload);
        } else if let Some(last) = s.pongs.last_mut() {
            *last = payload;
        }
        drop(s);
        self.writer_wake.notify_one();
    }

    /// The client sent a close frame: refuse further messages; the writer
    /// sends what it took, then the close frame with `reply` as payload
    /// (unless the server's own close frame goes first).
    pub fn client_closed(&self, reply: Bytes) {
        let mut s = self.state.lock();
        s.ended = true;
        s.close_reply = Some(reply);
        drop(s);
        self.writer_wake.notify_one();
    }

    /// Takes everything queued (an empty queue keeps no allocation); it
    /// counts as in flight until [`sent`](SendQueue::sent).
    pub fn take(&self) -> Batch {
        let mut s = self.state.lock();
        s.in_flight_msgs += s.msgs.len();
        s.in_flight_bytes += std::mem::take(&mut s.bytes);
        Batch {
            msgs: std::mem::take(&mut s.msgs),
            close: s.close.clone(),
            ended: s.ended,
            pongs: std::mem::take(&mut s.pongs),
            close_reply: s.close_reply.take(),
        }
    }

    /// The writer wrote everything it took.
    pub fn sent(&self) {
        let l = &self.limits;
        let mut s = self.state.lock();
        s.in_flight_msgs = 0;
        s.in_flight_bytes = 0;
        if s.msgs.len() <= l.messages && s.bytes <= l.bytes {
            s.over_since = None;
        }
    }

    /// Since when the backlog has been over the soft limits, if it is.
    pub fn over_since(&self) -> Option<Instant> {
        self.state.lock().over_since
    }

    /// Closes as a slow consumer if the backlog has been over the soft
    /// limits since `since` (and not below them in between).
    pub fn close_if_over_since(&self, since: Instant) -> bool {
        let mut s = self.state.lock();
        if s.over_since != Some(since) || s.close.is_some() {
            return false;
        }
        s.close = Some(slow_consumer());
        s.msgs = VecDeque::new();
        s.bytes = 0;
        drop(s);
        self.writer_wake.notify_one();
        true
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

/// Bounds of a connection's send queue: soft (over them for longer than
/// the grace period is a slow consumer) and hard (over them at once is).
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub messages: usize,
    pub bytes: usize,
    pub hard_messages: usize,
    pub hard_bytes: usize,
}

impl QueueLimits {
    fn sanitized(mut self) -> Self {
        self.messages = self.messages.max(1);
        self.bytes = self.bytes.max(1);
        self.hard_messages = self.hard_messages.max(self.messages);
        self.hard_bytes = self.hard_bytes.max(self.bytes);
        self
    }
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
    pub(crate) reader_wake: Wake,
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
            queue: SendQueue::new(limits),
            reader_wake: Wake::default(),
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

    /// Queues an encoded frame; a queue over its hard limits closes the
    /// connection (4003). The reader is woken when the queue goes over its
    /// limits (it watches the grace period, and logs a slow-consumer close
    /// in the connection's own span).
    pub fn push(&self, frame: Bytes) -> Result<(), SendError> {
        match self.queue.push(frame) {
            Ok(over) => {
                if over {
                    self.reader_wake.notify_one();
                }
                Ok(())
            }
            Err(e) => {
                self.metrics.send_failed(e);
                if e == SendError::QueueFull {
                    self.reader_wake.notify_one();
                }
                Err(e)
            }
        }
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

    fn queue(messages: usize, bytes: usize, hard_messages: usize, hard_bytes: usize) -> SendQueue {
        SendQueue::new(QueueLimits {
            messages,
            bytes,
            hard_messages,
            hard_bytes,
        })
    }

    #[test]
    fn over_the_hard_limit_requests_slow_consumer_close() {
        let q = queue(2, 1 << 20, 2, 1 << 20);
        q.push(Bytes::from_static(b"a")).unwrap();
        q.push(Bytes::from_static(b"b")).unwrap();
        assert_eq!(q.push(Bytes::from_static(b"c")), Err(SendError::QueueFull));
        assert_eq!(q.push(Bytes::from_static(b"d")), Err(SendError::Closed));
        let b = q.take();
        assert!(b.msgs.is_empty());
        assert_eq!(b.close.unwrap().code, code::SLOW_CONSUMER);
    }

    #[test]
    fn over_the_soft_limit_starts_the_grace_period_until_written() {
        let q = queue(2, 1 << 20, 8, 1 << 20);
        assert_eq!(q.push(Bytes::from_static(b"a")), Ok(false));
        assert_eq!(q.push(Bytes::from_static(b"b")), Ok(false));
        assert_eq!(q.push(Bytes::from_static(b"c")), Ok(true), "over now");
        assert_eq!(q.push(Bytes::from_static(b"d")), Ok(false), "still over");
        let since = q.over_since().unwrap();
        // Taken but not yet written: still the backlog.
        assert_eq!(q.take().msgs.len(), 4);
        assert_eq!(q.over_since(), Some(since));
        q.sent();
        assert_eq!(q.over_since(), None, "written: within the limits");
        assert!(
            !q.close_if_over_since(since),
            "a stale deadline closes nothing"
        );
        for _ in 0..3 {
            q.push(Bytes::from_static(b"e")).unwrap();
        }
        let since = q.over_since().unwrap();
        assert!(q.close_if_over_since(since));
        assert_eq!(q.close_reason(), Some(DisconnectReason::SlowConsumer));
        assert!(
            q.take().msgs.is_empty(),
            "a slow consumer's queue is dropped"
        );
    }

    #[test]
    fn in_flight_bytes_count_toward_the_hard_limit() {
        let q = queue(100, 4, 100, 6);
        q.push(Bytes::from_static(b"abcd")).unwrap();
        let _batch = q.take(); // the writer is stuck writing it
        q.push(Bytes::from_static(b"ef")).unwrap();
        assert_eq!(q.push(Bytes::from_static(b"g")), Err(SendError::QueueFull));
    }

    #[test]
    fn a_frame_bigger_than_the_queue_is_refused_without_closing() {
        let q = queue(100, 3, 100, 3);
        assert_eq!(
            q.push(Bytes::from_static(b"abcd")),
            Err(SendError::TooLarge)
        );
        q.push(Bytes::from_static(b"ab")).unwrap();
        assert!(q.close_reason().is_none());
    }

    #[test]
    fn first_close_request_wins() {
        let q = queue(4, 64, 4, 64);
        assert!(q.request_close(CloseRequest::new(4002, "bye", DisconnectReason::Kicked)));
        assert!(!q.request_close(CloseRequest::new(
            1001,
            "",
            DisconnectReason::ServerShutdown
        )));
        assert_eq!(q.close_reason(), Some(DisconnectReason::Kicked));
    }
}

/// Wakes the one task that waits on it (a connection's reader, or its
/// writer): `notify_one` from any thread, `notified` in that task. Like
/// `tokio::sync::Notify` with a single waiter (wake-ups before the wait
/// are kept, several coalesce into one), but lock-free: a pending wait is
/// an atomic waker, not an entry in a mutex-guarded list, so a wait that
/// another branch of a `select!` wins costs no lock to set up or undo (the
/// reader and the writer wait on one per message).
#[derive(Default)]
pub(crate) struct Wake {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Wake {
    /// Wakes the waiting task, or the next wait if none is waiting.
    pub fn notify_one(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Completes once `notify_one` was called since the last completion.
    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll(cx))
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.take() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A notify between the check and the registration woke nobody.
        if self.take() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn take(&self) -> bool {
        self.pending.load(Ordering::Acquire) && self.pending.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod wake_tests {
    use super::Wake;
    use futures::FutureExt;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept_and_several_coalesce() {
        let w = Wake::default();
        assert!(w.notified().now_or_never().is_none());
        w.notify_one();
        w.notify_one();
        assert!(w.notified().now_or_never().is_some());
        assert!(w.notified().now_or_never().is_none());
    }

    #[tokio::test]
    async fn a_waiting_task_is_woken_from_another_thread() {
        let w = std::sync::Arc::new(Wake::default());
        let w2 = w.clone();
        let waiter = tokio::spawn(async move { w2.notified().await });
        tokio::task::yield_now().await;
        std::thread::spawn(move || w.notify_one());
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken")
            .expect("no panic");
    }
}
