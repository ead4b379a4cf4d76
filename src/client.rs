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
use crate::backplane::{Backplane, LocalBackplane, Node};
use crate::conn::Conn;
use crate::error::{Delivery, SendError, SendReport};
use crate::hub::policy::{RoomPolicy, StateChange};
use crate::hub::presence::ActivityError;
use crate::hub::rooms::RoomError;
use crate::hub::{Hub, Payload};
use crate::logs::ns;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::options::Options;
use crate::protocol::close::{code, CloseRequest, DisconnectReason};
use crate::protocol::codec;
use crate::protocol::proto::{Activity, Members, Message, Status};
use crate::session::routes::{Route, RouteError};
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

/// Why [`WsClient::connect`] could not build the endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// `redis_url` is not a Redis URL.
    #[error("invalid Redis URL: {0}")]
    InvalidRedisUrl(String),
    /// `redis_url` is set but the crate was built without its `redis`
    /// feature.
    #[error("redis_url is set but edk-ws was built without the `redis` feature")]
    RedisFeatureOff,
}

impl WsClient {
    /// A new endpoint with these options and this token checker.
    /// Durations are clamped to 1 ms – 1 day and sizes to at least 1.
    ///
    /// With `options.redis_url` set, prefer [`WsClient::connect`], which
    /// reports a bad URL and waits for Redis; `new` joins the cluster in the
    /// background (it must be called inside a tokio runtime) and refuses
    /// handshakes with 503 until Redis is reached. A bad URL, or no
    /// runtime, is logged and leaves the backplane down.
    pub fn new(options: Options, authenticator: impl Authenticator) -> Self {
        let options = options.sanitized();
        let client = match Self::build(options.clone(), Box::new(authenticator)) {
            Ok(client) => client,
            Err((e, auth)) => {
                tracing::error!(error = %e, "cannot use the Redis backplane: running as a single process");
                let node = Node::new(
                    Hub::new(options.with_redis_url(None), Arc::new(Metrics::default())),
                    Arc::new(LocalBackplane::new()),
                );
                Self::from_endpoint(Endpoint::new(node, auth))
            }
        };
        if client.node().backplane().is_clustered() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let c = client.clone();
                    rt.spawn(async move { c.node().start(Duration::ZERO).await });
                }
                Err(_) => tracing::error!(
                    "redis_url is set but WsClient::new was called outside a tokio runtime: \
                     the backplane stays down (use WsClient::connect)"
                ),
            }
        }
        client
    }

    pub(crate) fn from_endpoint(endpoint: Endpoint) -> Self {
        WsClient {
            inner: Arc::new(endpoint),
        }
    }

    /// Like [`WsClient::new`], and when `options.redis_url` is set, joins
    /// the cluster: connects to Redis (waiting up to 5 s; after that it keeps
    /// trying in the background, with handshakes refused 503 meanwhile),
    /// subscribes, and starts the heartbeat. See the README's "Scaling out".
    ///
    /// # Errors
    ///
    /// [`ConnectError`]: the URL is not a Redis URL, or the `redis` feature
    /// is off.
    pub async fn connect(
        options: Options,
        authenticator: impl Authenticator,
    ) -> Result<Self, ConnectError> {
        let client =
            Self::build(options.sanitized(), Box::new(authenticator)).map_err(|(e, _)| e)?;
        client.node().start(Duration::from_secs(5)).await;
        Ok(client)
    }

    #[allow(clippy::result_large_err)]
    fn build(
        options: Options,
        auth: Box<dyn Authenticator>,
    ) -> Result<Self, (ConnectError, Box<dyn Authenticator>)> {
        let backplane: Arc<dyn Backplane> = match &options.redis_url {
            None => Arc::new(LocalBackplane::new()),
            #[cfg(feature = "redis")]
            Some(url) => match crate::backplane::redis::RedisBackplane::new(url, &options) {
                Ok(b) => Arc::new(b),
                Err(e) => return Err((ConnectError::InvalidRedisUrl(e.to_string()), auth)),
            },
            #[cfg(not(feature = "redis"))]
            Some(_) => return Err((ConnectError::RedisFeatureOff, auth)),
        };
        let hub = Hub::new(options, Arc::new(Metrics::default()));
        let node = Node::new(hub, backplane);
        Ok(Self::from_endpoint(Endpoint::new(node, auth)))
    }

    /// This instance's node id in the cluster (with the local backplane:
    /// `local-<pid>`).
    pub fn node_id(&self) -> &str {
        self.node().backplane().node_id()
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

    /// Routes the messages of type `name` to `handler`, typed: the payload
    /// is decoded as the application's prost message `Req`, and the
    /// handler's `Ok(Resp)` is sent back to the requesting connection as a
    /// `Message` with the request's `id` and `type` and `Resp` encoded in
    /// `payload`. `Err(RouteError)` is sent as an `Error` (its code and
    /// message, the request's id); a payload that does not decode as `Req`
    /// gets `Error{INVALID_REQUEST}` and the connection stays open; a
    /// panicking handler gets `Error{INTERNAL}` (and is counted).
    ///
    /// **Order.** A message with `control` or `room` set goes to the module;
    /// otherwise a message whose `type` has a route goes to that route
    /// only; every other message goes to the message handlers. Like them, a
    /// route handles one connection's messages in arrival order (the next
    /// is read when it is done).
    ///
    /// `Req` and `Resp` carry their descriptors ([`prost_reflect::ReflectMessage`],
    /// e.g. `#[derive(ReflectMessage)]` on the prost types), so
    /// [`asyncapi`](WsClient::asyncapi) documents the route with their
    /// schemas. Routing `name` again replaces the route.
    ///
    /// ```
    /// use edk_ws::{proto::error::Code, JwtAuthenticator, Options, RouteError, WsClient};
    /// let client = WsClient::new(Options::default(), JwtAuthenticator::new(b"k"));
    /// // Any prost type with `ReflectMessage` (e.g. your own, generated with
    /// // `#[derive(prost_reflect::ReflectMessage)]`: see examples/server.rs);
    /// // here the well-known `StringValue` and `UInt64Value`.
    /// client.route("text.length", |_conn, text: String| async move {
    ///     if text.is_empty() {
    ///         return Err(RouteError::new(Code::InvalidRequest, "empty"));
    ///     }
    ///     Ok(text.chars().count() as u64)
    /// });
    /// ```
    pub fn route<Req, Resp, F, Fut>(&self, name: &str, handler: F)
    where
        Req: prost_reflect::ReflectMessage + Default + 'static,
        Resp: prost_reflect::ReflectMessage + Default + 'static,
        F: Fn(Conn, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RouteError>> + Send + 'static,
    {
        self.inner
            .routes
            .insert(Route::with_reply::<Req, Resp, F, Fut>(name, handler));
    }

    /// Like [`route`](WsClient::route), for fire-and-forget messages:
    /// nothing is sent back on `Ok(())`; an undecodable payload or an
    /// `Err` still gets its `Error` (with the request's id).
    pub fn route_no_reply<Req, F, Fut>(&self, name: &str, handler: F)
    where
        Req: prost_reflect::ReflectMessage + Default + 'static,
        F: Fn(Conn, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RouteError>> + Send + 'static,
    {
        self.inner
            .routes
            .insert(Route::without_reply::<Req, F, Fut>(name, handler));
    }

    /// Removes the route of `name`: its messages go to the message
    /// handlers again. `false` if there was none.
    pub fn remove_route(&self, name: &str) -> bool {
        self.inner.routes.remove(name)
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
    /// `Ok(Delivery::Local)`: queued here. In a cluster, a user with no
    /// connection here gets `Ok(Delivery::Forwarded)`: handed to the
    /// backplane for the node that holds the user (at most once; see
    /// [`send_checked`](WsClient::send_checked) to learn whether one does).
    ///
    /// # Errors
    ///
    /// [`SendError`]: `NotConnected` (single process: not connected),
    /// `ShuttingDown`, `Unavailable` (not here, and the backplane is down),
    /// or what the connection's queue refused (`QueueFull`, `Closed`,
    /// `TooLarge`).
    pub fn send(&self, user_id: &str, mut msg: Message) -> Result<Delivery, SendError> {
        let frame = codec::encode_outbound(&mut msg);
        self.hub().send(user_id, Payload::Frame(frame))
    }

    /// Like [`send`](WsClient::send), and in a cluster, when the user is not
    /// here, waits (at most `redis_timeout`) for Redis to say whether a node
    /// holding the user received it: `Ok(Delivery::Forwarded)` if one did,
    /// `Err(NotConnected)` if no node holds the user. Such sends are not
    /// ordered with [`send`](WsClient::send)s to the same user.
    ///
    /// # Errors
    ///
    /// As [`send`](WsClient::send); `NotConnected` means nowhere in the
    /// cluster.
    pub async fn send_checked(
        &self,
        user_id: &str,
        mut msg: Message,
    ) -> Result<Delivery, SendError> {
        let frame = codec::encode_outbound(&mut msg);
        self.node()
            .send_checked(user_id, Payload::Frame(frame))
            .await
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
    pub fn kick(&self, user_id: &str, reason: &str) -> Result<Delivery, SendError> {
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
    pub async fn join(
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
        self.node().join(&conn, room, state, false).await
    }

    /// Removes `user_id` from `room`; the others get a leave event.
    ///
    /// # Errors
    ///
    /// `NotConnected`, or `NotAMember`.
    pub async fn leave(&self, user_id: &str, room: &str) -> Result<(), RoomError> {
        let conn = self
            .hub()
            .registry
            .get(user_id)
            .ok_or(RoomError::NotConnected)?;
        self.node().leave(&conn, room).await
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
    pub async fn set_room_state(
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
        self.node().update_state(room, None, change).await
    }

    /// Closes `room`: every member gets `RoomClosed { reason }` and is no
    /// longer in it. Returns how many members it had.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub async fn close_room(&self, room: &str, reason: &str) -> Result<usize, RoomError> {
        self.node().close_room(room, reason).await
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
    pub async fn set_activity(
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
        self.node()
            .set_activity(&conn, status, detail.to_owned())
            .await
    }

    /// Calls `handler` on every activity change (including going offline),
    /// synchronously: keep it quick, spawn for real work.
    pub fn subscribe_activity_handler(
        &self,
        handler: impl Fn(&Activity) + Send + Sync + 'static,
    ) -> Subscription {
        self.hub().presence.subscribe(Arc::new(handler))
    }

    /// The counters, and the hub's gauges now (rooms, memberships,
    /// activities, send queues: read from every connection, so a call costs
    /// one short lock per connection).
    pub fn metrics(&self) -> MetricsSnapshot {
        snapshot(&self.inner)
    }

    /// Registers this endpoint's metrics with a Prometheus registry (feature
    /// `prometheus`): read at scrape time, labelled `namespace` =
    /// [`Options::metrics_namespace`] (by default the mount path without its
    /// slashes). For several endpoints in one registry use
    /// [`register_metrics_of`](WsClient::register_metrics_of), which writes
    /// each family once. The registry keeps only a weak reference.
    ///
    /// ```
    /// let client = edk_ws::WsClient::new(Default::default(), edk_ws::JwtAuthenticator::new(b"k"));
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// client.register_metrics(&mut registry);
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("edk_ws_connections{namespace=\"ws\"} 0"));
    /// ```
    #[cfg(feature = "prometheus")]
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        Self::register_metrics_of(registry, std::slice::from_ref(self));
    }

    /// Registers the metrics of several endpoints (e.g. `/layout` and
    /// `/lobby`) as one collector: each family once, one sample per
    /// endpoint, told apart by `namespace`.
    #[cfg(feature = "prometheus")]
    pub fn register_metrics_of(
        registry: &mut prometheus_client::registry::Registry,
        clients: &[WsClient],
    ) {
        let sources = clients
            .iter()
            .map(|c| {
                let weak = Arc::downgrade(&c.inner);
                let source: crate::prometheus::Source = Box::new(move || {
                    let inner = weak.upgrade()?;
                    Some((namespace(&inner.hub().options), snapshot(&inner)))
                });
                source
            })
            .collect();
        registry.register_collector(Box::new(crate::prometheus::EndpointsCollector::new(
            sources,
        )));
    }

    /// This endpoint's AsyncAPI 3.0 document (JSON): the protocol of
    /// `proto/ws.proto` (generated at build time from its descriptors and
    /// comments: the handshake, close codes, every request with its replies
    /// and error codes, every event), served at
    /// [`Options::mount_path`], with this endpoint's limits, whether
    /// activities are on, and its typed routes with their schemas.
    pub fn asyncapi(&self) -> String {
        self.asyncapi_value().to_string()
    }

    /// The AsyncAPI document as a readable, self-contained HTML page (no
    /// script, nothing fetched).
    pub fn asyncapi_html(&self) -> String {
        crate::asyncapi::html(&self.asyncapi_value())
    }

    fn asyncapi_value(&self) -> serde_json::Value {
        let routes = self.inner.routes.list();
        let docs: Vec<_> = routes
            .iter()
            .map(|r| crate::asyncapi::RouteDoc {
                name: &r.name,
                request: &r.request,
                reply: r.reply.as_ref(),
            })
            .collect();
        crate::asyncapi::document(self.options(), &docs)
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
        let ns = ns(&hub.options.name);
        tracing::info!(ns, connections = conns.len(), "shutting down");
        // In a cluster, release this node's users, members and activities
        // first: the other nodes see the leaves now, not after the closes.
        self.node().stop().await;
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
            tracing::warn!(
                ns,
                unfinished,
                "shutdown deadline passed: cutting connections"
            );
        }
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

/// The counters plus the hub's gauges, read now.
fn snapshot(inner: &Endpoint) -> MetricsSnapshot {
    let hub = inner.hub();
    let mut m = hub.metrics.snapshot();
    let b = inner.node.backplane();
    m.backplane_down = b.is_clustered() && !b.is_up();
    let stats = b.stats();
    m.backplane_publish_errors = stats.publish_errors;
    m.backplane_slow_calls = stats.slow_calls;
    m.rooms = hub.rooms.len() as u64;
    if !hub.options.online_activities_disabled {
        m.activities = hub.presence.len() as u64;
    }
    // Handles copied shard by shard: no registry lock is held while each
    // connection's queue and room list are read.
    let mut batch = Vec::new();
    for shard in 0..crate::hub::registry::SHARDS {
        hub.registry.handles(shard, &mut batch);
        for c in batch.drain(..) {
            let (msgs, bytes) = c.queue.depth();
            m.queued_messages += msgs as u64;
            m.queued_bytes += bytes as u64;
            m.max_queue_depth = m.max_queue_depth.max(msgs as u64);
            m.room_members += c.rooms.lock().as_ref().map_or(0, Vec::len) as u64;
        }
    }
    m
}

/// The `namespace` label of an endpoint's metrics.
#[cfg(feature = "prometheus")]
fn namespace(o: &Options) -> String {
    match o.metrics_namespace.as_str() {
        "" => match o.mount_path.trim_matches('/') {
            "" => "root".to_owned(),
            p => p.replace('/', "_"),
        },
        ns => ns.to_owned(),
    }
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("users", &self.user_count())
            .finish_non_exhaustive()
    }
}
