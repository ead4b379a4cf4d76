//! [`WsClient`]: the module's public handle (the Go module's `ws.New()`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use warp::reply::Response;
use warp::Filter;

use crate::auth::Authenticator;
use crate::close::{code, CloseRequest, DisconnectReason};
use crate::codec;
use crate::connection::Conn;
use crate::error::{SendError, SendReport};
use crate::handlers::{Handlers, Subscription};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::options::Options;
use crate::proto::Message;
use crate::registry::Registry;

/// The WebSocket endpoint: mount its [`handler`](WsClient::handler) on a warp
/// route, subscribe handlers, and send to users.
///
/// Cheap to clone; every clone is the same endpoint. Two `WsClient`s are two
/// separate worlds (users, handlers, metrics).
///
/// ```no_run
/// use std::time::Duration;
/// use edk_ws::{JwtAuthenticator, Message, Options, WsClient};
/// use warp::Filter;
///
/// # async fn run() -> std::io::Result<()> {
/// let client = WsClient::new(Options::default(), JwtAuthenticator::new(b"secret"));
/// let c = client.clone();
/// client.subscribe_message_handler(move |conn, msg: Message| {
///     let c = c.clone();
///     async move {
///         // echo back to the sender
///         let _ = c.send(conn.user_id(), msg);
///     }
/// });
/// client.subscribe_disconnect_handler(|conn, reason| async move {
///     println!("{} left: {reason}", conn.user_id());
/// });
/// let routes = warp::path("ws").and(warp::path::end()).and(client.handler());
/// let listener = edk_ws::bind("127.0.0.1:8080".parse().unwrap())?;
/// warp::serve(routes).incoming(listener).run().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WsClient {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub options: Options,
    pub auth: Box<dyn Authenticator>,
    pub registry: Registry,
    pub handlers: Arc<Handlers>,
    pub metrics: Arc<Metrics>,
    next_conn_id: AtomicU64,
    live: AtomicUsize,
    idle: Notify,
}

impl Inner {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn connection_started(&self) {
        self.live.fetch_add(1, Ordering::SeqCst);
        self.metrics.connections_now.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_ended(&self) {
        self.metrics.connections_now.fetch_sub(1, Ordering::Relaxed);
        if self.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn wait_all_ended(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn send_error(&self, e: SendError) -> SendError {
        if matches!(e, SendError::NotConnected | SendError::ShuttingDown) {
            self.metrics.send_failed.fetch_add(1, Ordering::Relaxed);
        }
        e
    }
}

/// What [`WsClient::shutdown`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections asked to close with 1001.
    pub closed: usize,
    /// Connections still not ended when the deadline passed (they were cut).
    pub unfinished: usize,
}

impl WsClient {
    /// A new endpoint with these options and this token checker.
    pub fn new(options: Options, authenticator: impl Authenticator) -> Self {
        WsClient {
            inner: Arc::new(Inner {
                options,
                auth: Box::new(authenticator),
                registry: Registry::new(),
                handlers: Arc::new(Handlers::new()),
                metrics: Arc::new(Metrics::default()),
                next_conn_id: AtomicU64::new(1),
                live: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The warp filter that answers WebSocket upgrades (the Go module's
    /// `GetWsHandler`). It always replies (101, or a refusal status: see
    /// [`crate::handshake`]); mount it behind your path filter, e.g.
    /// `warp::path("ws").and(warp::path::end()).and(client.handler())`.
    pub fn handler(
        &self,
    ) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible>
           + Clone
           + Send
           + Sync
           + 'static {
        crate::handshake::filter(self.inner.clone())
    }

    /// Subscribes a message handler. Handlers run in subscription order for
    /// each decoded message; one connection's messages reach them in arrival
    /// order (the next message is read when the handlers are done, so a slow
    /// handler slows only its own connection). A panic is caught, logged and
    /// counted.
    pub fn subscribe_message_handler<F, Fut>(&self, handler: F) -> Subscription
    where
        F: Fn(Conn, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner.handlers.add_message(handler)
    }

    /// Subscribes a disconnect handler: it runs exactly once per accepted
    /// connection, after the connection is unregistered, with the reason.
    pub fn subscribe_disconnect_handler<F, Fut>(&self, handler: F) -> Subscription
    where
        F: Fn(Conn, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner.handlers.add_disconnect(handler)
    }

    /// Queues `msg` for `user_id`'s connection. `timestamp_ms` is stamped now;
    /// `sender` is kept as given (`""` means the server; a message received
    /// from a client carries its origin user id).
    pub fn send(&self, user_id: &str, mut msg: Message) -> Result<(), SendError> {
        let inner = &self.inner;
        if inner.registry.is_closed() {
            return Err(inner.send_error(SendError::ShuttingDown));
        }
        let conn = inner
            .registry
            .get(user_id)
            .ok_or_else(|| inner.send_error(SendError::NotConnected))?;
        conn.push(codec::encode_outbound(&mut msg))
    }

    /// Queues `msg` for each of `users` (encoded once, shared by all).
    pub fn send_many<I, S>(&self, users: I, mut msg: Message) -> SendReport
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let frame = codec::encode_outbound(&mut msg);
        let mut report = SendReport::default();
        let closed = self.inner.registry.is_closed();
        for u in users {
            let u = u.as_ref();
            let r = if closed {
                Err(self.inner.send_error(SendError::ShuttingDown))
            } else {
                match self.inner.registry.get(u) {
                    Some(c) => c.push(frame.clone()),
                    None => Err(self.inner.send_error(SendError::NotConnected)),
                }
            };
            match r {
                Ok(()) => report.queued += 1,
                Err(e) => report.failed.push((u.to_owned(), e)),
            }
        }
        report
    }

    /// Queues `msg` for every connected user (encoded once, shared by all).
    pub fn broadcast(&self, mut msg: Message) -> SendReport {
        let mut report = SendReport::default();
        if self.inner.registry.is_closed() {
            return report;
        }
        let frame = codec::encode_outbound(&mut msg);
        self.inner
            .registry
            .for_each(|c| match c.push(frame.clone()) {
                Ok(()) => report.queued += 1,
                Err(e) => report.failed.push((c.user_id().to_owned(), e)),
            });
        report
    }

    /// Closes `user_id`'s connection with 4002 and `reason`, after what is
    /// already queued for it. Its disconnect handlers get `Kicked`.
    pub fn kick(&self, user_id: &str, reason: &str) -> Result<(), SendError> {
        let conn = self
            .inner
            .registry
            .get(user_id)
            .ok_or(SendError::NotConnected)?;
        conn.request_close(CloseRequest::new(
            code::KICKED,
            reason,
            DisconnectReason::Kicked,
        ));
        Ok(())
    }

    /// The connection of `user_id`, if connected.
    pub fn connection(&self, user_id: &str) -> Option<Conn> {
        self.inner.registry.get(user_id).map(Conn)
    }

    /// Whether `user_id` has a registered connection.
    pub fn is_connected(&self, user_id: &str) -> bool {
        self.inner.registry.get(user_id).is_some()
    }

    /// Users with a registered connection.
    pub fn connected_users(&self) -> Vec<String> {
        let mut v = Vec::new();
        self.inner
            .registry
            .for_each(|c| v.push(c.user_id().to_owned()));
        v
    }

    /// Number of registered users (one connection each).
    pub fn user_count(&self) -> usize {
        self.inner.registry.len()
    }

    /// The counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Shuts the endpoint down: new upgrades get 503 and sends fail with
    /// `ShuttingDown`; every connection gets what was queued for it, then
    /// close 1001; every disconnect handler runs. Returns when all
    /// connections have ended, or at `deadline`, when the rest are cut.
    ///
    /// warp's own graceful shutdown does not wait for upgraded connections:
    /// call this before (or while) stopping the server.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let inner = &self.inner;
        let conns = inner.registry.close();
        tracing::info!(connections = conns.len(), "shutting down");
        for c in &conns {
            c.request_close(CloseRequest::new(
                code::GOING_AWAY,
                "server shutdown",
                DisconnectReason::ServerShutdown,
            ));
        }
        let completed = tokio::time::timeout(deadline, inner.wait_all_ended())
            .await
            .is_ok();
        let mut unfinished = 0;
        if !completed {
            inner.registry.for_each(|c| {
                unfinished += 1;
                c.force_stop();
            });
            tracing::warn!(unfinished, "shutdown deadline passed: cutting connections");
        }
        ShutdownReport {
            closed: conns.len(),
            unfinished,
        }
    }
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("users", &self.user_count())
            .finish_non_exhaustive()
    }
}
