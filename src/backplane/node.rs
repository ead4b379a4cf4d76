//! [`Node`]: this process as one node of a cluster — the hub (local world)
//! plus the backplane (everyone else). `session` and the `WsClient` facade
//! call it for what changes ownership and rooms (claims, joins, state,
//! activities): it records them with the backplane when there can be
//! other nodes, and applies them to the hub. Deliveries go straight to the
//! hub, which forwards what is not local through the [`Forward`] installed
//! here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::HeaderMap;
use tracing::info;

use super::{Backplane, BackplaneError, ClaimError};
use crate::conn::Connection;
use crate::error::SendError;
use crate::hub::policy::StateChange;
use crate::hub::presence::ActivityError;
use crate::hub::registry::Admission;
use crate::hub::rooms::RoomError;
use crate::hub::{Forward, Hub, Payload, Topic};
use crate::protocol::close::{code, CloseRequest, DisconnectReason};
use crate::protocol::proto::Status;

/// A connection admitted by [`Node::admit`].
pub(crate) enum Admitted {
    /// Registered as its user's connection (a previous one was told to
    /// close with 4001).
    Registered(Arc<Connection>),
    /// A newer connection of the user was claimed meanwhile: this one is
    /// not registered and closes with 4001 as soon as it opens.
    Stale(Arc<Connection>),
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdmitError {
    /// The user is connected and new connections are refused (409).
    Conflict,
    /// The endpoint is shutting down (503).
    ShuttingDown,
    /// Ownership cannot be checked: the backplane is unreachable (503).
    Unavailable,
}

pub(crate) struct Node {
    pub hub: Arc<Hub>,
    backplane: Arc<dyn Backplane>,
    /// `backplane.is_clustered()`, read once: the per-message check is a
    /// plain field.
    clustered: bool,
}

fn replaced() -> CloseRequest {
    CloseRequest::new(
        code::REPLACED,
        "replaced by a new connection",
        DisconnectReason::Replaced,
    )
}

impl Node {
    pub fn new(hub: Arc<Hub>, backplane: Arc<dyn Backplane>) -> Self {
        let clustered = backplane.is_clustered();
        if clustered {
            hub.set_forward(Arc::new(Publish(backplane.clone())));
        }
        Node {
            hub,
            backplane,
            clustered,
        }
    }

    /// Claims `user`'s one connection and registers a new connection for
    /// it, by the kick-out rule; the replaced connection is told to close.
    pub async fn admit(
        &self,
        user: Arc<str>,
        headers: HeaderMap,
        peer: Option<SocketAddr>,
        refuse_new: bool,
    ) -> Result<Admitted, AdmitError> {
        let hub = &self.hub;
        let id = hub.next_conn_id();
        let claim = match self.backplane.claim(&user, id, refuse_new).await {
            Ok(c) => c,
            Err(ClaimError::Conflict) => return Err(AdmitError::Conflict),
            Err(ClaimError::Unavailable) => return Err(AdmitError::Unavailable),
        };
        let conn = hub.new_connection(id, claim.epoch, user, headers, peer);
        let refused = match hub.registry.admit(conn.clone(), refuse_new) {
            Admission::Admitted { replaced: old } => {
                if let Some(old) = old {
                    info!(user = %old.user_id(), conn = old.id(), by = conn.id(), "replaced by a new connection");
                    old.request_close(replaced());
                }
                return Ok(Admitted::Registered(conn));
            }
            Admission::Stale => {
                info!(user = %conn.user_id(), conn = conn.id(), "a newer connection claimed the user first: closing with 4001");
                conn.request_close(replaced());
                return Ok(Admitted::Stale(conn));
            }
            Admission::Conflict => AdmitError::Conflict,
            Admission::Closed => AdmitError::ShuttingDown,
        };
        self.release(&conn);
        Err(refused)
    }

    /// A connection ended: it leaves the registry, its rooms and presence,
    /// and gives up its claim. Its disconnect handlers are the caller's.
    pub fn ended(&self, conn: &Arc<Connection>) {
        conn.ended.store(true, Ordering::SeqCst);
        self.hub.registry.remove_if(conn.user_id(), conn.id());
        self.hub.leave_all(conn);
        self.hub.activity_gone(conn);
        self.release(conn);
    }

    fn release(&self, conn: &Arc<Connection>) {
        if !self.clustered {
            return;
        }
        let (backplane, conn) = (self.backplane.clone(), conn.clone());
        tokio::spawn(async move {
            backplane
                .release(conn.user_id(), conn.id(), conn.epoch())
                .await
        });
    }

    /// Joins `conn` to `room` (policies are the caller's business).
    pub fn join(
        &self,
        conn: &Arc<Connection>,
        room: &str,
        state: HashMap<String, String>,
        read_only: bool,
    ) -> Result<(), RoomError> {
        self.hub.join(conn, room, state, read_only)
    }

    /// Removes `conn` from `room`.
    pub fn leave(&self, conn: &Arc<Connection>, room: &str) -> Result<(), RoomError> {
        self.hub.leave(conn, room)
    }

    /// Applies a state change by `by` (or by the server).
    pub fn update_state(
        &self,
        room: &str,
        by: Option<&Arc<Connection>>,
        change: StateChange,
    ) -> Result<(), RoomError> {
        self.hub.update_state(room, by, change)
    }

    /// Closes `room`; returns how many members it had.
    pub fn close_room(&self, room: &str, reason: &str) -> Result<usize, RoomError> {
        self.hub.close_room(room, reason).ok_or(RoomError::NotFound)
    }

    /// Sets `conn`'s user activity.
    pub fn set_activity(
        &self,
        conn: &Connection,
        status: Status,
        detail: String,
    ) -> Result<(), ActivityError> {
        if self.hub.options.online_activities_disabled {
            return Err(ActivityError::Disabled);
        }
        self.hub.set_activity(conn, status, detail);
        Ok(())
    }

    /// Leaves the cluster (a no-op for the local backplane).
    pub async fn stop(&self) {
        self.backplane.stop().await
    }
}

/// The hub's [`Forward`]: the backplane's publish.
struct Publish(Arc<dyn Backplane>);

impl Forward for Publish {
    fn forward(
        &self,
        topic: Topic<'_>,
        payload: &Payload,
        except: &[&str],
    ) -> Result<(), SendError> {
        self.0
            .publish(topic, payload, except)
            .map_err(|BackplaneError::Unavailable| SendError::Unavailable)
    }
}
