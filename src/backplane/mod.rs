//! The seam to other nodes: [`Backplane`], and [`Node`], this process as
//! one node of a cluster (the hub plus its backplane).
//!
//! The hub knows only this process. Whatever may involve another node —
//! a user or room member connected elsewhere, who owns a user's one
//! connection, a room's membership and state, activities, which nodes are
//! alive — goes through a `Backplane`. [`LocalBackplane`] (the default) is
//! a cluster of one: it says so (`is_clustered() == false`) and [`Node`]
//! then skips every remote step, so single-process delivery costs what it
//! did before the seam existed (no allocation, no task hop, no virtual
//! call per message).
//!
//! Direction of calls: the hub serves local recipients through its one
//! fan-out ([`Hub::deliver`](crate::hub::Hub::deliver)) and hands a frame
//! for anyone not here to the `Forward` that [`Node`] installs (the
//! backplane's `publish`); `session` and the `WsClient` facade call
//! [`Node`] for claims and room/presence writes, which it records with the
//! backplane before applying them to the hub; a backplane applies what
//! other nodes send through the same hub functions. The hub imports
//! nothing of this layer.
//!
//! The trait is shaped for a Redis implementation (see
//! `../shared/design/scale-out.md`): frames are encoded once at the origin
//! and published as bytes; a user's connection is claimed with an epoch
//! that fences stale owners; room writes return a room version so replicas
//! can order events and detect gaps; nodes prove liveness with a lease.

mod local;
mod node;
#[cfg(feature = "redis")]
pub(crate) mod redis;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::hub::policy::{RoomSettings, StateChange};
use crate::hub::rooms::RoomError;
use crate::hub::{Hub, Payload, Topic};
use crate::protocol::cluster::ActivityRecord;
use crate::protocol::proto::Activity;

pub(crate) use local::LocalBackplane;
pub(crate) use node::{AdmitError, Admitted, Node};

/// What [`Backplane::stats`] counts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BackplaneStats {
    /// Cross-node publishes lost (Redis unreachable, queue full).
    pub publish_errors: u64,
    /// Calls that took longer than the timeout while Redis still answered
    /// (this node was busy): they failed, the backplane stayed up.
    pub slow_calls: u64,
}

/// A granted claim on a user's one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    /// Higher than every earlier claim of the same user, cluster-wide. A
    /// node closes a connection only if its epoch is the one it was told;
    /// writes carrying a lower epoch than the record's are refused.
    pub epoch: u64,
}

/// Why a claim was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClaimError {
    /// The user is connected (somewhere) and new connections are refused.
    #[error("user already connected")]
    Conflict,
    /// The backplane cannot be reached.
    #[error("backplane unavailable")]
    Unavailable,
}

/// A cross-node operation could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BackplaneError {
    /// The backplane cannot be reached (failed fast, not retried).
    #[error("backplane unavailable")]
    Unavailable,
}

/// A room member as written to the backplane.
#[derive(Debug, Clone)]
pub(crate) struct MemberRecord<'a> {
    pub user: &'a str,
    pub conn: u64,
    pub epoch: u64,
    pub state: &'a HashMap<String, String>,
    pub read_only: bool,
}

/// What other nodes need; see the module docs. Every method that may wait
/// on the network is bounded by the implementation's own timeout and fails
/// fast (`Unavailable`) while the backplane is down, rather than hang.
///
/// The room writes return the room's new version; by the time they return,
/// the change is (or will shortly be, see [`Backplane::room_caught_up`])
/// applied to this node's replica through the hub.
#[async_trait]
pub(crate) trait Backplane: Send + Sync + 'static {
    /// This node's id, unique in the cluster.
    fn node_id(&self) -> &str;

    /// Whether other nodes can exist. `false`: [`Node`] skips every
    /// remote step.
    fn is_clustered(&self) -> bool;

    /// Whether cross-node operations can be done now.
    fn is_up(&self) -> bool;

    /// Counters of trouble with the other nodes so far.
    fn stats(&self) -> BackplaneStats;

    /// Starts feeding `hub` with what other nodes send (subscriptions,
    /// liveness lease and heartbeats). Returns once it is up, or after
    /// `wait` (it keeps trying in the background).
    async fn start(&self, hub: Arc<Hub>, wait: std::time::Duration);

    /// Leaves the cluster: releases this node's records at once, so the
    /// others see the leaves now rather than when the lease expires.
    async fn stop(&self);

    /// Hands `payload` (encoded once, here) to the other nodes that may
    /// serve `topic`, skipping the users in `except`. Never waits on the
    /// network: it is queued for sending, or refused.
    fn publish(
        &self,
        topic: Topic<'_>,
        payload: &Payload,
        except: &[&str],
    ) -> Result<(), BackplaneError>;

    /// Publishes `payload` for `topic` now (not queued) and returns how many
    /// nodes received it (0: none listens to it).
    async fn publish_confirmed(
        &self,
        topic: Topic<'_>,
        payload: &Payload,
    ) -> Result<usize, BackplaneError>;

    /// Hands one batch window's activity changes made here to the others.
    fn publish_activities(&self, batch: Vec<ActivityRecord>);

    /// Claims `user`'s one connection for connection `conn` of this node.
    /// With `refuse_new`, an owner on a live node means `Conflict` (decided
    /// atomically with the claim). Otherwise the previous owner, if on
    /// another node, is told to close exactly the connection it held.
    async fn claim(&self, user: &str, conn: u64, refuse_new: bool) -> Result<Claim, ClaimError>;

    /// Whether a close for `user`'s connection with `epoch` arrived before
    /// the connection was registered (it must then close at once, 4001).
    fn fenced(&self, user: &str, epoch: u64) -> bool;

    /// Gives up the claim of `conn` (only if `epoch` is still the owner's).
    async fn release(&self, user: &str, conn: u64, epoch: u64);

    /// Adds (or updates) a member, atomically with the cluster-wide member
    /// limit (taken from `settings` when the room is created) and the epoch
    /// fence. Returns the room's new version.
    async fn room_join(
        &self,
        room: &str,
        member: MemberRecord<'_>,
        settings: &RoomSettings,
    ) -> Result<u64, RoomError>;

    /// Removes a member (only if `epoch` is the member's). Returns the
    /// room's new version.
    async fn room_leave(&self, room: &str, user: &str, epoch: u64) -> Result<u64, RoomError>;

    /// Applies `change` (validated against the replica at version
    /// `expected`) by the member `by` (its record as it will be: with
    /// `member_part`, its new state is written too) or by the server, if
    /// the room is still at `expected`. `Ok(None)`: it moved on meanwhile.
    async fn room_update(
        &self,
        room: &str,
        expected: u64,
        by: Option<MemberRecord<'_>>,
        member_part: bool,
        change: &StateChange,
    ) -> Result<Option<u64>, RoomError>;

    /// Closes a room everywhere. Returns the version and how many members
    /// it had.
    async fn room_close(&self, room: &str, reason: &str) -> Result<(u64, usize), RoomError>;

    /// Waits (bounded) until this node's replica of `room` has applied
    /// `version`, reloading it if events were lost. Returns whether it did.
    async fn room_caught_up(&self, room: &str, version: u64) -> bool;

    /// Stops listening to `room` (no local member left).
    async fn room_unwatch(&self, room: &str);

    /// Records an activity (status offline clears it), fenced by `epoch`.
    /// `Ok(false)`: a newer connection of the user owns the activity.
    async fn activity_set(&self, activity: &Activity, epoch: u64) -> Result<bool, BackplaneError>;
}
