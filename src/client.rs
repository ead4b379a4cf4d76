//! [`WsClient`]: the module's public handle (the Go module's `ws.New()`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
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
use crate::policy::{AllowAll, RoomPolicy, StateChange};
use crate::presence::{ActivityError, Presence};
use crate::proto::{Activity, Members, Message, Status};
use crate::registry::Registry;
use crate::rooms::{RoomError, Rooms};

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
    pub rooms: Rooms,
    pub presence: Presence,
    policy: RwLock<Arc<dyn RoomPolicy>>,
    next_conn_id: AtomicU64,
    live: AtomicUsize,
    idle: Notify,
}

impl Inner {
    pub fn room_policy(&self) -> Arc<dyn RoomPolicy> {
        self.policy.read().clone()
    }

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

/// Runs `f` once `window` has passed: on the tokio runtime when there is
/// one, else on a short-lived thread. Never inline — callers (batched room
/// and presence events) may hold locks that `f` takes.
pub(crate) fn after_window(window: Duration, f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn(async move {
                tokio::time::sleep(window).await;
                f();
            });
        }
        Err(_) => {
            std::thread::spawn(move || {
                std::thread::sleep(window);
                f();
            });
        }
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
    /// Durations are clamped to 1 ms – 1 day and sizes to at least 1.
    pub fn new(options: Options, authenticator: impl Authenticator) -> Self {
        let options = options.sanitized();
        WsClient {
            inner: Arc::new(Inner {
                options,
                auth: Box::new(authenticator),
                registry: Registry::new(),
                handlers: Arc::new(Handlers::new()),
                metrics: Arc::new(Metrics::default()),
                rooms: Rooms::new(),
                presence: Presence::new(),
                policy: RwLock::new(Arc::new(AllowAll)),
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
            self.inner.registry.for_each(|c| {
                report
                    .failed
                    .push((c.user_id().to_owned(), SendError::ShuttingDown));
            });
            self.inner
                .metrics
                .send_failed
                .fetch_add(report.failed.len() as u64, Ordering::Relaxed);
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
    /// `Err(Closed)` when the connection was already closing for another
    /// reason (which stays the reported one).
    pub fn kick(&self, user_id: &str, reason: &str) -> Result<(), SendError> {
        let conn = self
            .inner
            .registry
            .get(user_id)
            .ok_or(SendError::NotConnected)?;
        let kick = CloseRequest::new(code::KICKED, reason, DisconnectReason::Kicked);
        if !conn.request_close(kick) {
            return Err(SendError::Closed);
        }
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

    /// Sets the room policy (join, state and publish hooks; per-room
    /// settings). The default, [`AllowAll`], allows everything.
    pub fn set_room_policy(&self, policy: impl RoomPolicy) {
        *self.inner.policy.write() = Arc::new(policy);
    }

    /// Joins `user_id`'s connection to `room` with member `state` (no policy
    /// check: the server is trusted). Joining again replaces the state.
    pub fn join(
        &self,
        user_id: &str,
        room: &str,
        state: HashMap<String, String>,
    ) -> Result<(), RoomError> {
        let conn = self
            .inner
            .registry
            .get(user_id)
            .ok_or(RoomError::NotConnected)?;
        self.inner
            .rooms
            .join(&self.inner, &conn, room, state, false)
    }

    /// Removes `user_id` from `room`; the others get a leave event.
    pub fn leave(&self, user_id: &str, room: &str) -> Result<(), RoomError> {
        let conn = self
            .inner
            .registry
            .get(user_id)
            .ok_or(RoomError::NotConnected)?;
        self.inner.rooms.leave(&self.inner, &conn, room)
    }

    /// Publishes `msg` to every member of `room` (encoded once), stamped
    /// with the room and the time; `sender` is kept as given.
    pub fn publish(&self, room: &str, msg: Message) -> Result<SendReport, RoomError> {
        self.publish_except(room, msg, &[])
    }

    /// Like [`publish`](WsClient::publish), skipping the users in `exclude`.
    pub fn publish_except(
        &self,
        room: &str,
        msg: Message,
        exclude: &[&str],
    ) -> Result<SendReport, RoomError> {
        self.inner.rooms.publish(room, msg, None, exclude)
    }

    /// The members of `room` (with their state) and its shared state.
    pub fn members(&self, room: &str) -> Option<Members> {
        self.inner.rooms.members(room)
    }

    /// The shared state of `room`.
    pub fn room_state(&self, room: &str) -> Option<HashMap<String, String>> {
        self.inner.rooms.room_state(room)
    }

    /// Sets and removes keys of `room`'s shared state (no policy check);
    /// every member gets `StateChanged` with an empty `user_id`.
    pub fn set_room_state(
        &self,
        room: &str,
        changes: HashMap<String, String>,
        removed: Vec<String>,
    ) -> Result<(), RoomError> {
        let change = StateChange {
            room_changes: changes,
            room_removed: removed,
            ..Default::default()
        };
        self.inner
            .rooms
            .update_state(&self.inner, room, None, change)
    }

    /// Closes `room`: every member gets `RoomClosed { reason }` and is no
    /// longer in it. Returns how many members it had.
    pub fn close_room(&self, room: &str, reason: &str) -> Result<usize, RoomError> {
        self.inner
            .rooms
            .close(room, reason)
            .ok_or(RoomError::NotFound)
    }

    /// Names of the rooms that exist now (rooms with members).
    pub fn rooms(&self) -> Vec<String> {
        self.inner.rooms.names()
    }

    /// Number of rooms.
    pub fn room_count(&self) -> usize {
        self.inner.rooms.len()
    }

    /// `user_id`'s activity; `None` means offline.
    pub fn activity(&self, user_id: &str) -> Option<Activity> {
        if self.inner.options.online_activities_disabled {
            return None;
        }
        self.inner.presence.get(user_id)
    }

    /// Every non-offline activity.
    pub fn activities(&self) -> Vec<Activity> {
        if self.inner.options.online_activities_disabled {
            return Vec::new();
        }
        self.inner.presence.list()
    }

    /// Sets a connected user's activity, as if the user had sent
    /// `SetActivity`; it propagates to every other connected user.
    pub fn set_activity(
        &self,
        user_id: &str,
        status: Status,
        detail: &str,
    ) -> Result<(), ActivityError> {
        if self.inner.options.online_activities_disabled {
            return Err(ActivityError::Disabled);
        }
        let conn = self
            .inner
            .registry
            .get(user_id)
            .ok_or(ActivityError::NotConnected)?;
        self.inner
            .presence
            .set(&self.inner, &conn, status, detail.to_owned());
        Ok(())
    }

    /// Calls `handler` on every activity change (including going offline),
    /// synchronously: keep it quick, spawn for real work.
    pub fn subscribe_activity_handler(&self, handler: impl Fn(&Activity) + Send + Sync + 'static) {
        self.inner.presence.subscribe(Arc::new(handler));
    }

    /// Registers a connection with no socket behind it, for benchmarks of
    /// the delivery path (`benches/`). Not part of the supported API.
    #[doc(hidden)]
    pub fn __bench_attach(&self, user_id: &str) -> Conn {
        let inner = &self.inner;
        let conn = Arc::new(crate::connection::Connection::new(
            inner.next_conn_id(),
            Arc::from(user_id),
            http::HeaderMap::new(),
            None,
            inner,
        ));
        let _ = inner.registry.admit(conn.clone(), false);
        Conn(conn)
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
