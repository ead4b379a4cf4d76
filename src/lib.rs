//! # edk-ws
//!
//! A production WebSocket endpoint for [warp] services: authenticated at the
//! handshake, one connection per user, protobuf-framed (`proto/ws.proto`,
//! package `edk.ws.v1`).
//!
//! ```no_run
//! use edk_ws::{JwtAuthenticator, Options, WsClient};
//! use warp::Filter;
//!
//! # async fn run() -> std::io::Result<()> {
//! let ws = WsClient::new(Options::from_env().expect("EDK_WS_* options"),
//!                        JwtAuthenticator::new(b"secret"));
//! let echo = ws.clone();
//! ws.subscribe_message_handler(move |conn, msg| {
//!     let echo = echo.clone();
//!     async move { let _ = echo.send(conn.user_id(), msg); }
//! });
//! let routes = warp::path("ws").and(warp::path::end()).and(ws.handler());
//! warp::serve(routes).incoming(edk_ws::bind("127.0.0.1:8080".parse().unwrap())?).run().await;
//! # Ok(()) }
//! ```
//!
//! The way in: frame → [`codec`] → handlers ([`WsClient::subscribe_message_handler`]).
//! The way out: [`WsClient::send`] → registry → per-connection queue → the
//! connection's single writer task.
//!
//! Refusals before the upgrade are HTTP statuses (see [`handshake`]); every
//! later end of a connection is a close code (see [`close::code`]) and a
//! [`DisconnectReason`].
#![warn(missing_docs)]

mod auth;
mod client;
pub mod close;
pub mod codec;
mod connection;
mod control;
mod error;
mod handlers;
pub mod handshake;
mod io;
mod listener;
mod metrics;
mod options;
mod policy;
mod presence;
pub mod proto;
mod queue;
mod registry;
mod rooms;
mod transport;

pub use async_trait::async_trait;
pub use auth::{AuthError, AuthRequest, Authenticator, Claims, Identity, JwtAuthenticator};
pub use client::{ShutdownReport, WsClient};
pub use close::DisconnectReason;
pub use connection::Conn;
pub use error::{SendError, SendReport};
pub use handlers::Subscription;
pub use listener::bind;
pub use metrics::{DisconnectCounts, MetricsSnapshot, RefusedCounts};
pub use options::{Options, OptionsError};
pub use policy::{AllowAll, JoinDecision, RoomPolicy, RoomSettings, StateChange};
pub use presence::ActivityError;
pub use proto::Message;
pub use proto::{Activity, Member, Members, Status};
pub use rooms::RoomError;
