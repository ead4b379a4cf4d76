//! [`LocalBackplane`]: a cluster of one node, the default. Nothing needs
//! recording elsewhere and there is nobody to tell: the hub alone is the
//! authority on users, rooms and activities (including the member limit and
//! one connection per user), and [`Node`](super::Node) never calls the room
//! and activity writes of a backplane that is not clustered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Backplane, BackplaneError, BackplaneStats, Claim, ClaimError, MemberRecord};
use crate::hub::policy::{RoomSettings, StateChange};
use crate::hub::rooms::RoomError;
use crate::hub::{Hub, Payload, Topic};
use crate::protocol::cluster::ActivityRecord;
use crate::protocol::proto::Activity;

/// A cluster of one; see the module docs.
pub(crate) struct LocalBackplane {
    node_id: String,
    /// Claims are ordered by this counter: a handshake that claimed later
    /// wins over an earlier one that registers after it.
    epochs: AtomicU64,
}

impl LocalBackplane {
    pub fn new() -> Self {
        LocalBackplane {
            node_id: format!("local-{}", std::process::id()),
            epochs: AtomicU64::new(1),
        }
    }
}

#[async_trait]
impl Backplane for LocalBackplane {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn is_clustered(&self) -> bool {
        false
    }

    fn is_up(&self) -> bool {
        true
    }

    fn stats(&self) -> BackplaneStats {
        BackplaneStats::default()
    }

    async fn start(&self, _hub: Arc<Hub>, _wait: Duration) {}

    async fn stop(&self) {}

    fn publish(&self, _: Topic<'_>, _: &Payload, _: &[&str]) -> Result<(), BackplaneError> {
        Ok(()) // no other node to reach
    }

    async fn publish_confirmed(&self, _: Topic<'_>, _: &Payload) -> Result<usize, BackplaneError> {
        Ok(0) // nobody else listens
    }

    fn publish_activities(&self, _: Vec<ActivityRecord>) {}

    async fn claim(&self, _user: &str, _conn: u64, _refuse_new: bool) -> Result<Claim, ClaimError> {
        // The registry decides conflicts and replacements here.
        Ok(Claim {
            epoch: self.epochs.fetch_add(1, Ordering::Relaxed),
        })
    }

    fn fenced(&self, _user: &str, _epoch: u64) -> bool {
        false
    }

    async fn release(&self, _user: &str, _conn: u64, _epoch: u64) {}

    async fn room_join(
        &self,
        _: &str,
        _: MemberRecord<'_>,
        _: &RoomSettings,
    ) -> Result<u64, RoomError> {
        Ok(0)
    }

    async fn room_leave(&self, _: &str, _: &str, _: u64) -> Result<u64, RoomError> {
        Ok(0)
    }

    async fn room_update(
        &self,
        _: &str,
        expected: u64,
        _: Option<MemberRecord<'_>>,
        _: bool,
        _: &StateChange,
    ) -> Result<Option<u64>, RoomError> {
        Ok(Some(expected + 1))
    }

    async fn room_close(&self, _: &str, _: &str) -> Result<(u64, usize), RoomError> {
        Ok((0, 0))
    }

    async fn room_caught_up(&self, _: &str, _: u64) -> bool {
        true
    }

    async fn room_unwatch(&self, _: &str) {}

    async fn activity_set(&self, _: &Activity, _: u64) -> Result<bool, BackplaneError> {
        Ok(true)
    }
}
