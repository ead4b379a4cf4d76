//! # edk-ws
//!
//! A production WebSocket endpoint for [warp] services: authenticated at the
//! handshake, one connection per user, protobuf-framed (`proto/ws.proto`,
//! package `edk.ws.v1`), with rooms and presence.
//!
//! ```no_run
//! use edk_ws::{JwtAuthenticator, Options, WsClient};
//! use warp::Filter;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let ws = WsClient::new(Options::from_env()?, JwtAuthenticator::new(b"secret"));
//! let echo = ws.clone();
//! ws.subscribe_message_handler(move |conn, msg| {
//!     let echo = echo.clone();
//!     async move { let _ = echo.send(conn.user_id(), msg); }
//! });
//! let routes = warp::path("ws").and(warp::path::end()).and(ws.handler());
//! // `edk_ws::serve`, not `warp::serve`: a handshake deadline, caps on
//! // pending connections, bounded request heads (see [`serve`]).
//! edk_ws::serve(routes, edk_ws::bind("127.0.0.1:8080".parse()?)?, &ws).run().await;
//! # Ok(()) }
//! ```
//!
//! ## Tracing a frame in (5 files)
//!
//! 1. `io/transport.rs` — the TCP socket taken back from hyper's upgrade
//!    (`TCP_NODELAY` on); `io/ws_read.rs` reads WebSocket frames from it.
//! 2. `session/task.rs` — `read_loop` gets each binary frame; `on_frame`
//!    counts it, checks the cost rule (`protocol/cost.rs`) and the inbound
//!    budget (`session/budget.rs`), and
//! 3. `protocol/codec.rs` — `decode_inbound` decodes the `Message` (the
//!    payload shares the frame's buffer) and stamps `sender` and
//!    `timestamp_ms`; back in `on_frame`, a message with `control` or
//!    `room` set goes to
//! 4. `session/control.rs` — `handle`: rate limit, policy hooks, the hub,
//!    and exactly one reply per request id; a message whose `type` has a
//!    typed route goes to `session/routes.rs` (decoded as the app's prost
//!    type, answered with the same id); any other message goes to
//! 5. `session/handlers.rs` — `call`: the application's handlers, in
//!    subscription order, each isolated from panics.
//!
//! The protocol's reference is `proto/ws.proto`; [`WsClient::asyncapi`]
//! returns the AsyncAPI document generated from it. Counters:
//! [`WsClient::metrics`], and Prometheus with the `prometheus` feature
//! (`WsClient::register_metrics`).
//!
//! ## Tracing a message out (5 files)
//!
//! 1. `client.rs` — [`WsClient::send`] encodes the message once
//!    (`protocol/codec.rs`) and calls
//! 2. `hub/mod.rs` — `Hub::send` → `Hub::deliver`, **the one fan-out
//!    function** (by user, users, room, or everyone): it looks the
//!    recipients up and pushes the shared bytes to each (a recipient on
//!    another node is handed to the backplane's `Forward` instead);
//! 3. `conn.rs` — `Connection::push` → `SendQueue::push`: bounded by count
//!    and bytes (a backlog over them for `slow_consumer_grace`, or over the
//!    hard limits, closes the connection with 4003), wakes the writer;
//! 4. `session/task.rs` — `write_loop`, the connection's single writer,
//!    takes the whole queue at once and hands every frame to
//! 5. `io/outbuf.rs` — the frame writer: the batch leaves in one vectored
//!    write (buffered small frames, then the last frame's header and
//!    payload, not copied); the buffer is freed afterwards.
//!
//! The layers, each importing only those below it, are drawn in
//! `ARCHITECTURE.md`: `protocol`/`io` → `conn` → `hub` → `backplane` →
//! `session` → `client`.
//!
//! Refusals before the upgrade are HTTP statuses; every later end of a
//! connection is a close code (see [`close::code`]) and a
//! [`DisconnectReason`].
#![warn(missing_docs)]

mod asyncapi;
mod auth;
// See hub/mod.rs: without `redis` the cluster paths are compiled, not called.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod backplane;
mod client;
mod conn;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hub;
mod io;
mod logs;
mod metrics;
mod options;
#[cfg(feature = "prometheus")]
mod prometheus;
mod protocol;
mod serve;
mod session;
mod subscribers;

pub use async_trait::async_trait;
pub use auth::{AuthError, AuthRequest, Authenticator, Claims, Identity, JwtAuthenticator};
pub use client::{ConnectError, ShutdownReport, WsClient};
pub use conn::Conn;
pub use error::{Delivery, SendError, SendReport};
pub use hub::policy::{AllowAll, JoinDecision, RoomPolicy, RoomSettings, StateChange};
pub use hub::presence::ActivityError;
pub use hub::rooms::RoomError;
pub use io::bind;
pub use metrics::{
    DisconnectCounts, HandlingDurations, HistogramSnapshot, MetricsSnapshot, RefusedCounts,
    SendFailureCounts,
};
pub use options::{Options, OptionsError};
/// Re-exported (feature `prometheus`): `WsClient::register_metrics` takes
/// its `Registry`.
#[cfg(feature = "prometheus")]
pub use prometheus_client;
/// Re-exported: typed routes take `prost_reflect::ReflectMessage` types.
pub use prost_reflect;
pub use protocol::close::{self, DisconnectReason};
pub use protocol::proto::{self, Activity, Member, Members, Message, Status};
pub use protocol::PROTOCOL;
pub use serve::serve;
pub use session::routes::RouteError;
pub use session::serve::{remote_addr, Server};
pub use subscribers::Subscription;

/// Support for the criterion benches (`benches/`), behind the `bench`
/// feature: not part of the public API.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench {
    pub use crate::protocol::codec::{decode_inbound, encode_outbound};

    /// The reader's per-message counting, as `session::task` does it.
    #[derive(Default)]
    pub struct Counters(crate::metrics::Metrics);

    impl Counters {
        /// One frame of `bytes` received, with the sampling decision of the
        /// handling time (the clock is read only when sampled).
        #[inline]
        pub fn received(&self, bytes: usize) {
            let slot = self.0.hot.slot();
            slot.received(bytes);
            if slot.sample() {
                let t = std::time::Instant::now();
                slot.handled(crate::metrics::Handling::Handlers, t.elapsed());
            }
        }

        /// Messages counted so far (summed over threads).
        pub fn messages_in(&self) -> u64 {
            self.0.snapshot().messages_in
        }
    }

    pub use crate::protocol::cost::{scan, Limits};
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
