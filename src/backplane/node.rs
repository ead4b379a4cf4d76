//! [`Node`]: this process as one node of a cluster — the hub (local world)
//! plus the backplane (everyone else). `session` and the `WsClient` facade
//! call it for what changes ownership, rooms and activities: when the
//! backplane is clustered it records the change there first (where the
//! cluster-wide rules are decided: one connection per user, member limits,
//! epochs, versions) and then applies it to the hub; otherwise the hub
//! alone decides, as a single process always did. Deliveries go straight to
//! the hub, which forwards what is not local through the [`Forward`]
//! installed here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::HeaderMap;
use tracing::{debug, info, warn};

use super::{Backplane, BackplaneError, ClaimError, MemberRecord};
use crate::conn::Connection;
use crate::error::{Delivery, SendError};
use crate::hub::policy::{RoomSettings, StateChange};
use crate::hub::presence::ActivityError;
use crate::hub::registry::Admission;
use crate::hub::replica::{Applied, MemberUpdate};
use crate::hub::rooms::{valid_room_name, RoomError};
use crate::hub::{Forward, Hub, Payload, Topic};
use crate::protocol::close::{code, CloseRequest, DisconnectReason};
use crate::protocol::cluster::ActivityRecord;
use crate::protocol::codec;
use crate::protocol::proto::{Activity, Status};

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
    /// `backplane.is_clustered()`, read once.
    clustered: bool,
    /// Admit handshakes on this node alone while the backplane is down.
    admit_when_down: bool,
}

fn replaced() -> CloseRequest {
    CloseRequest::new(
        code::REPLACED,
        "replaced by a new connection",
        DisconnectReason::Replaced,
    )
}

/// Attempts of a state change whose room moved on meanwhile.
const STATE_RETRIES: usize = 5;

impl Node {
    pub fn new(hub: Arc<Hub>, backplane: Arc<dyn Backplane>) -> Self {
        let clustered = backplane.is_clustered();
        if clustered {
            hub.set_forward(Arc::new(Publish(backplane.clone())));
        }
        let admit_when_down = hub.options.redis_admit_when_down;
        Node {
            hub,
            backplane,
            clustered,
            admit_when_down,
        }
    }

    pub fn backplane(&self) -> &Arc<dyn Backplane> {
        &self.backplane
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
        let epoch = match self.backplane.claim(&user, id, refuse_new).await {
            Ok(c) => c.epoch,
            Err(ClaimError::Conflict) => return Err(AdmitError::Conflict),
            Err(ClaimError::Unavailable) if self.admit_when_down => {
                warn!(user = %user, "backplane down: admitting on this node alone");
                0
            }
            Err(ClaimError::Unavailable) => return Err(AdmitError::Unavailable),
        };
        let conn = hub.new_connection(id, epoch, user, headers, peer);
        let refused = match hub.registry.admit(conn.clone(), refuse_new) {
            Admission::Admitted { replaced: old } => {
                if let Some(old) = old {
                    info!(user = %old.user_id(), conn = old.id(), by = conn.id(), "replaced by a new connection");
                    old.request_close(replaced());
                }
                if self.backplane.fenced(conn.user_id(), epoch) {
                    info!(user = %conn.user_id(), conn = conn.id(), "replaced on another node while connecting: closing with 4001");
                    conn.request_close(replaced());
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
        self.release(&conn).await;
        Err(refused)
    }

    /// A connection ended: it leaves the registry, its rooms and presence,
    /// and gives up its claim. Its disconnect handlers are the caller's.
    pub async fn ended(&self, conn: &Arc<Connection>) {
        conn.ended.store(true, Ordering::SeqCst);
        let hub = &self.hub;
        hub.registry.remove_if(conn.user_id(), conn.id());
        if !self.clustered {
            hub.leave_all(conn);
            hub.activity_gone(conn);
            return;
        }
        let rooms = conn.rooms.lock().take().unwrap_or_default();
        for room in rooms {
            self.leave_cluster(conn, &room).await.ok();
        }
        if hub.presence.get(conn.user_id()).is_some() {
            let offline = offline(conn.user_id());
            if let Err(e) = self.backplane.activity_set(&offline, conn.epoch()).await {
                debug!(error = %e, "offline not recorded in the cluster");
            }
        }
        hub.activity_gone(conn);
        self.release(conn).await;
    }

    async fn release(&self, conn: &Connection) {
        if self.clustered {
            self.backplane
                .release(conn.user_id(), conn.id(), conn.epoch())
                .await;
        }
    }

    /// Joins `conn` to `room` (policies are the caller's business).
    pub async fn join(
        &self,
        conn: &Arc<Connection>,
        room: &str,
        state: HashMap<String, String>,
        read_only: bool,
    ) -> Result<(), RoomError> {
        let hub = &self.hub;
        if !self.clustered {
            return hub.join(conn, room, state, read_only);
        }
        valid_room_name(room)?;
        hub.check_state(&state)?;
        if conn.is_closing() {
            return Err(RoomError::NotConnected);
        }
        // The connection's own limit is local: reserve the seat first.
        let reserved = {
            let mut list = conn.rooms.lock();
            let Some(list) = list.as_mut() else {
                return Err(RoomError::NotConnected);
            };
            if list.iter().any(|r| &**r == room) {
                false
            } else if list.len() >= hub.options.max_rooms_per_connection {
                return Err(RoomError::TooManyRooms);
            } else {
                list.push(Arc::from(room));
                true
            }
        };
        let unreserve = |conn: &Connection| {
            if reserved {
                crate::hub::rooms::remove_from_list(conn, room);
            }
        };
        let settings = self.new_room_settings(room);
        let record = MemberRecord {
            user: conn.user_id(),
            conn: conn.id(),
            epoch: conn.epoch(),
            state: &state,
            read_only,
        };
        let version = match self.backplane.room_join(room, record, &settings).await {
            Ok(v) => v,
            Err(e) => {
                unreserve(conn);
                self.unwatch_if_remote(room).await;
                return Err(e);
            }
        };
        let member = MemberUpdate {
            user: conn.user_key(),
            conn: Some(conn.clone()),
            node: None,
            epoch: conn.epoch(),
            state,
            read_only,
        };
        self.applied(
            room,
            version,
            hub.apply_join(room, member, version, Some(&settings)),
        )
        .await
    }

    /// Removes `conn` from `room`.
    pub async fn leave(&self, conn: &Arc<Connection>, room: &str) -> Result<(), RoomError> {
        if !self.clustered {
            return self.hub.leave(conn, room);
        }
        self.hub.rooms.membership(room, conn).map_err(|e| match e {
            RoomError::NotFound => RoomError::NotAMember,
            e => e,
        })?;
        self.leave_cluster(conn, room).await
    }

    async fn leave_cluster(&self, conn: &Arc<Connection>, room: &str) -> Result<(), RoomError> {
        let hub = &self.hub;
        let version = self
            .backplane
            .room_leave(room, conn.user_id(), conn.epoch())
            .await;
        let result = match version {
            Ok(v) => {
                let r = self
                    .applied(room, v, hub.apply_leave(room, conn.user_id(), v))
                    .await;
                crate::hub::rooms::remove_from_list(conn, room);
                r
            }
            Err(e) => Err(e),
        };
        self.unwatch_if_remote(room).await;
        result
    }

    /// Waits for the stream when a write's own version could not be
    /// applied directly (earlier versions still in flight).
    async fn applied(&self, room: &str, version: u64, applied: Applied) -> Result<(), RoomError> {
        match applied {
            Applied::Done | Applied::Already => Ok(()),
            Applied::Gap => {
                if self.backplane.room_caught_up(room, version).await {
                    Ok(())
                } else {
                    warn!(room, version, "room replica did not catch up in time");
                    Err(RoomError::Unavailable)
                }
            }
        }
    }

    async fn unwatch_if_remote(&self, room: &str) {
        if self.hub.drop_replica_if_remote(room) {
            self.backplane.room_unwatch(room).await;
        }
    }

    /// Settings for `room` should this join create it.
    fn new_room_settings(&self, room: &str) -> RoomSettings {
        let o = &self.hub.options;
        let defaults = RoomSettings {
            member_events: o.room_member_events,
            publish_echo: o.room_publish_echo,
            max_members: o.max_members_per_room,
        };
        self.hub.policy.get().room_settings(room, defaults)
    }

    /// Applies a state change by `by` (or by the server).
    pub async fn update_state(
        &self,
        room: &str,
        by: Option<&Arc<Connection>>,
        change: StateChange,
    ) -> Result<(), RoomError> {
        let hub = &self.hub;
        if !self.clustered {
            return hub.update_state(room, by, change);
        }
        for _ in 0..STATE_RETRIES {
            // Checked against the replica at a version, then written only if
            // the room is still at that version.
            let (version, valid, member_state) = {
                let room_ref = hub.rooms.get(room).ok_or(RoomError::NotFound)?;
                let r = room_ref.lock();
                let valid = hub.validate_change(&r, by.map(|c| &**c), change.clone())?;
                let member_state = by.and_then(|c| r.member_state_after(c.user_id(), &valid));
                (r.version(), valid, member_state)
            };
            let writer = by.map(|c| {
                let (state, read_only) = match &member_state {
                    Some((s, ro)) => (s, *ro),
                    None => (&*EMPTY, false),
                };
                MemberRecord {
                    user: c.user_id(),
                    conn: c.id(),
                    epoch: c.epoch(),
                    state,
                    read_only,
                }
            });
            let has_member_part = member_state.is_some();
            match self
                .backplane
                .room_update(room, version, writer, has_member_part, &valid)
                .await?
            {
                Some(v) => {
                    let user = by.map(|c| c.user_id());
                    let applied = hub.apply_state(room, user, valid, v);
                    return self.applied(room, v, applied).await;
                }
                // Moved on meanwhile: catch up and check again.
                None => {
                    self.backplane.room_caught_up(room, version + 1).await;
                }
            }
        }
        Err(RoomError::Unavailable)
    }

    /// Closes `room`; returns how many members it had.
    pub async fn close_room(&self, room: &str, reason: &str) -> Result<usize, RoomError> {
        if !self.clustered {
            return self.hub.close_room(room, reason).ok_or(RoomError::NotFound);
        }
        let (version, n) = self.backplane.room_close(room, reason).await?;
        if self.hub.room_version(room).is_some() {
            self.applied(room, version, self.hub.apply_close(room, reason, version))
                .await?;
        }
        self.unwatch_if_remote(room).await;
        Ok(n)
    }

    /// Sets `conn`'s user activity.
    pub async fn set_activity(
        &self,
        conn: &Connection,
        status: Status,
        detail: String,
    ) -> Result<(), ActivityError> {
        if self.hub.options.online_activities_disabled {
            return Err(ActivityError::Disabled);
        }
        if self.clustered && !conn.is_closing() {
            let activity = Activity {
                user_id: conn.user_id().to_owned(),
                status: status as i32,
                detail: detail.clone(),
                since_ms: codec::now_ms(),
            };
            match self.backplane.activity_set(&activity, conn.epoch()).await {
                Ok(true) => {}
                Ok(false) => return Ok(()), // a newer connection owns it
                Err(BackplaneError::Unavailable) => return Err(ActivityError::Unavailable),
            }
        }
        self.hub.set_activity(conn, status, detail);
        Ok(())
    }

    /// Delivers `payload` to `user` here, or (clustered) through the
    /// backplane, waiting for whether a node received it.
    pub async fn send_checked(&self, user: &str, payload: Payload) -> Result<Delivery, SendError> {
        if !self.clustered {
            return self.hub.send(user, payload);
        }
        match self.hub.send_local(user, &payload) {
            Err(SendError::NotConnected) => {}
            other => return other,
        }
        match self
            .backplane
            .publish_confirmed(Topic::User(user), &payload)
            .await
        {
            Ok(0) => Err(SendError::NotConnected),
            Ok(_) => Ok(Delivery::Forwarded),
            Err(BackplaneError::Unavailable) => Err(SendError::Unavailable),
        }
    }

    /// Starts the backplane and waits (at most `wait`) until it is up.
    pub async fn start(&self, wait: std::time::Duration) {
        self.backplane.start(self.hub.clone(), wait).await
    }

    /// Leaves the cluster (a no-op for the local backplane).
    pub async fn stop(&self) {
        self.backplane.stop().await
    }
}

static EMPTY: std::sync::LazyLock<HashMap<String, String>> = std::sync::LazyLock::new(HashMap::new);

fn offline(user: &str) -> Activity {
    Activity {
        user_id: user.to_owned(),
        status: Status::Offline as i32,
        detail: String::new(),
        since_ms: codec::now_ms(),
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

    fn activities(&self, batch: Vec<ActivityRecord>) {
        self.0.publish_activities(batch)
    }
}
