//! [`WsClient`]: the module's public handle (the Go module's `ws.New()`), a
//! thin facade over the session layer (handshake filter, handlers) and the
//! node (hub + backplane).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use warp::reply::Response;
use warp::Filter;

use crate::auth::Authenticator;
use crate::backplane::{LocalBackplane, Node};
use crate::conn::Conn;
use crate::error::{SendError, SendReport};
use crate::hub::policy::{RoomPolicy, StateChange};
use crate::hub::presence::ActivityError;
use crate::hub::rooms::RoomError;
use crate::hub::{Hub, Payload};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::options::Options;
use crate::protocol::close::{code, CloseRequest, DisconnectReason};
use crate::protocol::codec;
use crate::protocol::proto::{Activity, Members, Message, Status};
use crate::session::{handshake, Endpoint};
use crate::subscribers::Subscription;

/// The WebSocket endpoint: mount its [`handler`](WsClient::handler) on a warp
/// route, subscribe handlers, and send to users.
///
/// Cheap to clone; every clone is the same endpoint. Two `WsClient`s are two
/// separate worlds (users, handlers, metrics).
///
/// ```no_run
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
/// edk_ws::serve(routes, listener, &client).run().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WsClient {
    inner: Arc<Endpoint>,
}

/// What [`WsClient::shutdown`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
        let hub = Hub::new(options.sanitized(), Arc::new(Metrics::default()));
        let node = Node::new(hub, Arc::new(LocalBackplane::new()));
        Self::from_endpoint(Endpoint::new(node, Box::new(authenticator)))
    }

    pub(crate) fn from_endpoint(endpoint: Endpoint) -> Self {
        WsClient {
            inner: Arc::new(endpoint),
        }
    }

    fn node(&self) -> &Node {
        &self.inner.node
    }

    fn hub(&self) -> &Arc<Hub> {
        &self.inner.node.hub
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.hub().options
    }

    /// The warp filter that answers WebSocket upgrades (the Go module's
    /// `GetWsHandler`). It always replies (101, or a refusal status: see the
    /// README's handshake table); mount it behind your path filter, e.g.
    /// `warp::path("ws").and(warp::path::end()).and(client.handler())`.
    #[must_use]
    pub fn handler(
        &self,
    ) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible>
           + Clone
           + Send
           + Sync
           + 'static {
        handshake::filter(self.inner.clone())
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
    ///
    /// # Errors
    ///
    /// [`SendError`]: `NotConnected`, `ShuttingDown`, or what the
    /// connection's queue refused (`QueueFull`, `Closed`, `TooLarge`).
    pub fn send(&self, user_id: &str, mut msg: Message) -> Result<(), SendError> {
        let frame = codec::encode_outbound(&mut msg);
        self.hub().send(user_id, Payload::Frame(frame))
    }

    /// Queues `msg` for each of `users` (encoded once, shared by all).
    pub fn send_many<I, S>(&self, users: I, mut msg: Message) -> SendReport
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let frame = codec::encode_outbound(&mut msg);
        let users: Vec<S> = users.into_iter().collect();
        let users: Vec<&str> = users.iter().map(AsRef::as_ref).collect();
        self.hub().send_many(&users, frame)
    }

    /// Queues `msg` for every connected user (encoded once, shared by all).
    pub fn broadcast(&self, mut msg: Message) -> SendReport {
        self.hub().broadcast(codec::encode_outbound(&mut msg))
    }

    /// Closes `user_id`'s connection with 4002 and `reason`, after what is
    /// already queued for it. Its disconnect handlers get `Kicked`.
    ///
    /// # Errors
    ///
    /// `NotConnected`; `Closed` when the connection was already closing for
    /// another reason (which stays the reported one).
    pub fn kick(&self, user_id: &str, reason: &str) -> Result<(), SendError> {
        self.hub().kick(user_id, reason)
    }

    /// The connection of `user_id`, if connected.
    pub fn connection(&self, user_id: &str) -> Option<Conn> {
        self.hub().registry.get(user_id).map(Conn)
    }

    /// Whether `user_id` has a registered connection.
    pub fn is_connected(&self, user_id: &str) -> bool {
        self.hub().registry.get(user_id).is_some()
    }

    /// Users with a registered connection.
    pub fn connected_users(&self) -> Vec<String> {
        let mut v = Vec::new();
        self.hub()
            .registry
            .for_each(|c| v.push(c.user_id().to_owned()));
        v
    }

    /// Number of registered users (one connection each).
    pub fn user_count(&self) -> usize {
        self.hub().registry.len()
    }

    /// Sets the room policy (join, state and publish hooks; per-room
    /// settings). The default, [`AllowAll`](crate::AllowAll), allows
    /// everything.
    pub fn set_room_policy(&self, policy: impl RoomPolicy) {
        self.hub().policy.set(policy);
    }

    /// Joins `user_id`'s connection to `room` with member `state` (no policy
    /// check: the server is trusted). Joining again replaces the state.
    ///
    /// # Errors
    ///
    /// [`RoomError`]: `NotConnected`, an invalid name, a full room, too many
    /// rooms, or state over the limits.
    pub fn join(
        &self,
        user_id: &str,
        room: &str,
        state: HashMap<String, String>,
    ) -> Result<(), RoomError> {
        let conn = self
            .hub()
            .registry
            .get(user_id)
            .ok_or(RoomError::NotConnected)?;
        self.node().join(&conn, room, state, false)
    }

    /// Removes `user_id` from `room`; the others get a leave event.
    ///
    /// # Errors
    ///
    /// `NotConnected`, or `NotAMember`.
    pub fn leave(&self, user_id: &str, room: &str) -> Result<(), RoomError> {
        let conn = self
            .hub()
            .registry
            .get(user_id)
            .ok_or(RoomError::NotConnected)?;
        self.node().leave(&conn, room)
    }

    /// Publishes `msg` to every member of `room` (encoded once), stamped
    /// with the room and the time; `sender` is kept as given.
    ///
    /// # Errors
    ///
    /// `NotFound` when the room does not exist.
    pub fn publish(&self, room: &str, msg: Message) -> Result<SendReport, RoomError> {
        self.publish_except(room, msg, &[])
    }

    /// Like [`publish`](WsClient::publish), skipping the users in `exclude`.
    ///
    /// # Errors
    ///
    /// As [`publish`](WsClient::publish).
    pub fn publish_except(
        &self,
        room: &str,
        mut msg: Message,
        exclude: &[&str],
    ) -> Result<SendReport, RoomError> {
        msg.room = room.to_owned();
        msg.control = None;
        let frame = codec::encode_outbound(&mut msg);
        self.hub().publish(room, frame, None, exclude)
    }

    /// The members of `room` (all of them, with their state) and its shared
    /// state.
    pub fn members(&self, room: &str) -> Option<Members> {
        self.hub().rooms.members(room)
    }

    /// The shared state of `room`.
    pub fn room_state(&self, room: &str) -> Option<HashMap<String, String>> {
        self.hub().rooms.room_state(room)
    }

    /// Sets and removes keys of `room`'s shared state (no policy check);
    /// every member gets `StateChanged` with an empty `user_id`.
    ///
    /// # Errors
    ///
    /// `NotFound`, or `StateTooLarge`.
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
        self.node().update_state(room, None, change)
    }

    /// Closes `room`: every member gets `RoomClosed { reason }` and is no
    /// longer in it. Returns how many members it had.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn close_room(&self, room: &str, reason: &str) -> Result<usize, RoomError> {
        self.node().close_room(room, reason)
    }

    /// Names of the rooms that exist now (rooms with members).
    pub fn rooms(&self) -> Vec<String> {
        self.hub().rooms.names()
    }

    /// Number of rooms.
    pub fn room_count(&self) -> usize {
        self.hub().rooms.len()
    }

    /// `user_id`'s activity; `None` means offline.
    pub fn activity(&self, user_id: &str) -> Option<Activity> {
        if self.options().online_activities_disabled {
            return None;
        }
        self.hub().presence.get(user_id)
    }

    /// Every non-offline activity.
    pub fn activities(&self) -> Vec<Activity> {
        if self.options().online_activities_disabled {
            return Vec::new();
        }
        self.hub().presence.list()
    }

    /// Sets a connected user's activity, as if the user had sent
    /// `SetActivity`; it propagates to every other connected user.
    ///
    /// # Errors
    ///
    /// `Disabled` (activities are off), or `NotConnected`.
    pub fn set_activity(
        &self,
        user_id: &str,
        status: Status,
        detail: &str,
    ) -> Result<(), ActivityError> {
        if self.options().online_activities_disabled {
            return Err(ActivityError::Disabled);
        }
        let conn = self
            .hub()
            .registry
            .get(user_id)
            .ok_or(ActivityError::NotConnected)?;
        self.node().set_activity(&conn, status, detail.to_owned())
    }

    /// Calls `handler` on every activity change (including going offline),
    /// synchronously: keep it quick, spawn for real work.
    pub fn subscribe_activity_handler(
        &self,
        handler: impl Fn(&Activity) + Send + Sync + 'static,
    ) -> Subscription {
        self.hub().presence.subscribe(Arc::new(handler))
    }

    /// The counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.hub().metrics.snapshot()
    }

    /// The live counters, for the serving path (`crate::serve`).
    pub(crate) fn metrics_handle(&self) -> Arc<Metrics> {
        self.hub().metrics.clone()
    }

    /// Shuts the endpoint down: new upgrades get 503 and sends fail with
    /// `ShuttingDown`; every connection gets what was queued for it, then
    /// close 1001; every disconnect handler runs. Returns when all
    /// connections have ended, or at `deadline`, when the rest are cut.
    ///
    /// warp's own graceful shutdown does not wait for upgraded connections:
    /// call this before (or while) stopping the server.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let (inner, hub) = (&self.inner, self.hub());
        let conns = hub.registry.close();
        tracing::info!(connections = conns.len(), "shutting down");
        for c in &conns {
            c.request_close(CloseRequest::new(
                code::GOING_AWAY,
                "server shutdown",
                DisconnectReason::ServerShutdown,
            ));
        }
        inner.tasks.close();
        let completed = tokio::time::timeout(deadline, inner.tasks.wait())
            .await
            .is_ok();
        let mut unfinished = 0;
        if !completed {
            inner.cut.cancel();
            hub.registry.for_each(|c| {
                unfinished += 1;
                c.reader_wake.notify_one();
            });
            tracing::warn!(unfinished, "shutdown deadline passed: cutting connections");
        }
        self.node().stop().await;
        ShutdownReport {
            closed: conns.len(),
            unfinished,
        }
    }
}

#[cfg(feature = "bench")]
impl WsClient {
    /// Registers a connection with no socket behind it, for the benchmarks
    /// of the delivery path (`benches/`, feature `bench`): returns its
    /// handle and a function that takes what was queued for it and counts
    /// the frames.
    #[doc(hidden)]
    pub fn bench_attach(&self, user_id: &str) -> (Conn, impl Fn() -> usize) {
        let hub = self.hub();
        let id = hub.next_conn_id();
        let conn = hub.new_connection(id, id, Arc::from(user_id), http::HeaderMap::new(), None);
        let _ = hub.registry.admit(conn.clone(), false);
        let handle = Conn(conn.clone());
        (handle, move || conn.queue.take().msgs.len())
    }
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("users", &self.user_count())
            .finish_non_exhaustive()
    }
}
