//! A connection's task, from the upgraded socket to its end: the reader
//! (frames from `io::ws_read` → decode → `control` or the message
//! handlers; idle detection), the single writer task (queue → socket
//! through `io::outbuf`: coalesced writes, pongs, pings, the close frame),
//! and the finish (unregister, leave rooms, disconnect handlers, exactly
//! once). The socket is split: the reader and the writer use their halves
//! without a lock; what the reader needs written (a pong, the answer to the
//! client's close frame) goes through the send queue to the writer.
//!
//! Life of a connection:
//! 1. the handshake admits it and answers 101 (`session::handshake`);
//! 2. [`run`] waits for the upgraded socket, spawns the writer and reads;
//! 3. any close request (kick, replace, idle, slow consumer, protocol error,
//!    shutdown) goes through the send queue so the writer sends the close
//!    frame after (or, for slow consumers, instead of) what was queued; the
//!    reader then waits at most `close_timeout` for the client's answer;
//! 4. when both are done the connection is unregistered and the disconnect
//!    handlers run, exactly once.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use hyper::upgrade::OnUpgrade;
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{debug, error, info, warn, Instrument};

use super::budget::Inbound;
use super::control;
use super::handlers::Called;
use super::Endpoint;
use crate::conn::{Conn, Connection};
use crate::io::outbuf::FrameWriter;
use crate::io::transport::{self, ReadHalf, WriteHalf};
use crate::io::ws_read::{FrameReader, Incoming, ReadError};
use crate::io::{OP_CLOSE, OP_PING, OP_PONG};
use crate::logs::{ns, LogBudget, PeerAddr};
use crate::metrics::{Handling, Metrics};
use crate::protocol::close::{code, CloseRequest, DisconnectReason};
use crate::protocol::proto::error::Code;
use crate::protocol::{codec, cost};

/// Serves an admitted connection from its upgrade to its end, then
/// unregisters it and runs the disconnect handlers.
pub(crate) fn run(
    inner: Arc<Endpoint>,
    conn: Arc<Connection>,
    on_upgrade: OnUpgrade,
    live: TaskTrackerToken,
) -> impl Future<Output = ()> {
    // No parent: the connection outlives the HTTP request that opened it,
    // and a child span would keep the request's span open as long.
    let span = tracing::info_span!(parent: None, "ws", ns = ns(&inner.hub().options.name), user = %conn.user_id(), conn = conn.id(), peer = %PeerAddr(conn.peer()));
    async move {
        // Boxed: opening is brief, its future need not be part of every
        // connection task for the connection's whole life. (Matched as a
        // temporary so that no copy of the socket outlives the statement.)
        let reason = 'served: {
            let socket = match AssertUnwindSafe(Box::pin(open(&inner, &conn, on_upgrade)))
                .catch_unwind()
                .await
            {
                Ok(Ok(socket)) => socket,
                Ok(Err(reason)) => break 'served reason,
                Err(_) => break 'served panicked(&conn),
            };
            AssertUnwindSafe(serve(&inner, &conn, socket))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| panicked(&conn))
        };
        Box::pin(finish(&inner, &conn, reason)).await;
        drop(live); // shutdown may now stop waiting for this connection
    }
    .instrument(span)
}

/// A connection's socket, split: the reader's half with its frame parser,
/// and the writer's half (see `crate::io`).
struct Opened {
    read: ReadHalf,
    frames: FrameReader,
    write: WriteHalf,
}

/// Handlers and hooks are isolated already; this is the last line:
/// whatever panics, the connection still ends properly.
fn panicked(conn: &Connection) -> DisconnectReason {
    error!("connection task panicked: closing with 1011");
    conn.request_close(CloseRequest::new(
        code::INTERNAL_ERROR,
        "internal error",
        DisconnectReason::ServerError,
    ));
    conn.queue.end();
    DisconnectReason::ServerError
}

/// Waits for the upgrade, takes the socket back from hyper (see
/// `crate::transport`) and starts the WebSocket protocol on it.
async fn open(
    inner: &Endpoint,
    conn: &Connection,
    on_upgrade: OnUpgrade,
) -> Result<Opened, DisconnectReason> {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            debug!(error = %e, "upgrade did not complete");
            conn.queue.end();
            return Err(conn
                .queue
                .close_reason()
                .unwrap_or(DisconnectReason::ClientClosed));
        }
    };
    let o = &inner.hub().options;
    let recovered = transport::recover(upgraded);
    if recovered.nagle_possible {
        inner
            .hub()
            .metrics
            .tcp_nodelay_unavailable
            .fetch_add(1, Ordering::Relaxed);
    }
    let frames = FrameReader::new(o.max_message_size, o.read_buffer_size, recovered.read_ahead);
    let (read, write) = recovered.stream.into_split();
    info!("connected");
    Ok(Opened {
        read,
        frames,
        write,
    })
}

// `serve` and `write_loop` live as long as their connection, so their
// state is kept small: each returns an `async move` block, which uses what
// it captured in place (an `async fn` would keep a second copy of every
// argument in its state).

#[allow(clippy::manual_async_fn)] // deliberately not `async fn`: see above
fn serve<'a>(
    inner: &'a Arc<Endpoint>,
    conn: &'a Arc<Connection>,
    mut socket: Opened,
) -> impl Future<Output = DisconnectReason> + 'a {
    async move {
        let o = &inner.hub().options;
        let mut writer = tokio::spawn(write_loop(
            FrameWriter::new(socket.write, o.write_buffer_size),
            conn.clone(),
            o.ping_interval,
            inner.hub().metrics.clone(),
        ));

        let exit = read_loop(&mut socket.read, &mut socket.frames, inner, conn).await;

        // No more messages: the writer sends a requested close frame, if any, and
        // ends. A writer stuck on a client that does not read is cut off.
        conn.queue.end();
        let wait = if exit == Exit::Forced {
            Duration::ZERO
        } else {
            o.close_timeout
        };
        let written = match tokio::time::timeout(wait, &mut writer).await {
            Ok(Ok(w)) => Some(w),
            _ => {
                writer.abort();
                None
            }
        };
        if let Some(w) = written {
            // Boxed: it would otherwise be part of every connection task.
            Box::pin(finish_socket(
                socket.read,
                w,
                exit == Exit::Drain,
                o.close_timeout,
            ))
            .await;
        }
        conn.queue
            .close_reason()
            .unwrap_or(DisconnectReason::ClientClosed)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Exit {
    /// The stream ended (after a close handshake, or the peer vanished).
    Clean,
    /// A read error left the stream unusable; a close was requested.
    Drain,
    /// Stop now: close timeout passed, or a forced stop.
    Forced,
}

async fn read_loop(
    read: &mut ReadHalf,
    frames: &mut FrameReader,
    inner: &Arc<Endpoint>,
    conn: &Arc<Connection>,
) -> Exit {
    let o = &inner.hub().options;
    let handle = Conn(conn.clone());
    let mut budgets = Budgets::default();
    let mut watch = Watch::new(o.idle_timeout, o.close_timeout, o.slow_consumer_grace);
    let sleep = tokio::time::sleep_until(watch.last_seen + watch.idle);
    tokio::pin!(sleep);
    loop {
        // The timer is polled last: while frames keep arriving it is not
        // polled at all, and a frame that arrives after its deadline acts
        // on it (a client that never stops sending still meets the close
        // timeout and the slow-consumer grace).
        let item = tokio::select! {
            biased;
            () = conn.reader_wake.notified() => {
                if inner.cut.is_cancelled() {
                    return Exit::Forced;
                }
                watch.woken(conn, sleep.as_mut());
                continue;
            }
            item = std::future::poll_fn(|cx| frames.poll_next(cx, read)) => item,
            () = &mut sleep => {
                if let Some(exit) = watch.expired(Instant::now(), conn, sleep.as_mut()) {
                    return exit;
                }
                continue;
            }
        };
        {
            let now = Instant::now();
            watch.last_seen = now;
            if now >= sleep.deadline() {
                if let Some(exit) = watch.expired(now, conn, sleep.as_mut()) {
                    return exit;
                }
            }
        }
        // Only `work` is kept across the await below: this loop's state is
        // part of every connection's task for its whole life.
        let work = match item {
            Ok(Incoming::Binary(frame)) => {
                if conn.queue.is_closing() {
                    continue;
                }
                on_frame(inner, conn, &handle, &mut budgets, frame)
            }
            Ok(Incoming::Text) => {
                protocol_close(
                    conn,
                    code::UNSUPPORTED_DATA,
                    "text frames are not supported; send binary edk.ws.v1.Message",
                    &"text frame",
                );
                continue;
            }
            Ok(Incoming::Ping(payload)) => {
                conn.queue.pong(payload);
                continue;
            }
            Ok(Incoming::Pong) => continue,
            Ok(Incoming::Close { code, reply }) => {
                debug!(?code, "client sent close");
                // The writer answers (after what it took) unless the
                // server's own close frame goes first.
                conn.queue.client_closed(reply);
                return Exit::Clean;
            }
            Err(ReadError::Io(_)) => return Exit::Clean,
            Err(ReadError::Eof) => {
                // The client went away without a close frame: it closed,
                // it did not break the protocol.
                debug!("the client vanished without a close frame");
                return Exit::Clean;
            }
            Err(e @ ReadError::TooBig { .. }) => {
                protocol_close(conn, code::MESSAGE_TOO_BIG, "message too big", &e);
                return Exit::Drain;
            }
            Err(ReadError::Utf8) => {
                protocol_close(conn, code::INVALID_PAYLOAD, "invalid UTF-8", &"text frame");
                return Exit::Drain;
            }
            Err(e @ ReadError::Protocol(_)) => {
                protocol_close(conn, code::PROTOCOL_ERROR, "protocol error", &e);
                return Exit::Drain;
            }
        };
        work.await;
    }
}

/// What the reader's one timer watches (a second timer would cost every
/// idle connection its size): the idle timeout, the close timeout once a
/// close was requested, and the slow-consumer grace period.
struct Watch {
    idle: Duration,
    close_timeout: Duration,
    grace: Duration,
    /// When the last frame arrived.
    last_seen: Instant,
    /// Set when a close was requested: the client's answer is awaited
    /// until then.
    closing_until: Option<Instant>,
    /// Since when the send queue is over its limits; its grace period ends
    /// at `since + grace`.
    over_since: Option<Instant>,
}

impl Watch {
    fn new(idle: Duration, close_timeout: Duration, grace: Duration) -> Self {
        Watch {
            idle,
            close_timeout,
            grace,
            last_seen: Instant::now(),
            closing_until: None,
            over_since: None,
        }
    }

    /// The reader was woken: a close was requested, or the send queue went
    /// over its limits. Brings the deadline forward accordingly.
    fn woken(&mut self, conn: &Connection, mut sleep: Pin<&mut Sleep>) {
        if self.closing_until.is_none() && conn.queue.is_closing() {
            if conn.queue.close_reason() == Some(DisconnectReason::SlowConsumer) {
                // Here, in the slow client's span, not the sender's.
                warn!("slow consumer: send queue over its limits, closing with 4003");
            }
            let until = Instant::now() + self.close_timeout;
            self.closing_until = Some(until);
            sleep.as_mut().reset(until);
        }
        if self.over_since.is_none() && self.closing_until.is_none() {
            if let Some(since) = conn.queue.over_since() {
                self.over_since = Some(since);
                if since + self.grace < sleep.deadline() {
                    sleep.as_mut().reset(since + self.grace);
                }
            }
        }
    }

    /// The deadline passed (it is `now`): closes a slow consumer whose
    /// grace is over, stops after the close timeout, closes an idle
    /// connection; then sets the next deadline. `Some` when the reader
    /// must stop.
    fn expired(
        &mut self,
        now: Instant,
        conn: &Connection,
        mut sleep: Pin<&mut Sleep>,
    ) -> Option<Exit> {
        let grace = self.grace;
        if let Some(watched) = self
            .over_since
            .filter(|s| self.closing_until.is_none() && now >= *s + grace)
        {
            self.over_since = None;
            match conn.queue.over_since() {
                // Over the limits all along: a slow consumer.
                Some(since) if since == watched && conn.queue.close_if_over_since(since) => {
                    conn.reader_wake.notify_one();
                }
                Some(since) if since != watched => self.over_since = Some(since),
                _ => {}
            }
        }
        if let Some(until) = self.closing_until {
            if now >= until {
                debug!("close timeout: dropping the connection");
                return Some(Exit::Forced);
            }
            sleep.as_mut().reset(until);
        } else if now >= self.last_seen + self.idle {
            info!(
                idle_ms = self.idle.as_millis() as u64,
                "idle timeout: closing with 4000"
            );
            conn.request_close(CloseRequest::new(
                code::IDLE_TIMEOUT,
                "idle timeout",
                DisconnectReason::IdleTimeout,
            ));
            sleep.as_mut().reset(now + self.close_timeout);
        } else {
            sleep.as_mut().reset(self.last_seen + self.idle);
        }
        if let Some(at) = self
            .over_since
            .filter(|_| self.closing_until.is_none())
            .map(|s| s + grace)
        {
            if at < sleep.deadline() {
                sleep.as_mut().reset(at);
            }
        }
        None
    }
}

/// A connection's budgets: module requests, and every inbound frame.
#[derive(Default)]
pub(crate) struct Budgets {
    requests: control::Limiter,
    inbound: Inbound,
}

/// One binary frame, up to its first await: the cost rule and the inbound
/// budget (both before decoding), decode, then the module's request
/// handling or the application's message handlers. What is left to await
/// is returned, a future ([`Work`]). A message for the application's message
/// handlers is passed to them without being moved into a future of its
/// own: the only allocation on that path is the handler's future.
pub(crate) fn on_frame<'a>(
    inner: &'a Arc<Endpoint>,
    conn: &Arc<Connection>,
    handle: &'a Conn,
    budgets: &'a mut Budgets,
    frame: Bytes,
) -> Work<'a> {
    let m = &inner.hub().metrics;
    // This thread's counters: not kept across an await.
    let slot = m.hot.slot();
    slot.received(frame.len());
    let started = slot.sample().then(Instant::now);
    if inner.anonymous_echo {
        // The conformance test mode: the frame goes back as it came.
        let _ = conn.push(frame);
        return Work::Done;
    }
    let o = &inner.hub().options;
    let limits = cost::Limits::new(
        o.max_metadata_entries,
        o.max_metadata_bytes,
        o.max_state_keys,
    );
    let scan = match cost::scan(&frame, &limits) {
        Ok(scan) => scan,
        Err(cost::Refused::Over(what)) => {
            m.messages_over_entry_limits.fetch_add(1, Ordering::Relaxed);
            protocol_close(conn, code::MESSAGE_TOO_BIG, what, &what);
            return Work::Done;
        }
        Err(cost::Refused::Malformed) => {
            protocol_close(
                conn,
                code::INVALID_PAYLOAD,
                "invalid edk.ws.v1.Message",
                &"malformed protobuf",
            );
            return Work::Done;
        }
    };
    if !budgets.inbound.allow(o, frame.len()) {
        let id = std::str::from_utf8(&frame[scan.id]).unwrap_or_default();
        if scan.is_request || !id.is_empty() {
            m.inbound_rate_limited.fetch_add(1, Ordering::Relaxed);
            control::reply_error(
                handle,
                id.to_owned(),
                Code::RateLimited,
                "over the inbound budget",
            );
        } else {
            m.inbound_dropped.fetch_add(1, Ordering::Relaxed);
        }
        debug!(bytes = frame.len(), "over the inbound budget");
        return Work::Done;
    }
    let msg = match codec::decode_inbound(frame, conn.user_id()) {
        Ok(msg) => msg,
        Err(e) => {
            protocol_close(conn, code::INVALID_PAYLOAD, "invalid edk.ws.v1.Message", &e);
            return Work::Done;
        }
    };
    debug!(id = %msg.id, r#type = %msg.r#type, room = %msg.room, "message");
    let (work, kind) = if control::is_request(&msg) {
        // Boxed: a request's handling (hub, backplane) is a large future;
        // inline, every connection's task would be that much larger.
        (
            Work::Boxed(Box::pin(control::handle(
                inner,
                handle,
                &mut budgets.requests,
                msg,
            ))),
            Handling::Request,
        )
    } else if let Some(route) = inner.routes.get(&msg.r#type) {
        (
            Work::Boxed(Box::pin(
                async move { route.handle(inner, handle, msg).await },
            )),
            Handling::Route,
        )
    } else {
        (
            Work::Handlers(inner.handlers.call(handle, msg), m),
            Handling::Handlers,
        )
    };
    match started {
        None => work,
        // A sampled message (one in `SAMPLE_EVERY`): timed in a box of its
        // own, so that no other message carries the start time.
        Some(t) => Work::Boxed(Box::pin(async move {
            work.await;
            m.hot.slot().handled(kind, t.elapsed());
        })),
    }
}

/// What a frame left to await after [`on_frame`]. Kept small (no start
/// time, no `async` state), as the reader's state, which every connection
/// keeps for its whole life, has room for it.
pub(crate) enum Work<'a> {
    Done,
    /// The application's message handlers; panics are counted.
    Handlers(Called, &'a Metrics),
    /// A module request, a typed route, or a sampled message.
    Boxed(BoxFuture<'a, ()>),
}

impl Future for Work<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut *self {
            Work::Done => Poll::Ready(()),
            Work::Handlers(called, metrics) => {
                let panics = ready!(Pin::new(called).poll(cx));
                if panics > 0 {
                    metrics.handler_panics.fetch_add(panics, Ordering::Relaxed);
                }
                *self = Work::Done;
                Poll::Ready(())
            }
            Work::Boxed(fut) => fut.as_mut().poll(cx),
        }
    }
}

/// A client broke the protocol: close with `code` and `reason` (the close
/// frame's text) after what is queued. Logged at warn in the connection's
/// span, at most 10 lines a second across all connections (a flood of bad
/// clients cannot flood the log; suppressed lines are counted in the next).
fn protocol_close(conn: &Connection, code: u16, reason: &str, detail: &dyn std::fmt::Display) {
    static LOG: LazyLock<LogBudget> = LazyLock::new(|| LogBudget::new(10));
    if let Some(suppressed) = LOG.admit() {
        warn!(code, %detail, suppressed, "{reason}: closing with {code}");
    }
    conn.request_close(CloseRequest::new(
        code,
        reason,
        DisconnectReason::ProtocolError,
    ));
}

/// The single writer: drains the queue in batches (the batch's frames
/// leave together, one syscall when they fit `flush_above`), answers the
/// client's pings, pings on schedule, and ends with the close frame when
/// one was requested or the client closed. Returns the writer, for the
/// socket's end.
#[allow(clippy::manual_async_fn)] // deliberately not `async fn`: see `serve`
fn write_loop(
    mut w: FrameWriter<WriteHalf>,
    conn: Arc<Connection>,
    ping_every: Duration,
    metrics: Arc<Metrics>,
) -> impl Future<Output = FrameWriter<WriteHalf>> {
    async move {
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = conn.queue.writer_wake.notified() => {}
                _ = ping.tick() => {
                    w.control(OP_PING, &[]);
                    if w.flush().await.is_err() {
                        break;
                    }
                    continue;
                }
            }
            let batch = conn.queue.take();
            for p in &batch.pongs {
                w.control(OP_PONG, p);
            }
            let taken = batch.msgs.len();
            let closing = batch.close.is_some() || batch.close_reply.is_some();
            let (mut count, mut bytes, mut failed) = (0u64, 0u64, false);
            for (i, frame) in batch.msgs.iter().enumerate() {
                let more = closing || i + 1 < taken;
                match w.binary(frame, more).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
                count += 1;
                bytes += frame.len() as u64;
            }
            metrics.hot.slot().written(taken, count, bytes);
            if failed {
                break;
            }
            if let Some(c) = batch.close {
                debug!(code = c.code, reason = %c.reason, "sending close");
                w.close(c.code, &c.text);
                let _ = w.flush().await;
                break;
            }
            if let Some(reply) = batch.close_reply {
                w.control(OP_CLOSE, &reply);
                let _ = w.flush().await;
                break;
            }
            if w.flush().await.is_err() {
                break;
            }
            conn.queue.sent();
            if batch.ended {
                break;
            }
        }
        w
    }
}

/// Ends the socket: FIN after what is buffered. After a read error
/// (`drain`), also reads and discards what the client still sends until it
/// hangs up, `limit` passes or 64 MiB were thrown away, so the socket ends
/// with FIN, not a reset that could eat our close.
async fn finish_socket(
    mut read: ReadHalf,
    mut w: FrameWriter<WriteHalf>,
    drain: bool,
    limit: Duration,
) {
    let _ = tokio::time::timeout(limit, async {
        let _ = w.shutdown().await;
        if !drain {
            return;
        }
        let mut buf = vec![0u8; 4096];
        let mut total = 0usize;
        while let Ok(n) = read.read(&mut buf).await {
            total += n;
            if n == 0 || total > 64 << 20 {
                break;
            }
        }
    })
    .await;
}

async fn finish(inner: &Arc<Endpoint>, conn: &Arc<Connection>, reason: DisconnectReason) {
    inner.node.ended(conn).await;
    let metrics = &inner.hub().metrics;
    metrics.disconnected(reason);
    info!(%reason, "disconnected");
    let panics = inner
        .handlers
        .on_disconnect(&Conn(conn.clone()), reason)
        .await;
    if panics > 0 {
        metrics.handler_panics.fetch_add(panics, Ordering::Relaxed);
    }
    metrics.connections_now.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod watch_tests {
    use super::*;
    use crate::conn::QueueLimits;
    use http::HeaderMap;

    const IDLE: Duration = Duration::from_secs(60);
    const CLOSE: Duration = Duration::from_secs(5);
    const GRACE: Duration = Duration::from_secs(2);

    fn conn() -> Connection {
        let limits = QueueLimits {
            messages: 2,
            bytes: 1 << 20,
            hard_messages: 8,
            hard_bytes: 1 << 20,
        };
        Connection::new(
            1,
            1,
            "u".into(),
            HeaderMap::new(),
            None,
            limits,
            Default::default(),
        )
    }

    /// A connection, its reader's watch, and the timer as the reader arms
    /// it.
    fn setup() -> (Connection, Watch, Pin<Box<Sleep>>) {
        let w = Watch::new(IDLE, CLOSE, GRACE);
        let sleep = Box::pin(tokio::time::sleep_until(w.last_seen + IDLE));
        (conn(), w, sleep)
    }

    #[tokio::test]
    async fn a_frame_after_the_deadline_is_activity_not_idleness() {
        let (c, mut w, mut sleep) = setup();
        // What the reader does with a frame that arrives past the deadline.
        let now = w.last_seen + IDLE + Duration::from_millis(1);
        w.last_seen = now;
        assert!(w.expired(now, &c, sleep.as_mut()).is_none());
        assert!(!c.is_closing());
        assert_eq!(sleep.deadline(), now + IDLE);
    }

    #[tokio::test]
    async fn no_frame_until_the_deadline_closes_with_4000() {
        let (c, mut w, mut sleep) = setup();
        let now = w.last_seen + IDLE;
        assert!(w.expired(now, &c, sleep.as_mut()).is_none());
        assert_eq!(c.queue.close_reason(), Some(DisconnectReason::IdleTimeout));
        assert_eq!(sleep.deadline(), now + CLOSE);
    }

    #[tokio::test]
    async fn after_a_close_request_the_close_timeout_ends_reading() {
        let (c, mut w, mut sleep) = setup();
        c.request_close(CloseRequest::new(4002, "kicked", DisconnectReason::Kicked));
        w.woken(&c, sleep.as_mut());
        let until = w.closing_until.expect("close timeout armed");
        assert_eq!(sleep.deadline(), until);
        // A frame arriving just before the timeout does not stop it, nor
        // push it back (frames keep arriving from a client that floods).
        w.last_seen = until - Duration::from_millis(1);
        assert!(w.expired(w.last_seen, &c, sleep.as_mut()).is_none());
        assert_eq!(sleep.deadline(), until);
        assert_eq!(w.expired(until, &c, sleep.as_mut()), Some(Exit::Forced));
    }

    #[tokio::test]
    async fn a_queue_over_its_limits_past_the_grace_closes_with_4003() {
        let (c, mut w, mut sleep) = setup();
        for _ in 0..3 {
            let _ = c.queue.push(Bytes::from_static(b"x"));
        }
        let since = c.queue.over_since().expect("over the soft limit");
        w.woken(&c, sleep.as_mut());
        assert_eq!(sleep.deadline(), since + GRACE);
        assert!(w.expired(since + GRACE, &c, sleep.as_mut()).is_none());
        assert_eq!(c.queue.close_reason(), Some(DisconnectReason::SlowConsumer));
    }
}
